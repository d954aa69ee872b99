"""The quality report: sections collect statistics per write task, the driver merges and renders them.

A section is a ``Section`` subclass in a module of this package (auto-discovered): ``collect`` runs on
each written slice (kept tables by destination, and the rejects table), ``merge`` adds partial results
(default: add numbers, recursively), ``summarize`` turns the merged result and the manifest into the
JSON of ``report.json``, and ``html`` renders that JSON as a fragment of ``report.html`` (inline SVG
charts from :mod:`thresher.core.charts`; ``page``, when the fragment shows figures of another section's entry, so
that each is shown once). Because sections read only what is written, ``thresher
report RUN_URI`` recomputes a finished run's report from its Parquet files; what a stage summarized on the workers
(``from_workers``: quality's rule statistics) is not in them and is taken from the report being replaced.

A section that details stages never names one: the stages declare it (``Stage.report_sections``), and the section
reads their names (:meth:`Section.stage_names`, :meth:`Section.run_stages`) and options (:meth:`Section.options`).
"""

from __future__ import annotations

import html
import importlib
import pkgutil
import re
from typing import Any, ClassVar

import pyarrow as pa

from thresher.core.published import run_name
from thresher.curate.report.arrays import shared
from thresher.curate.stage import REGISTRY, REPORT_PREFIX, load_stages, stage_class

SECTIONS: dict[str, type[Section]] = {}
HELPERS = ("arrays", "charts", "kernels")  # modules of this package without sections (kernels loads numba)


class Section:
    name: ClassVar[str]
    title: ClassVar[str]
    order: ClassVar[int] = 100
    hidden_columns: ClassVar[bool] = False  # collect sees the kept tables' _report. columns
    from_workers: ClassVar[tuple[str, ...]] = ()  # keys of the entry that only workers' summaries give
    lists_reasons: ClassVar[bool] = False  # details every rejection reason of its stages (the funnel links to it)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            SECTIONS[cls.name] = cls

    def collect(self, kept: dict[str, pa.Table], rejected: pa.Table, text_field: str) -> Any:
        """Partial statistics of one written slice; None when the section has nothing to say."""
        return None

    def merge(self, a: Any, b: Any) -> Any:
        return add(a, b)

    def summarize(self, collected: Any, manifest: dict) -> dict | None:
        """The section's entry in report.json (None to leave it out)."""
        return collected

    def html(self, summary: dict) -> str:
        return f"<pre>{html.escape(str(summary))}</pre>"

    def page(self, summary: dict, report: dict[str, Any]) -> str:
        """The section's fragment of the page; a section that shows another's figures (once) reads ``report``."""
        return self.html(summary)

    def stage_names(self) -> list[str]:
        """The registered stages that declare this section (``Stage.report_sections``)."""
        load_stages()
        return [name for name, cls in REGISTRY.items() if self.name in cls.report_sections]

    def run_stages(self, manifest: dict) -> list[str]:
        """The names in the run (the manifest's ``counts.by_stage``, in order) of the stages that declare this
        section."""
        load_stages()
        return [s for s in manifest.get("counts", {}).get("by_stage", {}) if self.name in declared_sections(s)]

    def stage_metrics(self, manifest: dict) -> dict | None:
        """The manifest's metrics of the run's first stage that declares this section."""
        return next((manifest.get("metrics", {}).get(s) for s in self.run_stages(manifest)), None)

    def options(self, manifest: dict) -> dict | None:
        """The options (in the manifest's config) of the run's first stage that declares this section."""
        names = self.stage_names()
        stages = manifest.get("config", {}).get("stages", [])
        return next((s[name] for s in stages for name in names if name in s), None)


def declared_sections(run_name: str) -> tuple[str, ...]:
    """The report sections the stage named ``run_name`` in a run declares."""
    cls = stage_class(run_name)
    return cls.report_sections if cls else ()


def add(a: Any, b: Any) -> Any:
    """Recursive sum: numbers add, dicts merge key-wise, lists concatenate (histograms are dicts of bins)."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = add(out.get(k), v)
        return out
    if isinstance(a, list):
        return a + b
    return a + b


def sections() -> list[Section]:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in HELPERS:
            importlib.import_module(f"{__name__}.{mod.name}")
    return [cls() for cls in sorted(SECTIONS.values(), key=lambda c: (c.order, c.name))]


def collect_stats(kept: dict[str, pa.Table], rejected: pa.Table, text_field: str) -> dict[str, Any]:
    """Every section's statistics of one written slice; only sections with ``hidden_columns`` see the kept
    tables' ``_report.`` columns (never written, so ``thresher report`` cannot see them). Per-string figures of
    the slice's string columns are computed once for all sections (:func:`thresher.curate.report.arrays.shared`)."""
    written = {d: t.drop_columns([c for c in t.column_names if c.startswith(REPORT_PREFIX)]) for d, t in kept.items()}
    out = {}
    with shared([*kept.values(), rejected]):
        for s in sections():
            value = s.collect(kept if s.hidden_columns else written, rejected, text_field)
            if value is not None:
                out[s.name] = value
    return out


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    by_name = {s.name: s for s in sections()}
    for part in parts:
        for name, value in part.items():
            merged[name] = by_name[name].merge(merged.get(name), value) if name in merged else value
    return merged


