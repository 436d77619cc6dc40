"""The `--data` option of the benchmarks that run on ETH-80 photos: the full set is not in the
repository (55 MB, research use only), so each user points the benchmark at their own copy."""
from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBSET = REPO / "tests" / "data" / "eth80"
"""The tests' 96 views (16 objects x 6) in the same layout: enough for a quick look, not for figures."""

HOW_TO_GET = f"""\
--data is a folder of ETH-80 photos laid out as images/<instance>/<stem>.png (RGB, 128x128) and
masks/<instance>/<stem>.png (one channel, mode L, 128x128, 255 = object, 0 = background), with
<instance> and <stem> taken from the original file names (apple1/apple1-000-000.png, car14/...).
To get the full set (80 objects x 41 views, 3,280 images; research use only, cite B. Leibe and
B. Schiele, Analyzing Appearance and Contour Based Methods for Object Categorization, CVPR 2003):
clone the GitHub repository chenchkx/ETH-80, which holds the eth80-cropped256 release (folders
<category>/<object>/ of 256x256 RGB PNGs, with maps/<stem>-map.png masks), then resize each image
to 128x128 (Lanczos) into images/<instance>/<stem>.png and each map to one channel, 128x128 (box
filter), thresholded at 128 to {{0, 255}}, into masks/<instance>/<stem>.png. The tests' subset
({SUBSET.relative_to(REPO)}, 16 objects x 6 views) has this layout and runs for a quick look."""


def eth80_folder(value: str) -> Path:
    """An argparse type: a folder with `images/` (masks are optional for plain retrieval)."""
    path = Path(value).expanduser()
    if not (path / "images").is_dir():
        raise argparse.ArgumentTypeError(f"{path} has no images/ folder; see the end of --help for how to get ETH-80")
    return path


def add_data_option(parser: argparse.ArgumentParser, required: bool = True,
                    help: str = "ETH-80 photos and masks (see below)") -> None:
    """`--data PATH`, with how to get ETH-80 at the end of --help."""
    parser.add_argument("--data", type=eth80_folder, metavar="PATH", required=required, help=help)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = HOW_TO_GET
