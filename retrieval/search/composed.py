"""Composed queries (an image and words): one score per gallery image from two similarities.

For query q and gallery image g, s_img(q, g) and s_txt(q, g) are the cosine similarities of
q's image vector and of q's text vector to g. For a region gallery each is g's best row, taken
for the image and the text separately (as the search scores an image by its best row) before
they are combined; a whole-image gallery is the one-row-per-image case. A combination method,
registered by name in `COMBINATIONS`, makes the score:

    image     s_img
    text      s_txt
    average   (s_img + s_txt) / 2
    weicom    (1 - lambda) * Phi(z(s_img)) + lambda * Phi(z(s_txt))       (docs/formats.md section 6)

z standardises a query's similarity vector over every gallery image that has rows, with its
mean and unbiased std (a constant vector, or a gallery of one image, standardises to 0), and
Phi is the standard normal CDF. The scores are a pure function of (image vector, text
vector, gallery vectors, lambda): `composed_search` computes them over the gallery in blocks
(two passes for a standardising method: the statistics, then the scores and a running top-k),
on the device given (a GPU when torch sees one), with memory bounded by the block sizes
besides the ranking itself. Ties go to the lower image index, as in `retrieval.search.exact`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from retrieval.registry import Registry
from retrieval.search.exact import image_blocks
from retrieval.search.images import ImageHits, best_per_image

Combine = Callable[[torch.Tensor | None, torch.Tensor | None, float], torch.Tensor]
"""(image similarities, text similarities, lambda) -> scores; each (queries, images), and None
for a modality the method does not read."""

COMBINATIONS: Registry[Combine] = Registry("combination method", __name__)
NOISE = 1e-6
"""The std of a similarity vector below which it standardises to 0: float32 similarities of
unit vectors carry rounding of about 1e-7, which a smaller spread would blow up into ranks."""


@dataclass(frozen=True)
class Needs:
    """What a combination method reads."""

    modalities: tuple[str, ...]
    """The similarities it combines; the first one's best row localises a result."""
    standardised: bool = False
    """Whether it gets z-scores over the gallery (a first pass for the statistics) rather
    than raw similarities."""
    weighted: bool = False
    """Whether it reads lambda (the ranking is then keyed by it; otherwise not)."""


def register(name: str, needs: Needs) -> Callable[[Combine], Combine]:
    """Register a combination method as `name`, with what it reads."""

    def decorate(method: Combine) -> Combine:
        method.needs = needs  # type: ignore[attr-defined]
        return COMBINATIONS.register(name)(method)

    return decorate


def needs_of(method: str) -> Needs:
    return COMBINATIONS.get(method).needs  # type: ignore[attr-defined]


@register("image", Needs(("image",)))
def image_only(image: torch.Tensor | None, text: torch.Tensor | None, weight: float) -> torch.Tensor:
    """The image part alone (the words are ignored): s_img."""
    return image


@register("text", Needs(("text",)))
def text_only(image: torch.Tensor | None, text: torch.Tensor | None, weight: float) -> torch.Tensor:
    """The words alone (the image is ignored): s_txt."""
    return text


@register("average", Needs(("image", "text")))
def average(image: torch.Tensor | None, text: torch.Tensor | None, weight: float) -> torch.Tensor:
    """Mean of the two cosine similarities: (s_img + s_txt) / 2."""
    return (image + text) / 2


@register("weicom", Needs(("image", "text"), standardised=True, weighted=True))
def weicom(image: torch.Tensor | None, text: torch.Tensor | None, weight: float) -> torch.Tensor:
    """WeiCom: (1 - lambda) * Phi(z(s_img)) + lambda * Phi(z(s_txt)), z over the gallery."""
    return (1 - weight) * torch.special.ndtr(image) + weight * torch.special.ndtr(text)


def combination_settings(method: str, weight: float) -> dict[str, object]:
    """What a composed ranking depends on besides the vectors: the method, and lambda only
    when the method reads it (so a lambda sweep reuses the rankings of the others)."""
    return {"combine": method, "lambda": float(weight) if needs_of(method).weighted else None}


