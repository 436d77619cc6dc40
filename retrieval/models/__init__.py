"""Backbones, resolved by family name; presets (architecture + weights) are data in conf/model/.

`create_model(family, **options)` returns an `Embedder`: a torch module that maps a batch of
normalised images to one descriptor each, and carries the `Preprocess` its weights expect,
so the transform always matches the weights (as in timm and open_clip).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from retrieval.models.base import Embedder, Preprocess

Builder = Callable[..., Embedder]
_FAMILIES: dict[str, Builder] = {}
_MODULES = ("effnet_lite", "openclip", "timm_models")


def register_family(name: str) -> Callable[[Builder], Builder]:
    def decorate(builder: Builder) -> Builder:
        _FAMILIES[name] = builder
        return builder

    return decorate


def _import_families() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")


def available() -> dict[str, str]:
    """Family name -> one-line description."""
    _import_families()
    return {name: (b.__doc__ or "").strip().splitlines()[0] for name, b in sorted(_FAMILIES.items())}


def create_model(family: str, **options: Any) -> Embedder:
    """Build a backbone of `family` (see `available()`), with its matching preprocessing."""
    _import_families()
    if family not in _FAMILIES:
        raise ValueError(f"Unknown model family {family!r}. Valid families: {', '.join(sorted(_FAMILIES))}.")
    return _FAMILIES[family](**options)


__all__ = ["Embedder", "Preprocess", "available", "create_model", "register_family"]
