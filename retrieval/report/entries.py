"""What the pages show of one query or one returned result: its thumbnail request, the box and
mask drawn on it, its score, and whether geometric verification confirmed it.

Shared by the run report and the run-versus-run page, so both frame a result the same way.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.ranking import Ranking
from retrieval.report.thumbnails import Request, valid_box

VERIFY = "verify"


def instance_request(record: dict[str, Any]) -> Request:
    """The query's thumbnail request: its one instance's box and mask, when it has them."""
    instance = (record.get("instances") or [{}])[0]
    mask = instance.get("mask")
    return Request(record["path"], valid_box(instance.get("box")), json.dumps(mask) if mask else None)


def result_requests(ranking: Ranking, gallery: list[dict[str, Any]], top_k: int) -> list[list[tuple[int, Request]]]:
    """Per query, (gallery index, thumbnail request) of each shown result, best first."""
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


def rerank_steps(ranking: Ranking) -> list[dict[str, Any]]:
    """The re-rank steps that produced the ranking, in order, each with its options."""
    return [step for step in ranking.provenance if step.get("step") == "rerank"]


def verified(ranking: Ranking) -> np.ndarray | None:
    """Bool (n_query, k): entries geometric verification confirmed, whose score is their inlier
    count; None when the ranking's scores are not verify's (no verify, or a later step re-scored).

    Verify scores a confirmed entry by its inliers (at least `min_inliers`, never below 3) and
    leaves every other entry its similarity (at most 1), so the score alone tells them apart."""
    steps = rerank_steps(ranking)
    if not steps or steps[-1].get("name") != VERIFY:
        return None
    step = steps[-1]
    depth = min(int(step.get("top_n", ranking.k)), ranking.k)
    within = np.arange(ranking.k) < depth
    return (ranking.indices >= 0) & within[None, :] & (ranking.scores >= float(step.get("min_inliers", 3)))


def uri(path: str) -> str:
    """Link to the original image, opened large by a click on its thumbnail."""
    return Path(path).absolute().as_uri()


def score(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None


def box_json(box: tuple[float, float, float, float] | None) -> list[float] | None:
    return [round(v, 1) for v in box] if box else None


class MaskTable:
    """Each distinct mask once (the page refers to it by number): a region returned to many
    queries would otherwise be repeated in the page's data for every one of them."""

    def __init__(self) -> None:
        self.masks: list[dict[str, Any]] = []
        self._numbers: dict[str, int] = {}

    def add(self, mask_json: str | None) -> int | None:
        """The mask's number (None for no mask); `mask_json` as in a thumbnail `Request`."""
        if not mask_json:
            return None
        if mask_json not in self._numbers:
            rle = json.loads(mask_json)
            self._numbers[mask_json] = len(self.masks)
            self.masks.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"]})
        return self._numbers[mask_json]
