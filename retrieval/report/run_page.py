"""`report.html` of one run: metrics, charts and every query with its top results, from disk.

The page is static: `report.html` holds the summary and the charts, `report/data.js` the
queries (a script that sets a global, because browsers refuse fetch() on file:// pages), and
`report/run.js` draws one page of queries at a time, so it opens fast with thousands.
"""
from __future__ import annotations

import json
import math
import shutil
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.artifacts import write_text
from retrieval.report.curves import ap_histogram, mean_pr_curve, outcome_labels
from retrieval.report.inputs import RunInputs, load_run, number
from retrieval.report.svg import histogram_chart, pr_chart
from retrieval.report.thumbnails import Request, make_thumbnails, valid_box

STATIC = Path(__file__).parent / "static"
ASSETS = "report"
PAGE_SIZE = 50
SKIPPED_SHOWN = 500


def _instance_request(record: dict[str, Any]) -> Request:
    """The query's thumbnail request: its one instance's box and mask, when it has them."""
    instance = (record.get("instances") or [{}])[0]
    mask = instance.get("mask")
    return Request(record["path"], valid_box(instance.get("box")), json.dumps(mask) if mask else None)


def _result_requests(run: RunInputs, top_k: int) -> list[list[tuple[int, Request]]]:
    """Per query, (gallery index, thumbnail request) of each shown result, best first."""
    ranking, gallery = run.ranking, run.dataset["gallery"]
    shown = []
    for q, row in enumerate(ranking.indices[:, :top_k]):
        results = []
        for r, g in enumerate(row.tolist()):
            if g < 0:
                break
            box = valid_box(ranking.boxes[q, r]) if ranking.boxes is not None else None
            mask = str(ranking.masks[q, r]) if ranking.masks is not None else ""
            results.append((g, Request(gallery[g]["path"], box, mask or None)))
        shown.append(results)
    return shown


def _setup_data(run: RunInputs, setup: str) -> dict[str, Any]:
    """AP (from per_query.csv), positives count and outcome letters of every query in a setup."""
    rows = run.per_query.get(setup, {})
    truth = run.dataset["truth"][setup]
    labels = [
        outcome_labels(row, np.asarray(t["positives"], dtype=np.int64), np.asarray(t["junk"], dtype=np.int64))
        for row, t in zip(run.ranking.indices, truth)
    ]
    return {
        "ap": [number(rows.get(q, {}).get("ap")) for q in range(len(truth))],
        "npos": [len(t["positives"]) for t in truth],
        "labels": labels,
    }


def _score(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else escape(str(value))


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return escape(json.dumps(value))
    return escape(str(value))


def _summary_table(summary: dict[str, dict[str, Any]]) -> str:
    """Rows = reported subsets/setups, columns = metrics, values as percentages."""
    metrics = list(dict.fromkeys(m for values in summary.values() for m in values))
    head = "".join(f"<th>{escape(m)}</th>" for m in metrics)
    body = "".join(
        f"<tr><th>{escape(label)}</th>"
        + "".join(f"<td>{_percent(values[m]) if m in values else ''}</td>" for m in metrics)
        + "</tr>"
        for label, values in summary.items()
    )
    return f'<table class="metrics"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>'


def _facts(title: str, values: dict[str, Any]) -> str:
    if not values:
        return ""
    items = "".join(f"<dt>{escape(str(k))}</dt><dd>{_plain(v)}</dd>" for k, v in values.items())
    return f'<div class="facts"><h3>{escape(title)}</h3><dl>{items}</dl></div>'


def _skipped(skipped: list[list[str]]) -> str:
    if not skipped:
        return ""
    rows = "".join(
        f"<tr><td>{escape(str(path))}</td><td>{escape(str(reason))}</td></tr>"
        for path, reason in skipped[:SKIPPED_SHOWN]
    )
    more = f"<p>… and {len(skipped) - SKIPPED_SHOWN} more.</p>" if len(skipped) > SKIPPED_SHOWN else ""
    return (
        f"<details><summary>{len(skipped)} input(s) skipped while loading</summary>"
        f'<table class="skipped"><tr><th>path</th><th>reason</th></tr>{rows}</table>{more}</details>'
    )


def _charts(run: RunInputs, setups: dict[str, dict[str, Any]], default: str) -> str:
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


def _html(run: RunInputs, setups: dict[str, dict[str, Any]], default: str, top_k: int) -> str:
    metrics, dataset = run.metrics, run.dataset
    name = metrics.get("dataset") or dataset.get("name", "")
    model = metrics.get("model", "")
    facts = {
        "query mode": metrics.get("query_mode", ""),
        "index": metrics.get("index", ""),
        "queries": len(dataset["queries"]),
        "gallery": len(dataset["gallery"]),
        "ranking depth": run.ranking.k,
    }
    subtitle = " · ".join(f"{k} <b>{escape(str(v))}</b>" for k, v in facts.items() if v != "")
    provenance = escape(json.dumps(run.ranking.provenance, indent=2))
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
</header>
<main>
<section class="card" id="summary">
  <h2>Metrics <small>(%)</small></h2>
  {_summary_table(metrics.get("summary", {}))}
  <div class="facts-row">{_facts("Counts", metrics.get("counts", {}))}{_facts("Timings", metrics.get("timings", {}))}</div>
  {_skipped(metrics.get("skipped", []))}
  <details><summary>Provenance of the ranking</summary><pre>{provenance}</pre></details>
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


def build_run_report(run_dir: Path, top_k: int = 10, setup: str | None = None) -> Path:
    """Write `run_dir/report.html` and `run_dir/report/` from the run's saved artifacts.

    `setup` picks the evaluation setup shown first (default: the first one in the truth);
    the page can switch between all of them.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    if not run.setups:
        raise ValueError(f"{run_dir}/dataset.json has no ground truth setups")
    default = setup or run.setups[0]
    if default not in run.setups:
        raise ValueError(f"setup {default!r} not in this run; it has {', '.join(run.setups)}")
    top_k = max(1, min(top_k, run.ranking.k))

    assets = run_dir / ASSETS
    query_requests = [_instance_request(record) for record in run.dataset["queries"]]
    results = _result_requests(run, top_k)
    wanted = set(query_requests) | {request for shown in results for _, request in shown}
    thumbs = make_thumbnails(wanted, assets / "thumbs")

    def src(request: Request) -> str | None:
        name = thumbs.get(request)
        return f"{ASSETS}/thumbs/{name}" if name else None

    gallery_ids, scores = run.ranking.gallery_ids, run.ranking.scores
    queries = [
        {
            "id": str(run.ranking.query_ids[q]),
            "group": record.get("group", ""),
            "thumb": src(query_requests[q]),
            "results": [
                [str(gallery_ids[g]), _score(scores[q, r]), src(request)]
                for r, (g, request) in enumerate(results[q])
            ],
        }
        for q, record in enumerate(run.dataset["queries"])
    ]
    setups = {name: _setup_data(run, name) for name in run.setups}
    data = {
        "topK": top_k,
        "pageSize": PAGE_SIZE,
        "defaultSetup": default,
        "defaultSort": "ap",
        "queries": queries,
        "setups": {name: {**d, "labels": [l[:top_k] for l in d["labels"]]} for name, d in setups.items()},
    }
    write_text(assets / "data.js", "window.REPORT_DATA = " + json.dumps(data, separators=(",", ":"), allow_nan=False) + ";\n")
    for asset in ("style.css", "run.js"):
        shutil.copyfile(STATIC / asset, assets / asset)
    return write_text(run_dir / "report.html", _html(run, setups, default, top_k))
