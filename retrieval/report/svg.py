"""Two small charts as inline SVG strings, so the page needs no plotting library or network."""
from __future__ import annotations

from html import escape

import numpy as np

PALETTE = ("#2563eb", "#d97706", "#7c3aed", "#059669", "#db2777", "#4b5563")
WIDTH, HEIGHT = 420, 280
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 16, 44


def _frame(x_label: str, y_label: str, x_ticks: list[tuple[float, str]],
           y_ticks: list[tuple[float, str]]) -> list[str]:
    """Axes, grid and labels; ticks are (fraction of the axis, text)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = []
    for frac, text in y_ticks:
        y = TOP + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{text}</text>')
    for frac, text in x_ticks:
        x = LEFT + plot_w * frac
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{text}</text>'
        )
    parts.append(
        f'<path class="axis" d="M{LEFT},{TOP}V{TOP + plot_h}H{LEFT + plot_w}"/>'
        f'<text class="label" x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text class="label" transform="translate(13 {TOP + plot_h / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    return parts


def _svg(parts: list[str], title: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        + "".join(parts)
        + "</svg>"
    )


def pr_chart(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """Precision (y) against recall (x), one line per evaluation setup, legend top-right."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    ticks = [(f, f"{f:.1f}") for f in np.linspace(0, 1, 6)]
    parts = _frame("recall", "precision", ticks, ticks)
    for i, (name, (recall, precision)) in enumerate(curves.items()):
        color = PALETTE[i % len(PALETTE)]
        points = " ".join(
            f"{LEFT + plot_w * r:.1f},{TOP + plot_h * (1 - p):.1f}" for r, p in zip(recall, precision)
        )
        parts.append(f'<polyline class="line" stroke="{color}" points="{points}"/>')
        y = TOP + 12 + 16 * i
        parts.append(
            f'<line x1="{WIDTH - RIGHT - 110}" x2="{WIDTH - RIGHT - 94}" y1="{y - 4}" y2="{y - 4}" '
            f'stroke="{color}" stroke-width="3"/>'
            f'<text class="legend" x="{WIDTH - RIGHT - 88}" y="{y}">{escape(name)}</text>'
        )
    return _svg(parts, "mean precision-recall curve")


def _nice_step(top: int, ticks: int = 5) -> int:
    """Smallest of 1, 2, 5, 10, 20, 50 ... that covers `top` in about `ticks` steps."""
    magnitude = 1
    while True:
        for step in (magnitude, 2 * magnitude, 5 * magnitude):
            if step * ticks >= top:
                return step
        magnitude *= 10


def histogram_chart(counts: np.ndarray) -> str:
    """Bars of query counts per AP bin over [0, 1], each labelled with its count."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max(int(counts.max()) if len(counts) else 0, 1)
    step = _nice_step(top)
    y_max = step * -(-top // step)
    y_ticks = [(v / y_max, str(v)) for v in range(0, y_max + 1, step)]
    x_ticks = [(f, f"{f:.1f}") for f in np.linspace(0, 1, 6)]
    parts = _frame("AP", "queries", x_ticks, y_ticks)
    bar_w = plot_w / len(counts)
    for i, count in enumerate(counts.tolist()):
        h = plot_h * count / y_max
        x, y = LEFT + bar_w * i, TOP + plot_h - h
        low, high = i / len(counts), (i + 1) / len(counts)
        parts.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}">'
            f"<title>AP {low:.1f}–{high:.1f}: {count} queries</title></rect>"
        )
        if count:
            parts.append(
                f'<text class="count" x="{x + bar_w / 2:.1f}" y="{y - 4:.1f}" '
                f'text-anchor="middle">{count}</text>'
            )
    return _svg(parts, "histogram of per-query AP")
