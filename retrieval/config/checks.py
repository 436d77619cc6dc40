"""The checks of a composed config: every option, the groups together, and what needs the
loaded dataset; `resolve` is the config the stages read once the first two have passed."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrieval.config.factory import REPRESENTATIVE_DIM, check_index
from retrieval.config.nodes import check_node, plain
from retrieval.config.paths import expand_paths
from retrieval.config.plugins import protocol_schema, representation_schema
from retrieval.config.rules import ConfigError
from retrieval.config.schema import config_schema
from retrieval.config.shorthands import WHOLE_IMAGE, with_shorthands
from retrieval.config.values import either, show
from retrieval.records import Dataset

CONF = Path(__file__).resolve().parents[2] / "conf"
MODEL_PRESETS = CONF / "model"
REGION_PRESETS = CONF / "regions"
NO_REGIONS = "none"


def check(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError unless every option of the composed config (a DictConfig or a plain
    dict) is known and valid, the FAISS factory included, for the model's descriptors; the
    representation is checked again once the earlier spellings in `regions` are set in it
    (`retrieval.config.shorthands`)."""
    tree = plain(cfg)
    check_node("", tree, config_schema())
    representation = with_shorthands(tree)["representation"]
    check_node("representation", representation, representation_schema("representation", representation))
    index = tree["index"]
    check_index(index["factory"], index.get("search_params"), _index_dim(tree), target_recall=index.get("target_recall"))


def _index_dim(tree: Mapping[str, Any]) -> int:
    """The size of the vectors the index will hold: the model's, sized from its configuration
    without its weights. Exact search (Flat) fits any size, so it needs no model to be sized."""
    from retrieval.models import embedding_dim

    if tree["index"]["factory"] == "Flat":
        return REPRESENTATIVE_DIM
    options = {key: value for key, value in tree["model"].items() if key not in ("name", "family")}
    try:
        return embedding_dim(tree["model"]["family"], **options)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_groups(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError unless the groups of a valid config work together: the representation
    describes regions exactly when `regions` proposes some, and images (not words); queries with
    words need a model with a text tower; composed queries are ranked exactly from two vectors
    each, so no approximate index and no re-rank step (which expands one). A Ray cluster's
    address must answer Ray's handshake before any listing or model load. The representation and each re-rank
    step are built from their options, so options that only fail together
    (`rerank.verify.model=fundamental` with `min_inliers` under 8) are refused before any work,
    not when the step runs."""
    from retrieval.models import has_text_tower
    from retrieval.queries.spec import query_spec
    from retrieval.rerank import create_step

    tree = with_shorthands(plain(cfg))
    check_representation(tree)
    extract = tree["extract"]
    if extract.get("engine") == "ray" and (extract.get("ray") or {}).get("address"):
        from retrieval.features.engines.ray_tasks import check_answers

        check_answers(extract["ray"]["address"], extract["ray"].get("connect_timeout") or 10.0)
    for name, options in (tree.get("rerank") or {}).items():
        try:
            create_step(name, **dict(options or {}))
        except ValueError as error:
            raise ConfigError(str(error)) from None
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
        raise ConfigError(f"query=composed has two vectors per query, which re-rank steps cannot expand: use 'rerank=[]', not rerank=[{steps}]")


def check_representation(tree: Mapping[str, Any]) -> None:
    """The gallery's representation against `regions`, then built from its options; one that
    learns a state (a whitening) moves its rows out of the space the text tower embeds words in,
    so queries with words cannot search them."""
    from retrieval.queries.spec import query_spec
    from retrieval.representations import REPRESENTATIONS, create_representation, needs_regions, takes

    representation = dict(tree.get("representation") or WHOLE_IMAGE)
    name = representation.pop("name")
    regions = (tree.get("regions") or {}).get("name", NO_REGIONS)
    if REPRESENTATIONS.get(name).embeds_words:
        raise ConfigError(f"representation={name} embeds the words of queries, not images: the gallery needs "
                          f"representation={either([n for n in REPRESENTATIONS.available() if not REPRESENTATIONS.get(n).embeds_words])}")
    regional = takes(name, "proposals")
    if needs_regions(name) and regions == NO_REGIONS:
        raise ConfigError(f"representation={name} describes an image by its regions, and regions=none proposes none: "
                          f"choose regions={either(_region_presets())}, or representation=global")
    if regions != NO_REGIONS and not regional:
        from retrieval.config.shorthands import region_representations

        raise ConfigError(f"regions={regions} proposes regions, which representation={name} does not describe: "
                          f"choose representation={either(list(region_representations()))}, or regions=none")
    context = {"max_pixels": tree["extract"]["max_pixels"], **({"proposals": tree["regions"].get("proposals") or {}} if regional else {})}
    try:
        built = create_representation(name, **context, **representation)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    query = query_spec(tree["query"])
    if query.text and built.learns() is not None:
        learnt = ", ".join(f"representation.{key}={show(value)}" for key, value in built.settings().items()
                           if key in representation)
        raise ConfigError(f"query={query.name} searches with the text tower's vectors, and {learnt} learns a transform "
                          f"of the image vectors they cannot follow: drop it for queries with words")


def _region_presets() -> list[str]:
    """The region presets (conf/regions/*.yaml), `none` and the shared parts left out."""
    return sorted(path.stem for path in REGION_PRESETS.glob("*.yaml") if not path.stem.startswith("_") and path.stem != NO_REGIONS)


def _text_presets() -> str:
    """The model presets (conf/model/*.yaml) whose family has a text tower, as a choice."""
    from omegaconf import OmegaConf

    from retrieval.models import FAMILIES, TEXT_TOWERS

    FAMILIES.available()  # imports every family, which registers its text tower
    names = sorted(path.stem for path in MODEL_PRESETS.glob("*.yaml") if OmegaConf.load(path).get("family") in TEXT_TOWERS)
    return "model=" + either(names) if names else "a model of family " + either(sorted(TEXT_TOWERS))


def resolve(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The checked config (each option, then the groups together) as a plain dict
    (interpolations resolved), `~` expanded in every path."""
    tree = plain(cfg)
    check(tree)
    tree = with_shorthands(tree)
    check_groups(tree)
    return expand_paths(tree)


def check_dataset(cfg: Mapping[str, Any], dataset: Dataset) -> None:
    """What can only be checked once the dataset is loaded (still before any model): that
    query=mask (or query.cut=mask) has masks to cut with, that text and composed queries have
    words (and composed ones images), and the options of the protocol the dataset uses."""
    from retrieval.queries.files import NO_IMAGE
    from retrieval.queries.spec import query_spec

    tree = plain(cfg)
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
    check_node("dataset.protocol_options", options, protocol_schema(dataset.protocol))
