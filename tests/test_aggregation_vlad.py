"""AnyLoc VLAD against a loop over its definition; the seeded vocabulary fit and its state file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aggregation_reference import descriptors_of, vlad_loop
from retrieval.aggregation.dense import local_descriptors, sample_descriptors
from retrieval.aggregation.vlad import Vocabulary, fit_vocabulary, vlad, vlad_map, vocabulary_digest
from retrieval.aggregation.whitening import fit_whitening
from retrieval.errors import UserError


def random_vocabulary(words: int, channels: int, seed: int = 0) -> Vocabulary:
    """Centroids that are not unit vectors (as AnyLoc's means are), so residuals and cosine
    assignment are both exercised."""
    centroids = np.random.default_rng(seed).normal(size=(words, channels)).astype(np.float32) * 0.4
    return Vocabulary(centroids=centroids, seed=0, niter=0, digest="test")


def test_vlad_of_a_map_matches_the_definition() -> None:
    feature_map = torch.randn(8, 5, 7, generator=torch.Generator().manual_seed(1))
    vocabulary = random_vocabulary(4, 8)
    expected = vlad_loop(descriptors_of(feature_map.numpy()), vocabulary.centroids)
    np.testing.assert_allclose(vlad_map(feature_map, vocabulary).numpy(), expected, atol=1e-5)
    assert np.count_nonzero(expected.reshape(4, 8).any(axis=1)) >= 2  # several words really used


def test_vlad_of_descriptor_sets_matches_each_set_alone() -> None:
    """SegVLAD encodes many subsets of one image's descriptors at once; each row must equal
    the VLAD of that subset on its own, and an empty subset gives zeros."""
    rng = np.random.default_rng(2)
    pool = torch.from_numpy(rng.normal(size=(30, 6)).astype(np.float32))
    members = torch.from_numpy(rng.random((4, 30)) < 0.3)
    members[3] = False
    vocabulary = random_vocabulary(5, 6, seed=3)
    encoded = vlad(pool, vocabulary, members).numpy()
    for row, chosen in enumerate(members.numpy()):
        expected = vlad_loop(pool.numpy()[chosen], vocabulary.centroids) if chosen.any() else np.zeros(30)
        np.testing.assert_allclose(encoded[row], expected, atol=1e-5)


def test_vlad_refuses_a_vocabulary_of_another_dimension() -> None:
    with pytest.raises(UserError, match="fit the vocabulary on this model's features"):
        vlad(torch.randn(10, 6), random_vocabulary(3, 8))


def clustered_sample(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """400 descriptors around 4 far-apart directions, and which direction each came from."""
    rng = np.random.default_rng(seed)
    directions = np.eye(4, 16) * 3
    labels = rng.integers(0, 4, 400)
    return (directions[labels] + rng.normal(scale=0.3, size=(400, 16))).astype(np.float32), labels


def test_vocabulary_centroids_are_means_of_normalised_members() -> None:
    """AnyLoc's centroids: the plain mean of each cluster's L2-normalised descriptors (shorter
    than unit length), found here for well-separated clusters."""
    sample, labels = clustered_sample()
    vocabulary = fit_vocabulary(sample, 4, seed=0, niter=20)
    normalised = sample / np.linalg.norm(sample, axis=1, keepdims=True)
    means = np.array([normalised[labels == k].mean(axis=0) for k in range(4)])
    matched = [int(np.argmin(np.linalg.norm(means - centroid, axis=1))) for centroid in vocabulary.centroids]
    assert sorted(matched) == [0, 1, 2, 3]
    np.testing.assert_allclose(vocabulary.centroids, means[matched], atol=1e-5)
    assert (np.linalg.norm(vocabulary.centroids, axis=1) < 0.999).all()


def test_vocabulary_fit_is_seeded() -> None:
    sample = torch.randn(300, 12, generator=torch.Generator().manual_seed(4))
    first, again = fit_vocabulary(sample, 6, seed=7), fit_vocabulary(sample.clone(), 6, seed=7)
    np.testing.assert_array_equal(first.centroids, again.centroids)
    assert first.digest == again.digest == vocabulary_digest(sample, 6, 7, 25)
    other = fit_vocabulary(sample, 6, seed=8)
    assert other.digest != first.digest and not np.array_equal(other.centroids, first.centroids)
    assert fit_vocabulary(sample[:-1], 6, seed=7).digest != first.digest  # another sample, another key


def test_vocabulary_larger_than_the_sample_is_refused() -> None:
    with pytest.raises(UserError, match="a vocabulary of 64 words needs at least 64 sample descriptors, got 50"):
        fit_vocabulary(torch.randn(50, 8), 64)


def test_vocabulary_state_round_trip(tmp_path: Path) -> None:
    vocabulary = fit_vocabulary(torch.randn(100, 8), 4, seed=1)
    path = vocabulary.save(tmp_path / "vocabulary.npz")
    loaded = Vocabulary.load(path)
    np.testing.assert_array_equal(loaded.centroids, vocabulary.centroids)
    assert (loaded.seed, loaded.niter, loaded.digest) == (1, 25, vocabulary.digest)
    assert [p.name for p in tmp_path.iterdir()] == ["vocabulary.npz"]  # no temporary left behind


def test_a_state_of_another_kind_or_a_damaged_file_does_not_load(tmp_path: Path) -> None:
    whitening = fit_whitening(torch.randn(50, 8), 4).save(tmp_path / "whitening.npz")
    with pytest.raises(ValueError, match="holds a pca-whitening state, not a vlad-vocabulary"):
        Vocabulary.load(whitening)
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="delete it to refit"):
        Vocabulary.load(damaged)


def test_sampled_descriptors_are_seeded_and_normalised() -> None:
    maps = [torch.randn(6, 4, 5, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    sample = sample_descriptors(maps, 7, seed=3)
    assert sample.shape == (21, 6)
    torch.testing.assert_close(sample, sample_descriptors(maps, 7, seed=3))
    assert not torch.equal(sample, sample_descriptors(maps, 7, seed=4))
    torch.testing.assert_close(sample.norm(dim=1), torch.ones(21))
    every_cell = torch.cat([local_descriptors(m) for m in maps])
    assert all((every_cell == row).all(dim=1).any() for row in sample)  # drawn from the maps' cells
    torch.testing.assert_close(sample_descriptors(maps, 100, seed=3), every_cell)  # fewer cells: all
