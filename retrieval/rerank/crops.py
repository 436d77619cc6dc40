"""Vectors of crops of gallery images, embedded exactly as a query's cut-out is (the run's model,
preprocessing, precision, the queries' representation with its learnt state, and storage
rounding), kept per (image key, window, mask).

Queries that share results share the work: a crop is embedded once however many queries ask
for it. With a cache folder, each image's crops are also kept on disk, one file per image
(`<folder>/<2 hex>/<hash of the image key>.npz`: crop keys and vectors), written atomically,
so a rerun with other options embeds only the windows it has not seen; the image key holds
the file's size and time, so a changed image starts afresh. Memory holds the crops of the
most recently used images only (written out first when they have new ones).
"""
from __future__ import annotations

import hashlib
import logging
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from retrieval import artifacts
from retrieval.features.extract import STORAGE
from retrieval.images import ImageError, load_rgb
from retrieval.regions.pooling import crop_pixels
from retrieval.regions.proposals import Regions
from retrieval.rerank import QueryModel

log = logging.getLogger(__name__)

FLUSH_SECONDS = 60.0
"""New crops reach the disk at least this often (and when the step ends): an interrupted run
loses at most this much embedding."""


@dataclass(frozen=True, eq=False)
class GalleryImage:
    """A gallery image's pixels, and the key its crops are kept under."""

    key: str
    """Its item key (path, size, time)."""
    pixels: np.ndarray
    """HxWx3 uint8."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        height, width = self.pixels.shape[:2]
        return width, height


def read_image(path: Path, max_pixels: int) -> np.ndarray | str:
    """The image's pixels, or why it cannot be read now (logged)."""
    try:
        return load_rgb(path, max_pixels=max_pixels)
    except ImageError as error:
        log.warning("refine: %s", error)
        return str(error)


@dataclass
class _Table:
    """One image's crops: crop key -> row of `vectors`."""

    rows: dict[str, int] = field(default_factory=dict)
    vectors: list[np.ndarray] = field(default_factory=list)
    saved: int = 0
    """How many of the rows are on disk (-1: the file there is damaged, rewrite it)."""


