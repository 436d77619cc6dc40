"""`vlad`: AnyLoc's VLAD over a model's dense local features, one vector per image (or query
cut-out), with a vocabulary learnt by seeded k-means on a sample and an optional PCA-whitening
learnt on a held-out part of it (`retrieval.aggregation.vlad`, `.whitening`).

Every image is resized whole (aspect kept, longer side `input_size`; for ViTs each side a
whole number of patches) and passed once; its map's cells are its local descriptors. The fit
samples `fit_descriptors` cells of each of the sample's vocabulary images (seeded per image),
clusters them, and, when `whiten` is set, encodes the held-out images with that vocabulary to
learn the whitening: its vectors are not those of the images the words were fitted on.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from retrieval.aggregation.dense import local_descriptors
from retrieval.aggregation.state import load_state, save_state
from retrieval.aggregation.vlad import Vocabulary, fit_vocabulary, vlad_map
from retrieval.aggregation.whitening import Whitening, fit_whitening, whiten
from retrieval.config.rules import ConfigError, Rule
from retrieval.errors import UserError
from retrieval.features.keys import Item
from retrieval.models.base import Embedder, InputSize
from retrieval.queries import QueryFn
from retrieval.representations import Rows, register
from retrieval.representations.dense import DenseRepresentation, Facet, Layer
from retrieval.representations.fitting import FitImages, FitInputs, Sample, Whiten

KIND = "vlad-state"


@dataclass(frozen=True)
class VladState:
    """What `vlad` and `segvlad` learn: a vocabulary, and the whitening of its vectors if asked."""

    vocabulary: Vocabulary
    whitening: Whitening | None = None

    @property
    def digest(self) -> str:
        return self.vocabulary.digest + ("" if self.whitening is None else "+" + self.whitening.digest)

    def save(self, path: Path) -> Path:
        arrays = {"centroids": self.vocabulary.centroids}
        settings: dict[str, Any] = {"seed": self.vocabulary.seed, "niter": self.vocabulary.niter,
                                    "vocabulary": self.vocabulary.digest, "whitening": None}
        if self.whitening is not None:
            arrays.update(mean=self.whitening.mean, projection=self.whitening.projection, eigenvalues=self.whitening.eigenvalues)
            settings.update(whitening=self.whitening.digest, eps=self.whitening.eps)
        return save_state(path, KIND, settings, self.digest, **arrays)

    @classmethod
    def load(cls, path: Path) -> "VladState":
        settings, _, arrays = load_state(path, KIND, ("centroids",))
        vocabulary = Vocabulary(arrays["centroids"], settings["seed"], settings["niter"], settings["vocabulary"])
        if settings["whitening"] is None:
            return cls(vocabulary)
        _, _, more = load_state(path, KIND, ("mean", "projection", "eigenvalues"))
        return cls(vocabulary, Whitening(**more, eps=settings["eps"], digest=settings["whitening"]))


class SampledDescriptors(DenseRepresentation):
    """A fit's helper: `per_image` local descriptors of each image, drawn with a seed fixed by
    (seed, the item's key), so a sample's store is the same whichever images it is filled with."""

    def __init__(self, max_pixels: int, layer: int | None, facet: str, input_size: int | None, per_image: int, seed: int):
        super().__init__(max_pixels, layer, facet, input_size)
        self.per_image = per_image
        self.seed = seed

    def settings(self) -> dict[str, Any]:
        return {"representation": "dense-descriptors", **self.dense_settings(), "per_image": self.per_image, "seed": self.seed}

    def worker_dataset(self, items: Sequence[Item], model: Embedder) -> torch.utils.data.Dataset:
        return self.dense_images(items, model)

    def embed(self, model: Embedder, prepared: list[dict], device: torch.device, precision: str, batch_size: int) -> list[Rows]:
        rows = []
        for p, feature_map in zip(prepared, self.maps(model, prepared, device, precision, batch_size)):
            descriptors = local_descriptors(feature_map)
            if self.per_image < len(descriptors):
                draw = np.random.default_rng([self.seed, zlib.crc32(p["key"].encode())])
                chosen = np.sort(draw.choice(len(descriptors), self.per_image, replace=False))
                descriptors = descriptors[torch.from_numpy(chosen).to(descriptors.device)]
            rows.append(Rows(vectors=descriptors))
        return rows


class LearntAggregation(DenseRepresentation):
    """A dense representation with a VLAD vocabulary and an optional whitening, fitted on a
    seeded sample: the vocabulary on its first part, the whitening on a held-out second part."""

    state_type = VladState
    state: VladState | None = None

    def __init__(self, max_pixels: int, layer: int | None, facet: str, input_size: int | None, clusters: int,
                 fit_descriptors: int, fit_sample: int, fit_seed: int, fit_images: Path | None,
                 whiten: int | None, whiten_sample: int):
        super().__init__(max_pixels, layer, facet, input_size)
        self.clusters = int(clusters)
        self.fit_descriptors = int(fit_descriptors)
        if self.clusters > int(fit_sample) * self.fit_descriptors:
            raise ConfigError(
                f"representation.clusters={clusters} needs at least {clusters} sample descriptors, but "
                f"representation.fit_sample={fit_sample} images x representation.fit_descriptors={fit_descriptors} "
                f"give at most {int(fit_sample) * self.fit_descriptors}: sample more or use fewer clusters")
        self.whiten = whiten
        self.whiten_sample = int(whiten_sample)
        self.fit_seed = int(fit_seed)
        held_out = self.whiten_sample if whiten is not None else 0
        self.sample = Sample.of(int(fit_sample) + held_out, self.fit_seed, fit_images)

    def learnt_settings(self) -> dict[str, Any]:
        """The options the rows depend on through the state (the sample is keyed by the fit),
        and, for a fitted copy used inside a fit, the state itself."""
        whitened = {} if self.whiten is None else {"whiten": self.whiten, "whiten_sample": self.whiten_sample}
        fitted = {} if self.state is None else {"state": self.state.digest}
        return {"clusters": self.clusters, "fit_descriptors": self.fit_descriptors, **whitened, **fitted}

    def learns(self) -> Sample:
        return self.sample

    def split(self, items: list[Item]) -> tuple[list[Item], list[Item]]:
        """(vocabulary images, held-out images) of the sample: `whiten_sample` of it held out
        (at most half), chosen with the fit's seed; none without whitening."""
        if self.whiten is None:
            return items, []
        count = min(self.whiten_sample, len(items) // 2)
        held = set(np.random.default_rng(self.fit_seed).choice(len(items), count, replace=False).tolist())
        return [item for i, item in enumerate(items) if i not in held], [item for i, item in enumerate(items) if i in held]

    def learn_vocabulary(self, inputs: FitInputs, items: list[Item]) -> Vocabulary:
        helper = SampledDescriptors(self.max_pixels, self.layer, self.facet, self.input_size, self.fit_descriptors, self.fit_seed)
        descriptors = np.asarray(inputs.rows(helper, items).vectors, dtype=np.float32)
        try:
            return fit_vocabulary(descriptors, self.clusters, seed=self.fit_seed)
        except UserError as error:
            raise UserError(f"representation.clusters={self.clusters}: {error} "
                            "(representation.fit_sample, representation.fit_descriptors, representation.clusters)") from None

    def learn_whitening(self, vectors: np.ndarray) -> Whitening:
        try:
            return fit_whitening(vectors, self.whiten)
        except UserError as error:
            raise UserError(f"representation.whiten={self.whiten}: {error} "
                            "(representation.whiten_sample, representation.whiten)") from None

    def whitened(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.state is None:
            raise RuntimeError("a learning representation embeds only once fitted (Representation.fitted)")
        return vectors if self.state.whitening is None else whiten(vectors, self.state.whitening)


@register("vlad")
class VladRepresentation(LearntAggregation):
    """One VLAD vector per image (or query cut-out) over the model's dense local features."""

    encodes_queries = True

    def __init__(
        self,
        max_pixels: int,
        mode: QueryFn | None = None,
        mode_options: dict[str, Any] | None = None,
        clusters: Annotated[int, Rule(low=1)] = 32,
        layer: Layer = None,
        facet: Facet = "token",
        input_size: InputSize = None,
        fit_descriptors: Annotated[int, Rule(low=1)] = 100,
        fit_sample: Annotated[int, Rule(low=1)] = 1000,
        fit_seed: int = 0,
        fit_images: FitImages = None,
        whiten: Whiten = None,
        whiten_sample: Annotated[int, Rule(low=2)] = 200,
    ):
        super().__init__(max_pixels, layer, facet, input_size, clusters, fit_descriptors, fit_sample, fit_seed, fit_images,
                         whiten, whiten_sample)
        self.mode = mode
        self.mode_options = dict(mode_options or {})

    def settings(self) -> dict[str, Any]:
        # As for `global`, the query mode is part of each query's item key, not of the store's.
        return {"representation": "vlad", **self.dense_settings(), **self.learnt_settings()}

    def fit(self, inputs: FitInputs) -> VladState:
        """The vocabulary of the sample's first part; the whitening of the held-out part's VLADs."""
        words, held_out = self.split(inputs.items)
        state = VladState(self.learn_vocabulary(inputs, words))
        if self.whiten is None:
            return state
        unwhitened = VladRepresentation(self.max_pixels, clusters=self.clusters, layer=self.layer, facet=self.facet,
                                        input_size=self.input_size, fit_descriptors=self.fit_descriptors).fitted(state)
        return VladState(state.vocabulary, self.learn_whitening(np.asarray(inputs.rows(unwhitened, held_out).vectors)))

    def worker_dataset(self, items: Sequence[Item], model: Embedder) -> torch.utils.data.Dataset:
        return self.dense_images(items, model, mode=self.mode, mode_options=self.mode_options)

    def embed(self, model: Embedder, prepared: list[dict], device: torch.device, precision: str, batch_size: int) -> list[Rows]:
        if self.state is None:
            raise RuntimeError("vlad embeds only once fitted (Representation.fitted)")
        maps = self.maps(model, prepared, device, precision, batch_size)
        return [Rows(vectors=self.whitened(vlad_map(feature_map, self.state.vocabulary)[None])) for feature_map in maps]
