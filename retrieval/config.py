"""The schema of the configuration, checked before any work starts.

Every option of every group has a type, and where it matters bounds and choices; a value
that cannot work stops the run with one line naming the key, the value and what would do,
before a dataset, a model or an index is touched (so no leaderboard row either):

    extract.dtype=float61 is not valid: choose float32 or float16
    extract.bach_size is not an option of extract: did you mean batch_size?

Choices come from the registries (dataset formats, model families, query modes, proposers,
representations, re-rank steps, protocols), and the options a format, family, mode,
proposer, step or protocol takes are its entry's keyword parameters, typed by their hints:
adding a plug-in extends the schema without touching this file. The few fixed choices are
imported from the modules that act on them (precisions, storage dtypes, mask fills, VPR
ground-truth kinds).

Defaults are stated once, in the YAML under conf/. A key the YAML may leave out (`optional`)
takes the code's default (the entry's signature, or the stage that reads it); the schema
never restates one, and filling them in here would change the settings that cached
artifacts are keyed by.

Why not dataclasses in Hydra's ConfigStore: Hydra validates those while composing, before
the task function runs, so its multi-line OmegaConf errors end the run with status 1 and
no `cli.user_errors` in between; and the options of `dataset`, `model`, `query` and the
proposers depend on the chosen format, family, mode or proposer (a union OmegaConf cannot
type), as do cross-key checks such as the FAISS factory.

    check(cfg)                  raise ConfigError unless the composed config is valid
    check_groups(cfg)           what needs several groups together (query=text and the model)
    resolve(cfg) -> dict        both checks, then a plain dict with `~` expanded in every path option
    expand_paths(cfg) -> dict   only the expansion
    check_dataset(cfg, dataset) what needs the loaded dataset (query=mask, protocol options)
    check_index(factory, ...)   the FAISS factory and search parameters, at any dimension
"""
from __future__ import annotations

import collections.abc
import copy
import dataclasses
import difflib
import fnmatch
import functools
import inspect
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from retrieval.errors import UserError
from retrieval.records import Dataset
from retrieval.registry import Registry

from retrieval.datasets.vpr import POSITIVES as VPR_POSITIVES
from retrieval.device import PRECISIONS
from retrieval.features.extract import STORAGE
from retrieval.queries import FILLS

DTYPES = tuple(STORAGE)

REPRESENTATIVE_DIM = 7680
"""The descriptor size index.factory is checked at before a model gives the real one: the
least common multiple of the shipped models' sizes (384 DINOv2-S, 512 CLIP-B, 768 DINOv2-B
and CLIP-L, 1280 EfficientNet-Lite0), so a PQ or OPQ sub-quantizer count that divides the
size of any of them divides it too and no factory valid for a shipped model is refused."""
MAX_CODE_BITS = 16
"""Most bits per code (the `x16` of PQ32x16) a factory may ask for: faiss allows 24, but a
code of b bits needs a 2^b x d codebook (2 GB at 16 bits and the dimension above, 515 GB at
24), which the check itself would have to allocate."""
MISSING = "???"
"""OmegaConf's mark of a mandatory value nobody set (e.g. dataset.root of dataset=folder)."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work; the message is one line naming key, value and what would do."""


@dataclass(frozen=True)
class Rule:
    """What an option's value must be beyond its type hint, and what kind of option it is."""

    low: float | None = None
    """Inclusive bounds of a number, or of every number of a list."""
    high: float | None = None
    above: float | None = None
    """Exclusive bounds."""
    below: float | None = None
    choices: Callable[[], Iterable[str]] | None = None
    """The strings allowed, read when checking (registries fill up on first use)."""
    test: Callable[[Any], str | None] | None = None
    """A further test of a well-typed value: what to use instead, or None when it is fine."""
    path: bool = False
    """Names a file or folder: `~` is expanded."""
    exists: str | None = None
    """"file" or "folder": a path that must exist when set."""
    nullable: bool = True
    """False: null is refused even where the type hint allows it."""
    optional: bool = False
    """May be left out: the code's default applies."""
    schema: Callable[[str, Mapping[str, Any]], "Schema"] | None = None
    """(key, node) -> the options of a nested node, which may depend on the node."""


@dataclass(frozen=True)
class Option:
    hint: Any
    rule: Rule


