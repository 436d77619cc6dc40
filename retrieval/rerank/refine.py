"""Re-scoring and re-framing: each query's top_n images searched locally, around the first
pass's best regions, for the window whose crop, embedded exactly as the query was, matches it
best.

A cheap first pass (grid windows ROI-pooled, or whole images) finds the right images, but its
fixed windows rarely frame a small object, and an ROI vector also describes what surrounds its
window. For each (query, image) pair of the query's top_n, every pair of a query in one batch
per stage:

1. seeds: the image's `seeds` best first-pass regions for the query (by its rows' vectors; the
   whole image for a whole-image run), each cut out and embedded as a query is;
2. segment unions inside the best seed: the `segments` proposer's selective-search hierarchy on
   the seed's pixels, up to `unions` of them spread over sizes, each cut out with the rest of
   its box filled (as crop pooling cuts out segments) and embedded; a union competes by its box;
3. from the best window so far, `steps` rounds of a local search: the window shifted by `shift`
   x its side (four ways), scaled by each of `scales` and reshaped by each of `aspects` (area
   kept), each round's moves finer than the last (the factors to the power 1/2^round).

The image's score becomes the best crop's cosine with the query and its box the best window.
Its mask is the best-matching union whose box agrees with that window, cut to the window: the
segments of the object, chosen by their crops' similarity to the query, so mask metrics mean
something without SAM weights (none agrees: the box stands in for the mask). Re-scored entries
come first, by their new score; the others keep their order after them
(`retrieval.rerank.rescored`).

Cost: about seeds + unions + steps x (4 + len(scales) + len(aspects)) crops per pair, on the
query's top_n only: it grows with queries x top_n, never with the gallery. Crop vectors are kept
per (image key, window, mask) (`retrieval.rerank.crops`), so queries that share results share
work (seeds and their unions first of all); with `crop_cache` they stay on disk under
<cache>/crops/, keyed by what makes a vector (the queries' store's key: model, weights, preprocessing,
the queries' representation and any state it learnt, storage), for
reruns with other options.

Bad input, counted in the report and never fatal: an image unreadable now (its entries keep
their first-pass result, after the re-scored ones), a region thinner than `min_side` (grown
about its centre), a window past the border (clipped: never empty), top_n beyond a query's
ranking (what there is is refined), a query without a vector (its row is kept as it was).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

import numpy as np
from tqdm import tqdm

from retrieval import artifacts
from retrieval.config.rules import Rule
from retrieval.features import Features
from retrieval.features.keys import gallery_items
from retrieval.localisation import box_iou
from retrieval.masks import encode
from retrieval.ranking import Ranking
from retrieval.regions.proposals import IMAGE_SOURCE, Regions, boxes_only, full_mask
from retrieval.regions.segments import segments
from retrieval.regions.windows import Window, fit_window, is_small, neighbours
from retrieval.rerank import RerankInputs, Step, StepOutput, register
from retrieval.rerank.crops import CropVectors, GalleryImage, read_image
from retrieval.rerank.rescored import Reordered, Rescored

MIN_UNION_AREA = 0.05
"""Smallest segment union tried, as a fraction of the seed's pixels: smaller ones are parts."""
MASK_IOU = 0.5
"""A union is the mask of the final window when their boxes overlap by at least this IoU (the
bar a box must pass to count as found): they agree on where the object is."""


def _factors_problem(factors: Sequence[float]) -> str | None:
    """A factor of 1 moves nothing: what to use instead (None: fine)."""
    return "list factors other than 1, e.g. [0.7, 1.4]" if any(float(f) == 1 for f in factors) else None


Factors = Annotated[Sequence[float], Rule(above=0, test=_factors_problem)]
"""A round's scale or aspect factors (area times factor^2, or width times its square root)."""


