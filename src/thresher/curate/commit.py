"""The commit phase's work: the parts' statistics merged by a tree of tasks, the staged outputs compacted into
final files (``thresher.curate.writer.compact``); and ``thresher report``'s recomputation for a finished run."""

from __future__ import annotations

import functools
import json
from typing import Any

import pyarrow.parquet as pq

from thresher.core.console import current as console
from thresher.core.storage import Storage
from thresher.curate.execution.tasks import as_completed, reduce_tree
from thresher.curate.report import add, build_report, collect_stats, merge_stats, render_html, with_worker_summaries
from thresher.curate.run_folder import REJECTS, RunFolder
from thresher.curate.writer import compact, plan_ranges
from thresher.runtime import ray_session

MERGE_FANIN = 64


# -- statistics ----------------------------------------------------------------------------------------------


def merge_part_stats(parts: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for part in parts:
        report = merge_stats([out.pop("report", {}), part.get("report", {})])
        out = add(out, {k: v for k, v in part.items() if k != "report"})
        out["report"] = report
    return out


def _marker_stats(uris: list[str], storage: Storage) -> dict:
    return merge_part_stats([json.loads(storage.read_bytes(u)) for u in uris])


def reduce_stats(folder: RunFolder) -> dict:
    """All markers' statistics merged by a tree of tasks; the driver receives the root only."""
    uris = folder.markers()
    chunks = [uris[i : i + MERGE_FANIN] for i in range(0, len(uris), MERGE_FANIN)]
    return reduce_tree(
        functools.partial(_marker_stats, storage=folder.storage), chunks, merge_part_stats, MERGE_FANIN, {}
    )


def publish(
    folder: RunFolder,
    target: RunFolder,
    sizes: dict[str, dict[str, int]],
    target_bytes: int,
    orders: dict[str, str] | None = None,
) -> list[str]:
    """Compact every destination's staged outputs into final files of about ``target_bytes`` in ``target``
    (:meth:`RunFolder.publishing`); a destination in ``orders`` has each file's rows ordered by that column
    (``Stage.sort_destinations``)."""
    staged = folder.out_parts()
    items = []
    for dest in sorted(staged):
        by_task = {int(t): n for t, n in sizes.get(dest, {}).items()}
        for index, (lo, hi) in enumerate(plan_ranges(by_task, target_bytes) if by_task else []):
            parts = [p.__dict__ for p in staged[dest] if p.lo <= hi and p.hi >= lo]
            items.append(
                {
                    "dest": dest,
                    "uri": target.final_part(dest, index),
                    "lo": lo,
                    "hi": hi,
                    "parts": parts,
                    "order_by": (orders or {}).get(dest),
                }
            )
    results = []
    with console().phase("write files", lambda: (len(results), len(items)), unit="files"):
        for result in as_completed(compact, items, folder):
            results.append(result)
    return sorted(r["uri"] for r in results if r["uri"])


def _file_stats(file: tuple[str, str], storage: Storage, text_field: str) -> dict:
    """The report's statistics of one final file (``(destination, uri)``)."""
    dest, uri = file
    fs, path = storage.resolve(uri)
    table = pq.read_table(path, filesystem=fs)
    if dest == REJECTS:
        return collect_stats({}, table, text_field)
    return collect_stats({dest: table}, table.schema.empty_table().select([]), text_field)


def load_manifest(run_uri: str, storage: Storage) -> dict[str, Any]:
    return RunFolder(run_uri, storage).load_manifest()


def rerender_report(run_uri: str, storage: Storage, address: str | None = None) -> dict[str, Any]:
    """Recompute report.json and report.html of a finished run from its Parquet files, on Ray (one task per file,
    merged by a tree of tasks), keeping what stages summarized on the workers from its report.json."""
    folder = RunFolder(run_uri, storage)
    manifest = folder.load_manifest()
    previous = folder.uri("report.json")
    previous = json.loads(storage.read_bytes(previous)) if storage.exists(previous) else {}
    leaf = functools.partial(_file_stats, storage=storage, text_field=manifest["config"]["input"]["text_field"])
    files = [(dest, uri) for dest, uris in folder.final_files().items() for uri in uris]
    with ray_session(address):
        collected = reduce_tree(leaf, files, merge_stats, MERGE_FANIN, {})
    report = with_worker_summaries(build_report(collected, manifest), previous)
    storage.write_bytes(folder.uri("report.json"), json.dumps(report, indent=2, default=str).encode())
    storage.write_bytes(folder.uri("report.html"), render_html(report, manifest).encode())
    return report
