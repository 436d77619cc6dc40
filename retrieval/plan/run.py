"""`RunPlan`: everything a run does, read once from the checked config.

    plan = RunPlan.from_config(cfg)    # cfg: Hydra's DictConfig or a plain dict
    plan.stores["gallery"].folder      # where the gallery's rows are
    plan.whole_image()                 # the same run over one vector per image, exactly

The stages take a plan and read its fields; none of them reads the config.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval import artifacts, config
from retrieval.datasets.distractors import labelled
from retrieval.errors import UserError
from retrieval.features import Features
from retrieval.features.keys import Item, gallery_items, query_items, text_items
from retrieval.models.weights import check_weights, weights_label
from retrieval.plan.dataset import run_dataset
from retrieval.plan.identity import RunIdentity, combination
from retrieval.plan.model import ModelSpec
from retrieval.plan.search import EXACT, SearchSpec
from retrieval.plan.settings import EvalSpec, ExtractSpec, Paths
from retrieval.plan.stores import FitSpec, StoreSpec, chosen_store, features_folder, store_settings
from retrieval.queries import get_query_mode
from retrieval.queries.spec import QuerySpec, query_spec
from retrieval.records import Dataset
from retrieval.representations import REPRESENTATIONS, SEGMENT_VOTES, Representation, create_representation, takes
from retrieval.representations.fitting import Sample, fit_settings, sample_items
from retrieval.rerank import Step, create_step
from retrieval.search.exact import OutOfRangeScores
from retrieval.search.images import ImageHits

WHOLE_IMAGE = "global"
"""The representation of one vector per image: a region-level run's baseline, and how queries
are encoded unless the gallery's representation encodes them itself."""
NO_REGIONS = {"name": "none"}


def check_votes(name: str, factory: str, query: QuerySpec, steps: tuple[tuple[str, Step], ...]) -> None:
    """A representation whose queries' rows vote for images is searched exactly, for image
    queries, and its ranking is final (re-rank steps take one vector per query)."""
    if factory != EXACT:
        raise UserError(f"representation={name} scores images by the votes of the query's segments, searched exactly: "
                        f"use index=flat, not index.factory={factory}")
    if query.image_mode is None or query.composed:
        raise UserError(f"representation={name} describes images by their segments: use an image query mode (query=box, "
                        "mask or full), not words")
    if steps:
        raise UserError(f"representation={name} describes a query by several rows, which re-rank steps do not take: "
                        f"drop rerank=[{','.join(step for step, _ in steps)}]")


PIXEL_NEEDS = frozenset({"query_cutouts", "query_model"})
"""What a re-rank step asks for when it cuts out and embeds the queries' pixels (verify, refine)."""


def check_pixel_steps(query: QuerySpec, steps: tuple[tuple[str, Step], ...]) -> None:
    """Steps that compare the queries' pixels need queries that have some: refused for words alone."""
    pixel_steps = [name for name, step in steps if PIXEL_NEEDS & set(step.needs)]
    if query.image_mode is None and pixel_steps:
        raise UserError(f"rerank=[{','.join(pixel_steps)}] compares the queries' pixels, and query={query.name} has none: "
                        "drop it, or use an image query mode (query=box, mask, full or composed)")


