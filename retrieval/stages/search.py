"""Stage 2: index the gallery and rank it for every query; writes the ranking artifact."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from retrieval import artifacts
from retrieval.embed import Embeddings, load_embeddings
from retrieval.index import build_index, save_index, search
from retrieval.ranking import Ranking
from retrieval.stages import extract
from retrieval.stages.common import dataset_from_config, plain

log = logging.getLogger(__name__)
RANKING = "ranking.npz"


class MismatchError(ValueError):
    """Inputs of a stage that were not made to go together."""


def depth(cfg: Mapping[str, Any], n_gallery: int) -> int:
    k = plain(cfg["dataset"]).get("k")
    return n_gallery if k is None else min(int(k), n_gallery)


def _inputs(cfg: Mapping[str, Any]) -> tuple[tuple[Embeddings, dict], tuple[Embeddings, dict]]:
    """Query and gallery embeddings: the configured ones, or explicit folders (search.queries /
    search.gallery) that must match each other and the dataset."""
    chosen = plain(cfg["search"])
    dataset = dataset_from_config(cfg)
    loaded = []
    for split, records in (("queries", dataset.queries), ("gallery", dataset.gallery)):
        folder = chosen.get(split)
        if not folder:
            loaded.append(extract.load(cfg, split))
            continue
        folder = Path(folder)
        if not artifacts.is_complete(folder):
            raise MismatchError(f"search.{split}={folder} is not a finished embeddings folder; run python extract.py first")
        meta = artifacts.read_meta(folder)
        if meta["count"] != len(records):
            raise MismatchError(
                f"search.{split}={folder} holds {meta['count']} embeddings but dataset {dataset.name} has "
                f"{len(records)} {split}; run: python extract.py dataset={dataset.name}"
            )
        loaded.append((load_embeddings(folder, [r.key for r in records]), meta))
    (queries, qmeta), (gallery, gmeta) = loaded
    if qmeta["model"] != gmeta["model"] or queries.dim != gallery.dim:
        raise MismatchError(
            f"query embeddings come from {qmeta['model']} (dim {queries.dim}) but gallery embeddings from "
            f"{gmeta['model']} (dim {gallery.dim}); re-extract both with one model: python extract.py model=<name>"
        )
    return loaded[0], loaded[1]


def settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    chosen = plain(cfg["search"])
    dataset = dataset_from_config(cfg)
    return {
        "stage": "search",
        "queries": chosen.get("queries") or extract.settings(cfg, "queries"),
        "gallery": chosen.get("gallery") or extract.settings(cfg, "gallery"),
        "index": plain(cfg["index"]),
        "k": depth(cfg, len(dataset.gallery)),
    }


def main(cfg: Mapping[str, Any]) -> Path:
    """Path of the ranking for this config, searching if it does not exist yet."""
    from retrieval.stages import regions

    if regions.enabled(cfg):
        return regions.main(cfg)
    folder = artifacts.artifact_dir(Path(cfg["paths"]["cache"]), "rankings", settings(cfg))
    return artifacts.build_once(folder, lambda out: _build(cfg, out), "ranking") / RANKING


def _build(cfg: Mapping[str, Any], folder: Path) -> None:
    (queries, qmeta), (gallery, gmeta) = _inputs(cfg)
    index_cfg = plain(cfg["index"])
    k = depth(cfg, len(gallery.keys))
    gallery_rows = np.flatnonzero(gallery.valid)
    started = time.perf_counter()
    index = build_index(
        gallery.vectors[gallery_rows].astype(np.float32),
        factory=index_cfg["factory"],
        use_gpu=index_cfg.get("gpu"),
        search_params=index_cfg.get("search_params"),
    )
    built = time.perf_counter()
    if index_cfg["factory"] != "Flat":
        save_index(index, folder / "index.faiss")
    scores, rows = search(index, queries.vectors.astype(np.float32), min(k, len(gallery_rows)), plain(cfg["search"])["block_size"])
    searched = time.perf_counter()
    indices = np.where(rows >= 0, gallery_rows[np.clip(rows, 0, None)], -1)
    # A skipped query gets an empty row: it scores as a miss (AP 0), so the mean stays over every
    # query of the benchmark and stays comparable with published numbers; metrics.json counts it.
    indices[~queries.valid] = -1
    scores[~queries.valid] = -np.inf
    if indices.shape[1] < k:
        pad = k - indices.shape[1]
        indices = np.pad(indices, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    ranking = Ranking(
        indices=indices,
        scores=scores,
        query_ids=np.asarray(queries.keys),
        gallery_ids=np.asarray(gallery.keys),
        provenance=[
            {"step": "extract", "split": "queries", "model": qmeta["model"], "query": plain(cfg["query"])},
            {"step": "extract", "split": "gallery", "model": gmeta["model"]},
            {"step": "search", "index": index_cfg["factory"], "k": k},
        ],
    )
    ranking.save(folder / RANKING)
    artifacts.write_meta(
        folder,
        n_queries=len(queries.keys),
        n_gallery=len(gallery.keys),
        k=k,
        index=index_cfg["factory"],
        build_seconds=round(built - started, 3),
        search_seconds=round(searched - built, 3),
        queries_per_s=round(len(queries.keys) / max(searched - built, 1e-9), 1),
        extraction_images_per_s={"queries": qmeta.get("images_per_s"), "gallery": gmeta.get("images_per_s")},
        skipped_queries=qmeta.get("skipped", []),
        skipped_gallery=gmeta.get("skipped", []),
    )
