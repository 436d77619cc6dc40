"""Stage 2: rank the gallery's images for every query, over the one form of rows.

    main(cfg, queries, gallery, texts=None) -> ranking.npz   (feature store folders)

Whole-image and region-level galleries go through the same search (`retrieval.search`):
an image scores as its best row, exactly and blockwise by default or through any FAISS
factory, whose index is saved with the gallery (`<cache>/indexes/`) and reused, and whose
recall@K against exact search is measured and written into meta.json and the provenance. Text queries are searched the same way (their `queries` store holds text vectors).
Composed queries add `texts`, the store of their words, and are ranked exactly by the
configured combination of the two similarities (`retrieval.search.composed`). The ranking is cached
under a key of everything it depends on, the content of the listed files included (through
their item keys), and for composed queries the combination (lambda only where it is read).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from retrieval import artifacts
from retrieval.errors import UserError
from retrieval.features import Features
from retrieval.search.composed import combination_settings
from retrieval.search.finish import finish_ranking
from retrieval.stages.common import (
    RANKING,
    aggregation,
    approximate_index,
    check_same_model,
    depth,
    dataset_from_config,
    load_features,
    plain,
    query_of,
    rank,
    rank_composed,
    skipped_list,
    stored,
    store_model,
)

log = logging.getLogger(__name__)


def settings(cfg: Mapping[str, Any], queries: Path, gallery: Path, texts: Path | None = None) -> dict[str, Any]:
    """What determines the ranking: the stores' settings and listings, index, depth (and the
    combination, for composed queries). Queries with words also add their ids, which (unlike
    image paths) are not part of their items' keys: a query file may rename them."""
    dataset = dataset_from_config(cfg)
    query = query_of(cfg)
    words = {}
    if texts is not None:
        words = {"texts": stored(cfg, texts, "texts"), **combination_settings(query.combine, query.weight)}
    if query.text:
        words["query_ids"] = hashlib.sha256("\n".join(dataset.query_keys).encode()).hexdigest()[:16]
    return {
        "stage": "search",
        "queries": stored(cfg, queries, "queries"),
        "gallery": stored(cfg, gallery, "gallery"),
        **words,
        "index": plain(cfg["index"]),
        "k": depth(cfg, len(dataset.gallery)),
        **aggregation(cfg),
    }


def main(cfg: Mapping[str, Any], queries: Path, gallery: Path, texts: Path | None = None) -> Path:
    """Path of the ranking of `queries` (with `texts`: composed queries) against `gallery`,
    searching if it does not exist yet."""
    folder = artifacts.artifact_dir(Path(cfg["paths"]["cache"]).expanduser(), "rankings", settings(cfg, queries, gallery, texts))
    texts = None if texts is None else Path(texts)
    return artifacts.build_once(folder, lambda out: _build(cfg, Path(queries), Path(gallery), out, texts), "ranking") / RANKING


def _with_words(cfg: Mapping[str, Any], queries: Features, text_store: Path, gallery: Features, model: str) -> tuple[Features, np.ndarray]:
    """Composed queries: valid when both their image part and their words are; and their text vectors."""
    texts = load_features(cfg, text_store, "texts")
    check_same_model(texts, gallery, store_model(text_store), model)
    both = dataclasses.replace(queries, valid=queries.valid & texts.valid, errors={**texts.errors, **queries.errors})
    return both, texts.per_image()


def _build(
    cfg: Mapping[str, Any], query_store: Path, gallery_store: Path, folder: Path, text_store: Path | None = None
) -> None:
    queries = load_features(cfg, query_store, "queries")
    gallery = load_features(cfg, gallery_store, "gallery")
    query_model = store_model(query_store)
    gallery_store_settings = artifacts.read_yaml(gallery_store / "config.yaml")
    gallery_model = gallery_store_settings["model"]["name"]
    check_same_model(queries, gallery, query_model, gallery_model)
    text_vectors = None
    if text_store is not None:
        queries, text_vectors = _with_words(cfg, queries, text_store, gallery, gallery_model)
    if not queries.valid.any():
        raise UserError(f"every one of the {len(queries.keys)} queries was skipped (first reason: "
                         f"{next(iter(queries.errors.values()), '?')}); nothing to rank")
    index_cfg = plain(cfg["index"])
    k = depth(cfg, len(gallery.keys))
    started = time.perf_counter()
    searched: dict[str, Any] = {"index": "Flat", "exact": True}
    if text_vectors is not None:
        hits = rank_composed(cfg, queries.per_image(), text_vectors, gallery)
    elif index_cfg["factory"] == "Flat":
        hits = rank(cfg, queries.per_image(), gallery)
    else:
        index, searched = approximate_index(cfg, queries, gallery, gallery_store)
        started = time.perf_counter()  # the search alone: building, tuning and measuring are not its speed
        hits = rank(cfg, queries.per_image(), gallery, index)
    seconds = time.perf_counter() - started
    query = query_of(cfg)
    text_steps = [{"step": "extract", "split": "texts", "store": text_store.name, "model": store_model(text_store)}] if text_store else []
    provenance = [
        {"step": "extract", "split": "queries", "store": query_store.name, "model": query_model, "query": plain(cfg["query"])},
        *text_steps,
        {"step": "extract", "split": "gallery", "store": gallery_store.name, "model": gallery_model,
         "representation": gallery_store_settings["representation"]},
        {"step": "search", "index": index_cfg["factory"], "k": k, **aggregation(cfg),
         **(combination_settings(query.combine, query.weight) if text_store else {}),
         **({} if searched["exact"] else
            {"search_params": searched["params"], "recall_at_k": searched["recall_at_k"], "recall_k": searched["k"]})},
    ]
    finish_ranking(hits, queries, gallery, k, provenance).save(folder / RANKING)
    top1 = hits.rows[:, 0][hits.rows[:, 0] >= 0] if hits.rows.size else np.zeros(0, np.int64)
    artifacts.write_meta(
        folder,
        n_queries=len(queries.keys),
        n_gallery=len(gallery.keys),
        n_rows=len(gallery.row_image),
        k=k,
        index=index_cfg["factory"],
        index_bytes=int(gallery.vectors.nbytes) if searched["exact"] else searched["index_bytes"],
        search=searched,
        search_seconds=round(seconds, 3),
        queries_per_s=round(len(queries.keys) / max(seconds, 1e-9), 1),
        top1_sources=_top1_sources(top1, gallery) if gallery.localises else None,
        extraction_images_per_s={"queries": queries.images_per_s, "gallery": gallery.images_per_s},
        skipped_queries=skipped_list(queries),
        skipped_gallery=skipped_list(gallery),
    )


def _top1_sources(first_rows: np.ndarray, gallery) -> dict[str, int]:
    """How often each kind of region gave a query its first result (what the regions buy)."""
    codes = np.bincount(gallery.sources[first_rows], minlength=len(gallery.source_names))
    return {name: int(codes[code]) for code, name in enumerate(gallery.source_names)}
