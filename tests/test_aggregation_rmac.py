"""The R-MAC region grid against the paper's rule and the reference's arithmetic, and the R-MAC
vector against a loop over its definition."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aggregation_reference import unit, whiten_loop
from retrieval.aggregation.rmac import regional_mac, rmac, rmac_regions
from retrieval.aggregation.whitening import fit_whitening
from retrieval.errors import UserError


def paper_grid(height: int, width: int, levels: int = 3) -> list[tuple[int, int, int]]:
    """Per scale l: (window side, windows along the height, along the width). The side is
    2 min(H, W) / (l + 1), rounded down; the longer side gets as many extra windows as make
    the largest-scale windows overlap closest to 40%."""
    short, long = min(height, width), max(height, width)
    extra = 0
    if height != width:
        overlaps = {count: (short - (long - short) / (count - 1)) / short for count in range(2, 8)}
        extra = min(overlaps, key=lambda count: abs(overlaps[count] - 0.4)) - 1
    grid = []
    for level in range(1, levels + 1):
        along_h = level + (extra if height > width else 0)
        along_w = level + (extra if width > height else 0)
        grid.append((math.floor(2 * short / (level + 1)), along_h, along_w))
    return grid


@pytest.mark.parametrize("height, width, total", [(30, 40, 20), (40, 30, 20), (20, 20, 14), (10, 40, 44), (24, 32, 20), (7, 9, 20)])
def test_region_grid_follows_the_paper(height: int, width: int, total: int) -> None:
    regions = rmac_regions(height, width)
    assert len(regions) == total
    start = 0
    for side, along_h, along_w in paper_grid(height, width):
        level = regions[start : start + along_h * along_w]
        start += along_h * along_w
        assert (level[:, 2] - level[:, 0] == side).all() and (level[:, 3] - level[:, 1] == side).all()
        lefts, tops = sorted(set(level[:, 0])), sorted(set(level[:, 1]))
        assert (len(tops), len(lefts)) == (along_h, along_w)
        for starts, length in ((tops, height), (lefts, width)):
            assert starts[0] == 0 and starts[-1] + side == length  # spread from edge to edge
            assert len(starts) < 3 or np.ptp(np.diff(starts)) <= 1  # evenly
    assert start == total


def test_region_positions_match_the_reference_arithmetic() -> None:
    """30 x 40 cells, worked by hand through rmac_regionvec_act.m (0-based starts)."""
    expected = [(0, 0, 30), (10, 0, 30)]
    expected += [(x, y, 20) for y in (0, 10) for x in (0, 10, 20)]
    expected += [(x, y, 15) for y in (0, 7, 15) for x in (0, 8, 16, 25)]
    assert [(x1, y1, x2 - x1) for x1, y1, x2, _ in rmac_regions(30, 40).tolist()] == expected


def test_rmac_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    feature_map = rng.random((6, 9, 12)).astype(np.float32)
    sample = rng.normal(size=(80, 6)).astype(np.float32)
    whitening = fit_whitening(sample, 5, eps=1e-9)
    regional = []
    for x1, y1, x2, y2 in rmac_regions(9, 12).tolist():
        window = feature_map[:, y1:y2, x1:x2]
        regional.append(unit(np.array([window[c].max() for c in range(6)], dtype=np.float64)))
    regional = np.array(regional)
    np.testing.assert_allclose(regional_mac(torch.from_numpy(feature_map), rmac_regions(9, 12)).numpy(), regional, atol=1e-6)
    whitened = unit(whiten_loop(regional, sample, 5, 1e-9).sum(axis=0))
    np.testing.assert_allclose(rmac(torch.from_numpy(feature_map), whitening).numpy(), whitened, atol=1e-5)
    np.testing.assert_allclose(rmac(torch.from_numpy(feature_map)).numpy(), unit(regional.sum(axis=0)), atol=1e-6)


def test_rmac_refuses_an_empty_feature_map() -> None:
    with pytest.raises(UserError, match="smaller than one patch"):
        rmac(torch.zeros(4, 3, 0))