def build_report(collected: dict[str, Any], manifest: dict) -> dict[str, Any]:
    """report.json: one entry per section that has something to say."""
    report: dict[str, Any] = {}
    for s in sections():
        summary = s.summarize(collected.get(s.name), manifest)
        if summary is not None:
            report[s.name] = summary
    return report


def with_worker_summaries(report: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """``report`` (recomputed from the Parquet files) with the ``from_workers`` keys of ``previous`` (the run's
    report at commit) that it lacks."""
    for s in sections():
        old, new = previous.get(s.name) or {}, report.get(s.name)
        carried = {k: old[k] for k in s.from_workers if k in old and new is not None and k not in new}
        if carried:
            report[s.name] = {**new, **carried}
    return report


def render_html(report: dict[str, Any], manifest: dict) -> str:
    """A self-contained HTML page (inline CSS and SVG; opens offline)."""
    parts = []
    for s in sections():
        if s.name in report:
            parts.append(
                f'<section id="{s.name}"><h2>{html.escape(s.title)}</h2>{s.page(report[s.name], report)}</section>'
            )
    counts = manifest.get("counts", {})
    title = f"thresher report: {html.escape(run_name(str(manifest.get('output', ''))))}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
*{{box-sizing:border-box}}
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1.5em;color:#222}}
h1{{font-size:1.5em;overflow-wrap:anywhere}} h2{{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}}
table{{border-collapse:collapse;margin:.5em 0;max-width:100%}}
td,th{{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top;overflow-wrap:break-word}}
th{{background:#f4f4f4}} td.n,th.n{{text-align:right}} td.n{{white-space:nowrap}}
.kpi{{display:inline-block;margin-right:2em}} .kpi b{{font-size:1.6em;display:block}} .note{{color:#555}}
svg.chart{{display:block;max-width:100%;height:auto;margin:.6em 0}} pre{{white-space:pre-wrap;background:#f8f8f8;padding:.5em}}
</style></head><body>
<h1>{title}</h1>
<div><span class="kpi"><b>{counts.get("input", 0):,}</b>input</span>
<span class="kpi"><b>{counts.get("output", 0):,}</b>kept</span>
<span class="kpi"><b>{counts.get("rejected", 0):,}</b>rejected</span>
<span class="kpi"><b>{manifest.get("seconds", 0):.1f}s</b>wall time</span></div>
{"".join(parts)}
</body></html>
"""


NUMERIC = re.compile(r"[-+]?[\d,]+(?:\.\d+)?(?:%| s)?(?: \([\d.]+%\))?|-|n/a")  # a cell shown right-aligned


class Markup(str):
    """A table cell that is HTML already (a link): not escaped."""


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def table_html(header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table; numbers are formatted with thousands separators, and columns of numbers right-aligned (text
    left-aligned, wrapping where it must)."""
    texts = [[_cell(v) for v in r] for r in rows]
    numeric = [
        i > 0
        and any(len(r) > i and r[i] for r in texts)
        and all(NUMERIC.fullmatch(r[i]) for r in texts if len(r) > i and r[i])
        for i in range(len(header))
    ]
    head = "".join(f"<th{' class=n' if numeric[i] else ''}>{html.escape(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=n' if i < len(numeric) and numeric[i] else ''}>{t if isinstance(v, Markup) else html.escape(t)}"
            "</td>"
            for i, (v, t) in enumerate(zip(r, tr))
        )
        + "</tr>"
        for r, tr in zip(rows, texts)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def folded_table(header: list[str], rows: list[list[Any]], note: str) -> str:
    """``table_html`` of the rows with something other than zeros after their first cell, and a line saying how
    many were left out for being all zeros (``note``, e.g. ``"{n} more languages with 0"``)."""
    shown = [r for r in rows if any(v not in (0, 0.0, "0", "-", "", None) for v in r[1:])]
    out = table_html(header, shown) if shown else ""
    if len(shown) < len(rows):
        out += f'<p class="note">{html.escape(note.format(n=f"{len(rows) - len(shown):,}"))}</p>'
    return out
