"""`python -m retrieval.datasets prepare NAME --root DIR`: fetch and lay out a public set.

Sets with an official download are fetched from their publishers, resumed with HTTP Range
after a dropped connection, checked (sha256/md5 where the publisher gives one; otherwise
the size and sha256 seen are recorded in `<root>/.prepare/<name>.json` and checked on every
later run), and archives are unpacked safely (no path escapes, no links) into place. Sets
without one print the manual steps and the layout the loaders expect.

Sources are data (`SOURCES`); `--mirror URL` fetches every file from `URL/<path>` instead,
for a local copy or a test server.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from retrieval.artifacts import atomic_path

CHUNK = 1 << 20
MAX_UNPACKED_BYTES = 256 << 30
"""Default limit on what one archive may unpack to (256 GiB): far above any archive listed here
(a revisitop1m part is about 1 GB, a VoxDet part tens of GB), far below what a zip bomb claims.
`--max-unpacked-gb` changes it."""
TRANSIENT = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)
"""Errors worth retrying: the network, not the file. Of HTTP errors only 5xx are retried."""

# Official addresses, from the revisitop repository's python/download.py
# (filipradenovic/revisitop): face-blurred "-v1" image archives on the Oxford VGG site,
# ground-truth pickles on the revisitop data site, 1M distractors on ptak.felk.cvut.cz.
# VoxDet: the Google Drive files linked from the VoxDet README (Jaraxxus-Me/VoxDet), through
# Drive's direct-download address. That address, the archive format and the folders inside
# could not be checked from here (no network): the format is detected from content and the
# layout verified after unpacking. None of the publishers give checksums.
BASES = {
    "vgg": "https://www.robots.ox.ac.uk/~vgg/data",
    "revisitop": "http://cmp.felk.cvut.cz/revisitop/data",
    "revisitop1m": "http://ptak.felk.cvut.cz/revisitop/revisitop1m",
    "gdrive": "https://drive.usercontent.google.com",
}


@dataclass(frozen=True)
class Remote:
    """One file to fetch. `dest` is a file path, or with `extract` the folder to unpack into."""

    base: str
    path: str
    dest: str
    extract: bool = False
    flatten: bool = False
    """Move every extracted file straight into `dest`, dropping the archive's folders."""
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    filename: str | None = None
    """Local name of the download; default: the last part of `path`."""

    def url(self, mirror: str | None) -> str:
        return f"{(mirror or BASES[self.base]).rstrip('/')}/{self.path}"

    @property
    def local_name(self) -> str:
        return self.filename or PurePosixPath(self.path.split("?")[0]).name


@dataclass(frozen=True)
class Source:
    description: str
    default_root: str
    layout: str
    """The folders and files the loader expects under --root."""
    files: tuple[Remote, ...] = ()
    manual: str = ""
    """Steps for a person, for sets without an official download (or extra steps after)."""
    expect: tuple[str, ...] = ()
    """Paths under --root that must exist once the set is in place."""


def _revisitop(name: str, archives: tuple[str, ...], folder: str) -> Source:
    return Source(
        description=f"Revisited {'Oxford' if name == 'roxford5k' else 'Paris'} ({name}) "
        "images and ground truth",
        default_root="data/revisitop",
        layout=f"{name}/gnd_{name}.pkl\n{name}/jpg/<image>.jpg",
        files=tuple(
            Remote("vgg", f"{folder}/{archive}", f"{name}/jpg", extract=True, flatten=True)
            for archive in archives
        )
        + (Remote("revisitop", f"datasets/{name}/gnd_{name}.pkl", f"{name}/gnd_{name}.pkl"),),
        expect=(f"{name}/gnd_{name}.pkl", f"{name}/jpg"),
    )


