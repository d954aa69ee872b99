"""Quality filters: rejections by rule (from the rejects' ``reason`` of stage ``quality``), would-be rejections
under ``annotate_only`` (``q_reason``), and distributions of the ``q_<signal>`` columns of kept records and of
records the quality stage rejected, with the thresholds of the run's config."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.filters.presets import PRESETS, SIGNALS
from thresher.curate.report import Section, table_html
from thresher.curate.report.charts import bar_chart, histogram

EDGES = {
    "fraction": [i / 20 for i in range(21)] + [float("inf")],
    "count": [0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 100_000, float("inf")],
    "length": list(range(21)) + [float("inf")],
    "flag": [0, 0.5, float("inf")],
}
# Signals drawn as histograms (every signal is in the table).
CHARTED = ("words", "mean_word_len", "alpha_word_frac", "stop_words", "dup_line_frac", "top_2gram_char_frac",
           "dup_5gram_char_frac", "c4_sentences", "line_punct_ratio", "short_line_ratio", "char_dup_ratio")
SIGNAL_COLUMN = "q_"


def reason_counts(values: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(values.drop_null())
    return {v: n for v, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())}


def signal_histograms(table: pa.Table) -> dict:
    """{signal: {"n", "sum", "bins": {index: count}}} over the ``q_<signal>`` columns (NaN: not measured)."""
    out = {}
    for col in table.column_names:
        name = col[len(SIGNAL_COLUMN):]
        if not col.startswith(SIGNAL_COLUMN) or name not in SIGNALS:
            continue
        values = table[col].to_numpy(zero_copy_only=False).astype(np.float64)
        values = values[~np.isnan(values)]
        if not len(values):
            continue
        counts, _ = np.histogram(values, bins=EDGES[SIGNALS[name].kind])
        out[name] = {"n": int(len(values)), "sum": float(values.sum()),
                     "bins": {str(i): int(c) for i, c in enumerate(counts) if c}}
    return out


def thresholds(manifest: dict) -> dict[str, str]:
    """signal -> its thresholds in the run's quality config, e.g. ``>= 50, <= 100000``."""
    config = next((s["quality"] for s in manifest.get("config", {}).get("stages", []) if "quality" in s), None)
    if not config:
        return {}
    out: dict[str, list[str]] = {}
    for preset in PRESETS.values():
        section = config.get(preset.section, {})
        for rule in preset.rules:
            value = section.get(rule.option)
            if value is None or value is False:
                continue
            text = "reject if present" if rule.bound == "flag" else f"{'>=' if rule.bound == 'min' else '<='} {value:g}"
            out.setdefault(rule.signal, []).append(text)
    return {k: ", ".join(v) for k, v in out.items()}


class QualitySection(Section):
    name = "quality"
    title = "Quality filters"
    order = 50

    def collect(self, kept, rejected, text_field):
        out: dict = {"rejected_by_rule": {}, "would_reject": {}, "signals": {"kept": {}, "rejected": {}}}
        if rejected.num_rows and "stage" in rejected.column_names:
            mine = rejected.filter(pc.equal(rejected["stage"], "quality"))
            out["rejected_by_rule"] = reason_counts(mine["reason"])
            out["signals"]["rejected"] = signal_histograms(mine)
        for table in kept.values():
            if "q_reason" in table.column_names:
                out["would_reject"] = self.merge(out["would_reject"], reason_counts(table["q_reason"]))
            out["signals"]["kept"] = self.merge(out["signals"]["kept"], signal_histograms(table))
        empty = not (out["rejected_by_rule"] or out["would_reject"] or any(out["signals"].values()))
        return None if empty else out

    def summarize(self, collected, manifest):
        metrics = manifest.get("metrics", {}).get("quality")
        if not collected and not metrics:
            return None
        collected = collected or {"rejected_by_rule": {}, "would_reject": {}, "signals": {}}
        limits = thresholds(manifest)
        signals = {}
        for part in ("kept", "rejected"):
            for name, h in (collected["signals"].get(part) or {}).items():
                edges = EDGES[SIGNALS[name].kind]
                entry = signals.setdefault(name, {"kind": SIGNALS[name].kind, "threshold": limits.get(name, ""),
                                                  "bin_lower_edges": edges[:-1]})
                entry[part] = {"n": h["n"], "mean": h["sum"] / h["n"],
                               "counts": [h["bins"].get(str(i), 0) for i in range(len(edges) - 1)]}
        by_rule = dict(sorted(collected["rejected_by_rule"].items(), key=lambda kv: (-kv[1], kv[0])))
        by_preset: dict[str, int] = {}
        for reason, n in by_rule.items():
            by_preset[reason.split(".")[0]] = by_preset.get(reason.split(".")[0], 0) + n
        return {"rejected_by_rule": by_rule, "rejected_by_preset": by_preset,
                "would_reject": dict(sorted(collected["would_reject"].items(), key=lambda kv: (-kv[1], kv[0]))),
                "skipped": metrics or {}, "signals": {k: signals[k] for k in SIGNALS if k in signals}}

    def html(self, summary):
        out = ""
        for key, title in (("rejected_by_rule", "rejected"), ("would_reject", "would reject (annotate_only)")):
            rules = list(summary[key].items())
            if rules:
                out += table_html(["rule", title], [list(r) for r in rules])
                out += bar_chart([r[0] for r in rules[:25]], [r[1] for r in rules[:25]], f"quality rules: {title}",
                                 color="#b5544a")
        if summary["skipped"]:
            out += "<h3>Rules skipped or applied</h3>" + table_html(
                ["counter", "documents"], [[k, v] for k, v in summary["skipped"].items()])
        signals = summary["signals"]
        if signals:
            rows = [[name, s["threshold"], s.get("kept", {}).get("mean", "-"), s.get("rejected", {}).get("mean", "-")]
                    for name, s in signals.items()]
            out += "<h3>Signals</h3>" + table_html(["signal", "threshold", "mean (kept)", "mean (rejected)"], rows)
            for name in CHARTED:
                s = signals.get(name)
                for part in ("kept", "rejected"):
                    if s and part in s:
                        counts = s[part]["counts"]
                        last = max((i for i, c in enumerate(counts) if c), default=0) + 1
                        edges = s["bin_lower_edges"][: last + 1]
                        if len(edges) == last:  # the open-ended last bin
                            edges = edges + [edges[-1] * 2 or 1]
                        out += histogram(edges, counts[:last], f"{name} ({part}; threshold {s['threshold'] or '-'})",
                                         color="#5a9e6f" if part == "kept" else "#b5544a")
        return out
