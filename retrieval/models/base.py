"""What every backbone provides: an embedding of a normalised batch, and its preprocessing; and
what a text tower provides: tokens of strings, and their embedding in its image tower's space.
What a family says of its pretrained weights before loading them: `Pretrained`."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import torch
from torch import nn

from retrieval.config.rules import Rule

RESIZE_MODES = ("stretch", "letterbox", "center_crop")

Checkpoint = Annotated[str | None, Rule(path=True, exists="file")]
"""`model.checkpoint` of every family: a local weights file (None: the family's own weights)."""
InputSize = Annotated[int | None, Rule(low=1)]
"""`model.input_size`: the side images are resized to (None: the weights' own)."""
Resize = Annotated[str | None, Rule(choices=lambda: RESIZE_MODES)]
"""`model.resize`: how an image is fitted to the input size (None: the family's own way)."""
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


@dataclass(frozen=True)
class Preprocess:
    """The whole eval transform a model's weights expect: resize and crop on the CPU
    (`retrieval.models.transform.prepare`), then (x / 255 - mean) / std on the device.

    Families derive it from the weights' own configuration (timm's pretrained_cfg,
    open_clip's preprocess_cfg), so a model sees the transform it was trained with."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "stretch"
    """stretch (whole image to a square, as the Find-your-Needle reference does), letterbox
    (keep aspect, pad with the mean) or center_crop (shorter side to input_size / crop_pct,
    then the central input_size square: timm's and open_clip's eval transform)."""
    crop_pct: float = 1.0
    """center_crop only: the fraction of the resized shorter side that is kept."""
    interpolation: str = "bicubic"
    """Pillow resampling filter of every resize, by timm's names."""

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"Unknown resize mode {self.resize!r}: use one of {', '.join(RESIZE_MODES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"Unknown interpolation {self.interpolation!r}: use one of {', '.join(INTERPOLATIONS)}")
        if self.crop_pct <= 0:
            raise ValueError(f"crop_pct must be positive, not {self.crop_pct}")

    def with_options(self, input_size: int | None = None, resize: str | None = None) -> "Preprocess":
        """Apply config overrides (None keeps the weights' own value)."""
        return replace(self, input_size=input_size or self.input_size, resize=resize or self.resize)


@dataclass(frozen=True)
class HubWeights:
    """The file a library downloads for pretrained weights on first use, and caches: from a
    Hugging Face hub repository (`repo`, trying `files` in order) or from a plain `url`
    (saved as `cached_as`)."""

    what: str
    """The weights as the library names them: `open_clip ViT-B-32 laion2b_s34b_b79k`."""
    repo: str = ""
    files: tuple[str, ...] = ()
    """The repository's files the library tries, in its order; the last is its own name for
    them (the others are safetensors copies it prefers when the repository has them)."""
    url: str = ""
    cached_as: Path | None = None

    @property
    def file(self) -> str:
        """The name of the file to download by hand."""
        return self.files[-1] if self.repo else Path(self.url).name

    @property
    def source(self) -> str:
        """Where that file is: `hf-hub:<repo>`, or the URL."""
        return f"hf-hub:{self.repo}" if self.repo else self.url


def safetensors_first(name: str, copies: Mapping[str, str]) -> tuple[str, ...]:
    """The files a hub download of `name` tries, in order: the safetensors copy that timm and
    open_clip look for first (`copies` maps their default names to their copies' names; any
    other .bin or .pth file's copy has its stem), then the file itself."""
    if name in copies:
        return copies[name], name
    if name.endswith((".bin", ".pth")):
        return name[:-4] + ".safetensors", name
    return (name,)


@dataclass(frozen=True)
class Pretrained:
    """Named pretrained weights of a family (a hub tag, or weights a package ships)."""

    name: str
    """What the leaderboard calls them: the tag, or the packaged weights' name."""
    hub: HubWeights | None = None
    """What loading them downloads on first use; None when nothing is downloaded."""


class Embedder(nn.Module):
    """A backbone with a global descriptor head.

    Subclasses implement `feature_map` (dense features, B x C x h x w) and `pool` (feature map
    to B x D) when the descriptor is a pooled feature map, so region descriptors can be pooled
    from one backbone pass; others override `forward` directly and set `dense = False`."""

    dense: bool = True

    def __init__(self, preprocess: Preprocess, dim: int):
        super().__init__()
        self.preprocess = preprocess
        self.dim = dim

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no dense feature map")

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no pooling head")

    @property
    def blocks(self) -> int:
        """How many transformer blocks `block_map` can read: 0 for models without them."""
        return 0

    @property
    def patch_size(self) -> int | None:
        """Side in pixels of the patch each feature-map cell embeds (ViTs), None for CNNs,
        whose padded convolutions give a map for any input size."""
        return None

    def block_map(self, images: torch.Tensor, layer: int, facet: str) -> torch.Tensor:
        """Dense features (B x C x h x w) of one inner block, as AnyLoc reads DINOv2: the
        block's output tokens ("token") or its attention's "query", "key" or "value"."""
        raise NotImplementedError(f"{type(self).__name__} has no transformer blocks to read")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(images))


class TextEncoder(nn.Module):
    """A text tower: words to one descriptor each, in the space of its family's image tower, so
    that a sentence is searched against image vectors by the same inner product.

    Tokenizing is kept apart from `forward` so that it runs where images are prepared, and the
    tokens go to the device as a batch, as pixels do."""

    def __init__(self, tokenizer: Callable[[Sequence[str]], torch.Tensor], dim: int):
        super().__init__()
        self.tokenizer = tokenizer
        self.dim = dim

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, context length) int64 tokens, cut at the tower's context length."""
        return self.tokenizer(list(texts))


def gem(features: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling (Radenovic et al.): B x C x h x w -> B x C."""
    return features.float().clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


@contextlib.contextmanager
def offline_hint(weights: str, downloading: bool) -> Iterator[None]:
    """Turn a failed hub download of `weights` into an error that says how to work offline."""
    try:
        yield
    except Exception as error:  # hub download failures surface as many exception types
        if not downloading:
            raise
        raise RuntimeError(
            f"Could not fetch {weights} ({type(error).__name__}). Without network access, "
            "download them elsewhere and pass model.checkpoint=/path/to/file."
        ) from error
