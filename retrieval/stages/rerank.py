"""Stage 3: the re-rank steps the config lists (`rerank=[dba,alpha_qe]`), in order.

    main(cfg, ranking, queries, gallery) -> ranking.npz of the last step (the input when none)

Each step's output is an artifact keyed by its input ranking's key, the step and its
options, so changing a later step never redoes an earlier one. The step gets only the
inputs it declares; a step that changes the gallery's vectors passes them to the next.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from retrieval import artifacts
from retrieval.features import Features
from retrieval.ranking import Ranking
from retrieval.errors import UserError, brief, unreadable
from retrieval.masks import decode, tight_box
from retrieval.queries import get_query_mode
from retrieval.rerank import QueryCutout, RerankInputs, Step, create_step
from retrieval.stages.common import (
    RANKING, dataset_from_config, depth, finish_ranking, items_of, load_features, plain, query_of, rank,
)

log = logging.getLogger(__name__)
GALLERY_VECTORS = "gallery_vectors.npy"


def configured_steps(cfg: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, options) of each step, in the order of `rerank=[...]`."""
    return [(name, dict(options or {})) for name, options in (plain(cfg.get("rerank")) or {}).items()]


def main(cfg: Mapping[str, Any], ranking: Path, queries: Path, gallery: Path) -> Path:
    """The ranking after every configured step (each built once, then reused)."""
    current = Path(ranking)
    steps = [(name, create_step(name, **options)) for name, options in configured_steps(cfg)]
    if not steps:
        return current
    inputs = _inputs(cfg, Path(queries), Path(gallery))
    for name, step in steps:
        settings = {"stage": "rerank", "input": current.parent.name, "step": name, "options": step.settings()}
        folder = artifacts.artifact_dir(Path(cfg["paths"]["cache"]).expanduser(), "rankings", settings)
        artifacts.build_once(folder, lambda out: _run(name, step, Ranking.load(current), inputs, out, Path(ranking).parent), f"rerank {name}")
        if step.updates_gallery:  # later steps see the new vectors, loaded only if one asks
            inputs.loaders["gallery"] = _with_vectors(inputs.loaders["gallery"], folder / GALLERY_VECTORS)
            inputs.forget("gallery")
        current = folder / RANKING
    return current


def _with_vectors(load_gallery: Callable[[], Features], vectors: Path) -> Callable[[], Features]:
    """A gallery loader whose rows carry the vectors a step saved (DBA)."""
    return lambda: dataclasses.replace(load_gallery(), vectors=_saved_vectors(vectors))


def _saved_vectors(path: Path) -> np.ndarray:
    """The gallery vectors a step saved; a damaged file is named, with how to rebuild it."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise unreadable(path, "saved gallery vectors file", brief(error), artifacts.rebuild_hint(path)) from error


def _inputs(cfg: Mapping[str, Any], query_store: Path, gallery_store: Path) -> RerankInputs:
    @functools.cache
    def query_features() -> Features:
        return load_features(cfg, query_store, "queries")

    def search(vectors: np.ndarray, gallery: Features) -> Ranking:
        hits = rank(cfg, vectors, gallery)
        return finish_ranking(hits, query_features(), gallery, depth(cfg, len(gallery.keys)), [])

    return RerankInputs(
        loaders={
            "query_vectors": lambda: query_features().per_image(),
            "gallery": lambda: load_features(cfg, gallery_store, "gallery"),
            "dataset": lambda: dataset_from_config(cfg),
            "query_cutouts": lambda: query_cutouts(cfg),
            "cache": lambda: Path(cfg["paths"]["cache"]).expanduser(),
        },
        search=search,
    )


def query_cutouts(cfg: Mapping[str, Any]) -> list[QueryCutout]:
    """Each query's cut-out as its image mode defines it: the annotation the mode reads first
    (`reads`) is what it cuts by; a mode that reads none, or a query without that annotation,
    describes the object by the whole image (a mask-only query: by the mask's box)."""
    mode_name = query_of(cfg).image_mode
    if mode_name is None:
        raise UserError("this re-rank step compares pixels and needs image queries; query=text has none")
    by = (getattr(get_query_mode(mode_name), "reads", ()) or (None,))[0]
    dataset = dataset_from_config(cfg)
    cutouts = []
    for item in items_of(cfg, dataset, "queries"):
        instance = item.instance
        mask = instance.mask if instance is not None else None
        box = instance.box if instance is not None and by is not None else None
        if box is None and mask is not None and by is not None:
            box = _mask_box(mask)
        cutouts.append(QueryCutout(item.key, item.path, box, mask if by == "mask" else None))
    return cutouts


def _mask_box(mask: Any) -> tuple[int, int, int, int] | None:
    """The mask's box; None (the whole image) when the mask cannot be read, as query=box does."""
    try:
        return tight_box(decode(mask))
    except (OSError, ValueError) as error:
        log.warning("unusable query mask (%s); the whole image describes the object", error)
        return None


def _run(name: str, step: Step, ranking: Ranking, inputs: RerankInputs, folder: Path, search: Path) -> None:
    log.info("rerank %s %s", name, step.settings())
    inputs.allowed = step.needs
    start = time.perf_counter()
    output = step(ranking, inputs)
    seconds = time.perf_counter() - start
    output.ranking.provenance = [*ranking.provenance, {"step": "rerank", "name": name, **step.settings()}]
    output.ranking.save(folder / RANKING)
    if output.gallery_vectors is not None:
        with artifacts.atomic_path(folder / GALLERY_VECTORS) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, output.gallery_vectors)
    log.info("rerank %s: %.1f s%s", name, seconds, "".join(f", {key} {value}" for key, value in output.report.items()))
    artifacts.write_meta(folder, step=name, options=step.settings(), search=str(search), seconds=seconds, **output.report)
