"""SIFT (Lowe, IJCV 2004) from OpenCV and RootSIFT (Arandjelovic & Zisserman, CVPR 2012),
matched by mutual nearest neighbours with the ratio test: the weight-free local features."""
from __future__ import annotations

import cv2
import numpy as np

from retrieval.device import resolve_device
from retrieval.local_features import Extractor, LocalFeatures, register
from retrieval.local_features.matching import mutual_ratio_matches


@register("sift")
class Sift(Extractor):
    """SIFT keypoints and descriptors (OpenCV), mutual nearest neighbours + ratio test."""

    default_threshold = 0.8
    """Lowe's ratio: the nearest neighbour must be closer than 0.8 x the second nearest."""

    def __init__(self, max_keypoints: int = 2048, match_threshold: float | None = None):
        self.max_keypoints = int(max_keypoints)
        self.ratio = self.default_threshold if match_threshold is None else float(match_threshold)
        self._device = resolve_device("auto")

    def extract(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        sift = cv2.SIFT_create(nfeatures=self.max_keypoints)
        out = []
        for frame in frames:  # OpenCV's SIFT runs on the CPU, one image at a time
            keypoints, descriptors = sift.detectAndCompute(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), None)
            points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
            descriptors = np.zeros((0, 128), np.float32) if descriptors is None else descriptors.astype(np.float32)
            out.append((points, self.describe(descriptors)))
        return out

    def describe(self, descriptors: np.ndarray) -> np.ndarray:
        return descriptors

    def match(self, a: LocalFeatures, b: LocalFeatures) -> np.ndarray:
        return mutual_ratio_matches(a.descriptors, b.descriptors, self.ratio, self._device)


@register("rootsift")
class RootSift(Sift):
    """RootSIFT: SIFT L1-normalised and square-rooted, so Euclidean distance compares as the Hellinger kernel."""

    def describe(self, descriptors: np.ndarray) -> np.ndarray:
        return rootsift(descriptors)


def rootsift(descriptors: np.ndarray) -> np.ndarray:
    """sqrt(d / |d|_1), row by row (a zero row stays zero)."""
    total = np.abs(descriptors).sum(axis=1, keepdims=True)
    return np.sqrt(np.divide(descriptors, total, out=np.zeros_like(descriptors), where=total > 0))
