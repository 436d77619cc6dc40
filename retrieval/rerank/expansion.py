"""Query expansion and database-side augmentation: re-rank by searching again with vectors that
are averaged with their nearest gallery rows.

All functions work on rows (L2-normalised vectors, one or several per image), take float16 or
float32 and return float32 L2-normalised rows; similarity is inner product. A zero row stands for
a skipped query or gallery entry and stays zero.

Weights follow alpha-QE / alpha-DBA (Radenovic, Tolias, Chum, "Fine-tuning CNN Image Retrieval
with No Human Annotation", TPAMI 2019): a neighbour g_i of x counts max(x.g_i, 0)^alpha, with
0^0 = 1, so alpha = 0 gives every neighbour weight 1 whatever its score: the unweighted average
query expansion (Chum et al., ICCV 2007) and database-side augmentation (Arandjelovic &
Zisserman, CVPR 2012) are exactly the alpha = 0 cases.
"""
from __future__ import annotations

import numpy as np
import torch

from retrieval.rerank.neighbours import top_k_rows


def average_query_expansion(queries: np.ndarray, gallery: np.ndarray, neighbours: np.ndarray, k: int) -> np.ndarray:
    """AQE (Chum, Philbin, Sivic, Isard, Zisserman, "Total Recall", ICCV 2007): each query becomes
    normalise(q + sum of its first `k` neighbours), the top of the first ranking being likely
    views of the same object whose features the query lacks.

    `neighbours` is (len(queries), m) gallery row ids, best first; -1 is padding and is skipped,
    so "first k" means the first k ids that are not -1 (all of them when fewer)."""
    return alpha_query_expansion(queries, gallery, neighbours, k, alpha=0.0)


def alpha_query_expansion(
    queries: np.ndarray, gallery: np.ndarray, neighbours: np.ndarray, k: int, alpha: float
) -> np.ndarray:
    """alpha-QE (Radenovic, Tolias, Chum, TPAMI 2019): q' = normalise(q + sum_{i<k}
    max(q.g_i, 0)^alpha g_i), so a weak or wrong neighbour pulls the query less than a strong one.

    `neighbours` and `k` as in `average_query_expansion`, which is the alpha = 0 case (0^0 = 1:
    every neighbour, whatever its score, has weight 1). The query has weight 1."""
    _check(k, alpha, minimum_k=0)
    queries = _widen(queries)  # the gallery is read row by row: it may be memory-mapped shards
    neighbours = np.asarray(neighbours, dtype=np.int64)
    if neighbours.ndim != 2 or len(neighbours) != len(queries):
        raise ValueError(f"neighbours must be (len(queries)={len(queries)}, m), got {neighbours.shape}")
    valid = neighbours >= 0
    first_k = np.where(valid & (np.cumsum(valid, axis=1) <= k), neighbours, -1)
    expanded = _normalise_rows(queries + _weighted_sum(queries, gallery, first_k, alpha))
    expanded[_zero_rows(queries)] = 0
    return expanded


def database_side_augmentation(
    gallery: np.ndarray,
    k: int,
    alpha: float,
    block_size: int = 4096,
    device: torch.device | None = None,
) -> np.ndarray:
    """alpha-DBA (Radenovic, Tolias, Chum, TPAMI 2019): each gallery row g becomes
    normalise(sum_{i<k} max(g.g_i, 0)^alpha g_i) over g_1 = g itself and its k - 1 nearest other
    gallery rows (ties by lower row id), so gallery rows get the same smoothing queries get from QE.

    `k` counts g itself: k = 1 leaves rows unchanged, and with alpha = 0 this is DBA as
    Arandjelovic & Zisserman (CVPR 2012) define it, the average of g and its k - 1 nearest. g is
    included even when a near-duplicate scores as high as g.g. With k > len(gallery) every row is
    used. Zero rows stay zero; as a neighbour a zero row takes one of the k places (score 0) but
    adds nothing. The neighbour search is
    `top_k_rows(gallery, gallery, k, block_size, device)`."""
    _check(k, alpha, minimum_k=1)
    gallery = _widen(gallery)
    _, ids = top_k_rows(gallery, gallery, k, block_size, device)
    own = np.arange(len(gallery), dtype=np.int64)[:, None]
    # Stable: other rows keep their rank, g (when it is among the top k) moves last and is dropped.
    others = np.take_along_axis(ids, np.argsort(ids == own, axis=1, kind="stable"), axis=1)[:, : k - 1]
    augmented = _normalise_rows(_weighted_sum(gallery, gallery, np.concatenate([own, others], axis=1), alpha))
    augmented[_zero_rows(gallery)] = 0
    return augmented


def _weighted_sum(centres: np.ndarray, gallery: np.ndarray, ids: np.ndarray, alpha: float) -> np.ndarray:
    """sum_j max(c.g_j, 0)^alpha g_j over each row's ids >= 0, one neighbour column at a time so
    memory stays (len(centres), d) whatever k is."""
    total = np.zeros_like(centres)
    for column in ids.T:
        rows = np.flatnonzero(column >= 0)
        neighbours = _widen(gallery[column[rows]])
        scores = np.einsum("nd,nd->n", centres[rows], neighbours)
        total[rows] += (np.maximum(scores, 0) ** np.float32(alpha))[:, None] * neighbours
    return total


def _check(k: int, alpha: float, minimum_k: int) -> None:
    if k < minimum_k:
        raise ValueError(f"k must be >= {minimum_k}, got {k}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0 (a zero score would get infinite weight), got {alpha}")


def _widen(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _zero_rows(vectors: np.ndarray) -> np.ndarray:
    return ~vectors.any(axis=1)


def _normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalised rows; a zero row stays zero instead of becoming NaN."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
