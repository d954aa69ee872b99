"""Duplicates removed by the stages that declare this section (``dedup_exact``, ``dedup_fuzzy``): rates, cluster
sizes and example clusters.

Computed from the written slices alone: a removed record is a reject whose ``detail`` names the record kept for its
cluster (``duplicate of kept record <id>``, :data:`thresher.curate.dedup.removal.KEPT_DETAIL`: what a stage that
declares this section writes; ``duplicate of record <id> of <run>`` for a duplicate of an earlier run's record). The
workers count the clusters of every stage that writes such details (``DUPLICATE_DETAIL``), and the report shows those
of the stages that declare it. The removed records of one cluster may be written by different tasks,
so cluster sizes are counted for a bounded sample that every task agrees on: the clusters whose kept id has
one of the ``SAMPLE_CLUSTERS`` smallest hashes (XXH64 of the id; each task keeps its own smallest, and a cluster
among the smallest overall is among the smallest of every task that saw it, so its count is exact). Up to that
many clusters the histogram is complete; beyond, it is a uniform sample. Examples are the largest of the
``EXAMPLE_CLUSTERS`` smallest-hash clusters, with snippets of their ``REMOVED_SHOWN`` removed records with the
smallest ids and of the kept one where it is among the ``SAMPLE_KEPT`` smallest-hash kept records (the
smallest-hash cluster heads usually are; examples with a kept snippet come first).
"""

from __future__ import annotations

import heapq

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.core.charts import bar_chart
from thresher.curate.dedup.removal import KEPT_DETAIL
from thresher.curate.report import Section, table_html
from thresher.curate.report.arrays import hashes, take

DUPLICATE_DETAIL = "duplicate of "  # how a removed duplicate's detail starts (KEPT_DETAIL, or of a reference run)
SAMPLE_CLUSTERS = 2000
EXAMPLE_CLUSTERS = 20
SAMPLE_KEPT = 300
SNIPPET = 160
REMOVED_SHOWN = 3
SIZE_BINS = [(2, 2), (3, 3), (4, 4), (5, 9), (10, 99), (100, None)]


def _snippet(text) -> str:
    """The text's first ``SNIPPET`` characters, whitespace runs as one space (from a prefix when that is enough)."""
    text = str(text or "")
    for prefix in (text[: 2 * SNIPPET], text[: 4 * SNIPPET], text):
        head = " ".join(prefix.split())
        if len(head) > SNIPPET:
            return head[:SNIPPET] + "..."
    return head


