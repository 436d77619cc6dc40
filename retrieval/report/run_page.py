"""`report.html` of one run: metrics, charts and every query with its top results, from disk.

A query is shown as its image, its words (query=text), or both (query=composed).

The page is static: `report.html` holds the summary and the charts, `report/data.js` the
queries (a script that sets a global, because browsers refuse fetch() on file:// pages), and
`report/run.js` draws one page of queries at a time, so it opens fast with thousands;
`report/lightbox.js` opens a result large with its box and mask drawn over the original.
A result that geometric verification confirmed is marked, its score shown as inliers.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.artifacts import write_text
from retrieval.queries.spec import TEXT_KINDS
from retrieval.report.curves import outcome_labels
from retrieval.report.entries import MaskTable, box_json, instance_request, result_requests, score, uri, verified
from retrieval.report.inputs import RunInputs, load_run, number
from retrieval.report.run_html import ASSETS, page_html
from retrieval.report.thumbnails import Request, make_thumbnails

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 50
SCRIPTS = ("run.js", "lightbox.js")


def setup_data(run: RunInputs, setup: str) -> dict[str, Any]:
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
    query_requests = [instance_request(record) if images else None for record in run.dataset["queries"]]
    results = result_requests(run.ranking, run.dataset["gallery"], top_k)
    wanted = set(query_requests) - {None} | {request for shown in results for _, request in shown}
    thumbs = make_thumbnails(wanted, assets / "thumbs")

    def src(request: Request) -> str | None:
        name = thumbs.get(request)
        return f"{ASSETS}/thumbs/{name}" if name else None

    scores, gallery, masks = run.ranking.scores, run.dataset["gallery"], MaskTable()
    confirmed = verified(run.ranking)

    def result(q: int, r: int, g: int, request: Request) -> list[Any]:
        """[gallery index, score, thumbnail, box, mask number, verified 0/1]."""
        checked = int(confirmed is not None and bool(confirmed[q, r]))
        return [g, score(scores[q, r]), src(request), box_json(request.box), masks.add(request.mask), checked]

    queries = []
    for q, record in enumerate(run.dataset["queries"]):
        request = query_requests[q]
        queries.append({
            "id": str(run.ranking.query_ids[q]),
            "group": record.get("group", ""),
            "thumb": src(request) if request else None,
            "uri": uri(record["path"]) if images else None,
            "box": box_json(request.box) if request else None,
            "mask": masks.add(request.mask) if request else None,
            "text": record.get("text", "") if words else None,
            "results": [result(q, r, g, req) for r, (g, req) in enumerate(results[q])],
        })
    shown = sorted({g for rows in results for g, _ in rows})
    gallery_info = {g: [str(run.ranking.gallery_ids[g]), uri(gallery[g]["path"])] for g in shown}
    setups = {name: setup_data(run, name) for name in run.setups}
    data = {
        "topK": top_k,
        "pageSize": PAGE_SIZE,
        "defaultSetup": default,
        "defaultSort": "ap",
        "verified": confirmed is not None,
        "queries": queries,
        "gallery": gallery_info,
        "masks": masks.masks,
        "setups": {name: {**d, "labels": [l[:top_k] for l in d["labels"]]} for name, d in setups.items()},
    }
    write_text(assets / "data.js", "window.REPORT_DATA = " + json.dumps(data, separators=(",", ":"), allow_nan=False) + ";\n")
    for asset in ("style.css", *SCRIPTS):
        shutil.copyfile(STATIC / asset, assets / asset)
    return write_text(run_dir / "report.html", page_html(run, setups, default, top_k))
