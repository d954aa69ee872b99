"""Quality filters: per rule (the ``quality`` stage's summary, :mod:`thresher.curate.filters.rule_stats`) its
threshold, the documents it rejects first, fails at all and fails alone, the distribution of its signal over the
documents the stage kept and rejected, what a threshold one bin looser or tighter would keep, the combinations of
rules failed together and a sample of the documents it rejects; and from what is written, the rejections by first
failing rule (the rejects' ``reason`` of stage ``quality``), would-be rejections under ``annotate_only``
(``q_reason``) and the distributions of the ``q_<signal>`` columns (``signals``), which are all a report
recomputed from the written files (``thresher report``) shows."""

from __future__ import annotations

import html

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.core.charts import bar_chart, histogram
from thresher.curate.filters.presets import EMPTY, PRESETS, SIGNALS, EnabledRule, enabled_rules, expand
from thresher.curate.filters.rule_stats import COMBINED, EDGES, cut_samples, rule_edges
from thresher.curate.report import Section, add, table_html

# Signals drawn as histograms when there are no rule statistics (every signal is in the table).
CHARTED = (
    "words",
    "mean_word_len",
    "alpha_word_frac",
    "stop_words",
    "dup_line_frac",
    "top_2gram_char_frac",
    "dup_5gram_char_frac",
    "c4_sentences",
    "line_punct_ratio",
    "short_line_ratio",
    "char_dup_ratio",
)
SIGNAL_COLUMN = "q_"
OVERLAPS = 10  # combinations of failed rules listed
OPEN_RULES = 3  # rules whose histograms and samples are shown unfolded (those that fail the most documents)
KEPT, REJECTED = "#5a9e6f", "#b5544a"


def reason_counts(values: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(values.drop_null())
    return {v: n for v, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())}


def signal_histograms(table: pa.Table) -> dict:
    """{signal: {"n", "sum", "bins": {index: count}}} over the ``q_<signal>`` columns (NaN: not measured)."""
    out = {}
    for col in table.column_names:
        name = col[len(SIGNAL_COLUMN) :]
        if not col.startswith(SIGNAL_COLUMN) or name not in SIGNALS:
            continue
        values = table[col].to_numpy(zero_copy_only=False).astype(np.float64)
        values = values[~np.isnan(values)]
        if not len(values):
            continue
        counts, _ = np.histogram(values, bins=EDGES[SIGNALS[name].kind])
        out[name] = {
            "n": int(len(values)),
            "sum": float(values.sum()),
            "bins": {str(i): int(c) for i, c in enumerate(counts) if c},
        }
    return out


def quality_config(manifest: dict) -> dict | None:
    """The options of the run's stage that declares this section."""
    return QualitySection().options(manifest)


def thresholds(manifest: dict) -> dict[str, str]:
    """signal -> its thresholds in the run's quality config, e.g. ``>= 50, <= 100000``."""
    config = quality_config(manifest)
    if not config:
        return {}
    out: dict[str, list[str]] = {}
    for preset in PRESETS.values():
        section = config.get(preset.section, {})
        for rule in preset.rules:
            value = section.get(rule.option)
            if value is None or value is False:
                continue
            out.setdefault(rule.signal, []).append(_threshold_text(rule.bound, value))
    return {k: ", ".join(v) for k, v in out.items()}


def _threshold_text(bound: str, value) -> str:
    return "reject if present" if bound == "flag" else f"{'>=' if bound == 'min' else '<='} {value:g}"


def configured_rules(manifest: dict) -> list[EnabledRule]:
    """The enabled rules of the run's quality config, in the order they run (as the stage built them)."""
    from thresher.curate.stages.quality import QualityConfig  # the stage module loads pandas: not at import

    config = quality_config(manifest)
    if not config:
        return []
    parsed = QualityConfig.model_validate(config)
    return enabled_rules(expand(parsed.presets), parsed.sections())


