"""Damaged input: the bytes the readers lost to damage, overall and per file (from the manifest, which names local
files relative to their input, :func:`thresher.core.published.file_name`)."""

from thresher.core.charts import bar_chart
from thresher.curate.report import Section, table_html

CHARTED = 25  # files in the chart


class DamagedInput(Section):
    name = "damaged_input"
    title = "Damaged input"
    order = 11

    def summarize(self, collected, manifest):
        counts, damaged = manifest.get("counts", {}), manifest.get("damaged_input", {})
        if not damaged.get("files"):
            return None
        read, lost = counts["read_bytes"], counts["rejected_bytes"]
        return {
            "read_bytes": read,
            "rejected_bytes": lost,
            "rejected_fraction": lost / read if read else 0.0,
            "files": damaged["files"],
            "largest": damaged["largest"],
        }

    def html(self, summary):
        largest = summary["largest"]
        shown = f"the {len(largest):,} that lost the most" if len(largest) < summary["files"] else "all"
        out = (
            f"<p>{summary['files']:,} files lost {summary['rejected_bytes']:,} of the {summary['read_bytes']:,} "
            f"bytes read ({100 * summary['rejected_fraction']:.2f}%); {shown} below.</p>"
        )
        out += table_html(["file", "bytes lost"], [[f["file"], f["rejected_bytes"]] for f in largest])
        charted = largest[:CHARTED]
        return out + bar_chart(
            [f["file"].rsplit("/", 1)[-1] for f in charted],
            [f["rejected_bytes"] for f in charted],
            "bytes lost by file",
            color="#b5544a",
            axis="bytes",
        )
