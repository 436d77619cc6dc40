"""The static HTML of a run's page: summary tables, facts and charts, rendered server-side.

The query browser is not here: `static/run.js` draws it from `report/data.js` in the browser.
"""
from __future__ import annotations

import json
from html import escape
from typing import Any

from retrieval.search.approximate.recall import describe
from retrieval.report.curves import ap_histogram, mean_pr_curve
from retrieval.report.inputs import RunInputs
from retrieval.report.svg import histogram_chart, pr_chart

ASSETS = "report"
SKIPPED_SHOWN = 500


def _percent(value: Any) -> str:
    """Metrics are fractions; papers and the leaderboard quote them as percentages."""
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else escape(str(value))


def _plain(value: Any) -> str:
    """Counts and timings as a person reads them: short floats, JSON for nested values."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return escape(json.dumps(value))
    return escape(str(value))


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
            + "".join(f"<td>{_percent(values[m]) if m in values else ''}</td>" for m, _ in columns)
            + "</tr>"
            for label, values, css in rows
        )
        caption = f"<caption>{escape(title)}</caption>" if len(families) > 1 else ""
        tables.append(f'<table class="metrics">{caption}<thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>')
    return "".join(tables)


def _facts(title: str, values: dict[str, Any]) -> str:
    """A small key/value list (counts, timings); nothing when the run recorded none."""
    if not values:
        return ""
    items = "".join(f"<dt>{escape(str(k))}</dt><dd>{_plain(v)}</dd>" for k, v in values.items())
    return f'<div class="facts"><h3>{escape(title)}</h3><dl>{items}</dl></div>'


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
    facts = {
        "query mode": metrics.get("query_mode", ""),
        "combination": metrics.get("combination", ""),
        "index": metrics.get("index", ""),
        "regions": metrics.get("regions", ""),
        "queries": len(dataset["queries"]),
        "gallery": len(dataset["gallery"]),
        "ranking depth": run.ranking.k,
    }
    subtitle = " · ".join(f"{k} <b>{escape(str(v))}</b>" for k, v in facts.items() if v != "")
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
  {_search_notice(metrics.get("search"))}
</header>
<main>
<section class="card" id="summary">
  <h2>Metrics <small>(%)</small></h2>
  {_summary_tables(metrics.get("summary", {}), metrics.get("whole_image_summary"))}
  <div class="facts-row">{_facts("Counts", metrics.get("counts", {}))}{_facts("Timings", metrics.get("timings", {}))}</div>
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
</body>
</html>
"""
