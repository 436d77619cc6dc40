"""`python -m retrieval.datasets {list,compose,route,prepare} ...`: dataset tools.

`list` names the presets users pass as `dataset=NAME` (conf/dataset/) and the formats (the
adapters of this package); `compose` writes a composed set and `route` a place-recognition route
(`retrieval.scenes`), and `prepare` fetches a public one (`retrieval.download`), all read back by
an adapter here."""
from __future__ import annotations

import argparse
import sys

COMMANDS = {
    "list": "the dataset presets (dataset=NAME): format, where each reads its data, what it is; then the formats",
    "compose": "paste masked objects into scenes and write them as a set in the anns format (compose --help)",
    "route": "cut a place-recognition route (dataset=vpr) from real photos, with viewpoint and lighting change (route --help)",
    "prepare": "download and lay out a public benchmark, or print how to get it (prepare --list names them)",
}


def parser() -> argparse.ArgumentParser:
    """The commands; `compose`, `route` and `prepare` take their own options (their --help)."""
    tools = argparse.ArgumentParser(
        prog="python -m retrieval.datasets",
        description="Dataset tools: which datasets the pipeline reads (python evaluate.py dataset=NAME), "
                    "and making them: composed scenes of your objects, public benchmarks fetched and laid out.",
        epilog="python -m retrieval.datasets COMMAND --help describes a command's options.",
    )
    commands = tools.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name, summary in COMMANDS.items():
        commands.add_parser(name, help=summary, description=summary, add_help=name == "list")
    return tools


def list_datasets() -> str:
    from retrieval.datasets import available
    from retrieval.datasets.presets import presets_text

    formats = "\n".join(f"  {name:12s}{description}" for name, description in available().items())
    return (f"Dataset presets: python evaluate.py dataset=NAME (conf/dataset/NAME.yaml)\n{presets_text()}\n\n"
            f"Formats (a preset's `format:`, which reads its own options):\n{formats}")


def main(argv: list[str]) -> int:
    tools = parser()
    args, rest = tools.parse_known_args(argv)
    if args.command == "list":
        if rest:
            tools.error(f"unrecognized arguments: {' '.join(rest)}")
        print(list_datasets())
        return 0
    if args.command == "compose":
        from retrieval.scenes.cli import cli
    elif args.command == "route":
        from retrieval.scenes.cli import route_cli as cli
    else:
        from retrieval.download.cli import cli
    return cli(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
