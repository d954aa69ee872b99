"""The runner: the only part of ``pipelines`` that knows Ray. It plans the stages onto Ray Data.

The stages are cut into segments: segment 0 is the read and the map stages before the first global stage; each
later segment starts with one or more global stages and goes on with the map stages after them. A segment is
one Ray Data pipeline, source -> map stages (``map_batches`` fused with the source, one task per read task or apply
group; stateful stages on an actor pool) -> the segment's sink (``pipelines.writer.RunSink``); a segment without
map stages runs the same source-into-sink task as plain Ray tasks, two per CPU submitted at a time:

* the source of segment 0 reads the input (one task per file or byte range) and gives every record its
  internal key (read task, position);
* a sink writes rejected rows where they were rejected; before a global stage it stages the live records and
  writes their key rows (``GlobalStage.keys``);
* the global stages decide on the key rows alone (``GlobalStage.decide``), one after the other, each on the
  rows the previous ones kept (in one task when they are few and every stage can, else on Ray Data); the
  decisions are grouped by apply group (consecutive read tasks of staged records) and written one file per group;
* the source of the next segment reads one apply group's staged records with that group's decisions, so no
  task receives the whole removal set and no join moves the records.

At the end the markers' statistics are merged by a tree of Ray tasks, the staged outputs are compacted into
final files (``pipelines.writer.compact``), the accounting is checked (``pipelines.manifest``) and the run is
committed: report, card, then ``manifest.json`` (``pipelines.run_folder``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import pickle
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cluster.config import ConfigError
from cluster.console import current as console
from cluster.runtime import progress_counter, progress_counts, ray_session, retire_workers
from cluster.storage import Storage
from pipelines.card import dataset_card
from pipelines.config import CurateConfig
from pipelines import gates
from pipelines.dedup.datasets import (LocalTable, StagedKeys, block_refs, clear_worker_cache, is_local, map_blocks,
                                      materialize, plain_task, read_files)
from pipelines.manifest import AccountingError, build_manifest
from pipelines.readers import LostBytes, ReaderSpec, ReadError, ReadTask, plan, read_task
from pipelines.report import add, build_report, collect_stats, merge_stats, render_html
from pipelines.run_folder import REJECTS, Part, RunFolder, check_output, read_staged, staged_rows, write_staged
from pipelines.stage import (KEY, POSITION_BITS, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, TASK_SHIFT,
                             GeneratorStage, GlobalStage, KeySpace, MapStage, Stage, StageContext, run_map_stage,
                             task_of)
from pipelines.stages.unique_ids import UniqueIds, UniqueIdsConfig
from pipelines.writer import RunSink, compact, plan_ranges, read_range

log = logging.getLogger(__name__)
ARROW = dict(batch_format="pyarrow", zero_copy_batch=True)
GROUP = "_group"
APPLY_GROUP_BYTES = 32 << 20  # staged bytes per apply task: bounds its memory (its output is written at once)
PART_ROWS = 16384  # a source's batches are written in parts of at least this many rows or PART_BYTES
PART_BYTES = 32 << 20
PROGRESS_EVERY_S = 0.5  # a read task adds its records to the progress counter at most this often
MERGE_FANIN = 64
KEY_BLOCK_BYTES = 256 << 20
REJECTION = [REJECT_STAGE, REJECT_REASON, REJECT_DETAIL]


class RunFailed(Exception):
    """The run started but did not complete; no manifest was written."""


def _let_tasks_end(timeout_s: float = 30.0) -> None:
    """After a failure, wait (at most ``timeout_s``) until no task holds a CPU. Ray Data stops scheduling but does not
    interrupt a task blocked in I/O (a storage endpoint that went away), and a rerun in the same Ray session must
    not race such a task still writing into the run folder."""
    import ray

    deadline = time.monotonic() + timeout_s
    total = ray.cluster_resources().get("CPU", 0)
    while time.monotonic() < deadline and ray.available_resources().get("CPU", 0) < total:
        time.sleep(0.2)


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
    return StageContext(cfg.input.text_field, cfg.input.id_field or "id", storage, tuple(names),
                        cfg.execution.broadcast_limit_rows)


def segments(cfg: CurateConfig, stages: list[Stage], storage: Storage) -> list[Segment]:
    """The stages cut into segments (module docstring). Repeated ids are counted before the first global stage
    (and rejected there with ``input.unique_ids: reject``, which adds a global segment if there is none). A global
    stage's ``expander`` (e.g. rebalance's copies) runs first after it. The generator stages share one key space
    (``pipelines.stage``)."""
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
        raise ConfigError(f"stages: {' x '.join(str(r) for r in space.radices)} copies per record across the "
                          "generating stages is too many to number; lower their copies (n, max_copies)")
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


def run_key(cfg: CurateConfig, tasks: list[ReadTask], segs: list[Segment]) -> str:
    """Identifies what a run computes: the config (less execution settings and gates), the stages' fingerprints and
    the planned reads."""
    config = {k: v for k, v in cfg.dump().items() if k not in ("execution", "gates")}
    fingerprints = [s.fingerprint() for seg in segs for s in seg.global_stages + seg.map_stages]
    reads = [[i, t.format, list(t.uris), t.start, t.end] for i, t in enumerate(tasks)]
    return hashlib.sha256(json.dumps([config, fingerprints, reads], sort_keys=True).encode()).hexdigest()


# -- sources ---------------------------------------------------------------------------------------------


def _read_batches(batch, spec: ReaderSpec, folder: RunFolder, counter):
    """Segment 0's source: one read task in, its records out with their internal keys.

    When the task has read everything, its read marker records how many records it read (the independent count
    the accounting check and resume rely on; a retried task overwrites it), the input bytes it covered and the bytes
    it lost to damage per file."""
    (item,) = batch["task"]
    task = ReadTask(item["format"], tuple(item["uris"]), tuple(item["sizes"]), item["start"], item["end"])
    base, n, reported, at = item["index"] << TASK_SHIFT, 0, 0, time.monotonic()
    lost = LostBytes()
    for table in read_task(task, spec, lost):
        yield table.append_column(KEY, pa.array(base + np.arange(n, n + table.num_rows), pa.int64()))
        n += table.num_rows
        if counter is not None and time.monotonic() - at >= PROGRESS_EVERY_S:
            counter.add.remote({"read": n - reported})
            reported, at = n, time.monotonic()
    folder.storage.write_bytes(folder.read_marker(item["index"]),
                               json.dumps({"rows": n, "bytes": task.nbytes, "damaged": lost}).encode())
    if counter is not None:
        counter.add.remote({"read": n - reported, "read_tasks": 1, "read_task_rows": n})


def _apply_batches(batch, folder: RunFolder, seg: int, columns: list[str], counter):
    """A later segment's source: one apply group's staged records, in key order, with their decisions."""
    item = json.loads(batch["group"][0])
    uri = folder.decisions(seg, item["index"])
    decisions = read_staged(folder.storage, uri) if folder.storage.exists(uri) else None
    if decisions is not None:
        decisions = decisions.take(pc.sort_indices(decisions[KEY]))
    done = 0
    for lo, hi in item["ranges"]:
        parts = [Part(**p) for p in item["parts"] if lo <= p["lo"] and p["hi"] <= hi]
        table = read_range(folder, parts, lo, hi)
        if table is None:
            continue
        d = decisions.slice(done, table.num_rows) if decisions is not None else None
        if d is None or d.num_rows != table.num_rows or not d[KEY].equals(table[KEY]):
            raise RuntimeError(f"apply group {item['index']}: decisions do not match the staged records of "
                               f"read tasks {lo}..{hi}")
        done += table.num_rows
        for col in REJECTION + columns:  # decisions in their types (_decision_rows)
            i = table.column_names.index(col) if col in table.column_names else -1
            table = table.set_column(i, col, d[col]) if i >= 0 else table.append_column(col, d[col])
        if counter is not None:
            counter.add.remote({f"apply{seg}": table.num_rows})
        yield table
    if decisions is not None and done != decisions.num_rows:
        raise RuntimeError(f"apply group {item['index']}: {decisions.num_rows - done} decisions for no staged record")


_SET_UP: dict[str, MapStage] = {}  # stages whose setup() ran in this worker process, by configuration
_SET_UP_KEPT = 8


def _set_up(stage: MapStage) -> MapStage:
    """``stage`` after its ``setup()``, run once per worker process and stage as built on the driver (a task's
    arguments are deserialized anew for every task, so the model a stage loads is kept here, not on the object)."""
    if getattr(stage, "_set_up", False):  # the same argument object again
        return stage
    key = hashlib.sha256(pickle.dumps(stage)).hexdigest()  # everything the stage was built with
    ready = _SET_UP.get(key)
    if ready is None:
        stage.setup()
        stage._set_up = True
        while len(_SET_UP) >= _SET_UP_KEPT:
            _SET_UP.pop(next(iter(_SET_UP)))
        ready = _SET_UP[key] = stage
    return ready


def _batches(block, stage: MapStage, rows: int):
    """``stage`` on ``block`` in batches of ``rows`` rows, one output block per batch."""
    for lo in range(0, len(block), rows):
        yield run_map_stage(stage, block.iloc[lo:lo + rows].reset_index(drop=True))


def _apply_stage(block, stage: MapStage, rows: int):
    yield from _batches(block, _set_up(stage), rows)


class _StageActor:
    """Actor-pool UDF: a stateful stage and the map stages after it, each set up (model loading) once per actor."""

    def __init__(self, stages: list[MapStage], rows: list[int]):
        self.stages, self.rows = stages, rows
        for stage in stages:
            stage.setup()

    def __call__(self, block):
        blocks = [block]
        for stage, rows in zip(self.stages, self.rows):
            blocks = [out for b in blocks for out in _batches(b, stage, rows)]
        yield from blocks


def _map_stages(ds, stages: list[MapStage], batch_size: int, remote: dict | None = None) -> tuple[Any, int]:
    """``ds`` through the map stages, and the size of the actor pool (0: none).

    Each stage gets whole blocks and cuts them into batches itself: a Ray Data ``batch_size`` would make the fused
    source task wait for that many *input rows*, and the source's input rows are read tasks (apply groups), so up
    to ``batch_size`` of them would run one after the other in a single task. The stages before the first stateful
    one are fused into the source's tasks; that stage and every stage after it run in one fixed pool of actors
    (one per ``num_cpus`` CPUs, at most one per ``num_gpus`` GPUs), so no second pool or task waits for CPUs that
    the actors hold. ``remote``: remote args of the tasks (the same as the source's, so that they fuse)."""
    import ray
    from ray.data import ActorPoolStrategy

    first = next((i for i, s in enumerate(stages) if s.stateful), len(stages))
    for stage in stages[:first]:
        ds = ds.map_batches(_apply_stage, fn_args=(stage, stage.batch_size or batch_size), batch_size=None,
                            batch_format="pandas", num_cpus=stage.num_cpus, **(remote or {}))
    pooled = stages[first:]
    if not pooled:
        return ds, 0
    num_cpus, num_gpus = max(s.num_cpus for s in pooled), max(s.num_gpus for s in pooled)
    resources = ray.cluster_resources()
    pool = int(resources.get("CPU", 1) // max(num_cpus, 1e-3))
    if num_gpus:
        pool = min(pool, int(resources.get("GPU", 0) // num_gpus))
    pool = max(1, pool)
    # Ray Data refuses GPU actors without a batch size: then they take the records ``batch_size`` at a time
    gpu = {"num_gpus": num_gpus, "batch_size": batch_size} if num_gpus else {"batch_size": None}
    ds = ds.map_batches(_StageActor, fn_constructor_args=(pooled, [s.batch_size or batch_size for s in pooled]),
                        compute=ActorPoolStrategy(size=pool), batch_format="pandas", num_cpus=num_cpus, **gpu)
    return ds, pool


def _source_into_sink(source, row: dict, args: tuple, sink: RunSink) -> int:
    """The source's tables (one read task or apply group) written into the sink; returns their rows."""
    rows = 0

    def counted() -> Iterator[pa.Table]:
        nonlocal rows
        for table in source({name: [value] for name, value in row.items()}, *args):
            rows += table.num_rows
            yield table

    sink.write_blocks(_coalesced(counted()))
    return rows


@dataclass
class TaskProgress:
    """The rows of a segment's plain tasks that ended (the driver sees them end: no progress actor needed), and
    ``total``, else the total estimated from the tasks done."""

    tasks: int
    total: int | None = None
    done: int = 0
    rows: int = 0

    def poll(self) -> tuple[int, float | None]:
        estimate = self.rows * self.tasks / self.done if self.done else None
        return self.rows, self.total if self.total is not None else estimate


def _coalesced(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Consecutive tables of one schema joined until they hold ``PART_ROWS`` rows or ``PART_BYTES``: fewer, larger
    parts (and markers) than one per reader batch, a bounded amount held at a time."""
    held: list[pa.Table] = []
    for table in tables:
        if held and table.schema != held[0].schema:
            yield pa.concat_tables(held)
            held = []
        held.append(table)
        if sum(t.num_rows for t in held) >= PART_ROWS or sum(t.nbytes for t in held) >= PART_BYTES:
            yield pa.concat_tables(held)
            held = []
    if held:
        yield pa.concat_tables(held)


def ray_datasink(sink: RunSink):
    """``sink`` as a Ray Data datasink, for the segments Ray Data writes (those with map stages). The class is made
    on first use, so that the processes of the other segments never import Ray Data."""
    return _datasink_class()(sink)


@functools.cache
def _datasink_class():
    from ray.data import Datasink

    class RunDatasink(Datasink):
        def __init__(self, sink: RunSink):
            self.sink = sink

        @property
        def supports_distributed_writes(self) -> bool:
            return True

        def write(self, blocks, ctx) -> None:
            self.sink.write_blocks(blocks)

    return RunDatasink


def retried_io() -> dict:
    """Remote args of the tasks that read and write the data: an I/O error (``OSError``: a reset connection, a
    failing disk; damaged input is a reject, not an error) runs the task again like a lost worker, 3 times at most
    (as Ray Data's own Parquet reads do); then the run fails. A task's outputs are named by its position, so a task
    run again replaces what the failed attempt wrote. Segments with an actor pool read in the actors (the source's
    tasks fuse into them), where an I/O error fails the run without a retry."""
    return {"max_retries": 3, "retry_exceptions": [OSError]}


def _write_directly(source, rows: list[dict], args: tuple, sink: RunSink, cpus: int, progress: TaskProgress) -> None:
    """A segment without map stages: one plain Ray task per source row (read task or apply group) that writes the
    source's tables into the sink, at most two per CPU submitted at a time; ``progress`` counts the tasks that
    ended. Ray Data would run the same fused task, but its resource budget, granted by its autoscaling coordinator,
    started it at about one task at a time."""
    import ray

    task = ray.remote(num_cpus=1, **retried_io())(_source_into_sink).options(name=source.__name__)
    pending: list = []

    def wait() -> None:
        nonlocal pending
        done, pending = ray.wait(pending, num_returns=1)
        progress.rows += ray.get(done[0])
        progress.done += 1

    try:
        for row in rows:
            if len(pending) >= 2 * cpus:
                wait()
            pending.append(task.remote(source, row, args, sink))
        while pending:
            wait()
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise


# -- global decisions --------------------------------------------------------------------------------------


def _file_groups(files: list[tuple[str, int]], groups: int) -> list[list[str]]:
    """``files`` (uri, size) cut into at most ``groups`` runs of consecutive files of about equal bytes."""
    total = sum(size for _, size in files) or 1
    out: list[list[str]] = [[] for _ in range(groups)]
    done = 0
    for uri, size in files:
        out[min(groups - 1, done * groups // total)].append(uri)
        done += size
    return [g for g in out if g]


def _rejected(batch: pa.Table, yes: bool) -> pa.Table:
    mask = pc.is_valid(batch[REJECT_STAGE])
    return batch.filter(mask if yes else pc.invert(mask))


def _rejected_rows(batch: pa.Table) -> int:
    return batch.num_rows - batch[REJECT_STAGE].null_count


def _rejected_count(ds) -> int:
    """The rows of ``ds`` (materialized) that a stage rejected, counted by a task per block."""
    import ray

    if isinstance(ds, LocalTable):
        return _rejected_rows(ds.table)
    return sum(ray.get([plain_task(_rejected_rows).remote(ref) for ref in block_refs(ds)]))


def _decision_rows(batch: pa.Table, columns: dict[str, pa.DataType]) -> pa.Table:
    """``KEY``, the rejection columns (strings) and ``columns`` in their types (null where a stage did not set them)."""
    out = {KEY: batch[KEY]}
    for col, kind in {**dict.fromkeys(REJECTION, pa.string()), **columns}.items():
        out[col] = batch[col].cast(kind) if col in batch.column_names else pa.nulls(batch.num_rows, kind)
    return pa.table(out)


def _with_group(batch: pa.Table, group_lo: np.ndarray) -> pa.Table:
    tasks = task_of(batch[KEY].to_numpy(zero_copy_only=False))
    return batch.append_column(GROUP, pa.array(np.searchsorted(group_lo, tasks, side="right") - 1, pa.int64()))


def _write_decisions(batch: pa.Table, folder: RunFolder, seg: int) -> pa.Table:
    """One file per apply group of ``batch`` (which holds every decision of its groups), sorted by key."""
    batch = batch.take(pc.sort_indices(batch, [(GROUP, "ascending"), (KEY, "ascending")]))
    groups = batch[GROUP].to_numpy()
    indices, starts = np.unique(groups, return_index=True)
    ends = [*starts[1:], len(groups)]
    for index, start, end in zip(indices, starts, ends):
        write_staged(folder.storage, folder.decisions(seg, int(index)),
                     batch.slice(start, end - start).drop_columns([GROUP]))
    return pa.table({GROUP: indices, "rows": np.subtract(ends, starts)})


def _write_all_decisions(parts: list[tuple[list, bool | None]], columns: dict[str, pa.DataType],
                         group_lo: np.ndarray, folder: RunFolder, seg: int) -> dict:
    """Every decision of a small segment in one task: the rows each stage rejected (``True``: the tables, or
    blocks, of its output) and every row of the last stage's output (``None``), written per apply group."""
    import ray

    tables = [_decision_rows(_rejected(t, True) if which else t, columns)
              for blocks, which in parts for t in (blocks if is_local(blocks) else ray.get(blocks))]
    if not tables:
        return {"rows": 0}
    written = _write_decisions(_with_group(pa.concat_tables(tables), group_lo), folder, seg)
    return {"rows": int(pc.sum(written["rows"]).as_py() or 0)}


def _decide_stages(keys, stages: list[GlobalStage], staged: StagedKeys) -> tuple[dict[str, dict], list]:
    """Each stage's ``decide`` on the rows the previous ones kept: per stage the rows in, out and rejected (counted
    on the key rows), and the outputs whose decisions are written (``True``: its rejected rows; ``None``: all its
    rows, the last stage's output)."""
    counts: dict[str, dict] = {}
    decided = []
    for stage in stages:
        stage.staged_keys = staged
        n_in = keys.count()
        out = materialize(stage.decide(keys))
        same = out is keys or (not isinstance(out, LocalTable) and block_refs(out) == block_refs(keys))
        rejected = 0 if same else _rejected_count(out)  # the same blocks: none
        # the rows a stage rejected are counted again, independently, where they are written (manifest.check)
        counts[stage.name] = {"in": n_in, "out": n_in - rejected, "rejected": rejected,
                              "metrics": getattr(stage, "metrics", {})}
        if stage is stages[-1]:
            decided.append((out, None))
        elif rejected:
            decided.append((out, True))
            keys = map_blocks(out, _rejected, False)
        else:
            keys = out
    return counts, decided


class _LogRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))


def _decide_in_one_task(files: list[str], storage: Storage, stages: list[GlobalStage], columns: dict,
                        group_lo: np.ndarray, folder: RunFolder, seg: int, limit_rows: int
                        ) -> tuple[tuple[dict, int] | None, list[tuple[str, int, str]]]:
    """:func:`decide` in this task, on the key rows as a ``LocalTable``: the counts and the decisions written (None,
    having read nothing but the files' row counts, when they hold more than ``limit_rows``), and what the stages
    logged (``pipelines`` loggers, INFO and up) for the driver's log, where the other path's messages are."""
    logger, handler = logging.getLogger("pipelines"), _LogRecords()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        return _decide_here(files, storage, stages, columns, group_lo, folder, seg, limit_rows), handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _decide_here(files: list[str], storage: Storage, stages: list[GlobalStage], columns: dict,
                 group_lo: np.ndarray, folder: RunFolder, seg: int, limit_rows: int) -> tuple[dict, int] | None:
    rows = 0
    for uri in files:
        rows += staged_rows(storage, uri)
        if rows > limit_rows:
            return None
    staged_only = tuple(c for s in stages for c in s.staged_columns())
    keys = LocalTable(read_files(files, storage, None, staged_only))
    for stage in stages:  # everything is in this process: no step needs a partitioned path
        stage.ctx = dataclasses.replace(stage.ctx, broadcast_limit_rows=sys.maxsize)
    try:
        counts, decided = _decide_stages(keys, stages, StagedKeys([files], storage, local=True))
    finally:
        clear_worker_cache()  # it pins this decision's tables
    written = _write_all_decisions([([ds.table], which) for ds, which in decided], columns, group_lo, folder, seg)
    return counts, written["rows"]


def decide(folder: RunFolder, seg: int, segment: Segment, groups: list[tuple[int, int]],
           limit_rows: int) -> dict[str, dict]:
    """Run the segment's global stages on the key rows staged by segment ``seg - 1``, write the decisions of
    each apply group, and return per stage the rows in, out and rejected (counted on the key rows).

    Up to ``limit_rows`` key rows, when every stage can (``GlobalStage.decides_locally``), all of it runs in one
    task; else on Ray Data, the decisions written from one task up to ``limit_rows``, beyond grouped by a shuffle."""
    import ray

    files = sorted(folder.keys_parts(seg - 1))
    if not files:
        return {s.name: {"in": 0, "out": 0, "rejected": 0} for s in segment.global_stages}
    columns = {c: s.decision_types().get(c, pa.string()) for s in segment.global_stages for c in s.decision_columns()}
    group_lo = np.array([lo for lo, _ in groups], np.int64)
    result = None
    if all(s.decides_locally for s in segment.global_stages):
        result, records = ray.get(plain_task(_decide_in_one_task).remote(
            [uri for uri, _ in files], folder.storage, segment.global_stages, columns, group_lo, folder, seg, limit_rows))
        for name, level, message in records:
            logging.getLogger(name).log(level, "%s", message)
    counts, total = result or _decide_on_ray(files, folder, seg, segment, columns, group_lo, limit_rows)
    for name, c in counts.items():
        log.info("%s: %s", name, c)
    expected = counts[segment.global_stages[0].name]["in"]
    if total != expected:
        raise RuntimeError(f"segment {seg}: wrote {total} decisions for {expected} key rows")
    return counts


def _decide_on_ray(files: list[tuple[str, int]], folder: RunFolder, seg: int, segment: Segment, columns: dict,
                   group_lo: np.ndarray, limit_rows: int) -> tuple[dict[str, dict], int]:
    """:func:`decide` on Ray Data: the counts and the decisions written."""
    import ray
    import ray.data

    # staged parts read into a few blocks of about KEY_BLOCK_BYTES, at least two per CPU (no repartition copy)
    blocks = max(2 * int(ray.cluster_resources().get("CPU", 1)), math.ceil(sum(n for _, n in files) / KEY_BLOCK_BYTES))
    groups_of_files = _file_groups(files, blocks)
    staged_only = tuple(c for s in segment.global_stages for c in s.staged_columns())
    keys = materialize(ray.data.from_arrow_refs([plain_task(read_files).remote(group, folder.storage, None,
                                                                                 staged_only)
                                                 for group in groups_of_files]))
    counts, decided = _decide_stages(keys, segment.global_stages, StagedKeys(groups_of_files, folder.storage))
    if counts[segment.global_stages[0].name]["in"] <= limit_rows:
        parts = [(block_refs(ds), which) for ds, which in decided]
        written = [ray.get(plain_task(_write_all_decisions).remote(parts, columns, group_lo, folder, seg))]
    else:
        pieces = [(ds if which is None else ds.map_batches(_rejected, fn_args=(True,), **ARROW))
                  .map_batches(_decision_rows, fn_args=(columns,), **ARROW) for ds, which in decided]
        decisions = pieces[0].union(*pieces[1:]) if len(pieces) > 1 else pieces[0]
        routed = decisions.map_batches(_with_group, fn_args=(group_lo,), **ARROW)
        written = routed.groupby(GROUP).map_groups(_write_decisions, fn_args=(folder, seg),
                                                   batch_format="pyarrow").take_all()
    return counts, sum(r["rows"] for r in written)


def apply_groups(folder: RunFolder, seg: int, target_bytes: int) -> tuple[list[tuple[int, int]], list[dict]]:
    """The apply groups of segment ``seg``: whole staged parts of segment ``seg - 1``, about ``target_bytes``
    each, cut between read-task ranges; with, per group, its ranges and parts."""
    parts = sorted(folder.live_parts(seg - 1), key=lambda p: (p.lo, p.hi, p.uri))
    ranges: dict[tuple[int, int], list] = {}
    for p in parts:
        ranges.setdefault((p.lo, p.hi), []).append(p)
    groups, items, current, size = [], [], [], 0
    for (lo, hi), ps in ranges.items():
        current.append(((lo, hi), ps))
        size += sum(p.size for p in ps)
        if size >= target_bytes:
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    bounds = []
    for i, group in enumerate(groups):
        bounds.append((group[0][0][0], group[-1][0][1]))
        items.append({"index": i, "ranges": [r for r, _ in group],
                      "parts": [p.__dict__ for _, ps in group for p in ps]})
    return bounds, items


# -- statistics ----------------------------------------------------------------------------------------------


def merge_part_stats(parts: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for part in parts:
        report = merge_stats([out.pop("report", {}), part.get("report", {})])
        out = add(out, {k: v for k, v in part.items() if k != "report"})
        out["report"] = report
    return out


def reduce_stats(folder: RunFolder) -> dict:
    """All markers' statistics merged by a tree of Ray tasks; the driver receives the root only."""
    import ray

    @ray.remote
    def leaf(uris: list[str]) -> dict:
        return merge_part_stats([json.loads(folder.storage.read_bytes(u)) for u in uris])

    @ray.remote
    def inner(*parts: dict) -> dict:
        return merge_part_stats(list(parts))

    uris = folder.markers()
    refs = [leaf.remote(uris[i:i + MERGE_FANIN]) for i in range(0, len(uris), MERGE_FANIN)]
    while len(refs) > 1:
        refs = [inner.remote(*refs[i:i + MERGE_FANIN]) for i in range(0, len(refs), MERGE_FANIN)]
    return ray.get(refs[0]) if refs else {}


def publish(folder: RunFolder, target: RunFolder, sizes: dict[str, dict[str, int]], target_bytes: int,
            orders: dict[str, str] | None = None) -> list[str]:
    """Compact every destination's staged outputs into final files of about ``target_bytes`` in ``target``
    (:meth:`RunFolder.publishing`); a destination in ``orders`` has each file's rows ordered by that column
    (``Stage.sort_destinations``)."""
    import ray

    staged = folder.out_parts()
    items = []
    for dest in sorted(staged):
        by_task = {int(t): n for t, n in sizes.get(dest, {}).items()}
        for index, (lo, hi) in enumerate(plan_ranges(by_task, target_bytes) if by_task else []):
            parts = [p.__dict__ for p in staged[dest] if p.lo <= hi and p.hi >= lo]
            items.append({"dest": dest, "uri": target.final_part(dest, index), "lo": lo, "hi": hi, "parts": parts,
                          "order_by": (orders or {}).get(dest)})
    task = ray.remote(**retried_io())(compact)
    pending, results = [task.remote(item, folder) for item in items], []
    with console().phase("write files", lambda: (len(results), len(items)), unit="files"):
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
            results += ray.get(done)
    return sorted(r["uri"] for r in results if r["uri"])


# -- the run --------------------------------------------------------------------------------------------------


def run(cfg: CurateConfig, address: str | None = None) -> dict[str, Any]:
    """Run a curation config to completion and return its manifest."""
    import ray.data

    storage = Storage.from_options(cfg.storage)
    planned, spec, segs = preflight(cfg, storage)
    folder = RunFolder(cfg.output.path, storage)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    target = cfg.output.target_file_mb << 20
    global_counts: dict[str, dict] = {}
    with ray_session(address, cfg.execution.num_cpus) as resources:
        cluster_info = _cluster_info(resources)
        reused = folder.prepare(run_key(cfg, planned, segs))
        counter = None  # the tasks of Ray Data segments add their progress to it (plain tasks return theirs)
        read = None  # per read task its read marker (rows, bytes, damaged)
        try:
            for k, segment in enumerate(segs):
                final = k == len(segs) - 1
                next_stages = [] if final else segs[k + 1].global_stages
                direct = not segment.map_stages  # plain Ray tasks (_write_directly)
                if not direct and counter is None:
                    counter = progress_counter()
                reporter = None if direct else counter
                if k == 0:
                    rows = [{"task": {"index": i, "format": t.format, "uris": list(t.uris), "sizes": list(t.sizes),
                                      "start": t.start, "end": t.end}}
                            for i, t in enumerate(planned) if i not in reused]
                    if not rows:
                        continue
                    source, args = _read_batches, (spec, folder, reporter)
                    tasks = TaskProgress(len(rows))
                    poll = tasks.poll if direct else _read_progress(counter, len(rows))
                    groups, phase = None, ("read and map stages", poll)
                else:
                    groups, group_items = apply_groups(folder, k, APPLY_GROUP_BYTES)
                    names = ", ".join(s.name for s in segment.global_stages)
                    with console().phase(f"decide: {names}"):
                        counts = decide(folder, k, segment, groups, cfg.execution.broadcast_limit_rows)
                    global_counts.update(counts)
                    fresh_after = cfg.execution.fresh_workers_after_rows
                    if fresh_after is not None and counts[segment.global_stages[0].name]["in"] >= fresh_after:
                        retire_workers()
                    if not group_items:
                        continue
                    columns = [c for s in segment.global_stages for c in s.decision_columns()]
                    rows = [{"group": json.dumps(g)} for g in group_items]
                    source, args = _apply_batches, (folder, k, columns, reporter)
                    total = counts[segment.global_stages[0].name]["in"]
                    what = ", ".join(s.name for s in segment.map_stages) or "write"
                    tasks = TaskProgress(len(rows), total)
                    phase = (f"apply decisions, {what}", tasks.poll if direct else _counted(counter, f"apply{k}", total))
                sink = RunSink(folder, k, groups, final, next_stages, cfg.input.text_field)
                with console().phase(phase[0], phase[1]) as shown:
                    if direct:
                        _write_directly(source, rows, args, sink, int(resources.get("CPU", 1)), tasks)
                    else:
                        # with an actor pool the source's tasks fuse into the actors, whose tasks take no retry args
                        remote = {} if any(s.stateful for s in segment.map_stages) else retried_io()
                        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                            source, fn_args=args, batch_size=1, batch_format="pandas", **remote)
                        ds, pool = _map_stages(ds, segment.map_stages, cfg.execution.batch_size, remote)
                        # after an actor pool that holds every CPU, the writer must not wait for one
                        writer = {"ray_remote_args": {"num_cpus": 0}, "concurrency": pool} if pool \
                            else {"ray_remote_args": remote}
                        ds.write_datasink(ray_datasink(sink), **writer)
                    # the last line shows the exact figure: progress that tasks sent may still be on its way
                    if k == 0:
                        read = folder.read_results()
                        shown.done = sum(m["rows"] for task, m in read.items() if task not in reused)
                    else:
                        shown.done = total
            if read is None:  # every read task was reused from an earlier attempt
                read = folder.read_results()
            missing = len(planned) - len(read)
            if missing:
                raise RunFailed(f"{missing} of {len(planned)} read tasks reported no result")
            stats = reduce_stats(folder)
            orders = {d: c for seg in segs for s in seg.global_stages + seg.map_stages
                      for d, c in s.sort_destinations().items()}
            published = folder.publishing()
            files = publish(folder, published, stats.get("sizes", {}), target, orders)
            for stage in (s for seg in segs for s in seg.global_stages + seg.map_stages):
                stage.after_publish(published.root, files)
        except RunFailed:
            _let_tasks_end()
            raise
        except Exception as e:
            _let_tasks_end()
            raise RunFailed(f"curation failed: {type(e).__name__}: {e}") from e
        names = list(dict.fromkeys(s.name for seg in segs for s in seg.global_stages + seg.map_stages))
        try:
            manifest = build_manifest(cfg, names, stats, list(read.values()), global_counts,
                                      [folder.uri(published.relative(f)) for f in files], published.final_rows())
        except AccountingError as e:
            raise RunFailed(f"accounting mismatch: {e}") from None
        manifest.update(ray=cluster_info, resumed={"reused_read_tasks": len(reused), "read_tasks": len(planned)},
                        started_at=started.isoformat(), finished_at=datetime.now(timezone.utc).isoformat(),
                        seconds=round(time.perf_counter() - t0, 3))
        gate_results = gates.check(cfg.gates, manifest["counts"])
        if gate_results:
            manifest["gates"] = gate_results
            if not all(g["ok"] for g in gate_results):
                manifest["status"] = gates.GATE_FAILED
        report = build_report(stats.get("report", {}), manifest)
        folder.commit(published, manifest, report, render_html(report, manifest),
                      dataset_card(folder.root, storage, manifest, report, published.root))
        # the staged files go while Ray stops (both take a while on a large run, neither needs the other)
        removal = ThreadPoolExecutor(1, thread_name_prefix="thresher-staging")
        removing = removal.submit(folder.remove_staging)
    removing.result()
    removal.shutdown()
    return manifest


def _read_progress(counter, tasks: int):
    """Records read, and the total estimated from the read tasks done (None without a counter)."""
    if counter is None:
        return None

    def poll():
        c = progress_counts(counter)
        done = c.get("read_tasks", 0)
        return c.get("read", 0), (c.get("read_task_rows", 0) * tasks / done if done else None)

    return poll


def _counted(counter, name: str, total: int):
    if counter is None:
        return None
    return lambda: (progress_counts(counter).get(name, 0), total)


def _cluster_info(resources: dict) -> dict[str, Any]:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"nodes": len(nodes), "cpus": resources.get("CPU", 0), "gcs_address": ray.get_runtime_context().gcs_address}


def load_manifest(run_uri: str, storage: Storage) -> dict[str, Any]:
    return RunFolder(run_uri, storage).load_manifest()


def rerender_report(run_uri: str, storage: Storage, address: str | None = None) -> dict[str, Any]:
    """Recompute report.json and report.html of a finished run from its Parquet files, on Ray (one task per file,
    merged by a tree of tasks)."""
    import ray

    folder = RunFolder(run_uri, storage)
    manifest = folder.load_manifest()
    text_field = manifest["config"]["input"]["text_field"]

    @ray.remote
    def leaf(dest: str, uri: str) -> dict:
        fs, path = storage.resolve(uri)
        table = pq.read_table(path, filesystem=fs)
        if dest == REJECTS:
            return collect_stats({}, table, text_field)
        return collect_stats({dest: table}, table.schema.empty_table().select([]), text_field)

    @ray.remote
    def inner(*parts: dict) -> dict:
        return merge_stats(list(parts))

    with ray_session(address):
        refs = [leaf.remote(dest, uri) for dest, uris in folder.final_files().items() for uri in uris]
        while len(refs) > 1:
            refs = [inner.remote(*refs[i:i + MERGE_FANIN]) for i in range(0, len(refs), MERGE_FANIN)]
        collected = ray.get(refs[0]) if refs else {}
    report = build_report(collected, manifest)
    storage.write_bytes(folder.uri("report.json"), json.dumps(report, indent=2, default=str).encode())
    storage.write_bytes(folder.uri("report.html"), render_html(report, manifest).encode())
    return report
