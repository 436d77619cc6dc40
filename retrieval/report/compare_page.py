"""`python -m retrieval.report --compare RUN_A RUN_B`: two runs of one dataset side by side.

What a change of model, query mode or re-rank step did, query by query: both runs' metrics
with their difference, each query's AP in A against B, and the queries that gained and lost
most, each with both runs' top results (what verify or aqe fixed, and what it broke).

One page beside the two runs (`compare_<A>_vs_<B>.html`) with its thumbnails in a folder of
the same name; styles and script inlined, images opened large in the page.
"""
from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path
from urllib.parse import quote

from retrieval.artifacts import write_text
from retrieval.errors import UserError
from retrieval.report.entries import instance_request, rerank_steps, result_requests, uri, verified
from retrieval.report.facts import step_text
from retrieval.report.inputs import RunInputs, load_run
from retrieval.report.run_html import percent
from retrieval.report.run_page import setup_data
from retrieval.report.svg import scatter_chart
from retrieval.report.thumbnails import Request, make_thumbnails

STATIC = Path(__file__).parent / "static"
CHANGE = 0.0005
"""An AP difference below this (0.05 points) counts as unchanged: the CSV keeps 4-6 digits."""
OUTCOME = {"p": "correct", "n": "wrong", "j": "junk"}


class CompareError(UserError, ValueError):
    """Two runs that cannot be compared query by query."""


def check_comparable(a: RunInputs, b: RunInputs, label_a: str, label_b: str) -> None:
    """Refuse runs of different datasets, queries or galleries, naming what differs."""
    name_a, name_b = a.dataset.get("name", "?"), b.dataset.get("name", "?")
    ask = "--compare needs two runs of one dataset"
    if name_a != name_b:
        raise CompareError(f"{label_a} and {label_b} are runs of different datasets ({name_a} and {name_b}): {ask}")
    if list(a.ranking.query_ids) != list(b.ranking.query_ids):
        raise CompareError(f"{label_a} and {label_b} are runs of {name_a} with different queries "
                           f"({len(a.ranking.query_ids):,} and {len(b.ranking.query_ids):,}): {ask} with the same queries")
    if list(a.ranking.gallery_ids) != list(b.ranking.gallery_ids):
        raise CompareError(f"{label_a} and {label_b} are runs of {name_a} with different galleries "
                           f"({len(a.ranking.gallery_ids):,} and {len(b.ranking.gallery_ids):,} images): {ask} and gallery")


def _labels(run_a: Path, run_b: Path) -> tuple[Path, str, str]:
    """The folder both runs lie in, and each run's path from there (its name when they differ)."""
    a, b = run_a.resolve(), run_b.resolve()
    parent = Path(os.path.commonpath([a, b]))
    if a == b:
        raise CompareError(f"{run_a} is given twice: --compare needs two different runs")
    return parent, a.relative_to(parent).as_posix(), b.relative_to(parent).as_posix()


def _run_card(run: RunInputs, letter: str, label: str, run_dir: Path, out_dir: Path, setup: str) -> str:
    """Who the run is: link to its report, model, query mode, steps, its mAP in the setup."""
    metrics = run.metrics
    report = run_dir.resolve() / "report.html"
    href = quote(Path(os.path.relpath(report, out_dir.resolve())).as_posix())
    steps = "".join(f'<span class="step rerank">{escape(step_text(step)[0])}</span>' for step in rerank_steps(run.ranking))
    steps = steps or '<span class="step none">no re-rank</span>'
    facts = [("model", metrics.get("model", "")), ("weights", metrics.get("weights", "")), ("query", metrics.get("query_mode", "")),
             ("index", metrics.get("index", "")), ("regions", metrics.get("regions", ""))]
    shown = " · ".join(f"{k} <b>{escape(str(v))}</b>" for k, v in facts if v not in ("", None))
    primary = (metrics.get("summary", {}).get(setup) or {}).get("mAP")
    score = f'<span class="big">{percent(primary)}</span> mAP' if primary is not None else ""
    missing = "" if report.exists() else (
        f' class="missing" title="report not built yet: python -m retrieval.report {escape(str(run_dir))}"')
    return (f'<div class="run-card run-{letter.lower()}"><div class="run-letter">{letter}</div><div>'
            f'<a href="{escape(href)}"{missing}>{escape(label)}</a><div class="subtitle">{shown}</div>'
            f'<div class="steps">{steps}</div></div>'
            f'<div class="run-score">{score}</div></div>')


