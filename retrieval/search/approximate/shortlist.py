"""Approximate search over rows: each query's shortlist of rows from a faiss index (optionally
re-scored exactly from the stored vectors), grouped into images. An image's score is its best
row among those returned; images none of whose rows came back are missing from the ranking
(padding)."""
from __future__ import annotations

import faiss
import numpy as np

from retrieval.features.mapped import MappedRows
from retrieval.search.images import ImageHits, group_by_image, widest_image
from retrieval.search.index import search, sort_ties

ROWS_PER_IMAGE = 32
"""Approximate search fetches this many rows per ranked image unless `k_regions` is set."""


def rows_per_query(row_image: np.ndarray, k: int, k_regions: int | None, rescore_rows: int | None = None) -> int:
    """How many rows an approximate search fetches to rank `k` images: `k` when every image
    has one row, else `k_regions` or ROWS_PER_IMAGE per ranked image; at least `rescore_rows`
    when those are re-scored exactly (`index.rescore`)."""
    one_row_each = widest_image(row_image) <= 1
    return max(int(k_regions or (k if one_row_each else ROWS_PER_IMAGE * k)), int(rescore_rows or 0))


def approximate_search(
    index: faiss.Index,
    queries: np.ndarray,
    row_image: np.ndarray,
    k: int,
    k_rows: int,
    block_size: int = 4096,
    rescore_from: np.ndarray | MappedRows | None = None,
) -> ImageHits:
    """Top `k_rows` rows per query from `index`, grouped into at most `k` images; with
    `rescore_from` (the gallery's row vectors), those rows are first ordered by their exact
    similarity (`rescore`)."""
    queries = np.asarray(queries, dtype=np.float32)
    scores, ids = search(index, queries, min(k_rows, index.ntotal), block_size)
    if rescore_from is not None:
        scores, ids = rescore(queries, ids, rescore_from)
    return group_by_image(scores, ids, row_image, k)


def rescore(
    queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray | MappedRows, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's shortlist of rows (`ids`, -1 padding) re-scored by its exact inner product
    with the row vectors and re-ordered (score, then lower row; padding last), `block` queries
    at a time: only the shortlisted rows are read, so compressed codes (PQ) can sit in memory
    and the full vectors on disk. A PQ index cannot order the members of a tight cluster; the
    exact re-scoring of a few hundred candidates can (`bench/bench_scale.py`)."""
    scores = np.full(ids.shape, -np.inf, dtype=np.float32)
    for start in range(0, len(ids), block):
        shortlist = ids[start : start + block]
        rows = np.asarray(vectors[np.clip(shortlist, 0, None).ravel()], dtype=np.float32).reshape(*shortlist.shape, -1)
        exact = np.einsum("qd,qkd->qk", queries[start : start + block], rows)
        scores[start : start + block] = np.where(shortlist >= 0, exact, -np.inf)
    return sort_ties(scores, ids)
