"""The cheapest value of an index's knob that reaches a target recall, found once per index,
target, depth and query sample, and kept beside the index so reruns do not tune again."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from retrieval import artifacts
from retrieval.search.approximate.knobs import Knob

log = logging.getLogger(__name__)
TUNING = "tuning"
"""Subfolder of an index artifact holding one JSON file per tuning."""


def cheapest(ladder: tuple[int, ...], recall_of: Callable[[int], float], target: float) -> tuple[int, dict[int, float]]:
    """The first (cheapest) ladder value whose recall reaches `target`, and the recall of each
    value tried; when none does, the one with the best recall (the cheapest of equals). Walked from the bottom rather than bisected:
    recall is not strictly monotone in the knob (a PQ index can lose a neighbour to a closer
    code when it visits more lists), and the cheap values cost least to try."""
    tried: dict[int, float] = {}
    for value in ladder:
        tried[value] = recall_of(value)
        if tried[value] >= target:
            return value, tried
    return max(tried, key=lambda value: (tried[value], -value)), tried


def tuned(
    index_folder: Path, knob: Knob, target: float, sample: Mapping[str, Any], recall_of: Callable[[int], float]
) -> dict[str, Any]:
    """{"value", "recalls"} of `knob` tuned to `target` on the tuning sample that `sample`
    describes (its depth, rows fetched, digest, other search parameters), read from the index
    folder when an earlier run tuned the same, else tuned here under a lock (parallel runs of
    a sweep tune once) and saved."""
    settings = {"knob": knob.name, "ladder": list(knob.ladder), "target": target, **sample}
    path = Path(index_folder) / TUNING / f"{artifacts.config_key(settings)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists():
            found = artifacts.read_json(path)
            log.info("index: reusing tuned %s=%s (recall@%s %.3f >= %s) from %s",
                     knob.name, found["value"], sample["k"], found["recalls"][str(found["value"])], target, path)
            return found
        value, recalls = cheapest(knob.ladder, recall_of, target)
        if recalls[value] < target:
            log.warning("index: no %s reaches recall@%s %s (best %.3f at %s=%s), which this run searches with; for more, "
                        "use a finer factory: more PQ bytes, IVF<lists>,Flat, or a refine stage (IVF<lists>,PQ<m>,RFlat)",
                        knob.name, sample["k"], target, recalls[value], knob.name, value)
        found = {**settings, "value": value, "recalls": {str(v): round(r, 6) for v, r in recalls.items()}}
        artifacts.write_json(path, found)
        log.info("index: tuned %s=%s for recall@%s >= %s (tried %s)", knob.name, value, sample["k"], target, found["recalls"])
        return found
