"""An approximate search made ready for a run: on its devices, its search parameters set
(tuned to the target recall when there is one) and its recall@K against exact search
measured on held-out queries, returned as the report every later stage carries (meta.json,
provenance, metrics.json, the report page, the leaderboard)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import faiss
import numpy as np
import torch

from retrieval.features import Features
from retrieval.search.approximate.knobs import knob_to_tune
from retrieval.search.approximate.recall import RECALL_DEPTH, held_out_samples, recall_at_k
from retrieval.search.approximate.saved import INDEX, index_folder, saved_index
from retrieval.search.approximate.shortlist import approximate_search, rows_per_query
from retrieval.search.approximate.tuning import tuned
from retrieval.search.exact import exact_search
from retrieval.search.index import set_search_params, to_gpu, wants_gpu


@dataclass(frozen=True)
class Options:
    """The `index` group's options of an approximate index; those left out take these defaults."""

    train_size: int = 100_000
    """Rows in the seeded sample the index is trained on."""
    seed: int = 0
    """Seed of the training sample and of the query samples."""
    target_recall: float | None = None
    """None: search with `search_params` as given (the recall is still measured)."""
    tune_queries: int = 200
    """Queries in each of the tuning and the reporting sample."""

    @classmethod
    def of(cls, index_cfg: Mapping[str, Any]) -> "Options":
        names = ("train_size", "seed", "target_recall", "tune_queries")
        return cls(**{name: index_cfg[name] for name in names if index_cfg.get(name) is not None})


@dataclass(frozen=True)
class Run:
    """The part of a run the search answers: its query vectors (and which are real, not
    skipped), the gallery rows, and how deep it ranks."""

    queries: np.ndarray
    valid: np.ndarray
    gallery: Features
    k: int
    k_rows: int
    """Rows fetched per query to rank `k` images (`shortlist.rows_per_query`)."""
    rescore: bool = False
    """Whether the fetched rows are re-scored exactly from the gallery's vectors (`index.rescore`)."""


def prepare(
    index: faiss.Index,
    folder: Path,
    factory: str,
    run: Run,
    search_params: Mapping[str, float],
    options: Options,
    use_gpu: bool | None,
    device: torch.device,
) -> tuple[faiss.Index, dict[str, Any]]:
    """The saved `index` (read from `folder`) moved to every GPU faiss sees unless `use_gpu`
    is False, its parameters set (the knob tuned when `options` has a target), and what was
    searched with its measured recall@K."""
    knob = knob_to_tune(index, factory, options.target_recall, run.k_rows) if options.target_recall is not None else None
    if wants_gpu(use_gpu):
        index = to_gpu(index)
    n_images = len(run.gallery.keys)
    depth = min(run.k, RECALL_DEPTH, n_images)
    tune_rows, report_rows = held_out_samples(np.flatnonzero(run.valid), options.tune_queries, options.seed)
    samples, gallery = {"tune": tune_rows, "report": report_rows}, run.gallery

    truth: dict[str, np.ndarray] = {}

    def exact(sample: str) -> np.ndarray:
        """The exact top images of a sample's queries, searched only if asked (a cached tuning
        does not ask for "tune"). Tuning is followed by the report, so both are searched in
        one pass over the gallery (which may be read from disk) rather than two."""
        if sample not in truth:
            wanted = ("tune", "report") if sample == "tune" else (sample,)
            rows = np.concatenate([samples[name] for name in wanted])
            images = exact_search(run.queries[rows], gallery.vectors, gallery.row_image, n_images, depth, device).images
            truth.update(zip(wanted, np.split(images, [len(samples[wanted[0]])])))
        return truth[sample]

    def recall(sample: str) -> float:
        found = approximate_search(index, run.queries[samples[sample]], gallery.row_image, min(run.k, n_images), run.k_rows,
                                   rescore_from=gallery.vectors if run.rescore else None)
        return recall_at_k(found.images, exact(sample), depth)

    params = dict(search_params)
    if knob is not None:
        def recall_with(value: int) -> float:
            set_search_params(index, {**params, knob.name: value})
            return recall("tune")

        others = {name: value for name, value in params.items() if name != knob.name}
        sample = {"k": depth, "k_rows": run.k_rows, "rescore": run.rescore, "params": others,
                  "queries": _digest(run.queries[tune_rows])}
        params = {**others, knob.name: tuned(folder, knob, options.target_recall, sample, recall_with)["value"]}
    set_search_params(index, params)
    return index, {
        "index": factory,
        "exact": False,
        "k": depth,
        "recall_at_k": round(recall("report"), 4),
        "recall_queries": len(report_rows),
        "held_out": bool(not np.isin(report_rows, tune_rows).any()),
        "params": params,
        "rescore": run.k_rows if run.rescore else None,
        "target_recall": options.target_recall,
        "index_folder": str(folder),
        "index_bytes": (folder / INDEX).stat().st_size,
    }


def approximate_index(
    cache: Path,
    gallery_identity: Mapping[str, Any],
    queries: Features,
    gallery: Features,
    factory: str,
    k: int,
    *,
    k_regions: int | None,
    rescore_rows: int | None,
    search_params: Mapping[str, float],
    options: Options,
    use_gpu: bool | None,
    device: torch.device,
) -> tuple[faiss.Index, dict[str, Any]]:
    """The gallery's index of `factory` (saved under `cache`/indexes, keyed by
    `gallery_identity`: its store's settings and listing; built on first use), ready to rank
    `k` images for `queries`, and the report of its measured recall (`prepare`)."""
    folder = index_folder(cache, gallery_identity, factory, options.train_size, options.seed)
    index = saved_index(folder, gallery.vectors, factory, options.train_size, options.seed, use_gpu)
    k_rows = rows_per_query(gallery.row_image, k, k_regions, rescore_rows)
    run = Run(queries.per_image(), queries.valid, gallery, k, k_rows, rescore=bool(rescore_rows))
    return prepare(index, folder, factory, run, search_params, options, use_gpu, device)


def _digest(vectors: np.ndarray) -> str:
    """Identity of a query sample: its vectors' bytes (so new images or a new model retune)."""
    return hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes()).hexdigest()[:16]