def _metrics_table(a: RunInputs, b: RunInputs, setups: list[str]) -> str:
    """Per setup: A, B and B − A for every metric both runs report."""
    summary_a, summary_b = a.metrics.get("summary", {}), b.metrics.get("summary", {})
    metrics = [m for m in dict.fromkeys(m for s in setups for m in (summary_a.get(s) or {}))
               if any(m in (summary_b.get(s) or {}) for s in setups)]
    head = "".join(f"<th>{escape(m)}</th>" for m in metrics)
    rows = []
    for setup in setups:
        va, vb = summary_a.get(setup) or {}, summary_b.get(setup) or {}
        for letter, values in (("A", va), ("B", vb)):
            cells = "".join(f"<td>{percent(values[m]) if values.get(m) is not None else ''}</td>" for m in metrics)
            rows.append(f"<tr><th>{escape(setup)} · {letter}</th>{cells}</tr>")
        deltas = []
        for m in metrics:
            if va.get(m) is None or vb.get(m) is None:
                deltas.append("<td></td>")
                continue
            d = 100 * (vb[m] - va[m])
            css = "gain" if d > 0.005 else "loss" if d < -0.005 else ""
            deltas.append(f'<td class="{css}">{d:+.2f}</td>')
        rows.append(f'<tr class="delta"><th>{escape(setup)} · B − A</th>{"".join(deltas)}</tr>')
    return f'<table class="metrics" id="compare-metrics"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _ap_text(ap: float | None) -> str:
    return "—" if ap is None else f"{100 * ap:.2f}"


class _Strips:
    """Renders a run's top results for a query as a strip of framed thumbnails."""

    def __init__(self, run: RunInputs, labels: list[str], top_k: int, thumbs: dict[Request, str | None], folder: str):
        self.run, self.labels, self.thumbs, self.folder = run, labels, thumbs, folder
        self.requests = result_requests(run.ranking, run.dataset["gallery"], top_k)
        self.confirmed = verified(run.ranking)

    def wanted(self, queries: list[int]) -> set[Request]:
        return {request for q in queries for _, request in self.requests[q]}

    def src(self, request: Request) -> str:
        name = self.thumbs.get(request)
        return f"{self.folder}/thumbs/{name}" if name else ""

    def strip(self, q: int) -> str:
        figures = []
        for r, (g, request) in enumerate(self.requests[q]):
            outcome = self.labels[q][r] if r < len(self.labels[q]) else "n"
            checked = self.confirmed is not None and bool(self.confirmed[q, r])
            value = float(self.run.ranking.scores[q, r])
            score = f"{value:.0f} inliers" if checked else f"{value:.3f}"
            gallery_id = str(self.run.ranking.gallery_ids[g])
            figures.append(_figure(request, self.src(request), uri(self.run.dataset["gallery"][g]["path"]),
                                   f"#{r + 1} {gallery_id} · {OUTCOME[outcome]}, {'verified: ' if checked else 'score '}{score}",
                                   f"{outcome}{' verified' if checked else ''}", str(r + 1), score, checked))
        return "".join(figures) or '<p class="empty">no results</p>'


