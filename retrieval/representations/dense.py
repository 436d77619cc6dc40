"""What the representations over a model's dense feature map share (`vlad`, `segvlad`, `rmac`):
an image, or a query's cut-out, resized whole to a scene (aspect kept, a ViT's sides whole
patches), and the maps of a batch of scenes, one backbone pass per scene shape."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import torch
from PIL import Image

from retrieval.aggregation.dense import dense_maps
from retrieval.config.rules import Rule
from retrieval.features.keys import Item
from retrieval.images import ImageError, load_rgb
from retrieval.models.base import Embedder
from retrieval.models.dense import FACETS, check_dense
from retrieval.queries import QueryError, QueryFn
from retrieval.representations import Representation

Layer = Annotated[int | None, Rule(low=0)]
"""`representation.layer`: the ViT block whose tokens are read (None: the model's own map)."""
Facet = Annotated[str, Rule(choices=lambda: FACETS)]
"""`representation.facet`: which of that block's outputs (tokens, or its attention's query, key, value)."""


def scene_size(height: int, width: int, scale: float, patch: int | None) -> tuple[int, int]:
    """(height, width) of an image resized by `scale`; for a ViT (`patch` pixels a cell) each
    side rounded to a whole number of patches (a side that is less than one stays as it is:
    `DenseImages` skips such images)."""
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    if patch:
        size = [side if side < patch else round(side / patch) * patch for side in size]
    return size[0], size[1]


class DenseImages(torch.utils.data.Dataset):
    """Item -> {"position", "error", "key", "pixels": uint8 CHW scene, "size_hw": the image's
    (or cut-out's) own size}: the image resized to a longer side of `long_side`.

    A query's cut-out is resized by the factor of its own image when `scale_with_image`, so the
    object keeps the scale it has in a full image (R-MAC's queries are regions of full images);
    else it is resized whole like an image (AnyLoc's VLAD)."""

    def __init__(self, items: Sequence[Item], long_side: int, patch: int | None, max_pixels: int,
                 mode: QueryFn | None = None, mode_options: dict[str, Any] | None = None, keep_image: bool = False,
                 scale_with_image: bool = False):
        self.items = items
        self.long_side = long_side
        self.patch = patch
        self.max_pixels = max_pixels
        self.mode = mode
        self.mode_options = dict(mode_options or {})
        self.keep_image = keep_image
        """Also return the image itself (uint8 HWC), for what is computed on it (segments)."""
        self.scale_with_image = scale_with_image

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict[str, Any]:
        item = self.items[position]
        try:
            image = whole = load_rgb(item.path, max_pixels=self.max_pixels)
            if self.mode is not None:
                image = self.mode(image, item.instance, **self.mode_options)
        except (ImageError, QueryError) as error:
            return {"position": position, "error": str(error)}
        height, width = image.shape[:2]
        scale = self.long_side / max((whole if self.scale_with_image else image).shape[:2])
        scene_hw = scene_size(height, width, scale, self.patch)
        if min(scene_hw) < (self.patch or 1):
            return {"position": position, "error": (
                f"its {width}x{height} pixels resized by {scale:.3g} (a longer side of {self.long_side} for its image) are "
                f"{scene_hw[1]}x{scene_hw[0]}: thinner than one {self.patch}-pixel patch (representation.input_size)")}
        scene = np.asarray(Image.fromarray(image).resize((scene_hw[1], scene_hw[0]), Image.BICUBIC))
        prepared = {"position": position, "error": "", "key": item.key, "size_hw": (height, width),
                    "pixels": torch.from_numpy(np.ascontiguousarray(scene.transpose(2, 0, 1)))}
        if self.keep_image:
            prepared["image"] = image
        return prepared


class DenseRepresentation(Representation):
    """Base of the representations over dense local features: how an image becomes a map."""

    def __init__(self, max_pixels: int, layer: int | None, facet: str, input_size: int | None):
        self.max_pixels = int(max_pixels)
        self.layer = layer
        """The ViT block whose tokens are read (None: the model's own feature map)."""
        self.facet = facet
        self.input_size = input_size
        """Longer side the whole image is resized to (None: the model's input size)."""

    def dense_settings(self) -> dict[str, Any]:
        return {"max_pixels": self.max_pixels, "layer": self.layer, "facet": self.facet, "input_size": self.input_size}

    def dense_images(self, items: Sequence[Item], model: Embedder, **options: Any) -> DenseImages:
        """The items' pixels, once the model is known to give the features asked for (a
        one-line DenseFeatureError, before any image is embedded, if not)."""
        check_dense(model, self.layer, self.facet)
        return DenseImages(items, self.input_size or model.preprocess.input_size, model.patch_size, self.max_pixels, **options)

    def maps(self, model: Embedder, prepared: list[dict], device: torch.device, precision: str,
             batch_size: int) -> list[torch.Tensor]:
        """Each prepared image's C x h x w map, on `device`; images of one size share a backbone pass."""
        out: list[torch.Tensor | None] = [None] * len(prepared)
        shapes: dict[tuple[int, ...], list[int]] = {}
        for position, p in enumerate(prepared):
            shapes.setdefault(tuple(p["pixels"].shape), []).append(position)
        for members in shapes.values():
            for start in range(0, len(members), batch_size):
                chosen = members[start : start + batch_size]
                pixels = torch.stack([prepared[i]["pixels"] for i in chosen]).to(device, non_blocking=True)
                for position, feature_map in zip(chosen, dense_maps(model, pixels, self.layer, self.facet, precision)):
                    out[position] = feature_map
        return out  # type: ignore[return-value]
