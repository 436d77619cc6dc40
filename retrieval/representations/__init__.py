"""Representations: what describes an image, resolved by name.

Every representation turns an image into rows of the one form (`retrieval.features`):
`global` gives one vector per image (or per query cut-out), `text` one per query's words;
`roi` and `crop` give the
regions of an image (the whole image first, then what the configured proposers found:
grid windows, segments, SAM masks), each with its box and mask, pooled from a few backbone
passes or embedded one crop at a time. A representation has two halves that the shared
extraction loop (`retrieval.features.extract`) drives:

- `worker_dataset(items, model)`: a torch Dataset whose items are dicts with `position`,
  `error` ("" when fine) and the uint8 pixels to embed, made in DataLoader workers;
- `embed(model, prepared, device, precision, batch_size)`: one `Rows` per prepared item.

`settings()` is exactly what determines the rows besides the model and the storage dtype:
the key of the feature store they live in.

A representation may learn a state first (a codebook, a PCA-whitening) from a seeded sample of
images: `learns()` returns its `Sample`, `fit(inputs)` the state (an object that saves itself
and that `state_type.load` reads back: a `retrieval.aggregation` vocabulary or whitening),
`fitted(state)` the representation that embeds with it (`retrieval.representations.fitting`). Queries are cut out
by the query mode and encoded by the gallery's representation when it `encodes_queries`, else
by `global`. One that does not localise gives rows without boxes.

Its options are its constructor's parameters besides the run's context (`CONTEXT`), each
typed and limited beside it (`Annotated[int, Rule(low=1)]`): the `representation` config
node's schema, checked on every construction too.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from retrieval.features.keys import Item
from retrieval.models.base import Embedder
from retrieval.registry import Registry

if TYPE_CHECKING:
    from retrieval.representations.fitting import FitInputs, Sample, State


@dataclass
class Rows:
    """One item's rows, as a representation's device half returns them."""

    vectors: torch.Tensor | np.ndarray
    boxes: np.ndarray | None = None
    sources: np.ndarray | None = None
    masks: list[str] | None = None


class Representation:
    """Base of every representation (see the module docstring)."""

    localises: bool = False
    """Whether rows carry boxes (and masks): rankings then say where the object is."""
    localises_results: bool = False
    """Whether the object is found in each query's top results after search (`rmac`'s AML):
    the search stage's finishing step (`retrieval.search.localise`) then sets their boxes."""
    main_process: bool = False
    """Whether preparation must run in the main process (a proposer holding a CUDA model)."""
    embeds_words: bool = False
    """Whether items are texts for the model's text tower (whose store the image preprocessing
    does not key)."""
    encodes_queries: bool = False
    """Whether query cut-outs are encoded by this representation too (with the query's mode);
    False: by `global`, one whole-image vector each."""
    source_names: list[str] = []
    image_scores: str = "max"
    """How a gallery image's score is made from its rows' similarities to the query's rows:
    "max", its best row's (a query is one row); SEGMENT_VOTES, the query's rows each voting
    for the images of their nearest rows (SegVLAD; a query is several rows)."""

    state: State | None = None
    """What `fit` learnt, once `fitted` gives it."""
    state_type: type[State] | None = None
    """The type of that state (its `load` reads a saved one), for a representation that learns."""

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def learns(self) -> "Sample | None":
        """The sample this representation learns its state from (None: it learns nothing)."""
        return None

    def fit(self, inputs: "FitInputs") -> State:
        """The state learnt from the sample `learns()` names."""
        raise NotImplementedError

    def fitted(self, state: State) -> "Representation":
        """A copy that embeds with `state`."""
        clone = copy.copy(self)
        clone.state = state
        return clone

    def worker_dataset(self, items: Sequence[Item], model: Embedder) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def images_per_batch(self, batch_size: int) -> int:
        return batch_size

    def plan(self, items: Sequence[Item]) -> str | None:
        """What embedding each of `items` will take, said before it starts where that is more
        than one pass per item (None: nothing to say)."""
        return None

    def embed(self, model: Embedder, prepared: list[dict], device: torch.device, precision: str, batch_size: int) -> list[Rows]:
        raise NotImplementedError


SEGMENT_VOTES = "segment_votes"
"""`image_scores` of a representation whose queries' rows vote (`retrieval.search.votes`)."""


REPRESENTATIONS: Registry[Callable[..., Representation]] = Registry("representation", __name__, modules=None, checked="representation")
register = REPRESENTATIONS.register
available = REPRESENTATIONS.available


CONTEXT = ("max_pixels", "proposals", "mode", "mode_options", "tokenizer")
"""Constructor parameters the run supplies, not the user: the pixel cap, the regions' proposers,
a query's image mode with its options, the text tower's tokenizer. Every other parameter is an
option of the representation's config node (`representation.<name>`)."""


def create_representation(name: str, **arguments: Any) -> Representation:
    """The representation registered as `name`, with its options and context."""
    return REPRESENTATIONS.get(name)(**arguments)


def _parameters(name: str) -> dict[str, inspect.Parameter]:
    return {key: p for key, p in inspect.signature(REPRESENTATIONS.get(name)).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def options_of(name: str) -> tuple[str, ...]:
    """The options of representation `name`: its constructor's parameters besides the context."""
    return tuple(key for key in _parameters(name) if key not in CONTEXT)


def takes(name: str, parameter: str) -> bool:
    """Whether representation `name` takes `parameter` (e.g. `proposals`: it describes regions)."""
    return parameter in _parameters(name)


def needs_regions(name: str) -> bool:
    """Whether representation `name` describes regions that only a regions config proposes (its
    `proposals` have no default of its own, as `segvlad`'s offline segments are)."""
    parameter = _parameters(name).get("proposals")
    return parameter is not None and parameter.default is inspect.Parameter.empty