@dataclass(frozen=True)
class Schema:
    """The options a config node may hold, and how messages name the node."""

    label: str
    options: dict[str, Option]


def opt(**rule: Any) -> Any:
    """A schema dataclass field: its annotation is the type, `rule` the rest."""
    return field(metadata={"rule": Rule(**rule)})


# ---------------------------------------------------------------- choices and tests


def _formats() -> Iterable[str]:
    from retrieval.datasets import LOADERS

    return LOADERS.available()


def _families() -> Iterable[str]:
    from retrieval.models import FAMILIES

    return FAMILIES.available()


def _modes() -> Iterable[str]:
    """query.name: an image mode, or a kind of query with words (text, composed)."""
    from retrieval.queries.spec import TEXT_KINDS

    return [*_image_modes(), *TEXT_KINDS]


def _image_modes() -> Iterable[str]:
    from retrieval.queries import MODES

    return MODES.available()


def _combinations() -> Iterable[str]:
    from retrieval.composed import COMBINATIONS

    return COMBINATIONS.available()


def _poolings() -> Iterable[str]:
    """The representations that describe an image by its regions (the ones that localise)."""
    from retrieval.representations import REPRESENTATIONS

    return [name for name in REPRESENTATIONS.available() if REPRESENTATIONS.get(name).localises]


def _aggregations() -> Iterable[str]:
    from retrieval.search import AGGREGATIONS

    return AGGREGATIONS


def _resize_modes() -> Iterable[str]:
    from retrieval.models.base import RESIZE_MODES

    return RESIZE_MODES


def _sam_model_types() -> Iterable[str]:
    """Segment Anything's own registry of model types; the package is needed to use SAM at all."""
    try:
        from segment_anything import sam_model_registry
    except ImportError:
        raise ConfigError(
            "regions.proposals.sam needs the segment_anything package: "
            "pip install git+https://github.com/facebookresearch/segment-anything"
        ) from None
    return sam_model_registry


def _device_problem(name: str) -> str | None:
    """Why torch cannot compute on device `name` here (None: it can)."""
    if name == "auto":
        return None
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        return "choose auto or a torch device such as cpu, cuda or cuda:1"
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return "torch sees no CUDA device here; use auto or cpu"
        if device.index is not None and device.index >= count:
            return f"torch sees {count} CUDA device(s): use cuda:0 to cuda:{count - 1}, or auto"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return "torch sees no MPS device here; use auto or cpu"
    return None


def _gpu_problem(use_gpu: bool) -> str | None:
    """index.gpu=true needs faiss to see a GPU (a CPU-only build never does)."""
    import faiss

    if use_gpu and getattr(faiss, "get_num_gpus", lambda: 0)() == 0:
        return "faiss sees no GPU here; use null (the GPU when there is one) or false"
    return None


# ---------------------------------------------------------------- the schema

REFINEMENTS: dict[str, Rule] = {
    "dataset.seed": Rule(low=0),
    "dataset.radius_m": Rule(above=0),
    "dataset.positives": Rule(choices=lambda: VPR_POSITIVES),
    # files and folders relative to dataset.root (an absolute path is used as it is)
    **{f"dataset.{name}": Rule(path=True) for name in (
        "queries", "database", "ground_truth", "query_cameras", "database_cameras", "image_list", "pairs"
    )},
    "model.checkpoint": Rule(path=True, exists="file"),
    "model.input_size": Rule(low=1),
    "model.gem_p": Rule(above=0),
    "model.resize": Rule(choices=_resize_modes),
    "query.margin": Rule(above=-0.5),
    "query.fill": Rule(choices=lambda: FILLS, low=0, high=255),
    "query.blur_sigma": Rule(above=0),
    "regions.proposals.grid.scales": Rule(above=0, high=1),
    "regions.proposals.grid.overlap": Rule(low=0, below=1),
    "regions.proposals.segments.scales": Rule(above=0),
    "regions.proposals.segments.sigma": Rule(low=0),
    "regions.proposals.segments.min_area": Rule(low=0, high=1),
    "regions.proposals.segments.max_area": Rule(above=0, high=1),
    "regions.proposals.segments.dedupe_iou": Rule(above=0, high=1),
    "regions.proposals.sam.checkpoint": Rule(path=True, exists="file", nullable=False),
    "regions.proposals.sam.model_type": Rule(choices=_sam_model_types),
    "regions.proposals.sam.device": Rule(test=_device_problem),
    "regions.proposals.*.min_side": Rule(low=1),
    "regions.proposals.*.max_side": Rule(low=1),
    "regions.proposals.*.points_per_side": Rule(low=1),
    "regions.proposals.*.max_regions": Rule(low=1),
    "rerank.*.k": Rule(low=1),
    "rerank.*.alpha": Rule(low=0),
    "dataset.protocol_options.*": Rule(low=1),
}
"""Rules of the options read from registered entries' signatures, by dotted key (`*` = any
name). `dataset.protocol_options.*`: every numeric protocol option is a depth or cut-off."""

