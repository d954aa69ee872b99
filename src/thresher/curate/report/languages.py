"""Language distribution of kept and rejected records, with the mean ``lang_score`` (columns added by ``langid``).

Rejected records count under the language found for them; those rejected before ``langid`` ran have none and
are left out.
"""

import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.report import Section, table_html
from thresher.curate.report.charts import bar_chart


def language_counts(table: pa.Table) -> dict:
    """{lang: {"docs": n, "score_sum": s}} over the rows that have a language."""
    if "lang" not in table.column_names or not table.num_rows:
        return {}
    cols = ["lang"] + (["lang_score"] if "lang_score" in table.column_names else [])
    t = table.select(cols).filter(pc.is_valid(table["lang"]))
    if "lang_score" not in cols:
        t = t.append_column("lang_score", pa.array([0.0] * t.num_rows))
    grouped = t.group_by("lang").aggregate([("lang", "count"), ("lang_score", "sum")])
    return {lang: {"docs": n, "score_sum": s or 0.0} for lang, n, s in zip(
        grouped["lang"].to_pylist(), grouped["lang_count"].to_pylist(), grouped["lang_score_sum"].to_pylist())}


class Languages(Section):
    name = "languages"
    title = "Languages"
    order = 40

    def collect(self, kept, rejected, text_field):
        out = {"kept": {}, "rejected": language_counts(rejected)}
        for table in kept.values():
            out["kept"] = self.merge(out["kept"], language_counts(table))
        return out if out["kept"] or out["rejected"] else None

    def summarize(self, collected, manifest):
        if not collected:
            return None
        summary = {}
        for k in ("kept", "rejected"):
            counts = collected.get(k) or {}
            total = sum(c["docs"] for c in counts.values())
            summary[k] = {"docs": total, "languages": len(counts), "by_language": {
                lang: {"docs": c["docs"], "share": c["docs"] / total, "mean_score": c["score_sum"] / c["docs"]}
                for lang, c in sorted(counts.items(), key=lambda kv: (-kv[1]["docs"], kv[0]))}}
        return summary

    def html(self, summary):
        kept, rejected = summary["kept"]["by_language"], summary["rejected"]["by_language"]
        langs = sorted(set(kept) | set(rejected), key=lambda l: (-kept.get(l, {}).get("docs", 0),
                                                                 -rejected.get(l, {}).get("docs", 0), l))
        rows = [[l, kept.get(l, {}).get("docs", 0), f"{100 * kept[l]['share']:.1f}%" if l in kept else "-",
                 kept[l]["mean_score"] if l in kept else "-", rejected.get(l, {}).get("docs", 0),
                 rejected[l]["mean_score"] if l in rejected else "-"] for l in langs]
        top = [l for l in langs if l in kept][:30]
        out = table_html(["language", "kept", "kept share", "mean score (kept)", "rejected", "mean score (rejected)"],
                         rows)
        out += bar_chart(top, [kept[l]["docs"] for l in top], "kept records by language")
        top_rej = sorted(rejected, key=lambda l: -rejected[l]["docs"])[:30]
        out += bar_chart(top_rej, [rejected[l]["docs"] for l in top_rej], "rejected records by language",
                         color="#b5544a")
        return out
