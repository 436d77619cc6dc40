"""Exact top-k gallery rows by inner product, in blocks, with torch on the CPU or a GPU.

Database-side augmentation needs the neighbours of every gallery row among the gallery rows, a
gallery x gallery search. The full score matrix does not fit in memory for a real gallery, so
scores are computed one (query block x row block) tile at a time and merged into a running top-k.
Ties are broken by the lower row id, the rule `retrieval.search.index.search` follows, so results do not
depend on the block size or the device.
"""
from __future__ import annotations

import numpy as np
import torch


def top_k_rows(
    queries: np.ndarray,
    vectors: np.ndarray,
    k: int,
    block_size: int = 4096,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The `k` rows of `vectors` with the highest inner product with each query, best first.

    Returns (scores float32, row ids int64), both (len(queries), k). Equal scores are ordered by
    row id; when `k` exceeds len(vectors) the tail is padded with -inf / -1. Inputs are widened to
    float32 and must be finite (a real score of -inf would be indistinguishable from padding).
    Peak memory is about block_size * (block_size + k) * 12 bytes (a score tile and its sort
    order), independent of len(vectors). `device` is where the tiles are computed (CPU default)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    device = device or torch.device("cpu")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    all_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    all_ids = np.full((len(queries), k), -1, dtype=np.int64)
    if k == 0:
        return all_scores, all_ids
    for q_start in range(0, len(queries), block_size):
        block = torch.from_numpy(queries[q_start : q_start + block_size]).to(device)
        scores = torch.full((len(block), k), -torch.inf, dtype=torch.float32, device=device)
        ids = torch.full((len(block), k), -1, dtype=torch.int64, device=device)
        for v_start in range(0, len(vectors), block_size):
            rows = torch.from_numpy(vectors[v_start : v_start + block_size]).to(device)
            tile = block @ rows.T
            tile_ids = torch.arange(v_start, v_start + len(rows), device=device).expand(len(block), -1)
            # The running top-k (ids below v_start, already in tie order) goes first and the tile's
            # columns follow in id order, so a stable descending sort keeps equal scores by id.
            scores = torch.cat([scores, tile], dim=1)
            ids = torch.cat([ids, tile_ids], dim=1)
            scores, order = torch.sort(scores, dim=1, descending=True, stable=True)
            scores, ids = scores[:, :k], torch.gather(ids, 1, order[:, :k])
        all_scores[q_start : q_start + len(block)] = scores.cpu().numpy()
        all_ids[q_start : q_start + len(block)] = ids.cpu().numpy()
    return all_scores, all_ids