PROTOCOL_CHOICES = {"ap": "AP_MODES", "denominator": "DENOMINATORS"}
"""Protocol option -> the constant of the protocol's own module that lists its values."""


def _dataset_schema(key: str, node: Mapping[str, Any]) -> Schema:
    from retrieval.datasets import LOADERS

    common = _dataclass_schema(DatasetCommon, key)
    name = _selector(key, node, "format", common)
    return Schema(f"dataset format {name}", {**_signature_options(LOADERS.get(name), key), **common.options})


def _model_schema(key: str, node: Mapping[str, Any]) -> Schema:
    from retrieval.models import FAMILIES

    common = _dataclass_schema(ModelCommon, key)
    name = _selector(key, node, "family", common)
    return Schema(f"model family {name}", {**_signature_options(FAMILIES.get(name), key), **common.options})


def _query_schema(key: str, node: Mapping[str, Any]) -> Schema:
    """An image mode's options; query=text: the query file; query=composed: the query file,
    the image mode that cuts out the image part (`cut`) with its options, and the combination."""
    from retrieval.queries import MODES
    from retrieval.queries.spec import TEXT_KINDS

    common = _dataclass_schema(QueryCommon, key)
    name = _selector(key, node, "name", common)
    if name not in TEXT_KINDS:
        options = _signature_options(MODES.get(name), key, skip=("image", "instance"))
        return Schema(f"query={name}", {**options, **common.options})
    words = {**common.options, "file": Option(Path | None, Rule(path=True, exists="file", optional=True))}
    if name == "text":
        return Schema(f"query={name}", words)
    composed = _dataclass_schema(ComposedQuery, key).options
    cut = _selector(key, node, "cut", Schema(f"query={name}", composed))
    options = _signature_options(MODES.get(cut), key, skip=("image", "instance"))
    weight = Option(float, Rule(low=0, high=1))  # `lambda` cannot name a dataclass field
    return Schema(f"query={name} with cut={cut}", {**options, **words, **composed, "lambda": weight})


def _proposals_schema(key: str, node: Mapping[str, Any]) -> Schema:
    from retrieval.regions.proposals import PROPOSERS

    return _entries_schema(key, PROPOSERS, skip=("image",))


def _rerank_schema(key: str, node: Mapping[str, Any]) -> Schema:
    from retrieval.rerank import STEPS

    return _entries_schema(key, STEPS)


def _entries_schema(key: str, registry: Registry, skip: tuple[str, ...] = ()) -> Schema:
    """A node of registered entries by name (proposers, re-rank steps), each with its options."""

    def entry(name: str, key: str, node: Mapping[str, Any]) -> Schema:
        return Schema(f"{registry.kind} {name}", _signature_options(registry.get(name), key, skip))

    return Schema(key, {
        name: Option(dict | None, Rule(optional=True, schema=functools.partial(entry, name))) for name in registry.available()
    })


def _protocol_schema(protocol: str) -> Schema:
    """A protocol's options: its keyword parameters, and the localisation flags it declares."""
    from retrieval.protocols import PROTOCOLS, localisation_spec

    entry = PROTOCOLS.get(protocol)
    options = _signature_options(entry, "dataset.protocol_options", skip=("ranking", "dataset"))
    module = sys.modules[entry.__module__]
    for name, constant in PROTOCOL_CHOICES.items():
        if name in options and hasattr(module, constant):
            values = tuple(getattr(module, constant))
            options[name] = Option(options[name].hint, dataclasses.replace(options[name].rule, choices=lambda v=values: v))
    flags = {name: Option(bool, Rule(optional=True)) for name in localisation_spec(protocol).options}
    return Schema(f"protocol {protocol}", {**options, **flags})


