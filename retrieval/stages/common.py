"""What several stages share: the dataset of a config, what its items are and where their
vectors live, the ranking depth, the model check, and the search the config asks for (thin
wrappers of `retrieval.search`). Stages import this module, never each other.

Splits of items: `gallery` (images, or their regions), `queries` (the vectors the search
reads for each query: image cut-outs, or the words of a text query) and `texts` (the words
of a composed query, whose `queries` are its image part)."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import faiss
import numpy as np

from retrieval import artifacts
from retrieval.datasets import load_dataset
from retrieval.datasets.distractors import list_distractors, with_distractors
from retrieval.errors import UserError
from retrieval.features import Features
from retrieval.features.keys import Item, gallery_items, query_items, text_items
from retrieval.features.store import ShardSetAside, Store
from retrieval.models import resolve_preprocess, text_options, tokenizer_settings
from retrieval.models.identity import weights_identity
from retrieval.queries import get_query_mode
from retrieval.queries.files import with_query_file
from retrieval.queries.spec import QuerySpec, query_spec
from retrieval.records import Dataset
from retrieval.representations import REPRESENTATIONS, Representation, create_representation
from retrieval.device import resolve_device
from retrieval.search.approximate import measured
from retrieval.search.exact import OutOfRangeScores
from retrieval.search.composed import composed_search
from retrieval.search.images import AGGREGATIONS, ImageHits
from retrieval.search.rank import rank_images
from retrieval.sizes import parse_size

log = logging.getLogger(__name__)

RESERVED_DATASET_KEYS = ("format", "k", "protocol_options", "distractors")
SPLITS = ("queries", "texts", "gallery")
RANKING = "ranking.npz"


class MismatchError(UserError, ValueError):
    """Inputs of a stage that were not made to go together."""


def plain(node: Any) -> Any:
    """DictConfig/ListConfig -> plain containers (resolved); anything else unchanged."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def loader_settings(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    settings = {k: v for k, v in plain(dataset_cfg).items() if k not in RESERVED_DATASET_KEYS}
    if "root" in settings and settings["root"] is not None:
        settings["root"] = str(Path(settings["root"]).expanduser().resolve())
    return settings


@functools.lru_cache(maxsize=4)
def _load(format: str, settings_json: str) -> Dataset:
    dataset = load_dataset(format, **json.loads(settings_json))
    if dataset.skipped:
        log.warning("%s: %d inputs skipped while loading (see metrics.json)", dataset.name, len(dataset.skipped))
    return dataset


@functools.lru_cache(maxsize=4)
def _assembled(format: str, settings_json: str, query_file: str, distractors_json: str) -> Dataset:
    """The loaded dataset, then its queries and truth from the query file, then the distractors
    after its gallery: appended last, so no query file can name one as a positive."""
    distractors = json.loads(distractors_json)
    listing = list_distractors(distractors, json.loads(settings_json).get("root")) if distractors else None
    dataset = _load(format, settings_json)
    if query_file:
        dataset = with_query_file(dataset, Path(query_file))
    return with_distractors(dataset, listing) if listing else dataset


def forget_datasets() -> None:
    """Drop the datasets (and their item keys) listed so far: the next `dataset_from_config`
    lists the files (and reads the query file) again."""
    _load.cache_clear()
    _assembled.cache_clear()
    _ITEMS.clear()


def query_of(cfg: Mapping[str, Any]) -> QuerySpec:
    """The parts of the configured query: image mode, words, or both."""
    return query_spec(plain(cfg["query"]))


def dataset_from_config(cfg: Mapping[str, Any]) -> Dataset:
    """The configured dataset; with `query.file`, its queries and truth are the file's; with
    `dataset.distractors`, their images follow its gallery."""
    dataset_cfg = plain(cfg["dataset"])
    query_file = query_of(cfg).file
    return _assembled(
        dataset_cfg["format"],
        json.dumps(loader_settings(dataset_cfg), sort_keys=True),
        str(Path(query_file).expanduser().resolve()) if query_file else "",
        json.dumps(dataset_cfg.get("distractors")),
    )


def model_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return plain(cfg["model"])


def reads_words(cfg: Mapping[str, Any], split: str) -> bool:
    """Whether the split's items are query texts (embedded by the text tower)."""
    return split == "texts" or (split == "queries" and query_of(cfg).image_mode is None)


