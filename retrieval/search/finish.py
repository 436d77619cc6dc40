"""Hits to a ranking (`retrieval.ranking.Ranking`): exactly the run's depth, an empty row for
each skipped query, and, for a localising gallery, each entry's box and mask."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from retrieval.features import Features
from retrieval.ranking import Ranking
from retrieval.search.images import ImageHits


def finish_ranking(
    hits: ImageHits, queries: Features, gallery: Features, k: int, provenance: list[dict[str, Any]]
) -> Ranking:
    """A ranking of exactly `k` columns: skipped queries get an empty row (a miss, AP 0, so the
    mean stays over every query of the benchmark and comparable with published numbers),
    short rows are padded, and a localising gallery adds each entry's box and mask."""
    images, scores, rows = hits.images.copy(), hits.scores.copy(), hits.rows.copy()
    pad = k - images.shape[1]
    if pad > 0:
        images, rows = (np.pad(a, ((0, 0), (0, pad)), constant_values=-1) for a in (images, rows))
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    skipped = ~queries.valid
    images[skipped], rows[skipped], scores[skipped] = -1, -1, -np.inf
    ranking = Ranking(
        indices=images,
        scores=scores.astype(np.float32),
        query_ids=np.asarray(queries.keys),
        gallery_ids=np.asarray(gallery.keys),
        provenance=provenance,
    )
    if gallery.localises:
        found = rows >= 0
        ranking.boxes = np.full((*images.shape, 4), np.nan, dtype=np.float32)
        ranking.boxes[found] = gallery.boxes[rows[found]]
        ranking.mask_ids, ranking.mask_table = ranking_masks(rows, gallery)
    return ranking


def ranking_masks(rows: np.ndarray, gallery: Features) -> tuple[np.ndarray, list[dict]]:
    """Per ranking entry, the row of its mask in the returned table (-1: the row has no mask,
    or the entry is padding); each distinct returned mask is in the table once."""
    has_mask = np.fromiter((bool(m) for m in gallery.masks), dtype=bool, count=len(gallery.masks))
    returned = np.unique(rows[rows >= 0])
    kept = returned[has_mask[returned]]
    row_of = np.full(len(gallery.masks), -1, dtype=np.int64)
    row_of[kept] = np.arange(len(kept))
    ids = np.where(rows >= 0, row_of[np.clip(rows, 0, None)], -1)
    return ids, [json.loads(gallery.masks[r]) for r in kept.tolist()]
