"""VLAD over dense features, as AnyLoc builds it (Keetha et al., RA-L 2023; AnyLoc/AnyLoc
`utilities.VLAD`, hard assignment, cosine mode, intra-normalisation on).

Vocabulary: k-means on a sample of L2-normalised descriptors, assignment by cosine similarity
(AnyLoc clusters with fast_pytorch_kmeans in cosine mode; here faiss' spherical k-means, which
assigns the same way, seeded). Its centroids are, as AnyLoc's, the plain means of the
normalised descriptors of each cluster (not unit vectors): residuals are taken from them.

Encoding a set of descriptors: each descriptor x (L2-normalised) goes to the centroid of
highest cosine similarity; per cluster k the residuals x - c_k of its descriptors are summed,
that sum is L2-normalised (intra-normalisation), and the K sums concatenated are L2-normalised.
A cluster no descriptor falls in contributes zeros.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from retrieval.aggregation.dense import local_descriptors
from retrieval.aggregation.state import as_numpy, load_state, sample_digest, save_state
from retrieval.errors import UserError

KIND = "vlad-vocabulary"


@dataclass(frozen=True)
class Vocabulary:
    """A fitted VLAD vocabulary: K centroids in descriptor space, and what it was fitted from."""

    centroids: np.ndarray
    """(K, C) float32: mean of the L2-normalised sample descriptors of each cluster."""
    seed: int
    niter: int
    digest: str
    """`sample_digest` of the fit's sample and settings: equal digests, same vocabulary."""

    @property
    def clusters(self) -> int:
        return len(self.centroids)

    @property
    def dim(self) -> int:
        """Length of the VLAD vectors it encodes: K x C."""
        return self.centroids.size

    def save(self, path: Path) -> Path:
        return save_state(path, KIND, {"seed": self.seed, "niter": self.niter}, self.digest, centroids=self.centroids)

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        settings, digest, arrays = load_state(path, KIND, ("centroids",))
        return cls(centroids=arrays["centroids"], seed=settings["seed"], niter=settings["niter"], digest=digest)


def vocabulary_digest(descriptors: np.ndarray | torch.Tensor, clusters: int, seed: int, niter: int) -> str:
    """The digest `fit_vocabulary` gives these arguments, without fitting: a cache key."""
    return sample_digest(descriptors, {"kind": KIND, "clusters": clusters, "seed": seed, "niter": niter})


def fit_vocabulary(descriptors: np.ndarray | torch.Tensor, clusters: int, seed: int = 0, niter: int = 25) -> Vocabulary:
    """K-means vocabulary of `clusters` words on (N, C) sample descriptors (normalised here).

    Every sample descriptor is used (faiss' own subsampling is off: the caller chose the
    sample); the same sample and seed give the same vocabulary. A UserError if the sample has
    fewer descriptors than words."""
    sample = as_numpy(descriptors)
    if sample.ndim != 2:
        raise ValueError(f"expected (N, C) descriptors, got shape {sample.shape}")
    if clusters < 1:
        raise UserError(f"a vocabulary needs at least one word, not {clusters}")
    if len(sample) < clusters:
        raise UserError(
            f"a vocabulary of {clusters} words needs at least {clusters} sample descriptors, got {len(sample)}: "
            "sample more images or fewer words"
        )
    sample = np.ascontiguousarray(F.normalize(torch.from_numpy(sample), dim=1).numpy())
    kmeans = faiss.Kmeans(
        sample.shape[1], clusters, niter=niter, seed=seed, spherical=True,
        max_points_per_centroid=len(sample), min_points_per_centroid=1, gpu=_faiss_gpu(),
    )
    kmeans.train(sample)
    labels = assign(torch.from_numpy(sample), torch.from_numpy(kmeans.centroids)).numpy()
    counts = np.bincount(labels, minlength=clusters)
    sums = np.zeros_like(kmeans.centroids, dtype=np.float64)
    np.add.at(sums, labels, sample)
    centroids = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], kmeans.centroids)
    return Vocabulary(
        centroids=centroids.astype(np.float32), seed=seed, niter=niter,
        digest=vocabulary_digest(descriptors, clusters, seed, niter),
    )


def _faiss_gpu() -> bool:
    return torch.cuda.is_available() and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def assign(descriptors: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N,) index of the centroid of highest cosine similarity to each of (N, C) descriptors."""
    return (F.normalize(descriptors.float(), dim=1) @ F.normalize(centroids.float(), dim=1).T).argmax(dim=1)


def vlad(descriptors: torch.Tensor, vocabulary: Vocabulary, members: torch.Tensor | None = None) -> torch.Tensor:
    """VLAD vectors of sets of descriptors, all drawn from one (N, C) pool (normalised here).

    `members` (S, N) bool says which descriptors each of S sets holds (None: one set of all);
    assignment and residuals are computed once for the pool. Returns (S, K*C) float32, each
    row intra-normalised per cluster then L2-normalised (an empty set gives zeros)."""
    pool = F.normalize(descriptors.float(), dim=1)
    centroids = torch.from_numpy(vocabulary.centroids).to(pool.device)
    if pool.shape[1] != centroids.shape[1]:
        raise UserError(
            f"descriptors of {pool.shape[1]} dimensions cannot be encoded with a vocabulary of "
            f"{centroids.shape[1]}-dimensional words: fit the vocabulary on this model's features"
        )
    labels = assign(pool, centroids)
    residuals = pool - centroids[labels]
    members = torch.ones(1, len(pool), dtype=torch.bool, device=pool.device) if members is None else members.to(pool.device)
    sums = torch.zeros(len(members), *centroids.shape, device=pool.device)
    weights = members.float()
    for word in labels.unique():
        chosen = labels == word
        sums[:, word] = weights[:, chosen] @ residuals[chosen]
    return F.normalize(F.normalize(sums, dim=2).flatten(1), dim=1)


def vlad_map(feature_map: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
    """(K*C,) VLAD of every cell of a C x h x w map: AnyLoc's image descriptor."""
    return vlad(local_descriptors(feature_map), vocabulary)[0]
