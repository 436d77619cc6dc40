"""The one extraction loop: items in, a store's missing shards out.

CPU workers (a DataLoader) decode each image and prepare what the representation embeds
(a query's cut-out, a resized image, region crops or an image pyramid); uint8 tensors go to
the device (pinned, non-blocking) and are normalised and embedded there, under autocast and
`inference_mode`. What happens per item is the representation's; the batching, shards,
progress and skips are this module's, for every representation alike. A bad image or
query is a counted, logged skip of that item, never a crash.

Which process or machine embeds each shard is the engine's (`retrieval.features.engines`:
this process, or Ray tasks); the shards, and their bytes, are the same whoever builds them.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from retrieval.features.engines import ENGINES
from retrieval.features.keys import Item
from retrieval.features.progress import FirstBatchEstimate
from retrieval.features.store import ShardRows, Store
from retrieval.models.base import Embedder
from retrieval.representations import Representation, Rows

log = logging.getLogger(__name__)
STORAGE = {"float32": np.float32, "float16": np.float16}
"""extract.dtype -> how vectors are stored (float16 halves the stores; search widens blocks)."""
NON_FINITE = "the model gave it non-finite values (NaN or inf)"


def _as_list(batch: list) -> list:
    return batch


def prepared_batches(representation: Representation, items: Sequence[Item], model: Embedder, batch_size: int,
                     workers: int, device: torch.device) -> torch.utils.data.DataLoader:
    """Batches (lists) of `items` as the representation's worker half prepares them, in
    DataLoader workers (in this process for a representation that must prepare here)."""
    workers = 0 if representation.main_process else workers
    return torch.utils.data.DataLoader(
        representation.worker_dataset(items, model),
        batch_size=representation.images_per_batch(batch_size),
        collate_fn=_as_list,
        num_workers=min(workers, len(items)),
        pin_memory=device.type == "cuda",
    )


@dataclass(frozen=True)
class Embedding:
    """How the shards of one `fill_store` call are embedded: all of it but the device (which
    is where the shard is embedded) and the progress shown. Picklable, so that an engine can
    ship it, model weights included, to another process or machine."""

    representation: Representation
    model: Embedder
    precision: str
    batch_size: int
    workers: int
    storage: type
    threads: int
    """torch's intra-op threads: CPU vectors differ in the last bits with the thread count,
    so an engine computing elsewhere uses the same count to store the same bytes."""


@torch.inference_mode()
def embed_shard(items: Sequence[Item], embedding: Embedding, device: torch.device, progress: Callable[[int], object]) -> ShardRows:
    """Embed `items` (one shard) on `device` and return its rows, in item order;
    `progress(n)` is told of each batch of n items done."""
    started = time.perf_counter()
    representation = embedding.representation
    model = embedding.model.to(device).eval()
    loader = prepared_batches(representation, items, model, embedding.batch_size, embedding.workers, device)
    rows: list[Rows | None] = [None] * len(items)
    errors: dict[str, str] = {}
    for batch in loader:
        good = [prepared for prepared in batch if not prepared["error"]]
        for prepared in batch:
            if prepared["error"]:
                errors[items[prepared["position"]].key] = prepared["error"]
                log.warning("skipped %s: %s", items[prepared["position"]].path, prepared["error"])
        for prepared, made in zip(good, representation.embed(model, good, device, embedding.precision, embedding.batch_size)):
            if not bool(torch.isfinite(made.vectors).all()):  # a store holds unit vectors only: NaN there is corruption
                errors[items[prepared["position"]].key] = NON_FINITE
                log.warning("skipped %s: %s", items[prepared["position"]].path, NON_FINITE)
                continue
            made.vectors = torch.nn.functional.normalize(made.vectors.float(), dim=1).cpu().numpy().astype(embedding.storage)
            rows[prepared["position"]] = made
        progress(len(batch))
    done = [made for made in rows if made is not None]
    localises = representation.localises
    return ShardRows(
        items=[item.key for item in items],
        valid=np.array([made is not None for made in rows]),
        counts=np.array([0 if made is None else len(made.vectors) for made in rows], dtype=np.int64),
        vectors=np.concatenate([made.vectors for made in done]) if done else np.zeros((0, model.dim), embedding.storage),
        errors=errors,
        seconds=time.perf_counter() - started,
        boxes=np.concatenate([made.boxes for made in done] or [np.zeros((0, 4), np.float32)]) if localises else None,
        sources=np.concatenate([made.sources for made in done] or [np.zeros(0, np.int8)]) if localises else None,
        source_names=representation.source_names if localises else None,
        masks=[mask for made in done for mask in made.masks] if localises else None,
    )


def fill_store(
    store: Store,
    items: Sequence[Item],
    representation: Representation,
    model: Embedder,
    *,
    device: torch.device,
    precision: str,
    batch_size: int,
    workers: int,
    shard_size: int,
    dtype: str,
    desc: str,
    engine: str = "local",
    engine_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Extract the items `store` lacks, their shards built by `engine` (`ENGINES`, with its
    options); returns statistics of this call. The settings are the `extract` config group's
    (defaults in conf/config.yaml). What each item will take (the representation's plan: the
    regions per image) is logged before, and the time the rest will take after the first batch."""
    if dtype not in STORAGE:
        raise ValueError(f"dtype must be one of {sorted(STORAGE)}, not {dtype!r}")
    build = ENGINES.get(engine)
    by_key = {item.key: item for item in items}
    embedding = Embedding(representation, model, precision, batch_size, workers, STORAGE[dtype], torch.get_num_threads())
    pending = store.missing(list(by_key))
    plan = representation.plan([by_key[key] for key in pending]) if pending else None
    if plan:
        log.info("%s: %s", desc, plan)
    started = time.perf_counter()
    with logging_redirect_tqdm(), tqdm(total=len(pending), desc=desc, unit="img", disable=not pending) as bar:
        progress = FirstBatchEstimate(desc, len(pending), bar.update)
        embedded = build(store, by_key, shard_size, embedding, device, progress, **(engine_options or {})) if pending else 0
    seconds = time.perf_counter() - started
    return {"embedded": embedded, "seconds": round(seconds, 3),
            "images_per_s": round(embedded / seconds, 2) if embedded and seconds > 0 else None}
