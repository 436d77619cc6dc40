"""A model's dense feature map (B x C x h x w), for the representations that aggregate local
features (VLAD, SegVLAD, R-MAC): the map the model pools its own descriptor from, or, for
ViTs, the tokens of a chosen block and facet, as AnyLoc reads DINOv2 (its VLAD uses block 31
of ViT-G/14, facet "value").

`check_dense` says before any work whether a model can give what is asked; `dense_features`
computes it. Both raise `DenseFeatureError`, a one-line user error, for a model without a dense
map (the CLIP towers), a block or facet it does not have, and an image smaller than a patch.
"""
from __future__ import annotations

import torch

from retrieval.errors import UserError
from retrieval.models.base import Embedder

FACETS = ("token", "query", "key", "value")
"""What `block_map` can read of a block: its output tokens, or its attention's projections."""


class DenseFeatureError(UserError, ValueError):
    """A model that cannot give the dense features asked for, or an input too small for it."""


def check_dense(model: Embedder, layer: int | None = None, facet: str = "token") -> None:
    """Raise `DenseFeatureError` unless `dense_features(model, ..., layer, facet)` can run."""
    name = type(model).__name__
    if not model.dense:
        raise DenseFeatureError(
            f"{name} has no dense feature map to aggregate (its descriptor comes from its own head); "
            "use a timm or effnet_lite model"
        )
    if facet not in FACETS:
        raise DenseFeatureError(f"unknown facet {facet!r}: use one of {', '.join(FACETS)}")
    if layer is None:
        if facet != "token":
            raise DenseFeatureError(f"facet={facet} reads one block: give its layer too")
        return
    if not model.blocks:
        raise DenseFeatureError(f"{name} has no transformer blocks; layer={layer} needs a ViT (or leave layer unset)")
    if not 0 <= layer < model.blocks:
        raise DenseFeatureError(f"layer={layer} is not a block of this model: use 0 to {model.blocks - 1}")


def check_input_size(model: Embedder, height: int, width: int) -> None:
    """Raise `DenseFeatureError` if a ViT cannot cut `height` x `width` pixels into whole patches."""
    patch = model.patch_size
    if patch is None:
        return
    if min(height, width) < patch:
        raise DenseFeatureError(
            f"an input of {height}x{width} pixels is smaller than one {patch}-pixel patch of the model; "
            "drop such images or embed them at a larger input size"
        )
    if height % patch or width % patch:
        raise DenseFeatureError(
            f"an input of {height}x{width} pixels is not a whole number of {patch}-pixel patches; "
            f"resize it to a multiple of {patch}"
        )


def dense_features(model: Embedder, images: torch.Tensor, layer: int | None = None, facet: str = "token") -> torch.Tensor:
    """B x C x h x w features of normalised `images`: `model.feature_map` when `layer` is None
    (the last block's normed tokens for ViTs, the last convolution for CNNs), else block
    `layer`'s `facet` (see `FACETS`)."""
    check_dense(model, layer, facet)
    check_input_size(model, *images.shape[-2:])
    return model.feature_map(images) if layer is None else model.block_map(images, layer, facet)
