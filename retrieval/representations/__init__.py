"""Representations: what describes an image, resolved by name.

Every representation turns an image into rows of the one form (`retrieval.features`):
`global` gives one vector per image (or per query cut-out), `text` one per query's words;
`roi` and `crop` give the
regions of an image (the whole image first, then what the configured proposers found:
grid windows, segments, SAM masks), each with its box and mask, pooled from a few backbone
passes or embedded one crop at a time. A representation has two halves that the shared
extraction loop (`retrieval.features.extract`) drives:

- `worker_dataset(items, model)`: a torch Dataset whose items are dicts with `position`,
  `error` ("" when fine) and the uint8 pixels to embed, made in DataLoader workers;
- `embed(model, prepared, device, precision, batch_size)`: one `Rows` per prepared item.

`settings()` is exactly what determines the rows besides the model and the storage dtype:
the key of the feature store they live in.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from retrieval.features.keys import Item
from retrieval.models.base import Embedder
from retrieval.registry import Registry


@dataclass
class Rows:
    """One item's rows, as a representation's device half returns them."""

    vectors: torch.Tensor | np.ndarray
    boxes: np.ndarray | None = None
    sources: np.ndarray | None = None
    masks: list[str] | None = None


class Representation:
    """Base of every representation (see the module docstring)."""

    localises: bool = False
    """Whether rows carry boxes (and masks): rankings then say where the object is."""
    main_process: bool = False
    """Whether preparation must run in the main process (a proposer holding a CUDA model)."""
    embeds_words: bool = False
    """Whether items are texts for the model's text tower (whose store the image preprocessing
    does not key)."""
    source_names: list[str] = []
    options: tuple[str, ...] = ()
    """Names of the `regions` config keys the constructor takes besides proposals and max_pixels."""

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def worker_dataset(self, items: Sequence[Item], model: Embedder) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def images_per_batch(self, batch_size: int) -> int:
        return batch_size

    def plan(self, items: Sequence[Item]) -> str | None:
        """What embedding each of `items` will take, said before it starts where that is more
        than one pass per item (None: nothing to say)."""
        return None

    def embed(self, model: Embedder, prepared: list[dict], device: torch.device, precision: str, batch_size: int) -> list[Rows]:
        raise NotImplementedError


REPRESENTATIONS: Registry[Callable[..., Representation]] = Registry("representation", __name__, ("whole", "regions", "text"))
register = REPRESENTATIONS.register
available = REPRESENTATIONS.available


def create_representation(name: str, **options: Any) -> Representation:
    """The representation registered as `name`, with its options."""
    return REPRESENTATIONS.get(name)(**options)
