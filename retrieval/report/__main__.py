"""`python -m retrieval.report RUN_DIR` | `python -m retrieval.report --leaderboard CSV`.

Rebuilds pages from saved artifacts only, so it is quick and needs no model or index.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retrieval.report import build_leaderboard_page, build_run_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrieval.report", description=__doc__)
    parser.add_argument("run_dir", nargs="?", type=Path, help="run folder written by evaluate")
    parser.add_argument("--leaderboard", type=Path, metavar="CSV", help="build the leaderboard page instead")
    parser.add_argument("--out", type=Path, help="leaderboard page path (default: beside the CSV)")
    parser.add_argument("--top-k", type=int, default=10, help="results shown per query (default 10)")
    parser.add_argument("--setup", help="evaluation setup shown first (default: the first one)")
    args = parser.parse_args(argv)
    if (args.run_dir is None) == (args.leaderboard is None):
        parser.error("give either RUN_DIR or --leaderboard CSV")
    try:
        if args.leaderboard:
            path = build_leaderboard_page(args.leaderboard, args.out)
        else:
            path = build_run_report(args.run_dir, top_k=args.top_k, setup=args.setup)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
