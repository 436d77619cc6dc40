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

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from PIL import Image

from retrieval.aggregation.dense import dense_maps
from retrieval.aggregation.rmac import regional_vectors, rmac
from retrieval.aggregation.whitening import Whitening, fit_whitening
from retrieval.config.rules import Rule
from retrieval.errors import UserError
from retrieval.features.keys import Item
from retrieval.images import ImageError, load_rgb
from retrieval.models.base import Embedder
from retrieval.models.dense import FACETS, check_dense
from retrieval.queries import QueryError, QueryFn
from retrieval.regions.proposals import IMAGE_SOURCE
from retrieval.representations import Representation, Rows, register
from retrieval.representations.fitting import FitInputs, Sample


def scene_size(height: int, width: int, scale: float, patch: int | None) -> tuple[int, int]:
    """(h, w) of an image resized by `scale`; for a ViT (`patch` pixels a patch) each side
    rounded to whole patches. A side of 0 patches means the image is too thin to give a map."""
    sides = (max(1, round(height * scale)), max(1, round(width * scale)))
    if patch is None:
        return sides
    return tuple(round(side / patch) * patch for side in sides)  # type: ignore[return-value]


class DenseScenes(torch.utils.data.Dataset):
    """Item -> {"position", "error", "pixels": uint8 CHW scene, "size_hw": the image's (or cut-out's) size}:
    the image scaled to `long_side` pixels along its longer side, or a query's cut-out of it
    scaled by the same factor."""

    def __init__(self, items: Sequence[Item], long_side: int, patch: int | None, max_pixels: int,
                 mode: QueryFn | None = None, mode_options: dict[str, Any] | None = None):
        self.items = items
        self.long_side = long_side
        self.patch = patch
        self.max_pixels = max_pixels
        self.mode = mode
        self.mode_options = dict(mode_options or {})

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def resized(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        """The image resized to `size_hw` (bicubic)."""
        return np.asarray(Image.fromarray(image).resize((size_hw[1], size_hw[0]), Image.BICUBIC))

    def __getitem__(self, position: int) -> dict[str, Any]:
        item = self.items[position]
        try:
            image = whole = load_rgb(item.path, max_pixels=self.max_pixels)
            if self.mode is not None:
                image = self.mode(image, item.instance, **self.mode_options)
        except (ImageError, QueryError) as error:
            return {"position": position, "error": str(error)}
        # A cut-out is scaled as its image is (to `long_side` along the image's longer side), so
        # the object keeps its scale in that image, as in the paper (whose queries are regions
        # of full-resolution images), rather than being blown up to fill `long_side`.
        scale = self.long_side / max(whole.shape[:2])
        height, width = image.shape[:2]
        size = scene_size(height, width, scale, self.patch)
        if min(size) == 0:
            return {"position": position, "error": f"a {width}x{height} image scaled by {scale:.3g} to {size[1]}x{size[0]} px "
                                                   f"is thinner than one {self.patch}-pixel patch: it gives no feature map"}
        scene = self.resized(image, size)
        return {"position": position, "error": "", "size_hw": (height, width),
                "pixels": torch.from_numpy(np.ascontiguousarray(scene.transpose(2, 0, 1)))}


def map_batches(model: Embedder, prepared: list[dict], device: torch.device, precision: str, batch_size: int,
                layer: int | None, facet: str) -> Iterator[tuple[dict, torch.Tensor]]:
    """(prepared item, C x h x w map on `device`) pairs: items of one scene shape share passes of
    at most `batch_size` scenes."""
    groups: dict[tuple[int, ...], list[dict]] = {}
    for p in prepared:
        groups.setdefault(tuple(p["pixels"].shape), []).append(p)
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            pixels = torch.stack([p["pixels"] for p in chunk]).to(device, non_blocking=True)
            yield from zip(chunk, dense_maps(model, pixels, layer, facet, precision))


class _DenseOptions(Representation):
    """What the R-MAC representations share: scenes of `input_size` px, the map of `layer` and `facet`."""

    def __init__(self, max_pixels: int, input_size: int, levels: int, layer: int | None, facet: str,
                 mode: QueryFn | None = None, mode_options: dict[str, Any] | None = None):
        self.max_pixels = int(max_pixels)
        self.input_size = int(input_size)
        self.levels = int(levels)
        self.layer = layer
        self.facet = facet
        self.mode = mode
        self.mode_options = dict(mode_options or {})

    def dense_settings(self) -> dict[str, Any]:
        return {"max_pixels": self.max_pixels, "input_size": self.input_size, "levels": self.levels,
                "layer": self.layer, "facet": self.facet}

    def worker_dataset(self, items: Sequence[Item], model: Embedder) -> torch.utils.data.Dataset:
        check_dense(model, self.layer, self.facet)  # a model without a dense map: one line, before any image
        return DenseScenes(items, self.input_size, model.patch_size, self.max_pixels, self.mode, self.mode_options)


class RegionalMacs(_DenseOptions):
    """The L2-normalised regional MACs of each image, one row per R-MAC window: what the
    whitening of `rmac` is learnt on (kept in a store of their own, so a refit reuses them)."""

    def settings(self) -> dict[str, Any]:
        return {"representation": "rmac-regions", **self.dense_settings()}

    def embed(self, model: Embedder, prepared: list[dict], device: torch.device, precision: str, batch_size: int) -> list[Rows]:
        made = {p["position"]: regional_vectors(fmap, self.levels) for p, fmap in
                map_batches(model, prepared, device, precision, batch_size, self.layer, self.facet)}
        return [Rows(vectors=made[p["position"]]) for p in prepared]


@register("rmac")
class RmacRepresentation(_DenseOptions):
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
        layer: Annotated[int | None, Rule(low=0)] = None,
        facet: Annotated[str, Rule(choices=lambda: FACETS)] = "token",
        whiten: Annotated[int | None, Rule(low=1)] = 256,
        fit_sample: Annotated[int, Rule(low=2)] = 1000,
        fit_seed: int = 0,
        fit_images: Annotated[Path | None, Rule(path=True, exists="folder")] = None,
        localise_top: Annotated[int, Rule(low=0)] = 100,
    ):
        super().__init__(max_pixels, input_size, levels, layer, facet, mode, mode_options)
        self.whiten = whiten
        """Dimensions kept after PCA-whitening the regional vectors (None: all the sample gives,
        whose last, near-zero variances the whitening blows up into noise)."""
        self.sample = Sample(int(fit_sample), int(fit_seed), None if fit_images is None else Path(fit_images))
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
        made = {p["position"]: rmac(fmap, self.state, self.levels) for p, fmap in
                map_batches(model, prepared, device, precision, batch_size, self.layer, self.facet)}
        return [self._rows(p, made[p["position"]]) for p in prepared]

    @staticmethod
    def _rows(prepared: dict, vector: torch.Tensor) -> Rows:
        height, width = prepared["size_hw"]
        return Rows(vectors=vector[None], boxes=np.array([[0, 0, width, height]], dtype=np.float32),
                    sources=np.zeros(1, dtype=np.int8), masks=[""])
