"""Document length distribution (characters) of kept and rejected records; the page also shows here the dataset
section's records by whitespace tokens per split (one section for lengths)."""

import numpy as np
import pyarrow as pa

from thresher.core.charts import histogram
from thresher.curate.report import Section, table_html
from thresher.curate.report.arrays import string_stats
from thresher.curate.report.dataset import TOKEN_EDGES

EDGES = [0, 10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 1e18]


def length_histogram(texts: pa.ChunkedArray) -> dict:
    """Non-null texts by characters."""
    lengths = string_stats(texts).chars
    if texts.null_count:
        lengths = lengths[texts.is_valid().to_numpy(zero_copy_only=False)]
    counts, _ = np.histogram(lengths, bins=EDGES)
    return {
        "docs": int(len(lengths)),
        "chars": int(lengths.sum()),
        "bins": {f"{EDGES[i]:g}": int(c) for i, c in enumerate(counts) if c},
    }


class Lengths(Section):
    name = "lengths"
    title = "Lengths"
    order = 20

    def collect(self, kept, rejected, text_field):
        out = {"kept": {}, "rejected": {}}
        for t in kept.values():
            if text_field in t.column_names:
                out["kept"] = self.merge(out["kept"], length_histogram(t[text_field]))
        if text_field in rejected.column_names:
            out["rejected"] = length_histogram(rejected[text_field])
        return out

    def summarize(self, collected, manifest):
        if not collected:
            return None
        summary = {"bin_lower_edges": [f"{e:g}" for e in EDGES[:-1]]}
        for k in ("kept", "rejected"):
            c = collected.get(k) or {}
            summary[k] = {**c, "mean_chars": c["chars"] / c["docs"]} if c.get("docs") else {"docs": 0}
        return summary

    def page(self, summary, report):
        rows, charts = [], ""
        for k, color in (("kept", "#5a9e6f"), ("rejected", "#b5544a")):
            c = summary[k]
            if c.get("docs"):
                rows.append([k, c["docs"], c["chars"], c["mean_chars"]])
                charts += _histogram(EDGES, c["bins"], f"{k} documents by length", "characters", "documents", color)
        out = table_html(["records", "documents", "characters", "mean characters"], rows) + charts
        for split, s in report.get("dataset", {}).get("splits", {}).items():
            out += _histogram(
                TOKEN_EDGES,
                s["token_histogram"]["counts"],
                f"{split}: records by whitespace tokens",
                "whitespace tokens per record",
                "records",
                "#4a7ab5",
            )
        return out


def _histogram(edges: list[float], bins: dict[str, int], title: str, x_label: str, y_label: str, color: str) -> str:
    """The bins from the first to the last that holds a record."""
    counts = [bins.get(f"{e:g}", 0) for e in edges[:-1]]
    held = [i for i, n in enumerate(counts) if n]
    if not held:
        return ""
    first, last = held[0], held[-1] + 1
    return histogram(edges[first : last + 1], counts[first:last], title, color=color, x_label=x_label, y_label=y_label)
