"""Run gates: each configured gate with its limit, the measured value and whether it held."""

from thresher.curate.report import Section, table_html


class Gates(Section):
    name = "gates"
    title = "Run gates"
    order = 5

    def summarize(self, collected, manifest):
        if not manifest.get("gates"):
            return None
        return {"status": manifest.get("status"), "gates": manifest["gates"]}

    def html(self, summary):
        rows = [[g["gate"], g["limit"], g["measured"], "held" if g["ok"] else "VIOLATED"] for g in summary["gates"]]
        return f"<p>status: <b>{summary['status']}</b></p>" + table_html(["gate", "limit", "measured", "result"], rows)
