"""Decode any image a user may have into RGB uint8, or say clearly why not.

Every image the toolkit reads (inputs, masks, thumbnails, composed sets) goes through
`open_image`: only regular files are opened, without blocking (a FIFO or device named like an
image would hang the reader), and the decoded size is capped before a pixel is decoded.
"""
from __future__ import annotations

import contextlib
import math
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest decoded image, in pixels. 100 megapixels is above the photos of nearly every camera
(12-61 MP; the 108/200 MP modes of some phones are JPEGs, which a `max_side` hint decodes at
1/2 or 1/4 scale), and its RGB array (300 MB, plus a conversion copy or two) fits a data-loader
worker, while a decompression bomb (a 281 KB PNG of 17000x17000 = 289 megapixels, 867 MB as
RGB before any conversion copy) is refused from its header. Raise it (`max_pixels`,
`extract.max_pixels`) for gigapixel scans."""

# `open_image` enforces the configurable cap above; PIL's own process-wide check would
# silently override a raised one.
Image.MAX_IMAGE_PIXELS = None

_KINDS = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "is a FIFO (named pipe)"),
    (stat.S_ISCHR, "is a character device"),
    (stat.S_ISBLK, "is a block device"),
    (stat.S_ISSOCK, "is a socket"),
)

BROKEN_LINK = "is a broken link"
"""How `not_regular` begins its reason for a symlink whose target does not exist."""


class ImageError(Exception):
    """An input image that cannot be used; callers count and log it, then skip it."""


class Opened(NamedTuple):
    """An image opened by `open_image` (header read, maybe drafted smaller) and its full size."""

    image: Image.Image
    full_size: tuple[int, int]
    """(width, height) in the file, before any draft reduction."""


def not_regular(path: str | Path) -> str | None:
    """Why `path` is not a readable regular file ("missing file", "is a FIFO (named pipe)",
    "is a broken link to <target>", ...), or None when it is one; symlinks are followed."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):  # the link is there, what it points to is not
            target = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
            return f"{BROKEN_LINK} to {target}"
        return "missing file"
    except OSError as error:
        return f"cannot be inspected ({error.strerror})"
    return _kind(mode)


def unusable(paths: Iterable[Path]) -> list[str]:
    """Each of `paths` that is not a regular file: its path, followed by what it is unless it
    is simply missing; for dataset checks that list a few."""
    described = ((path, not_regular(path)) for path in paths)
    return [
        str(path) if problem == "missing file" else f"{path} ({problem})"
        for path, problem in described
        if problem
    ]


def require_files(paths: list[Path], what: str, help_text: str) -> None:
    """Refuse a listing whose images are not all regular files: one error naming how many, a
    few of them (each with what it is), and the dataset's expected layout."""
    missing = unusable(paths)
    if missing:
        shown = "\n  ".join(missing[:5])
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} {what} are missing or not regular files, e.g.\n  {shown}\n" + help_text
        )


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "is not a regular file")


def open_regular(path: str | Path) -> BinaryIO:
    """`path` opened for binary reading, if it is a regular file; ImageError otherwise.

    Opened without blocking and checked again on the open descriptor, so neither a FIFO nor a
    file swapped for one after the first check can hang the reader."""
    problem = not_regular(path)
    if problem == "missing file":
        raise ImageError(f"missing file: {path}")
    if problem and problem.startswith(BROKEN_LINK):
        raise ImageError(f"{path} {problem}")
    if problem:
        raise ImageError(f"{path} {problem}; only regular files are read")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise ImageError(f"cannot open {path}: {error.strerror}") from error
    problem = _kind(os.fstat(fd).st_mode)
    if problem:
        os.close(fd)
        raise ImageError(f"{path} {problem}; only regular files are read")
    return os.fdopen(fd, "rb")


def _draft(image: Image.Image, max_side: int) -> None:
    """Let a JPEG decode at the smallest DCT scale (1/2, 1/4, 1/8) whose longer side still
    reaches `max_side`; other formats ignore it."""
    scale = max_side / max(image.size)
    if scale < 1:
        image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))


@contextlib.contextmanager
def open_image(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> Iterator[Opened]:
    """The image at `path` with only its header read, refused (ImageError) unless it is a
    regular image file of at most `max_pixels` pixels once decoded.

    `max_side` is a hint from a caller that will shrink the whole image to that longer side
    anyway: a JPEG is then decoded reduced (a 1/8-scale JPEG decode costs 1/64 of the memory)."""
    with open_regular(path) as handle:
        try:
            image = Image.open(handle)
            full_size = image.size
            if max_side:
                _draft(image, max_side)
        except UnidentifiedImageError as error:  # its own text names the descriptor, not the file
            raise ImageError(f"cannot decode {path}: not an image file (no format Pillow reads)") from error
        except Exception as error:  # any failure to read one header is that image's skip
            raise ImageError(f"cannot decode {path}: {_reason(error)}") from error
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{path} is {width}x{height} = {width * height:,} pixels, over max_pixels="
                    f"{max_pixels:,}; raise max_pixels (extract.max_pixels) to read it"
                )
            yield Opened(image, full_size)


def _reason(error: Exception) -> str:
    """The error's text, prefixed by its type unless that is a plain OSError/ValueError."""
    if type(error) in (OSError, ValueError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: PIL's own convert clips to 255, so scale by the real range.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        grey = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> np.ndarray:
    """HxWx3 uint8 in display orientation (EXIF rotation applied); CMYK, palette and
    16-bit images converted. Raises ImageError, the image's skip, for a missing or non-regular
    file, one over `max_pixels`, and any failure to decode it (corrupt data, truncation, a
    malformed EXIF block). With `max_side` (see `open_image`) a JPEG may come back smaller."""
    with open_image(path, max_pixels, max_side) as (image, _):
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.asarray(_to_rgb(image))
        except Exception as error:  # any failure while decoding one image is that image's skip
            raise ImageError(f"cannot decode {path}: {_reason(error)}") from error