def _figure(request: Request, src: str, link: str, caption: str, css: str, badge: str, text: str, checked: bool) -> str:
    """A framed thumbnail that opens large (lightbox.js) with its box and mask drawn."""
    data = f' data-thumb="{escape(src)}"' if src else ""
    if request.box:
        data += f' data-box="{escape(json.dumps([round(v, 1) for v in request.box]))}"'
    if request.mask:
        data += f' data-mask="{escape(request.mask)}"'
    image = f'<img loading="lazy" src="{escape(src)}" alt="">' if src else '<div class="missing">image unreadable</div>'
    mark = '<span class="verified-mark">✓ verified</span>' if checked else ""
    badge_html = f'<span class="badge">{escape(badge)}</span>' if badge else ""
    return (f'<figure class="thumb {css}" title="{escape(caption)}"><a href="{escape(link)}" data-lightbox '
            f'data-caption="{escape(caption)}"{data}>{image}</a>{badge_html}{mark}<figcaption>{escape(text)}</figcaption></figure>')


def build_compare_page(run_a: Path, run_b: Path, out: Path | None = None, top_k: int = 8, setup: str | None = None,
                       shown: int = 10) -> Path:
    """Write the page comparing run B with run A (default beside them); return its path."""
    run_a, run_b = Path(run_a), Path(run_b)
    parent, label_a, label_b = _labels(run_a, run_b)
    a, b = load_run(run_a), load_run(run_b)
    check_comparable(a, b, label_a, label_b)
    setups = [s for s in a.setups if s in b.setups]
    chosen = setup or (setups[0] if setups else None)
    if chosen not in setups:
        raise CompareError(f"setup {chosen!r} is not in both runs; they share {', '.join(setups) or 'none'}")
    names = (run_a.resolve().name, run_b.resolve().name)
    names = names if names[0] != names[1] else (label_a, label_b)
    out = Path(out) if out else parent / f"compare_{names[0]}_vs_{names[1]}.html".replace("/", "_")
    folder = out.stem
    data_a, data_b = setup_data(a, chosen), setup_data(b, chosen)
    top_k = max(1, min(top_k, a.ranking.k, b.ranking.k))

    pairs = [(q, ap_a, ap_b) for q, (ap_a, ap_b) in enumerate(zip(data_a["ap"], data_b["ap"]))]
    scored = [(q, x, y, y - x) for q, x, y in pairs if x is not None and y is not None]
    gained = sorted([p for p in scored if p[3] > CHANGE], key=lambda p: (-p[3], p[0]))[:shown]
    lost = sorted([p for p in scored if p[3] < -CHANGE], key=lambda p: (p[3], p[0]))[:shown]
    listed = [p[0] for p in gained + lost]

    queries = a.dataset["queries"]
    images = a.metrics.get("query_mode", "") != "text"
    query_requests = {q: instance_request(queries[q]) for q in listed} if images else {}
    strips_a = _Strips(a, data_a["labels"], top_k, {}, folder)
    strips_b = _Strips(b, data_b["labels"], top_k, {}, folder)
    thumbs = make_thumbnails(set(query_requests.values()) | strips_a.wanted(listed) | strips_b.wanted(listed),
                             out.parent / folder / "thumbs")
    strips_a.thumbs = strips_b.thumbs = thumbs

    def card(q: int, ap_a: float, ap_b: float, delta: float) -> str:
        record = queries[q]
        query_id = str(a.ranking.query_ids[q])
        if q in query_requests:
            request = query_requests[q]
            name = thumbs.get(request)
            query_fig = _figure(request, f"{folder}/thumbs/{name}" if name else "", uri(record["path"]),
                                f"query {query_id}", "query-thumb", "", "query", False)
        else:
            query_fig = f'<figure class="thumb query-thumb query-words"><blockquote>{escape(record.get("text", ""))}</blockquote></figure>'
        css = "gain" if delta > 0 else "loss"
        return (
            f'<article class="query compare-query" data-lightbox-group data-id="{escape(query_id)}">'
            f'<div class="query-head"><span class="query-id">{escape(query_id)}</span>'
            f'<span class="ap-change {css}">AP {_ap_text(ap_a)} → {_ap_text(ap_b)} ({100 * delta:+.2f})</span>'
            f'<span class="found">{data_a["npos"][q]} positives</span>'
            + (f'<span class="group">{escape(record["group"])}</span>' if record.get("group") else "")
            + f'</div><div class="strip">{query_fig}<div class="pair">'
            f'<div class="pair-row"><span class="run-letter small">A</span><div class="results">{strips_a.strip(q)}</div></div>'
            f'<div class="pair-row"><span class="run-letter small">B</span><div class="results">{strips_b.strip(q)}</div></div>'
            f"</div></div></article>"
        )

    def section(title: str, items: list[tuple[int, float, float, float]], css: str, empty: str) -> str:
        body = "".join(card(*item) for item in items) or f'<p class="empty">{empty}</p>'
        return f'<section class="card" id="{css}"><h2>{title}</h2>{body}</section>'

    better = sum(1 for p in scored if p[3] > CHANGE)
    worse = sum(1 for p in scored if p[3] < -CHANGE)
    points = [(x, y, str(a.ranking.query_ids[q])) for q, x, y, _ in scored]
    chart = scatter_chart(points, "AP in A", "AP in B", diagonal=True, unit_range=True, labels=False) if points else ""
    table_rows = "".join(
        f'<tr><td class="text">{escape(str(a.ranking.query_ids[q]))}</td><td class="text">{escape(queries[q].get("group", ""))}</td>'
        f'<td>{data_a["npos"][q]}</td><td>{_ap_text(x)}</td><td>{_ap_text(y)}</td>'
        f'<td class="{"gain" if d > CHANGE else "loss" if d < -CHANGE else ""}">{100 * d:+.2f}</td></tr>'
        for q, x, y, d in sorted(scored, key=lambda p: (-p[3], p[0]))
    )
    others = [s for s in setups if s != chosen]
    setup_note = f" · setup <b>{escape(chosen)}</b>" + (
        f" (also {escape(', '.join(others))}: --setup)" if others else "")
    name = a.metrics.get("dataset") or a.dataset.get("name", "")
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(name)} · A vs B — retrieval comparison</title>
<style>{(STATIC / "style.css").read_text()}</style>
</head>
<body>
<header class="page-head">
  <h1>{escape(name)} <span class="model">A vs B</span></h1>
  <p class="subtitle">{len(queries):,} queries{setup_note} · top {top_k} results of each run</p>
  <div class="run-cards">{_run_card(a, "A", label_a, run_a, out.parent, chosen)}{_run_card(b, "B", label_b, run_b, out.parent, chosen)}</div>
