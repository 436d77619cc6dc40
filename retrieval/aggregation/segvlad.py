"""SegVLAD (Garg et al., "Revisit Anything", ECCV 2024; AnyLoc/Revisit-Anything): an image is
described by its supersegments, each VLAD-encoded over the patch features it covers, and a
database image is scored by how many of the query's segments find its segments, and how well.

Encoding (`seg_vlad_gpu_single`, `vlad_matmuls_per_cluster`): the map's descriptors are
L2-normalised and assigned once; each supersegment's VLAD sums the residuals of the patches it
covers (see `retrieval.aggregation.vlad`), then PCA-whitening and L2 (`place_rec_pca.py`:
sklearn PCA, whiten=True, 1024 dimensions, fitted on up to 50,000 database segments).

Scoring (`get_matches`, method "max_seg_topk_wt_borda_Im", the one `place_rec_main.py` reports):
every query segment retrieves its nearest database segments (the reference keeps the first 50
of 200); their similarities are min-max normalised, and an image's score is the sum of the
normalised similarities of all retrieved segments that belong to it (a weighted Borda count
over the query's segments). Images are ranked by that score.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from retrieval.aggregation.dense import check_map, local_descriptors
from retrieval.aggregation.supersegments import Supersegments, supersegments
from retrieval.aggregation.vlad import Vocabulary, vlad
from retrieval.aggregation.whitening import Whitening, whiten

TOP_SEGMENTS = 50
"""Retrieved database segments per query segment that vote (the reference's 50)."""


@dataclass(frozen=True)
class SegmentVectors:
    """One image's supersegment descriptors."""

    vectors: torch.Tensor
    """(n, dim) float32, L2-normalised: row s describes supersegment s."""
    supersegments: Supersegments


def segvlad(
    feature_map: torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    vocabulary: Vocabulary,
    order: int = 3,
    graph: str = "delaunay",
    whitening: Whitening | None = None,
) -> SegmentVectors:
    """SegVLAD vectors of the supersegments of (n, H, W) bool `masks` of an image whose
    features are the C x h x w `feature_map` (the masks and the map cover the same image)."""
    grid = check_map(feature_map)
    grown = supersegments(masks, grid, order, graph)
    vectors = vlad(local_descriptors(feature_map), vocabulary, grown.cover.to(feature_map.device))
    return SegmentVectors(vectors=vectors if whitening is None else whiten(vectors, whitening), supersegments=grown)


@dataclass(frozen=True)
class ImageScores:
    """A query's database images, best first, each with the segment pair that matched best."""

    images: np.ndarray
    """(m,) int64 database image ids."""
    scores: np.ndarray
    """(m,) float64, decreasing."""
    best_segment: np.ndarray
    """(m,) int64: the database segment (row of the database's segment table) of that image
    most similar to any query segment: its mask and box say where the match is."""
    best_query_segment: np.ndarray
    """(m,) int64: the query segment that database segment was retrieved for."""


def score_images(
    similarities: np.ndarray,
    neighbours: np.ndarray,
    segment_images: np.ndarray,
    top: int = TOP_SEGMENTS,
    value_range: tuple[float, float] | None = None,
) -> ImageScores:
    """Score database images for one query from its segments' nearest database segments.

    `similarities` and `neighbours` are (q, k): for each of the query's q segments, its k
    nearest database segments (rows of the segment table, best first; -1 = none) and their
    similarities; `segment_images` gives each database segment's image. The first `top` of
    each row vote. Similarities are min-max normalised over `value_range`; the reference
    takes the range over all queries' retrieved similarities at once, the default here is
    this query's own, so a query's ranking does not depend on the others."""
    similarities, neighbours = similarities[:, :top], neighbours[:, :top]
    valid = neighbours >= 0
    values = similarities[valid].astype(np.float64)
    segments = neighbours[valid].astype(np.int64)
    query_segments = np.nonzero(valid)[0]
    if not len(values):
        empty = np.zeros(0, dtype=np.int64)
        return ImageScores(images=empty, scores=np.zeros(0), best_segment=empty, best_query_segment=empty)
    low, high = value_range if value_range is not None else (values.min(), values.max())
    weights = (values - low) / (high - low) if high > low else np.ones_like(values)
    images, slots = np.unique(segment_images[segments], return_inverse=True)
    scores = np.bincount(slots, weights=weights, minlength=len(images))
    by_similarity = np.argsort(-values, kind="stable")
    _, first = np.unique(slots[by_similarity], return_index=True)
    best = by_similarity[first]
    order = np.lexsort((images, -scores))
    return ImageScores(
        images=images[order].astype(np.int64),
        scores=scores[order],
        best_segment=segments[best][order],
        best_query_segment=query_segments[best][order],
    )