SOURCES: dict[str, Source] = {
    "roxford5k": _revisitop("roxford5k", ("oxbuild_images-v1.tgz",), "oxbuildings"),
    "rparis6k": _revisitop("rparis6k", ("paris_1-v1.tgz", "paris_2-v1.tgz"), "parisbuildings"),
    "revisitop1m": Source(
        description="revisitop 1M distractors (100 archives, about 1M images)",
        default_root="data/revisitop",
        layout="revisitop1m/revisitop1m.txt\nrevisitop1m/jpg/<listed path>",
        files=tuple(
            Remote("revisitop1m", f"jpg/revisitop1m.{i}.tar.gz", "revisitop1m/jpg", extract=True)
            for i in range(1, 101)
        )
        + (Remote("revisitop1m", "revisitop1m.txt", "revisitop1m/revisitop1m.txt"),),
        expect=("revisitop1m/revisitop1m.txt", "revisitop1m/jpg"),
    ),
    "voxdet": Source(
        description="VoxDet OWID + RoboTools (the images behind VoxDet-SoIR's anns.pt)",
        default_root="data/voxdet",
        layout="OWID/P1/<cat_id>/{rgb,mask}/\nOWID/P2/images/ + *_annotations.json\n"
        "RoboTools/test/ + scene_gt_coco_all.json\nRoboTools/test_video/<name>_<id>/{rgb,mask}/",
        files=(
            Remote(
                "gdrive",
                "download?id=1sRHaVd4exOmGqFUVT6JKUzEOrDeHmlbT&export=download&confirm=t",
                ".",
                extract=True,
                filename="voxdet_owid.archive",
            ),
            Remote(
                "gdrive",
                "download?id=1kXR-Z-sJlTnWy3HRGWAcV6_IIJgRHbD6&export=download&confirm=t",
                ".",
                extract=True,
                filename="voxdet_robotools.archive",
            ),
        ),
        manual="Then build anns.pt with VoxDet-SoIR's create_dataset.py "
        "(github.com/pihash2k/VoxDet-SoIR): python create_dataset.py --voxdet-root <root> "
        "--output-file <root>/anns.pt. If Drive refuses the download (quota), fetch the "
        "OWID and RoboTools links of the VoxDet README by hand and unpack them into <root>.",
        expect=("OWID/P1", "OWID/P2", "RoboTools/test", "RoboTools/test_video"),
    ),
    "pitts30k": Source(
        description="Pittsburgh 30k test split (UTM file names)",
        default_root="data/pitts30k",
        layout="images/test/database/@<utm_east>@<utm_north>@...@.jpg   (10,000)\n"
        "images/test/queries/@<utm_east>@<utm_north>@...@.jpg    (6,816)",
        manual="Run download_pitts30k.py of gmberton/VPR-datasets-downloader (it fetches the "
        "NetVLAD Pittsburgh files from https://data.ciirc.cvut.cz/public/projects/2015netVLAD/"
        "Pittsburgh250k/ and renames every image to its UTM name; the data's terms are the "
        "NetVLAD authors'), then copy its datasets/pitts30k/ to <root>.",
        expect=("images/test/database", "images/test/queries"),
    ),
    "17places": Source(
        description="17places in the VPR-Bench layout",
        default_root="data/17places",
        layout="ref/<int>.jpg\nquery/<int>.jpg\nground_truth_new.npy",
        manual="Download the VPR-Bench datasets linked from the VPR-Bench README "
        "(github.com/MubarizZaffar/VPR-Bench), a surfdrive share: "
        "https://surfdrive.surf.nl/files/index.php/s/sbZRXzYe3l0v67W, and copy its "
        "17places/ folder to <root>.",
        expect=("ref", "query", "ground_truth_new.npy"),
    ),
    "baidu_mall": Source(
        description="Baidu Mall (IDL dataset, CVPR 2017) in AnyLoc's layout",
        default_root="data/baidu_mall",
        layout="training_images_undistort/<name>.jpg   training_gt/<name>.camera\n"
        "query_images_undistort/<name>.jpg      query_gt/<name>.camera",
        manual="Download IDL_dataset_cvpr17_3852.zip from the link in AnyLoc's "
        "custom_datasets/baidu_dataloader.py, "
        "https://www.dropbox.com/s/4mksiwkxb7t4a8a/IDL_dataset_cvpr17_3852.zip, and unpack "
        "it into <root> (AnyLoc uses `jar xf`, as some unzip versions reject the archive).",
        expect=("training_images_undistort", "training_gt", "query_images_undistort", "query_gt"),
    ),
    "gl3d": Source(
        description="GL3D evaluation set of the MIRorR matchable-image retrieval benchmark",
        default_root="data/gl3d",
        layout="eval_img_list.txt\ngl3d_gt_pairs\n<paths listed in eval_img_list.txt>",
        manual="Follow the GL3D section of the MIRorR README (github.com/hlzz/mirror): unzip "
        "its eval_data.zip (896x896 images, about 3.7 GB; https://s3-ap-southeast-1.amazonaws"
        ".com/awsiostest-deployments-mobilehub-806196172/GL3D/eval_data.zip) into <root>, "
        "and copy data/gl3d/eval_img_list.txt and data/gl3d/gl3d_gt_pairs from that repository.",
        expect=("eval_img_list.txt", "gl3d_gt_pairs"),
    ),
}


class DownloadError(RuntimeError):
    """A file could not be fetched or failed its check; nothing is left in its final place."""


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retrieval.datasets prepare",
        description="Download and lay out a public benchmark set (or print how to get it).",
    )
    parser.add_argument("name", nargs="?", help=f"one of: {', '.join(SOURCES)}")
    parser.add_argument("--root", type=Path, help="where the set goes (default: per set)")
    parser.add_argument("--mirror", help="fetch every file from MIRROR/<path> instead")
    parser.add_argument("--retries", type=int, default=5, help="tries after a dropped connection")
    parser.add_argument("--keep-archives", action="store_true", help="keep archives after unpacking")
    parser.add_argument("--max-unpacked-gb", type=float, default=MAX_UNPACKED_BYTES / 2**30,
                        help="refuse an archive that unpacks to more GiB than this (default: %(default)g)")
    parser.add_argument("--list", action="store_true", help="list the sets and exit")
    return parser


def cli(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.list or not args.name:
        for name, source in SOURCES.items():
            kind = "download" if source.files else "manual"
            print(f"{name:12s} {kind:8s} {source.description}")
        return 0 if args.list else 2
    if args.name not in SOURCES:
        print(f"Unknown set {args.name!r}. Valid: {', '.join(SOURCES)}.", file=sys.stderr)
        return 2
    root = args.root or Path(SOURCES[args.name].default_root)
    try:
        ready = prepare(args.name, root, args.mirror, Fetcher(retries=args.retries),
                        args.keep_archives, max_unpacked_bytes=int(args.max_unpacked_gb * 2**30))
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.name}: {'ready' if ready else 'not complete'} under {root}")
    return 0 if ready else 1
