"""Local features as an artifact: extracted once per frame and setting, one file per frame in
`<cache>/local_features/<settings key>/<2 hex>/<hash of frame key>.npz`, written atomically, so
a re-run with another depth, model or threshold re-extracts nothing, and an interrupted run
keeps every frame it finished. A frame that cannot be extracted (unreadable, too small) is
stored as its reason, so it is not retried until its file changes (its key changes then)."""
from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from retrieval import artifacts
from retrieval.errors import brief, unreadable
from retrieval.features.store import UNREADABLE
from retrieval.images import DEFAULT_MAX_PIXELS
from retrieval.local_features import Extractor, LocalFeatures
from retrieval.local_features.frames import Frame, FrameError, Prepared, prepare

log = logging.getLogger(__name__)


class FeatureCache:
    def __init__(self, root: Path, extractor: Extractor, resize: int, batch_size: int = 8,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.extractor, self.resize, self.batch_size, self.max_pixels = extractor, resize, batch_size, max_pixels
        settings = {**extractor.settings(), "resize": resize}
        self.folder = artifacts.artifact_dir(Path(root), "local_features", settings)
        self.extracted = 0
        """Frames extracted by this object (the rest were read from the cache)."""

    def path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.folder / digest[:2] / f"{digest}.npz"

    def ensure(self, frames: Iterable[Frame]) -> None:
        """Extract the frames not in the cache yet, `batch_size` at a time."""
        unique = {frame.key: frame for frame in frames}
        missing = [frame for key, frame in unique.items() if not self.path(key).exists()]
        if missing:
            artifacts.writable(self.folder)
        for start in range(0, len(missing), self.batch_size):
            self._extract(missing[start : start + self.batch_size])
        log.info("local features: %d frames extracted, %d cached in %s", len(missing), len(unique) - len(missing), self.folder)

    def _extract(self, frames: list[Frame]) -> None:
        by_shape: defaultdict[tuple[int, ...], list[tuple[Frame, Prepared]]] = defaultdict(list)
        for frame in frames:
            try:
                prepared = prepare(frame, self.resize, self.extractor.min_side, self.max_pixels)
            except FrameError as error:
                log.warning("local features: %s (%s)", error, error.reason)
                self._write(frame.key, reason=np.array(error.reason))
                continue
            by_shape[prepared.pixels.shape].append((frame, prepared))
        for group in by_shape.values():  # one batch per frame size: a batch is one tensor
            outputs = self.extractor.extract([prepared.pixels for _, prepared in group])
            for (frame, prepared), (keypoints, descriptors) in zip(group, outputs):
                features = prepared.features(keypoints, descriptors)
                self._write(frame.key, keypoints=features.keypoints.astype(np.float32),
                            descriptors=features.descriptors.astype(np.float16), frame_size=np.array(features.frame_size),
                            to_image=features.to_image, image_size=np.array(features.image_size))
                self.extracted += 1

    def _write(self, key: str, **arrays: np.ndarray) -> None:
        with artifacts.atomic_path(self.path(key)) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, key=np.array(key), **arrays)

    def load(self, key: str) -> LocalFeatures | str:
        """The features of an `ensure`d frame, or the reason it has none ("unreadable", "too_small");
        a damaged file is an UnreadableFile naming it (deleting it has the frame extracted again)."""
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                if "reason" in data:
                    return str(data["reason"])
                return LocalFeatures(data["keypoints"], data["descriptors"].astype(np.float32),
                                     _pair(data["frame_size"]), data["to_image"], _pair(data["image_size"]))
        except UNREADABLE as error:
            raise unreadable(path, "local-feature cache file", brief(error),
                             "delete it and run again to extract it again") from error


def _pair(values: np.ndarray) -> tuple[int, int]:
    return int(values[0]), int(values[1])

