"""``tune.html`` (self-contained: inline CSS and SVG, no scripts) and the Markdown table of ``thresher tune``: one
row per trial, and every trial's metric curve over the training steps."""

from __future__ import annotations

import html

from thresher.evaluate.compare_report import html_page, markdown_table, num

WIDTH, HEIGHT, PAD = 640, 320, 48
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the trials table, as text (the best trial marked)."""
    keys = list(result["trials"][0]["params"])
    metric = result["metric"]
    header = ["trial", "state"] + keys + [f"{metric} (model)", f"best {metric} (step)", "steps", "wall s", "tokens/s"]
    rows = []
    for t in result["trials"]:
        best = t["best"]
        rows.append(
            [
                t["id"] + (" (best)" if t["id"] == result["best"]["id"] else ""),
                t["state"] + (f": {t['error']}" if t["error"] else ""),
            ]
            + [num(t["params"][k]) if isinstance(t["params"][k], float) else str(t["params"][k]) for k in keys]
            + [
                num(t["value"]),
                f"{num(best['value'])} ({best['step']})" if best else "-",
                str(t["steps"]),
                num(t["seconds"], 3),
                num(t["tokens_per_s"], 3),
            ]
        )
    return header, rows


def _caption(result: dict) -> str:
    scheduler = result["scheduler"]
    return (
        f"Base model {result['model']['name_or_path']}; {result['search']} search, "
        + (f"ASHA {scheduler['asha']}" if scheduler else "no early stopping")
        + f"; {len(result['trials'])} trials, {result['max_concurrent_trials']} at a time; best {result['metric']} "
        f"{num(result['best']['value'])} (trial {result['best']['id']}, {result['best']['config']}); "
        f"{result['seconds']:.0f} s{' (this resumed run)' if result['resumed'] else ''}; {result['cpus']} CPUs"
    )


def curves_svg(result: dict) -> str:
    """Every trial's metric over the steps, one polyline each, axes scaled to all points."""
    points = [p for t in result["trials"] for p in t["curve"]]
    if not points:
        return "<p>no evaluation was reported</p>"
    x0, x1 = min(p["step"] for p in points), max(p["step"] for p in points)
    y0, y1 = min(p["value"] for p in points), max(p["value"] for p in points)

    def xy(p: dict) -> str:
        x = PAD + (p["step"] - x0) / ((x1 - x0) or 1) * (WIDTH - 2 * PAD)
        y = HEIGHT - PAD - (p["value"] - y0) / ((y1 - y0) or 1) * (HEIGHT - 2 * PAD)
        return f"{x:.1f},{y:.1f}"

    lines = []
    for i, t in enumerate(result["trials"]):
        colour = COLOURS[i % len(COLOURS)]
        if t["curve"]:
            lines.append(
                f"<polyline fill='none' stroke='{colour}' stroke-width='2' "
                f"points='{' '.join(xy(p) for p in t['curve'])}'><title>{html.escape(t['id'])}</title>"
                "</polyline>"
            )
            last = t["curve"][-1]
            lines.append(
                f"<text x='{xy(last).split(',')[0]}' y='{xy(last).split(',')[1]}' font-size='10' "
                f"fill='{colour}'>{html.escape(t['id'][-5:])}</text>"
            )
    axes = (
        f"<line x1='{PAD}' y1='{HEIGHT - PAD}' x2='{WIDTH - PAD}' y2='{HEIGHT - PAD}' stroke='#000'/>"
        f"<line x1='{PAD}' y1='{PAD}' x2='{PAD}' y2='{HEIGHT - PAD}' stroke='#000'/>"
        f"<text x='{PAD}' y='{HEIGHT - PAD + 16}' font-size='11'>{x0}</text>"
        f"<text x='{WIDTH - PAD}' y='{HEIGHT - PAD + 16}' font-size='11' text-anchor='end'>{x1} steps</text>"
        f"<text x='{PAD - 4}' y='{HEIGHT - PAD}' font-size='11' text-anchor='end'>{num(y0)}</text>"
        f"<text x='{PAD - 4}' y='{PAD + 4}' font-size='11' text-anchor='end'>{num(y1)}</text>"
        f"<text x='{PAD}' y='{PAD - 12}' font-size='12'>{html.escape(result['metric'])}</text>"
    )
    return f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}'>{axes}{''.join(lines)}</svg>"


def render_markdown(result: dict) -> str:
    return markdown_table(*table(result), _caption(result))


def render_html(result: dict) -> str:
    return html_page(
        "thresher tune",
        *table(result),
        _caption(result),
        f"<h2>{html.escape(result['metric'])} by step</h2>{curves_svg(result)}",
    )
