"""Stage 2: rank the gallery's images for every query, over the one form of rows.

    main(cfg, queries, gallery) -> ranking.npz   (queries, gallery: feature store folders)

Whole-image and region-level galleries go through the same search (`retrieval.search`):
an image scores as its best row, exactly and blockwise by default or through any FAISS
factory. The ranking is cached under a key of everything it depends on, the content of the
listed files included (through their item keys).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from retrieval import artifacts
from retrieval.errors import UserError
from retrieval.stages.common import (
    RANKING,
    aggregation,
    check_same_model,
    depth,
    dataset_from_config,
    finish_ranking,
    listing_digest,
    load_features,
    plain,
    rank,
    skipped_list,
    store_model,
)

log = logging.getLogger(__name__)


def settings(cfg: Mapping[str, Any], queries: Path, gallery: Path) -> dict[str, Any]:
    """What determines the ranking: both stores' settings and listings, index, depth."""
    dataset = dataset_from_config(cfg)
    return {
        "stage": "search",
        "queries": {"store": artifacts.read_yaml(Path(queries) / "config.yaml"), "items": listing_digest(cfg, "queries")},
        "gallery": {"store": artifacts.read_yaml(Path(gallery) / "config.yaml"), "items": listing_digest(cfg, "gallery")},
        "index": plain(cfg["index"]),
        "k": depth(cfg, len(dataset.gallery)),
        **aggregation(cfg),
    }


def main(cfg: Mapping[str, Any], queries: Path, gallery: Path) -> Path:
    """Path of the ranking of `queries` against `gallery`, searching if it does not exist yet."""
    folder = artifacts.artifact_dir(Path(cfg["paths"]["cache"]).expanduser(), "rankings", settings(cfg, queries, gallery))
    return artifacts.build_once(folder, lambda out: _build(cfg, Path(queries), Path(gallery), out), "ranking") / RANKING


def _build(cfg: Mapping[str, Any], query_store: Path, gallery_store: Path, folder: Path) -> None:
    queries = load_features(cfg, query_store, "queries")
    gallery = load_features(cfg, gallery_store, "gallery")
    check_same_model(queries, gallery, store_model(query_store), store_model(gallery_store))
    if not queries.valid.any():
        raise UserError(f"every one of the {len(queries.keys)} queries was skipped (first reason: "
                         f"{next(iter(queries.errors.values()), '?')}); nothing to rank")
    index_cfg = plain(cfg["index"])
    k = depth(cfg, len(gallery.keys))
    started = time.perf_counter()
    hits = rank(cfg, queries.per_image(), gallery, index_path=None if index_cfg["factory"] == "Flat" else folder / "index.faiss")
    seconds = time.perf_counter() - started
    provenance = [
        {"step": "extract", "split": "queries", "store": query_store.name, "model": store_model(query_store), "query": plain(cfg["query"])},
        {"step": "extract", "split": "gallery", "store": gallery_store.name, "model": store_model(gallery_store),
         "representation": artifacts.read_yaml(gallery_store / "config.yaml")["representation"]},
        {"step": "search", "index": index_cfg["factory"], "k": k, **aggregation(cfg)},
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
        index_bytes=(folder / "index.faiss").stat().st_size if (folder / "index.faiss").exists() else int(gallery.vectors.nbytes),
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