</header>
<main>
<section class="card" id="summary">
  <h2>Metrics <small>(%)</small></h2>
  {_metrics_table(a, b, setups)}
</section>
<section class="card" id="per-query">
  <h2>Per-query AP <small>setup {escape(chosen)}</small></h2>
  <div class="charts"><figure class="chart-box" id="ap-scatter"><figcaption>Each query's AP in A (x) and B (y): above the line B did better</figcaption>{chart}</figure>
  <div class="facts"><table class="facts-table" id="changes">
    <tr><th>better in B</th><td class="gain">{better:,} queries</td></tr>
    <tr><th>worse in B</th><td class="loss">{worse:,} queries</td></tr>
    <tr><th>unchanged</th><td>{len(scored) - better - worse:,} queries (AP within {100 * CHANGE:.2f})</td></tr>
    <tr><th>without positives</th><td>{len(pairs) - len(scored):,} queries</td></tr>
  </table></div></div>
  <details><summary>AP of every query, largest gain first</summary>
  <table class="board per-query"><thead><tr><th>query</th><th>group</th><th>positives</th><th>AP A</th><th>AP B</th><th>B − A</th></tr></thead>
  <tbody>{table_rows}</tbody></table></details>
</section>
{section(f"Gained most <small>the {len(gained)} queries B improved most, of {better:,}</small>", gained, "gained", "No query does better in B.")}
{section(f"Lost most <small>the {len(lost)} queries B made worse most, of {worse:,}</small>", lost, "lost", "No query does worse in B.")}
</main>
<script>{(STATIC / "lightbox.js").read_text()}</script>
</body>
</html>
"""
    return write_text(out, html)
