"""What every stage needs: the dataset of a config, and the settings that identify artifacts."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

from retrieval.datasets import load_dataset
from retrieval.records import Dataset

log = logging.getLogger(__name__)

RESERVED_DATASET_KEYS = ("format", "k", "protocol_options")


def plain(node: Any) -> Any:
    """DictConfig/ListConfig -> plain containers (resolved); anything else unchanged."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(node):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:
        pass
    return node


def loader_settings(dataset_cfg: Mapping[str, Any]) -> dict[str, Any]:
    settings = {k: v for k, v in plain(dataset_cfg).items() if k not in RESERVED_DATASET_KEYS}
    if "root" in settings and settings["root"] is not None:
        settings["root"] = str(Path(settings["root"]).expanduser().resolve())
    return settings


@functools.lru_cache(maxsize=4)
def _load(format: str, settings_json: str) -> Dataset:
    dataset = load_dataset(format, **json.loads(settings_json))
    if dataset.skipped:
        log.warning("%s: %d inputs skipped while loading (see meta.json)", dataset.name, len(dataset.skipped))
    return dataset


def dataset_from_config(cfg: Mapping[str, Any]) -> Dataset:
    dataset_cfg = plain(cfg["dataset"])
    return _load(dataset_cfg["format"], json.dumps(loader_settings(dataset_cfg), sort_keys=True))


def dataset_identity(cfg: Mapping[str, Any], dataset: Dataset, split: str) -> dict[str, Any]:
    """What determines a split's images: the adapter, its settings, and the exact file list."""
    records = dataset.queries if split == "queries" else dataset.gallery
    listing = hashlib.sha256("\n".join(str(r.path) for r in records).encode()).hexdigest()[:16]
    return {
        "format": plain(cfg["dataset"])["format"],
        "settings": loader_settings(cfg["dataset"]),
        "split": split,
        "files": listing,
        "count": len(records),
    }


def model_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return plain(cfg["model"])


def model_options(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(family, keyword options) for `retrieval.models.create_model`."""
    settings = dict(model_settings(cfg))
    settings.pop("name", None)
    return settings.pop("family"), settings
