"""Curation ablations for ``thresher compare``: each variant's data is the base curation config with the variant's
changes (``drop``: stages left out; ``set``: options merged into named stages), curated in runs that are cut where
the variants' stage chains part. A prefix of stages that several variants share (the same input, the same stages
with the same options) is curated once, and the runs after it read its kept records: a variant that changes one
stage's threshold re-runs that stage and the ones after it, nothing before.

Each run goes to ``<output>/curation/<key>`` (``key``: a digest of the input section and of every stage up to the
run's last, with all options) and is a whole ``thresher curate`` run (manifest, report, rejects); a folder that
already holds a manifest is reused as it is. A chain is never cut after ``split`` or ``format`` (the next run would
read the records without their split, or in another shape): the stages after them stay in the same run. Gates are
left out of these runs: each is a part of a chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from thresher.core.config import ConfigError, StrictModel, merge
from thresher.core.storage import Storage, join

NO_CUT_AFTER = ("split", "format")  # the records after them are split into folders, or in another shape


class CurationChange(StrictModel):
    drop: list[str] = Field(default_factory=list, description="stages of the base curation config left out, by name")
    set: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="options merged into stages of the base curation config, by stage name (mappings key by key)",
    )

    def changes(self) -> bool:
        return bool(self.drop or self.set)


Stage = tuple[str, dict[str, Any]]  # (name in the run, {stage: options})


def chain(base: dict[str, Any], change: CurationChange, key: str) -> list[Stage]:
    """The stages of ``base`` (a validated curation config's ``dump()``) with ``change`` applied; a name that is not
    a stage of the base is a ConfigError naming ``key``."""
    from thresher.curate.config import parse_config

    names = parse_config(base).stage_names()
    stages = list(zip(names, base["stages"]))
    for field, wanted in (("drop", change.drop), ("set", list(change.set))):
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise ConfigError(f"{key}.{field}: no stage {', '.join(unknown)} in curate (stages: {', '.join(names)})")
    out = []
    for name, spec in stages:
        if name in change.drop:
            continue
        ((stage, options),) = spec.items()
        out.append((name, {stage: merge(options, change.set.get(name, {}))}))
    try:
        parse_config({**{k: v for k, v in base.items() if k != "gates"}, "stages": [spec for _, spec in out]})
    except ConfigError as e:
        raise ConfigError(f"{key}.set: {e}") from None
    return out


@dataclass
class CurationRun:
    """One ``thresher curate`` run of a chain: ``stages`` read from ``source`` (None: the base config's input,
    else the folder of the run before it) into ``folder``."""

    key: str
    folder: str
    stages: list[Stage]
    source: str | None

    def config(self, base: dict[str, Any]) -> dict[str, Any]:
        """Its curation config: the base's input, or the kept records of the run before it, read as Parquet."""
        cfg = {k: v for k, v in base.items() if k not in ("stages", "gates", "output")}
        if self.source is not None:
            cfg["input"] = {
                "paths": [join(self.source, "data")],
                "format": "parquet",
                "text_field": base["input"]["text_field"],
                "id_field": "id",
            }
        return {**cfg, "output": {"path": self.folder}, "stages": [spec for _, spec in self.stages]}


def _digest(base: dict[str, Any], stages: list[Stage]) -> str:
    what = [base["input"], [spec for _, spec in stages]]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _shared(a: list[Stage], b: list[Stage]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n][1] == b[n][1]:
        n += 1
    return n


def plan_runs(base: dict[str, Any], chains: dict[str, list[Stage]], root: str) -> dict[str, list[CurationRun]]:
    """Each chain's runs, cut where it parts from another chain (never after ``split`` or ``format``); runs that
    several chains share have the same key and folder, and are curated once."""
    runs: dict[str, list[CurationRun]] = {}
    for name, stages in chains.items():
        cuts = {_shared(stages, other) for other_name, other in chains.items() if other_name != name}
        cuts = {c for c in cuts if 0 < c < len(stages) and not any(s[0] in NO_CUT_AFTER for s in stages[:c])}
        runs[name], start, source = [], 0, None
        for end in sorted(cuts | {len(stages)}):
            key = _digest(base, stages[:end])
            folder = join(root, "curation", key)
            runs[name].append(CurationRun(key, folder, stages[start:end], source))
            start, source = end, folder
    return runs


def curate(runs: list[CurationRun], base: dict[str, Any], storage: Storage, address: str | None) -> dict[str, dict]:
    """Curate ``runs`` in order, each once (a folder holding a manifest is reused); returns each run's manifest by
    key, with ``reused`` set on those that were not curated now."""
    from thresher.core.console import current as console
    from thresher.curate.config import parse_config
    from thresher.curate.runner import run

    manifests: dict[str, dict] = {}
    for r in runs:
        if r.key in manifests:
            continue
        what = ", ".join(name for name, _ in r.stages) or "no stages"
        manifest_uri = join(r.folder, "manifest.json")
        if storage.exists(manifest_uri):
            console().print(f"curation {r.key} ({what}): complete in {r.folder}, reused")
            manifests[r.key] = {**json.loads(storage.read_bytes(manifest_uri)), "reused": True}
            continue
        console().print(f"curation {r.key} ({what})" + (f" from {r.source}" if r.source else ""))
        manifests[r.key] = {**run(parse_config(r.config(base)), address=address), "reused": False}
    return manifests


def summary(runs: list[CurationRun], manifests: dict[str, dict]) -> dict[str, Any]:
    """What a variant's curation kept and cost: its final run's records (per split), the records each stage removed
    over its runs, the seconds of its runs (those shared with other variants counted in full) and which were reused."""
    final = manifests[runs[-1].key]
    removed = {
        stage: c["rejected"]
        for r in runs
        for stage, c in manifests[r.key]["counts"]["by_stage"].items()
        if stage not in ("read", "unique_ids") or r is runs[0]
    }
    return {
        "input": manifests[runs[0].key]["counts"]["input"],
        "records": final["counts"]["output"],
        "splits": final["counts"].get("splits"),
        "removed_by_stage": removed,
        "seconds": sum(manifests[r.key]["seconds"] for r in runs),
        "runs": [
            {"key": r.key, "stages": [n for n, _ in r.stages], "reused": manifests[r.key]["reused"], "folder": r.folder}
            for r in runs
        ],
    }


def data_paths(final: CurationRun, base: dict[str, Any]) -> dict[str, str]:
    """The training data of a variant curated by ``final``: its train and validation splits, or its records."""
    from thresher.curate.stages.split import SplitConfig

    split = next((spec["split"] for _, spec in final.stages if "split" in spec), None)
    if split is None:
        return {"train": join(final.folder, "data")}
    paths = {"train": join(final.folder, "data", "train")}
    if "validation" in SplitConfig(**split).fractions():
        paths["validation"] = join(final.folder, "data", "validation")
    return paths
