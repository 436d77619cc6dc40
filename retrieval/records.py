"""The one in-memory schema every dataset adapter produces.

A dataset is two lists of image records (queries, gallery) plus, per evaluation setup, the
positives and junk of every query as gallery indices. Protocol-specific ground truth (junk
lists, GPS positions, pair lists) is resolved into that form by the adapter, so metric code
never needs to know where it came from.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

Box = tuple[float, float, float, float]
"""(x1, y1, x2, y2) in pixels of the original image; right/bottom exclusive."""

MaskRef = Union[dict, str, Path, np.ndarray]
"""A mask as stored: COCO RLE dict, a path to a PNG (non-zero = object), or a dense array.

`retrieval.masks.decode` turns any of them into a bool HxW array."""


@dataclass(frozen=True)
class Instance:
    """One object in an image. `id` is globally unique across the dataset (e.g. "OWID/5")."""

    id: str
    box: Box | None = None
    mask: MaskRef | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Record:
    """One image. Queries hold exactly one instance: the object they ask for."""

    path: Path
    key: str
    instances: tuple[Instance, ...] = ()
    group: str = ""
    """Subset for per-group reporting (e.g. "OWID", "RoboTools"); "" means none."""
    text: str = ""
    """Queries only: what the user says in words ("" = none). A text query has it alone
    (`path` may then name no image); a composed query has an image and a text."""

    @property
    def instance_ids(self) -> tuple[str, ...]:
        return tuple(instance.id for instance in self.instances)


@dataclass(frozen=True)
class QueryTruth:
    """Ground truth of one query: gallery indices that count as correct, and ones to ignore."""

    positives: np.ndarray
    junk: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


@dataclass
class Dataset:
    """Queries, gallery and ground truth, as every stage after loading sees them."""

    name: str
    root: Path
    queries: list[Record]
    gallery: list[Record]
    truth: dict[str, list[QueryTruth]]
    """Evaluation setup name (e.g. "all", or "easy"/"medium"/"hard") -> truth per query."""
    protocol: str = "instance"
    """Name in `retrieval.protocols` of the scoring protocol this dataset uses."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of inputs dropped while loading; reported in the run's output."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def query_keys(self) -> list[str]:
        return [record.key for record in self.queries]

    @property
    def gallery_keys(self) -> list[str]:
        return [record.key for record in self.gallery]

    def query_groups(self) -> dict[str, np.ndarray]:
        """Query indices per non-empty group, for per-subset metrics."""
        groups: dict[str, list[int]] = defaultdict(list)
        for index, record in enumerate(self.queries):
            if record.group:
                groups[record.group].append(index)
        return {name: np.asarray(indices, dtype=np.int64) for name, indices in groups.items()}


def truth_by_instance(
    queries: list[Record], gallery: list[Record], self_matches: list[int] | None = None
) -> list[QueryTruth]:
    """Positives = gallery images holding the query's instance id.

    `self_matches[q]`, when given and >= 0, is the gallery index of the query image itself
    (leave-one-out protocols); it becomes junk so it is neither a hit nor a miss.
    """
    holders: dict[str, set[int]] = defaultdict(set)
    for index, record in enumerate(gallery):
        for instance_id in record.instance_ids:
            holders[instance_id].add(index)
    truths = []
    for q, query in enumerate(queries):
        positives = set().union(*(holders.get(i, set()) for i in query.instance_ids))
        junk: set[int] = set()
        if self_matches is not None and self_matches[q] >= 0:
            junk.add(self_matches[q])
            positives.discard(self_matches[q])
        truths.append(
            QueryTruth(
                positives=np.array(sorted(positives), dtype=np.int64),
                junk=np.array(sorted(junk), dtype=np.int64),
            )
        )
    return truths
