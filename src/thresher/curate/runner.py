"""The curation run, top to bottom: plan (``plan``), then the segments (``apply``: per segment the map phase,
``map``, and before each later segment the decide phase, ``decide``); then the statistics, the final files and the
commit (``commit``, ``run_folder``).

The stages are cut into segments: segment 0 is the read and the map stages before the first global stage; each
later segment starts with one or more global stages and goes on with the map stages after them. A segment is
one Ray Data pipeline, source -> map stages (``map_batches`` fused with the source, one task per read task or apply
group; stateful stages on an actor pool) -> the segment's sink (``thresher.curate.writer.RunSink``); a segment
without map stages runs the same source-into-sink task as plain Ray tasks, two per CPU submitted at a time:

* the source of segment 0 reads the input (one task per file or byte range) and gives every record its
  internal key (read task, position);
* a sink writes rejected rows where they were rejected; before a global stage it stages the live records and
  writes their key rows (``GlobalStage.keys``);
* the global stages decide on the key rows alone (``GlobalStage.decide``), one after the other, each on the
  rows the previous ones kept (in one task when they are few and every stage can, else on Ray); the
  decisions are grouped by apply group (consecutive read tasks of staged records) and written one file per group;
* the source of the next segment reads one apply group's staged records with that group's decisions, so no
  task receives the whole removal set and no join moves the records.

At the end the markers' statistics are merged by a tree of Ray tasks, the staged outputs are compacted into
final files (``thresher.curate.writer.compact``), the accounting is checked (``thresher.curate.manifest``) and the
run is committed: report, card, then ``manifest.json`` (``thresher.curate.run_folder``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from thresher.core.storage import Storage
from thresher.curate import gates
from thresher.curate.apply import run_segments
from thresher.curate.card import dataset_card
from thresher.curate.commit import publish, reduce_stats
from thresher.curate.config import CurateConfig
from thresher.curate.manifest import AccountingError, build_manifest
from thresher.curate.plan import Segment, few_read_tasks, preflight, run_key
from thresher.curate.reference_index import build_missing_indexes, check_references, write_own_indexes
from thresher.curate.report import build_report, render_html
from thresher.curate.run_folder import RunFolder
from thresher.curate.timing import Phases, timing
from thresher.runtime import cluster_info, ray_session, signal_inside, wait_for_idle_cpus

log = logging.getLogger(__name__)


class RunFailed(Exception):
    """The run started but did not complete; no manifest was written."""


# -- the run --------------------------------------------------------------------------------------------------


def run(cfg: CurateConfig, address: str | None = None, since: float | None = None) -> dict[str, Any]:
    """Run a curation config to completion and return its manifest. ``since``: when the command started (a
    ``time.perf_counter`` value; the manifest's ``timing`` counts from it, else from this call)."""
    phases = Phases(since)
    if since is not None:
        phases.lap("start (interpreter, imports, config)")
    started = datetime.now(UTC)
    storage = Storage.from_options(cfg.storage)
    references = check_references(cfg, storage)
    planned, spec, segs = preflight(cfg, storage)
    deciding = [s for seg in segs for s in seg.global_stages]
    folder = RunFolder(cfg.output.path, storage)
    phases.lap("plan")
    with ray_session(address, cfg.execution.num_cpus) as resources:
        phases.lap("ray start")
        cluster = cluster_info(resources)
        reused = folder.prepare(run_key(cfg, planned, segs, references))
        build_missing_indexes(deciding, storage)
        phases.lap("plan")
        try:
            cpus = int(resources.get("CPU", 1))
            if advice := few_read_tasks(planned, cpus, cfg.input.block_bytes):
                log.warning("%s", advice)
            global_counts, read = run_segments(cfg, segs, planned, spec, folder, reused, cpus, phases)
            missing = len(planned) - len(read)
            if missing:
                raise RunFailed(f"{missing} of {len(planned)} read tasks reported no result")
            stats = reduce_stats(folder)
            phases.lap("merge statistics")
            published, files = _publish(cfg, segs, folder, stats)
            phases.lap("write files")
        except RunFailed:
            wait_for_idle_cpus()
            raise
        except Exception as e:
            if (signalled := signal_inside(e)) is not None:
                raise signalled from None
            wait_for_idle_cpus()
            raise RunFailed(f"curation failed: {type(e).__name__}: {e}") from e
    phases.lap("ray stop")  # the rest needs no Ray: the time the manifest gives covers Ray's stop
    names = list(dict.fromkeys(s.name for seg in segs for s in seg.global_stages + seg.map_stages))
    try:
        manifest = build_manifest(
            cfg,
            names,
            stats,
            list(read.values()),
            global_counts,
            [folder.uri(published.relative(f)) for f in files],
            published.final_rows(),
        )
    except AccountingError as e:
        raise RunFailed(f"accounting mismatch: {e}") from None
    stages = [s for seg in segs for s in seg.global_stages + seg.map_stages]
    manifest.update(
        columns={c: d for s in stages for c, d in s.added_columns().items()},
        ray=cluster,
        lineage={"references": references},
        resumed={"reused_read_tasks": len(reused), "read_tasks": len(planned)},
        started_at=started.isoformat(),
    )
    gate_results = gates.check(cfg.gates, manifest["counts"])
    if gate_results:
        manifest["gates"] = gate_results
        if not all(g["ok"] for g in gate_results):
            manifest["status"] = gates.GATE_FAILED
    phases.lap("check counts")

    def timed(manifest: dict) -> None:  # the report and card show the time until they were made; the manifest all
        manifest.update(
            finished_at=datetime.now(UTC).isoformat(),
            seconds=round(phases.wall, 3),
            timing=timing(phases, stats.get("seconds", {}), names, manifest["counts"], cluster["cpus"]),
        )

    def completed(manifest: dict) -> None:
        phases.lap("report, card and commit")
        timed(manifest)

    timed(manifest)
    report = build_report(stats.get("report", {}), manifest)
    target = folder
    if manifest["status"] == gates.GATE_FAILED and published.root != folder.root and folder.holds_succeeded_run():
        target = folder.set_aside()  # the succeeded dataset stays where training reads it
        manifest["kept_previous_dataset"] = True
    target.commit(
        published,
        manifest,
        report,
        render_html(report, manifest),
        dataset_card(folder.root, storage, manifest, report, published.root),
        completed,
    )
    folder.remove_staging()
    return manifest


def _publish(cfg: CurateConfig, segs: list[Segment], folder: RunFolder, stats: dict) -> tuple[Any, list[str]]:
    """The final files (compacted, sorted where a stage asks), the stages' steps after publishing, and the reference
    index of the run's own records: the published folder and its files."""
    stages = [s for seg in segs for s in seg.global_stages + seg.map_stages]
    orders = {d: c for s in stages for d, c in s.sort_destinations().items()}
    published = folder.publishing()
    files = publish(folder, published, stats.get("sizes", {}), cfg.output.target_file_mb << 20, orders)
    for stage in stages:
        stage.after_publish(published.root, files)
    if cfg.output.reference_index:
        write_own_indexes(
            [(k, s) for k, seg in enumerate(segs) for s in seg.global_stages], folder, published, cfg.input.text_field
        )
    return published, files
