"""Inline SVG charts for the HTML report (no JavaScript, no external files).

Every chart has axes with ticks and the count of each bar, and is sized from its own text: label and number
widths are estimated with DejaVu Sans's advance widths (the widest common sans-serif, and Linux's ``system-ui``),
so no label or number is cut; a chart wider than the page is scaled down by the page's CSS, not clipped.
"""

from __future__ import annotations

import html
import math

LABEL, VALUE, TICK, TITLE = 12, 11, 10, 13  # font sizes (px)
# DejaVu Sans advance widths (em) of the characters narrower or wider than the default
_WIDTHS = {
    **dict.fromkeys("iljI'|.,:;!", 0.32),
    **dict.fromkeys('frt()[]/-" ', 0.42),
    **dict.fromkeys("sz_", 0.55),
    **dict.fromkeys("mw%MW@", 1.0),
    **dict.fromkeys("ABCDEFGHJKLNOPQRSTUVXYZ+<=>#&", 0.8),
}
_DEFAULT = 0.65  # digits (0.636), most lower case letters


def text_width(text: str, size: float, bold: bool = False) -> float:
    """An upper estimate of ``text``'s width in pixels at font ``size``."""
    em = sum(_WIDTHS.get(c, 1.0 if ord(c) > 0x2000 else _DEFAULT) for c in str(text))
    return em * size * (1.1 if bold else 1.0)


def nice_ticks(top: float, most: int = 5) -> list[float]:
    """0 and round steps (1, 2, 2.5 or 5 times a power of ten; whole steps for whole ``top``) up to the first at or
    above ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / most
    power = 10 ** math.floor(math.log10(raw))
    whole = float(top).is_integer()
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw and not (whole and (m * power) % 1))
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def number(v: float) -> str:
    """A tick or edge label: integers with thousands separators below 100,000, then k and M; fractions as %g."""
    v = float(v)
    if abs(v) >= 1e15:  # an open-ended last edge
        return "∞"
    if v.is_integer() and abs(v) < 100_000:
        return f"{int(v):,}"
    if abs(v) >= 1e9:
        return f"{v / 1e9:.3g}G"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e5:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def tick_labels(ticks: list[float]) -> list[str]:
    """Labels of an axis's ticks, in one unit (k or M for all when the largest needs it)."""
    top = max(abs(t) for t in ticks)
    if top < 100_000:
        return [number(t) for t in ticks]
    scale, unit = (1e9, "G") if top >= 1e9 else (1e6, "M") if top >= 1e6 else (1e3, "k")
    return [f"{t / scale:,.4g}{unit}" if t else "0" for t in ticks]


def value_text(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.3f}"


def _svg(width: float, height: float, title: str, body: str) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{html.escape(title)}">'
        f'<text x="4" y="15" font-size="{TITLE}" font-weight="bold">{html.escape(title)}</text>{body}</svg>'
    )


def bar_chart(
    labels: list[str], values: list[float], title: str = "", width: float = 640, color: str = "#4a7ab5", axis: str = ""
) -> str:
    """Horizontal bars, one per label, each with its value; a value axis below (``axis``: its title)."""
    if not values:
        return ""
    labels = [str(label) for label in labels]
    texts = [value_text(v) for v in values]
    bar_h, gap, top_pad = 18, 4, 26
    ticks = nice_ticks(max(values))
    tick_texts = tick_labels(ticks)
    label_w = max(text_width(label, LABEL) for label in labels) + 10
    value_w = max(max(text_width(t, VALUE) for t in texts) + 8, text_width(tick_texts[-1], TICK) / 2 + 4)
    width = max(
        width, label_w + 240 + value_w, text_width(title, TITLE, bold=True) + 12, label_w + text_width(axis, TICK) + 40
    )
    x0, x1 = label_w, width - value_w
    scale = (x1 - x0) / ticks[-1]
    axis_y = top_pad + len(values) * (bar_h + gap) + 2
    height = axis_y + 16 + (16 if axis else 0)
    rows = []
    for i, (label, v, text) in enumerate(zip(labels, values, texts)):
        y = top_pad + i * (bar_h + gap)
        w = max(v, 0) * scale
        rows.append(
            f'<text x="{x0 - 6:.1f}" y="{y + 13}" text-anchor="end" font-size="{LABEL}">{html.escape(label)}</text>'
            f'<rect x="{x0:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}">'
            f"<title>{html.escape(label)}: {text}</title></rect>"
            f'<text x="{x0 + w + 4:.1f}" y="{y + 13}" font-size="{VALUE}">{text}</text>'
        )
    grid = "".join(
        f'<line x1="{x0 + t * scale:.1f}" y1="{top_pad - 2}" x2="{x0 + t * scale:.1f}" y2="{axis_y}" stroke="#eee"/>'
        f'<text x="{x0 + t * scale:.1f}" y="{axis_y + 12}" font-size="{TICK}" text-anchor="middle">{s}</text>'
        for t, s in zip(ticks, tick_texts)
    )
    axis_line = f'<line x1="{x0}" y1="{axis_y}" x2="{x1:.1f}" y2="{axis_y}" stroke="#999"/>'
    axis_title = (
        (
            f'<text x="{(x0 + x1) / 2:.1f}" y="{axis_y + 28}" font-size="{TICK}" text-anchor="middle" '
            f'fill="#555">{html.escape(axis)}</text>'
        )
        if axis
        else ""
    )
    return _svg(width, height, title, grid + "".join(rows) + axis_line + axis_title)


