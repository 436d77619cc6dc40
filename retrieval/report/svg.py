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


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values from at most `low` to at least `high`, in about `count` steps."""
    raw = max(high - low, 1e-9) / count
    magnitude = 10 ** np.floor(np.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [float(np.floor(low / step) * step)]
    while ticks[-1] < high - 1e-9 or len(ticks) < 2:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


BAR_ROW, BAR_LABEL_CHARS, BAR_WIDTH = 22, 40, 640


def bar_chart(bars: list[tuple[str, float, bool]], value_label: str) -> str:
    """Horizontal bars, one per configuration (label, value in %, best?), longest first; the
    labels on the left, each value at its bar's end. Grows downwards with the number of bars."""
    bars = sorted(bars, key=lambda bar: -bar[1])
    left, right, top = 290, 48, 8
    plot_w = BAR_WIDTH - left - right
    height = top + BAR_ROW * len(bars) + 34
    ticks = _ticks(0.0, max([v for _, v, _ in bars] + [1e-9]))
    high = ticks[-1]
    parts = []
    bottom = top + BAR_ROW * len(bars)
    for tick in ticks:
        x = left + plot_w * tick / high
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}"/>'
                     f'<text class="tick" x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{tick:g}</text>')
    for i, (label, value, best) in enumerate(bars):
        y = top + BAR_ROW * i
        w = max(plot_w * value / high, 1.0)
        parts.append(
            f'<g class="bar-row{" best" if best else ""}"><title>{escape(label)}: {value:.2f}</title>'
            f'<text class="label" x="{left - 8}" y="{y + 15}" text-anchor="end">{escape(_short(label, BAR_LABEL_CHARS))}</text>'
            f'<rect class="bar" x="{left}" y="{y + 3}" width="{w:.1f}" height="{BAR_ROW - 6}"/>'
            f'<text class="count" x="{left + w + 4:.1f}" y="{y + 15}">{value:.2f}</text></g>'
        )
    parts.append(f'<path class="axis" d="M{left},{top}V{bottom}"/>'
                 f'<text class="label" x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">{escape(value_label)}</text>')
    return (f'<svg class="chart bar-chart" viewBox="0 0 {BAR_WIDTH} {height}" role="img" '
            f'aria-label="{escape(value_label)} per configuration">' + "".join(parts) + "</svg>")


def scatter_chart(points: list[tuple[float, float, str]], x_label: str, y_label: str, *, log_x: bool = False,
                  frontier: bool = False, diagonal: bool = False, unit_range: bool = False, labels: bool = True) -> str:
    """Points (x, y, label); `frontier` joins those no other point beats on both axes (higher
    is better on both), `diagonal` draws y = x; `unit_range` fixes both axes to [0, 1]."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    xs = np.array([p[0] for p in points], dtype=float)
    ys = np.array([p[1] for p in points], dtype=float)

    def scale(values: np.ndarray, ticks: list[float], log: bool) -> np.ndarray:
        low, high = (np.log10(ticks[0]), np.log10(ticks[-1])) if log else (ticks[0], ticks[-1])
        v = np.log10(values) if log else values
        return (v - low) / max(high - low, 1e-12)

    if unit_range:
        x_ticks = y_ticks = [round(v, 1) for v in np.linspace(0, 1, 6)]
    else:
        if log_x:
            x_ticks = [10.0 ** e for e in range(int(np.floor(np.log10(xs.min()))), int(np.ceil(np.log10(xs.max()))) + 1)]
            if len(x_ticks) == 1:
                x_ticks.append(x_ticks[0] * 10)
        else:
            x_ticks = _ticks(0.0, float(xs.max()) * 1.05)
        y_ticks = _ticks(max(0.0, float(ys.min()) - 5), min(100.0, float(ys.max()) + 5) if ys.max() <= 100 else float(ys.max()))
    fx, fy = scale(xs, x_ticks, log_x), scale(ys, y_ticks, False)
    parts = _frame(x_label, y_label,
                   [(float(f), f"{t:g}") for f, t in zip(scale(np.array(x_ticks), x_ticks, log_x), x_ticks)],
                   [(float(f), f"{t:g}") for f, t in zip(scale(np.array(y_ticks), y_ticks, False), y_ticks)])
    px, py = LEFT + plot_w * fx, TOP + plot_h * (1 - fy)
    if diagonal:
        parts.append(f'<line class="diagonal" x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP}"/>')
    if frontier and len(points) > 1:
        order = np.argsort(-xs, kind="stable")
        best, front = -np.inf, []
        for i in order:  # fastest first: a point is on the front if nothing faster is as accurate
            if ys[i] > best:
                front.append(i)
                best = ys[i]
        line = " ".join(f"{px[i]:.1f},{py[i]:.1f}" for i in sorted(front, key=lambda i: xs[i]))
        parts.append(f'<polyline class="frontier" points="{line}"/>')
    for i, (x, y, label) in enumerate(points):
        parts.append(f'<circle class="point" cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="4.5">'
                     f"<title>{escape(label)}: {y_label} {y:.4g}, {x_label} {x:.4g}</title></circle>")
        if labels:
            anchor = "end" if fx[i] > 0.7 else "start"
            dx = -7 if anchor == "end" else 7
            parts.append(f'<text class="point-label" x="{px[i] + dx:.1f}" y="{py[i] - 6:.1f}" '
                         f'text-anchor="{anchor}">{escape(_short(label, 28))}</text>')
    return _svg(parts, f"{y_label} against {x_label}")
