"""Backbones, resolved by family name; presets (architecture + weights) are data in conf/model/.

`create_model(family, **options)` returns an `Embedder`: a torch module that maps a batch of
normalised images to one descriptor each, and carries the `Preprocess` its weights expect,
so the transform always matches the weights (as in timm and open_clip).
`resolve_preprocess(family, **options)` gives that same `Preprocess` from the configurations
alone, without building the network or loading weights.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from retrieval.models.base import Embedder, Preprocess
from retrieval.registry import Registry

Constructor = Callable[..., Embedder]

FAMILIES: Registry[Constructor] = Registry(
    "model family", __name__, ("effnet_lite", "openclip", "timm_models")
)
PREPROCESSING: dict[str, Callable[..., Preprocess]] = {}
"""Family name -> its preprocessing resolver, which takes some of the constructor's options
(by the same names, without defaults) and is what the constructor itself calls."""
available = FAMILIES.available


def register_family(name: str, preprocess: Callable[..., Preprocess]) -> Callable[[Constructor], Constructor]:
    """Register a family's constructor under `name`, with the resolver of its preprocessing."""

    def decorate(constructor: Constructor) -> Constructor:
        PREPROCESSING[name] = preprocess
        return FAMILIES.register(name)(constructor)

    return decorate


def create_model(family: str, **options: Any) -> Embedder:
    """Build a backbone of `family` (see `available()`), with its matching preprocessing."""
    return FAMILIES.get(family)(**options)


def resolve_preprocess(family: str, **options: Any) -> Preprocess:
    """The `preprocess` that `create_model(family, **options)` gives its model, from the weights'
    configuration only: options are checked and defaulted as the constructor does, then the
    family's resolver gets the ones it names."""
    bound = inspect.signature(FAMILIES.get(family)).bind(**options)
    bound.apply_defaults()
    resolver = PREPROCESSING[family]
    wanted = inspect.signature(resolver).parameters
    return resolver(**{name: value for name, value in bound.arguments.items() if name in wanted})


__all__ = ["Embedder", "Preprocess", "available", "create_model", "register_family", "resolve_preprocess"]
