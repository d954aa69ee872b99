"""Language distribution of kept and rejected records, with the mean ``lang_score`` (columns added by ``langid``).

Rejected records count under the language found for them, per stage that rejected them (``langid`` itself, for a
language not kept, or a later stage); those rejected before ``langid`` ran have none and are left out.
"""

import pyarrow as pa
import pyarrow.compute as pc

from thresher.core.charts import bar_chart
from thresher.curate.report import Section, table_html

SHOWN = 20  # languages in the rejected table and charts


def language_counts(table: pa.Table) -> dict:
    """{lang: {"docs": n, "score_sum": s}} over the rows that have a language."""
    if "lang" not in table.column_names or not table.num_rows:
        return {}
    cols = ["lang"] + (["lang_score"] if "lang_score" in table.column_names else [])
    t = table.select(cols).filter(pc.is_valid(table["lang"]))
    if "lang_score" not in cols:
        t = t.append_column("lang_score", pa.array([0.0] * t.num_rows))
    elif not pa.types.is_floating(t.schema.field("lang_score").type):  # read back from a run's output: as text
        t = t.set_column(1, "lang_score", pc.cast(t["lang_score"], pa.float64()))
    grouped = t.group_by("lang").aggregate([("lang", "count"), ("lang_score", "sum")])
    return {
        lang: {"docs": n, "score_sum": s or 0.0}
        for lang, n, s in zip(
            grouped["lang"].to_pylist(), grouped["lang_count"].to_pylist(), grouped["lang_score_sum"].to_pylist()
        )
    }


class Languages(Section):
    name = "languages"
    title = "Languages"
    order = 40

    def collect(self, kept, rejected, text_field):
        out = {"kept": {}, "rejected": {}}
        if "stage" in rejected.column_names and "lang" in rejected.column_names:
            for stage in pc.unique(rejected["stage"].drop_null()).to_pylist():
                counts = language_counts(rejected.filter(pc.equal(rejected["stage"], stage)))
                if counts:
                    out["rejected"][stage] = counts
        for table in kept.values():
            out["kept"] = self.merge(out["kept"], language_counts(table))
        return out if out["kept"] or out["rejected"] else None

    def summarize(self, collected, manifest):
        if not collected:
            return None
        by_stage = collected.get("rejected") or {}
        rejected = {}
        for counts in by_stage.values():
            rejected = self.merge(rejected, counts)
        summary = {
            k: _languages(counts) for k, counts in (("kept", collected.get("kept") or {}), ("rejected", rejected))
        }
        order = list(manifest.get("counts", {}).get("by_stage", {}))  # the pipeline's
        summary["rejected_by_stage"] = {
            stage: {lang: c["docs"] for lang, c in _ranked(by_stage[stage])}
            for stage in sorted(by_stage, key=lambda s: (order.index(s) if s in order else len(order), s))
        }
        return summary

    def html(self, summary):
        kept, rejected = summary["kept"]["by_language"], summary["rejected"]["by_language"]
        out = "<h3>Kept records</h3>" + table_html(
            ["language", "records", "share", "mean score"],
            [[lang, k["docs"], f"{100 * k['share']:.1f}%", k["mean_score"]] for lang, k in kept.items()],
        )
        if len(kept) > 1:
            top = list(kept)[:SHOWN]
            out += bar_chart(top, [kept[lang]["docs"] for lang in top], "kept records by language", axis="records")
        by_stage = summary.get("rejected_by_stage", {})
        if not rejected:
            return out
        stages = list(by_stage)
        langs = list(rejected)
        rows = [
            [lang, *[by_stage[s].get(lang, 0) for s in stages], rejected[lang]["docs"], rejected[lang]["mean_score"]]
            for lang in langs[:SHOWN]
        ]
        out += "<h3>Rejected records, by the stage that rejected them</h3>" + table_html(
            ["language", *[f"rejected by {s}" for s in stages], "all rejected", "mean score"], rows
        )
        if len(langs) > SHOWN:
            rest = sum(rejected[lang]["docs"] for lang in langs[SHOWN:])
            out += f'<p class="note">{len(langs) - SHOWN:,} more languages with {rest:,} rejected records</p>'
        for stage in stages:
            top = list(by_stage[stage])[:SHOWN]
            if len(top) > 1:
                out += bar_chart(
                    top,
                    [by_stage[stage][lang] for lang in top],
                    f"records rejected by {stage}, by language",
                    color="#b5544a",
                    axis="records",
                )
        return out


def _ranked(counts: dict) -> list:
    return sorted(counts.items(), key=lambda kv: (-kv[1]["docs"], kv[0]))


def _languages(counts: dict) -> dict:
    total = sum(c["docs"] for c in counts.values())
    return {
        "docs": total,
        "languages": len(counts),
        "by_language": {
            lang: {"docs": c["docs"], "share": c["docs"] / total, "mean_score": c["score_sum"] / c["docs"]}
            for lang, c in _ranked(counts)
        },
    }
