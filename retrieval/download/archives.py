"""Unpacking downloaded archives safely: no member may write outside its folder or through a
link, and none may unpack to more than a size limit or the free space."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from retrieval.download import DownloadError

MAX_UNPACKED_BYTES = 256 << 30
"""Default limit on what one archive may unpack to (256 GiB): far above any archive listed here
(a revisitop1m part is about 1 GB, a VoxDet part tens of GB), far below what a zip bomb claims.
`--max-unpacked-gb` changes it."""


def _safe_members(names: Iterator[tuple[str, bool]], archive: Path) -> None:
    """Refuse absolute paths, '..' and links: an archive must not write outside its folder."""
    for name, is_link in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if is_link or name.startswith(("/", "\\")) or ".." in parts:
            raise DownloadError(f"{archive.name}: unsafe member {name!r}; not extracted")


def _is_zip_link(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def _size(n_bytes: float) -> str:
    """A byte count the way people read it: 3.2 GiB, 512 KiB, 40 bytes."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{int(n_bytes)} bytes"


def _check_size(archive: Path, total: int, into: Path, max_bytes: int) -> None:
    """Refuse an archive whose members add up to more than `max_bytes`, or than the free space."""
    if total > max_bytes:
        raise DownloadError(
            f"{archive.name} would unpack to {_size(total)}, over the limit of {_size(max_bytes)}; "
            "not extracted. If you trust it, raise the limit with --max-unpacked-gb"
        )
    free = shutil.disk_usage(into).free
    if total > free:
        raise DownloadError(
            f"{archive.name} would unpack to {_size(total)}, but only {_size(free)} are free under "
            f"{into.parent}; free some space or choose another --root"
        )


def unpack(archive: Path, into: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Extract a tar (any compression) or zip archive, detected from content, into `into`;
    the sizes its members declare are checked against `max_bytes` and the free space first."""
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            _safe_members(((m.name, m.issym() or m.islnk()) for m in members), archive)
            regular = [m for m in members if m.isfile() or m.isdir()]
            _check_size(archive, sum(m.size for m in regular if m.isfile()), into, max_bytes)
            tar.extractall(into, members=regular, filter="data")
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            infos = zipped.infolist()
            _safe_members(((i.filename, _is_zip_link(i)) for i in infos), archive)
            _check_size(archive, sum(i.file_size for i in infos), into, max_bytes)
            zipped.extractall(into)
    else:
        raise DownloadError(f"{archive.name} is neither a tar nor a zip archive")


def _merge(source: Path, target: Path, flatten: bool, archive: Path) -> int:
    """Move extracted files into `target` (renames, so each file appears whole); count them.

    Flattening refuses an archive with two files of one name in different folders, before it
    moves anything: one would silently overwrite the other."""
    files = [path for path in sorted(source.rglob("*")) if path.is_file()]
    if flatten:
        first: dict[str, Path] = {}
        for path in files:
            other = first.setdefault(path.name, path)
            if other is not path:
                raise DownloadError(
                    f"{archive.name}: {other.relative_to(source)} and {path.relative_to(source)} would "
                    f"both become {target / path.name} (this set's archives are flattened into one "
                    "folder); not extracted. The archive differs from the published one: unpack it by hand"
                )
    for path in files:
        destination = target / (path.name if flatten else path.relative_to(source))
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, destination)
    return len(files)


def extract(archive: Path, target: Path, flatten: bool, max_bytes: int = MAX_UNPACKED_BYTES) -> int:
    """Unpack into a hidden scratch folder in `target`, then move the files in; return the count."""
    target.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=target))
    try:
        unpack(archive, scratch, max_bytes)
        return _merge(scratch, target, flatten, archive)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
