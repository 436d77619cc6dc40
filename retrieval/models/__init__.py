"""Backbones, resolved by family name; presets (architecture + weights) are data in conf/model/.

`create_model(family, **options)` returns an `Embedder`: a torch module that maps a batch of
normalised images to one descriptor each, and carries the `Preprocess` its weights expect,
so the transform always matches the weights (as in timm and open_clip).
`resolve_preprocess(family, **options)` gives that same `Preprocess` from the configurations
alone, without building the network or loading weights; `embedding_dim(family, **options)`
the size of its descriptors (what an index is built for) as cheaply; and `pretrained_weights(family,
**options)` says which named weights it would load and what that downloads (`Pretrained`).

Families whose weights include a text tower (open_clip) also register it:
`create_text_model(family, **options)` returns a `TextEncoder` of the same weights, taking the
same options (those that only touch images, such as input_size, are left out), and
`text_options(family, **options)` and `tokenizer_settings(family, **options)` say, without
building it, exactly what determines its vectors (the weights and the tokenizer): the key of
the feature store of query texts.

Every model is built under one fixed seed (`RANDOM_INIT_SEED`), so random weights
(`pretrained=null` and no checkpoint) are the same network in every stage and process that
builds them; loaded weights replace all of it. What identifies the weights in a store's key
is `retrieval.models.identity`; what results call them, and the check that hub weights can be
had here before any work, `retrieval.models.weights`.
"""
from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch

from retrieval.models.base import Embedder, Pretrained, Preprocess, TextEncoder
from retrieval.registry import Registry

Constructor = Callable[..., Embedder]

FAMILIES: Registry[Constructor] = Registry("model family", __name__, modules=None)
PREPROCESSING: dict[str, Callable[..., Preprocess]] = {}
"""Family name -> its preprocessing resolver, which takes some of the constructor's options
(by the same names, without defaults) and is what the constructor itself calls."""
DIMS: dict[str, Callable[..., int]] = {}
"""Family name -> the resolver of its descriptors' size, which takes some of the constructor's
options as the preprocessing resolver does, and loads no weights."""
PRETRAINED: dict[str, Callable[..., Pretrained]] = {}
"""Family name -> what its named weights are (taking some of the constructor's options, by
the same names), for families whose `pretrained` loads more than a package's own file."""
available = FAMILIES.available
RANDOM_INIT_SEED = 0
"""The seed of the CPU generator while a model is built: its random initialisation."""


@contextlib.contextmanager
def seeded_initialisation() -> Iterator[None]:
    """Build under `RANDOM_INIT_SEED` (the CPU generator only, restored after), so that random
    weights are a function of the settings: the queries and the gallery, extracted by separate
    builds, are embedded by one network."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(RANDOM_INIT_SEED)
        yield


def register_family(
    name: str,
    preprocess: Callable[..., Preprocess],
    dim: Callable[..., int],
    pretrained: Callable[..., Pretrained] | None = None,
) -> Callable[[Constructor], Constructor]:
    """Register a family's constructor under `name`, with the resolvers of its preprocessing
    and of its descriptors' size, and, when its named weights are more than their tag, the
    resolver of what they are."""

    def decorate(constructor: Constructor) -> Constructor:
        PREPROCESSING[name] = preprocess
        DIMS[name] = dim
        if pretrained is not None:
            PRETRAINED[name] = pretrained
        return FAMILIES.register(name)(constructor)

    return decorate


def create_model(family: str, **options: Any) -> Embedder:
    """Build a backbone of `family` (see `available()`), with its matching preprocessing."""
    constructor = FAMILIES.get(family)
    with seeded_initialisation():
        return constructor(**options)


TextConstructor = Callable[..., TextEncoder]
TEXT_TOWERS: dict[str, TextConstructor] = {}
"""Family name -> the constructor of its text tower, whose parameters (without defaults) are
the image constructor's options that the text vectors depend on."""
TOKENIZERS: dict[str, Callable[..., dict[str, Any]]] = {}
"""Family name -> the settings of its tokenizer, from the model's configuration alone."""


