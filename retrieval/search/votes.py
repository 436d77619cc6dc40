"""Images scored by their segments' votes (SegVLAD's weighted Borda count): every row of a
query (one of its supersegments) finds its `TOP_SEGMENTS` nearest gallery rows, exactly, and
each gallery image scores the normalised similarities of its rows found
(`retrieval.aggregation.segvlad.score_images`); the images no row found follow (`UNVOTED`). The ranking's row of an image is its row most
similar to any of the query's, whose box and mask say where the match is.
"""
from __future__ import annotations

import numpy as np
import torch

from retrieval.aggregation.segvlad import TOP_SEGMENTS, score_images
from retrieval.features import Features
from retrieval.search.exact import exact_search
from retrieval.search.images import ImageHits

QUERY_ROWS, GALLERY_ROWS = 1024, 16384
"""Rows of queries and of the gallery compared at once (bounds the similarity block)."""


def nearest_rows(queries: np.ndarray, gallery: Features, top: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, gallery rows), each (n, top) best first (-inf / -1 past the gallery's
    rows), of the `top` gallery rows nearest each of (n, D) query rows."""
    n_rows = len(gallery.row_image)
    width = min(top, n_rows)
    out_scores = np.full((len(queries), top), -np.inf, np.float32)
    out_rows = np.full((len(queries), top), -1, np.int64)
    for start in range(0, len(queries), QUERY_ROWS):
        block = torch.from_numpy(np.ascontiguousarray(queries[start : start + QUERY_ROWS], dtype=np.float32)).to(device)
        best = torch.full((len(block), 0), -torch.inf, device=device)
        rows = torch.zeros((len(block), 0), dtype=torch.int64, device=device)
        for lo in range(0, n_rows, GALLERY_ROWS):
            chunk = torch.from_numpy(np.asarray(gallery.vectors[lo : lo + GALLERY_ROWS], dtype=np.float32)).to(device)
            scores = torch.cat([best, block @ chunk.T], dim=1)
            ids = torch.cat([rows, torch.arange(lo, lo + len(chunk), device=device).expand(len(block), -1)], dim=1)
            best, picked = torch.topk(scores, min(width, scores.shape[1]), dim=1)
            rows = ids.gather(1, picked)
        out_scores[start : start + len(block), :width] = best.cpu().numpy()
        out_rows[start : start + len(block), :width] = rows.cpu().numpy()
    return out_scores, out_rows


UNVOTED = 2.0
"""Images no segment of the query voted for follow the voted ones, by their best row's
similarity to any of the query's rows, scored that cosine minus UNVOTED (below every vote
count, which is at least 0), so that a full ranking (mAP) ranks every image."""


def segment_votes(queries: Features, gallery: Features, k: int, device: torch.device = torch.device("cpu"),
                  top: int = TOP_SEGMENTS) -> ImageHits:
    """The top `k` gallery images of every query (whose rows are its segments), by votes;
    then those without votes (`UNVOTED`)."""
    k = min(k, len(gallery.keys))
    hits = ImageHits(np.full((len(queries.keys), k), -np.inf, np.float32),
                     np.full((len(queries.keys), k), -1, np.int64), np.full((len(queries.keys), k), -1, np.int64))
    if not len(queries.row_image) or not len(gallery.row_image) or k == 0:
        return hits
    rows = np.asarray(queries.vectors, dtype=np.float32)
    similarities, neighbours = nearest_rows(rows, gallery, top, device)
    best = exact_search(rows, gallery.vectors, gallery.row_image, len(gallery.keys), k, device)
    for query in np.unique(queries.row_image):
        own = queries.row_image == query
        scored = score_images(similarities[own], neighbours[own], gallery.row_image, top)
        images, scores, found_rows = _append_unvoted(scored.images, scored.scores, scored.best_segment,
                                                     best.images[own], best.scores[own], best.rows[own], k)
        hits.scores[query, : len(images)] = scores
        hits.images[query, : len(images)] = images
        hits.rows[query, : len(images)] = found_rows
    return hits


def _append_unvoted(images: np.ndarray, scores: np.ndarray, rows: np.ndarray, best_images: np.ndarray,
                    best_scores: np.ndarray, best_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The voted images, then the others each at its best row over the query's rows ((q, k)
    `best_*`, each query row's top images), at most `k` in all."""
    found = best_images.ravel() >= 0
    order = np.argsort(-best_scores.ravel()[found], kind="stable")
    candidates = best_images.ravel()[found][order]
    _, first = np.unique(candidates, return_index=True)
    first = np.sort(first)
    unvoted = first[~np.isin(candidates[first], images)]
    extra = order[unvoted]
    return (np.concatenate([images, best_images.ravel()[found][extra]])[:k],
            np.concatenate([scores, best_scores.ravel()[found][extra] - UNVOTED])[:k],
            np.concatenate([rows, best_rows.ravel()[found][extra]])[:k])