def what_if(rule: EnabledRule, edges: list[float], kept: list[int], alone: list[int]) -> dict | None:
    """The documents a threshold one bin edge looser would let through (those failing this rule alone with a signal
    in the bin beyond the threshold) and one edge tighter would reject (kept ones in the bin inside it); ``None``
    as a looser threshold: no limit. Only for ``min`` and ``max`` rules; no tighter ``max`` at the lowest edge."""
    if rule.rule.bound == "flag":
        return None
    k = edges.index(float(rule.threshold))  # an edge of its own histogram (rule_edges)
    out = {}
    if rule.rule.bound == "min":
        if k > 0:
            out["looser"] = {"threshold": edges[k - 1], "kept_more": alone[k - 1]}
        if k + 1 < len(edges) - 1:
            out["tighter"] = {"threshold": edges[k + 1], "kept_fewer": kept[k]}
    else:
        if k < len(edges) - 1:
            finite = k + 1 < len(edges) - 1
            out["looser"] = {"threshold": edges[k + 1] if finite else None, "kept_more": alone[k]}
        if k > 1:  # the first bin holds the values at its lower edge too, which a threshold there keeps
            out["tighter"] = {"threshold": edges[k - 1], "kept_fewer": kept[k - 1]}
    return out


def _dense(bins: dict[str, int], n: int) -> list[int]:
    return [bins.get(str(i), 0) for i in range(n)]


