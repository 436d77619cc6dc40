"""Search over regions, aggregated per image: an image scores as its best region (max).

Exact (the default, index `Flat`): queries x regions similarities are computed block by
block on the device and reduced to a running per-image maximum and its region, so memory is
bounded by the block sizes however many regions there are, and every image gets its exact
score (any ranking depth). Approximate (any other FAISS factory string): the index returns
the top `k_regions` regions per query; an image's score is its best region among them, and
images none of whose regions came back are missing from the row (padding).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import faiss
import numpy as np
import torch

from retrieval.index import build_index, search, top_k_in_tie_order

AGGREGATIONS = ("max",)


@dataclass
class ImageHits:
    """Per query, best first: gallery image, its score, and the region that gave it."""

    scores: np.ndarray
    images: np.ndarray
    regions: np.ndarray
    """-1 where `images` is padding."""


def _top_images(best: torch.Tensor, region: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top `k` images of each row of (b, n_images) scores; ties by lower image index; images
    without a region (score -inf) are padding."""

    def top_rows(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        scores, images = torch.topk(best[torch.from_numpy(rows).to(best.device)], depth, dim=1)
        scores, images = scores.cpu().numpy(), images.cpu().numpy()
        return scores, np.where(np.isfinite(scores), images, -1)

    n_images = best.shape[1]
    scores, images = top_k_in_tie_order(top_rows, np.arange(len(best)), k, min(n_images, k + 16), n_images)
    regions = np.take_along_axis(region.cpu().numpy(), np.clip(images, 0, None), 1)
    return scores, images, np.where(images >= 0, regions, -1)


def exact_search(
    queries: np.ndarray,
    vectors: np.ndarray,
    region_image: np.ndarray,
    n_images: int,
    k: int,
    device: torch.device = torch.device("cpu"),
    max_cells: int = 1 << 24,
) -> ImageHits:
    """Exact max-aggregated image ranking; `vectors` may be float16 (widened per block).

    Blocks are sized so that the per-image state of a query block, and the similarities of
    one query block x region block, each hold at most `max_cells` values."""
    k = min(k, n_images)
    query_block = max(1, min(len(queries), max_cells // max(n_images, 1)))
    region_block = max(1, max_cells // query_block)
    owners = torch.from_numpy(region_image).to(device)
    out = [], [], []
    for start in range(0, len(queries), query_block):
        q = torch.from_numpy(np.ascontiguousarray(queries[start : start + query_block], dtype=np.float32)).to(device)
        best = torch.full((len(q), n_images), -torch.inf, device=device)
        region = torch.full((len(q), n_images), -1, dtype=torch.int64, device=device)
        for r0 in range(0, len(vectors), region_block):
            chunk = torch.from_numpy(np.ascontiguousarray(vectors[r0 : r0 + region_block])).to(device).float()
            scores = q @ chunk.T
            owner = owners[r0 : r0 + len(chunk)].expand(len(q), -1)
            chunk_best = torch.full_like(best, -torch.inf).scatter_reduce_(1, owner, scores, "amax")
            ids = torch.arange(r0, r0 + len(chunk), device=device).expand(len(q), -1)
            is_best = scores == chunk_best.gather(1, owner)
            first = torch.where(is_best, ids, torch.iinfo(torch.int64).max)
            chunk_region = torch.full_like(region, torch.iinfo(torch.int64).max).scatter_reduce_(1, owner, first, "amin")
            better = chunk_best > best  # strict: an earlier (lower-index) region keeps a tie
            best = torch.where(better, chunk_best, best)
            region = torch.where(better, chunk_region, region)
        for part, values in zip(out, _top_images(best, region, k)):
            part.append(values)
    return ImageHits(*(np.concatenate(part) for part in out))


def build_region_index(
    vectors: np.ndarray,
    factory: str,
    search_params: Mapping[str, float] | None = None,
    use_gpu: bool | None = None,
    add_block: int = 100_000,
) -> faiss.Index:
    """A FAISS index over region vectors (float16 allowed), trained on (and first filled
    with) one block, then filled block by block, so one float32 block exists at a time."""
    index = build_index(np.asarray(vectors[:add_block], dtype=np.float32), factory=factory, use_gpu=use_gpu, search_params=search_params)
    for start in range(add_block, len(vectors), add_block):
        index.add(np.asarray(vectors[start : start + add_block], dtype=np.float32))
    return index


def approximate_search(
    index: faiss.Index,
    queries: np.ndarray,
    region_image: np.ndarray,
    k: int,
    k_regions: int,
    block_size: int = 4096,
) -> ImageHits:
    """Top `k_regions` regions per query from `index`, grouped into at most `k` images."""
    scores, ids = search(index, np.asarray(queries, dtype=np.float32), min(k_regions, index.ntotal), block_size)
    return group_by_image(scores, ids, region_image, k)


def group_by_image(scores: np.ndarray, ids: np.ndarray, region_image: np.ndarray, k: int) -> ImageHits:
    """Rows of (region score, region id), best first -> each image once, at its best region."""
    out = (np.full((len(ids), k), -np.inf, np.float32), np.full((len(ids), k), -1), np.full((len(ids), k), -1))
    for row, (row_scores, row_ids) in enumerate(zip(scores, ids)):
        found = row_ids >= 0
        images = region_image[row_ids[found]]
        _, first = np.unique(images, return_index=True)
        first = np.sort(first)[:k]
        out[0][row, : len(first)] = row_scores[found][first]
        out[1][row, : len(first)] = images[first]
        out[2][row, : len(first)] = row_ids[found][first]
    return ImageHits(*out)
