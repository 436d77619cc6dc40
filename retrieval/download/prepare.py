"""One set into place: each file fetched, checked, unpacked and recorded in the set's manifest,
so that a later run skips what is done and notices a file that changed."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.artifacts import atomic_path
from retrieval.download import DownloadError
from retrieval.download.archives import MAX_UNPACKED_BYTES, extract
from retrieval.download.fetch import Fetcher, verify
from retrieval.download.sources import SOURCES, Remote, Source

@dataclass
class Manifest:
    """What was fetched for a set: per file its size and digests. Written after each file."""

    path: Path
    files: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def open(cls, root: Path, name: str) -> "Manifest":
        path = root / ".prepare" / f"{name}.json"
        files = json.loads(path.read_text())["files"] if path.exists() else {}
        return cls(path, files)

    def record(self, key: str, entry: dict) -> None:
        self.files[key] = entry
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps({"files": self.files}, indent=2, sort_keys=True) + "\n")


def _done(remote: Remote, root: Path, manifest: Manifest) -> bool:
    entry = manifest.files.get(remote.path)
    return bool(entry and entry.get("complete") and (root / remote.dest).exists())


def fetch_one(remote: Remote, root: Path, manifest: Manifest, fetcher: Fetcher, mirror: str | None,
              keep_archives: bool = False, max_unpacked_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Download, check and put one file in place; archives are unpacked and then removed."""
    downloads = root / ".prepare" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    final = downloads / remote.local_name if remote.extract else root / remote.dest
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    recorded = manifest.files.get(remote.path)
    fresh = not final.exists()
    if fresh:
        fetcher.log(f"fetching {remote.url(mirror)}")
        fetcher.fetch(remote.url(mirror), part)
    checked = part if fresh else final
    try:
        found = verify(checked, remote, recorded)
    except DownloadError:
        checked.unlink()
        raise
    if fresh:
        os.replace(part, final)
    if remote.extract:
        count = extract(final, root / remote.dest, remote.flatten, max_unpacked_bytes)
        fetcher.log(f"  unpacked {count} files into {root / remote.dest}")
        if not keep_archives:
            final.unlink()
    manifest.record(remote.path, {**found, "complete": True})


def prepare(name: str, root: Path, mirror: str | None = None, fetcher: Fetcher | None = None,
            keep_archives: bool = False, sources: dict[str, Source] | None = None,
            max_unpacked_bytes: int = MAX_UNPACKED_BYTES) -> bool:
    """Fetch every file of set `name` into `root`; True when its expected layout is present.
    An archive that would unpack to more than `max_unpacked_bytes` is refused."""
    source = (sources or SOURCES)[name]
    fetcher = fetcher or Fetcher()
    manifest = Manifest.open(root, name)
    for remote in source.files:
        if _done(remote, root, manifest):
            fetcher.log(f"have {remote.dest} ({remote.local_name})")
            continue
        fetch_one(remote, root, manifest, fetcher, mirror, keep_archives, max_unpacked_bytes)
    missing = [p for p in source.expect if not (root / p).exists()]
    if source.manual or missing:
        print(describe(name, source, root), file=sys.stderr)
    if missing:
        print(f"Still missing under {root}: {', '.join(missing)}", file=sys.stderr)
    return not missing


def describe(name: str, source: Source, root: Path) -> str:
    """The set's manual steps (if any) and the layout its loader expects, under `root`."""
    lines = [f"{name}: {source.description}"]
    if source.manual:
        lines.append(source.manual.replace("<root>", str(root)))
    lines.append("Expected layout:")
    lines += [f"  {root}/{line}" for line in source.layout.splitlines()]
    return "\n".join(lines)