@register("refine")
class Refine(Step):
    """Re-score and re-frame: the top_n results searched locally for the window whose crop, embedded as the query, matches best."""

    needs = ("query_vectors", "gallery", "dataset", "cache", "query_model")

    def __init__(
        self,
        top_n: Annotated[int, Rule(low=1)] = 10,
        seeds: Annotated[int, Rule(low=1)] = 2,
        steps: Annotated[int, Rule(low=0)] = 2,
        shift: Annotated[float, Rule(above=0)] = 0.25,
        scales: Factors = (0.7, 1.4),
        aspects: Factors = (0.7, 1.4),
        unions: Annotated[int, Rule(low=0)] = 8,
        min_side: Annotated[int, Rule(low=1)] = 16,
        crop_cache: bool = True,
        batch_size: Annotated[int, Rule(low=1)] = 32,
    ):
        self.top_n, self.seeds, self.steps, self.shift = int(top_n), int(seeds), int(steps), float(shift)
        self.scales, self.aspects = [float(f) for f in scales], [float(f) for f in aspects]
        self.unions, self.min_side = int(unions), int(min_side)
        self.crop_cache, self.batch_size = bool(crop_cache), int(batch_size)

    def settings(self) -> dict:
        """The options that decide the output; crop_cache and batch_size only decide how fast it comes."""
        return {key: value for key, value in vars(self).items() if key not in ("crop_cache", "batch_size")}

    def __call__(self, ranking: Ranking, inputs: RerankInputs) -> StepOutput:
        queries, gallery, dataset, embedder = inputs.query_vectors, inputs.gallery, inputs.dataset, inputs.query_model
        folder = artifacts.artifact_dir(inputs.cache, "crops", embedder.identity) if self.crop_cache else None
        crops = CropVectors(embedder, self.batch_size, folder, images_in_memory=2 * self.top_n + 16)
        depth = min(self.top_n, ranking.k)
        shown = np.unique(ranking.indices[:, :depth][ranking.indices[:, :depth] >= 0])
        keys = dict(zip(shown.tolist(), (item.key for item in gallery_items([dataset.gallery[g] for g in shown], dataset.root))))
        # a query's images; shared ones stay
        read = lru_cache(maxsize=2 * depth + 16)(lambda g: read_image(dataset.gallery[g].path, embedder.max_pixels))
        starts = np.searchsorted(gallery.row_image, np.arange(len(gallery.keys) + 1))
        counts: Counter[str] = Counter(top_n_beyond_ranking=int(((ranking.indices >= 0).sum(axis=1) < self.top_n).sum()))
        out = Reordered(ranking)
        for q, vector in enumerate(tqdm(queries, desc="refine", unit="query")):
            listed = [p for p in range(depth) if ranking.indices[q, p] >= 0]
            counts["pairs"] += len(listed)
            if not vector.any():  # skipped at extraction: nothing to compare crops with
                counts["queries_without_vector"] += 1
                continue
            searches = []
            for p in listed:
                g = int(ranking.indices[q, p])
                pixels = read(g)
                if isinstance(pixels, str):
                    counts["unreadable"] += 1
                    continue
                image = GalleryImage(keys[g], pixels)
                seeds = _seeds(vector, gallery, starts, g, self.seeds)
                counts["seeds_grown"] += sum(is_small(seed, self.min_side) for seed in seeds if seed is not None)
                searches.append(_Search(p, image, [fit_window(seed, image.size, self.min_side) for seed in seeds]))
            found = self._search(vector, searches, crops)
            counts["refined"] += len(found)
            counts["with_mask"] += sum(rescored.mask is not None for rescored in found.values())
            out.promote(q, found)
        crops.flush()
        counts["crop_cache_files_unreadable"] = crops.unreadable
        report = {"counts": dict(counts), "crops_embedded": crops.embedded, "crops_reused": crops.reused}
        if folder is not None:
            report["crop_cache"] = str(folder)
        return StepOutput(out.ranking(), report=report)

    def _search(self, vector: np.ndarray, searches: list[_Search], crops: CropVectors) -> dict[int, Rescored]:
        """Seeds, the segment unions inside the best seed, then the rounds of moves: every pair
        of the query in one batch per stage; each pair's best crop as its new entry."""
        for search, scores in zip(searches, _scores(vector, crops, [(s.image, _windows(s.seeds)) for s in searches])):
            search.offer(scores, search.seeds)
        if self.unions:
            unions = [segment_unions(s.image.pixels, s.window, self.unions, self.min_side) for s in searches]
            for search, regions, scores in zip(searches, unions, _scores(vector, crops, [
                    (s.image, r) for s, r in zip(searches, unions)])):
                search.offer_unions(scores, regions)
        for round_ in range(self.steps):
            step = 0.5**round_
            moved = [[fit_window(box, s.image.size, self.min_side)
                      for box in neighbours(s.window, step, self.shift, self.scales, self.aspects)] for s in searches]
            for search, windows, scores in zip(searches, moved, _scores(vector, crops, [
                    (s.image, _windows(w)) for s, w in zip(searches, moved)])):
                search.offer(scores, windows)
        return {s.position: s.result() for s in searches if np.isfinite(s.score)}


