"""Language distribution of kept and rejected records (from the ``lang`` column added by ``langid``)."""

from collections import Counter

from pipelines.report import Section, table_html
from pipelines.report.charts import bar_chart


def _counts(table) -> dict:
    if "lang" not in table.column_names:
        return {}
    return dict(Counter(l or "unknown" for l in table["lang"].to_pylist()))


class Languages(Section):
    name = "languages"
    title = "Languages"
    order = 40

    def collect(self, kept, rejected, text_field):
        out = {"kept": {}, "rejected": _counts(rejected)}
        for table in kept.values():
            out["kept"] = self.merge(out["kept"], _counts(table))
        return out if out["kept"] or out["rejected"] else None

    def html(self, summary):
        kept, rejected = summary.get("kept", {}), summary.get("rejected", {})
        langs = sorted(set(kept) | set(rejected), key=lambda l: -(kept.get(l, 0) + rejected.get(l, 0)))
        rows = [[l, kept.get(l, 0), rejected.get(l, 0)] for l in langs]
        return table_html(["language", "kept", "rejected"], rows) + bar_chart(
            langs[:30], [kept.get(l, 0) for l in langs[:30]], "kept records by language")
