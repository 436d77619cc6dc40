"""PCA-whitening learnt on a sample of vectors, with an optional reduction of dimension.

Fit: the sample's mean m, and the eigenvectors P and eigenvalues e of its covariance, in
decreasing order of e (yael_pca in gtolias/rmac; sklearn's PCA(whiten=True) in SegVLAD).
Apply: (x - m) P / sqrt(e + eps), keeping the first `dim` components, then L2-normalise, as
both references do after whitening (`vecpostproc` in rmac, `normalizeFeat` in SegVLAD).
Eigenvector signs are fixed (largest entry positive), so a refit gives the same state.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from retrieval.aggregation.state import as_numpy, load_state, sample_digest, save_state
from retrieval.errors import UserError

KIND = "pca-whitening"


@dataclass(frozen=True)
class Whitening:
    """A fitted PCA-whitening: D-dimensional vectors in, `dim`-dimensional out."""

    mean: np.ndarray
    """(D,) float32."""
    projection: np.ndarray
    """(D, dim) float32: unit eigenvectors of the covariance, as columns, largest first."""
    eigenvalues: np.ndarray
    """(dim,) float32, decreasing."""
    eps: float
    digest: str

    @property
    def dim(self) -> int:
        return self.projection.shape[1]

    def save(self, path: Path) -> Path:
        return save_state(
            path, KIND, {"eps": self.eps}, self.digest,
            mean=self.mean, projection=self.projection, eigenvalues=self.eigenvalues,
        )

    @classmethod
    def load(cls, path: Path) -> "Whitening":
        settings, digest, arrays = load_state(path, KIND, ("mean", "projection", "eigenvalues"))
        return cls(**arrays, eps=settings["eps"], digest=digest)


def whitening_digest(vectors: np.ndarray | torch.Tensor, dim: int | None, eps: float) -> str:
    """The digest `fit_whitening` gives these arguments, without fitting: a cache key."""
    return sample_digest(vectors, {"kind": KIND, "dim": dim, "eps": eps})


def fit_whitening(vectors: np.ndarray | torch.Tensor, dim: int | None = None, eps: float = 1e-9) -> Whitening:
    """PCA-whitening of (n, D) sample vectors to `dim` components (None: all the sample can
    give, min(D, n - 1)). Computed in float64 on the vectors' device, through the smaller of
    the covariance (D x D) and Gram (n x n) matrices. A UserError if the sample cannot give
    `dim` components."""
    sample = vectors.detach() if isinstance(vectors, torch.Tensor) else torch.from_numpy(as_numpy(vectors))
    if sample.dim() != 2:
        raise ValueError(f"expected (n, D) vectors, got shape {tuple(sample.shape)}")
    count, width = sample.shape
    rank = min(width, count - 1)
    dim = rank if dim is None else dim
    if dim < 1 or dim > rank:
        raise UserError(
            f"PCA-whitening to {dim} dimensions needs at least {dim + 1} sample vectors of at least {dim} "
            f"dimensions; got {count} of {width}: sample more or whiten to fewer dimensions"
        )
    centred = sample.double() - sample.double().mean(dim=0)
    if width <= count:
        values, eigenvectors = torch.linalg.eigh(centred.T @ centred / (count - 1))
    else:  # eigenvectors u of the Gram matrix give the covariance's as X^T u, same eigenvalues
        values, gram_vectors = torch.linalg.eigh(centred @ centred.T / (count - 1))
        eigenvectors = centred.T @ gram_vectors
    values, eigenvectors = values.flip(0)[:dim], F.normalize(eigenvectors.flip(1)[:, :dim], dim=0)
    largest = eigenvectors.abs().argmax(dim=0)
    eigenvectors = eigenvectors * eigenvectors[largest, torch.arange(dim, device=eigenvectors.device)].sign()
    return Whitening(
        mean=as_numpy(sample.double().mean(dim=0)),
        projection=as_numpy(eigenvectors),
        eigenvalues=as_numpy(values.clamp(min=0)),
        eps=eps,
        digest=whitening_digest(vectors, dim, eps),
    )


def whiten(vectors: torch.Tensor, whitening: Whitening) -> torch.Tensor:
    """(n, dim) L2-normalised whitened copies of (n, D) `vectors`, on their device."""
    if vectors.shape[-1] != len(whitening.mean):
        raise UserError(
            f"vectors of {vectors.shape[-1]} dimensions cannot be whitened by a whitening fitted on "
            f"{len(whitening.mean)}-dimensional ones: fit it on this representation's vectors"
        )
    device = vectors.device
    mean = torch.from_numpy(whitening.mean).to(device)
    projection = torch.from_numpy(whitening.projection).to(device)
    scale = torch.from_numpy(whitening.eigenvalues).to(device).add(whitening.eps).rsqrt()
    return F.normalize((vectors.float() - mean) @ projection * scale, dim=-1)