@dataclass(eq=False)
class _Search:
    """One (query, image) pair's search: the best window so far and its score, and the segment
    unions tried with their scores."""

    position: int
    image: GalleryImage
    seeds: list[Window]
    window: Window = (0, 0, 0, 0)
    score: float = -np.inf
    unions: Regions | None = None
    union_scores: np.ndarray | None = None

    def offer(self, scores: np.ndarray, windows: list[Window]) -> None:
        """Keep the best of `windows` if it beats the best so far (a NaN score never does)."""
        if len(scores) and np.nanmax(scores, initial=-np.inf) > self.score:
            best = int(np.nanargmax(scores))
            self.window, self.score = windows[best], float(scores[best])

    def offer_unions(self, scores: np.ndarray, regions: Regions) -> None:
        """Unions compete with the windows by their box (the search goes on from the best)."""
        self.unions, self.union_scores = regions, scores
        self.offer(scores, [tuple(int(v) for v in box) for box in regions.boxes])

    def mask(self) -> np.ndarray | None:
        """The best-matching union whose box agrees with the final window (IoU >= MASK_IOU),
        cut to the window: the object's pixels there (None: the box stands in)."""
        if self.unions is None or not len(self.unions):
            return None
        agree = box_iou(self.unions.boxes, np.array([self.window], dtype=np.float32))[:, 0] >= MASK_IOU
        scores = np.where(agree & np.isfinite(self.union_scores), self.union_scores, -np.inf)
        if not np.isfinite(scores).any():
            return None
        width, height = self.image.size
        x1, y1, x2, y2 = self.window
        mask = np.zeros((height, width), dtype=bool)
        mask[y1:y2, x1:x2] = full_mask(self.unions, int(np.argmax(scores)), (height, width))[y1:y2, x1:x2]
        return mask if mask.any() else None

    def result(self) -> Rescored:
        mask = self.mask()
        return Rescored(self.score, np.array(self.window, dtype=np.float32), None if mask is None else encode(mask))


def _seeds(vector: np.ndarray, gallery: Features, starts: np.ndarray, image: int, count: int) -> list[np.ndarray | None]:
    """The boxes of the image's `count` regions that best match the query. A region run's
    whole-image row is left out when the image has other regions: it is pooled as the model
    pools an image, unlike its regions, so it often outscores them, and says nothing of where
    the object is. None: no box (a whole-image run), the whole image."""
    lo, hi = int(starts[image]), int(starts[image + 1])
    if hi <= lo or gallery.boxes is None:
        return [None]
    rows = np.arange(lo, hi)
    if gallery.sources is not None and IMAGE_SOURCE in gallery.source_names:
        regions = rows[gallery.sources[lo:hi] != gallery.source_names.index(IMAGE_SOURCE)]
        rows = regions if len(regions) else rows
    scores = np.asarray(gallery.vectors[rows], dtype=np.float32) @ vector
    return [gallery.boxes[row] for row in rows[np.argsort(-scores, kind="stable")[:count]].tolist()]


def _windows(windows: list[Window]) -> Regions:
    return boxes_only(np.array(windows, dtype=np.float32).reshape(-1, 4), "window")


def _scores(vector: np.ndarray, crops: CropVectors, requests: list[tuple[GalleryImage, Regions]]) -> list[np.ndarray]:
    return [vectors @ vector for vectors in crops.vectors(requests)]


def segment_unions(image: np.ndarray, window: Window, limit: int, min_side: int) -> Regions:
    """Up to `limit` segment unions inside the window, spread over sizes (the `segments`
    proposer's hierarchy on the window's pixels), in image pixels; none thinner than `min_side`."""
    x1, y1, x2, y2 = window
    found = segments(np.ascontiguousarray(image[y1:y2, x1:x2]), min_area=MIN_UNION_AREA, max_area=1.0, max_regions=limit)
    keep = np.minimum(found.boxes[:, 2] - found.boxes[:, 0], found.boxes[:, 3] - found.boxes[:, 1]) >= min_side
    return Regions(found.boxes[keep] + np.array([x1, y1, x1, y1], dtype=np.float32),
                   [mask for mask, kept in zip(found.masks, keep) if kept], [s for s, kept in zip(found.sources, keep) if kept])
