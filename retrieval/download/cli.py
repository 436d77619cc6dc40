"""`python -m retrieval.datasets prepare NAME --root DIR`: fetch and lay out a public set."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retrieval.download import DownloadError
from retrieval.download.archives import MAX_UNPACKED_BYTES
from retrieval.download.fetch import Fetcher
from retrieval.download.prepare import prepare
from retrieval.download.sources import SOURCES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retrieval.datasets prepare",
        description="Download and lay out a public benchmark set (or print how to get it).",
    )
    parser.add_argument("name", nargs="?", help=f"one of: {', '.join(SOURCES)}")
    parser.add_argument("--root", type=Path, help="where the set goes (default: per set)")
    parser.add_argument("--mirror", help="fetch every file from MIRROR/<path> instead")
    parser.add_argument("--retries", type=int, default=5, help="tries after a dropped connection")
    parser.add_argument("--keep-archives", action="store_true", help="keep archives after unpacking")
    parser.add_argument("--max-unpacked-gb", type=float, default=MAX_UNPACKED_BYTES / 2**30,
                        help="refuse an archive that unpacks to more GiB than this (default: %(default)g)")
    parser.add_argument("--list", action="store_true", help="list the sets and exit")
    return parser


def cli(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.list or not args.name:
        for name, source in SOURCES.items():
            kind = "download" if source.files else "manual"
            print(f"{name:12s} {kind:8s} {source.description}")
        return 0 if args.list else 2
    if args.name not in SOURCES:
        print(f"Unknown set {args.name!r}. Valid: {', '.join(SOURCES)}.", file=sys.stderr)
        return 2
    root = args.root or Path(SOURCES[args.name].default_root)
    try:
        ready = prepare(args.name, root, args.mirror, Fetcher(retries=args.retries),
                        args.keep_archives, max_unpacked_bytes=int(args.max_unpacked_gb * 2**30))
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.name}: {'ready' if ready else 'not complete'} under {root}")
    return 0 if ready else 1
