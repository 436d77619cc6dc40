"""Cache keys, atomic writes and meta files: every stage's outputs live here.

An artifact is a folder `<cache>/<stage>/<key>/` where `key` hashes exactly the settings that
determine its content. Beside the data sit `config.yaml` (those settings) and `meta.json`
(counts, timings, versions, skipped inputs). `meta.json` is written last, so its presence
means the artifact is complete.

A cache that cannot be written is still read: complete artifacts are used as they are. The
first artifact that would have to be written stops the run with one line naming the folder
(`NotWritable`), before the work it would have held.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from retrieval.errors import UserError

log = logging.getLogger(__name__)
META = "meta.json"
LOCK = ".lock"
"""The file lock of an artifact's folder, held while it is built."""


class NotWritable(UserError):
    """A folder the run has to write in (the cache, the leaderboard's) that takes no file."""


def writable(folder: Path, setting: str = "paths.cache") -> Path:
    """`folder`, created if missing, once a file could be created in it; NotWritable naming
    the folder that refuses (and `setting`, the option that chose it) otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise not_writable(folder, error, setting) from None
    return folder


def not_writable(folder: Path, error: OSError, setting: str = "paths.cache") -> NotWritable:
    """The error for `folder`, in which `error` stopped a write: it names the nearest folder
    that exists (the one that refused), or the file that stands where a folder should be."""
    nearest = next((path for path in (folder, *folder.parents) if path.exists()), folder)
    if not nearest.is_dir():
        return NotWritable(f"{setting}: {nearest} is a file, not a folder; point {setting} somewhere you can write")
    return NotWritable(f"{setting}: cannot write in {nearest} ({error.strerror or error}); "
                       f"make it writable, or point {setting} somewhere you can write")


def config_key(settings: dict[str, Any], length: int = 12) -> str:
    """Short stable hash of a JSON-able settings dict (key order does not matter)."""
    blob = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it into place only if the block succeeds.

    The sibling is created with mode 0o666 less the umask, as `open()` would create `path`:
    tempfile.mkstemp's 0o600 would make a shared cache unreadable to every other user."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # O_EXCL: never another's file
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return path


def write_json(path: Path, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks (files of any size, in little memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_yaml(path: Path) -> Any:
    """A settings file this package wrote (safe loader: plain types only)."""
    return yaml.safe_load(Path(path).read_text())


def artifact_dir(cache: Path, stage: str, settings: dict[str, Any]) -> Path:
    """Folder of the artifact of `stage` for these settings; writes `config.yaml` on first use."""
    folder = Path(cache) / stage / config_key(settings)
    config_file = folder / "config.yaml"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not config_file.exists():
            write_text(config_file, yaml.safe_dump(json.loads(json.dumps(settings, default=str))))
    except OSError as error:
        raise not_writable(folder, error) from None
    return folder


def is_complete(folder: Path) -> bool:
    return (Path(folder) / META).exists()


def build_once(folder: Path, build: Callable[[Path], None], what: str) -> Path:
    """`folder`, after `build(folder)` has completed it, unless it already was complete.

    A file lock makes concurrent runs (Hydra multirun jobs) build it once: the others wait,
    then reuse it. `build` must finish with `write_meta`, which marks the folder complete."""
    if not is_complete(folder):
        writable(folder)  # a read-only cache fails here, in one line, before the build
        with FileLock(str(Path(folder) / LOCK)):
            if not is_complete(folder):
                build(folder)
                return folder
    log.info("%s: reusing %s", what, folder)
    return folder


def rebuild_hint(path: Path) -> str:
    """What to do about an unreadable file of a complete artifact: it is reused as it is, so
    its folder must go for the stage to build it again."""
    return f"delete {Path(path).parent} and run again to rebuild it"


def read_meta(folder: Path) -> dict[str, Any]:
    return read_json(Path(folder) / META)


def write_meta(folder: Path, **fields: Any) -> Path:
    """Mark an artifact complete, with provenance that a person can read."""
    import numpy
    import torch

    meta = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
        },
        **fields,
    }
    return write_json(Path(folder) / META, meta)