# One dataclass per group: a field's annotation is the key's type, `opt` the rest of its rule.
# No defaults here: conf/ states them, and an `optional` key left out takes the code's.


@dataclass
class Paths:
    cache: Path = opt(path=True)
    data: Path = opt(path=True, optional=True)
    leaderboard: Path = opt(path=True)


@dataclass
class Extract:
    device: str = opt(test=_device_problem)
    precision: str = opt(choices=lambda: PRECISIONS)
    batch_size: int = opt(low=1)
    workers: int = opt(low=0)
    shard_size: int = opt(low=1)
    dtype: str = opt(choices=lambda: DTYPES)
    max_pixels: int = opt(low=1)


@dataclass
class Search:
    block_size: int = opt(low=1)
    queries: Path | None = opt(path=True, exists="folder", optional=True)
    gallery: Path | None = opt(path=True, exists="folder", optional=True)


@dataclass
class Eval:
    ranking: Path | None = opt(path=True, exists="file", optional=True)
    report: bool = opt(optional=True)
    report_top_k: int = opt(low=1, optional=True)


@dataclass
class Index:
    name: str = opt()
    factory: str = opt()
    gpu: bool | None = opt(test=_gpu_problem, optional=True)
    search_params: dict[str, float] | None = opt(optional=True)


@dataclass
class Regions:
    name: str = opt()
    pooling: str = opt(choices=_poolings, optional=True)
    input_sizes: list[int] = opt(low=32, optional=True)
    roi_size: int = opt(low=1, optional=True)
    crop_size: int | None = opt(low=1, optional=True)
    shard_images: int = opt(low=1, optional=True)
    aggregate: str = opt(choices=_aggregations, optional=True)
    k_regions: int | None = opt(low=1, optional=True)
    proposals: dict[str, Any] | None = opt(schema=_proposals_schema, optional=True)


@dataclass
class DatasetCommon:
    """The keys of every dataset besides its format's loader options."""

    format: str = opt(choices=_formats)
    k: int | None = opt(low=1, optional=True)
    protocol_options: dict[str, Any] | None = opt(optional=True)
    """Checked by `check_dataset`: which protocol scores a dataset is known once it is loaded."""


@dataclass
class ModelCommon:
    name: str = opt()
    family: str = opt(choices=_families)


@dataclass
class QueryCommon:
    name: str = opt(choices=_modes)


@dataclass
class ComposedQuery:
    """query=composed's own keys besides name, file and lambda."""

    cut: str = opt(choices=_image_modes)
    combine: str = opt(choices=_combinations)


@dataclass
class Config:
    paths: Paths = opt()
    extract: Extract = opt()
    search: Search = opt()
    eval: Eval = opt()
    dataset: dict = opt(schema=_dataset_schema)
    model: dict = opt(schema=_model_schema)
    query: dict = opt(schema=_query_schema)
    index: Index = opt()
    regions: Regions = opt(optional=True)
    rerank: dict | None = opt(schema=_rerank_schema, optional=True)
    hydra: Any = opt(optional=True)
    """Hydra's own node, in a config composed with it; Hydra checks it."""


def _dataclass_schema(cls: type, label: str) -> Schema:
    hints = typing.get_type_hints(cls)
    return Schema(label, {f.name: Option(hints[f.name], f.metadata.get("rule", Rule())) for f in dataclasses.fields(cls)})


def _signature_options(entry: Callable, prefix: str, skip: Iterable[str] = ()) -> dict[str, Option]:
    """The keyword options of a registered function or class: its parameters, typed by their
    hints, with the rules REFINEMENTS gives them; one with a default may be left out."""
    hints = typing.get_type_hints(entry.__init__ if isinstance(entry, type) else entry)
    options = {}
    for name, parameter in inspect.signature(entry).parameters.items():
        if name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        rule = _refinement(f"{prefix}.{name}")
        options[name] = Option(hints.get(name, Any), dataclasses.replace(rule, optional=parameter.default is not parameter.empty))
    return options


def _refinement(key: str) -> Rule:
    return next((rule for pattern, rule in REFINEMENTS.items() if fnmatch.fnmatchcase(key, pattern)), Rule())


def _selector(key: str, node: Mapping[str, Any], name: str, common: Schema) -> str:
    """The value of the key that picks a node's other options (format, family, mode), checked."""
    _check_present(f"{key}.{name}", node, name, common)
    _check_value(f"{key}.{name}", node[name], common.options[name])
    return node[name]


