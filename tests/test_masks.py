"""Every mask encoding decodes to the mask the test built by hand."""
from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as coco_mask
import pytest
import torch
from PIL import Image

from retrieval import masks


def sample_mask() -> np.ndarray:
    """7x5 (HxW) with an L shape and pixel (0, 0) set, so order and first-run bugs show."""
    mask = np.zeros((7, 5), dtype=bool)
    mask[0, 0] = True
    mask[2:6, 1] = True
    mask[5, 1:4] = True
    return mask


def runs(flat: np.ndarray) -> list[int]:
    """Alternating run lengths starting with a (possibly empty) run of zeros."""
    counts, value, length = [], False, 0
    for pixel in flat.tolist():
        if pixel == value:
            length += 1
        else:
            counts.append(length)
            value, length = pixel, 1
    counts.append(length)
    return counts


def test_compressed_rle_str_and_bytes() -> None:
    mask = sample_mask()
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert np.array_equal(masks.decode(rle), mask)
    as_str = {"size": rle["size"], "counts": rle["counts"].decode()}
    assert np.array_equal(masks.decode(as_str), mask)


def test_uncompressed_rle_is_column_major() -> None:
    mask = sample_mask()
    rle = {"size": [7, 5], "counts": runs(mask.T.ravel())}
    assert rle["counts"][0] == 0  # pixel (0, 0) set: COCO keeps an empty leading zero-run
    assert np.array_equal(masks.decode(rle), mask)


def test_builder_rle_row_major_and_transposed() -> None:
    mask = sample_mask()
    row_major = {"counts": runs(mask.ravel()), "size": (7, 5), "transpose": False}
    column_major = {"counts": runs(mask.T.ravel()), "size": (7, 5), "transpose": True}
    assert np.array_equal(masks.decode(row_major), mask)
    assert np.array_equal(masks.decode(column_major), mask)


def test_decode_runs_first_value() -> None:
    mask = sample_mask()
    counts = runs(mask.ravel())[1:]  # what the builder writes: no leading zero-run
    repaired = masks.decode_runs(counts, (7, 5), column_major=False, first_value=True)
    assert np.array_equal(repaired, mask)
    assert np.array_equal(masks.decode_runs(counts, (7, 5), column_major=False), ~mask)


def test_polygons_need_size_and_rasterise_coco_style() -> None:
    expected = np.zeros((12, 10), dtype=bool)
    expected[3:8, 2:6] = True  # COCO: a rectangle through pixel corners covers [x1, x2) x [y1, y2)
    expected[9:11, 7:9] = True
    polygons = [[2, 3, 6, 3, 6, 8, 2, 8], [7, 9, 9, 9, 9, 11, 7, 11]]
    assert np.array_equal(masks.decode(polygons, (12, 10)), expected)
    assert not masks.decode([], (12, 10)).any()
    with pytest.raises(ValueError, match="size_hw"):
        masks.decode(polygons)


def test_png_any_channel(tmp_path) -> None:
    mask = sample_mask()
    rgb = np.zeros((7, 5, 3), dtype=np.uint8)
    rgb[mask, 2] = 1  # only the blue channel marks the object
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "gray.png")
    assert np.array_equal(masks.decode(tmp_path / "rgb.png"), mask)
    assert np.array_equal(masks.decode(str(tmp_path / "gray.png")), mask)


def test_dense_arrays() -> None:
    mask = sample_mask()
    as_uint8 = mask.astype(np.uint8) * 255
    for dense in (mask, as_uint8, torch.from_numpy(mask), torch.from_numpy(as_uint8)):
        decoded = masks.decode(dense)
        assert decoded.dtype == bool and np.array_equal(decoded, mask)


def test_encode_round_trip_is_json_able() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 5), (33, 64)]:
        mask = rng.random(shape) > 0.5
        rle = masks.encode(mask)
        assert rle["size"] == list(shape) and isinstance(rle["counts"], str)
        assert np.array_equal(masks.decode(json.loads(json.dumps(rle))), mask)
    reference = coco_mask.encode(np.asfortranarray(sample_mask().astype(np.uint8)))
    assert masks.encode(sample_mask())["counts"] == reference["counts"].decode()


def test_tight_box_exclusive() -> None:
    assert masks.tight_box(sample_mask()) == (0, 0, 4, 6)
    single = np.zeros((4, 4), dtype=bool)
    single[2, 3] = True
    assert masks.tight_box(single) == (3, 2, 4, 3)
    assert masks.tight_box(np.zeros((4, 4), dtype=bool)) is None


def test_clear_errors(tmp_path) -> None:
    with pytest.raises(TypeError, match="unsupported mask type"):
        masks.decode(42)
    with pytest.raises(ValueError, match="2-D"):
        masks.decode(np.zeros((2, 3, 3), dtype=bool))
    with pytest.raises(ValueError, match="sum to"):
        masks.decode({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError, match="expected 3x3"):
        masks.decode(np.zeros((2, 2), dtype=bool), (3, 3))
    with pytest.raises(ValueError, match="'counts' and 'size'"):
        masks.decode({"size": [2, 2]})
    with pytest.raises(FileNotFoundError):
        masks.decode(tmp_path / "missing.png")
