"""Dataset adapters, one per on-disk format, resolved by name.

Each adapter is a function `load(**settings) -> Dataset` registered with `@register("name")`;
its docstring's first line describes it in error messages and `python -m retrieval.datasets list`.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from retrieval.records import Dataset

Loader = Callable[..., Dataset]
_LOADERS: dict[str, Loader] = {}
_MODULES = ("folder", "anns", "compose", "revisitop", "vpr", "gl3d")


def register(name: str) -> Callable[[Loader], Loader]:
    def decorate(loader: Loader) -> Loader:
        _LOADERS[name] = loader
        return loader

    return decorate


def _import_adapters() -> None:
    for module in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{module}":
                raise


def available() -> dict[str, str]:
    """Adapter name -> one-line description."""
    _import_adapters()
    return {
        name: (loader.__doc__ or "").strip().splitlines()[0] if loader.__doc__ else ""
        for name, loader in sorted(_LOADERS.items())
    }


def load_dataset(format: str, **settings: Any) -> Dataset:
    """Load a dataset with the adapter registered as `format`."""
    _import_adapters()
    if format not in _LOADERS:
        valid = ", ".join(sorted(_LOADERS))
        raise ValueError(f"Unknown dataset format {format!r}. Valid formats: {valid}.")
    return _LOADERS[format](**settings)
