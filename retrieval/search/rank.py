"""The search a run asks for, by its index factory: the top k gallery images of every query.

Exact (`Flat`, the default): queries x rows similarities block by block on the device (every
GPU torch sees, else the CPU), memory bounded by the block sizes or `search.memory_budget`,
over vectors in memory or left in their shards (`retrieval.search.exact`); ties go to the
lower image index. Approximate (any other faiss factory, on every GPU faiss sees): each
query's top `k_rows` rows from the index, grouped by image (`approximate.shortlist`). The
search stage passes the gallery's saved index, its knob tuned and its recall measured
(`approximate.measured`); without one, one is built here.
"""
from __future__ import annotations

from collections.abc import Mapping

import faiss
import numpy as np
import torch

from retrieval.features import Features
from retrieval.search.approximate.shortlist import approximate_search, rows_per_query
from retrieval.search.exact import exact_search
from retrieval.search.images import ImageHits
from retrieval.search.index import build_row_index


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
    memory_budget: int | None = None,
    rescore_rows: int | None = None,
) -> ImageHits:
    """The top `k` gallery images of every query (rows of `queries`), exactly (`Flat`, in
    blocks that `memory_budget` bytes hold) or through a FAISS index of `factory`: `index`
    when given (a saved one, its search parameters set), else one built here with
    `search_params`. Queries, like the gallery's rows, are unit vectors (or zero): an exact
    score that is not a cosine raises `retrieval.search.exact.OutOfRangeScores`."""
    n_images = len(gallery.keys)
    if factory == "Flat":
        return exact_search(queries, gallery.vectors, gallery.row_image, n_images, k, device, memory_budget, cosines=True)
    if index is None:
        index = build_row_index(gallery.vectors, factory, search_params, use_gpu)
    k = min(k, n_images)
    k_rows = rows_per_query(gallery.row_image, k, k_regions, rescore_rows)
    return approximate_search(index, queries, gallery.row_image, k, k_rows, block_size, gallery.vectors if rescore_rows else None)