@dataclass(frozen=True)
class RunPlan:
    """A run, read from its checked config: the dataset, what embeds each split and where its
    rows are, the search, the re-rank steps, how it is scored, and its name in the results."""

    dataset: Dataset
    """Loaded, with the query file's queries and the distractors applied."""
    query: QuerySpec
    query_node: dict[str, Any]
    """The `query` node as configured (for the ranking's provenance)."""
    model: ModelSpec
    extract: ExtractSpec
    stores: dict[str, StoreSpec]
    """Per split: queries, gallery and, for composed queries, texts."""
    search: SearchSpec
    rerank: tuple[tuple[str, Step], ...]
    """The re-rank steps, built, in the order `rerank=[...]` lists them."""
    eval: EvalSpec
    paths: Paths
    identity: RunIdentity
    regional: bool
    """Whether the gallery is described by its regions (the whole-image baseline is reported beside)."""

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "RunPlan":
        """The plan of a config (a DictConfig or a plain dict), checked before any work: every
        option, the groups together, then what needs the loaded dataset, so that a bad value
        costs no model load and leaves no leaderboard row. The dataset is listed afresh."""
        tree = config.resolve(cfg)
        if not tree["eval"].get("ranking"):  # a given ranking needs no model
            check_weights(tree["model"])  # weights that cannot be had: one line, before the listing
        query = query_spec(tree["query"])
        dataset = run_dataset(tree["dataset"], query.file)
        config.check_dataset(tree, dataset)
        model = ModelSpec.of(tree["model"])
        extract = ExtractSpec.of(tree["extract"])
        paths = Paths.of(tree["paths"])
        regions = tree.get("regions") or NO_REGIONS
        regional = regions["name"] != NO_REGIONS["name"]
        gallery = tree["representation"]
        k = len(dataset.gallery) if tree["dataset"].get("k") is None else min(int(tree["dataset"]["k"]), len(dataset.gallery))
        aggregate = regions.get("aggregate") if regional else None
        steps = tuple((name, create_step(name, **dict(options or {}))) for name, options in (tree.get("rerank") or {}).items())
        check_pixel_steps(query, steps)
        if REPRESENTATIONS.get(gallery["name"]).image_scores == SEGMENT_VOTES:
            check_votes(gallery["name"], tree["index"]["factory"], query, steps)
            aggregate = SEGMENT_VOTES
        search = SearchSpec.of(tree["index"], tree["search"], k, aggregate,
                               regions.get("k_regions") if regional else None, extract.device)
        plan = cls(
            dataset=dataset,
            query=query,
            query_node=tree["query"],
            model=model,
            extract=extract,
            stores={},
            search=search,
            rerank=steps,
            eval=EvalSpec.of(tree["eval"], tree["dataset"].get("protocol_options")),
            paths=paths,
            identity=RunIdentity(
                dataset=labelled(dataset),
                model=model.name,
                weights=weights_label(model.family, **model.options),
                query_mode=tree["query"]["name"],
                combination=combination(query),
                index=tree["index"]["name"],
                regions=regions["name"],
                representation=gallery["name"],
                rerank="+".join(name for name, _ in steps),
            ),
            regional=regional,
        )
        shards = int(regions["shard_images"]) if regional else extract.shard_size
        chosen = {split: tree["search"].get(split) for split in ("queries", "gallery")}
        return plan._with_stores(gallery, regions.get("proposals") or {}, shards, chosen)

    def whole_image(self) -> "RunPlan":
        """The same run with one vector per gallery image, exact search and no re-ranking: the
        baseline a region-level run is reported against (exact, since it is the reference)."""
        plan = dataclasses.replace(self, search=self.search.whole_image(), rerank=(), regional=False,
                                   identity=dataclasses.replace(self.identity, regions=NO_REGIONS["name"], rerank=""))
        queries = self.stores["queries"]
        chosen = {"queries": queries.folder} if queries.chosen else {}
        return plan._with_stores({"name": WHOLE_IMAGE}, {}, self.extract.shard_size, chosen, items=self.stores)

    # ---------------------------------------------------------------- the stores

    def _with_stores(self, gallery: Mapping[str, Any], proposals: Mapping[str, Any], gallery_shards: int,
                     chosen: Mapping[str, str | None], items: Mapping[str, StoreSpec] | None = None) -> "RunPlan":
        """The plan with a store for each split: the gallery's representation from `gallery`
        (its node: name and options), queries as that representation declares."""
        name, options = gallery["name"], {key: value for key, value in gallery.items() if key != "name"}
        splits = {"queries": self._query_representation(name, options), "gallery": self.representation(name, options, proposals)}
        if self.query.composed:
            splits["texts"] = self._text_representation()
        stores: dict[str, StoreSpec] = {}
        fits: dict[Sample, list[Item]] = {}
        for split, representation in splits.items():
            listed = items[split].items if items else self._items(split)
            given = chosen.get(split)
            fit = self._fit(representation, fits)
            stores[split] = StoreSpec(
                split=split,
                folder=chosen_store(split, given) if given else self.folder_of(representation, fit),
                representation=representation,
                items=listed,
                record_keys=[record.key for record in (self.dataset.gallery if split == "gallery" else self.dataset.queries)],
                shard_size=gallery_shards if split == "gallery" else self.extract.shard_size,
                chosen=bool(given),
                mapped=split == "gallery" and self.search.memory_budget is not None,
                fit=fit,
            )
        return dataclasses.replace(self, stores=stores)

    def _fit(self, representation: Representation, samples: dict[Sample, list[Item]]) -> FitSpec | None:
        """Where the state of a learning representation is kept, and its sample (listed once per
        sample, in `samples`); None for one that learns nothing."""
        sample = representation.learns()
        if sample is None:
            return None
        if sample not in samples:
            samples[sample] = sample_items(sample, self.dataset.gallery, self.dataset.root)
        described = {**self.model.image_settings(), **representation.settings(), "dtype": self.extract.dtype}
        settings = fit_settings(sample, samples[sample], described)
        return FitSpec(artifacts.artifact_dir(self.paths.cache, "fits", settings), samples[sample])

    def representation(self, name: str, options: Mapping[str, Any], proposals: Mapping[str, Any] | None = None,
                       query: bool = False) -> Representation:
        """The representation `name` with its options and what the run supplies: the pixel cap,
        the regions' proposers, and for queries the image mode that cuts them out."""
        context: dict[str, Any] = {"max_pixels": self.extract.max_pixels}
        if takes(name, "proposals"):
            context["proposals"] = dict(proposals or {})
        if query:
            context.update(mode=get_query_mode(self.query.image_mode), mode_options=self.query.image_options)
        return create_representation(name, **context, **options)

    def _query_representation(self, gallery: str, options: Mapping[str, Any]) -> Representation:
        """Queries' words: the text tower; their images: cut out by the query mode and encoded
        as the gallery's representation `gallery` declares (by itself, with its options, or as
        one whole-image vector)."""
        if self.query.image_mode is None:
            return self._text_representation()
        if REPRESENTATIONS.get(gallery).encodes_queries:
            return self.representation(gallery, options, query=True)
        return self.representation(WHOLE_IMAGE, {}, query=True)

    def _text_representation(self) -> Representation:
        return create_representation("text", tokenizer=self.model.tokenizer())

    def _items(self, split: str) -> list[Item]:
        if split == "gallery":
            return gallery_items(self.dataset.gallery, self.dataset.root)
        if self.reads_words(split):
            return text_items(self.dataset.queries)
        mode = self.query.image_mode
        return query_items(self.dataset.queries, self.dataset.root, mode, get_query_mode(mode), self.query.image_options)

    def reads_words(self, split: str) -> bool:
        """Whether the split's items are query texts (embedded by the text tower)."""
        return split == "texts" or (split == "queries" and self.query.image_mode is None)

    def folder_of(self, representation: Representation, fit: FitSpec | None = None) -> Path:
        """The store of this run's model and storage for `representation` (embedding with the
        state `fit` keeps, for one that learns)."""
        return features_folder(self.paths.cache, store_settings(self.model, representation, self.extract.dtype, fit))

    # ---------------------------------------------------------------- searching

    def rank(self, queries: np.ndarray, gallery: Features, index: faiss.Index | None = None) -> ImageHits:
        """The run's search of the gallery's rows for the query vectors (through `index` when
        given); a row that no unit vector could be has its shard set aside (`ShardSetAside`)."""
        try:
            return self.search.rank(queries, gallery, index)
        except OutOfRangeScores as error:
            raise self.stores["gallery"].set_aside_corrupt(gallery, error) from error
