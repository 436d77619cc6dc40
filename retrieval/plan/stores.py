"""The feature store of each split of a run: which items it holds, what embeds them, where it is.

Splits: `gallery` (images, or their regions), `queries` (the vectors the search reads for each
query: image cut-outs, or the words of a text query) and `texts` (the words of a composed
query, whose `queries` are its image part). A store is keyed by exactly what determines the
rows of any item (`store_settings`), never by the listing: items are found in it by their keys.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval import artifacts
from retrieval.errors import UserError
from retrieval.features import Features
from retrieval.features.keys import Item
from retrieval.features.store import ShardSetAside, Store
from retrieval.plan.model import ModelSpec
from retrieval.representations import Representation
from retrieval.search.exact import OutOfRangeScores

SPLITS = ("queries", "texts", "gallery")


class MismatchError(UserError, ValueError):
    """Inputs of a stage that were not made to go together."""


def store_settings(model: ModelSpec, representation: Representation, dtype: str, fit: FitSpec | None = None) -> dict[str, Any]:
    """Exactly what determines the rows of any item: model (weights, and for images their
    preprocessing; for texts the text tower's weights, the tokenizer being the representation's),
    representation (and the state it learnt) and storage."""
    described = model.text_settings() if representation.embeds_words else model.image_settings()
    fitted = {} if fit is None else {"fit": fit.folder.name}
    return {"stage": "features", **described, **representation.settings(), **fitted, "dtype": dtype}


def features_folder(cache: Path, settings: dict[str, Any]) -> Path:
    """The store the settings key, under the cache."""
    return artifacts.artifact_dir(cache, "features", settings)


def chosen_store(split: str, folder: Path) -> Path:
    """`search.<split>`: an existing store, used as it is."""
    folder = Path(folder).expanduser()
    if not (folder / "config.yaml").is_file():
        raise MismatchError(f"search.{split}={folder} is not a feature store (no config.yaml); run python extract.py first")
    return folder


@dataclass(frozen=True)
class FitSpec:
    """What a learning representation fits its state on, and where the state is kept
    (`retrieval.representations.fitting`)."""

    folder: Path
    """The state's artifact, keyed by the sample and what the rows it learns from depend on."""
    items: list[Item]
    """The sample."""


@dataclass(frozen=True)
class StoreSpec:
    """One split's store: its items (in record order, the keys they are stored under), the
    representation that embeds them, and where their rows are."""

    split: str
    folder: Path
    representation: Representation
    items: list[Item]
    record_keys: list[str]
    """Per item, the key of its record (what a ranking names it by)."""
    shard_size: int
    """Items per resumable shard."""
    chosen: bool
    """Given by `search.<split>` (an existing store, not extracted into)."""
    mapped: bool = False
    """Vectors left in their shards when loaded (a gallery under `search.memory_budget`)."""
    fit: FitSpec | None = None
    """The state the representation embeds with, for one that learns one."""

    @property
    def item_keys(self) -> list[str]:
        return [item.key for item in self.items]

    def load(self) -> Features:
        """The split's rows, in record order; mapped: the vectors stay in the shards."""
        return Store(self.folder).gather(self.item_keys, self.record_keys, mapped=self.mapped)

    def settings(self) -> dict[str, Any]:
        """The store's settings, as it wrote them (config.yaml)."""
        return artifacts.read_yaml(self.folder / "config.yaml")

    def model_name(self) -> str:
        """The model the store's vectors come from."""
        return str(self.settings()["model"]["name"])

    def listing_digest(self) -> str:
        """A hash of the item keys: changes when an image (or a query's cut-out) does."""
        return hashlib.sha256("\n".join(self.item_keys).encode()).hexdigest()[:16]

    def identity(self) -> dict[str, Any]:
        """What the split's vectors are: the store's settings and the listing's digest."""
        return {"store": self.settings(), "items": self.listing_digest()}

    def set_aside_corrupt(self, rows: Features, error: OutOfRangeScores) -> ShardSetAside:
        """Set aside the shard holding the row a search found corrupt, so that extraction
        rebuilds it; returns the error that says so."""
        image = int(rows.row_image[error.row])
        why = f"holds a corrupt vector of {rows.keys[image]} (it scores {error.score:.3g} against a query, which no two unit vectors can)"
        aside = Store(self.folder).set_aside_item(self.items[image].key, why)
        return ShardSetAside(aside.with_suffix(""), why)
