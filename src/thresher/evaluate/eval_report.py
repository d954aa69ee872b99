"""``report.html`` of ``thresher eval``: metrics with intervals, the metrics per slice (with ``slices``), the generations
cut at ``max_new_tokens``, prediction lengths, the worst examples with their extracted answers and the first
improvement candidates. Self-contained: inline CSS and SVG, no scripts or
external resources.

Prompts are shown without their template: the lines that recur across the run's prompts (an Alpaca preamble and
``### Response:``, a chat template's markup) are left out, and of what is left, the end (the question)."""

from __future__ import annotations

import html
from collections import Counter

import numpy as np
import pyarrow as pa

from thresher.core.charts import histogram
from thresher.core.published import input_name
from thresher.evaluate.scoring import LOWER_IS_BETTER

WORST = 10
CANDIDATES_FILE = "candidates.parquet"
CUT_SHOWN = 5
PROMPT_END = 500  # characters of the instruction shown (its end)
PREDICTION_END = 800
CSS = (
    "*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;"
    "padding:0 1.5em;color:#222}table{border-collapse:collapse;margin:1em 0;max-width:100%}"
    "td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left;overflow-wrap:break-word}"
    "th{background:#f4f4f4}td.n{text-align:right;white-space:nowrap}.note{color:#555}.cut{color:#b5544a}"
    "pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;max-height:14em;overflow:auto;font-size:.9em}"
    "svg.chart{display:block;max-width:100%;height:auto}"
)