def _lowest_ids(rows: pa.Table, clusters: list[str], text_field: str) -> list[tuple]:
    """``(id, kept id, text)`` of the ``REMOVED_SHOWN`` removed records with the smallest ids (ties by text) of each
    cluster."""
    keys = [("detail", "ascending"), ("id", "ascending")]
    if text_field in rows.column_names:
        keys.append((text_field, "ascending"))
    shown = rows.filter(pc.is_in(rows["detail"], pa.array(clusters, rows.schema.field("detail").type))).sort_by(keys)
    n = shown.num_rows
    if not n:
        return []
    detail = shown["detail"]
    starts = np.ones(n, bool)
    starts[1:] = pc.not_equal(detail.slice(1), detail.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    rank = np.arange(n) - np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    first = shown.filter(pa.array(rank < REMOVED_SHOWN))
    texts = first[text_field].to_pylist() if text_field in first.column_names else [None] * first.num_rows
    return list(zip(first["id"].to_pylist(), first["detail"].to_pylist(), texts))


def _smallest(items: dict, k: int) -> dict:
    """The ``k`` entries with the smallest hash (entry[0])."""
    return items if len(items) <= k else dict(heapq.nsmallest(k, items.items(), key=lambda kv: kv[1][0]))


class Duplicates(Section):
    name = "duplicates"
    title = "Duplicates"
    order = 50

    def collect(self, kept, rejected, text_field):
        out = {}
        if "stage" in rejected.column_names and "detail" in rejected.column_names and rejected.num_rows:
            removed = rejected.filter(pc.fill_null(pc.starts_with(rejected["detail"], DUPLICATE_DETAIL), False))
            for stage in pc.unique(removed["stage"]).to_pylist():
                rows = removed.filter(pc.equal(removed["stage"], stage))
                kept_ids = pc.replace_substring_regex(rows["detail"], "^" + KEPT_DETAIL, "")  # detail: the kept id
                rows = rows.set_column(rows.column_names.index("detail"), "detail", kept_ids)
                out[stage] = self._clusters(rows, text_field)
        snippets = {}
        for table in kept.values():
            if "id" in table.column_names and text_field in table.column_names:
                id_hashes = hashes(table["id"])
                rows = np.argsort(id_hashes, kind="stable")[:SAMPLE_KEPT]
                for rid, h, text in zip(
                    take(table["id"], rows).to_pylist(),
                    id_hashes[rows].tolist(),
                    take(table[text_field], rows).to_pylist(),
                ):
                    snippets[str(rid)] = [h, _snippet(text)]
        out["kept_snippets"] = _smallest(snippets, SAMPLE_KEPT)
        return out

    def _clusters(self, rows: pa.Table, text_field: str) -> dict:
        """Sizes of the ``SAMPLE_CLUSTERS`` smallest-hash clusters, removed records of the ``EXAMPLE_CLUSTERS``."""
        counts = pc.value_counts(rows["detail"].drop_null())
        kept_ids, removed = counts.field("values"), counts.field("counts").to_numpy()
        kept_hashes = hashes(kept_ids)
        sampled = np.argsort(kept_hashes, kind="stable")[:SAMPLE_CLUSTERS]
        sizes = {
            k: [h, n]
            for k, h, n in zip(
                kept_ids.take(sampled).to_pylist(), kept_hashes[sampled].tolist(), removed[sampled].tolist()
            )
        }
        examples = _smallest(sizes, EXAMPLE_CLUSTERS)
        shown = {k: [] for k in examples}
        for rid, kept_id, text in _lowest_ids(rows, list(examples), text_field):
            shown[kept_id].append([rid, _snippet(text)])
        return {
            "removed": rows.num_rows,
            "sizes": sizes,
            "examples": {k: [h, sorted(shown[k])[:REMOVED_SHOWN]] for k, (h, _) in examples.items()},
        }

    def merge(self, a, b):
        if a is None or b is None:
            return a or b
        out = {}
        for stage in dict.fromkeys(k for k in [*a, *b] if k != "kept_snippets"):
            x, y = a.get(stage), b.get(stage)
            if x is None or y is None:
                if x or y:
                    out[stage] = x or y
                continue
            sizes = dict(x["sizes"])
            for k, (h, n) in y["sizes"].items():
                sizes[k] = [h, sizes[k][1] + n] if k in sizes else [h, n]
            examples = dict(x["examples"])
            for k, (h, removed) in y["examples"].items():
                examples[k] = [h, sorted(examples[k][1] + removed)[:REMOVED_SHOWN]] if k in examples else [h, removed]
            out[stage] = {
                "removed": x["removed"] + y["removed"],
                "sizes": _smallest(sizes, SAMPLE_CLUSTERS),
                "examples": _smallest(examples, EXAMPLE_CLUSTERS),
            }
        out["kept_snippets"] = _smallest({**a.get("kept_snippets", {}), **b.get("kept_snippets", {})}, SAMPLE_KEPT)
        return out

    def summarize(self, collected, manifest):
        if not collected:
            return None
        by_stage = manifest.get("counts", {}).get("by_stage", {})
        total_in = manifest.get("counts", {}).get("input", 0)
        summary = {"stages": {}}
        for stage in self.run_stages(manifest):
            c = collected.get(stage)
            if not c:
                continue
            sizes = [n + 1 for _, n in c["sizes"].values()]
            histogram = {
                _bin_label(lo, hi): sum(1 for s in sizes if s >= lo and (hi is None or s <= hi)) for lo, hi in SIZE_BINS
            }
            stage_in = by_stage.get(stage, {}).get("in", 0)
            snippets = collected.get("kept_snippets", {})
            examples = sorted(
                c["examples"].items(),
                key=lambda kv: (kv[0] not in snippets, -c["sizes"].get(kv[0], [0, 0])[1], kv[1][0]),
            )[:3]
            summary["stages"][stage] = {
                "removed": c["removed"],
                "rate_of_stage_input": round(c["removed"] / stage_in, 4) if stage_in else None,
                "rate_of_input": round(c["removed"] / total_in, 4) if total_in else None,
                "clusters_counted": len(sizes),
                "clusters_sampled": len(sizes) >= SAMPLE_CLUSTERS,
                "cluster_sizes": histogram,
                "examples": [
                    {
                        "kept_id": kept_id,
                        "size": c["sizes"].get(kept_id, [0, 0])[1] + 1,
                        "kept_snippet": snippets.get(kept_id, [0, None])[1],
                        "removed": [{"id": rid, "snippet": s} for rid, s in removed],
                    }
                    for kept_id, (_, removed) in examples
                ],
            }
        metrics = manifest.get("metrics", {})
        by_reference = {
            stage: m["removed_by_reference"]
            for stage, m in metrics.items()
            if isinstance(m, dict) and m.get("removed_by_reference")
        }
        if by_reference:  # records removed as duplicates of the kept records of earlier runs (``against``)
            summary["removed_by_reference"] = by_reference
        return summary if summary["stages"] else None

    def html(self, summary):
        out = ""
        rows = [
            [stage, s["removed"], _pct(s["rate_of_stage_input"]), _pct(s["rate_of_input"]), s["clusters_counted"]]
            for stage, s in summary["stages"].items()
        ]
        out += table_html(["stage", "removed", "of stage input", "of all input", "clusters counted"], rows)
        references = [
            [stage, run, n]
            for stage, runs in summary.get("removed_by_reference", {}).items()
            for run, n in runs.items()
        ]
        if references:
            out += "<h3>removed as duplicates of earlier runs</h3>"
            out += table_html(["stage", "reference run", "removed"], references)
        for stage, s in summary["stages"].items():
            note = " (a uniform sample of clusters)" if s["clusters_sampled"] else ""
            out += f"<h3>{stage}: cluster sizes{note}</h3>"
            out += bar_chart(
                list(s["cluster_sizes"]),
                list(s["cluster_sizes"].values()),
                f"{stage}: clusters by size (records)",
                axis="clusters",
            )
            for ex in s["examples"]:
                items = [["kept", ex["kept_id"], ex["kept_snippet"] or "(not sampled)"]]
                items += [["removed", r["id"], r["snippet"]] for r in ex["removed"]]
                out += f"<h4>cluster of {ex['size']} records</h4>" + table_html(["", "id", "text"], items)
        return out


def _bin_label(lo: int, hi: int | None) -> str:
    return f"{lo}+" if hi is None else str(lo) if lo == hi else f"{lo}-{hi}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"