def histogram(
    edges: list[float],
    counts: list[int],
    title: str = "",
    width: float = 640,
    height: int = 230,
    color: str = "#5a9e6f",
    x_label: str = "",
    y_label: str = "records",
) -> str:
    """Vertical bars over bins (``edges`` has one more entry than ``counts``), each with its count; a count axis
    (``y_label``) and the bin edges (``x_label``)."""
    if not counts or not any(counts):
        return ""
    n = len(counts)
    ticks = nice_ticks(max(counts), 4)
    tick_texts = tick_labels(ticks)
    edge_texts = [number(e) for e in edges]
    count_texts = [f"{c:,}" if c else "" for c in counts]
    pad_l = max(text_width(t, TICK) for t in tick_texts) + 8 + (16 if y_label else 0)
    pad_r = text_width(edge_texts[-1], TICK) / 2 + 6
    pad_t, pad_b = 30, 25 + (16 if x_label else 0)
    bw = max((width - pad_l - pad_r) / n, max(text_width(t, TICK - 1) for t in count_texts) + 4)
    width = max(pad_l + pad_r + n * bw, text_width(title, TITLE, bold=True) + 12)
    step = max(1, math.ceil((max(text_width(t, TICK) for t in edge_texts) + 6) / bw))
    base, plot_h = height - pad_b, height - pad_b - pad_t
    scale = plot_h / ticks[-1]
    parts = []
    for t, s in zip(ticks, tick_texts):
        y = base - t * scale
        parts.append(
            f'<line x1="{pad_l:.1f}" y1="{y:.1f}" x2="{width - pad_r:.1f}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{pad_l - 4:.1f}" y="{y + 3.5:.1f}" font-size="{TICK}" text-anchor="end">{s}</text>'
        )
    for i, (c, text) in enumerate(zip(counts, count_texts)):
        h, x = c * scale, pad_l + i * bw
        parts.append(
            f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" fill="{color}">'
            f"<title>[{edge_texts[i]}, {edge_texts[i + 1]}): {c:,}</title></rect>"
        )
        if text:
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{base - h - 3:.1f}" font-size="{TICK - 1}" '
                f'text-anchor="middle">{text}</text>'
            )
    for i in range(0, n + 1, step):
        parts.append(
            f'<text x="{pad_l + i * bw:.1f}" y="{base + 16}" font-size="{TICK}" '
            f'text-anchor="middle">{edge_texts[i]}</text>'
        )
    parts.append(
        f'<line x1="{pad_l:.1f}" y1="{base}" x2="{width - pad_r:.1f}" y2="{base}" stroke="#999"/>'
        f'<line x1="{pad_l:.1f}" y1="{pad_t - 4}" x2="{pad_l:.1f}" y2="{base}" stroke="#999"/>'
    )
    if x_label:
        parts.append(
            f'<text x="{pad_l + n * bw / 2:.1f}" y="{height - 4}" font-size="{TICK}" text-anchor="middle" '
            f'fill="#555">{html.escape(x_label)}</text>'
        )
    if y_label:
        parts.append(
            f'<text transform="translate(12 {pad_t + plot_h / 2:.1f}) rotate(-90)" font-size="{TICK}" '
            f'text-anchor="middle" fill="#555">{html.escape(y_label)}</text>'
        )
    return _svg(width, height, title, "".join(parts))
