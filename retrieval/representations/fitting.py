"""What a representation learns before it embeds: a state fitted once on a seeded sample of
images (the gallery's, or those of a training folder) and reused by every run.

A representation that learns says so with `learns()`, which returns its `Sample`; its
`fit(inputs)` sees the sample's items and may embed them with any representation
(`FitInputs.rows`: through the shared extraction loop, into that representation's own store,
so vectors already extracted are reused), and returns its state: a `State`, such as the
vocabulary or the whitening of `retrieval.aggregation`, which saves itself and which the
representation's `state_type.load` reads back. The state is an artifact,
`<cache>/fits/<key>/state.npz`, keyed by the sample (its items' keys, so a changed image
changes it; its size and seed), the model and the representation's settings; the store of the
representation's rows is keyed by the state in turn, so another sample or setting fits again
and embeds again, and the same ones reuse both.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

import numpy as np

from retrieval import artifacts
from retrieval.config.rules import Rule
from retrieval.datasets.listing import IMAGE_SUFFIXES, image_files
from retrieval.errors import UserError
from retrieval.features import Features
from retrieval.features.keys import Item, gallery_items
from retrieval.records import Record

if TYPE_CHECKING:
    from retrieval.representations import Representation

log = logging.getLogger(__name__)

STATE = "state.npz"

Whiten = Annotated[int | None, Rule(low=1)]
"""`representation.whiten`: dimensions kept after the learnt PCA-whitening (None: none)."""
FitImages = Annotated[Path | None, Rule(path=True, exists="folder")]
"""`representation.fit_images`: a folder of training images to sample instead of the gallery."""


class State(Protocol):
    """What a representation learns: it saves itself to a file (its type's `load` reads it)."""

    def save(self, path: Path) -> Path: ...


S = TypeVar("S", bound=State)


@dataclass(frozen=True)
class Sample:
    """The images a representation learns from: `size` of them, chosen with `seed`, from the
    gallery or (`images`) from a folder of training images."""

    size: int
    seed: int
    images: Path | None = None

    @classmethod
    def of(cls, size: int, seed: int, images: str | Path | None) -> "Sample":
        """The sample a representation's options name (`fit_sample`, `fit_seed`, `fit_images`)."""
        return cls(int(size), int(seed), None if images is None else Path(images))


@dataclass
class FitInputs:
    """What `Representation.fit` gets."""

    items: list[Item]
    """The sample, in listing order."""
    rows: Callable[..., Features]
    """`rows(representation, items=None)`: the rows of the sample (or of `items`, a part of it)
    as a representation embeds them (one entry per item, in order)."""


def sample_records(records: list[Record], size: int, seed: int) -> list[Record]:
    """A seeded choice of `size` of the records (all of them when there are fewer), in listing order."""
    if len(records) <= size:
        return list(records)
    chosen = np.sort(np.random.default_rng(seed).choice(len(records), size, replace=False))
    return [records[i] for i in chosen]


def sample_items(sample: Sample, gallery: list[Record], root: Path) -> list[Item]:
    """The items of a representation's sample: of the gallery, or of the training folder."""
    if sample.images is None:
        return gallery_items(sample_records(gallery, sample.size, sample.seed), root)
    folder = Path(sample.images).expanduser()
    if not folder.is_dir():
        raise UserError(f"representation.fit_images={folder} is not a folder; give a folder of training images, or null (the gallery)")
    records = [Record(path=path, key=path.relative_to(folder).as_posix()) for path in image_files(folder)]
    if not records:
        raise UserError(f"representation.fit_images={folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); give a folder that does")
    return gallery_items(sample_records(records, sample.size, sample.seed), folder)


def fit_settings(sample: Sample, items: list[Item], described: dict[str, Any]) -> dict[str, Any]:
    """What a fitted state depends on: the sample (its size, seed, source, and its items' keys)
    and `described`, what determines the rows it is learnt from (model, representation, storage)."""
    digest = hashlib.sha256("\n".join(item.key for item in items).encode()).hexdigest()[:16]
    source = None if sample.images is None else str(Path(sample.images).expanduser().resolve())
    return {"stage": "fit", **described,
            "sample": {"size": sample.size, "seed": sample.seed, "images": source, "items": digest, "count": len(items)}}


def fitted_state(folder: Path, fit: Callable[[], S], load: Callable[[Path], S]) -> S:
    """The state saved in `folder` (read by `load`), fitted by `fit()` first unless it already was."""

    def build(out: Path) -> None:
        log.info("fitting the representation's state into %s", out)
        started = time.perf_counter()
        state = fit()
        state.save(out / STATE)  # atomically
        artifacts.write_meta(out, kind=type(state).__name__, seconds=round(time.perf_counter() - started, 3))

    artifacts.build_once(folder, build, "fit")
    return load(Path(folder) / STATE)
