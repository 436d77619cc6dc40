"""Region stages: the gallery's region embeddings, and the region-level ranking.

    extract_main(cfg) -> cache/regions/<key>/    (shards: vectors, region -> image, boxes, masks)
    main(cfg)         -> cache/rankings/<key>/ranking.npz   (with `boxes`, `mask_ids`, `mask_table`)

Used by `search.main` when `regions` is not `none`. Queries are the usual query embeddings
(one vector per query, cut out by the query mode); only the gallery side changes.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from retrieval import artifacts
from retrieval.device import resolve_device
from retrieval.index import save_index
from retrieval.models import create_model
from retrieval.ranking import Ranking
from retrieval.regions.embed import RegionEmbeddings, RegionSpec, extract_regions, load_regions
from retrieval.regions.search import AGGREGATIONS, ImageHits, approximate_search, build_region_index, exact_search
from retrieval.stages import extract, search
from retrieval.stages.common import dataset_from_config, dataset_identity, model_options, model_settings, plain

log = logging.getLogger(__name__)
K_REGIONS_PER_IMAGE = 32
"""Approximate search fetches this many regions per ranked image unless k_regions is set."""


def region_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The `regions` group ({"name": "none"} when the config has none)."""
    return plain(cfg.get("regions")) or {"name": "none"}


def enabled(cfg: Mapping[str, Any]) -> bool:
    return region_config(cfg).get("name", "none") != "none"


def spec(cfg: Mapping[str, Any]) -> RegionSpec:
    """The `regions` group as a RegionSpec (its defaults stand in for keys the config lacks)."""
    node = region_config(cfg)
    options = {name: node[name] for name in ("pooling", "input_sizes", "roi_size", "crop_size") if name in node}
    return RegionSpec(proposers=node.get("proposals") or {}, **options)


