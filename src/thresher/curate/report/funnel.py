"""Per-stage funnel: records in, kept and rejected at each stage, with the reasons."""

from thresher.curate.report import Section, table_html
from thresher.curate.report.charts import bar_chart


class Funnel(Section):
    name = "funnel"
    title = "Stage funnel"
    order = 10

    def summarize(self, collected, manifest):
        counts = manifest.get("counts", {})
        return {"by_stage": counts.get("by_stage", {}), "rejected_by_reason": manifest.get("rejected_by_reason", {})}

    def html(self, summary):
        by_stage = summary["by_stage"]
        rows = [[s, c["in"], c.get("generated", 0), c["out"], c["rejected"],
                 f"{100 * c['rejected'] / (c['in'] + c.get('generated', 0)):.1f}%" if c["in"] else "-"]
                for s, c in by_stage.items()]
        out = table_html(["stage", "in", "generated", "out", "rejected", "rejected %"], rows)
        out += bar_chart(list(by_stage), [c["out"] for c in by_stage.values()], "records after each stage")
        reasons = [(f"{stage}: {reason}", n) for stage, rs in summary["rejected_by_reason"].items() for reason, n in rs.items()]
        reasons.sort(key=lambda x: -x[1])
        if reasons:
            out += "<h3>Rejections by reason</h3>" + table_html(["stage: reason", "records"], [list(r) for r in reasons])
            out += bar_chart([r[0] for r in reasons[:25]], [r[1] for r in reasons[:25]], "rejections by reason", color="#b5544a")
        return out
