"""Geometric verification (Philbin et al., CVPR 2007; as in DELG and hloc): the top results of
each query are re-scored by how many local-feature matches between the query's cut-out and
the gallery image one robust geometric model explains, and the model maps the query's box and
mask into the gallery image, so the ranking shows the object's projected outline.

Score: a verified entry (at least `min_inliers` inliers, and an outline that projects to a
convex region inside the image) scores its inlier count; verified entries come first, by
inliers, ties by their previous order. Every other entry keeps its previous score and order
after them (scores are then comparable within each part, the order across: search scores are
similarities of at most 1, far below any inlier count that passes the gate).

Local features: each gallery image's are extracted once, from the whole image resized to
`resize` on its longer side (enlarged when smaller: a small object keeps its keypoints), and
each query's from its cut-out resized to `query_resize`; both are cached per image and setting,
so another top_n, model, threshold or view re-extracts nothing. Gallery view: `image` matches
all of the image's keypoints; `region` only those inside the entry's box (the best region of a
region-level run) grown by `context` x its size on each side, so a cluttered background cannot
out-match a small object; entries without a box (a whole-image run) use the image either way.

`fundamental` verifies (inliers of the epipolar geometry of a 3-D object seen from another
view) but maps no point to a point: the entry's previous box and mask are kept.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

import numpy as np

from retrieval.config.rules import Rule
from retrieval.errors import UserError
from retrieval.features.keys import gallery_items
from retrieval.local_features import EXTRACTORS, Extractor, LocalFeatures, create_extractor
from retrieval.local_features.cache import FeatureCache
from retrieval.local_features.frames import Frame, grown_box, source_mask
from retrieval.local_features.geometry import (
    MIN_MATCHES, MODELS, FitFailure, clipped_box, fit, polygon_mask, project_corners, project_mask,
)
from retrieval.masks import encode
from retrieval.ranking import Ranking
from retrieval.rerank import QueryCutout, RerankInputs, Step, StepOutput, register
from retrieval.rerank.rescored import Reordered, Rescored

GALLERY_VIEWS = ("image", "region")


class VerifyOptionError(UserError, ValueError):
    """Options of rerank.verify that do not go together (or that no config check caught)."""


@register("verify")
class GeometricVerification(Step):
    """Geometric verification: the top_n results re-scored by the inliers of a robust fit of local-feature matches."""

    needs = ("dataset", "query_cutouts", "cache")

    def __init__(
        self,
        top_n: Annotated[int, Rule(low=1)] = 100,
        features: Annotated[str, Rule(choices=lambda: tuple(EXTRACTORS.available()))] = "sift",
        max_keypoints: Annotated[int, Rule(low=1)] = 2048,
        resize: Annotated[int, Rule(low=32)] = 1024,
        query_resize: Annotated[int, Rule(low=32)] = 512,
        model: Annotated[str, Rule(choices=lambda: MODELS)] = "homography",
        threshold: Annotated[float, Rule(above=0)] = 8.0,
        min_inliers: Annotated[int, Rule(low=3)] = 12,
        match_threshold: Annotated[float | None, Rule(above=0)] = None,
        gallery_view: Annotated[str, Rule(choices=lambda: GALLERY_VIEWS)] = "region",
        context: Annotated[float, Rule(low=0)] = 1.0,
        batch_size: Annotated[int, Rule(low=1)] = 8,
    ):
        if min_inliers < MIN_MATCHES[model]:
            raise VerifyOptionError(f"rerank.verify.min_inliers must be >= {MIN_MATCHES[model]} for model={model}, not {min_inliers}")
        self.top_n, self.features, self.max_keypoints = int(top_n), features, int(max_keypoints)
        self.resize, self.query_resize = int(resize), int(query_resize)
        self.model, self.threshold, self.min_inliers = model, float(threshold), int(min_inliers)
        self.match_threshold = None if match_threshold is None else float(match_threshold)
        self.gallery_view, self.context = gallery_view, float(context)
        self.batch_size = int(batch_size)

    def settings(self) -> dict:
        """The options that decide the output; batch_size only decides how fast it comes."""
        return {key: value for key, value in vars(self).items() if key != "batch_size"}

    def __call__(self, ranking: Ranking, inputs: RerankInputs) -> StepOutput:
        dataset, cutouts = inputs.dataset, inputs.query_cutouts
        extractor = create_extractor(self.features, max_keypoints=self.max_keypoints, match_threshold=self.match_threshold)
        query_cache = FeatureCache(inputs.cache, extractor, self.query_resize, self.batch_size)
        gallery_cache = FeatureCache(inputs.cache, extractor, self.resize, self.batch_size)
        depth = min(self.top_n, ranking.k)
        listed = [[p for p in range(depth) if ranking.indices[q, p] >= 0] for q in range(len(cutouts))]
        shown = np.unique([ranking.indices[q, p] for q, row in enumerate(listed) for p in row]).astype(np.int64)
        items = gallery_items([dataset.gallery[g] for g in shown], dataset.root)
        gallery_keys = dict(zip(shown.tolist(), (item.key for item in items)))
        query_cache.ensure(query_frame(c) for c in cutouts)
        gallery_cache.ensure(Frame(key, dataset.gallery[g].path) for g, key in gallery_keys.items())
        load_gallery = lru_cache(maxsize=2 * depth + 16)(gallery_cache.load)  # a query's images; shared ones stay

        counts: Counter[str] = Counter(top_n_beyond_ranking=int(((ranking.indices >= 0).sum(axis=1) < self.top_n).sum()))
        out = Reordered(ranking)
        for q, cutout in enumerate(cutouts):
            counts["pairs"] += len(listed[q])
            query = query_cache.load(cutout.key)
            if isinstance(query, str):
                counts[f"query_{query}"] += 1
                continue
            outline = _Outline.of(cutout, query.image_size)
            verified = {}
            for p in listed[q]:
                gallery = load_gallery(gallery_keys[int(ranking.indices[q, p])])
                if not isinstance(gallery, str) and self.gallery_view == "region" and ranking.boxes is not None:
                    region = grown_box(ranking.boxes[q, p], self.context)
                    gallery = gallery if region is None else gallery.within(region)
                verdict = self._verify(extractor, query, gallery, outline)
                if isinstance(verdict, str):
                    counts[verdict] += 1
                elif verdict.inliers >= self.min_inliers:
                    verified[p] = verdict
            counts["verified"] += len(verified)
            out.promote(q, {p: Rescored(verdict.inliers, verdict.box, verdict.mask) for p, verdict in verified.items()})
        counts["frames_extracted"] = query_cache.extracted + gallery_cache.extracted
        used = [query_cache.path(c.key) for c in cutouts] + [gallery_cache.path(key) for key in gallery_keys.values()]
        return StepOutput(out.ranking(), report={
            "counts": dict(counts), "local_features": sorted({str(query_cache.folder), str(gallery_cache.folder)}),
            "local_feature_bytes": sum(path.stat().st_size for path in used)})

    def _verify(self, extractor: Extractor, query: LocalFeatures, gallery: LocalFeatures | str, outline: _Outline
                ) -> _Verdict | str:
        """The fit's inliers and the outline it projects, or why there is none."""
        if isinstance(gallery, str):
            return gallery
        if min(len(query), len(gallery)) < MIN_MATCHES[self.model]:
            return "no_keypoints"
        pairs = extractor.match(query, gallery)
        try:
            # the query in image pixels (the outline's), the gallery in frame pixels (the threshold's)
            found = fit(self.model, query.image_points(pairs[:, 0]), gallery.keypoints[pairs[:, 1]], self.threshold)
        except FitFailure as failure:
            return failure.reason
        if not found.projects:
            return _Verdict(found.inliers)
        to_gallery = gallery.to_image @ found.matrix
        corners = project_corners(to_gallery, outline.box)
        box = None if corners is None else clipped_box(corners, gallery.image_size)
        if box is None:
            return "degenerate"
        size = gallery.image_size
        mask = project_mask(to_gallery, outline.mask, size) if outline.mask is not None else polygon_mask(corners, size)
        return _Verdict(found.inliers, box, encode(mask) if mask.any() else None)


def query_frame(cutout: QueryCutout) -> Frame:
    """What of a query image its features are extracted from: the cut-out's box in whole pixels
    (the image when it has none), keypoints kept on its mask."""
    return Frame(cutout.key, cutout.path, grown_box(cutout.box, 0.0), cutout.mask)


@dataclass(frozen=True)
class _Verdict:
    inliers: int
    box: np.ndarray | None = None
    """Projected outline's box; None: the model projects nothing (the entry keeps its own)."""
    mask: dict | None = None


@dataclass(frozen=True)
class _Outline:
    """What of the query image is projected: its cut-out's box (the whole image when it has
    none) and, for a mask cut-out, the mask."""

    box: tuple[float, float, float, float]
    mask: np.ndarray | None

    @classmethod
    def of(cls, cutout: QueryCutout, size: tuple[int, int]) -> _Outline:
        width, height = size
        box = tuple(float(v) for v in cutout.box) if cutout.box is not None else (0.0, 0.0, float(width), float(height))
        return cls(box, source_mask(cutout.mask, (height, width), cutout.path))
