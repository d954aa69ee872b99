"""Where the time went: the run's phases (wall clock, back to back) and the seconds its tasks spent per stage
(from the manifest's ``timing``)."""

from thresher.core.charts import bar_chart
from thresher.curate.report import Section, table_html


class Timing(Section):
    name = "timing"
    title = "Where the time went"
    order = 90

    def summarize(self, collected, manifest):
        return manifest.get("timing")

    def html(self, summary):
        phases, tasks = summary["phases"], summary["tasks"]
        wall, cpus = summary["wall_s"], summary["cpus"]
        out = (
            f"<p>{wall:,.1f} s from the command's start to the report, on {cpus:g} CPUs. The phases follow one "
            f"another on the driver; the tasks' seconds are summed over the tasks that ran in parallel "
            f"({summary['task_seconds']:,.1f} s in all; the rest of the CPUs' time went to moving data between "
            f"stages, scheduling and waiting).</p>"
        )
        out += bar_chart(list(phases), list(phases.values()), "phases", axis="wall seconds")
        out += bar_chart(
            list(tasks),
            [t["seconds"] for t in tasks.values()],
            "tasks' seconds by stage",
            axis="seconds (summed over tasks)",
            color="#7a6ab5",
        )
        rows = [
            [name, t.get("rows", ""), t.get("rows_per_s") or "", t.get("mb_per_s") or ""] for name, t in tasks.items()
        ]
        return out + table_html(["stage (task seconds: above)", "rows in", "rows per task second", "MB/s"], rows)