def register_text_tower(family: str, tokenizer: Callable[..., dict[str, Any]]) -> Callable[[TextConstructor], TextConstructor]:
    """Register the text tower of `family` (whose image constructor is registered too), with
    the resolver of its tokenizer's settings."""

    def decorate(constructor: TextConstructor) -> TextConstructor:
        TEXT_TOWERS[family] = constructor
        TOKENIZERS[family] = tokenizer
        return constructor

    return decorate


def has_text_tower(family: str) -> bool:
    """Whether `family`'s weights can embed words (its module is imported first)."""
    FAMILIES.get(family)
    return family in TEXT_TOWERS


def bound_options(family: str, options: dict[str, Any]) -> dict[str, Any]:
    """The image constructor's options, checked and defaulted as it does (what it builds from)."""
    bound = inspect.signature(FAMILIES.get(family)).bind(**options)
    bound.apply_defaults()
    return dict(bound.arguments)


def _taken_by(function: Callable, options: dict[str, Any]) -> dict[str, Any]:
    wanted = inspect.signature(function).parameters
    return {name: value for name, value in options.items() if name in wanted}


def _text_tower(family: str) -> TextConstructor:
    if not has_text_tower(family):
        raise ValueError(f"model family {family} has no text tower; families with one: {', '.join(sorted(TEXT_TOWERS))}")
    return TEXT_TOWERS[family]


def text_options(family: str, **options: Any) -> dict[str, Any]:
    """The options the text tower of `create_text_model(family, **options)` is built with
    (defaults applied): what its weights depend on."""
    return _taken_by(_text_tower(family), bound_options(family, options))


def tokenizer_settings(family: str, **options: Any) -> dict[str, Any]:
    """What determines the tokens that tower's tokenizer makes of a text."""
    _text_tower(family)
    tokenizer = TOKENIZERS[family]
    return tokenizer(**_taken_by(tokenizer, bound_options(family, options)))


def create_text_model(family: str, **options: Any) -> TextEncoder:
    """The text tower of the weights `create_model(family, **options)` loads."""
    tower = _text_tower(family)
    taken = _taken_by(tower, bound_options(family, options))
    with seeded_initialisation():
        return tower(**taken)


def resolve_preprocess(family: str, **options: Any) -> Preprocess:
    """The `preprocess` that `create_model(family, **options)` gives its model, from the weights'
    configuration only: options are checked and defaulted as the constructor does, then the
    family's resolver gets the ones it names."""
    bound = bound_options(family, options)  # checks the name, importing the family plug-ins first
    resolver = PREPROCESSING[family]
    return resolver(**_taken_by(resolver, bound))


def embedding_dim(family: str, **options: Any) -> int:
    """The size of the descriptors `create_model(family, **options)` makes (its `dim`), from
    the configurations alone: options are checked and defaulted as the constructor does."""
    bound = bound_options(family, options)
    resolver = DIMS[family]
    return resolver(**_taken_by(resolver, bound))


def pretrained_weights(family: str, **options: Any) -> Pretrained | None:
    """The named weights `create_model(family, **options)` loads (a tag, or a package's own
    weights) and what loading them downloads; None for weights from a checkpoint file or a
    random initialisation (`pretrained` null or false)."""
    bound = bound_options(family, options)
    if bound.get("checkpoint") or ("pretrained" in bound and not bound["pretrained"]):
        return None
    if family not in PRETRAINED:
        return Pretrained(str(bound.get("pretrained", family)))
    resolver = PRETRAINED[family]
    return resolver(**_taken_by(resolver, bound))


__all__ = [
    "Embedder", "Pretrained", "Preprocess", "TextEncoder", "available", "bound_options", "create_model",
    "create_text_model", "embedding_dim", "has_text_tower", "pretrained_weights", "register_family",
    "register_text_tower", "resolve_preprocess",
    "seeded_initialisation", "text_options", "tokenizer_settings",
]
