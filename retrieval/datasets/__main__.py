"""`python -m retrieval.datasets {list,compose,prepare} ...`: dataset tools.

`list` names the adapters of this package; `compose` writes a composed set (`retrieval.scenes`)
and `prepare` fetches a public one (`retrieval.download`), both read back by an adapter here."""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    commands = ("list", "compose", "prepare")
    if not argv or argv[0] not in commands:
        print(f"usage: python -m retrieval.datasets {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "list":
        from retrieval.datasets import available

        for name, description in available().items():
            print(f"{name:12s} {description}")
        return 0
    if command == "compose":
        from retrieval.scenes.cli import cli
    else:
        from retrieval.download.cli import cli
    return cli(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
