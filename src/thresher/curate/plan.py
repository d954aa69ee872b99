"""Planning a curation run: its stages, cut into segments at each global stage, the read tasks, and the key
that says what a run computes (a resume needs the same one)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from thresher.core.config import ConfigError
from thresher.core.storage import Storage
from thresher.curate.config import CurateConfig
from thresher.curate.readers import ReadError, ReaderSpec, ReadTask, plan
from thresher.curate.readers.planning import STREAM_RANGES
from thresher.curate.run_folder import check_output
from thresher.curate.stage import (
    POSITION_BITS,
    TASK_SHIFT,
    GeneratorStage,
    GlobalStage,
    KeySpace,
    MapStage,
    Stage,
    StageContext,
)
from thresher.curate.stages.unique_ids import UniqueIds, UniqueIdsConfig


@dataclass
class Segment:
    global_stages: list[GlobalStage] = field(default_factory=list)
    map_stages: list[MapStage] = field(default_factory=list)


def build_stages(cfg: CurateConfig, storage: Storage) -> list[Stage]:
    stages, names = [], []
    for cls, options, name in cfg.stage_classes():
        stage = cls(options, _context(cfg, storage, names))
        if name != cls.name:
            stage.name = name
        stages.append(stage)
        names.append(name)
    return stages


def _context(cfg: CurateConfig, storage: Storage, names: list[str]) -> StageContext:
    return StageContext(
        cfg.input.text_field, cfg.input.id_field or "id", storage, tuple(names), cfg.execution.broadcast_limit_rows
    )


def segments(cfg: CurateConfig, stages: list[Stage], storage: Storage) -> list[Segment]:
    """The stages cut into segments (module docstring). Repeated ids are counted before the first global stage
    (and rejected there with ``input.unique_ids: reject``, which adds a global segment if there is none). A global
    stage's ``expander`` (e.g. rebalance's copies) runs first after it. The generator stages share one key space
    (``thresher.curate.stage``)."""
    segs = [Segment()]
    for stage in stages:
        if isinstance(stage, GlobalStage):
            if len(segs) == 1 or segs[-1].map_stages:
                segs.append(Segment())
            segs[-1].global_stages.append(stage)
            if stage.expander() is not None:
                segs[-1].map_stages.append(stage.expander())
        else:
            segs[-1].map_stages.append(stage)
    generators = [s for seg in segs for s in seg.map_stages if isinstance(s, GeneratorStage)]
    space = KeySpace(tuple(g.max_copies() + 1 for g in generators))
    if space.code_bits > POSITION_BITS - 8:
        raise ConfigError(
            f"stages: {' x '.join(str(r) for r in space.radices)} copies per record across the "
            "generating stages is too many to number; lower their copies (n, max_copies)"
        )
    for ordinal, generator in enumerate(generators):
        generator.bind_keys(space, ordinal)
    if cfg.input.unique_ids == "reject" and len(segs) == 1:
        segs.append(Segment())
    if len(segs) > 1:
        ids = UniqueIds(UniqueIdsConfig(reject=cfg.input.unique_ids == "reject"), _context(cfg, storage, []))
        segs[1].global_stages.insert(0, ids)
    return segs


def preflight(cfg: CurateConfig, storage: Storage) -> tuple[list[ReadTask], ReaderSpec, list[Segment]]:
    """Everything that can be checked before work starts; problems are ConfigErrors (exit 2)."""
    check_output(cfg.output.path, cfg.input.paths, storage)
    try:
        tasks, spec = plan(cfg.input, storage)
    except ReadError as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(f"input.paths: {e}") from None
    try:
        storage.check_writable(cfg.output.path)
    except OSError as e:
        raise ConfigError(f"output.path: cannot write to {cfg.output.path!r}: {e}") from None
    if len(tasks) >= 1 << (63 - TASK_SHIFT):
        raise ConfigError(f"input: {len(tasks)} read tasks; raise input.block_bytes")
    return tasks, spec, segments(cfg, build_stages(cfg, storage), storage)


FEW_TASKS_BYTES = 64 << 20  # below this the map phase takes seconds whatever its tasks


def few_read_tasks(tasks: list[ReadTask], cpus: int, block_bytes: int) -> str | None:
    """What to say when the read tasks of an input of FEW_TASKS_BYTES or more cannot keep the cluster's CPUs busy
    (fewer than two per CPU): the map phase runs one task per CPU at a time, so its last wave leaves CPUs idle. Said,
    not changed: the plan (and so a resumed run's reuse of finished tasks) does not depend on the cluster."""
    if len(tasks) >= 2 * cpus or sum(t.nbytes for t in tasks) < FEW_TASKS_BYTES:
        return None
    waves = -(-len(tasks) // cpus)
    return (
        f"input: {len(tasks)} read tasks for {cpus} CPUs ({waves} wave{'s' if waves > 1 else ''}, at most "
        f"{min(len(tasks), cpus)} CPUs busy in the map phase); JSONL is read in ranges of input.block_bytes "
        f"({block_bytes / (1 << 20):g} MiB; a compressed file in at most {STREAM_RANGES}): a smaller value, or the "
        "input as more files, gives more tasks"
    )


def run_key(cfg: CurateConfig, tasks: list[ReadTask], segs: list[Segment], references: list[dict] = ()) -> str:
    """Identifies what a run computes: the config (less execution settings and gates), the stages' fingerprints,
    the planned reads and the reference runs' manifest digests (``thresher.curate.reference_index.check_references``: a
    reference committed anew makes a new run)."""
    config = {k: v for k, v in cfg.dump().items() if k not in ("execution", "gates")}
    fingerprints = [s.fingerprint() for seg in segs for s in seg.global_stages + seg.map_stages]
    reads = [[i, t.format, list(t.uris), t.start, t.end] for i, t in enumerate(tasks)]
    digests = [[r["stage"], r["run"], r["manifest_sha256"]] for r in references]
    return hashlib.sha256(
        json.dumps([config, fingerprints, reads, *([digests] if digests else [])], sort_keys=True).encode()
    ).hexdigest()
