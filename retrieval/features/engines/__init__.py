"""Extraction engines: who builds a store's missing shards, resolved by `extract.engine`.

An engine is `engine(store, items, shard_size, embedding, device, progress, **options) -> int`
(the items embedded). It plans the shards with the store (`Store.plan`, so every engine names
the same shards for the same items) and has each built by `Store.build_shard`, with
`retrieval.features.extract.embed_shard`, wherever it runs them: the lock, the atomic write
and the skipping of finished shards are the store's, so the bytes of a store do not depend
on the engine, and the engine is no part of the store's key. Its options are the
`extract.<engine>` config node.

    local  this process, one shard after another
    ray    each shard a Ray task (pip install -e '.[ray]')
"""
from __future__ import annotations

from collections.abc import Callable

from retrieval.registry import Registry

Engine = Callable[..., int]

ENGINES: Registry[Engine] = Registry("extraction engine", __name__, ("local", "ray_tasks"))