def model_options(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(family, keyword options) for `retrieval.models.create_model`."""
    settings = dict(model_settings(cfg))
    settings.pop("name", None)
    return settings.pop("family"), settings


def region_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The `regions` group ({"name": "none"} when the config has none)."""
    return plain(cfg.get("regions")) or {"name": "none"}


def regions_enabled(cfg: Mapping[str, Any]) -> bool:
    return region_config(cfg).get("name", "none") != "none"


def representation_for(cfg: Mapping[str, Any], split: str) -> Representation:
    """Queries: one vector per query cut-out (the image part of a composed query), or per
    query text. Texts: one vector per query text. Gallery: the `regions` group's
    representation (`global` for regions=none, else its pooling: `roi` or `crop`)."""
    max_pixels = int(plain(cfg["extract"])["max_pixels"])
    if reads_words(cfg, split):
        family, options = model_options(cfg)
        return create_representation("text", tokenizer=tokenizer_settings(family, **options))
    if split == "queries":
        query = query_of(cfg)
        return create_representation("global", max_pixels=max_pixels, mode=get_query_mode(query.image_mode),
                                     mode_options=query.image_options)
    if not regions_enabled(cfg):
        return create_representation("global", max_pixels=max_pixels)
    node = region_config(cfg)
    options = {key: node[key] for key in REPRESENTATIONS.get(node["pooling"]).options}
    return create_representation(node["pooling"], proposals=node["proposals"] or {}, max_pixels=max_pixels, **options)


def shard_size(cfg: Mapping[str, Any], split: str) -> int:
    if split == "gallery" and regions_enabled(cfg):
        return int(region_config(cfg)["shard_images"])
    return int(plain(cfg["extract"])["shard_size"])


def store_settings(cfg: Mapping[str, Any], representation: Representation) -> dict[str, Any]:
    """Exactly what determines the rows of any item: model, its preprocessing as resolved from
    the weights' configuration (which a library upgrade may change under the same settings),
    representation, storage. For texts: the weights the text tower is built from, and the
    tokenizer (in the representation's settings); the image preprocessing plays no part.
    Weights from a checkpoint file or a random initialisation add their digest
    (`retrieval.models.identity`): a file overwritten in place gets another store."""
    family, options = model_options(cfg)
    weights = weights_identity(family, text=representation.embeds_words, **options)
    if representation.embeds_words:
        model = {"name": model_settings(cfg)["name"], "family": family, **text_options(family, **options)}
        return {"stage": "features", "model": model, **weights, **representation.settings(), "dtype": plain(cfg["extract"])["dtype"]}
    return {
        "stage": "features",
        "model": model_settings(cfg),
        **weights,
        "preprocess": dataclasses.asdict(resolve_preprocess(family, **options)),
        **representation.settings(),
        "dtype": plain(cfg["extract"])["dtype"],
    }


def store_folder(cfg: Mapping[str, Any], split: str) -> Path:
    """The feature store of `split`: `search.<split>` when set (an existing store), else the
    one the configuration determines."""
    chosen = plain(cfg.get("search") or {}).get(split)
    if chosen:
        folder = Path(chosen).expanduser()
        if not (folder / "config.yaml").is_file():
            raise MismatchError(f"search.{split}={folder} is not a feature store (no config.yaml); run python extract.py first")
        return folder
    settings = store_settings(cfg, representation_for(cfg, split))
    return artifacts.artifact_dir(Path(cfg["paths"]["cache"]).expanduser(), "features", settings)


_ITEMS: dict[tuple, tuple[Dataset, list[Item]]] = {}
"""(dataset id, split, query settings) -> (that dataset, its items): each file is stat'ed once
per pipeline call (the dataset is held so that its id cannot be reused meanwhile)."""


def items_of(cfg: Mapping[str, Any], dataset: Dataset, split: str) -> list[Item]:
    """The split's items, in record order (the keys they are stored under)."""
    query = query_of(cfg)
    cuts = split != "gallery" and not reads_words(cfg, split)
    cut = (query.image_mode, json.dumps(query.image_options, sort_keys=True, default=str)) if cuts else ()
    cached = (id(dataset), split, *cut)
    if cached not in _ITEMS:
        if split == "gallery":
            items = gallery_items(dataset.gallery, dataset.root)
        elif reads_words(cfg, split):
            items = text_items(dataset.queries)
        else:
            mode = query.image_mode
            items = query_items(dataset.queries, dataset.root, mode, get_query_mode(mode), query.image_options)
        _ITEMS[cached] = (dataset, items)
    return _ITEMS[cached][1]


def memory_budget(cfg: Mapping[str, Any]) -> int | None:
    """`search.memory_budget` in bytes (None: unbounded)."""
    budget = plain(cfg.get("search") or {}).get("memory_budget")
    return None if budget is None else parse_size(budget)


def load_features(cfg: Mapping[str, Any], folder: Path, split: str) -> Features:
    """The split's rows from the store at `folder`, in record order; under a memory budget the
    gallery's vectors stay in their shards (memory-mapped), never all in memory at once."""
    dataset = dataset_from_config(cfg)
    records = dataset.gallery if split == "gallery" else dataset.queries
    keys = [item.key for item in items_of(cfg, dataset, split)]
    mapped = split == "gallery" and memory_budget(cfg) is not None
    return Store(folder).gather(keys, [record.key for record in records], mapped=mapped)


def listing_digest(cfg: Mapping[str, Any], split: str) -> str:
    """A hash of the split's item keys: changes when an image (or a query's cut-out) does."""
    keys = [item.key for item in items_of(cfg, dataset_from_config(cfg), split)]
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def stored(cfg: Mapping[str, Any], folder: Path, split: str) -> dict[str, Any]:
    """What a split's vectors are: its store's settings and its listing's digest."""
    return {"store": artifacts.read_yaml(Path(folder) / "config.yaml"), "items": listing_digest(cfg, split)}


def store_model(folder: Path) -> str:
    """The model name a store's vectors come from (its config.yaml)."""
    return str(artifacts.read_yaml(Path(folder) / "config.yaml")["model"]["name"])


def check_same_model(queries: Features, gallery: Features, query_model: str, gallery_model: str) -> None:
    if query_model != gallery_model or (queries.vectors.size and gallery.vectors.size and queries.dim != gallery.dim):
        raise MismatchError(
            f"query vectors come from {query_model} (dim {queries.dim}) but gallery vectors from "
            f"{gallery_model} (dim {gallery.dim}); extract both with one model: python extract.py model=<name>"
        )


def depth(cfg: Mapping[str, Any], n_gallery: int) -> int:
    """How many images a ranking keeps per query (`dataset.k`, at most the gallery)."""
    k = plain(cfg["dataset"]).get("k")
    return n_gallery if k is None else min(int(k), n_gallery)


def aggregation(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """How rows make an image's score (`regions.aggregate`) and, for approximate indexes, how
    many rows a query fetches (`regions.k_regions`)."""
    if not regions_enabled(cfg):
        return {"aggregate": None, "k_regions": None}  # one row per image: nothing to aggregate
    node = region_config(cfg)
    if node["aggregate"] not in AGGREGATIONS:
        raise ValueError(f"regions.aggregate must be one of {AGGREGATIONS}, not {node['aggregate']!r}")
    return {"aggregate": node["aggregate"], "k_regions": node["k_regions"]}


def rank(cfg: Mapping[str, Any], queries: np.ndarray, gallery: Features, index: faiss.Index | None = None) -> ImageHits:
    """Search `gallery` for the query vectors as the config's index, depth and device say
    (through `index`, from `approximate_index`, when given)."""
    index_cfg = plain(cfg["index"])
    try:
        return rank_images(
            queries,
            gallery,
            depth(cfg, len(gallery.keys)),
            index_cfg["factory"],
            device=resolve_device(plain(cfg["extract"])["device"]),
            search_params=index_cfg["search_params"],
            use_gpu=index_cfg["gpu"],
            k_regions=aggregation(cfg)["k_regions"],
            block_size=plain(cfg["search"])["block_size"],
            index=index,
            memory_budget=memory_budget(cfg),
            rescore_rows=index_cfg.get("rescore"),
        )
    except OutOfRangeScores as error:
        raise set_aside_corrupt_row(cfg, gallery, error) from error


def set_aside_corrupt_row(cfg: Mapping[str, Any], gallery: Features, error: OutOfRangeScores) -> ShardSetAside:
    """Set aside the gallery shard holding the row a search found corrupt, so that extraction
    rebuilds it; returns the error that says so."""
    image = int(gallery.row_image[error.row])
    why = f"holds a corrupt vector of {gallery.keys[image]} (it scores {error.score:.3g} against a query, which no two unit vectors can)"
    key = items_of(cfg, dataset_from_config(cfg), "gallery")[image].key
    aside = Store(store_folder(cfg, "gallery")).set_aside_item(key, why)
    return ShardSetAside(aside.with_suffix(""), why)


def approximate_index(
    cfg: Mapping[str, Any], queries: Features, gallery: Features, gallery_store: Path
) -> tuple[faiss.Index, dict[str, Any]]:
    """The configured approximate index of the gallery (saved under `<cache>/indexes/`, built
    on first use), ready to search for `queries`, and the report of its measured recall."""
    index_cfg = plain(cfg["index"])
    return measured.approximate_index(
        Path(cfg["paths"]["cache"]).expanduser(),
        stored(cfg, gallery_store, "gallery"),
        queries,
        gallery,
        index_cfg["factory"],
        depth(cfg, len(gallery.keys)),
        k_regions=aggregation(cfg)["k_regions"],
        rescore_rows=index_cfg.get("rescore"),
        search_params=index_cfg["search_params"] or {},
        options=measured.Options.of(index_cfg),
        use_gpu=index_cfg["gpu"],
        device=resolve_device(plain(cfg["extract"])["device"]),
    )


def rank_composed(cfg: Mapping[str, Any], images: np.ndarray, texts: np.ndarray, gallery: Features) -> ImageHits:
    """Search `gallery` for composed queries (image and text vectors), combined as the
    config's `query.combine` and `query.lambda` say; always exact (`retrieval.search.composed`)."""
    query = query_of(cfg)
    return composed_search(images, texts, gallery.vectors, gallery.row_image, len(gallery.keys), depth(cfg, len(gallery.keys)),
                           query.combine, query.weight, device=resolve_device(plain(cfg["extract"])["device"]))


def skipped_list(features: Features) -> list[list[str]]:
    """[[key, reason], ...] of the skipped images or queries, for meta and metrics files."""
    return [[features.keys[i], reason] for i, reason in sorted(features.errors.items())]
