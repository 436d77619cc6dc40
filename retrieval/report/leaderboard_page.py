"""`leaderboard.html`: every run of `leaderboard.csv` in one sortable, filterable table.

One self-contained file (styles and script inlined) whose rows link to each run's
`report.html` by a relative path, so the results folder can be moved or shared as a whole.
"""
from __future__ import annotations

import csv
import os
from html import escape
from pathlib import Path
from urllib.parse import quote

from retrieval.artifacts import write_text
from retrieval.report.inputs import number

STATIC = Path(__file__).parent / "static"
NOT_METRICS = {
    "date", "dataset", "model", "query_mode", "index", "commit", "n_queries", "n_gallery",
    "n_distractors", "images_per_s", "run_dir", "search_recall",
}


def _read(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [{k: v or "" for k, v in row.items() if k is not None} for row in reader]
        return list(reader.fieldnames or []), rows


def _report_link(run_dir: str, csv_dir: Path, out_dir: Path) -> str:
    """Relative link from the page to the run's report, greyed when it is not built yet."""
    if not run_dir:
        return "<td class=\"text\">—</td>"
    report = (csv_dir / run_dir).resolve() / "report.html"
    href = quote(Path(os.path.relpath(report, out_dir.resolve())).as_posix())
    if report.exists():
        return f'<td class="text" data-v="{escape(run_dir)}"><a href="{href}">report</a></td>'
    return (
        f'<td class="text" data-v="{escape(run_dir)}"><a class="missing" href="{href}" '
        f'title="not built yet: python -m retrieval.report {escape(run_dir)}">report?</a></td>'
    )


def _cell(column: str, text: str, style: str) -> str:
    """One table cell; `style` is "text", "metric", "int" or "float" for the whole column."""
    if column == "commit":
        return f'<td class="text" data-v="{escape(text)}" title="{escape(text)}"><code>{escape(text[:8])}</code></td>'
    value = number(text) if style != "text" else None
    if value is None:
        return f'<td class="{"text" if style == "text" else ""}" data-v="{escape(text)}">{escape(text)}</td>'
    shown = {"metric": f"{value:.2f}", "int": f"{value:,.0f}"}.get(style, f"{value:,.1f}")
    return f'<td data-v="{value!r}">{shown}</td>'


def build_leaderboard_page(csv_path: Path, out: Path | None = None) -> Path:
    """Write the leaderboard page (default: `leaderboard.html` beside the CSV); return its path."""
    csv_path = Path(csv_path)
    out = Path(out) if out else csv_path.with_name("leaderboard.html")
    columns, rows = _read(csv_path)
    shown = [c for c in columns if c != "run_dir"]

    def cells_numeric(column: str) -> bool:
        cells = [row[column] for row in rows if row[column] != ""]
        return bool(cells) and all(number(cell) is not None for cell in cells)

    numeric = {c for c in shown if c not in {"date", "commit"} and cells_numeric(c)}
    metrics = {c for c in numeric if c not in NOT_METRICS}
    integer = {c for c in numeric - metrics if all((number(r[c]) or 0.0).is_integer() for r in rows)}
    style = {c: "metric" if c in metrics else "int" if c in integer else "float" if c in numeric else "text"
             for c in shown}

    head = "".join(
        f'<th data-type="{"num" if c in numeric else "text"}"{" data-metric" if c in metrics else ""}>'
        f"<button>{escape(c)}{' %' if c in metrics else ''}</button></th>"
        for c in shown + ["run_dir"]
    )
    body = "".join(
        f'<tr data-dataset="{escape(row.get("dataset", ""))}">'
        + "".join(_cell(c, row[c], style[c]) for c in shown)
        + _report_link(row.get("run_dir", ""), csv_path.parent, out.parent)
        + "</tr>"
        for row in rows
    )
    datasets = sorted({row.get("dataset", "") for row in rows} - {""})
    options = "".join(f'<option value="{escape(d)}">{escape(d)}</option>' for d in datasets)
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
  <h1>Leaderboard <span class="model">{len(rows)} runs</span></h1>
  <p class="subtitle">from <b>{escape(csv_path.name)}</b> · click a column to sort · best value of each metric per dataset in green</p>
</header>
<main>
<section class="card">
  <div class="toolbar">
    <label class="control">Dataset <select id="dataset-filter"><option value="">all</option>{options}</select></label>
    <span class="page-info" id="row-count"></span>
  </div>
  <div class="board-wrap"><table class="board"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>
</section>
</main>
<script>{(STATIC / "leaderboard.js").read_text()}</script>
</body>
</html>
"""
    return write_text(out, html)
