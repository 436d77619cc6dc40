"""`roi` and `crop`: an image described by its regions (the whole image first, then what the
configured proposers found), each row with its box, its mask and the proposer that made it.

`roi`: a few backbone passes over an image pyramid, each region ROI-aligned out of the pass
where it looks query-sized (`retrieval.regions.pooling`). `crop`: every region cut out and
embedded like a query, one pass per region (any model, CLIP towers included).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from retrieval.config.rules import ConfigError, Rule
from retrieval.device import autocast
from retrieval.features.keys import Item
from retrieval.images import ImageError, load_rgb
from retrieval.masks import encode
from retrieval.models.base import Embedder
from retrieval.models.transform import normalise
from retrieval.regions.learned import needs_main_process
from retrieval.regions.pooling import crop_pixels, pyramid_levels, roi_vectors, roi_weights, scene_pixels
from retrieval.regions.proposals import IMAGE_SOURCE, PROPOSERS, Regions, full_mask, propose
from retrieval.representations import Representation, Rows, register

PLAN_TRIES = 5
"""Images tried for the plan of an extraction before saying nothing (unreadable ones are skips)."""
SCENES_PER_QUERY_BATCH = 4
"""ROI pooling: a DataLoader batch holds batch_size / 4 scenes, each with every pyramid level
it needs (a 1280 px scene alone is 4.6 MB of pixels), so prefetched batches stay small."""


def _rle_strings(regions: Regions, size_hw: tuple[int, int]) -> list[str]:
    return [
        "" if mask is None else json.dumps(encode(full_mask(regions, index, size_hw)))
        for index, mask in enumerate(regions.masks)
    ]


class RegionImages(torch.utils.data.Dataset):
    """Item -> {"position", "error", regions (boxes, sources, masks), and the pixels to embed}."""

    def __init__(self, items: Sequence[Item], representation: "RegionRepresentation", model: Embedder):
        self.items = items
        self.representation = representation
        self.crop_preprocess = model.preprocess.with_options(input_size=getattr(representation, "crop_size", None))
        self.query_size = model.preprocess.input_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict[str, Any]:
        chosen = self.representation
        try:
            image = load_rgb(self.items[position].path, max_pixels=chosen.max_pixels)
        except ImageError as error:
            return {"position": position, "error": str(error)}
        regions = propose(image, chosen.proposers)
        height, width = image.shape[:2]
        prepared = {
            "position": position,
            "error": "",
            "boxes": regions.boxes,
            "sources": np.array([chosen.source_names.index(s) for s in regions.sources], dtype=np.int8),
            "masks": _rle_strings(regions, (height, width)),
        }
        if chosen.pooling == "crop":
            prepared["pixels"] = torch.from_numpy(crop_pixels(image, regions, self.crop_preprocess))
            return prepared
        levels = pyramid_levels(regions.boxes, (height, width), chosen.input_sizes, self.query_size)
        prepared.update(
            levels=torch.from_numpy(levels),
            size_hw=(height, width),
            weights=torch.from_numpy(roi_weights(regions, chosen.roi_size)),
            scenes={
                int(level): torch.from_numpy(np.ascontiguousarray(scene_pixels(image, chosen.input_sizes[level]).transpose(2, 0, 1)))
                for level in np.unique(levels)
            },
        )
        return prepared


class RegionRepresentation(Representation):
    """Regions from `proposers` (name -> options), pooled by the subclass."""

    localises = True
    pooling = ""

    def __init__(self, proposals: Mapping[str, Mapping[str, Any] | None], max_pixels: int):
        self.proposers = {name: dict(options or {}) for name, options in proposals.items()}
        for name in self.proposers:
            PROPOSERS.get(name)  # an unknown proposer fails here, naming the valid ones
        self.max_pixels = int(max_pixels)
        self.source_names = [IMAGE_SOURCE, *self.proposers]
        self.main_process = any(needs_main_process(PROPOSERS.get(name)) for name in self.proposers)

    def settings(self) -> dict[str, Any]:
        return {"representation": self.pooling, "proposals": self.proposers, "max_pixels": self.max_pixels}

    def plan(self, items: Sequence[Item]) -> str | None:
        """The regions per image, as the proposers find them on the first of `items` that reads
        (the grid's count depends on the image's shape; segments' on its content). Said before
        any image is embedded: a large image can take many seconds on a CPU. Nothing is said
        ahead for learned proposers, whose run on one image costs as much as the embedding."""
        if self.main_process:
            return None
        for item in items[:PLAN_TRIES]:
            try:
                image = load_rgb(item.path, max_pixels=self.max_pixels)
            except ImageError:
                continue
            regions = propose(image, self.proposers)
            counts = " + ".join(f"{regions.sources.count(source)} {'whole image' if source == IMAGE_SOURCE else source}"
                                for source in self.source_names)
            height, width = image.shape[:2]
            return (f"{len(regions)} regions per image ({counts}; counted on {Path(item.path).name}, {width}x{height}), "
                    f"{self.embedding_words()}: about {len(regions) * len(items):,} regions for {len(items):,} images")
        return None

    def embedding_words(self) -> str:
        """How a region becomes a vector, in a few words."""
        raise NotImplementedError

    def worker_dataset(self, items: Sequence[Item], model: Embedder) -> torch.utils.data.Dataset:
        return RegionImages(items, self, model)

    @staticmethod
    def _rows(prepared: dict, vectors: torch.Tensor) -> Rows:
        return Rows(vectors=vectors, boxes=prepared["boxes"], sources=prepared["sources"], masks=prepared["masks"])


@register("roi")
class RoiRegions(RegionRepresentation):
    """Regions ROI-aligned out of a few backbone passes over an image pyramid (dense models)."""

    pooling = "roi"

    def __init__(
        self,
        proposals: Mapping[str, Mapping[str, Any] | None],
        max_pixels: int,
        input_sizes: Annotated[Sequence[int], Rule(low=32)] = (640, 1280),
        roi_size: Annotated[int, Rule(low=1)] = 7,
    ):
        super().__init__(proposals, max_pixels)
        self.input_sizes = tuple(int(size) for size in input_sizes)
        self.roi_size = int(roi_size)
        if not self.input_sizes:
            raise ConfigError("representation.input_sizes=[] is not valid: list the scene sizes of the backbone passes, e.g. [640, 1280]")

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "input_sizes": list(self.input_sizes), "roi_size": self.roi_size}

    def worker_dataset(self, items: Sequence[Item], model: Embedder) -> torch.utils.data.Dataset:
        if not model.dense:
            raise ValueError(f"{type(model).__name__} has no dense feature map to ROI-pool; use representation=crop")
        return super().worker_dataset(items, model)

    def images_per_batch(self, batch_size: int) -> int:
        return max(1, batch_size // SCENES_PER_QUERY_BATCH)

    def embedding_words(self) -> str:
        return f"ROI-pooled from backbone passes at {', '.join(map(str, self.input_sizes))} px"

    def embed(self, model: Embedder, prepared: list[dict], device: torch.device, precision: str, batch_size: int) -> list[Rows]:
        """Backbone passes over equally sized scenes of one pyramid level, each pass holding at
        most the pixels of a batch of `batch_size` query inputs (at least one scene), so memory
        is bounded by the batch size, not by how large the pyramid's scenes are; each region is
        pooled from the pass of its level (the whole image: the model's own descriptor)."""
        vectors = [torch.empty(len(p["boxes"]), model.dim) for p in prepared]
        budget = batch_size * model.preprocess.input_size**2
        groups: dict[tuple, list[int]] = {}
        for position, p in enumerate(prepared):
            for level, scene in p["scenes"].items():
                groups.setdefault((level, *scene.shape), []).append(position)
        for (level, _, height, width), members in groups.items():
            per_pass = max(1, budget // (height * width))
            for start in range(0, len(members), per_pass):
                self._pool_pass(model, prepared, members[start : start + per_pass], level, vectors, device, precision)
        return [self._rows(p, v) for p, v in zip(prepared, vectors)]

    @staticmethod
    def _pool_pass(model: Embedder, prepared: list[dict], members: list[int], level: int,
                   vectors: list[torch.Tensor], device: torch.device, precision: str) -> None:
        pixels = torch.stack([prepared[i]["scenes"][level] for i in members]).to(device, non_blocking=True)
        with autocast(device, precision):
            features = model.feature_map(normalise(pixels, model.preprocess))
            for row, position in enumerate(members):
                p = prepared[position]
                chosen = torch.nonzero(p["levels"] == level).flatten()
                fmap = features[row : row + 1]
                height, width = p["size_hw"]
                scale = (fmap.shape[-1] / width, fmap.shape[-2] / height)
                pooled = roi_vectors(model, fmap, torch.from_numpy(p["boxes"])[chosen], scale, p["weights"][chosen])
                if chosen[0] == 0:
                    pooled[0] = model.pool(fmap)[0].float()
                vectors[position][chosen] = pooled.cpu()


@register("crop")
class CropRegions(RegionRepresentation):
    """Every region cut out (segments: background filled) and embedded like a query (any model)."""

    pooling = "crop"

    def __init__(self, proposals: Mapping[str, Mapping[str, Any] | None], max_pixels: int,
                 crop_size: Annotated[int | None, Rule(low=1)] = None):
        super().__init__(proposals, max_pixels)
        self.crop_size = crop_size
        """Side each crop is resized to; None = the model's input size (as queries are)."""

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "crop_size": self.crop_size}

    def images_per_batch(self, batch_size: int) -> int:
        return 1  # one image's crops fill the batches

    def embedding_words(self) -> str:
        return "each cut out and embedded alone"

    def embed(self, model: Embedder, prepared: list[dict], device: torch.device, precision: str, batch_size: int) -> list[Rows]:
        out = []
        for p in prepared:
            parts = []
            for start in range(0, len(p["pixels"]), batch_size):
                pixels = p["pixels"][start : start + batch_size].to(device, non_blocking=True)
                with autocast(device, precision):
                    parts.append(model(normalise(pixels, model.preprocess)).float())
            out.append(self._rows(p, torch.cat(parts)))
        return out
