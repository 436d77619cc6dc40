"""Batched, resumable region extraction: the region embeddings artifact.

Each gallery image is decoded once, in a DataLoader worker, which also proposes its
regions and prepares the pixels (the scene at each pyramid size for ROI pooling, or the crops); the
device pools or embeds, under autocast and `inference_mode`. Shards of `shard_images`
images are written atomically, so an interrupted run resumes from the last finished shard.

Shard format (`shard_*.npz`, plain numpy; regions of an image are contiguous, images in order):

| array          | shape / dtype        | meaning                                                  |
|----------------|----------------------|----------------------------------------------------------|
| `images`       | (n_images,) int64    | gallery indices this shard covers                        |
| `valid`        | (n_images,) bool     | False = the image was skipped (its error is in `errors`) |
| `region_image` | (n_regions,) int64   | gallery index of each region                             |
| `vectors`      | (n_regions, D)       | L2-normalised, float32 or float16                        |
| `boxes`        | (n_regions, 4) f32   | xyxy in original pixels, right/bottom exclusive          |
| `sources`      | (n_regions,) int8    | index into the JSON list `source_names`                  |
| `masks`        | () str               | JSON list, one COCO RLE JSON string per region, "" = box |
| `errors`       | () str               | JSON {gallery index: message}                            |
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from retrieval.artifacts import atomic_path
from retrieval.device import autocast
from retrieval.embed import normalise, pending_shards, shard_path
from retrieval.images import ImageError, load_rgb
from retrieval.masks import encode
from retrieval.models.base import Embedder
from retrieval.records import Record
from retrieval.regions.learned import needs_main_process
from retrieval.regions.pooling import POOLINGS, crop_pixels, pyramid_levels, roi_vectors, roi_weights, scene_pixels
from retrieval.regions.proposals import IMAGE_SOURCE, PROPOSERS, Regions, full_mask, propose

log = logging.getLogger(__name__)


@dataclass
class RegionEmbeddings:
    """Every region of the gallery, in image order, with where it is."""

    keys: list[str]
    vectors: np.ndarray
    region_image: np.ndarray
    boxes: np.ndarray
    sources: np.ndarray
    source_names: list[str]
    masks: list[str]
    valid: np.ndarray
    """Per gallery image."""
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


@dataclass(frozen=True)
class RegionSpec:
    """How regions are made and embedded (everything that determines the artifact)."""

    proposers: Mapping[str, Mapping[str, Any] | None]
    pooling: str = "roi"
    input_sizes: tuple[int, ...] = (640, 1280)
    """ROI pooling: longer side of the scene in each backbone pass (the pyramid)."""
    roi_size: int = 7
    """ROI pooling: bins per side that each region is aligned to before the model's pool."""
    crop_size: int | None = None
    """Crop pooling: side each crop is resized to; None = the model's input size (as queries)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_sizes", tuple(int(size) for size in self.input_sizes))
        if self.pooling not in POOLINGS:
            raise ValueError(f"regions.pooling must be one of {POOLINGS}, not {self.pooling!r}")
        if not self.input_sizes or min(self.input_sizes) < 32:
            raise ValueError(f"regions.input_sizes must list scene sizes of at least 32 pixels, not {self.input_sizes!r}")


def _rle_strings(regions: Regions, size_hw: tuple[int, int]) -> list[str]:
    return [
        "" if mask is None else json.dumps(encode(full_mask(regions, index, size_hw)))
        for index, mask in enumerate(regions.masks)
    ]


class RegionImageSet(torch.utils.data.Dataset):
    """Gallery index -> dict of the image's regions and the pixels to embed them from."""

    def __init__(self, records: Sequence[Record], model: Embedder, spec: RegionSpec, sources: list[str]):
        self.records = records
        self.preprocess = model.preprocess.with_options(input_size=spec.crop_size)
        self.query_size = model.preprocess.input_size
        self.spec = spec
        self.sources = sources

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            image = load_rgb(self.records[index].path)
        except ImageError as error:
            return {"index": index, "error": str(error)}
        regions = propose(image, self.spec.proposers)
        height, width = image.shape[:2]
        item = {
            "index": index,
            "error": "",
            "boxes": torch.from_numpy(regions.boxes),
            "sources": torch.tensor([self.sources.index(s) for s in regions.sources], dtype=torch.int8),
            "masks": _rle_strings(regions, (height, width)),
        }
        if self.spec.pooling == "crop":
            item["pixels"] = torch.from_numpy(crop_pixels(image, regions, self.preprocess))
            return item
        levels = pyramid_levels(regions.boxes, (height, width), self.spec.input_sizes, self.query_size)
        item["levels"] = torch.from_numpy(levels)
        item["scenes"] = {
            int(level): torch.from_numpy(np.ascontiguousarray(scene_pixels(image, self.spec.input_sizes[level]).transpose(2, 0, 1)))
            for level in np.unique(levels)
        }
        item["size_hw"] = (height, width)
        item["weights"] = torch.from_numpy(roi_weights(regions, self.spec.roi_size))
        return item


