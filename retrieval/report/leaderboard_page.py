"""`leaderboard.html`: the runs of `leaderboard.csv`, one table and one set of charts per dataset.

Read at a glance, as the benchmark leaderboards are: each table leads with the link to the
run's report, the settings that differ between its runs and the main metrics (mAP, hit@1,
box mAP@50, per setup where a dataset has setups); every other column is behind a toggle.
Reruns of one configuration collapse to the latest (with their count), runs of one Hydra
sweep are grouped, and the best value of each metric is marked per group.

One self-contained file (styles and script inlined) whose rows link to each run's
`report.html` by a relative path, so the results folder can be moved or shared as a whole.
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from html import escape
from pathlib import Path
from urllib.parse import quote

from retrieval.artifacts import write_text
from retrieval.report.board import DatasetBoard, Leaderboard, Run, read_leaderboard
from retrieval.report.inputs import number
from retrieval.report.svg import bar_chart, scatter_chart

STATIC = Path(__file__).parent / "static"
HEADINGS = {"query_mode": "query", "n_queries": "queries", "n_gallery": "gallery", "n_distractors": "distractors",
            "images_per_s": "images/s", "queries_per_s": "queries/s", "search_recall": "search recall"}
BARS_SHOWN = 25
"""Configurations drawn in a bar chart, best first; the table lists them all."""


def _heading(column: str, metric: bool) -> str:
    return escape(HEADINGS.get(column, column)) + (' <span class="unit">%</span>' if metric else "")


def _short_date(text: str) -> str:
    """`2026-05-01T14:03:22+00:00` as `2026-05-01 14:03`; other text as it is."""
    try:
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return text


def _run_cell(run: Run, csv_dir: Path, out_dir: Path) -> str:
    """The run's date, as a link to its report (greyed when not built yet), and the button
    that unfolds the older runs of its configuration."""
    run_dir = run.row.get("run_dir", "")
    date = escape(_short_date(run.row.get("date", "")) or "run")
    if run_dir:
        report = (csv_dir / run_dir).resolve() / "report.html"
        href = quote(Path(os.path.relpath(report, out_dir.resolve())).as_posix())
        missing = "" if report.exists() else (
            f' class="missing" title="report not built yet: python -m retrieval.report {escape(run_dir)}"')
        link = f'<a href="{href}"{missing}>{date}</a>'
    else:
        link = date
    return (f'<td class="run text" data-v="{run.order}">{link}'
            f'<button class="reruns" type="button" hidden></button></td>')


def _cell(column: str, text: str, style: str, more: bool) -> str:
    """One cell; `style` is "text", "metric", "int" or "float" for the whole column."""
    css = ["more"] if more else []
    if column == "commit":
        return f'<td class="{" ".join(css + ["text"])}" data-v="{escape(text)}" title="{escape(text)}"><code>{escape(text[:8])}</code></td>'
    value = number(text) if style != "text" else None
    if value is None:
        if column == "weights" and text == "random":
            css.append("warn")
        css.append("text" if style == "text" else "empty")
        return f'<td class="{" ".join(css)}" data-v="{escape(text)}">{escape(text) or ("—" if style == "text" else "")}</td>'
    shown = {"metric": f"{value:.2f}", "int": f"{value:,.0f}"}.get(style, f"{value:,.1f}")
    return f'<td{" class=more" if more else ""} data-v="{value!r}">{shown}</td>'


def _styles(board: Leaderboard, rows: list[dict[str, str]]) -> dict[str, str]:
    def integer(column: str) -> bool:
        return all((number(r.get(column, "")) or 0.0).is_integer() for r in rows)

    return {c: "metric" if c in board.metrics else "int" if c in board.numeric and integer(c)
            else "float" if c in board.numeric else "text" for c in board.columns}


def _table(data: DatasetBoard, board: Leaderboard, style: dict[str, str], csv_dir: Path, out_dir: Path) -> str:
    metrics_more = [c for c in data.more if c in board.metrics]
    rest = [c for c in data.more if c not in board.metrics]
    columns = [(c, False) for c in data.varying + data.main] + [(c, True) for c in metrics_more + rest]

    def header(column: str, more: bool) -> str:
        kind = "num" if column in board.numeric else "text"
        flags = (" data-metric" if column in board.metrics else "") + (' class="more"' if more else "")
        primary = " data-primary" if data.main and column == data.main[0] else ""
        return (f'<th data-type="{kind}"{flags}{primary} data-col="{escape(column)}">'
                f"<button>{_heading(column, column in board.metrics)}</button></th>")

    head = '<th data-type="num" data-col="run"><button>run</button></th>' + "".join(header(c, m) for c, m in columns)
    body = "".join(
        f'<tr data-config="{escape(run.config)}" data-sweep="{escape(run.sweep.key)}" data-order="{run.order}">'
        + _run_cell(run, csv_dir, out_dir)
        + "".join(_cell(c, run.row.get(c, ""), style[c], more) for c, more in columns)
        + "</tr>"
        for run in data.runs
    )
    return f'<table class="board"><thead><tr>{head}</tr></thead><tbody class="source">{body}</tbody></table>'


def _charts(data: DatasetBoard) -> str:
    """Per main metric: a bar per configuration (its latest run) and, where the CSV has speeds,
    accuracy against speed with the front of configurations nothing beats on both."""
    latest = data.latest()
    figures = []
    for n, metric in enumerate(data.main):
        scored = [(run, number(run.row.get(metric, ""))) for run in latest]
        scored = [(run, value) for run, value in scored if value is not None]
        if not scored:
            continue
        top = max(value for _, value in scored)
        bars = [(data.label(run), value, value == top) for run, value in scored]
        shown = sorted(bars, key=lambda bar: -bar[1])[:BARS_SHOWN]
        more = f", the best {BARS_SHOWN} of {len(bars)}" if len(bars) > BARS_SHOWN else ""
        hidden = "" if n == 0 else " hidden"
        figures.append(
            f'<figure class="chart-box wide" data-chart="bars" data-metric="{escape(metric)}"{hidden}>'
            f"<figcaption><b>{escape(metric)}</b> per configuration (its latest run{more})</figcaption>"
            f"{bar_chart(shown, metric + ' (%)')}</figure>")
        for timing in data.timings:
            points = [(number(run.row.get(timing, "")), value, data.label(run)) for run, value in scored]
            points = [(x, y, label) for x, y, label in points if x is not None and x > 0]
            if len(points) < 2:
                continue
            xs = [x for x, _, _ in points]
            log_x = max(xs) / min(xs) > 20
            figures.append(
                f'<figure class="chart-box" data-chart="speed" data-metric="{escape(metric)}"{hidden}>'
                f"<figcaption><b>{escape(metric)}</b> against {escape(HEADINGS.get(timing, timing))}"
                f"{' (log scale)' if log_x else ''}; the line joins the configurations nothing beats on both</figcaption>"
                f"{scatter_chart(points, HEADINGS.get(timing, timing), metric, log_x=log_x, frontier=True, labels=len(points) <= 12)}"
                "</figure>")
    if not figures:
        return ""
    picker = ""
    if len(data.main) > 1:
        options = "".join(f'<option value="{escape(m)}">{escape(m)}</option>' for m in data.main)
        picker = f'<label class="control">Chart <select class="chart-metric">{options}</select></label>'
    return f'<div class="charts-head">{picker}</div><div class="charts">{"".join(figures)}</div>'


def _section(data: DatasetBoard, board: Leaderboard, style: dict[str, str], csv_dir: Path, out_dir: Path) -> str:
    sweeps = {run.sweep.key: {"label": run.sweep.label, "swept": run.sweep.swept} for run in data.runs if run.sweep.key}
    configs = len({run.config for run in data.runs})
    counts = f"{len(data.runs)} runs · {configs} configurations" + (f" · {len(sweeps)} sweep{'s' if len(sweeps) > 1 else ''}" if sweeps else "")
    fixed = " · ".join(
        f'{escape(HEADINGS.get(c, c))} <b{" class=warn" if c == "weights" and v == "random" else ""}>{escape(v)}</b>'
        for c, v in data.fixed.items() if v != "")
    name = data.name or "(no dataset)"
    return (
        f'<section class="card dataset" data-dataset="{escape(data.name)}" data-sweeps="{escape(json.dumps(sweeps))}">'
        f'<h2>{escape(name)} <small>{counts}</small></h2>'
        + (f'<p class="fixed">every run: {fixed}</p>' if fixed else "")
        + f'<div class="board-wrap">{_table(data, board, style, csv_dir, out_dir)}</div>'
        + _charts(data)
        + "</section>"
    )


def build_leaderboard_page(csv_path: Path, out: Path | None = None) -> Path:
    """Write the leaderboard page (default: `leaderboard.html` beside the CSV); return its path."""
    csv_path = Path(csv_path)
    out = Path(out) if out else csv_path.with_name("leaderboard.html")
    board = read_leaderboard(csv_path)
    rows = [run.row for data in board.datasets for run in data.runs]
    style = _styles(board, rows)
    sections = "".join(_section(data, board, style, csv_path.parent, out.parent) for data in board.datasets)
    options = "".join(f'<option value="{escape(d.name)}">{escape(d.name)}</option>' for d in board.datasets if d.name)
    n_configs = sum(len({run.config for run in d.runs}) for d in board.datasets)
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Leaderboard — retrieval runs</title>
<style>{(STATIC / "style.css").read_text()}</style>
</head>
<body>
<header class="page-head">
  <h1>Leaderboard <span class="model">{len(rows)} runs · {n_configs} configurations · {len(board.datasets)} datasets</span></h1>
  <p class="subtitle">from <b>{escape(csv_path.name)}</b> · metrics in % · <span class="best-key">best</span> value of each metric per group ·
  <span class="reruns-key">×3</span> three runs of one configuration, the latest shown · click a column to sort</p>
</header>
<main>
<div class="toolbar board-controls">
  <label class="control">Dataset <select id="dataset-filter"><option value="">all</option>{options}</select></label>
  <label class="control"><input type="checkbox" id="group-sweeps" checked> group by sweep</label>
  <label class="control"><input type="checkbox" id="collapse-reruns" checked> collapse reruns</label>
  <button type="button" id="all-columns" aria-pressed="false">all columns</button>
  <span class="page-info" id="row-count"></span>
</div>
<noscript><p class="notice">Turn on JavaScript to sort, group and collapse the tables.</p></noscript>
{sections}
</main>
<script>{(STATIC / "leaderboard.js").read_text()}</script>
</body>
</html>
"""
    return write_text(out, html)
