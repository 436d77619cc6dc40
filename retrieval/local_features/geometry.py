"""Robust geometric models between matched points, and the projection of a query's outline
through them. Pure functions over numpy arrays; fits use OpenCV's USAC with MAGSAC++ scoring
(Barath et al., CVPR 2020), which needs no hand-set inlier threshold beyond an upper bound."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIN_MATCHES = {"homography": 4, "affine": 3, "fundamental": 8}
"""Model -> the smallest number of correspondences its minimal solver (plus a check) needs."""
MODELS = tuple(MIN_MATCHES)

COLLINEAR = 0.02
"""Smallest/largest singular value of the centred inlier positions below which they lie on a
line: a homography or affine map is then unconstrained across the line, whatever its score."""


class FitFailure(Exception):
    """No model: `reason` is "too_few_matches" or "degenerate" (the run counts each)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Fit:
    model: str
    matrix: np.ndarray
    """(3, 3) query-image -> gallery pixels (homography, affine); the fundamental matrix F with
    x_gallery^T F x_query = 0 for "fundamental", which maps no point to a point."""
    inliers: int

    @property
    def projects(self) -> bool:
        """Whether the model maps the query's outline to a region of the gallery image."""
        return self.model != "fundamental"


def fit(model: str, source: np.ndarray, target: np.ndarray, threshold: float) -> Fit:
    """The `model` best supported by source[i] -> target[i] ((M, 2) pixels each), fitted with
    USAC MAGSAC++ at reprojection threshold `threshold` (pixels of `target`). Raises FitFailure
    for too few correspondences, no model, a mirror image (a picture of an object never shows
    it mirrored) or inliers on a line."""
    if model not in MIN_MATCHES:
        raise ValueError(f"model must be one of {MODELS}, not {model!r}")
    if len(source) < MIN_MATCHES[model]:
        raise FitFailure("too_few_matches")
    source = np.ascontiguousarray(source, dtype=np.float64)
    target = np.ascontiguousarray(target, dtype=np.float64)
    if model == "homography":
        matrix, inliers = cv2.findHomography(source, target, cv2.USAC_MAGSAC, threshold, maxIters=10000, confidence=0.999)
    elif model == "affine":
        matrix, inliers = cv2.estimateAffine2D(source, target, method=cv2.USAC_MAGSAC, ransacReprojThreshold=threshold,
                                               maxIters=10000, confidence=0.999)
        matrix = None if matrix is None else np.vstack([matrix, [0.0, 0.0, 1.0]])
    else:
        matrix, inliers = cv2.findFundamentalMat(source, target, cv2.USAC_MAGSAC, threshold, 0.999, 10000)
        matrix = None if matrix is None or matrix.shape != (3, 3) else matrix
    if matrix is None or inliers is None or not np.isfinite(matrix).all():
        raise FitFailure("degenerate")
    inlier = inliers.ravel().astype(bool)
    if inlier.sum() < MIN_MATCHES[model] or _collinear(source[inlier]) or _collinear(target[inlier]):
        raise FitFailure("degenerate")
    if model != "fundamental" and np.linalg.det(matrix[:2, :2]) <= 0:
        raise FitFailure("degenerate")
    return Fit(model, matrix, int(inlier.sum()))


def _collinear(points: np.ndarray) -> bool:
    spread = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return bool(spread[0] == 0 or spread[-1] / spread[0] < COLLINEAR)


def project_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """(N, 2) points mapped by the 3x3 `matrix`; None when one maps to infinity or behind the
    camera (the outline would not be a bounded region)."""
    mapped = np.c_[np.asarray(points, dtype=np.float64), np.ones(len(points))] @ matrix.T
    if (mapped[:, 2] <= 1e-9).any():
        return None
    return mapped[:, :2] / mapped[:, 2:]


def project_corners(matrix: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
    """(4, 2) corners of the box mapped by `matrix`; None unless they bound a convex region (a
    homography that folds or flips the box maps no real view of a planar object)."""
    x1, y1, x2, y2 = box
    corners = project_points(matrix, np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]))
    if corners is None or not cv2.isContourConvex(corners.astype(np.float32)[:, None]):
        return None
    return corners


def clipped_box(corners: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """(x1, y1, x2, y2) float32 bounding the corners, clipped to an image of `size` (width,
    height); None when nothing of it is inside."""
    low = np.clip(corners.min(axis=0), 0, size)
    high = np.clip(corners.max(axis=0), 0, size)
    if (high <= low).any():
        return None
    return np.array([*low, *high], dtype=np.float32)


def polygon_mask(corners: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bool mask of an image of `size` (width, height) filled inside the convex polygon."""
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    cv2.fillConvexPoly(mask, np.round(corners * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def project_mask(matrix: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The bool query `mask` warped into an image of `size` (width, height); what falls outside
    is cut off."""
    warped = cv2.warpPerspective(mask.astype(np.uint8), matrix, size, flags=cv2.INTER_NEAREST, borderValue=0)
    return warped.astype(bool)
