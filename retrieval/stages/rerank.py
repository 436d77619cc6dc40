"""Stage 3: the re-rank steps the config lists (`rerank=[dba,alpha_qe]`), in order.

    main(plan, ranking) -> ranking.npz of the last step (the input when none)

Each step's output is an artifact keyed by its input ranking's key, the step and its
options, so changing a later step never redoes an earlier one; its meta.json names the
ranking it re-ranked (`input_ranking`), the chain evaluate follows back to the search's
meta. The step gets only the inputs it declares; a step that changes the gallery's vectors
passes them to the next.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from retrieval import artifacts
from retrieval.errors import UserError, brief, unreadable
from retrieval.features import Features
from retrieval.masks import decode, tight_box
from retrieval.plan import RunPlan
from retrieval.plan.stores import store_settings
from retrieval.queries import get_query_mode
from retrieval.ranking import RANKING_FILE, Ranking
from retrieval.representations.fitting import fitted_state
from retrieval.rerank import QueryCutout, QueryModel, RerankInputs, Step
from retrieval.search.finish import finish_ranking

log = logging.getLogger(__name__)
GALLERY_VECTORS = "gallery_vectors.npy"


def main(plan: RunPlan, ranking: Path) -> Path:
    """The ranking after every step of the plan (each built once, then reused)."""
    current = Path(ranking)
    if not plan.rerank:
        return current
    inputs = _inputs(plan)
    for name, step in plan.rerank:
        settings = {"stage": "rerank", "input": current.parent.name, "step": name, "options": step.settings()}
        folder = artifacts.artifact_dir(plan.paths.cache, "rankings", settings)
        artifacts.build_once(folder, lambda out: _run(name, step, current, inputs, out), f"rerank {name}")
        if step.updates_gallery:  # later steps see the new vectors, loaded only if one asks
            inputs.loaders["gallery"] = _with_vectors(inputs.loaders["gallery"], folder / GALLERY_VECTORS)
            inputs.forget("gallery")
        current = folder / RANKING_FILE
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


def _inputs(plan: RunPlan) -> RerankInputs:
    @functools.cache
    def query_features() -> Features:
        return plan.stores["queries"].load()

    def search(vectors: np.ndarray, gallery: Features) -> Ranking:
        return finish_ranking(plan.rank(vectors, gallery), query_features(), gallery, plan.search.k, [])

    return RerankInputs(
        loaders={
            "query_vectors": lambda: query_features().per_image(),
            "gallery": plan.stores["gallery"].load,
            "dataset": lambda: plan.dataset,
            "query_cutouts": lambda: query_cutouts(plan),
            "cache": lambda: plan.paths.cache,
            "query_model": lambda: query_model(plan),
        },
        search=search,
    )


def query_model(plan: RunPlan) -> QueryModel:
    """The run's image model with everything that made its query vectors: device, precision,
    the queries' representation (with the state it learnt, already fitted when the queries were
    extracted), storage and pixel cap, and the settings that key the queries' store."""
    _image_queries(plan)
    spec = plan.stores["queries"]
    representation = spec.representation
    if spec.fit is not None:
        representation = representation.fitted(fitted_state(spec.fit.folder, _not_fitted(spec.fit.folder),
                                                            representation.state_type.load))
    run = plan.extract
    return QueryModel(plan.model.create(), run.device, run.precision, run.dtype,
                      run.max_pixels, store_settings(plan.model, spec.representation, run.dtype, spec.fit), representation)


def _not_fitted(folder: Path) -> Callable[[], Any]:
    def fit() -> Any:
        raise UserError(f"the queries' representation has no learnt state at {folder}; run python extract.py first")
    return fit


def _image_queries(plan: RunPlan) -> str:
    """The query's image mode; a text query has none, and no pixels to compare."""
    if plan.query.image_mode is None:
        raise UserError("this re-rank step compares pixels and needs image queries; query=text has none")
    return plan.query.image_mode


def query_cutouts(plan: RunPlan) -> list[QueryCutout]:
    """Each query's cut-out as its image mode defines it: the annotation the mode reads first
    (`reads`) is what it cuts by; a mode that reads none, or a query without that annotation,
    describes the object by the whole image (a mask-only query: by the mask's box)."""
    mode_name = _image_queries(plan)
    by = (getattr(get_query_mode(mode_name), "reads", ()) or (None,))[0]
    cutouts = []
    for item in plan.stores["queries"].items:
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


def _run(name: str, step: Step, source: Path, inputs: RerankInputs, folder: Path) -> None:
    """Re-rank the ranking at `source` into `folder`."""
    log.info("rerank %s %s", name, step.settings())
    ranking = Ranking.load(source)
    inputs.allowed = step.needs
    start = time.perf_counter()
    output = step(ranking, inputs)
    seconds = time.perf_counter() - start
    output.ranking.provenance = [*ranking.provenance, {"step": "rerank", "name": name, **step.settings()}]
    output.ranking.save(folder / RANKING_FILE)
    if output.gallery_vectors is not None:
        with artifacts.atomic_path(folder / GALLERY_VECTORS) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, output.gallery_vectors)
    log.info("rerank %s: %.1f s%s", name, seconds, "".join(f", {key} {value}" for key, value in output.report.items()))
    artifacts.write_meta(folder, step=name, options=step.settings(), input_ranking=str(source), seconds=seconds, **output.report)
