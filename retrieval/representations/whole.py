"""`global`: one vector per image, or per query cut-out (the query mode runs in the worker);
optionally PCA-whitened (`whiten`), the whitening learnt once on a seeded sample of the gallery's
(or `fit_images`') whole-image vectors and applied to gallery and queries alike."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import torch

from retrieval.aggregation.whitening import Whitening, fit_whitening, whiten
from retrieval.config.rules import Rule
from retrieval.device import autocast
from retrieval.errors import UserError
from retrieval.features.keys import Item
from retrieval.images import ImageError, load_rgb
from retrieval.models.base import Embedder, Preprocess
from retrieval.models.transform import normalise, prepare
from retrieval.queries import QueryError, QueryFn
from retrieval.representations import Representation, Rows, register
from retrieval.representations.fitting import FitImages, FitInputs, Sample, Whiten


class WholeImages(torch.utils.data.Dataset):
    """Item -> {"position", "error", "pixels": uint8 CHW at the model's input size}."""

    def __init__(self, items: Sequence[Item], preprocess: Preprocess, max_pixels: int,
                 mode: QueryFn | None, mode_options: dict[str, Any]):
        self.items = items
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.mode = mode
        self.mode_options = mode_options

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict[str, Any]:
        item = self.items[position]
        try:
            image = load_rgb(item.path, max_pixels=self.max_pixels)
            if self.mode is not None:
                image = self.mode(image, item.instance, **self.mode_options)
            pixels = np.ascontiguousarray(prepare(image, self.preprocess).transpose(2, 0, 1))
        except (ImageError, QueryError) as error:
            return {"position": position, "error": str(error)}
        return {"position": position, "error": "", "pixels": torch.from_numpy(pixels)}


@register("global")
class GlobalRepresentation(Representation):
    """One vector per image: the model's own descriptor of the whole image (or the query's cut-out)."""

    encodes_queries = True
    state_type = Whitening

    def __init__(
        self,
        max_pixels: int,
        mode: QueryFn | None = None,
        mode_options: dict[str, Any] | None = None,
        whiten: Whiten = None,
        fit_sample: Annotated[int, Rule(low=2)] = 1000,
        fit_seed: int = 0,
        fit_images: FitImages = None,
    ):
        self.max_pixels = int(max_pixels)
        self.mode = mode
        self.mode_options = dict(mode_options or {})
        self.whiten = whiten
        """Dimensions kept after PCA-whitening (None: the model's vectors as they are)."""
        self.sample = Sample.of(fit_sample, fit_seed, fit_images)

    def settings(self) -> dict[str, Any]:
        # The query mode is not here: it is part of each query's item key, so whole-image
        # cut-outs share the gallery's vectors in the same store.
        whitened = {} if self.whiten is None else {"whiten": self.whiten}
        return {"representation": "global", "max_pixels": self.max_pixels, **whitened}

    def learns(self) -> Sample | None:
        return None if self.whiten is None else self.sample

    def fit(self, inputs: FitInputs) -> Whitening:
        """The PCA-whitening of the sample's whole-image vectors."""
        rows = inputs.rows(GlobalRepresentation(self.max_pixels))
        try:
            return fit_whitening(np.asarray(rows.vectors, dtype=np.float32), self.whiten)
        except UserError as error:
            raise UserError(f"representation.whiten={self.whiten}: {error} "
                            "(representation.fit_sample, representation.whiten)") from None

    def worker_dataset(self, items: Sequence[Item], model: Embedder) -> torch.utils.data.Dataset:
        return WholeImages(items, model.preprocess, self.max_pixels, self.mode, self.mode_options)

    def embed(self, model: Embedder, prepared: list[dict], device: torch.device, precision: str, batch_size: int) -> list[Rows]:
        if not prepared:
            return []
        pixels = torch.stack([p["pixels"] for p in prepared]).to(device, non_blocking=True)
        with autocast(device, precision):
            vectors = model(normalise(pixels, model.preprocess)).float()
        if self.whiten is not None:
            if self.state is None:
                raise RuntimeError("a whitening representation embeds only once fitted (Representation.fitted)")
            vectors = whiten(torch.nn.functional.normalize(vectors, dim=1), self.state)  # learnt on unit vectors
        return [Rows(vectors=vector[None]) for vector in vectors]
