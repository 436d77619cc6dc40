"""The static HTML of a run's page: summary tables, facts and charts, rendered server-side.

The query browser is not here: `static/run.js` draws it from `report/data.js` in the browser.
"""
from __future__ import annotations

import json
from html import escape
from typing import Any

from retrieval.percent import percent_text
from retrieval.search.approximate.recall import describe
from retrieval.report.curves import ap_histogram, mean_pr_curve
from retrieval.report.entries import rerank_steps, verified
from retrieval.report.facts import fact_rows, fact_table, step_text, when
from retrieval.report.inputs import RunInputs
from retrieval.report.svg import histogram_chart, pr_chart

ASSETS = "report"
RANDOM = "random"
"""metrics.json's `weights` of a model built without trained weights."""
SKIPPED_SHOWN = 500


def percent(value: Any) -> str:
    """Metrics are fractions; papers and the leaderboard quote them as percentages."""
    return percent_text(value) if isinstance(value, (int, float)) else escape(str(value))


LOCALISATION_FAMILIES = {
    "box_": "Localisation, boxes",
    "mask_": "Localisation, masks",
    "reference_box_": "Pixel-retrieval reference evaluation, boxes (compatibility)",
}


def _summary_tables(summary: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]] | None = None) -> str:
    """Rows = reported subsets/setups, columns = metrics, values as percentages; retrieval
    metrics first (with the whole-image baseline rows of a region-level run), then one table
    per localisation kind (`box_mAP@50` under "boxes")."""
    metrics = list(dict.fromkeys(m for values in summary.values() for m in values))
    families = {"Retrieval": [(m, m) for m in metrics if not m.startswith(tuple(LOCALISATION_FAMILIES))]}
    for prefix, title in LOCALISATION_FAMILIES.items():
        families[title] = [(m, m.removeprefix(prefix)) for m in metrics if m.startswith(prefix)]
    families = {title: columns for title, columns in families.items() if columns}
    tables = []
    for title, columns in families.items():
        head = "".join(f"<th>{escape(name)}</th>" for _, name in columns)
        rows = [(label, values, "") for label, values in summary.items()]
        if baseline and title == "Retrieval":
            rows += [(f"{label}, whole image", values, ' class="baseline"') for label, values in baseline.items()]
        body = "".join(
            f"<tr{css}><th>{escape(label)}</th>"
            + "".join(f"<td>{percent(values[m]) if m in values else ''}</td>" for m, _ in columns)
            + "</tr>"
            for label, values, css in rows
        )
        caption = f"<caption>{escape(title)}</caption>" if len(families) > 1 else ""
        tables.append(f'<table class="metrics">{caption}<thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>')
    return f'<div class="metric-tables">{"".join(tables)}</div>'


def _facts(run: RunInputs) -> str:
    """Counts, search, timings and environment as labelled tables. `timings` in metrics.json
    is the search's record: its sizes are search facts, its `created` the ranking's time."""
    metrics = run.metrics
    counts = dict(metrics.get("counts") or {})
    confirmed = verified(run.ranking)
    if confirmed is not None:
        counts["verified results"] = int(confirmed.sum())
        counts["queries with a verified result"] = int(confirmed.any(axis=1).sum())
    timings = {k: v for k, v in (metrics.get("timings") or {}).items() if k not in counts}
    speed = {k: v for k, v in timings.items() if k.endswith(("_seconds", "_per_s", "_s"))}
    environment = {k: timings[k] for k in ("created", "versions") if k in timings}
    search = {k: v for k, v in timings.items() if k not in speed and k not in environment}
    return "".join((
        fact_table("Counts", fact_rows(counts, run.setups), "counts"),
        fact_table("Search", fact_rows(search), "search"),
        fact_table("Timings", fact_rows(speed), "timings"),
        fact_table("Environment", fact_rows(environment), "environment"),
    ))


def _steps(run: RunInputs) -> str:
    """The line naming what produced the ranking: the search, then each re-rank step with the
    options it is known by; how many results verification confirmed when it ran last."""
    search = next((step for step in run.ranking.provenance if step.get("step") == "search"), None)
    parts = [f'<span class="step">search <b>{escape(str(search.get("index", "?")))}</b></span>'] if search else []
    steps = rerank_steps(run.ranking)
    for step in steps:
        name, every = step_text(step)
        parts.append(f'<span class="step rerank" data-step="{escape(str(step.get("name", "")))}" '
                     f'title="{escape(every)}">{escape(name)}</span>')
    if not steps:
        parts.append('<span class="step none">no re-rank</span>')
    confirmed = verified(run.ranking)
    note = ""
    if confirmed is not None:
        note = (f'<span class="verified-note"><span class="check">✓</span> {int(confirmed.sum()):,} results verified '
                f"in {int(confirmed.any(axis=1).sum()):,} of {confirmed.shape[0]:,} queries</span>")
    return f'<p class="steps" id="steps"><span class="steps-label">Steps</span> {" → ".join(parts)}{note}</p>'


