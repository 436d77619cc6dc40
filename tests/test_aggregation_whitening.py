"""PCA-whitening against numpy's covariance eigendecomposition, both ways of fitting it, and its
refusals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aggregation_reference import whiten_loop
from retrieval.aggregation.whitening import Whitening, fit_whitening, whiten, whitening_digest
from retrieval.errors import UserError


def correlated(count: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.2, width)
    return (rng.normal(size=(count, width)) * scales @ rng.normal(size=(width, width)) + 1.5).astype(np.float32)


@pytest.mark.parametrize("count, width, dim", [(300, 10, 6), (20, 50, 12)], ids=["covariance", "gram"])
def test_whitening_matches_numpy(count: int, width: int, dim: int) -> None:
    """More samples than dimensions goes through the covariance, fewer through the Gram
    matrix; both must give numpy's whitening (and a refit the same, signs included)."""
    sample = correlated(count, width, seed=count)
    held_out = correlated(5, width, seed=99)
    whitening = fit_whitening(sample, dim, eps=1e-9)
    assert whitening.projection.shape == (width, dim) and np.all(np.diff(whitening.eigenvalues) <= 0)
    np.testing.assert_allclose(
        whiten(torch.from_numpy(held_out), whitening).numpy(), whiten_loop(held_out, sample, dim, 1e-9), atol=2e-4
    )
    np.testing.assert_array_equal(fit_whitening(sample, dim).projection, whitening.projection)


def test_whitened_sample_has_identity_covariance() -> None:
    sample = torch.from_numpy(correlated(400, 8, seed=1))
    whitening = fit_whitening(sample, 8, eps=0.0)
    raw = (sample.double() - torch.from_numpy(whitening.mean).double()) @ torch.from_numpy(whitening.projection).double()
    raw = raw / torch.from_numpy(whitening.eigenvalues).double().sqrt()
    torch.testing.assert_close(torch.cov(raw.T), torch.eye(8, dtype=torch.float64), atol=1e-4, rtol=0)


def test_whitening_dimension_beyond_the_sample_is_refused() -> None:
    with pytest.raises(UserError, match="PCA-whitening to 30 dimensions needs at least 31 sample vectors .* got 20 of 64"):
        fit_whitening(torch.randn(20, 64), 30)
    whitening = fit_whitening(torch.randn(20, 64))
    assert whitening.dim == 19  # all the sample can give: n - 1


def test_whitening_refuses_vectors_of_another_dimension() -> None:
    with pytest.raises(UserError, match="fit it on this representation's vectors"):
        whiten(torch.randn(3, 9), fit_whitening(torch.randn(40, 8), 4))


def test_whitening_state_round_trip_and_digest(tmp_path: Path) -> None:
    sample = torch.randn(60, 8)
    whitening = fit_whitening(sample, 5)
    loaded = Whitening.load(whitening.save(tmp_path / "w.npz"))
    for name in ("mean", "projection", "eigenvalues"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(whitening, name))
    assert loaded.digest == whitening.digest == whitening_digest(sample, 5, 1e-9)
    assert whitening_digest(sample, 4, 1e-9) != whitening.digest  # other settings, other key
