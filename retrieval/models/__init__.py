"""Backbones, resolved by family name; presets (architecture + weights) are data in conf/model/.

`create_model(family, **options)` returns an `Embedder`: a torch module that maps a batch of
normalised images to one descriptor each, and carries the `Preprocess` its weights expect,
so the transform always matches the weights (as in timm and open_clip).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from retrieval.models.base import Embedder, Preprocess
from retrieval.registry import Registry

FAMILIES: Registry[Callable[..., Embedder]] = Registry(
    "model family", __name__, ("effnet_lite", "openclip", "timm_models")
)
register_family = FAMILIES.register
available = FAMILIES.available


def create_model(family: str, **options: Any) -> Embedder:
    """Build a backbone of `family` (see `available()`), with its matching preprocessing."""
    return FAMILIES.get(family)(**options)


__all__ = ["Embedder", "Preprocess", "available", "create_model", "register_family"]