def _skipped(skipped: dict[str, list[list[str]]]) -> str:
    """Inputs dropped per stage (loading, queries, gallery), folded away and capped."""
    flat = [(stage, path, reason) for stage, items in skipped.items() for path, reason in items]
    if not flat:
        return ""
    rows = "".join(
        f"<tr><td>{escape(stage)}</td><td>{escape(str(path))}</td><td>{escape(str(reason))}</td></tr>"
        for stage, path, reason in flat[:SKIPPED_SHOWN]
    )
    more = f"<p>… and {len(flat) - SKIPPED_SHOWN} more.</p>" if len(flat) > SKIPPED_SHOWN else ""
    return (
        f"<details><summary>{len(flat)} input(s) skipped</summary>"
        f'<table class="skipped"><tr><th>stage</th><th>path</th><th>reason</th></tr>{rows}</table>{more}</details>'
    )


def _charts(run: RunInputs, setups: dict[str, dict[str, Any]], default: str) -> str:
    """PR curves of all setups in one chart; one AP histogram per setup, the default one shown."""
    curves = {name: mean_pr_curve(data["labels"], data["npos"]) for name, data in setups.items()}
    histograms = "".join(
        f'<figure class="chart-box" data-setup="{escape(name)}"{"" if name == default else " hidden"}>'
        f"<figcaption>Per-query AP, setup <b>{escape(name)}</b> "
        f"({sum(ap is not None for ap in data['ap'])} queries with positives)</figcaption>"
        f"{histogram_chart(ap_histogram(data['ap']))}</figure>"
        for name, data in setups.items()
    )
    return (
        '<figure class="chart-box"><figcaption>Precision–recall, mean interpolated over queries '
        f"(from the saved top-{run.ranking.k} ranking, junk removed)</figcaption>"
        f"{pr_chart(curves)}</figure>{histograms}"
    )


def _random_notice(weights: str) -> str:
    """A visible line when the model had no trained weights, so its numbers are not read as a model's."""
    if weights != RANDOM:
        return ""
    return ('<p class="notice warn-notice" id="random-weights">random weights: the model was built without '
            "trained weights, so these numbers say nothing about it</p>")


def _search_notice(search: dict[str, Any] | None) -> str:
    """A visible line when the ranking came from an approximate index, so its numbers are not
    mistaken for exact ones: `approximate search: recall@100 0.962 against exact (...)`."""
    line = describe(search)
    return f'<p class="notice" id="approximate">{escape(line)}</p>' if line else ""


def page_html(run: RunInputs, setups: dict[str, dict[str, Any]], default: str, top_k: int) -> str:
    """The whole `report.html`; `setups` holds each setup's AP, npos and outcome letters."""
    metrics, dataset = run.metrics, run.dataset
    name = metrics.get("dataset") or dataset.get("name", "")
    model = metrics.get("model", "")
    weights = str(metrics.get("weights") or "")
    facts = {
        "weights": weights,
        "query mode": metrics.get("query_mode", ""),
        "combination": metrics.get("combination", ""),
        "index": metrics.get("index", ""),
        "regions": metrics.get("regions", ""),
        "queries": len(dataset["queries"]),
        "gallery": len(dataset["gallery"]),
        "ranking depth": run.ranking.k,
        "run": when(run.created),
    }
    subtitle = " · ".join(
        f'{k} <b{" class=warn" if k == "weights" and v == RANDOM else ""}>{escape(str(v))}</b>'
        for k, v in facts.items() if v != "")
    provenance = (
        f"<details><summary>Provenance of the ranking</summary>"
        f"<pre>{escape(json.dumps(run.ranking.provenance, indent=2))}</pre></details>"
        if run.ranking.provenance else ""
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(name)} · {escape(model)} — retrieval report</title>
<link rel="stylesheet" href="{ASSETS}/style.css">
</head>
<body>
<header class="page-head">
  <h1>{escape(name)} <span class="model">{escape(model)}</span></h1>
  <p class="subtitle">{subtitle}</p>
  {_steps(run)}
  {_random_notice(weights)}
  {_search_notice(metrics.get("search"))}
</header>
<main>
<section class="card" id="summary">
  <h2>Metrics <small>(%)</small></h2>
  {_summary_tables(metrics.get("summary", {}), metrics.get("whole_image_summary"))}
  <div class="facts-row">{_facts(run)}</div>
  {_skipped(metrics.get("skipped", {}))}
  {provenance}
</section>
<section class="card" id="charts">
  <h2>Curves</h2>
  <div class="charts">{_charts(run, setups, default)}</div>
</section>
<section class="card" id="queries">
  <h2>Queries <small>top {top_k} results each</small></h2>
  <div class="toolbar" id="toolbar"></div>
  <div id="query-list"><noscript>Turn on JavaScript to browse the queries.</noscript></div>
  <nav class="pager" id="pager-bottom"></nav>
</section>
</main>
<script src="{ASSETS}/data.js"></script>
<script src="{ASSETS}/run.js"></script>
<script src="{ASSETS}/lightbox.js"></script>
</body>
</html>
"""
