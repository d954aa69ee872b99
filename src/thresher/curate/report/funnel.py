"""Per-stage funnel: records in, kept and rejected at each stage, with the reasons.

Each stage's reasons are listed in its row, once: a stage whose reasons a section it declares details (``lists_reasons``:
the quality rules) links to that section instead.
"""

import html

from thresher.core.charts import bar_chart
from thresher.curate.report import SECTIONS, Markup, Section, declared_sections, table_html

SHOWN_REASONS = 3


class Funnel(Section):
    name = "funnel"
    title = "Stage funnel"
    order = 10

    def summarize(self, collected, manifest):
        counts = manifest.get("counts", {})
        return {"by_stage": counts.get("by_stage", {}), "rejected_by_reason": manifest.get("rejected_by_reason", {})}

    def page(self, summary, report):
        by_stage, reasons = summary["by_stage"], summary["rejected_by_reason"]
        generated = any(c.get("generated") for c in by_stage.values())
        header = ["stage", "in", *(["generated"] if generated else []), "out", "rejected", "rejected %", "reasons"]
        rows = []
        for stage, c in by_stage.items():
            entering = c["in"] + c.get("generated", 0)
            rows.append(
                [
                    stage,
                    c["in"],
                    *([c.get("generated", 0)] if generated else []),
                    c["out"],
                    c["rejected"],
                    f"{100 * c['rejected'] / entering:.1f}%" if entering else "-",
                    _reasons(stage, reasons.get(stage, {}), report),
                ]
            )
        return table_html(header, rows) + bar_chart(
            list(by_stage), [c["out"] for c in by_stage.values()], "records after each stage", axis="records"
        )


def _reasons(stage: str, reasons: dict[str, int], report: dict) -> Markup:
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    section = next((s for s in declared_sections(stage) if s in SECTIONS and SECTIONS[s].lists_reasons), None)
    if section in report and len(ranked) > 1:
        return Markup(f'{len(ranked)} rules: see <a href="#{section}">{html.escape(SECTIONS[section].title)}</a>')
    shown = ", ".join(f"{html.escape(r)} ({n:,})" for r, n in ranked[:SHOWN_REASONS])
    more = len(ranked) - SHOWN_REASONS
    return Markup(shown + (f", and {more} more" if more > 0 else ""))