def _as_list(items: list) -> list:
    return items


def _embed_roi(model: Embedder, items: list[dict], device: torch.device, precision: str) -> list[torch.Tensor]:
    """One backbone pass per pyramid level and group of equally sized scenes; each region is
    pooled from the pass of its level."""
    vectors = [torch.empty(len(item["boxes"]), model.dim) for item in items]
    groups: dict[tuple, list[int]] = {}
    for position, item in enumerate(items):
        for level, scene in item["scenes"].items():
            groups.setdefault((level, *scene.shape), []).append(position)
    for (level, *_), positions in groups.items():
        pixels = torch.stack([items[p]["scenes"][level] for p in positions]).to(device, non_blocking=True)
        with autocast(device, precision):
            features = model.feature_map(normalise(pixels, model.preprocess))
            for row, position in enumerate(positions):
                item = items[position]
                chosen = torch.nonzero(item["levels"] == level).flatten()
                fmap = features[row : row + 1]
                height, width = item["size_hw"]
                scale = (fmap.shape[-1] / width, fmap.shape[-2] / height)
                pooled = roi_vectors(model, fmap, item["boxes"][chosen], scale, item["weights"][chosen])
                if chosen[0] == 0:  # the whole image: the model's own descriptor of this pass
                    pooled[0] = model.pool(fmap)[0].float()
                vectors[position][chosen] = pooled.cpu()
    return vectors


def _embed_crops(model: Embedder, items: list[dict], device: torch.device, precision: str, batch_size: int) -> list[torch.Tensor]:
    vectors = []
    for item in items:
        parts = []
        for start in range(0, len(item["pixels"]), batch_size):
            pixels = item["pixels"][start : start + batch_size].to(device, non_blocking=True)
            with autocast(device, precision):
                parts.append(model(normalise(pixels, model.preprocess)).float())
        vectors.append(torch.cat(parts))
    return vectors


