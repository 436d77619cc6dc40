"""Stage 1: the vectors of a split's items, in its feature store.

    main(cfg, split) -> the store folder (split = "queries", "texts" or "gallery")

Only the items the store lacks are embedded: a rerun, a gallery with images added, the same
images under a moved dataset root, or leave-one-out queries cut out as the gallery is (whole
images) all reuse what exists; a query text is embedded once per text tower. Which items and
which store: `retrieval.stages.common`. Who builds the shards is `extract.engine` (with the
options of `extract.<engine>`), which the store's key leaves out: the same shards, whoever
built them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from retrieval import artifacts
from retrieval.device import resolve_device
from retrieval.features.extract import fill_store
from retrieval.features.store import Store
from retrieval.models import create_model, create_text_model
from retrieval.stages.common import (
    SPLITS,
    MismatchError,
    dataset_from_config,
    items_of,
    model_options,
    model_settings,
    plain,
    reads_words,
    representation_for,
    shard_size,
    store_folder,
)

log = logging.getLogger(__name__)


def main(cfg: Mapping[str, Any], split: str) -> Path:
    """The store holding every item of `split`, extracting the missing ones first."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    folder = store_folder(cfg, split)
    dataset = dataset_from_config(cfg)
    items = items_of(cfg, dataset, split)
    store = Store(folder)
    missing = store.missing([item.key for item in items])
    if not missing:
        log.info("%s: all %d items already extracted (%s)", split, len(items), folder)
        return folder
    if plain(cfg.get("search") or {}).get(split):
        raise MismatchError(
            f"search.{split}={folder} holds {len(set(i.key for i in items)) - len(missing)} of the {len(items)} {split} "
            f"of dataset {dataset.name}; drop search.{split} to extract them (python extract.py)"
        )
    artifacts.writable(folder)  # before the model: a read-only cache is one line, not a lost load
    family, options = model_options(cfg)
    model = create_text_model(family, **options) if reads_words(cfg, split) else create_model(family, **options)
    run = plain(cfg["extract"])
    device = resolve_device(run["device"])
    representation = representation_for(cfg, split)
    log.info("%s of %s: %s with %s on %s -> %s", split, dataset.name, type(representation).__name__,
             model_settings(cfg)["name"], device, folder)
    stats = fill_store(
        store,
        items,
        representation,
        model,
        device=device,
        precision=run["precision"],
        batch_size=run["batch_size"],
        workers=run["workers"],
        shard_size=shard_size(cfg, split),
        dtype=run["dtype"],
        desc=split,
        engine=run["engine"],
        engine_options=run.get(run["engine"]),
    )
    log.info("%s: embedded %d items in %.1f s", split, stats["embedded"], stats["seconds"])
    return folder
