"""`report.html` of one run: metrics, charts and every query with its top results, from disk.

A query is shown as its image, its words (query=text), or both (query=composed).

The page is static: `report.html` holds the summary and the charts, `report/data.js` the
queries (a script that sets a global, because browsers refuse fetch() on file:// pages), and
`report/run.js` draws one page of queries at a time, so it opens fast with thousands.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.artifacts import write_text
from retrieval.queries.spec import TEXT_KINDS
from retrieval.report.curves import outcome_labels
from retrieval.report.inputs import RunInputs, load_run, number
from retrieval.report.run_html import ASSETS, page_html
from retrieval.report.thumbnails import Request, make_thumbnails, valid_box

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 50


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
            mask = ranking.mask(q, r)
            results.append((g, Request(gallery[g]["path"], box, json.dumps(mask) if mask else None)))
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


def _uri(path: str) -> str:
    """Link to the original image, opened by a click on its thumbnail."""
    return Path(path).absolute().as_uri()


def _score(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


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
    mode = run.metrics.get("query_mode", "")
    images, words = mode != "text", mode in TEXT_KINDS  # what the run's queries were made of
    query_requests = [_instance_request(record) if images else None for record in run.dataset["queries"]]
    results = _result_requests(run, top_k)
    wanted = set(query_requests) - {None} | {request for shown in results for _, request in shown}
    thumbs = make_thumbnails(wanted, assets / "thumbs")

    def src(request: Request) -> str | None:
        name = thumbs.get(request)
        return f"{ASSETS}/thumbs/{name}" if name else None

    scores, gallery = run.ranking.scores, run.dataset["gallery"]
    queries = [
        {
            "id": str(run.ranking.query_ids[q]),
            "group": record.get("group", ""),
            "thumb": src(query_requests[q]) if images else None,
            "uri": _uri(record["path"]) if images else None,
            "text": record.get("text", "") if words else None,
            "results": [[g, _score(scores[q, r]), src(request)] for r, (g, request) in enumerate(results[q])],
        }
        for q, record in enumerate(run.dataset["queries"])
    ]
    shown = sorted({g for rows in results for g, _ in rows})
    gallery_info = {g: [str(run.ranking.gallery_ids[g]), _uri(gallery[g]["path"])] for g in shown}
    setups = {name: _setup_data(run, name) for name in run.setups}
    data = {
        "topK": top_k,
        "pageSize": PAGE_SIZE,
        "defaultSetup": default,
        "defaultSort": "ap",
        "queries": queries,
        "gallery": gallery_info,
        "setups": {name: {**d, "labels": [l[:top_k] for l in d["labels"]]} for name, d in setups.items()},
    }
    write_text(assets / "data.js", "window.REPORT_DATA = " + json.dumps(data, separators=(",", ":"), allow_nan=False) + ";\n")
    for asset in ("style.css", "run.js"):
        shutil.copyfile(STATIC / asset, assets / asset)
    return write_text(run_dir / "report.html", page_html(run, setups, default, top_k))
