"""``report.html`` of ``thresher eval``: metrics with intervals, the worst examples, prediction lengths.
Self-contained: inline CSS and SVG, no scripts or external resources."""

from __future__ import annotations

import html

import numpy as np
import pyarrow as pa

from thresher.evaluate.scoring import LOWER_IS_BETTER

WORST = 10
CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
       "td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left}"
       "pre{white-space:pre-wrap;margin:0;max-height:12em;overflow:auto}")


def _num(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def _interval(ci95: list[float] | None) -> str:
    return "-" if ci95 is None else f"{_num(ci95[0])} .. {_num(ci95[1])}"


def _metrics_table(metrics: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{_num(m['value'])}</td><td>{m['count']}</td>"
                   f"<td>{_interval(m['ci95'])}</td></tr>" for name, m in metrics.items())
    return f"<table><tr><th>metric</th><th>value</th><th>count</th><th>95% interval (bootstrap)</th></tr>{rows}</table>"


def worst_examples(rows: pa.Table, metric: str, n: int = WORST) -> list[dict]:
    """The ``n`` examples with the worst ``metric`` score (highest for perplexity), ties in data order."""
    scored = [r for r in rows.to_pylist() if r.get(metric) is not None]
    sign = -1 if metric in LOWER_IS_BETTER else 1
    return sorted(scored, key=lambda r: sign * r[metric])[:n]


def _pre(text: str) -> str:
    return f"<td><pre>{html.escape(text)}</pre></td>"


def _worst_table(rows: pa.Table, metric: str) -> str:
    items = "".join(f"<tr><td>{html.escape(r['id'])}</td><td>{_num(r[metric])}</td>{_pre(r['prompt'][-600:])}"
                    f"{_pre(r['prediction'])}{_pre(r['reference'])}</tr>" for r in worst_examples(rows, metric))
    return (f"<h2>Worst examples by {html.escape(metric)}</h2><table><tr><th>id</th><th>{html.escape(metric)}</th>"
            f"<th>prompt (end)</th><th>prediction</th><th>reference</th></tr>{items}</table>")


def _length_histogram(lengths: list[int], bins: int = 20) -> str:
    counts, edges = np.histogram(lengths, bins=min(bins, max(1, len(set(lengths)))))
    top, width, height = max(counts.max(), 1), 600, 120
    bar = width / len(counts)
    bars = "".join(f'<rect x="{i * bar:.1f}" y="{height - c / top * height:.1f}" width="{bar - 1:.1f}" '
                   f'height="{c / top * height:.1f}" fill="#4a7ab5"><title>{edges[i]:.0f}-{edges[i + 1]:.0f} tokens: '
                   f'{c}</title></rect>' for i, c in enumerate(counts))
    return (f"<h2>Prediction length (tokens)</h2><p>mean {np.mean(lengths):.1f}, median {np.median(lengths):.0f}, "
            f"max {max(lengths)}</p><svg width='{width}' height='{height}'>{bars}</svg>"
            f"<p>{edges[0]:.0f} .. {edges[-1]:.0f} tokens</p>")


def render_report(result: dict, rows: pa.Table) -> str:
    metrics = result["metrics"]
    model = result["model"]["name_or_path"]
    worst = "".join(_worst_table(rows, m) for m in metrics if m in rows.column_names)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>thresher eval: {html.escape(model)}</title>"
            f"<style>{CSS}</style></head><body><h1>thresher eval</h1><p>model <code>{html.escape(model)}</code>, "
            f"data <code>{html.escape(result['data']['path'])}</code>, {result['rows']} examples, "
            f"{result['seconds']:.1f} s</p><h2>Metrics</h2>{_metrics_table(metrics)}"
            f"{_length_histogram(rows.column('prediction_tokens').to_pylist())}{worst}</body></html>")
