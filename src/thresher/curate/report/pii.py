"""PII found and redacted, by type (from the manifest's metrics)."""

from thresher.curate.report import Section, table_html
from thresher.curate.report.charts import bar_chart


class Pii(Section):
    name = "pii"
    title = "PII redaction"
    order = 30

    def summarize(self, collected, manifest):
        metrics = manifest.get("metrics", {}).get("pii")
        return {"counts": metrics} if metrics else None

    def html(self, summary):
        counts = {k: v for k, v in summary["counts"].items() if not k.startswith("docs")}
        rows = [[k, v] for k, v in sorted(counts.items(), key=lambda x: -x[1])]
        extra = [[k, v] for k, v in summary["counts"].items() if k.startswith("docs")]
        return table_html(["type", "occurrences"], rows + extra) + bar_chart([r[0] for r in rows], [r[1] for r in rows], "PII occurrences by type")
