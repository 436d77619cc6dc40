"""HTTP downloads that survive a dropped connection (resumed with Range, bounded retries) and
the checks a fetched file must pass (size and digests)."""
from __future__ import annotations

import hashlib
import http.client
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from retrieval.download import DownloadError
from retrieval.download.sources import Remote

CHUNK = 1 << 20
TRANSIENT = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)
"""Errors worth retrying: the network, not the file. Of HTTP errors only 5xx are retried."""


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _retryable(error: Exception) -> bool:
    """A dropped or refused connection, or a server-side (5xx) failure; not a 404."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500
    return isinstance(error, TRANSIENT)


@dataclass
class Fetcher:
    """HTTP GET with resume (Range) and bounded retries on a dropped connection."""

    retries: int = 5
    timeout: float = 60.0
    backoff: float = 2.0
    log: Callable[[str], None] = _log

    def fetch(self, url: str, part: Path) -> Path:
        """Complete `part` from `url`, resuming whatever bytes it already holds."""
        attempt = 0
        while True:
            try:
                self._fetch_once(url, part)
                return part
            except TRANSIENT as error:
                attempt += 1
                if not _retryable(error) or attempt > self.retries:
                    kept = " (partial file kept: run again to resume)" if part.exists() else ""
                    raise DownloadError(f"{url}: {error} after {attempt} tries{kept}") from error
                have = part.stat().st_size if part.exists() else 0
                self.log(f"  connection lost ({error}); resuming at byte {have}")
                time.sleep(self.backoff * 2 ** (attempt - 1))

    def _fetch_once(self, url: str, part: Path) -> None:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                              timeout=self.timeout)
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:
                part.unlink()  # our partial file is longer than the remote one: start over
                raise ConnectionResetError("range not satisfiable; restarting") from error
            raise
        with response:
            _refuse_web_page(response, url, part)
            length = _length(response)
            if response.status == 206:
                if _range_start(response) != offset:
                    part.unlink()
                    raise ConnectionResetError("server resumed at another byte; restarting")
                mode, expected = "ab", offset + length if length >= 0 else -1
            else:
                mode, expected = "wb", length
            with open(part, mode) as handle:
                shutil.copyfileobj(response, handle, CHUNK)
        size = part.stat().st_size
        if expected >= 0 and size != expected:
            raise ConnectionResetError(f"got {size} of {expected} bytes")


def _length(response: http.client.HTTPResponse) -> int:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None else -1


def _range_start(response: http.client.HTTPResponse) -> int:
    """First byte of a 206 answer (`Content-Range: bytes START-END/TOTAL`)."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def _refuse_web_page(response: http.client.HTTPResponse, url: str, part: Path) -> None:
    """Hosts such as Drive answer a quota or sign-in problem with an HTML page, status 200."""
    kind = response.headers.get("Content-Type", "")
    if kind.startswith("text/html") and not part.name.removesuffix(".part").endswith(".html"):
        raise DownloadError(
            f"{url} returned a web page instead of the file (quota, sign-in or a moved file); "
            "download it by hand and unpack it as the manual steps say"
        )


def file_digests(path: Path) -> dict[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            sha256.update(block)
            md5.update(block)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def verify(path: Path, remote: Remote, recorded: dict | None) -> dict:
    """Size and digests of `path`, checked against the publisher's and any earlier record."""
    found = {"size": path.stat().st_size, **file_digests(path)}
    wanted = {"size": remote.size, "sha256": remote.sha256, "md5": remote.md5}
    for reference in (wanted, recorded or {}):
        for key in ("size", "sha256", "md5"):
            if reference.get(key) is not None and reference[key] != found[key]:
                raise DownloadError(
                    f"{remote.local_name}: {key} mismatch (expected {reference[key]}, got "
                    f"{found[key]}); the file was deleted: run the command again to re-fetch it"
                )
    return found
