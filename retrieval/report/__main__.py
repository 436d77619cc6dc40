"""`python -m retrieval.report RUN_DIR` | `--leaderboard CSV` | `--compare RUN_A RUN_B`.

Rebuilds pages from saved artifacts only, so it is quick and needs no model or index.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from retrieval.cli import EXIT_USER_ERROR
from retrieval.errors import UserError
from retrieval.report import build_compare_page, build_leaderboard_page, build_run_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrieval.report", description=__doc__)
    parser.add_argument("run_dir", nargs="?", type=Path, help="run folder written by evaluate")
    parser.add_argument("--leaderboard", type=Path, metavar="CSV", help="build the leaderboard page instead")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="build a page comparing two runs of one dataset, query by query")
    parser.add_argument("--out", type=Path, help="page path of --leaderboard or --compare (default: beside the input)")
    parser.add_argument("--top-k", type=int, help="results shown per query (default 10; 8 per run with --compare)")
    parser.add_argument("--setup", help="evaluation setup shown first (default: the first one)")
    parser.add_argument("--changed", type=int, default=10, help="--compare: queries listed as gained and as lost (default 10)")
    args = parser.parse_args(argv)
    if sum(x is not None for x in (args.run_dir, args.leaderboard, args.compare)) != 1:
        parser.error("give one of RUN_DIR, --leaderboard CSV or --compare RUN_A RUN_B")
    try:
        if args.leaderboard:
            path = build_leaderboard_page(args.leaderboard, args.out)
        elif args.compare:
            path = build_compare_page(*args.compare, out=args.out, top_k=args.top_k or 8, setup=args.setup,
                                      shown=args.changed)
        else:
            path = build_run_report(args.run_dir, top_k=args.top_k or 10, setup=args.setup)
    except (FileNotFoundError, ValueError, UserError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
