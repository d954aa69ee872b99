"""The commit phase's work: the parts' statistics merged by a tree of Ray tasks, the staged outputs compacted into
final files (``thresher.curate.writer.compact``); and ``thresher report``'s recomputation for a finished run."""

from __future__ import annotations

import json
from typing import Any

import pyarrow.parquet as pq

from thresher.core.console import current as console
from thresher.runtime import ray_session
from thresher.core.storage import Storage
from thresher.curate.map import retried_io
from thresher.curate.report import add, build_report, collect_stats, merge_stats, render_html
from thresher.curate.run_folder import REJECTS, RunFolder
from thresher.curate.writer import compact, plan_ranges

MERGE_FANIN = 64


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
