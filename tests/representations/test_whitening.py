"""PCA-whitening, the state `representation=global representation.whiten=N` learns: against its
definition, computed here with numpy's SVD."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.errors import UserError
from retrieval.representations.whitening import learn_whitening, whiten


@pytest.fixture
def sample() -> np.ndarray:
    """200 vectors in 6 dimensions with very different variances along rotated axes."""
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    return (rng.standard_normal((200, 6)) * [5, 3, 2, 1, 0.5, 0.1]) @ rotation + 7


def test_whitened_sample_has_zero_mean_and_unit_covariance(sample: np.ndarray) -> None:
    state = learn_whitening(sample, 6)
    out = whiten(torch.from_numpy(sample), state).numpy().astype(np.float64)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(out, rowvar=False), np.eye(6), atol=1e-4)


def test_kept_dimensions_are_the_principal_axes(sample: np.ndarray) -> None:
    state = learn_whitening(sample, 2)
    centred = sample - sample.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    variances = singular[:2] ** 2 / (len(sample) - 1)
    expected = axes[:2] / np.sqrt(variances)[:, None]
    assert state["projection"].shape == (2, 6)
    # the same axes, up to sign, which the state fixes: each axis's largest component positive
    signs = np.sign(expected[np.arange(2), np.abs(expected).argmax(axis=1)])
    np.testing.assert_allclose(state["projection"], expected * signs[:, None], rtol=1e-4, atol=1e-6)
    assert (state["projection"][np.arange(2), np.abs(state["projection"]).argmax(axis=1)] > 0).all()
    np.testing.assert_allclose(state["mean"], sample.mean(axis=0), rtol=1e-6)


def test_the_same_sample_in_another_order_gives_the_same_state(sample: np.ndarray) -> None:
    first, second = learn_whitening(sample, 4), learn_whitening(sample[::-1].copy(), 4)
    for name in ("mean", "projection"):
        np.testing.assert_allclose(first[name], second[name], rtol=1e-4, atol=1e-6)


def test_more_dimensions_than_the_sample_spans_are_refused(sample: np.ndarray) -> None:
    with pytest.raises(UserError, match=r"^representation.whiten=5 keeps more dimensions than 5 sample images of "
                                        r"6-dimensional vectors span \(at most 4\): lower representation.whiten or "
                                        r"raise representation.fit_sample$"):
        learn_whitening(sample[:5], 5)
    with pytest.raises(UserError, match=r"at most 6\)"):
        learn_whitening(sample, 7)
