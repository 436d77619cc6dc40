"""Re-rank steps: what runs after search, resolved by name, in the order the config lists them.

A step is a class registered with `@register("name")` (its docstring's first line describes
it); it is built from its options and called with the ranking so far and the inputs it
declares in `needs`; it returns a ranking. Each step's output is a cached artifact of its
own, so changing a later step never redoes an earlier one, and the ranking's provenance
lists every step. A step that changes the gallery's vectors (`updates_gallery`, as DBA
does) hands them on to the steps after it.

    neighbours.py   exact blockwise top-k among vectors
    expansion.py    the math of query expansion and database-side augmentation
    steps.py        the registered steps: aqe, alpha_qe, dba
    verify.py       geometric verification (local features, robust fit, projected boxes and masks)
    refine.py       re-scoring and re-framing by crops embedded as queries are (local window search)
    rescored.py     the ranking rewritten by a step that re-scores some entries (verify, refine)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.features import Features
from retrieval.ranking import Ranking
from retrieval.records import Box, Dataset, MaskRef
from retrieval.registry import Registry

if TYPE_CHECKING:
    import torch

    from retrieval.models.base import Embedder
    from retrieval.representations import Representation

NEEDS = ("query_vectors", "gallery", "dataset", "query_cutouts", "cache", "query_model")
"""What a step may ask for: the query vectors (n_query, D); the gallery's rows (vectors,
their images, boxes and masks); the dataset (image paths, query boxes and masks); each
query's cut-out as its query mode defines it (`QueryCutout`); the run's cache folder (for
artifacts a step keeps across runs, e.g. local features); the model that embeds the queries'
pixels, and how the run embeds them (`QueryModel`)."""


@dataclass(frozen=True)
class QueryCutout:
    """What of a query image the query mode describes the object by, in image pixels."""

    key: str
    """The query's item key (its image's key, plus the cut-out's digest when it cuts)."""
    path: Path
    box: Box | None
    """None: the whole image."""
    mask: MaskRef | None = field(default=None, compare=False, hash=False)
    """Set when the mode cuts out by the mask (query=mask)."""


@dataclass(frozen=True)
class QueryModel:
    """The image model of the run and how the run embeds a query's pixels with it, so that a
    step embeds other pixels (crops of gallery images) into vectors comparable with the
    query vectors."""

    model: Embedder
    device: torch.device
    precision: str
    """extract.precision: the autocast of every embedding."""
    dtype: str
    """extract.dtype: how the query vectors are stored (a crop's vector is rounded alike)."""
    max_pixels: int
    """extract.max_pixels: larger images are not read."""
    identity: dict[str, Any]
    """What determines the vector of given pixels (model, weights, preprocessing, the queries'
    representation and its learnt state, storage): the settings of the queries' feature store,
    the key of anything made of its vectors."""
    representation: Representation
    """What embeds the queries' pixels (fitted when it learns a state, e.g. a whitening): crops
    go through it as a query's cut-out does."""


@dataclass
class RerankInputs:
    """What the stage hands a step; only what the step declared is loaded."""

    loaders: dict[str, Callable[[], Any]]
    search: Callable[[np.ndarray, Features], Ranking]
    """(query vectors, gallery rows) -> a fresh ranking, with the run's index and depth."""
    allowed: tuple[str, ...] = NEEDS
    """What the step being run declared in `needs`; asking for more is a bug in the step."""
    _loaded: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        if name not in self.allowed:
            raise LookupError(f"a re-rank step asked for {name!r} but declares needs={self.allowed}; declare it")
        if name not in self._loaded:
            self._loaded[name] = self.loaders[name]()
        return self._loaded[name]

    def forget(self, name: str) -> None:
        """Drop a loaded input so the next access loads it again (its loader was replaced)."""
        self._loaded.pop(name, None)

    @property
    def query_vectors(self) -> np.ndarray:
        return self.get("query_vectors")

    @property
    def gallery(self) -> Features:
        return self.get("gallery")

    @property
    def dataset(self) -> Dataset:
        return self.get("dataset")

    @property
    def query_cutouts(self) -> list[QueryCutout]:
        return self.get("query_cutouts")

    @property
    def cache(self) -> Path:
        return self.get("cache")

    @property
    def query_model(self) -> QueryModel:
        return self.get("query_model")


@dataclass
class StepOutput:
    ranking: Ranking
    gallery_vectors: np.ndarray | None = None
    """New vectors of the gallery's rows, for the steps after this one (None: unchanged)."""
    report: dict[str, Any] = field(default_factory=dict)
    """What the step did and skipped (e.g. counts of pairs verified, of images without
    keypoints; where side artifacts are): logged and kept in the artifact's meta."""


class Step:
    """Base of every re-rank step."""

    needs: tuple[str, ...] = ()
    updates_gallery: bool = False

    def settings(self) -> dict[str, Any]:
        """What determines the step's output besides its input ranking (its cache key)."""
        return dict(vars(self))

    def __call__(self, ranking: Ranking, inputs: RerankInputs) -> StepOutput:
        raise NotImplementedError


STEPS: Registry[Callable[..., Step]] = Registry("re-rank step", __name__, modules=None, checked="rerank.{name}")
"""Each step's options are checked on construction against the rules annotated beside its
parameters (`retrieval.config.arguments`), which the config schema reads too."""
register = STEPS.register
available = STEPS.available


def create_step(name: str, **options: Any) -> Step:
    """The step registered as `name`, with its options (an unknown option is an error)."""
    try:
        return STEPS.get(name)(**options)
    except TypeError as error:
        raise ValueError(f"rerank.{name}: {error}") from error


def best_rows(queries: np.ndarray, gallery: Features, images: np.ndarray) -> np.ndarray:
    """(n_query, m) row of each listed image that best matches its query (-1 where the image
    is -1): the vector an image contributes to query expansion is its best-matching row."""
    starts = np.searchsorted(gallery.row_image, np.arange(len(gallery.keys) + 1))
    out = np.full(images.shape, -1, dtype=np.int64)
    for q, row in enumerate(images):
        for position, image in enumerate(row.tolist()):
            if image < 0:
                continue
            lo, hi = starts[image], starts[image + 1]
            if hi - lo == 1:
                out[q, position] = lo
            elif hi > lo:
                scores = gallery.vectors[lo:hi].astype(np.float32) @ queries[q]
                out[q, position] = lo + int(np.argmax(scores))
    return out
