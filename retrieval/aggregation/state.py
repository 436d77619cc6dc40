"""What a fit learns (a vocabulary, a whitening), on disk and keyed by what it was learnt from.

A state file is one `.npz`: its arrays, the kind of state, the settings of the fit and its
digest, a short hash of the sample's values and those settings. Callers key a cache by the
digest of the sample they would fit on (`sample_digest`) and reuse a state whose digest
matches: the same sample and settings give the same state, a changed one is refitted.
Files are written atomically, so an interrupted fit never leaves a state that loads.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval.artifacts import atomic_path, config_key

UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def as_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """A float32 C-contiguous host copy (or view) of a tensor or array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    return np.ascontiguousarray(values, dtype=np.float32)


def sample_digest(sample: np.ndarray | torch.Tensor, settings: dict[str, Any]) -> str:
    """Short stable hash of a sample's float32 values and shape, and of the fit's settings."""
    values = as_numpy(sample)
    return config_key({"sample": hashlib.sha256(values.tobytes()).hexdigest(), "shape": list(values.shape), **settings})


def save_state(path: Path, kind: str, settings: dict[str, Any], digest: str, **arrays: np.ndarray) -> Path:
    """Write a state of `kind` atomically to `path` (a .npz file)."""
    header = json.dumps({"kind": kind, "settings": settings, "digest": digest}, sort_keys=True)
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, header=np.array(header), **arrays)
    return Path(path)


def load_state(path: Path, kind: str, names: tuple[str, ...]) -> tuple[dict[str, Any], str, dict[str, np.ndarray]]:
    """(settings, digest, arrays) of the state of `kind` in `path`; ValueError naming the file if
    it is not one (unreadable, another kind, arrays missing)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {name: data[name] for name in names} if header.get("kind") == kind else {}
    except UNREADABLE as error:
        raise ValueError(f"{path} is not a readable {kind} state ({type(error).__name__}: {error}); delete it to refit") from error
    if header.get("kind") != kind:
        raise ValueError(f"{path} holds a {header.get('kind')} state, not a {kind}")
    return header["settings"], header["digest"], arrays
