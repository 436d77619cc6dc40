"""Stage 1: the vectors of a split's items, in its feature store.

    main(plan, split) -> the store folder (split = "queries", "texts" or "gallery")

Only the items the store lacks are embedded: a rerun, a gallery with images added, the same
images under a moved dataset root, or leave-one-out queries cut out as the gallery is (whole
images) all reuse what exists; a query text is embedded once per text tower. Which items and
which store: the plan's (`retrieval.plan.stores`). Who builds the shards is `extract.engine`
(with the options of `extract.<engine>`), which the store's key leaves out: the same shards,
whoever built them. A representation that learns a state (`representation.whiten`) is fitted
first, on its sample, unless its state is already kept (`retrieval.representations.fitting`).
"""
from __future__ import annotations

import logging
from pathlib import Path

from retrieval import artifacts
from retrieval.features import Features
from retrieval.features.extract import fill_store
from retrieval.features.keys import Item
from retrieval.features.store import Store
from retrieval.models.base import Embedder
from retrieval.plan import SPLITS, MismatchError, RunPlan
from retrieval.representations import Representation
from retrieval.representations.fitting import FitInputs, fitted_state

log = logging.getLogger(__name__)


def main(plan: RunPlan, split: str) -> Path:
    """The store holding every item of `split`, extracting the missing ones first."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if split not in plan.stores:
        raise ValueError(f"this run has no {split} (only composed queries have texts)")
    spec = plan.stores[split]
    store = Store(spec.folder)
    missing = store.missing(spec.item_keys)
    if not missing:
        log.info("%s: all %d items already extracted (%s)", split, len(spec.items), spec.folder)
        return spec.folder
    if spec.chosen:
        raise MismatchError(
            f"search.{split}={spec.folder} holds {len(set(spec.item_keys)) - len(missing)} of the {len(spec.items)} {split} "
            f"of dataset {plan.dataset.name}; drop search.{split} to extract them (python extract.py)"
        )
    artifacts.writable(spec.folder)  # before the model: a read-only cache is one line, not a lost load
    model = plan.model.create(text=spec.representation.embeds_words)
    representation, fit = spec.representation, spec.fit
    if fit is not None:
        inputs = FitInputs(fit.items, lambda helper, items=None: _sample_rows(plan, model, helper, fit.items if items is None else items))
        state = fitted_state(fit.folder, lambda: spec.representation.fit(inputs), spec.representation.state_type.load)
        representation = representation.fitted(state)
    log.info("%s of %s: %s with %s on %s -> %s", split, plan.dataset.name, type(representation).__name__,
             plan.model.name, plan.extract.device, spec.folder)
    stats = _fill(plan, store, spec.items, representation, model, spec.shard_size, split)
    log.info("%s: embedded %d items in %.1f s", split, stats["embedded"], stats["seconds"])
    return spec.folder


def _fill(plan: RunPlan, store: Store, items: list[Item], representation: Representation, model: Embedder,
          shard_size: int, desc: str) -> dict:
    run = plan.extract
    return fill_store(
        store,
        items,
        representation,
        model,
        device=run.device,
        precision=run.precision,
        batch_size=run.batch_size,
        workers=run.workers,
        shard_size=shard_size,
        dtype=run.dtype,
        desc=desc,
        engine=run.engine,
        engine_options=run.engine_options,
    )


def _sample_rows(plan: RunPlan, model: Embedder, representation: Representation, items: list[Item]) -> Features:
    """The rows of a fit's sample as `representation` embeds them, from (and into) its store."""
    store = Store(plan.folder_of(representation))
    _fill(plan, store, items, representation, model, plan.extract.shard_size, "fit sample")
    keys = [item.key for item in items]
    return store.gather(keys, keys)