def _num(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def _interval(ci95: list[float] | None) -> str:
    return "-" if ci95 is None else f"{_num(ci95[0])} .. {_num(ci95[1])}"


def _metrics_table(metrics: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class=n>{_num(m['value'])}</td><td class=n>{m['count']}</td>"
        f"<td class=n>{_interval(m['ci95'])}</td></tr>"
        for name, m in metrics.items()
    )
    return (
        "<table><tr><th>metric</th><th>value</th><th>examples scored</th><th>95% interval (bootstrap)</th></tr>"
        f"{rows}</table>"
    )


def _slice_cell(m: dict) -> str:
    if m["value"] is None:
        return "-"
    gap = "" if m["gap"] is None else f" ({'+' if m['gap'] >= 0 else ''}{_num(m['gap'])})"
    interval = f"small: {m['count']} scored, no interval" if m["small"] else _interval(m["ci95"])
    return f"{_num(m['value'])}{gap}<br><span class=note>{interval}</span>"


def _slices_section(result: dict) -> str:
    """One table per slice spec: each slice's examples and, per metric, its value, gap to the whole set and 95%
    interval (Wilson for proportions, bootstrap otherwise); small slices marked."""
    slices = result.get("slices") or {}
    if not slices:
        return ""
    metrics = list(result["metrics"])
    overall = "".join(f"<td class=n>{_num(result['metrics'][m]['value'])}</td>" for m in metrics)
    least = (result.get("slice_options") or {}).get("min_items")
    out = (
        "<h2>Slices</h2><p class=note>Each metric on each slice: value (gap to all examples), and its 95% interval: "
        "Wilson score interval for exact_match and accuracy, percentile bootstrap for the others. A slice metric "
        f"scored on fewer than {least} examples is marked small, without an interval.</p>"
    )
    for spec, groups in slices.items():
        head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
        body = "".join(
            f"<tr id='slice-{html.escape(spec)}-{html.escape(key)}'><td>{html.escape(key)}"
            + (" <span class=cut>(small)</span>" if g["small"] else "")
            + f"</td><td class=n>{g['rows']}</td>"
            + "".join(f"<td class=n>{_slice_cell(g['metrics'][m])}</td>" for m in metrics)
            + "</tr>"
            for key, g in groups.items()
        )
        out += (
            f"<h3>By {html.escape(spec)}</h3><table><tr><th>{html.escape(spec)}</th><th>examples</th>{head}</tr>"
            f"<tr><td><i>all</i></td><td class=n>{result['rows']}</td>{overall}</tr>{body}</table>"
        )
    return out


def _candidates_section(result: dict, chosen: pa.Table | None, template: set[str]) -> str:
    if chosen is None or not result.get("candidates"):
        return ""
    c = result["candidates"]
    reasons = ", ".join(f"{n} {html.escape(r)}" for r, n in c["by_reason"].items()) or "none"
    items = "".join(
        f"<tr><td class=n>{r['rank']}</td><td>{html.escape(r['id'])}</td><td>{html.escape(r['reason'])}</td>"
        f"<td class=n>{_num(r['score'])}</td>{_pre(instruction(r['prompt'], template))}"
        f"{_pre(_end(r['prediction'], PREDICTION_END))}{_pre(r['reference'])}</tr>"
        for r in chosen.slice(0, WORST).to_pylist()
    )
    return (
        f"<h2>Improvement candidates</h2><p>{c['rows']} examples in <code>{CANDIDATES_FILE}</code> ({reasons}), "
        "ranked by score (the generation's mean negative log-probability per token: higher, less sure). The first "
        f"{min(WORST, chosen.num_rows)}:</p><table><tr><th>rank</th><th>id</th><th>reason</th><th>score</th>"
        f"<th>instruction (end)</th><th>prediction</th><th>reference</th></tr>{items}</table>"
    )


def _coverage_section(result: dict) -> str:
    c = result.get("coverage")
    if not c:
        return ""
    items = "".join(
        f"<tr{' class=gap' if k['gap'] else ''}><td class=n>{k['cluster']}</td><td class=n>{k['test']}</td>"
        f"<td class=n>{k['train']}</td><td class=n>{k['test_share']:.1%}</td><td class=n>{k['train_share']:.1%}</td>"
        f"<td class=n>{k['ratio']:.2f}</td><td>{'gap' if k['gap'] else ''}</td>"
        f"<td>{'<br>'.join(html.escape(e) for e in k['examples'])}</td></tr>"
        for k in sorted(c["clusters"], key=lambda k: k["ratio"])
    )
    return (
        f"<h2>Coverage of the test prompts by the training data</h2><p>{c['test_rows']} test prompts in "
        f"{len(c['clusters'])} clusters; {c['train_rows']} training prompts, each counted in its nearest cluster. "
        f"{c['gaps']} cluster(s) hold under {c['options']['max_ratio']:g} times their test share of the training "
        "data: their examples are candidates (coverage_gap).</p><table><tr><th>cluster</th><th>test</th>"
        "<th>train</th><th>test share</th><th>train share</th><th>ratio</th><th></th><th>test prompts (first)</th>"
        f"</tr>{items}</table>"
    )


def worst_examples(rows: pa.Table, metric: str, n: int = WORST) -> list[dict]:
    """The ``n`` examples with the worst ``metric`` score (highest for perplexity), ties in data order."""
    scored = [r for r in rows.to_pylist() if r.get(metric) is not None]
    sign = -1 if metric in LOWER_IS_BETTER else 1
    return sorted(scored, key=lambda r: sign * r[metric])[:n]


def template_lines(prompts: list[str]) -> set[str]:
    """The lines that recur across prompts (at least two, and a fifth of them): the template around each
    instruction (a preamble, section headers, chat markup)."""
    counts = Counter(line for p in prompts for line in set(p.splitlines()) if line.strip())
    least = max(2, len(prompts) / 5)
    return {line for line, n in counts.items() if n >= least}


def instruction(prompt: str, template: set[str], limit: int = PROMPT_END) -> str:
    """The prompt without its template lines, its last ``limit`` characters ("..." before when cut)."""
    text = "\n".join(line for line in prompt.splitlines() if line not in template).strip() or prompt
    return _end(text, limit)


def _end(text: str, limit: int) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def _pre(text: str) -> str:
    return f"<td><pre>{html.escape(text)}</pre></td>"


def _answers(r: dict) -> str:
    if "answer_prediction" not in r:
        return ""
    got, want = r["answer_prediction"], r["answer_reference"]
    mark = "=" if got == want and got is not None else "&ne;"
    return (
        f"<td><b>{html.escape(got or '(none)')}</b> {mark} <b>{html.escape(str(want) if want is not None else '(none)')}"
        "</b></td>"
    )


def _worst_table(rows: pa.Table, metric: str, template: set[str]) -> str:
    answers = "answer_prediction" in rows.column_names
    items = "".join(
        f"<tr><td>{html.escape(r['id'])}</td><td class=n>{_num(r[metric])}</td>"
        f"{_pre(instruction(r['prompt'], template))}{_pre(_end(r['prediction'], PREDICTION_END))}"
        + (_answers(r) if answers else "")
        + f"{_pre(r['reference'])}</tr>"
        for r in worst_examples(rows, metric)
    )
    head = "<th>answer: predicted vs reference</th>" if answers else ""
    return (
        f"<h2>Worst examples by {html.escape(metric)}</h2><table><tr><th>id</th><th>{html.escape(metric)}</th>"
        f"<th>instruction (end)</th><th>prediction</th>{head}<th>reference</th></tr>{items}</table>"
    )


def _cut_section(rows: pa.Table, limit: int, template: set[str]) -> str:
    """How many generations stopped at ``max_new_tokens``, and the first ``CUT_SHOWN`` of them."""
    if "stopped_at_limit" not in rows.column_names:
        return ""
    cut = [r for r in rows.to_pylist() if r["stopped_at_limit"]]
    out = (
        f"<h2>Generations cut at max_new_tokens</h2><p id='cut-count'><b class='cut'>{len(cut)}</b> of "
        f"{rows.num_rows} generations stopped at max_new_tokens ({limit}) before ending"
    )
    if not cut:
        return out + ".</p>"
    out += (
        "; their answers may be missing or cut off (raise <code>generation.max_new_tokens</code> to let them "
        f"finish). The first {min(len(cut), CUT_SHOWN)}:</p>"
    )
    answers = "answer_prediction" in rows.column_names
    items = "".join(
        f"<tr><td>{html.escape(r['id'])}</td>{_pre(instruction(r['prompt'], template))}"
        f"{_pre(_end(r['prediction'], PREDICTION_END))}" + (_answers(r) if answers else "") + "</tr>"
        for r in cut[:CUT_SHOWN]
    )
    head = "<th>answer: predicted vs reference</th>" if answers else ""
    return out + (
        f"<table><tr><th>id</th><th>instruction (end)</th><th>prediction (end)</th>{head}</tr>{items}</table>"
    )


def _length_histogram(lengths: list[int], limit: int | None, bins: int = 20) -> str:
    edges = np.histogram_bin_edges(lengths, bins=min(bins, max(1, len(set(lengths)))))
    edges = np.unique(np.round(edges))
    counts, _ = np.histogram(lengths, bins=edges if len(edges) > 1 else [edges[0], edges[0] + 1])
    bounds = edges if len(edges) > 1 else [edges[0], edges[0] + 1]
    limit_note = f", limit {limit}" if limit else ""
    return (
        f"<h2>Prediction lengths</h2><p>mean {np.mean(lengths):.1f} tokens, median {np.median(lengths):.0f}, "
        f"max {max(lengths)}{limit_note}</p>"
        + histogram(
            [float(e) for e in bounds],
            [int(c) for c in counts],
            "predictions by length",
            color="#4a7ab5",
            x_label="tokens generated",
            y_label="predictions",
        )
    )


def render_report(result: dict, rows: pa.Table, chosen: pa.Table | None = None) -> str:
    metrics = result["metrics"]
    model = input_name(result["model"]["name_or_path"])  # a local path as published: its last part
    limit = (result.get("generation") or {}).get("max_new_tokens")
    template = template_lines(rows.column("prompt").to_pylist())
    worst = "".join(_worst_table(rows, m, template) for m in metrics if m in rows.column_names)
    rejected = result.get("rejected") or {}
    reasons = ", ".join(f"{n} {html.escape(reason)}" for reason, n in (rejected.get("by_reason") or {}).items())
    not_evaluated = (
        f", <b class='cut'>{rejected['records']}</b> records not evaluated ({reasons}; <code>rejects.parquet</code>)"
        if rejected.get("records")
        else ""
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>thresher eval: {html.escape(model)}</title>"
        f"<style>{CSS}</style></head><body><h1>thresher eval</h1><p>model <code>{html.escape(model)}</code>, "
        f"data <code>{html.escape(input_name(result['data']['path']))}</code>, {result['rows']} examples{not_evaluated}, "
        f"{result['seconds']:.1f} s</p><h2>Metrics</h2>{_metrics_table(metrics)}{_slices_section(result)}"
        f"{_cut_section(rows, limit, template)}"
        f"{_length_histogram(rows.column('prediction_tokens').to_pylist(), limit)}{worst}"
        f"{_candidates_section(result, chosen, template)}{_coverage_section(result)}</body></html>"
    )
