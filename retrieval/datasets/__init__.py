"""Dataset adapters, one per on-disk format, resolved by name.

Each adapter is a function `load(**settings) -> Dataset` registered with `@register("name")`;
its docstring's first line describes it in error messages and `python -m retrieval.datasets list`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from retrieval.records import Dataset
from retrieval.registry import Registry

LOADERS: Registry[Callable[..., Dataset]] = Registry("dataset format", __name__, modules=None)
register = LOADERS.register
available = LOADERS.available


def load_dataset(format: str, **settings: Any) -> Dataset:
    """Load a dataset with the adapter registered as `format`."""
    return LOADERS.get(format)(**settings)
