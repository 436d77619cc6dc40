"""AML: exhaustive search against brute force, the box of a planted object recovered, and a\nreal object found in a real photo."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from aggregation_reference import unit
from conftest import ETH80
from retrieval.aggregation.aml import localise
from retrieval.aggregation.dense import dense_maps
from retrieval.errors import UserError
from retrieval.localisation import box_iou
from retrieval.models import Embedder


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


def test_real_features_localise_a_pasted_object(lite0: Embedder) -> None:
    """The offline default's features of a real photo with an ETH-80 cup pasted into it: the
    cup's own MAC (the reference's query vector) finds a window on the cup."""
    cup = np.asarray(Image.open(ETH80 / "images" / "cup1" / "cup1-045-180.png").convert("RGB").resize((224, 224)))
    scene = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((1024, 768))).copy()
    scene[384:608, 512:736] = cup
    query = dense_maps(lite0, torch.from_numpy(cup.transpose(2, 0, 1).copy())[None])[0].amax(dim=(1, 2))
    feature_map = dense_maps(lite0, torch.from_numpy(scene.transpose(2, 0, 1).copy())[None])[0]
    found = localise(query, feature_map, image_hw=(768, 1024))
    assert box_iou([found.box], [(512, 384, 736, 608)])[0, 0] > 0.5
