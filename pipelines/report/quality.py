"""Quality filtering: rejections by rule, and the distribution of quality signals where they were kept."""

from collections import Counter

import numpy as np

from pipelines.report import Section, table_html
from pipelines.report.charts import bar_chart, histogram

BINS = [i / 20 for i in range(21)]


class QualitySection(Section):
    name = "quality"
    title = "Quality filters"
    order = 50

    def collect(self, kept, rejected, text_field):
        rules: Counter = Counter()
        if "stage" in rejected.column_names and rejected.num_rows:
            for stage, reason in zip(rejected["stage"].to_pylist(), rejected["reason"].to_pylist()):
                if stage == "quality":
                    rules[reason] += 1
        signals: dict = {}
        for table in kept.values():
            for col in table.column_names:
                if col.startswith("q_") and col.endswith("_frac"):
                    values = np.asarray([v for v in table[col].to_pylist() if v is not None], dtype=float)
                    counts, _ = np.histogram(np.clip(values, 0, 1), bins=BINS)
                    signals[col] = self.merge(signals.get(col), {str(i): int(c) for i, c in enumerate(counts) if c})
        return {"rejected_by_rule": dict(rules), "signals": signals} if rules or signals else None

    def html(self, summary):
        rules = sorted(summary["rejected_by_rule"].items(), key=lambda kv: -kv[1])
        out = table_html(["rule", "rejected"], [list(r) for r in rules])
        out += bar_chart([r[0] for r in rules], [r[1] for r in rules], "rejections by quality rule", color="#b5544a")
        for col, bins in sorted(summary["signals"].items()):
            out += histogram(BINS, [bins.get(str(i), 0) for i in range(20)], f"{col} (kept records)")
        return out
