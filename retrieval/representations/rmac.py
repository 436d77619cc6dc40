"""`rmac`: R-MAC (Tolias, Sicre and Jégou, ICLR 2016) over a backbone's dense feature map, for
gallery images and query cut-outs alike, with the object found in each top result by AML.

Encoding: the image resized to `input_size` pixels along its longer side (aspect kept; a ViT's
sides rounded to whole patches; a query's cut-out scaled as its image is, so that the object
keeps about its size in the gallery, as the paper's queries are regions of full images), its
dense map (`retrieval.models.dense`: a CNN's last convolution, a ViT's patch tokens of a chosen
`layer` and `facet`), the MAC of every window of the R-MAC grid (`levels` scales, 40% overlap),
each L2-normalised, PCA-whitened, summed and L2-normalised (`retrieval.aggregation.rmac`). The
whitening is learnt by `fit` on the regional vectors of a seeded sample of the gallery (or of
`fit_images`), kept and reused by every run with the same sample and settings
(`retrieval.representations.fitting`).

Localisation: a row is the whole image (its box), so the search ranks images exactly as their
R-MAC vectors say; then, for each query's `localise_top` first results, the box of the object
is found by approximate max-pooling localisation (`retrieval.aggregation.aml`) between the
query's MAC and the result's map (`retrieval.search.localise`, run by the search stage as its
finishing step). The maps are recomputed there rather than stored: a map is h x w x C floats
(at 512 px an EfficientNet map is ~1 MB, hundreds of times the R-MAC vector), so keeping the
gallery's would make the store grow with the resolution, while the top results are few: each
distinct image among every query's top results is embedded once, its queries localised on it,
and dropped, which costs at most one more pass over the gallery and none at all beyond the top.
Scores and order are not changed: the AML box only says where the object is.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import torch

from retrieval.aggregation.rmac import regional_vectors, rmac
from retrieval.aggregation.whitening import Whitening, fit_whitening
from retrieval.config.rules import Rule
from retrieval.errors import UserError
from retrieval.features.keys import Item
from retrieval.models.base import Embedder
from retrieval.queries import QueryFn
from retrieval.regions.proposals import IMAGE_SOURCE
from retrieval.representations import Rows, register
from retrieval.representations.dense import DenseRepresentation, Facet, Layer
from retrieval.representations.fitting import FitImages, FitInputs, Sample, Whiten


class _RmacOptions(DenseRepresentation):
    """What the R-MAC representations share: scenes of `input_size` px (a query's cut-out scaled
    as its image), the map of `layer` and `facet`, the grid's `levels`."""

    def __init__(self, max_pixels: int, input_size: int, levels: int, layer: int | None, facet: str,
                 mode: QueryFn | None = None, mode_options: dict[str, Any] | None = None):
        super().__init__(max_pixels, layer, facet, int(input_size))
        self.levels = int(levels)
        self.mode = mode
        self.mode_options = dict(mode_options or {})

    def dense_settings(self) -> dict[str, Any]:
        return {**super().dense_settings(), "levels": self.levels}

    def worker_dataset(self, items: Sequence[Item], model: Embedder) -> torch.utils.data.Dataset:
        return self.dense_images(items, model, mode=self.mode, mode_options=self.mode_options, scale_with_image=True)


class RegionalMacs(_RmacOptions):
    """The L2-normalised regional MACs of each image, one row per R-MAC window: what the
    whitening of `rmac` is learnt on (kept in a store of their own, so a refit reuses them)."""

    def settings(self) -> dict[str, Any]:
        return {"representation": "rmac-regions", **self.dense_settings()}

    def embed(self, model: Embedder, prepared: list[dict], device: torch.device, precision: str, batch_size: int) -> list[Rows]:
        return [Rows(vectors=regional_vectors(feature_map, self.levels))
                for feature_map in self.maps(model, prepared, device, precision, batch_size)]


@register("rmac")
class RmacRepresentation(_RmacOptions):
    """R-MAC of the backbone's dense map, PCA-whitened per region; the object in each top result found by AML."""

    encodes_queries = True
    localises = True
    localises_results = True
    source_names = [IMAGE_SOURCE]
    state_type = Whitening

    def __init__(
        self,
        max_pixels: int,
        mode: QueryFn | None = None,
        mode_options: dict[str, Any] | None = None,
        input_size: Annotated[int, Rule(low=32)] = 512,
        levels: Annotated[int, Rule(low=1, high=8)] = 3,
        layer: Layer = None,
        facet: Facet = "token",
        whiten: Whiten = 256,
        fit_sample: Annotated[int, Rule(low=2)] = 1000,
        fit_seed: int = 0,
        fit_images: FitImages = None,
        localise_top: Annotated[int, Rule(low=0)] = 100,
    ):
        super().__init__(max_pixels, input_size, levels, layer, facet, mode, mode_options)
        self.whiten = whiten
        """Dimensions kept after PCA-whitening the regional vectors (None: all the sample gives,
        whose last, near-zero variances the whitening blows up into noise)."""
        self.sample = Sample.of(fit_sample, fit_seed, fit_images)
        self.localise_top = int(localise_top)
        """Results per query whose box AML finds (the rest keep the whole image's)."""

    def settings(self) -> dict[str, Any]:
        # The query mode is not here: it is part of each query's item key (as for `global`).
        return {"representation": "rmac", **self.dense_settings(), "whiten": self.whiten}

    def localisation_settings(self) -> dict[str, Any]:
        """What determines the boxes `localise_results` gives, beside the stores' settings."""
        return {"aml": "tolias2016", "top": self.localise_top}

    def learns(self) -> Sample:
        return self.sample

    def regions(self) -> RegionalMacs:
        """The representation of the regional vectors the whitening is learnt on."""
        return RegionalMacs(self.max_pixels, self.input_size, self.levels, self.layer, self.facet)

    def fit(self, inputs: FitInputs) -> Whitening:
        """The PCA-whitening of the sample's regional MACs."""
        rows = inputs.rows(self.regions())
        try:
            return fit_whitening(np.asarray(rows.vectors, dtype=np.float32), self.whiten)
        except UserError as error:
            raise UserError(f"representation.whiten={self.whiten}: {error} "
                            f"(the regional vectors of {int(rows.valid.sum())} sampled images; "
                            "representation.fit_sample, representation.whiten)") from None

    def embed(self, model: Embedder, prepared: list[dict], device: torch.device, precision: str, batch_size: int) -> list[Rows]:
        if self.state is None:
            raise RuntimeError("rmac embeds only once fitted (Representation.fitted)")
        return [self._rows(p, rmac(feature_map, self.state, self.levels))
                for p, feature_map in zip(prepared, self.maps(model, prepared, device, precision, batch_size))]

    @staticmethod
    def _rows(prepared: dict, vector: torch.Tensor) -> Rows:
        height, width = prepared["size_hw"]
        return Rows(vectors=vector[None], boxes=np.array([[0, 0, width, height]], dtype=np.float32),
                    sources=np.zeros(1, dtype=np.int8), masks=[""])
