"""Brute-force numpy computations of the published aggregations, written from their definitions
with explicit loops (not from the vectorised code under test), for the aggregation tests."""
from __future__ import annotations

from collections import deque

import numpy as np


def unit(vector: np.ndarray) -> np.ndarray:
    norm = np.sqrt((vector**2).sum())
    return vector / norm if norm > 0 else vector


def descriptors_of(feature_map: np.ndarray) -> np.ndarray:
    """(h*w, C) descriptors of a C x h x w map, row-major cells, each L2-normalised."""
    channels, height, width = feature_map.shape
    return np.array([unit(feature_map[:, y, x].astype(np.float64)) for y in range(height) for x in range(width)])


def vlad_loop(descriptors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """AnyLoc's hard VLAD: cosine assignment, residual sums per word, intra-L2, then L2."""
    words, channels = centroids.shape
    sums = np.zeros((words, channels))
    for x in descriptors:
        x = unit(x.astype(np.float64))
        similarities = [float(x @ unit(centroid.astype(np.float64))) for centroid in centroids]
        word = int(np.argmax(similarities))
        sums[word] += x - centroids[word]
    for word in range(words):
        sums[word] = unit(sums[word])
    return unit(sums.reshape(-1))


def whiten_loop(vectors: np.ndarray, sample: np.ndarray, dim: int, eps: float) -> np.ndarray:
    """PCA-whitening learnt on `sample` (covariance eigenvectors, largest first, each signed so
    its largest entry is positive), applied to `vectors`, each then L2-normalised."""
    mean = sample.mean(axis=0)
    covariance = np.cov(sample.T.astype(np.float64))
    values, vectors_ = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1][:dim]
    basis = vectors_[:, order]
    for column in range(dim):
        if basis[np.argmax(np.abs(basis[:, column])), column] < 0:
            basis[:, column] *= -1
    return np.array([unit((v - mean) @ basis / np.sqrt(values[order] + eps)) for v in vectors])


def bfs_within(adjacency: np.ndarray, source: int, hops: int) -> set[int]:
    """Nodes at most `hops` edges from `source`, by a breadth-first walk."""
    depth = {source: 0}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        if depth[node] == hops:
            continue
        for neighbour in np.nonzero(adjacency[node])[0]:
            if int(neighbour) not in depth:
                depth[int(neighbour)] = depth[node] + 1
                queue.append(int(neighbour))
    return set(depth)


def patches_of(mask: np.ndarray, grid_hw: tuple[int, int]) -> set[int]:
    """Row-major indices of the grid cells any pixel of `mask` lies in."""
    height, width = mask.shape
    return {(y * grid_hw[0] // height) * grid_hw[1] + x * grid_hw[1] // width for y, x in zip(*np.nonzero(mask))}
