"""Stage 1: embed the queries (cut out by the query mode) or the gallery (whole images)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

from retrieval import artifacts
from retrieval.device import resolve_device
from retrieval.embed import extract, load_embeddings, Embeddings
from retrieval.models import create_model
from retrieval.queries import get_query_mode
from retrieval.stages.common import dataset_from_config, dataset_identity, model_options, model_settings, plain

log = logging.getLogger(__name__)
SPLITS = ("queries", "gallery")


def settings(cfg: Mapping[str, Any], split: str) -> dict[str, Any]:
    """Exactly what determines the vectors: images, model, query cut-out, storage dtype."""
    dataset = dataset_from_config(cfg)
    return {
        "stage": "extract",
        "dataset": dataset_identity(cfg, dataset, split),
        "model": model_settings(cfg),
        "query": plain(cfg["query"]) if split == "queries" else None,
        "dtype": cfg["extract"]["dtype"],
    }


def main(cfg: Mapping[str, Any], split: str) -> Path:
    """Embeddings folder for `split`, extracting (or finishing an interrupted run) if needed."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    folder = artifacts.artifact_dir(Path(cfg["paths"]["cache"]), "embeddings", settings(cfg, split))
    return artifacts.build_once(folder, lambda out: _build(cfg, split, out), f"{split} embeddings")


def _build(cfg: Mapping[str, Any], split: str, folder: Path) -> None:
    dataset = dataset_from_config(cfg)
    records = dataset.queries if split == "queries" else dataset.gallery
    family, options = model_options(cfg)
    model = create_model(family, **options)
    query_cfg = dict(plain(cfg["query"]))
    mode = get_query_mode(query_cfg.pop("name")) if split == "queries" else None
    run = plain(cfg["extract"])
    device = resolve_device(run["device"])
    log.info("%s: embedding %d images of %s with %s on %s", split, len(records), dataset.name, model_settings(cfg)["name"], device)
    started = time.perf_counter()
    stats = extract(
        records,
        model,
        folder,
        query_mode=mode,
        mode_options=query_cfg if mode else None,
        device=device,
        precision=run["precision"],
        batch_size=run["batch_size"],
        workers=run["workers"],
        shard_size=run["shard_size"],
        dtype=run["dtype"],
        desc=f"{split}",
    )
    embeddings = load_embeddings(folder, [r.key for r in records])
    skipped = [[records[i].key, message] for i, message in sorted(embeddings.errors.items())]
    artifacts.write_meta(
        folder,
        split=split,
        dataset=dataset.name,
        model=model_settings(cfg)["name"],
        dim=embeddings.dim,
        count=len(records),
        valid=int(embeddings.valid.sum()),
        skipped=skipped,
        device=str(device),
        images_per_s=stats["images_per_s"],
        seconds=round(time.perf_counter() - started, 3),
    )
    if skipped:
        log.warning("%s: %d of %d images skipped (listed in %s)", split, len(skipped), len(records), folder / artifacts.META)


def load(cfg: Mapping[str, Any], split: str) -> tuple[Embeddings, dict[str, Any]]:
    """The split's embeddings and their meta, extracting first if needed."""
    folder = main(cfg, split)
    dataset = dataset_from_config(cfg)
    records = dataset.queries if split == "queries" else dataset.gallery
    return load_embeddings(folder, [r.key for r in records]), artifacts.read_meta(folder)