def extract_regions(
    records: Sequence[Record],
    model: Embedder,
    folder: Path,
    spec: RegionSpec,
    *,
    device: torch.device = torch.device("cpu"),
    precision: str = "auto",
    batch_size: int = 8,
    workers: int = 2,
    shard_images: int = 128,
    dtype: str = "float32",
    desc: str = "regions",
) -> dict[str, Any]:
    """Propose and embed the regions of `records` into shards under `folder`; finished shards
    are skipped. `batch_size` = scenes per backbone pass (roi) or crops per pass (crop).

    Returns statistics of this call (images, regions, seconds, images/s, errors)."""
    if spec.pooling == "roi" and not model.dense:
        raise ValueError(
            f"{type(model).__name__} has no dense feature map to ROI-pool; use regions.pooling=crop"
        )
    if any(needs_main_process(PROPOSERS.get(name)) for name in spec.proposers):
        workers = 0
    sources = [IMAGE_SOURCE, *spec.proposers]
    pending = pending_shards(folder, len(records), shard_images, desc)
    order = [i for s in pending for i in range(s * shard_images, min((s + 1) * shard_images, len(records)))]
    images_per_batch = batch_size if spec.pooling == "roi" else 1
    loader = torch.utils.data.DataLoader(
        RegionImageSet(records, model, spec, sources),
        batch_size=images_per_batch,
        sampler=order,
        collate_fn=_as_list,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    model = model.to(device).eval()
    storage = np.float16 if dtype == "float16" else np.float32
    buffers: dict[int, list[dict]] = {}
    started = time.perf_counter()
    done = regions = 0
    with torch.inference_mode(), tqdm(total=len(order), desc=desc, unit="img") as bar:
        for items in loader:
            good = [item for item in items if not item["error"]]
            if spec.pooling == "roi":
                vectors = _embed_roi(model, good, device, precision)
            else:
                vectors = _embed_crops(model, good, device, precision, batch_size)
            for item, vector in zip(good, vectors):
                item["vectors"] = torch.nn.functional.normalize(vector, dim=1).cpu().numpy().astype(storage)
                item.pop("pixels", None), item.pop("scenes", None), item.pop("weights", None)
                regions += len(vector)
            for item in items:
                if item["error"]:
                    log.warning("skipped %s: %s", records[item["index"]].key, item["error"])
                shard = item["index"] // shard_images
                buffers.setdefault(shard, []).append(item)
                expected = min((shard + 1) * shard_images, len(records)) - shard * shard_images
                if len(buffers[shard]) == expected:
                    _write_shard(folder, shard, buffers.pop(shard), sources, model.dim, storage)
            done += len(items)
            bar.update(len(items))
    seconds = time.perf_counter() - started
    return {
        "embedded": done,
        "regions": regions,
        "seconds": round(seconds, 3),
        "images_per_s": round(done / seconds, 2) if done and seconds > 0 else None,
    }


def _write_shard(folder: Path, shard: int, items: list[dict], sources: list[str], dim: int, storage: type) -> None:
    items = sorted(items, key=lambda item: item["index"])
    good = [item for item in items if not item["error"]]
    with atomic_path(shard_path(folder, shard)) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                images=np.array([item["index"] for item in items], dtype=np.int64),
                valid=np.array([not item["error"] for item in items], dtype=bool),
                region_image=np.concatenate(
                    [np.full(len(item["vectors"]), item["index"], dtype=np.int64) for item in good] or [np.zeros(0, np.int64)]
                ),
                vectors=np.concatenate([item["vectors"] for item in good] or [np.zeros((0, dim), storage)]),
                boxes=np.concatenate([item["boxes"].numpy() for item in good] or [np.zeros((0, 4), np.float32)]),
                sources=np.concatenate([item["sources"].numpy() for item in good] or [np.zeros(0, np.int8)]),
                source_names=np.array(json.dumps(sources)),
                masks=np.array(json.dumps([m for item in good for m in item["masks"]])),
                errors=np.array(json.dumps({str(item["index"]): item["error"] for item in items if item["error"]})),
            )


def load_regions(folder: Path, keys: list[str]) -> RegionEmbeddings:
    """Concatenate the shards of a finished region extraction, in image order."""
    parts: dict[str, list] = {name: [] for name in ("images", "valid", "region_image", "vectors", "boxes", "sources")}
    masks: list[str] = []
    errors: dict[int, str] = {}
    names: list[str] = []
    for shard in sorted(Path(folder).glob("shard_*.npz")):
        with np.load(shard, allow_pickle=False) as data:
            for name in parts:
                parts[name].append(data[name])
            masks += json.loads(str(data["masks"]))
            errors.update({int(k): v for k, v in json.loads(str(data["errors"])).items()})
            names = json.loads(str(data["source_names"]))
    images = np.concatenate(parts["images"]) if parts["images"] else np.empty(0, dtype=np.int64)
    if not np.array_equal(images, np.arange(len(keys))):
        raise RuntimeError(f"{folder} holds regions of {len(images)} of {len(keys)} images; rerun extraction to finish it")
    return RegionEmbeddings(
        keys=keys,
        vectors=np.concatenate(parts["vectors"]),
        region_image=np.concatenate(parts["region_image"]),
        boxes=np.concatenate(parts["boxes"]),
        sources=np.concatenate(parts["sources"]),
        source_names=names,
        masks=masks,
        valid=np.concatenate(parts["valid"]),
        errors=errors,
    )
