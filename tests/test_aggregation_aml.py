"""AML: exhaustive search against brute force, and the box of a planted object recovered."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from aggregation_reference import unit
from retrieval.aggregation.aml import localise
from retrieval.errors import UserError


def approximate_mac_similarity(query: np.ndarray, values: np.ndarray, window: tuple[int, int, int, int], power: float) -> float:
    """Cosine of the query to the window's (sum of x^p)^(1/p) per channel, summed cell by cell."""
    x1, y1, x2, y2 = window
    pooled = np.array([sum(values[c, y, x] ** power for y in range(y1, y2) for x in range(x1, x2)) ** (1 / power)
                       for c in range(len(values))])
    return float(unit(query) @ unit(pooled))


def test_exhaustive_search_finds_the_brute_force_best_window() -> None:
    """With step 1 and no refinement AML scores every window of at least 2 x 2 cells (and the
    whole map): its choice must be the brute-force best."""
    rng = np.random.default_rng(0)
    feature_map = rng.random((5, 6, 7))
    query = rng.random(5)
    values = feature_map / feature_map.max()
    windows = [(x1, y1, x2, y2) for y1, y2 in itertools.combinations(range(7), 2) if y2 - y1 >= 2
               for x1, x2 in itertools.combinations(range(8), 2) if x2 - x1 >= 2]
    scores = {window: approximate_mac_similarity(query, values, window, 10.0) for window in windows}
    best = max(scores, key=scores.get)
    found = localise(torch.from_numpy(query), torch.from_numpy(feature_map), step=1, refine_step=0)
    assert found.cells == best and found.score == pytest.approx(scores[best], abs=1e-9)


def planted_map(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]:
    """A 20 x 24 map holding the query's object in cells x 7..16, y 5..11, made of parts: each
    of the query's 70 channels peaks in its own cell of the object, weak elsewhere; around the
    object the background is strong in the 26 channels the query lacks. Every row and column
    of the object adds channels to the pooled match, every cell past it adds background."""
    (x1, y1, x2, y2), parts = (7, 5, 17, 12), 70
    query = np.concatenate([rng.uniform(0.5, 1.0, parts), np.zeros(26)])
    feature_map = np.concatenate([rng.uniform(0, 0.1, (parts, 20, 24)), rng.uniform(0, 1.0, (26, 20, 24))])
    feature_map[parts:, y1:y2, x1:x2] = 0
    for channel, (y, x) in enumerate(itertools.product(range(y1, y2), range(x1, x2))):
        feature_map[channel, y, x] = query[channel]
    return torch.from_numpy(query), torch.from_numpy(feature_map).float(), (x1, y1, x2, y2)


@pytest.mark.parametrize("constrained", [False, True], ids=["any-shape", "query-shape"])
def test_planted_object_is_found_in_cells_and_pixels(constrained: bool) -> None:
    query, feature_map, planted = planted_map(np.random.default_rng(1))
    aspect = (planted[3] - planted[1]) / (planted[2] - planted[0]) if constrained else None
    found = localise(query, feature_map, image_hw=(320, 384), query_aspect=aspect)
    assert found.cells == planted
    assert found.box == (7 * 16.0, 5 * 16.0, 17 * 16.0, 12 * 16.0)
    assert found.score > 0.98
    assert localise(query, feature_map, query_aspect=aspect, refine_step=0).cells != planted  # off the search grid: refinement finds it


def test_localise_refuses_mismatched_or_empty_inputs() -> None:
    with pytest.raises(ValueError, match="cannot be compared with a map of 4 channels"):
        localise(torch.ones(3), torch.ones(4, 5, 5))
    with pytest.raises(UserError, match="smaller than one patch"):
        localise(torch.ones(4), torch.ones(4, 0, 5))