@dataclass
class _Moments:
    """Running count, mean and sum of squared deviations per query (Chan et al.'s merge), in
    float64, so blocks of any size give the statistics of the whole vector."""

    count: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor

    def add(self, values: torch.Tensor) -> None:
        finite = torch.isfinite(values)
        n = finite.sum(1).double()
        if not n.any():
            return
        x = torch.where(finite, values.double(), 0.0)
        mean = x.sum(1) / n.clamp(min=1)
        m2 = torch.where(finite, (x - mean[:, None]) ** 2, 0.0).sum(1)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total.clamp(min=1)
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total.clamp(min=1)
        self.count = total

    def standardise(self, values: torch.Tensor) -> torch.Tensor:
        """(values - mean) / unbiased std; 0 where the std is undefined or below `NOISE`."""
        std = torch.sqrt(self.m2 / (self.count - 1).clamp(min=1))
        usable = (self.count > 1) & (std > NOISE)
        z = (values.double() - self.mean[:, None]) / torch.where(usable, std, 1.0)[:, None]
        return torch.where(usable[:, None], z, 0.0)


def composed_search(
    image_queries: np.ndarray,
    text_queries: np.ndarray,
    vectors: np.ndarray,
    row_image: np.ndarray,
    n_images: int,
    k: int,
    method: str,
    weight: float,
    device: torch.device = torch.device("cpu"),
    max_cells: int = 1 << 24,
) -> ImageHits:
    """The top `k` gallery images of each composed query, scored by the combination `method`
    at lambda = `weight` (see the module docstring). Rows of `vectors` (float16 allowed) belong
    to images `row_image` (non-decreasing: an image's rows are contiguous); images without
    rows are never ranked. A query block's running top-k and the similarities of a query block
    x row block each hold about `max_cells` values."""
    combine, needs = COMBINATIONS.get(method), needs_of(method)
    queries = {"image": image_queries, "text": text_queries}
    k = min(k, n_images)
    query_block = max(1, min(len(image_queries), max_cells // max(k, 1)))
    blocks = image_blocks(np.asarray(row_image), max(1, max_cells // query_block))
    owners = torch.from_numpy(np.asarray(row_image, dtype=np.int64)).to(device)
    out: tuple[list, list, list] = ([], [], [])

    def similarities(q: dict[str, torch.Tensor], start: int, end: int,
                     with_rows: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, int]:
        """Best-row similarity per modality over the images of rows [start, end), the
        localising (first) modality's rows when asked, and the block's first image."""
        chunk = torch.from_numpy(np.ascontiguousarray(vectors[start:end])).to(device).float()
        first_image = int(row_image[start])
        owner = owners[start:end] - first_image
        span = int(row_image[end - 1]) - first_image + 1
        first, *others = needs.modalities
        best = {}
        best[first], rows = best_per_image(q[first] @ chunk.T, owner, span, start if with_rows else None)
        for modality in others:
            best[modality], _ = best_per_image(q[modality] @ chunk.T, owner, span, None)
        return best, rows, first_image

    for q0 in range(0, len(image_queries), query_block):
        q = {m: torch.from_numpy(np.ascontiguousarray(queries[m][q0 : q0 + query_block], dtype=np.float32)).to(device)
             for m in needs.modalities}
        size = len(next(iter(q.values())))
        moments = {m: _Moments(*(torch.zeros(size, dtype=torch.float64, device=device) for _ in range(3)))
                   for m in needs.modalities}
        if needs.standardised:
            for start, end in blocks:
                best, _, _ = similarities(q, start, end, with_rows=False)
                for modality, values in best.items():
                    moments[modality].add(values)
        top_scores = torch.full((size, k), -torch.inf, device=device)  # padding until images fill it
        top_images = torch.full((size, k), -1, dtype=torch.int64, device=device)
        top_rows = torch.full((size, k), -1, dtype=torch.int64, device=device)
        for start, end in blocks:
            best, rows, first_image = similarities(q, start, end, with_rows=True)
            has_rows = torch.isfinite(best[needs.modalities[0]])
            if needs.standardised:
                best = {m: moments[m].standardise(values) for m, values in best.items()}
            scores = combine(best.get("image"), best.get("text"), weight).float()
            scores = torch.where(has_rows, scores, -torch.inf)
            images = torch.arange(first_image, first_image + scores.shape[1], device=device).expand(size, -1)
            # a stable sort keeps equal scores in candidate order: earlier blocks, then lower images
            candidates = torch.cat([top_scores, scores], 1)
            order = torch.sort(candidates, dim=1, descending=True, stable=True).indices[:, :k]
            top_scores = candidates.gather(1, order)
            top_images = torch.cat([top_images, images], 1).gather(1, order)
            top_rows = torch.cat([top_rows, rows], 1).gather(1, order)
        found = torch.isfinite(top_scores)
        out[0].append(top_scores.cpu().numpy())
        out[1].append(torch.where(found, top_images, -1).cpu().numpy())
        out[2].append(torch.where(found, top_rows, -1).cpu().numpy())
    return ImageHits(*(np.concatenate(part) for part in out))
