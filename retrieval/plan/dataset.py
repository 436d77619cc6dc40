"""The dataset a run reads: the configured format's records, then the queries and truth of
`query.file` when there is one, then `dataset.distractors` after the gallery (appended last,
so that no query file can name one as a positive)."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrieval.datasets import load_dataset
from retrieval.datasets.distractors import list_distractors, with_distractors
from retrieval.queries.files import with_query_file
from retrieval.records import Dataset

log = logging.getLogger(__name__)

RUN_KEYS = ("format", "k", "protocol_options", "distractors")
"""Keys of the `dataset` node that are not the format's loader options."""


def loader_settings(node: Mapping[str, Any]) -> dict[str, Any]:
    """The options the format's loader takes: the node without the keys of the run, its root absolute."""
    settings = {key: value for key, value in node.items() if key not in RUN_KEYS}
    if settings.get("root") is not None:
        settings["root"] = str(Path(settings["root"]).expanduser().resolve())
    return settings


def run_dataset(node: Mapping[str, Any], query_file: str | None = None) -> Dataset:
    """The dataset of a `dataset` config node, with the query file's queries and truth and the
    distractors' images; the distractors are listed first, so a wrong source fails before the
    dataset's own files are walked."""
    settings = loader_settings(node)
    distractors = node.get("distractors")
    listing = list_distractors(distractors, settings.get("root")) if distractors else None
    dataset = load_dataset(node["format"], **settings)
    if dataset.skipped:
        log.warning("%s: %d inputs skipped while loading (see metrics.json)", dataset.name, len(dataset.skipped))
    if query_file:
        dataset = with_query_file(dataset, Path(query_file).expanduser().resolve())
    return with_distractors(dataset, listing) if listing else dataset
