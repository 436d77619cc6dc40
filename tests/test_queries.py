"""Query modes on arrays built here; expected pixels come from plain slicing, Pillow and scipy."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from retrieval.queries import QueryError, get_query_mode
from retrieval.records import Instance

H, W = 40, 50


@pytest.fixture
def image() -> np.ndarray:
    """Every pixel distinct, so any off-by-one in a crop changes the result."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def run(mode: str, image: np.ndarray, instance: Instance | None, **options: object) -> np.ndarray:
    return get_query_mode(mode)(image, instance, **options)


def box_mask(box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = True
    return mask


def test_full_returns_the_whole_image(image: np.ndarray) -> None:
    np.testing.assert_array_equal(run("full", image, Instance("a", box=(10, 10, 20, 20))), image)


def test_box_crop_is_the_slice(image: np.ndarray) -> None:
    out = run("box", image, Instance("a", box=(10, 5, 30, 25)))
    np.testing.assert_array_equal(out, image[5:25, 10:30])


def test_box_margin_grows_by_box_size_and_clips(image: np.ndarray) -> None:
    # 20x20 box grown by 0.25 x 20 = 5 px on each side
    np.testing.assert_array_equal(run("box", image, Instance("a", box=(10, 5, 30, 25)), margin=0.25), image[0:30, 5:35])
    # grown past the image on every side: clipped to it
    np.testing.assert_array_equal(run("box", image, Instance("a", box=(10, 5, 30, 25)), margin=1.0), image)


@pytest.mark.parametrize("box", [(2.5, 3.5, 10.5, 11.5), (0.5, 1.5, 12.49, 20.51), (3.4999, 2.5001, 9.5, 7.5)])
def test_fractional_box_rounds_like_pillow_crop(image: np.ndarray, box: tuple[float, ...]) -> None:
    expected = np.asarray(Image.fromarray(image).crop(box))
    np.testing.assert_array_equal(run("box", image, Instance("a", box=box)), expected)


def test_box_from_mask_when_no_box(image: np.ndarray) -> None:
    mask = np.zeros((H, W), dtype=bool)
    mask[12, 7] = mask[30, 41] = True  # tight box (7, 12, 42, 31)
    np.testing.assert_array_equal(run("box", image, Instance("a", mask=mask)), image[12:31, 7:42])


@pytest.mark.parametrize("instance", [None, Instance("a")])
def test_no_box_means_whole_image(image: np.ndarray, instance: Instance | None) -> None:
    np.testing.assert_array_equal(run("box", image, instance), image)
    np.testing.assert_array_equal(run("square", image, instance), image)


@pytest.mark.parametrize("box", [(60, 5, 80, 25), (-30, -20, -1, -1), (10, 45, 20, 60)])
def test_box_outside_image_is_a_query_error(image: np.ndarray, box: tuple[int, ...]) -> None:
    with pytest.raises(QueryError, match="outside"):
        run("box", image, Instance("a", box=box))
    with pytest.raises(QueryError, match="outside"):
        run("square", image, Instance("a", box=box))


def test_mask_fill_constant(image: np.ndarray) -> None:
    mask = np.zeros((H, W), dtype=bool)
    mask[10:20, 10:30] = True
    mask[15:25, 20:25] = True  # an L-shape: tight box (10, 10, 30, 25) holds background pixels
    out = run("mask", image, Instance("a", mask=mask), fill=7)
    expected = np.where(mask[..., None], image, 7)[10:25, 10:30]
    np.testing.assert_array_equal(out, expected)
    assert (out[20:25, 0:10] == 7).all()  # below the L's foot: background inside the crop


def test_mask_fill_mean_and_margin(image: np.ndarray) -> None:
    mask = box_mask((20, 10, 30, 20))
    out = run("mask", image, Instance("a", mask=mask), fill="mean", margin=0.5)
    mean = np.array([round(float(image[..., c].astype(np.float64).mean())) for c in range(3)], dtype=np.uint8)
    expected = np.where(mask[..., None], image, mean)[5:25, 15:35]
    np.testing.assert_array_equal(out, expected)


def test_mask_fill_blur(image: np.ndarray) -> None:
    mask = box_mask((20, 10, 30, 20))
    out = run("mask", image, Instance("a", mask=mask), fill="blur", blur_sigma=2.0, margin=1.0)
    # OpenCV's 8-bit Gaussian: kernel radius 3 sigma, mirrored border without repeating the edge,
    # fixed-point weights (hence up to ~1.2 grey levels off the exact float filter)
    blurred = np.stack(
        [gaussian_filter(image[..., c].astype(np.float64), 2.0, mode="mirror", truncate=3.0) for c in range(3)], -1
    )
    expected = np.where(mask[..., None], image, blurred)[0:30, 10:40]
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1.5)
    np.testing.assert_array_equal(out[10:20, 10:20], image[10:20, 20:30])


def test_mask_as_box_mode_input_must_not_be_empty(image: np.ndarray) -> None:
    with pytest.raises(QueryError, match="empty mask"):
        run("mask", image, Instance("a", mask=np.zeros((H, W), dtype=bool)))


def test_mask_mode_without_mask_says_what_to_use(image: np.ndarray) -> None:
    with pytest.raises(QueryError, match="query=box"):
        run("mask", image, Instance("a", box=(1, 1, 5, 5)))


def test_square_centred_on_box(image: np.ndarray) -> None:
    # 20 wide, 10 high, centre (20, 15): square rows 5..25, columns 10..30
    np.testing.assert_array_equal(run("square", image, Instance("a", box=(10, 10, 30, 20))), image[5:25, 10:30])


def test_square_pads_with_zeros_outside_the_image(image: np.ndarray) -> None:
    # 10 x 4 box at the top-left corner: centre (5, 2), square rows -3..7, columns 0..10
    out = run("square", image, Instance("a", box=(0, 0, 10, 4)))
    expected = np.zeros((10, 10, 3), dtype=np.uint8)
    expected[3:] = image[0:7, 0:10]
    np.testing.assert_array_equal(out, expected)


def test_square_stays_square_at_the_edge_with_a_half_pixel_centre(image: np.ndarray) -> None:
    # 3 x 10 box at the left edge: centre x = 1.5, so the square starts at x = -3.5
    out = run("square", image, Instance("a", box=(0, 0, 3, 10)))
    assert out.shape == (10, 10, 3)
    expected = np.zeros((10, 10, 3), dtype=np.uint8)
    expected[:, 4:] = image[0:10, 0:6]
    np.testing.assert_array_equal(out, expected)


def test_unknown_mode_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="Valid") as error:
        get_query_mode("crop")
    for name in ("box", "full", "mask", "square"):
        assert name in str(error.value)