# ---------------------------------------------------------------- checking


def check(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError unless every option of the composed config (a DictConfig or a plain
    dict) is known and valid, the FAISS factory included."""
    tree = _plain(cfg)
    _check_node("", tree, _dataclass_schema(Config, "the config"))
    index = tree["index"]
    check_index(index["factory"], index.get("search_params"))


def check_groups(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError unless the groups of a valid config work together: queries with words
    need a model with a text tower; composed queries are ranked exactly from two vectors each,
    so no approximate index and no re-rank step (which expands one)."""
    from retrieval.models import has_text_tower
    from retrieval.queries.spec import query_spec

    tree = _plain(cfg)
    query = query_spec(tree["query"])
    if not query.text:
        return
    model = tree["model"]
    if not has_text_tower(model["family"]):
        raise ConfigError(
            f"query={query.name} needs a model with a text tower, and model={model['name']} (family {model['family']}) "
            f"has none: use {_text_presets()}"
        )
    if query.composed and tree["index"]["factory"] != "Flat":
        raise ConfigError(
            f"query=composed is ranked exactly over the whole gallery: use index=flat, not index={tree['index']['name']}"
        )
    if query.composed and tree.get("rerank"):
        steps = ",".join(tree["rerank"])
        raise ConfigError(f"query=composed has two vectors per query, which re-rank steps cannot expand: drop rerank=[{steps}]")


MODEL_PRESETS = Path(__file__).resolve().parents[1] / "conf" / "model"


def _text_presets() -> str:
    """The model presets (conf/model/*.yaml) whose family has a text tower, as a choice."""
    from omegaconf import OmegaConf

    from retrieval.models import FAMILIES, TEXT_TOWERS

    FAMILIES.available()  # imports every family, which registers its text tower
    names = sorted(path.stem for path in MODEL_PRESETS.glob("*.yaml") if OmegaConf.load(path).get("family") in TEXT_TOWERS)
    return "model=" + _or(names) if names else "a model of family " + _or(sorted(TEXT_TOWERS))


def resolve(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The checked config (each option, then the groups together) as a plain dict
    (interpolations resolved), `~` expanded in every path."""
    tree = _plain(cfg)
    check(tree)
    check_groups(tree)
    return expand_paths(tree)


def expand_paths(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of the config with `~` expanded in every path option, so that
    paths.cache=~/cache never makes a folder named `~`."""
    tree = _plain(cfg)
    _expand_node("", tree, _dataclass_schema(Config, "the config"))
    return tree


def check_dataset(cfg: Mapping[str, Any], dataset: Dataset) -> None:
    """What can only be checked once the dataset is loaded (still before any model): that
    query=mask (or query.cut=mask) has masks to cut with, that text and composed queries have
    words (and composed ones images), and the options of the protocol the dataset uses."""
    from retrieval.queries.files import NO_IMAGE
    from retrieval.queries.spec import query_spec

    tree = _plain(cfg)
    query = query_spec(tree["query"])
    if query.image_mode == "mask" and not any(
        instance.mask is not None for record in dataset.queries for instance in record.instances
    ):
        key = "query.cut" if query.composed else "query"
        raise ConfigError(f"{key}=mask needs masks but dataset {dataset.name} has none: use {key}=box or {key}=full")
    if query.text and not any(record.text for record in dataset.queries):
        raise ConfigError(
            f"query={query.name} needs words, and the queries of dataset {dataset.name} have none: "
            "give query.file=<csv or json> (columns id, text, and instance or positives)"
        )
    if query.composed:
        imageless = next((record.key for record in dataset.queries if record.path == NO_IMAGE), None)
        if imageless is not None:
            raise ConfigError(f"query=composed needs an image per query, and query {imageless} has none: "
                              "add an image column to query.file, or use query=text")
    options = tree["dataset"].get("protocol_options") or {}
    _check_node("dataset.protocol_options", options, _protocol_schema(dataset.protocol))


def check_index(factory: str, search_params: Mapping[str, float] | None = None, dim: int = REPRESENTATIVE_DIM) -> None:
    """Raise ConfigError unless faiss builds `factory` for inner-product search at `dim` and
    accepts every search parameter. Checked at REPRESENTATIVE_DIM before the model is known;
    callers that know the real dimension can check again with it."""
    import faiss

    bits = [int(b) for b in re.findall(r"x(\d+)", factory)]
    if bits and max(bits) > MAX_CODE_BITS:
        raise ConfigError(
            f"index.factory={factory} is not valid: use at most {MAX_CODE_BITS} bits per code "
            f"(x{MAX_CODE_BITS}); x{max(bits)} means {2 ** max(bits)}-entry codebooks"
        )
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise ConfigError(
            f"index.factory={factory} is not valid: faiss cannot build it for inner product at d={dim} "
            f"({_faiss_reason(error)}); use a faiss index_factory string such as Flat, HNSW32 or IVF1024,PQ32"
        ) from None
    space = faiss.ParameterSpace()
    for name, value in (search_params or {}).items():
        try:
            space.set_index_parameter(index, name, float(value))
        except RuntimeError:
            space.initialize(index)
            known = [space.parameter_ranges.at(i).name for i in range(space.parameter_ranges.size())]
            raise ConfigError(_unknown(f"index.search_params.{name}", f"index.factory={factory}", known)) from None


def _faiss_reason(error: RuntimeError) -> str:
    """The sentence of a faiss exception, without its C++ location ("Error in ... at file:line: ")."""
    text = (str(error).strip().splitlines() or [repr(error)])[0]
    located = re.search(r" at \S+:\d+: (.*)", text)
    reason = located.group(1) if located else text
    return re.sub(r"^Error: '.*' failed: ", "", reason).rstrip(".")


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A plain, private copy: OmegaConf nodes resolved, unset mandatory values left as "???"."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not OmegaConf.is_config(cfg):
        return copy.deepcopy(dict(cfg))
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as error:
        reason = str(error).strip().splitlines()[0]
        raise ConfigError(f"{getattr(error, 'full_key', None) or 'the config'} is not valid: {reason}") from None


def _check_node(key: str, node: Mapping[str, Any], schema: Schema) -> None:
    for name in node:
        if name not in schema.options:
            raise ConfigError(_unknown(_join(key, name), schema.label, schema.options))
    for name, option in schema.options.items():
        if name not in node and option.rule.optional:
            continue
        _check_present(_join(key, name), node, name, schema)
        _check_value(_join(key, name), node[name], option)
        nested = _nested(_join(key, name), node[name], option)
        if nested is not None:
            _check_node(_join(key, name), node[name], nested)


def _expand_node(key: str, node: dict[str, Any], schema: Schema) -> None:
    for name, option in schema.options.items():
        if name not in node:
            continue
        value = node[name]
        if isinstance(value, str) and (option.rule.path or _names_path(option.hint)):
            node[name] = os.path.expanduser(value)
        nested = _nested(_join(key, name), value, option)
        if nested is not None:
            _expand_node(_join(key, name), value, nested)


def _nested(key: str, value: Any, option: Option) -> Schema | None:
    if not isinstance(value, Mapping):
        return None
    if option.rule.schema is not None:
        return option.rule.schema(key, value)
    if dataclasses.is_dataclass(option.hint):
        return _dataclass_schema(option.hint, key)
    return None


def _check_present(key: str, node: Mapping[str, Any], name: str, schema: Schema) -> None:
    if name not in node or (isinstance(node[name], str) and node[name] == MISSING):
        placeholder = "path" if _names_path(schema.options[name].hint) or schema.options[name].rule.path else "value"
        raise ConfigError(f"{key} is required by {schema.label or 'the config'}: add {key}=<{placeholder}>")


def _check_value(key: str, value: Any, option: Option) -> None:
    rule = option.rule
    entries = _entry_hint(option.hint)
    if isinstance(value, Mapping) and entries is not None:  # e.g. index.search_params: name -> number
        for name, entry in value.items():
            _check_value(f"{key}.{name}", entry, Option(entries, Rule()))
        return
    if not _fits(value, option.hint, rule):
        problem = _expected(option.hint, rule)
    elif value is None:
        return
    else:
        problem = (rule.test(value) if rule.test else None) or _existence_problem(value, rule.exists)
        if problem is None:
            return
    raise ConfigError(f"{key}={_show(value)} is not valid: {problem}")


def _existence_problem(value: Any, kind: str | None) -> str | None:
    if kind is None:
        return None
    path = Path(os.path.expanduser(str(value))).absolute()
    found = path.is_file() if kind == "file" else path.is_dir()
    return None if found else f"no {kind} at {path}"


def _unknown(key: str, label: str, options: Iterable[str]) -> str:
    name = key.rsplit(".", 1)[-1]
    names = sorted(options)
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"{key} is not an option of {label}: did you mean {close[0]}?"
    if not names:
        return f"{key} is not an option of {label}: it takes none"
    return f"{key} is not an option of {label}: its options are {', '.join(names)}"


# ---------------------------------------------------------------- types, in code and in words

_SEQUENCES = {list, tuple, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection}
_MAPPINGS = {dict, collections.abc.Mapping}
_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def _members(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)


def _entry_hint(hint: Any) -> Any:
    """V of a dict[str, V] hint (or of one in a union); None for any other hint."""
    for member in _members(hint):
        if typing.get_origin(member) in _MAPPINGS and len(typing.get_args(member)) == 2:
            return typing.get_args(member)[1]
    return None


def _is_path_type(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, os.PathLike)


def _names_path(hint: Any) -> bool:
    return any(_is_path_type(member) for member in _members(hint))


def _fits(value: Any, hint: Any, rule: Rule) -> bool:
    if value is None:
        return rule.nullable and type(None) in _members(hint)
    if isinstance(value, str) and rule.choices is not None:
        return value in tuple(rule.choices())
    return any(_fits_type(value, member, rule) for member in _members(hint))


def _fits_type(value: Any, hint: Any, rule: Rule) -> bool:
    """Whether a value other than None is of type `hint`, numbers within the rule's bounds."""
    origin = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if dataclasses.is_dataclass(hint) or origin in _MAPPINGS:
        if not isinstance(value, Mapping):
            return False
        return len(args) != 2 or all(
            _fits_type(k, args[0], Rule()) and any(_fits_type(v, m, rule) for m in _members(args[1]))
            for k, v in value.items()
        )
    if origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        return not args or all(any(_fits_type(item, m, rule) for m in _members(args[0])) for item in value)
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool) and _within(value, rule)
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and _within(value, rule)
    if origin is str:
        return isinstance(value, str)
    if _is_path_type(origin):
        return isinstance(value, (str, os.PathLike)) and str(value) != ""
    if origin is type(None):
        return False
    return True  # a type the schema does not describe: the code that takes it checks it


def _within(number: float, rule: Rule) -> bool:
    return not math.isnan(number) and all((
        rule.low is None or number >= rule.low,
        rule.high is None or number <= rule.high,
        rule.above is None or number > rule.above,
        rule.below is None or number < rule.below,
    ))


def _expected(hint: Any, rule: Rule) -> str:
    """What a value of this option may be, in words: 'choose float32 or float16'."""
    words = [str(choice) for choice in rule.choices()] if rule.choices else []
    members = _members(hint)
    for member in members:
        if member is type(None) or (member is str and (rule.choices or any(map(_is_path_type, members)))):
            continue
        words.extend(_nouns(member, rule))
    if rule.nullable and type(None) in members:
        words.append("null")
    return ("choose " if rule.choices else "use ") + _or(words)


def _nouns(hint: Any, rule: Rule) -> list[str]:
    origin = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    if origin is bool:
        return ["true", "false"]
    if origin is int:
        return [f"an integer{_bounds(rule)}"]
    if origin is float:
        return [f"a number{_bounds(rule)}"]
    if _is_path_type(origin) or (origin is str and rule.path):
        return [f"the path of an existing {rule.exists}" if rule.exists else "a path"]
    if origin is str:
        return ["a string"]
    if dataclasses.is_dataclass(hint) or origin in _MAPPINGS:
        return ["a mapping"]
    if origin in _SEQUENCES:
        element = _members(args[0])[0] if args else None
        return [f"a list of {_PLURALS.get(element, 'values')}{_bounds(rule)}"]
    return []


def _bounds(rule: Rule) -> str:
    if rule.low is not None and rule.high is not None:
        return f" from {_number(rule.low)} to {_number(rule.high)}"
    parts = [
        f"{sign} {_number(bound)}"
        for sign, bound in ((">=", rule.low), (">", rule.above), ("<=", rule.high), ("<", rule.below))
        if bound is not None
    ]
    return " " + " and ".join(parts) if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _show(value: Any) -> str:
    """A value as it would be written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(map(_show, value))}]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name
