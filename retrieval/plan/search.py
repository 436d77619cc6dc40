"""The search of a run: which index, how deep, how rows make an image's score, within what
memory; and the calls into `retrieval.search` that carry it out."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from retrieval.features import Features
from retrieval.search.approximate import measured
from retrieval.search.composed import composed_search
from retrieval.search.images import ImageHits
from retrieval.search.rank import rank_images
from retrieval.search.votes import segment_votes
from retrieval.sizes import parse_size

EXACT = "Flat"
"""The factory `retrieval.search.rank` searches exactly, blockwise (what evaluation numbers come from)."""


@dataclass(frozen=True)
class SearchSpec:
    """The `index` group, the ranking depth and the `search` group's bounds, read."""

    factory: str
    params: dict[str, float]
    """Search parameters of an approximate index (nprobe, efSearch)."""
    use_gpu: bool | None
    k: int
    """Images kept per query: `dataset.k`, at most the gallery."""
    aggregate: str | None
    """How an image's rows make its score (`regions.aggregate`, or the representation's
    `image_scores` when not "max"); None: one row per image."""
    k_regions: int | None
    """Approximate indexes: rows fetched per query (None: a multiple of the depth)."""
    block_size: int
    """Queries per faiss call."""
    memory_budget: int | None
    """Bytes exact search may hold (the gallery then stays in its shards); None: unbounded."""
    rescore: int | None
    """Approximate indexes: rows fetched per query and re-scored exactly (None: no re-scoring)."""
    approximate: measured.Options
    """How an approximate index is trained, tuned and measured."""
    device: torch.device

    @classmethod
    def of(cls, index: Mapping[str, Any], search: Mapping[str, Any], k: int, aggregate: str | None,
           k_regions: int | None, device: torch.device) -> "SearchSpec":
        budget = search.get("memory_budget")
        return cls(
            factory=index["factory"],
            params=dict(index.get("search_params") or {}),
            use_gpu=index.get("gpu"),
            k=k,
            aggregate=aggregate,
            k_regions=k_regions,
            block_size=int(search["block_size"]),
            memory_budget=None if budget is None else parse_size(budget),
            rescore=index.get("rescore"),
            approximate=measured.Options.of(index),
            device=device,
        )

    @property
    def exact(self) -> bool:
        return self.factory == EXACT

    def whole_image(self) -> "SearchSpec":
        """The same search, exact over one row per image: the reference a region-level run is
        reported against (an approximate index trained for many region rows may not even fit
        one row per image)."""
        return dataclasses.replace(self, factory=EXACT, params={}, use_gpu=None, aggregate=None,
                                   k_regions=None, rescore=None, approximate=measured.Options())

    def settings(self) -> dict[str, Any]:
        """What of the search determines a ranking (its cache key, beside the stores')."""
        index = {"factory": self.factory, "search_params": self.params, "gpu": self.use_gpu}
        if not self.exact:
            index.update(rescore=self.rescore, **dataclasses.asdict(self.approximate))
        return {"index": index, "k": self.k, "aggregate": self.aggregate, "k_regions": self.k_regions}

    def rank(self, queries: np.ndarray, gallery: Features, index: faiss.Index | None = None) -> ImageHits:
        """The top images of the gallery for the query vectors (through `index`, from
        `approximate_index`, when given)."""
        return rank_images(
            queries, gallery, self.k, self.factory, device=self.device, search_params=self.params, use_gpu=self.use_gpu,
            k_regions=self.k_regions, block_size=self.block_size, index=index, memory_budget=self.memory_budget,
            rescore_rows=self.rescore,
        )

    def vote(self, queries: Features, gallery: Features) -> ImageHits:
        """The top images for queries described by several rows each, by the votes of their
        rows' nearest gallery rows (`aggregate` = SEGMENT_VOTES; always exact)."""
        return segment_votes(queries, gallery, self.k, self.device)

    def approximate_index(self, cache: Path, gallery_identity: Mapping[str, Any], queries: Features,
                          gallery: Features) -> tuple[faiss.Index, dict[str, Any]]:
        """The approximate index of the gallery (saved under `<cache>/indexes/`, built on first
        use), ready to search for `queries`, and the report of its measured recall."""
        return measured.approximate_index(
            cache, gallery_identity, queries, gallery, self.factory, self.k, k_regions=self.k_regions,
            rescore_rows=self.rescore, search_params=self.params, options=self.approximate, use_gpu=self.use_gpu,
            device=self.device,
        )

    def composed(self, images: np.ndarray, texts: np.ndarray, gallery: Features, method: str, weight: float) -> ImageHits:
        """The top images for composed queries (image and text vectors), their similarities
        combined by `method` at `weight`; always exact (`retrieval.search.composed`)."""
        return composed_search(images, texts, gallery.vectors, gallery.row_image, len(gallery.keys), self.k,
                               method, weight, device=self.device)