class QualitySection(Section):
    name = "quality"
    title = "Quality filters"
    order = 50
    from_workers = ("documents", "rejected", "rules", "overlaps")  # rule_stats: summarized where rules run
    lists_reasons = True

    def collect(self, kept, rejected, text_field):
        out: dict = {"rejected_by_rule": {}, "would_reject": {}, "signals": {"kept": {}, "rejected": {}}}
        if rejected.num_rows and "stage" in rejected.column_names:
            mine = rejected.filter(pc.is_in(rejected["stage"], pa.array(self.stage_names(), pa.string())))
            out["rejected_by_rule"] = reason_counts(mine["reason"])
            out["signals"]["rejected"] = signal_histograms(mine)
        for table in kept.values():
            if "q_reason" in table.column_names:
                out["would_reject"] = self.merge(out["would_reject"], reason_counts(table["q_reason"]))
            out["signals"]["kept"] = self.merge(out["signals"]["kept"], signal_histograms(table))
        empty = not (out["rejected_by_rule"] or out["would_reject"] or any(out["signals"].values()))
        return None if empty else out

    def merge(self, a, b):
        """Numbers add; the rule statistics' samples keep the smallest hashes (``rule_stats.cut_samples``)."""
        out = add(a, b)
        if isinstance(out, dict) and "rule_stats" in out:
            out["rule_stats"] = {**out["rule_stats"], "samples": cut_samples(out["rule_stats"]["samples"])}
        return out

    def summarize(self, collected, manifest):
        metrics = self.stage_metrics(manifest)
        if not collected and not metrics:
            return None
        collected = collected or {}
        limits = thresholds(manifest)
        signals = {}
        for part in ("kept", "rejected"):
            for name, h in ((collected.get("signals") or {}).get(part) or {}).items():
                edges = EDGES[SIGNALS[name].kind]
                entry = signals.setdefault(
                    name, {"kind": SIGNALS[name].kind, "threshold": limits.get(name, ""), "bin_lower_edges": edges[:-1]}
                )
                entry[part] = {
                    "n": h["n"],
                    "mean": h["sum"] / h["n"],
                    "counts": [h["bins"].get(str(i), 0) for i in range(len(edges) - 1)],
                }
        by_rule = dict(sorted((collected.get("rejected_by_rule") or {}).items(), key=lambda kv: (-kv[1], kv[0])))
        by_preset: dict[str, int] = {}
        for reason, n in by_rule.items():
            by_preset[reason.split(".")[0]] = by_preset.get(reason.split(".")[0], 0) + n
        would = dict(sorted((collected.get("would_reject") or {}).items(), key=lambda kv: (-kv[1], kv[0])))
        out = {"rejected_by_rule": by_rule, "rejected_by_preset": by_preset, "skipped": metrics or {}}
        if would:  # (annotate_only) absent, not empty, where nothing was annotated
            out["would_reject"] = would
        if signals:  # (the q_<signal> columns) absent, not empty, where none were written
            out["signals"] = {k: signals[k] for k in SIGNALS if k in signals}
        if collected.get("rule_stats"):
            out.update(self.rule_summary(collected["rule_stats"], configured_rules(manifest), by_rule or would))
        return out

    @staticmethod
    def rule_summary(stats: dict, rules: list[EnabledRule], first: dict[str, int]) -> dict:
        """``rules`` (per rule: threshold, counts, histograms, what-if, samples) and ``overlaps`` of the stage's
        summary; ``first``: the documents each rule rejected first."""
        entries = []
        for rule in rules:
            s = stats["rules"].get(rule.reason, {})
            edges = rule_edges(rule)
            n = len(edges) - 1
            kept, rejected = _dense(s.get("kept", {}), n), _dense(s.get("rejected", {}), n)
            entries.append(
                {
                    "rule": rule.reason,
                    "signal": rule.rule.signal,
                    "bound": rule.rule.bound,
                    "threshold": rule.threshold,
                    "first_failing": first.get(rule.reason, 0),
                    "failed": s.get("failed", 0),
                    "alone": s.get("alone", 0),
                    "histogram": {"bin_lower_edges": edges[:-1], "kept": kept, "rejected": rejected},
                    "what_if": what_if(rule, edges, kept, _dense(s.get("rejected_alone", {}), n)),
                    "samples": [
                        {
                            "text": e["text"],
                            "value": e["value"],
                            "also_failed": [f for f in e["failed"] if f != rule.reason],
                        }
                        for e in stats["samples"].get(rule.reason, [])
                    ],
                }
            )
        if EMPTY in stats["rules"]:
            n = stats["rules"][EMPTY]["failed"]
            entries.append(
                {
                    "rule": EMPTY,
                    "signal": None,
                    "bound": None,
                    "threshold": None,
                    "first_failing": first.get(EMPTY, 0),
                    "failed": n,
                    "alone": n,
                    "histogram": None,
                    "what_if": None,
                    "samples": [],
                }
            )
        overlaps = sorted(stats["combinations"].items(), key=lambda kv: (-kv[1], kv[0]))[:OVERLAPS]
        return {
            "documents": stats["documents"],
            "rejected": stats["rejected"],
            "rules": entries,
            "overlaps": [{"rules": key.split(COMBINED), "documents": n} for key, n in overlaps],
        }

    def html(self, summary):
        rules = summary.get("rules")
        out = self.rules_html(summary) if rules else self.first_failing_html(summary)
        if summary["skipped"]:
            out += "<h3>Rules skipped or applied</h3>" + table_html(
                ["counter", "documents"], [[k, v] for k, v in summary["skipped"].items()]
            )
        if summary.get("signals") and not rules:
            out += self.signals_html(summary["signals"])
        return out

    @staticmethod
    def first_failing_html(summary) -> str:
        out = ""
        for key, title in (
            ("rejected_by_rule", "rejected (first failing rule)"),
            ("would_reject", "would reject (annotate_only; first failing rule)"),
        ):
            rules = list(summary.get(key, {}).items())
            if rules:  # the chart shows each count on its bar
                out += bar_chart(
                    [r[0] for r in rules[:25]], [r[1] for r in rules[:25]], f"quality rules: {title}", color=REJECTED
                )
        return out

    @staticmethod
    def rules_html(summary) -> str:
        rules = summary["rules"]
        out = (
            f"<p>{summary['documents']:,} documents judged, {summary['rejected']:,} failing at least one rule. "
            "Every rule is checked on every document. <i>first failing</i>: the documents rejected with this "
            "rule as their reason (the first rule they failed, in the order the rules run); <i>fails</i>: "
            "those failing it, whatever else they fail; <i>alone</i>: those failing it and no other rule (what "
            "disabling it would bring back). <i>What if</i>: the documents kept with the threshold moved one "
            "histogram bin looser or tighter, counted from the bins, for that rule alone with the other rules "
            "unchanged (an estimate where a bin edge falls on values the rule keeps).</p>"
        )
        rows = []
        for r in rules:
            w = r["what_if"] or {}
            looser, tighter = w.get("looser"), w.get("tighter")
            rows.append(
                [
                    r["rule"],
                    _threshold_text(r["bound"], r["threshold"]) if r["bound"] else "-",
                    r["first_failing"],
                    r["failed"],
                    r["alone"],
                    (f"{_moved(r['bound'], looser['threshold'])}: +{looser['kept_more']:,}" if looser else "-"),
                    (f"{_moved(r['bound'], tighter['threshold'])}: -{tighter['kept_fewer']:,}" if tighter else "-"),
                ]
            )
        out += table_html(
            ["rule", "threshold", "first failing", "fails", "alone", "kept if looser", "kept if tighter"], rows
        )
        if summary["overlaps"]:
            out += (
                "<h3>Rules failed together</h3><p>The most frequent combinations of failed rules (each "
                "rejected document counted once, under all the rules it failed).</p>"
            )
            out += table_html(
                ["rules failed", "documents"], [[" + ".join(o["rules"]), o["documents"]] for o in summary["overlaps"]]
            )
        out += "<h3>Distributions and samples per rule</h3>"
        ranked = sorted((r for r in rules if r["failed"] and r["histogram"]), key=lambda r: -r["failed"])
        for rank, r in enumerate(ranked):
            out += (
                f"<details{' open' if rank < OPEN_RULES else ''}><summary><b>{html.escape(r['rule'])}</b>: "
                f"{r['signal']} {html.escape(_threshold_text(r['bound'], r['threshold']))}; {r['failed']:,} "
                f"fail, {r['alone']:,} alone</summary>"
            )
            for part, color in (("kept", KEPT), ("rejected", REJECTED)):
                edges, counts = _trimmed(r["histogram"]["bin_lower_edges"], r["histogram"][part])
                out += histogram(edges, counts, f"{r['signal']}: documents {part}", width=520, color=color)
            if r["samples"]:
                out += (
                    ("<p>Rejected texts (their start, line breaks as ↵; those with the smallest hashes):</p><ol>")
                    + "".join(
                        f"<li>{html.escape(r['signal'])} = {s['value']:g}; also fails: "
                        f"{html.escape(', '.join(s['also_failed']) or 'nothing else')}"
                        f"<blockquote>{html.escape(s['text']).replace(chr(10), ' ↵ ')}</blockquote></li>"
                        for s in r["samples"]
                    )
                    + "</ol>"
                )
            out += "</details>"
        return out

    @staticmethod
    def signals_html(signals) -> str:
        rows = [
            [name, s["threshold"], s.get("kept", {}).get("mean", "-"), s.get("rejected", {}).get("mean", "-")]
            for name, s in signals.items()
        ]
        out = "<h3>Signals</h3>" + table_html(["signal", "threshold", "mean (kept)", "mean (rejected)"], rows)
        for name in CHARTED:
            s = signals.get(name)
            for part in ("kept", "rejected"):
                if s and part in s:
                    edges, counts = _trimmed(s["bin_lower_edges"], s[part]["counts"])
                    out += histogram(
                        edges,
                        counts,
                        f"{name} ({part}; threshold {s['threshold'] or '-'})",
                        color=KEPT if part == "kept" else REJECTED,
                    )
        return out


def _trimmed(lower_edges: list[float], counts: list[int]) -> tuple[list[float], list[int]]:
    """Bins up to the last non-empty one, with their edges (an open last bin drawn twice as wide as its start)."""
    last = max((i for i, c in enumerate(counts) if c), default=0) + 1
    edges = list(lower_edges[: last + 1])
    if len(edges) == last:  # the open-ended last bin
        edges = edges + [edges[-1] * 2 or 1]
    return edges, counts[:last]


def _moved(bound: str, value) -> str:
    return "no limit" if value is None else _threshold_text(bound, value)
