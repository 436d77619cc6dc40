"""PCA-whitening of global descriptors (Jegou & Chum, "Negative evidences and co-occurrences in
image retrieval: the benefit of PCA and whitening", ECCV 2012): centred on a sample's mean,
projected on its `dims` principal axes, each scaled to unit variance, then L2-normalised (the
extraction loop normalises every row). Learnt on one sample, applied to gallery and queries alike.

Pure functions of arrays: `learn_whitening` returns the state `{"mean", "projection"}`,
`whiten` applies it.
"""
from __future__ import annotations

import numpy as np
import torch

from retrieval.errors import UserError

RELATIVE_FLOOR = 1e-9
"""Variances below this fraction of the largest are taken as this, not divided by."""


def learn_whitening(vectors: np.ndarray, dims: int) -> dict[str, np.ndarray]:
    """{"mean": (D,), "projection": (dims, D)} from the sample `vectors` (n, D): the principal
    axes of largest variance, each scaled by 1/sqrt(its variance). Each axis's sign is fixed
    (its largest component positive), so the same sample always gives the same state."""
    vectors = np.asarray(vectors, dtype=np.float64)
    n, dim = vectors.shape
    span = min(n - 1, dim)
    if dims > span:
        raise UserError(
            f"representation.whiten={dims} keeps more dimensions than {n} sample images of {dim}-dimensional vectors "
            f"span (at most {max(span, 0)}): lower representation.whiten or raise representation.fit_sample"
        )
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    variances, axes = np.linalg.eigh(centred.T @ centred / (n - 1))
    order = np.argsort(variances)[::-1][:dims]
    variances, axes = variances[order], axes[:, order]
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(dims)])
    scale = 1.0 / np.sqrt(np.maximum(variances, RELATIVE_FLOOR * variances[0]))
    return {"mean": mean.astype(np.float32), "projection": (axes * scale).T.astype(np.float32)}


def whiten(vectors: torch.Tensor, state: dict[str, np.ndarray]) -> torch.Tensor:
    """(n, D) vectors -> (n, dims) whitened (not normalised), on the vectors' device."""
    mean = torch.from_numpy(state["mean"]).to(vectors.device)
    projection = torch.from_numpy(state["projection"]).to(vectors.device)
    return (vectors.float() - mean) @ projection.T
