"""The `local` engine: every shard embedded in this process, on the configured device."""
from __future__ import annotations

from collections.abc import Callable

import torch

from retrieval.features.engines import ENGINES
from retrieval.features.extract import Embedding, embed_shard
from retrieval.features.keys import Item
from retrieval.features.store import Store


@ENGINES.register("local")
def local(store: Store, items: dict[str, Item], shard_size: int, embedding: Embedding, device: torch.device,
          progress: Callable[[int], object]) -> int:
    """This process, one shard after another (its DataLoader workers decode the images)."""
    return store.build(list(items), shard_size, lambda keys: embed_shard([items[key] for key in keys], embedding, device, progress))
