"""Stage 2: rank the gallery's images for every query, over the one form of rows.

    main(plan) -> ranking.npz   (from the plan's stores of queries, gallery and texts)

Whole-image and region-level galleries go through the same search (`retrieval.search`):
an image scores as its best row, exactly and blockwise by default or through any FAISS
factory, whose index is saved with the gallery (`<cache>/indexes/`) and reused, and whose
recall@K against exact search is measured and written into meta.json and the provenance.
Text queries are searched the same way (their `queries` store holds text vectors).
Composed queries add `texts`, the store of their words, and are ranked exactly by the
configured combination of the two similarities (`retrieval.search.composed`). A gallery whose
representation finds the object after search (`rmac`) has its top results' boxes set by AML as
the search's last step (`retrieval.search.localise`), scores and order untouched. The ranking is
cached under a key of everything it depends on, the content of the listed files included
(through their item keys), for composed queries the combination (lambda only where it is read),
and that localisation's settings.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from retrieval import artifacts
from retrieval.errors import UserError
from retrieval.features import Features
from retrieval.plan import MismatchError, RunPlan
from retrieval.ranking import RANKING_FILE, Ranking
from retrieval.representations import SEGMENT_VOTES
from retrieval.search.composed import combination_settings
from retrieval.search.finish import finish_ranking
from retrieval.search.localise import localise_results

log = logging.getLogger(__name__)


def settings(plan: RunPlan) -> dict[str, Any]:
    """What determines the ranking: the stores' settings and listings, the search (and the
    combination, for composed queries). Queries with words also add their ids, which (unlike
    image paths) are not part of their items' keys: a query file may rename them."""
    query = plan.query
    words = {}
    if query.composed:
        words = {"texts": plan.stores["texts"].identity(), **combination_settings(query.combine, query.weight)}
    if query.text:
        words["query_ids"] = hashlib.sha256("\n".join(plan.dataset.query_keys).encode()).hexdigest()[:16]
    gallery = plan.stores["gallery"].representation
    found = {"localise": gallery.localisation_settings()} if gallery.localises_results else {}
    return {
        "stage": "search",
        "queries": plan.stores["queries"].identity(),
        "gallery": plan.stores["gallery"].identity(),
        **words,
        **plan.search.settings(),
        **found,
    }


def main(plan: RunPlan) -> Path:
    """Path of the ranking of the plan's queries against its gallery, searching if it does not exist yet."""
    folder = artifacts.artifact_dir(plan.paths.cache, "rankings", settings(plan))
    return artifacts.build_once(folder, lambda out: _build(plan, out), "ranking") / RANKING_FILE


def check_same_model(queries: Features, gallery: Features, query_model: str, gallery_model: str) -> None:
    if query_model != gallery_model or (queries.vectors.size and gallery.vectors.size and queries.dim != gallery.dim):
        raise MismatchError(
            f"query vectors come from {query_model} (dim {queries.dim}) but gallery vectors from "
            f"{gallery_model} (dim {gallery.dim}); extract both with one model: python extract.py model=<name>"
        )


def _with_words(plan: RunPlan, queries: Features, gallery: Features, model: str) -> tuple[Features, np.ndarray]:
    """Composed queries: valid when both their image part and their words are; and their text vectors."""
    store = plan.stores["texts"]
    texts = store.load()
    check_same_model(texts, gallery, store.model_name(), model)
    both = dataclasses.replace(queries, valid=queries.valid & texts.valid, errors={**texts.errors, **queries.errors})
    return both, texts.per_image()


