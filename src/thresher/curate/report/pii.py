"""PII found and redacted, by type (from the manifest's metrics of the stage that declares this section)."""

import html

from thresher.core.charts import bar_chart
from thresher.curate.report import Section, folded_table


class Pii(Section):
    name = "pii"
    title = "PII redaction"
    order = 30

    def summarize(self, collected, manifest):
        metrics = self.stage_metrics(manifest)
        return {"counts": metrics} if metrics else None

    def html(self, summary):
        counts = {k: v for k, v in summary["counts"].items() if not k.startswith("docs")}
        rows = [[k, v] for k, v in sorted(counts.items(), key=lambda x: -x[1])]
        found = [r for r in rows if r[1]]
        docs = "".join(
            f"<p>{html.escape(k.replace('_', ' '))}: <b>{v:,}</b></p>"
            for k, v in summary["counts"].items()
            if k.startswith("docs")
        )
        out = docs + folded_table(
            ["type", "occurrences"], rows, "{n} more types with 0: " + ", ".join(r[0] for r in rows if not r[1])
        )
        if len(found) > 3:  # a chart beside a table of a few rows would repeat it
            out += bar_chart(
                [r[0] for r in found], [r[1] for r in found], "PII occurrences by type", axis="occurrences"
            )
        return out
