"""load_rgb on the image files users actually have: each case checked against pixels computed here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.images import ImageError, load_rgb


def _two_colour(path: Path, **save: object) -> None:
    """40x20: left half red, right half blue (an orientation error shows at once)."""
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))
    image.save(path, quality=95, **save)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.jpg"
    with pytest.raises(ImageError, match="missing file") as error:
        load_rgb(path)
    assert str(path) in str(error.value)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match="cannot decode") as error:
        load_rgb(path)
    assert str(path) in str(error.value)


def test_truncated_jpeg(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jpg"
    _two_colour(whole)
    cut = tmp_path / "cut.jpg"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert load_rgb(whole).shape == (20, 40, 3)
    with pytest.raises(ImageError, match="cannot decode"):
        load_rgb(cut)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    image = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # red in CMYK
    image.paste((255, 255, 0, 0), (16, 0, 32, 16))  # blue in CMYK
    path = tmp_path / "cmyk.jpg"
    image.save(path, quality=95)
    rgb = load_rgb(path)
    assert rgb.shape == (16, 32, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(rgb[:, 2:14].reshape(-1, 3).mean(0), (255, 0, 0), atol=3)
    np.testing.assert_allclose(rgb[:, 18:30].reshape(-1, 3).mean(0), (0, 0, 255), atol=3)


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 1000, 32768], [40000, 60000, 65280, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = load_rgb(path)
    expected = np.floor(values / 65535 * 255 + 0.5).astype(np.uint8)  # [[0, 1, 4, 128], [156, 233, 254, 255]]
    assert rgb.shape == (2, 4, 3)
    np.testing.assert_array_equal(rgb, np.repeat(expected[..., None], 3, axis=2))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    plain, rotated = tmp_path / "plain.jpg", tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    _two_colour(plain)
    _two_colour(rotated, exif=exif)
    upright = load_rgb(plain)
    turned = load_rgb(rotated)
    assert turned.shape == (40, 20, 3)
    np.testing.assert_array_equal(turned, np.rot90(upright, k=-1))
    assert turned[5, 10, 0] > 200 and turned[35, 10, 2] > 200  # red on top, blue below


def test_palette_image(tmp_path: Path) -> None:
    palette = [10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6)
    indices = np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette)
    path = tmp_path / "palette.png"
    image.save(path)
    lut = np.array(palette, dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(load_rgb(path), lut[indices])


def test_transparent_palette_and_rgba_composite_on_white(tmp_path: Path) -> None:
    indices = np.array([[0, 1]], dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 0, 128, 0] + [0] * (254 * 3))
    image.info["transparency"] = 0
    path = tmp_path / "palette_alpha.png"
    image.save(path, transparency=0)
    np.testing.assert_array_equal(load_rgb(path), [[[255, 255, 255], [0, 128, 0]]])

    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 0, 40)
    rgba[..., 3] = [[0, 128, 255], [64, 192, 10]]
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    alpha = rgba[..., 3:].astype(np.float64) / 255
    expected = rgba[..., :3] * alpha + 255 * (1 - alpha)
    np.testing.assert_allclose(load_rgb(path), expected, atol=1)


def test_greyscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = tmp_path / "grey.png"
    Image.fromarray(grey).save(path)
    np.testing.assert_array_equal(load_rgb(path), np.repeat(grey[..., None], 3, axis=2))
