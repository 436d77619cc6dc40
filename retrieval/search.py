"""Rank gallery images for query vectors, over rows of the one form (`retrieval.features`):
an image scores as its best row (max), so whole-image retrieval (one row per image) and
region-level retrieval (many) are the same search.

Exact (index `Flat`, the default): queries x rows similarities are computed block by block
on the device (a GPU when torch sees one) and reduced to a running per-image maximum and its
row, so memory is bounded by the block sizes however many rows there are, and every image
gets its exact score (any ranking depth); ties go to the lower image index. Approximate (any
other FAISS factory string, on every GPU faiss sees): the index returns the top `k_rows` rows
per query; an image's score is its best row among them, and images none of whose rows came
back are missing from the row (padding). The search stage passes the gallery's saved index,
its knob tuned and its recall measured (`retrieval.approximate`); without one, one is built.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import faiss
import numpy as np
import torch

from retrieval.features import Features
from retrieval.index import search, set_search_params, to_gpu, top_k_in_tie_order, trained_index, wants_gpu

AGGREGATIONS = ("max",)
ROWS_PER_IMAGE = 32
"""Approximate search fetches this many rows per ranked image unless `k_regions` is set."""


@dataclass
class ImageHits:
    """Per query, best first: gallery image, its score, and the row that gave it."""

    scores: np.ndarray
    images: np.ndarray
    rows: np.ndarray
    """-1 where `images` is padding."""


def _top_images(best: torch.Tensor, best_row: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top `k` images of each row of (b, n_images) scores; ties by lower image index; images
    without a row (score -inf) are padding."""

    def top_rows(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        scores, images = torch.topk(best[torch.from_numpy(rows).to(best.device)], depth, dim=1)
        scores, images = scores.cpu().numpy(), images.cpu().numpy()
        return scores, np.where(np.isfinite(scores), images, -1)

    n_images = best.shape[1]
    scores, images = top_k_in_tie_order(top_rows, np.arange(len(best)), k, min(n_images, k + 16), n_images)
    rows = np.take_along_axis(best_row.cpu().numpy(), np.clip(images, 0, None), 1)
    return scores, images, np.where(images >= 0, rows, -1)


def best_per_image(
    scores: torch.Tensor, owner: torch.Tensor, n_images: int, first_row: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(queries, rows) similarities of a block of rows whose images are `owner` -> per query and
    image, the best row's score (-inf for an image without rows in the block) and, unless
    `first_row` is None, that row's index (counted from `first_row`; the lower on a tie)."""
    owner = owner.expand(len(scores), -1)
    best = torch.full((len(scores), n_images), -torch.inf, device=scores.device).scatter_reduce_(1, owner, scores, "amax")
    if first_row is None:
        return best, None
    ids = torch.arange(first_row, first_row + scores.shape[1], device=scores.device).expand(len(scores), -1)
    first = torch.where(scores == best.gather(1, owner), ids, torch.iinfo(torch.int64).max)
    rows = torch.full(best.shape, torch.iinfo(torch.int64).max, dtype=torch.int64, device=scores.device)
    return best, rows.scatter_reduce_(1, owner, first, "amin")


def exact_search(
    queries: np.ndarray,
    vectors: np.ndarray,
    row_image: np.ndarray,
    n_images: int,
    k: int,
    device: torch.device = torch.device("cpu"),
    max_cells: int = 1 << 24,
) -> ImageHits:
    """Exact max-aggregated image ranking; `vectors` may be float16 (widened per block).

    Blocks are sized so that the per-image state of a query block, and the similarities of
    one query block x row block, each hold at most `max_cells` values. With one row per image
    the per-image maximum is the row's own score, and is written, not reduced."""
    k = min(k, n_images)
    query_block = max(1, min(len(queries), max_cells // max(n_images, 1)))
    row_block = max(1, max_cells // query_block)
    one_row_each = len(np.unique(row_image)) == len(row_image)
    owners = torch.from_numpy(np.asarray(row_image, dtype=np.int64)).to(device)
    out = [], [], []
    for start in range(0, len(queries), query_block):
        q = torch.from_numpy(np.ascontiguousarray(queries[start : start + query_block], dtype=np.float32)).to(device)
        best = torch.full((len(q), n_images), -torch.inf, device=device)
        best_row = torch.full((len(q), n_images), -1, dtype=torch.int64, device=device)
        for r0 in range(0, len(vectors), row_block):
            chunk = torch.from_numpy(np.ascontiguousarray(vectors[r0 : r0 + row_block])).to(device).float()
            scores = q @ chunk.T
            ids = torch.arange(r0, r0 + len(chunk), device=device)
            owner = owners[r0 : r0 + len(chunk)]
            if one_row_each:
                best[:, owner] = scores
                best_row[:, owner] = ids
                continue
            chunk_best, chunk_row = best_per_image(scores, owner, n_images, r0)
            better = chunk_best > best  # strict: an earlier (lower-index) row keeps a tie
            best = torch.where(better, chunk_best, best)
            best_row = torch.where(better, chunk_row, best_row)
        for part, values in zip(out, _top_images(best, best_row, k)):
            part.append(values)
    return ImageHits(*(np.concatenate(part) for part in out))


def build_row_index(
    vectors: np.ndarray,
    factory: str,
    search_params: Mapping[str, float] | None = None,
    use_gpu: bool | None = None,
    add_block: int = 100_000,
    train_size: int = 100_000,
    seed: int = 0,
) -> faiss.Index:
    """A FAISS index over row vectors (float16 or memory-mapped allowed), trained on a seeded
    sample of all rows, then filled block by block, so one float32 block exists at a time."""
    index = trained_index(vectors, factory, train_size, seed)
    if wants_gpu(use_gpu):
        index = to_gpu(index)
    for start in range(0, len(vectors), add_block):
        index.add(np.ascontiguousarray(vectors[start : start + add_block], dtype=np.float32))
    set_search_params(index, search_params or {})
    return index


def rows_per_query(row_image: np.ndarray, k: int, k_regions: int | None) -> int:
    """How many rows an approximate search fetches to rank `k` images: `k` when every image
    has one row, else `k_regions` or ROWS_PER_IMAGE per ranked image."""
    one_row_each = len(np.unique(row_image)) == len(row_image)
    return int(k_regions or (k if one_row_each else ROWS_PER_IMAGE * k))


def approximate_search(
    index: faiss.Index,
    queries: np.ndarray,
    row_image: np.ndarray,
    k: int,
    k_rows: int,
    block_size: int = 4096,
) -> ImageHits:
    """Top `k_rows` rows per query from `index`, grouped into at most `k` images."""
    scores, ids = search(index, np.asarray(queries, dtype=np.float32), min(k_rows, index.ntotal), block_size)
    return group_by_image(scores, ids, row_image, k)


def group_by_image(scores: np.ndarray, ids: np.ndarray, row_image: np.ndarray, k: int) -> ImageHits:
    """Per query, (row score, row id) best first -> each image once, at its best row."""
    out = (np.full((len(ids), k), -np.inf, np.float32), np.full((len(ids), k), -1), np.full((len(ids), k), -1))
    for row, (row_scores, row_ids) in enumerate(zip(scores, ids)):
        found = row_ids >= 0
        images = row_image[row_ids[found]]
        _, first = np.unique(images, return_index=True)
        first = np.sort(first)[:k]
        out[0][row, : len(first)] = row_scores[found][first]
        out[1][row, : len(first)] = images[first]
        out[2][row, : len(first)] = row_ids[found][first]
    return ImageHits(*out)


def rank_images(
    queries: np.ndarray,
    gallery: Features,
    k: int,
    factory: str,
    *,
    device: torch.device,
    search_params: Mapping[str, float] | None = None,
    use_gpu: bool | None = None,
    k_regions: int | None = None,
    block_size: int,
    index: faiss.Index | None = None,
) -> ImageHits:
    """The top `k` gallery images of every query (rows of `queries`), exactly (`Flat`) or
    through a FAISS index of `factory`: `index` when given (a saved one, its search
    parameters set), else one built here with `search_params`."""
    n_images = len(gallery.keys)
    if factory == "Flat":
        return exact_search(queries, gallery.vectors, gallery.row_image, n_images, k, device)
    if index is None:
        index = build_row_index(gallery.vectors, factory, search_params, use_gpu)
    k = min(k, n_images)
    return approximate_search(index, queries, gallery.row_image, k, rows_per_query(gallery.row_image, k, k_regions), block_size)
