"""`segvlad`: Revisit Anything's SegVLAD, an image (or query cut-out) described by its
supersegments: segments (SAM masks when the regions config gives a checkpoint, the offline
grouping of `retrieval.regions.segments` otherwise), their neighbourhood graph, each segment
grown by its neighbours of order `order`, each VLAD-encoded over the patches it covers and
PCA-whitened (`retrieval.aggregation.segvlad`). One row per supersegment, with the box and
mask of the segment it grew from (`locate`: or of the whole supersegment). An image is scored
by the votes of the query's segments (`image_scores`; `retrieval.search.votes`), so a query is
several rows too: the supersegments of its cut-out, whatever the query mode (a whole image, a
box or a masked crop), since SegVLAD matches segments of the query to segments of the
database, not the query as one region.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
import torch

from retrieval.aggregation.dense import check_map, local_descriptors
from retrieval.aggregation.supersegments import GRAPHS, supersegments
from retrieval.aggregation.vlad import vlad
from retrieval.config.rules import Rule
from retrieval.features.keys import Item
from retrieval.masks import encode, tight_box
from retrieval.models.base import Embedder, InputSize
from retrieval.queries import QueryFn
from retrieval.regions.learned import needs_main_process
from retrieval.regions.proposals import IMAGE_SOURCE, PROPOSERS, full_mask, propose
from retrieval.representations import SEGMENT_VOTES, Rows, register
from retrieval.representations.dense import DenseImages, Facet, Layer
from retrieval.representations.fitting import FitImages, FitInputs, Whiten
from retrieval.representations.vlad import LearntAggregation, VladState

log = logging.getLogger(__name__)

LOCATIONS = ("segment", "supersegment")
"""What a row's box and mask are: the segment it grew from (the object the supersegment
describes in its context; the default), or the supersegment, context included."""
OFFLINE_SEGMENTS = {"segments": {}}
"""The segments of a run without a regions config: the offline grouping, with its defaults."""


class SegmentedImages(torch.utils.data.Dataset):
    """Item -> what `DenseImages` gives, and the image's segments: (n, H, W) bool masks over
    the image (or cut-out) and the proposer of each (index into `source_names`)."""

    def __init__(self, images: DenseImages, proposers: Mapping[str, Mapping[str, Any]], source_names: list[str]):
        self.images = images
        self.proposers = proposers
        self.source_names = source_names

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> dict[str, Any]:
        prepared = self.images[position]
        if prepared["error"]:
            return prepared
        image = prepared.pop("image")
        regions = propose(image, self.proposers)
        found = [i for i, source in enumerate(regions.sources) if source != IMAGE_SOURCE]
        chosen = found or [0]  # no segment found: the whole image is the one segment
        size_hw = image.shape[:2]
        prepared["masks"] = torch.from_numpy(np.stack([full_mask(regions, i, size_hw) for i in chosen]))
        prepared["sources"] = np.array([self.source_names.index(regions.sources[i]) for i in chosen], dtype=np.int8)
        return prepared


@register("segvlad")
class SegVladRepresentation(LearntAggregation):
    """One row per supersegment: its VLAD over the dense features it covers, whitened."""

    localises = True
    encodes_queries = True
    image_scores = SEGMENT_VOTES

    def __init__(
        self,
        max_pixels: int,
        proposals: Mapping[str, Mapping[str, Any] | None] | None = None,
        mode: QueryFn | None = None,
        mode_options: dict[str, Any] | None = None,
        order: Annotated[int, Rule(low=0)] = 3,
        graph: Annotated[str, Rule(choices=lambda: GRAPHS)] = "delaunay",
        clusters: Annotated[int, Rule(low=1)] = 32,
        layer: Layer = None,
        facet: Facet = "token",
        input_size: InputSize = None,
        fit_descriptors: Annotated[int, Rule(low=1)] = 100,
        fit_sample: Annotated[int, Rule(low=1)] = 1000,
        fit_seed: int = 0,
        fit_images: FitImages = None,
        whiten: Whiten = 256,
        whiten_sample: Annotated[int, Rule(low=2)] = 20,
        locate: Annotated[str, Rule(choices=lambda: LOCATIONS)] = "segment",
    ):
        super().__init__(max_pixels, layer, facet, input_size, clusters, fit_descriptors, fit_sample, fit_seed, fit_images,
                         whiten, whiten_sample)
        self.proposers = {name: dict(options or {}) for name, options in (dict(proposals or {}) or OFFLINE_SEGMENTS).items()}
        for name in self.proposers:
            PROPOSERS.get(name)  # an unknown proposer fails here, naming the valid ones
        self.source_names = [IMAGE_SOURCE, *self.proposers]
        self.main_process = any(needs_main_process(PROPOSERS.get(name)) for name in self.proposers)
        self.order = int(order)
        self.graph = graph
        self.locate = locate
        """What a row's box and mask are: its segment's, or the whole supersegment's."""
        self.mode = mode
        self.mode_options = dict(mode_options or {})

    def settings(self) -> dict[str, Any]:
        return {"representation": "segvlad", "proposals": self.proposers, "order": self.order, "graph": self.graph,
                "locate": self.locate,
                **self.dense_settings(), **self.learnt_settings()}

    def fit(self, inputs: FitInputs) -> VladState:
        """The vocabulary of the sample's first part's patches (as `vlad`); the whitening of the
        held-out part's supersegment VLADs (SegVLAD fits its PCA on database segments)."""
        words, held_out = self.split(inputs.items)
        state = VladState(self.learn_vocabulary(inputs, words))
        if self.whiten is None:
            return state
        unwhitened = SegVladRepresentation(
            self.max_pixels, self.proposers, order=self.order, graph=self.graph, clusters=self.clusters, layer=self.layer,
            facet=self.facet, input_size=self.input_size, fit_descriptors=self.fit_descriptors, whiten=None,
        ).fitted(state)
        return VladState(state.vocabulary, self.learn_whitening(np.asarray(inputs.rows(unwhitened, held_out).vectors)))

    def images_per_batch(self, batch_size: int) -> int:
        return max(1, batch_size // 4)  # each image brings its full-size segment masks

    def worker_dataset(self, items: Sequence[Item], model: Embedder) -> torch.utils.data.Dataset:
        images = self.dense_images(items, model, mode=self.mode, mode_options=self.mode_options, keep_image=True)
        return SegmentedImages(images, self.proposers, self.source_names)

    def embed(self, model: Embedder, prepared: list[dict], device: torch.device, precision: str, batch_size: int) -> list[Rows]:
        if self.state is None:
            raise RuntimeError("segvlad embeds only once fitted (Representation.fitted)")
        maps = self.maps(model, prepared, device, precision, batch_size)
        return [self._rows(p, feature_map) for p, feature_map in zip(prepared, maps)]

    def _rows(self, prepared: dict, feature_map: torch.Tensor) -> Rows:
        masks = prepared["masks"]
        grown = supersegments(masks, check_map(feature_map), self.order, self.graph)
        if grown.skipped:
            log.warning("%s: %d of its %d segments cover no patch of the %dx%d feature map; left out",
                        prepared["key"], grown.skipped, len(masks), *feature_map.shape[-2:])
        if not len(grown.segments):  # every segment empty: the whole image is the one segment
            masks = torch.ones(1, *prepared["size_hw"], dtype=torch.bool)
            prepared["sources"] = np.zeros(1, dtype=np.int8)
            grown = supersegments(masks, feature_map.shape[-2:], self.order, self.graph)
        vectors = vlad(local_descriptors(feature_map), self.state.vocabulary, grown.cover.to(feature_map.device))
        located = masks[torch.from_numpy(grown.segments)]
        if self.locate == "supersegment":
            located = (grown.members.float().cpu() @ located.flatten(1).float()).view(-1, *located.shape[1:]) > 0
        boxes = np.array([tight_box(mask.numpy()) for mask in located], dtype=np.float32).reshape(-1, 4)
        return Rows(
            vectors=self.whitened(vectors),
            boxes=boxes,
            sources=prepared["sources"][grown.segments],
            masks=[json.dumps(encode(mask.numpy())) for mask in located],
        )