def _build(plan: RunPlan, folder: Path) -> None:
    query_store, gallery_store = plan.stores["queries"], plan.stores["gallery"]
    queries, gallery = query_store.load(), gallery_store.load()
    query_model = query_store.model_name()
    gallery_settings = gallery_store.settings()
    gallery_model = gallery_settings["model"]["name"]
    check_same_model(queries, gallery, query_model, gallery_model)
    text_vectors = None
    if plan.query.composed:
        queries, text_vectors = _with_words(plan, queries, gallery, gallery_model)
    if not queries.valid.any():
        raise UserError(f"every one of the {len(queries.keys)} queries was skipped (first reason: "
                         f"{next(iter(queries.errors.values()), '?')}); nothing to rank")
    search, query = plan.search, plan.query
    started = time.perf_counter()
    searched: dict[str, Any] = {"index": "Flat", "exact": True}
    if search.aggregate == SEGMENT_VOTES:
        hits = search.vote(queries, gallery)
    elif text_vectors is not None:
        hits = search.composed(queries.per_image(), text_vectors, gallery, query.combine, query.weight)
    elif search.exact:
        hits = plan.rank(queries.per_image(), gallery)
    else:
        index, searched = search.approximate_index(plan.paths.cache, gallery_store.identity(), queries, gallery)
        started = time.perf_counter()  # the search alone: building, tuning and measuring are not its speed
        hits = plan.rank(queries.per_image(), gallery, index)
    seconds = time.perf_counter() - started
    aggregation = {"aggregate": search.aggregate, "k_regions": search.k_regions}
    text_steps = []
    if plan.query.composed:
        text_steps = [{"step": "extract", "split": "texts", "store": plan.stores["texts"].folder.name,
                       "model": plan.stores["texts"].model_name()}]
    provenance = [
        {"step": "extract", "split": "queries", "store": query_store.folder.name, "model": query_model, "query": plan.query_node},
        *text_steps,
        {"step": "extract", "split": "gallery", "store": gallery_store.folder.name, "model": gallery_model,
         "representation": gallery_settings["representation"]},
        {"step": "search", "index": search.factory, "k": search.k, **aggregation,
         **(combination_settings(query.combine, query.weight) if query.composed else {}),
         **({} if searched["exact"] else
            {"search_params": searched["params"], "recall_at_k": searched["recall_at_k"], "recall_k": searched["k"]})},
    ]
    ranking = finish_ranking(hits, queries, gallery, search.k, provenance)
    localised = _localise(plan, ranking) if gallery_store.representation.localises_results else {}
    ranking.save(folder / RANKING_FILE)
    top1 = hits.rows[:, 0][hits.rows[:, 0] >= 0] if hits.rows.size else np.zeros(0, np.int64)
    artifacts.write_meta(
        folder,
        n_queries=len(queries.keys),
        n_gallery=len(gallery.keys),
        n_rows=len(gallery.row_image),
        k=search.k,
        index=search.factory,
        index_bytes=int(gallery.vectors.nbytes) if searched["exact"] else searched["index_bytes"],
        search=searched,
        search_seconds=round(seconds, 3),
        queries_per_s=round(len(queries.keys) / max(seconds, 1e-9), 1),
        top1_sources=_top1_sources(top1, gallery) if gallery.localises else None,
        extraction_images_per_s={"queries": queries.images_per_s, "gallery": gallery.images_per_s},
        skipped_queries=skipped_list(queries),
        skipped_gallery=skipped_list(gallery),
        **localised,
    )


def _localise(plan: RunPlan, ranking: Ranking) -> dict[str, Any]:
    """The boxes of the top results found after search (`retrieval.search.localise`), noted in
    the ranking's provenance; what was done, for the meta."""
    queries, gallery = plan.stores["queries"], plan.stores["gallery"]
    top = gallery.representation.localise_top
    run = plan.extract
    model = plan.model.create()
    done = localise_results(ranking, top, (queries.representation, queries.items), (gallery.representation, gallery.items),
                            model, run.device, run.precision, run.batch_size, run.workers)
    ranking.provenance.append({"step": "localise", **gallery.representation.localisation_settings()})
    return done


def skipped_list(features: Features) -> list[list[str]]:
    """[[key, reason], ...] of the skipped images or queries, for meta and metrics files."""
    return [[features.keys[i], reason] for i, reason in sorted(features.errors.items())]


def _top1_sources(first_rows: np.ndarray, gallery: Features) -> dict[str, int]:
    """How often each kind of region gave a query its first result (what the regions buy)."""
    codes = np.bincount(gallery.sources[first_rows], minlength=len(gallery.source_names))
    return {name: int(codes[code]) for code, name in enumerate(gallery.source_names)}