def extract_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Exactly what determines the region embeddings: gallery, model, regions, dtype."""
    chosen = spec(cfg)
    made = {"proposals": dict(chosen.proposers), "pooling": chosen.pooling}
    if chosen.pooling == "roi":
        made.update(input_sizes=list(chosen.input_sizes), roi_size=chosen.roi_size)
    else:
        made.update(crop_size=chosen.crop_size)
    return {
        "stage": "regions",
        "dataset": dataset_identity(cfg, dataset_from_config(cfg), "gallery"),
        "model": model_settings(cfg),
        "regions": made,
        "dtype": cfg["extract"]["dtype"],
    }


def extract_main(cfg: Mapping[str, Any]) -> Path:
    """Region embeddings folder, extracting (or finishing an interrupted run) if needed."""
    folder = artifacts.artifact_dir(Path(cfg["paths"]["cache"]), "regions", extract_settings(cfg))
    return artifacts.build_once(folder, lambda out: _extract(cfg, out), "region embeddings")


def _extract(cfg: Mapping[str, Any], folder: Path) -> None:
    dataset = dataset_from_config(cfg)
    family, options = model_options(cfg)
    model = create_model(family, **options)
    run = plain(cfg["extract"])
    device = resolve_device(run["device"])
    chosen = spec(cfg)
    log.info("regions: %d gallery images of %s, %s pooling, proposers %s, on %s",
             len(dataset.gallery), dataset.name, chosen.pooling, ", ".join(chosen.proposers) or "none", device)
    stats = extract_regions(
        dataset.gallery,
        model,
        folder,
        chosen,
        device=device,
        precision=run["precision"],
        batch_size=run["batch_size"],
        workers=run["workers"],
        shard_images=int(region_config(cfg).get("shard_images", 128)),
        dtype=run["dtype"],
    )
    embedded = load_regions(folder, dataset.gallery_keys)
    skipped = [[dataset.gallery[i].key, message] for i, message in sorted(embedded.errors.items())]
    counts = np.bincount(embedded.region_image, minlength=len(dataset.gallery))[embedded.valid]
    artifacts.write_meta(
        folder,
        split="gallery",
        dataset=dataset.name,
        model=model_settings(cfg)["name"],
        dim=embedded.dim,
        count=len(dataset.gallery),
        valid=int(embedded.valid.sum()),
        regions=len(embedded.region_image),
        regions_per_image={"mean": round(float(counts.mean()), 1) if counts.size else 0,
                           "max": int(counts.max()) if counts.size else 0},
        regions_by_source={name: int((embedded.sources == code).sum()) for code, name in enumerate(embedded.source_names)},
        vector_bytes=int(embedded.vectors.nbytes),
        skipped=skipped,
        device=str(device),
        images_per_s=stats["images_per_s"],
        seconds=stats["seconds"],
    )


def load(cfg: Mapping[str, Any]) -> tuple[RegionEmbeddings, dict[str, Any]]:
    folder = extract_main(cfg)
    return load_regions(folder, dataset_from_config(cfg).gallery_keys), artifacts.read_meta(folder)


def _search_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    node = region_config(cfg)
    aggregate = node.get("aggregate", "max")
    if aggregate not in AGGREGATIONS:
        raise ValueError(f"regions.aggregate must be one of {AGGREGATIONS}, not {aggregate!r}")
    return {
        "aggregate": aggregate,
        "k_regions": node.get("k_regions"),
    }


def settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    dataset = dataset_from_config(cfg)
    return {
        "stage": "search",
        "queries": extract.settings(cfg, "queries"),
        "gallery": extract_settings(cfg),
        "index": plain(cfg["index"]),
        "k": search.depth(cfg, len(dataset.gallery)),
        **_search_options(cfg),
    }


def main(cfg: Mapping[str, Any]) -> Path:
    """Path of the region-level ranking for this config, searching if needed."""
    if plain(cfg["search"]).get("gallery"):
        raise search.MismatchError("search.gallery names whole-image embeddings; region search needs regions=none")
    folder = artifacts.artifact_dir(Path(cfg["paths"]["cache"]), "rankings", settings(cfg))
    return artifacts.build_once(folder, lambda out: _search(cfg, out), "ranking") / search.RANKING


def _hits(cfg: Mapping[str, Any], queries: np.ndarray, regions: RegionEmbeddings, k: int, folder: Path) -> tuple[ImageHits, int]:
    """Image hits and the index size in bytes (the vectors themselves for exact search)."""
    index_cfg = plain(cfg["index"])
    if index_cfg["factory"] == "Flat":
        device = resolve_device(plain(cfg["extract"])["device"])
        hits = exact_search(queries, regions.vectors, regions.region_image, len(regions.keys), k, device)
        return hits, int(regions.vectors.nbytes)
    index = build_region_index(regions.vectors, index_cfg["factory"], index_cfg.get("search_params"), index_cfg.get("gpu"))
    save_index(index, folder / "index.faiss")
    k_regions = _search_options(cfg)["k_regions"] or K_REGIONS_PER_IMAGE * k
    hits = approximate_search(index, queries, regions.region_image, k, int(k_regions), plain(cfg["search"])["block_size"])
    return hits, (folder / "index.faiss").stat().st_size


def ranking_masks(hits: ImageHits, regions: RegionEmbeddings) -> tuple[np.ndarray, list[dict]]:
    """Per ranking entry, the row of its region's mask in the returned table (-1: the region
    has no mask, or the entry is padding); each distinct returned mask is in the table once."""
    has_mask = np.fromiter((bool(m) for m in regions.masks), dtype=bool, count=len(regions.masks))
    returned = np.unique(hits.regions[hits.regions >= 0])
    kept = returned[has_mask[returned]]
    row_of = np.full(len(regions.masks), -1, dtype=np.int64)
    row_of[kept] = np.arange(len(kept))
    ids = np.where(hits.regions >= 0, row_of[np.clip(hits.regions, 0, None)], -1)
    return ids, [json.loads(regions.masks[r]) for r in kept.tolist()]


def _top1_sources(hits: ImageHits, regions: RegionEmbeddings) -> dict[str, int]:
    """How often each kind of region gave a query its first result (what the regions buy)."""
    first = hits.regions[:, 0][hits.regions[:, 0] >= 0] if hits.regions.size else np.zeros(0, np.int64)
    codes = np.bincount(regions.sources[first], minlength=len(regions.source_names))
    return {name: int(codes[code]) for code, name in enumerate(regions.source_names)}


def _search(cfg: Mapping[str, Any], folder: Path) -> None:
    queries, qmeta = extract.load(cfg, "queries")
    regions, gmeta = load(cfg)
    if qmeta["model"] != gmeta["model"] or queries.dim != regions.dim:
        raise search.MismatchError(
            f"query embeddings come from {qmeta['model']} (dim {queries.dim}) but region embeddings from "
            f"{gmeta['model']} (dim {regions.dim}); extract both with one model"
        )
    k = search.depth(cfg, len(regions.keys))
    started = time.perf_counter()
    hits, index_bytes = _hits(cfg, queries.vectors, regions, k, folder)
    searched = time.perf_counter()
    hits.images[~queries.valid] = -1  # skipped queries: an empty row, a miss (see search._build)
    hits.scores[~queries.valid] = -np.inf
    hits.regions[~queries.valid] = -1
    found = hits.regions >= 0
    boxes = np.full((*hits.images.shape, 4), np.nan, dtype=np.float32)
    boxes[found] = regions.boxes[hits.regions[found]]
    mask_ids, mask_table = ranking_masks(hits, regions)
    ranking = Ranking(
        indices=hits.images,
        scores=hits.scores,
        query_ids=np.asarray(queries.keys),
        gallery_ids=np.asarray(regions.keys),
        boxes=boxes,
        mask_ids=mask_ids,
        mask_table=mask_table,
        provenance=[
            {"step": "extract", "split": "queries", "model": qmeta["model"], "query": plain(cfg["query"])},
            {"step": "regions", "split": "gallery", "model": gmeta["model"], "regions": extract_settings(cfg)["regions"]},
            {"step": "search", "index": plain(cfg["index"])["factory"], "k": k, **_search_options(cfg)},
        ],
    )
    ranking.save(folder / search.RANKING)
    artifacts.write_meta(
        folder,
        n_queries=len(queries.keys),
        n_gallery=len(regions.keys),
        n_regions=len(regions.region_image),
        k=k,
        index=plain(cfg["index"])["factory"],
        index_bytes=index_bytes,
        search_seconds=round(searched - started, 3),
        queries_per_s=round(len(queries.keys) / max(searched - started, 1e-9), 1),
        top1_sources=_top1_sources(hits, regions),
        extraction_images_per_s={"queries": qmeta.get("images_per_s"), "gallery": gmeta.get("images_per_s")},
        skipped_queries=qmeta.get("skipped", []),
        skipped_gallery=gmeta.get("skipped", []),
    )