class CropVectors:
    """Crop vectors of gallery images, embedded by `embedder`, `batch_size` crops at a time."""

    def __init__(self, embedder: QueryModel, batch_size: int, folder: Path | None, images_in_memory: int):
        self.embedder, self.batch_size, self.folder = embedder, batch_size, folder
        self.model = embedder.model.to(embedder.device).eval()
        self.storage = STORAGE[embedder.dtype]
        self.images_in_memory = images_in_memory
        self.tables: OrderedDict[str, _Table] = OrderedDict()
        self.embedded = self.reused = self.unreadable = 0
        """Crops embedded by this object; crops asked for again (or found on disk); cache files
        that could not be read (their crops are embedded again, and the file rewritten)."""
        self.last_flush = time.monotonic()

    def vectors(self, requests: list[tuple[GalleryImage, Regions]]) -> list[np.ndarray]:
        """Per request, (n, D) float32 unit vectors of the image's regions (a region with a mask
        is cut out with the rest of its box filled, as crop pooling does)."""
        keyed = [(image, regions, [_crop_key(regions, i) for i in range(len(regions))]) for image, regions in requests]
        missing: dict[tuple[str, str], tuple[GalleryImage, Regions, int]] = {}
        for image, regions, keys in keyed:
            table = self._table(image.key)
            for index, key in enumerate(keys):
                if key in table.rows or (image.key, key) in missing:
                    self.reused += 1
                else:
                    missing[image.key, key] = (image, regions, index)
        self._embed(list(missing.values()))
        out = []
        for image, _, keys in keyed:
            table = self._table(image.key)
            out.append(np.stack([table.vectors[table.rows[key]] for key in keys]).astype(np.float32)
                       if keys else np.zeros((0, self.model.dim), np.float32))
        if self.folder is not None and time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()
        return out

    @torch.inference_mode()
    def _embed(self, crops: list[tuple[GalleryImage, Regions, int]]) -> None:
        for start in range(0, len(crops), self.batch_size):
            chunk = _by_image(crops[start : start + self.batch_size])
            pixels = np.concatenate([crop_pixels(image.pixels, regions, self.model.preprocess) for image, regions, _ in chunk])
            prepared = [{"pixels": torch.from_numpy(crop)} for crop in pixels]
            rows = self.embedder.representation.embed(self.model, prepared, self.embedder.device, self.embedder.precision,
                                                      self.batch_size)
            made = torch.cat([torch.as_tensor(row.vectors).float() for row in rows])
            # rounded as the store rounds the query vectors; a non-finite vector stays NaN (scores nothing)
            made = iter(torch.nn.functional.normalize(made, dim=1).cpu().numpy().astype(self.storage))
            for image, _, keys in chunk:
                table = self._table(image.key)
                for key in keys:
                    table.rows[key] = len(table.vectors)
                    table.vectors.append(next(made))
                self.embedded += len(keys)

    def _table(self, image_key: str) -> _Table:
        """The image's crops (read from disk on first use), most recently used last."""
        if image_key in self.tables:
            self.tables.move_to_end(image_key)
            return self.tables[image_key]
        table = self._read(image_key)
        self.tables[image_key] = table
        while len(self.tables) > self.images_in_memory:
            old_key, old = self.tables.popitem(last=False)
            self._write(old_key, old)
        return table

    def _path(self, image_key: str) -> Path:
        digest = hashlib.sha256(image_key.encode()).hexdigest()[:32]
        return self.folder / digest[:2] / f"{digest}.npz"

    def _read(self, image_key: str) -> _Table:
        if self.folder is None or not self._path(image_key).exists():
            return _Table()
        try:
            with np.load(self._path(image_key), allow_pickle=False) as data:
                keys, vectors = data["crops"].tolist(), list(data["vectors"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            self.unreadable += 1
            log.warning("refine: crop cache %s unreadable (%s); its crops are embedded again", self._path(image_key), error)
            return _Table(saved=-1)  # rewritten at the next flush
        if len(keys) != len(vectors) or len(set(keys)) != len(keys):
            self.unreadable += 1
            log.warning("refine: crop cache %s does not pair its crops and vectors; its crops are embedded again",
                        self._path(image_key))
            return _Table(saved=-1)
        return _Table(dict(zip(keys, range(len(keys)))), vectors, saved=len(keys))

    def _write(self, image_key: str, table: _Table) -> None:
        if self.folder is None or table.saved == len(table.vectors) or not table.vectors:
            return
        keys = sorted(table.rows, key=table.rows.get)
        with artifacts.atomic_path(self._path(image_key)) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, key=np.array(image_key), crops=np.array(keys), vectors=np.stack(table.vectors))
        table.saved = len(table.vectors)

    def flush(self) -> None:
        """Write every image's new crops to disk (nothing without a folder)."""
        for image_key, table in self.tables.items():
            self._write(image_key, table)
        self.last_flush = time.monotonic()


def _by_image(crops: list[tuple[GalleryImage, Regions, int]]) -> list[tuple[GalleryImage, Regions, list[str]]]:
    """The crops grouped per image: (image, those regions, their crop keys), so each image's
    pixels are cut once per batch."""
    grouped: dict[str, tuple[GalleryImage, list[Regions], list[str]]] = {}
    for image, regions, index in crops:
        entry = grouped.setdefault(image.key, (image, [], []))
        entry[1].append(Regions(regions.boxes[index : index + 1], regions.masks[index : index + 1],
                                regions.sources[index : index + 1]))
        entry[2].append(_crop_key(regions, index))
    return [(image, Regions.concat(parts), keys) for image, parts, keys in grouped.values()]


def _crop_key(regions: Regions, index: int) -> str:
    """The window, and the digest of its mask (none: the box itself)."""
    box = ",".join(str(int(v)) for v in regions.boxes[index])
    mask = regions.masks[index]
    if mask is None:
        return box
    digest = hashlib.sha256(np.packbits(mask).tobytes() + str(mask.shape).encode()).hexdigest()[:16]
    return f"{box},{digest}"
