"""Hostile and broken inputs (issue 16): each test builds the bad input and checks that it is a
clear error or a counted skip, never a crash, a hang, or code run from a data file."""
from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from retrieval import masks
from retrieval.datasets import load_dataset
from retrieval.images import ImageError, load_rgb
from retrieval.queries import QueryError, get_query_mode
from retrieval.records import Instance
from retrieval.report.thumbnails import Request, make_thumbnails


def guarded(call: Callable[[], Any], fifo: Path, seconds: float = 20.0) -> Any:
    """`call()`, failing instead of hanging the suite if it blocks on opening `fifo`: after
    `seconds` the FIFO's write end is opened once, which releases a reader stuck on it."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the test thread below
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"reading {fifo} blocked for {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def photo(path: Path, size: tuple[int, int] = (40, 30), **save: Any) -> Path:
    """A small image with distinct halves, in the format its suffix names."""
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((30, 30, 200), (size[0] // 2, 0, size[0], size[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height and whose data is one empty chunk: what a
    decompression bomb looks like before it is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


# Item 2: a malformed EXIF block.


def test_malformed_exif_is_the_images_skip(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate, so the EXIF block is rewritten after the transpose
    exif[0x010F] = "Make"
    raw = bytearray(exif.tobytes())
    entry = raw.index(b"\x01\x0f", 8)  # the Make tag (big-endian TIFF header)
    raw[entry + 2 : entry + 8] = struct.pack(">HI", 11, 1)  # stored as one FLOAT, not ASCII
    path = photo(tmp_path / "odd_exif.jpg", exif=bytes(raw))
    with pytest.raises(ImageError, match=r"cannot decode .*odd_exif\.jpg: AttributeError"):
        load_rgb(path)


# Item 4: FIFOs, devices and folders named like images.


def test_fifo_and_folder_named_like_images_say_what_they_are(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match=r"pipe\.jpg is a FIFO \(named pipe\); only regular files"):
        guarded(lambda: load_rgb(fifo), fifo)
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageError, match=r"folder\.jpg is a directory"):
        load_rgb(tmp_path / "folder.jpg")
    with pytest.raises(ImageError, match="is a character device"):
        load_rgb("/dev/null")
    with pytest.raises(ImageError, match="missing file"):
        load_rgb(tmp_path / "nothing.jpg")


def test_report_thumbnail_of_a_fifo_is_skipped_not_awaited(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    real = photo(tmp_path / "real.jpg")
    requests = {Request(str(fifo)), Request(str(real), box=(1, 1, 10, 10))}
    made = guarded(lambda: make_thumbnails(requests, tmp_path / "thumbs", workers=1), fifo)
    assert made[Request(str(fifo))] is None
    assert (tmp_path / "thumbs" / made[Request(str(real), box=(1, 1, 10, 10))]).is_file()


def test_mask_fifo_is_an_unreadable_mask(tmp_path: Path) -> None:
    fifo = tmp_path / "mask.png"
    os.mkfifo(fifo)
    with pytest.raises(masks.MaskFileError, match=r"unreadable mask: .*mask\.png is a FIFO"):
        guarded(lambda: masks.decode(fifo), fifo)


# Item 8a: decompression bombs and the pixel cap.


def test_pixel_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = png_header_only(tmp_path / "bomb.png", 17000, 17000)
    assert bomb.stat().st_size < 100
    with pytest.raises(ImageError, match=r"17000x17000 = 289,000,000 pixels, over max_pixels=100,000,000"):
        load_rgb(bomb)
    with pytest.raises(ImageError, match=r"extract\.max_pixels"):
        load_rgb(bomb)


def test_max_pixels_is_a_keyword_and_max_side_decodes_jpegs_reduced(tmp_path: Path) -> None:
    jpeg = photo(tmp_path / "big.jpg", size=(800, 600), quality=95)
    png = photo(tmp_path / "big.png", size=(800, 600))
    with pytest.raises(ImageError, match="800x600 = 480,000 pixels, over max_pixels=100,000"):
        load_rgb(jpeg, max_pixels=100_000)
    reduced = load_rgb(jpeg, max_pixels=100_000, max_side=200)  # decoded at 1/4 scale
    assert reduced.shape == (150, 200, 3)
    assert reduced[75, 20, 0] > 150 and reduced[75, 180, 2] > 150  # red left, blue right
    with pytest.raises(ImageError, match="over max_pixels"):
        load_rgb(png, max_pixels=100_000, max_side=200)  # PNG has no reduced decode
    assert load_rgb(jpeg, max_side=200).shape == (150, 200, 3)
    assert load_rgb(jpeg).shape == (600, 800, 3)


# Item 3: a mask file that is not an image.


def test_folder_mask_that_is_not_an_image_is_a_counted_skip(folder_root: Path) -> None:
    broken = folder_root / "masks" / "cup1" / "cup1-045-180.png"
    broken.write_text("not an image")
    dataset = load_dataset("folder", root=folder_root)
    ((path, reason),) = dataset.skipped
    assert path == "masks/cup1/cup1-045-180.png"
    assert "unreadable mask" in reason and "query=box: the whole image" in reason
    record = next(r for r in dataset.queries if r.key == "images/cup1/cup1-045-180.png")
    assert record.instances[0].mask is None
    image = load_rgb(record.path)
    np.testing.assert_array_equal(get_query_mode("box")(image, record.instances[0]), image)
    with pytest.raises(QueryError, match="needs a mask"):
        get_query_mode("mask")(image, record.instances[0])
    others = [r for r in dataset.gallery if r.key != record.key]
    assert all(r.instances[0].mask is not None for r in others)


def test_unreadable_mask_at_query_time_falls_back_in_box_mode(tmp_path: Path) -> None:
    """A mask that breaks after loading: box mode uses the whole image, mask mode skips."""
    broken = tmp_path / "mask.png"
    broken.write_text("not an image")
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    instance = Instance("a", mask=str(broken))
    np.testing.assert_array_equal(get_query_mode("box")(image, instance), image)
    np.testing.assert_array_equal(get_query_mode("square")(image, instance), image)
    with pytest.raises(QueryError, match=r"unreadable mask: cannot decode .*mask\.png"):
        get_query_mode("mask")(image, instance)
    small = tmp_path / "small.png"
    Image.fromarray(np.full((5, 5), 255, dtype=np.uint8)).save(small)
    with pytest.raises(QueryError, match="unusable mask: mask is 5x5, expected 20x30"):
        get_query_mode("mask")(image, Instance("a", mask=str(small)))


# Item 8j and item 4 in folder datasets: hidden entries and non-regular files.


def test_folder_ignores_hidden_entries_and_skips_non_regular_files(folder_root: Path) -> None:
    photo(folder_root / "images" / ".hidden" / "secret.png")
    photo(folder_root / "images" / "apple1" / "._apple1-000-000.png")  # a macOS resource fork
    photo(folder_root / "masks" / "apple1" / ".apple1-045-180.png")
    os.mkfifo(folder_root / "images" / "cup2" / "pipe.png")
    (folder_root / "images" / "cup2" / "folder.jpg").mkdir()
    dataset = load_dataset("folder", root=folder_root)
    assert len(dataset.gallery) == 12
    assert {i for r in dataset.gallery for i in r.instance_ids} == {"apple1", "apple2", "cup1", "cup2"}
    assert sorted(dataset.skipped) == [
        ("images/cup2/folder.jpg", "is a directory, not an image file"),
        ("images/cup2/pipe.png", "is a FIFO (named pipe), not an image file"),
    ]


# Item 8c: an inverted box.


@pytest.mark.parametrize("mode", ["box", "square", "mask"])
def test_inverted_box_is_called_inverted(mode: str) -> None:
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:10, 5:10] = True
    with pytest.raises(QueryError, match=r"box \(30, 5, 10, 25\) is inverted"):
        get_query_mode(mode)(image, Instance("a", box=(30, 5, 10, 25), mask=mask))
    with pytest.raises(QueryError, match="non-finite"):
        get_query_mode(mode)(image, Instance("a", box=(1, 2, float("nan"), 25), mask=mask))
