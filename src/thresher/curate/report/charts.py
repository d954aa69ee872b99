"""Inline SVG charts for the HTML report (no JavaScript, no external files)."""

from __future__ import annotations

import html


def bar_chart(labels: list[str], values: list[float], title: str = "", width: int = 640, color: str = "#4a7ab5") -> str:
    """Horizontal bars, one per label."""
    if not values:
        return ""
    bar_h, gap, label_w, pad = 18, 4, 180, 60
    height = len(values) * (bar_h + gap) + 30
    top = max(values) or 1
    rows = []
    for i, (label, v) in enumerate(zip(labels, values)):
        y = 24 + i * (bar_h + gap)
        w = (width - label_w - pad) * v / top
        text = f"{v:,.0f}" if float(v).is_integer() else f"{v:,.3f}"
        rows.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" font-size="12">{html.escape(str(label))[:40]}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"><title>{html.escape(str(label))}: {text}</title></rect>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="11">{text}</text>'
        )
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">'
        f'<text x="4" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>{"".join(rows)}</svg>'
    )


def histogram(edges: list[float], counts: list[int], title: str = "", width: int = 640, height: int = 220,
              color: str = "#5a9e6f", log_x_labels: bool = False) -> str:
    """Vertical bars over bins; ``edges`` has one more entry than ``counts``."""
    if not counts or not any(counts):
        return ""
    pad_l, pad_b, pad_t = 50, 40, 22
    n = len(counts)
    bw = (width - pad_l - 10) / n
    top = max(counts)
    bars = []
    for i, c in enumerate(counts):
        h = (height - pad_b - pad_t) * c / top
        x = pad_l + i * bw
        bars.append(
            f'<rect x="{x:.1f}" y="{height - pad_b - h:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" fill="{color}">'
            f'<title>[{_fmt(edges[i])}, {_fmt(edges[i + 1])}): {c:,}</title></rect>'
        )
    step = max(1, n // 8)
    ticks = "".join(
        f'<text x="{pad_l + i * bw:.1f}" y="{height - pad_b + 14}" font-size="10" text-anchor="middle">{_fmt(edges[i])}</text>'
        for i in range(0, n + 1, step)
    )
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">'
        f'<text x="4" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>'
        f'<text x="4" y="{height / 2:.0f}" font-size="10">{top:,}</text>'
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - 10}" y2="{height - pad_b}" stroke="#999"/>'
        f'{"".join(bars)}{ticks}</svg>'
    )


def _fmt(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"
