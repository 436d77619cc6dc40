"""Batched, resumable embedding extraction.

CPU workers decode, cut out the query object and resize; uint8 batches go to the device
(pinned, non-blocking) and are normalised there, under autocast and `inference_mode`.
Results are written in shards, each atomically, so an interrupted run resumes from the
last finished shard. A bad image is a counted, logged skip, never a crash.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from retrieval.artifacts import atomic_path
from retrieval.device import autocast
from retrieval.images import ImageError, load_rgb
from retrieval.models.base import Embedder, Preprocess
from retrieval.queries import QueryError, QueryFn
from retrieval.records import Record

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """One L2-normalised vector per record; rows of skipped records are zero and invalid."""

    keys: list[str]
    vectors: np.ndarray
    valid: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def resize(image: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """Bring an HxWx3 uint8 image to the model's square input, as its weights expect."""
    size = preprocess.input_size
    pil = Image.fromarray(image)
    if preprocess.resize == "stretch":
        return np.asarray(pil.resize((size, size), Image.BICUBIC))
    scale = (min if preprocess.resize == "letterbox" else max)(size / pil.width, size / pil.height)
    width, height = max(1, round(pil.width * scale)), max(1, round(pil.height * scale))
    pil = pil.resize((width, height), Image.BICUBIC)
    if preprocess.resize == "center_crop":
        left, top = (width - size) // 2, (height - size) // 2
        return np.asarray(pil.crop((left, top, left + size, top + size)))
    if preprocess.resize == "letterbox":
        fill = tuple(round(255 * m) for m in preprocess.mean)
        canvas = Image.new("RGB", (size, size), fill)
        canvas.paste(pil, ((size - width) // 2, (size - height) // 2))
        return np.asarray(canvas)
    raise ValueError(f"Unknown resize mode {preprocess.resize!r}: use stretch, letterbox or center_crop")


class ImageSet(torch.utils.data.Dataset):
    """Records -> (index, uint8 CHW tensor, error message or "")."""

    def __init__(
        self,
        records: Sequence[Record],
        preprocess: Preprocess,
        query_mode: QueryFn | None = None,
        mode_options: dict[str, Any] | None = None,
    ):
        self.records = records
        self.preprocess = preprocess
        self.query_mode = query_mode
        self.mode_options = mode_options or {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, str]:
        record = self.records[index]
        size = self.preprocess.input_size
        try:
            image = load_rgb(record.path)
            if self.query_mode is not None:
                instance = record.instances[0] if record.instances else None
                image = self.query_mode(image, instance, **self.mode_options)
            pixels = torch.from_numpy(np.array(resize(image, self.preprocess)))  # writable copy
            return index, pixels.permute(2, 0, 1), ""
        except (ImageError, QueryError) as error:
            return index, torch.zeros(3, size, size, dtype=torch.uint8), str(error)


def shard_path(folder: Path, shard: int) -> Path:
    return folder / f"shard_{shard:05d}.npz"


def pending_shards(folder: Path, n_items: int, shard_size: int, desc: str) -> list[int]:
    """Shards of `n_items` that are not written yet (an interrupted run resumes with these)."""
    n_shards = (n_items + shard_size - 1) // shard_size
    pending = [s for s in range(n_shards) if not shard_path(folder, s).exists()]
    if len(pending) < n_shards:
        log.info("%s: resuming, %d of %d shards already done", desc, n_shards - len(pending), n_shards)
    return pending


def normalise(batch: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    mean = torch.tensor(preprocess.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=batch.device).view(1, 3, 1, 1)
    return (batch.float().div_(255) - mean) / std


def extract(
    records: Sequence[Record],
    model: Embedder,
    folder: Path,
    *,
    query_mode: QueryFn | None = None,
    mode_options: dict[str, Any] | None = None,
    device: torch.device = torch.device("cpu"),
    precision: str = "auto",
    batch_size: int = 64,
    workers: int = 2,
    shard_size: int = 1024,
    dtype: str = "float32",
    desc: str = "extract",
) -> dict[str, Any]:
    """Embed `records` into shards under `folder`; finished shards are skipped.

    Returns statistics of this call (images embedded, seconds, images/s, errors)."""
    shard_size = max(batch_size, shard_size // batch_size * batch_size)
    pending = pending_shards(folder, len(records), shard_size, desc)
    batches = [
        list(range(start, min(start + batch_size, (s + 1) * shard_size, len(records))))
        for s in pending
        for start in range(s * shard_size, min((s + 1) * shard_size, len(records)), batch_size)
    ]
    dataset = ImageSet(records, model.preprocess, query_mode, mode_options)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    model = model.to(device).eval()
    storage = np.float16 if dtype == "float16" else np.float32
    buffers: dict[int, list[tuple[np.ndarray, np.ndarray, list[str]]]] = {}
    errors: dict[int, str] = {}
    start_time = time.perf_counter()
    done = 0
    with torch.inference_mode(), tqdm(total=sum(map(len, batches)), desc=desc, unit="img") as bar:
        for indices, pixels, messages in loader:
            pixels = pixels.to(device, non_blocking=True)
            with autocast(device, precision):
                vectors = model(normalise(pixels, model.preprocess))
            vectors = torch.nn.functional.normalize(vectors.float(), dim=1).cpu().numpy()
            valid = np.array([not m for m in messages])
            vectors[~valid] = 0
            for index, message in zip(indices.tolist(), messages):
                if message:
                    errors[index] = message
                    log.warning("skipped %s: %s", records[index].key, message)
            shard = indices[0].item() // shard_size
            buffers.setdefault(shard, []).append((indices.numpy(), vectors.astype(storage), valid))
            done += len(indices)
            bar.update(len(indices))
            shard_end = min((shard + 1) * shard_size, len(records))
            if sum(len(part[0]) for part in buffers[shard]) == shard_end - shard * shard_size:
                _write_shard(folder, shard, buffers.pop(shard), errors)
    seconds = time.perf_counter() - start_time
    return {
        "embedded": done,
        "seconds": round(seconds, 3),
        "images_per_s": round(done / seconds, 2) if done and seconds > 0 else None,
        "errors": len(errors),
    }


def _write_shard(folder: Path, shard: int, parts: list, errors: dict[int, str]) -> None:
    indices = np.concatenate([p[0] for p in parts])
    order = np.argsort(indices)
    shard_errors = {str(i): errors[i] for i in indices.tolist() if i in errors}
    with atomic_path(shard_path(folder, shard)) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                indices=indices[order],
                vectors=np.concatenate([p[1] for p in parts])[order],
                valid=np.concatenate([p[2] for p in parts])[order],
                errors=np.array(json.dumps(shard_errors)),
            )


def load_embeddings(folder: Path, keys: list[str]) -> Embeddings:
    """Concatenate the shards of a finished extraction, in record order."""
    shards = sorted(Path(folder).glob("shard_*.npz"))
    vectors, valid, errors, seen = [], [], {}, []
    for shard in shards:
        with np.load(shard, allow_pickle=False) as data:
            seen.append(data["indices"])
            vectors.append(data["vectors"])
            valid.append(data["valid"])
            errors.update({int(k): v for k, v in json.loads(str(data["errors"])).items()})
    indices = np.concatenate(seen) if seen else np.empty(0, dtype=np.int64)
    if not np.array_equal(indices, np.arange(len(keys))):
        raise RuntimeError(
            f"{folder} holds {len(indices)} of {len(keys)} embeddings; rerun extraction to finish it"
        )
    return Embeddings(keys, np.concatenate(vectors), np.concatenate(valid), errors)
