"""`retrieval.download` (`prepare`): downloads from a local HTTP server, resume, checksums, safe extraction."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from omegaconf import OmegaConf

from retrieval.datasets import load_dataset
from retrieval.download import DownloadError
from retrieval.download.cli import cli
from retrieval.download.fetch import Fetcher
from retrieval.download.prepare import prepare
from retrieval.download.sources import SOURCES, Remote, Source
from tests.conftest import REPO
from tests.fixtures_protocols import make_revisitop


class Publisher:
    """A local HTTP server: serves `files`, honours Range, drops transfers on request.

    `drops[path]` lists byte offsets: each request for `path` takes the next one and closes the
    connection there. Paths in `ignore_range` are always sent whole, with status 200.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.drops: dict[str, list[int]] = {}
        self.ignore_range: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        publisher = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path.lstrip("/")
                wanted = self.headers.get("Range")
                publisher.requests.append((path, wanted))
                if path not in publisher.files:
                    self.send_error(404)
                    return
                body = publisher.files[path]
                start = 0
                if wanted and path not in publisher.ignore_range:
                    start = int(wanted.split("=")[1].split("-")[0])
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Type", publisher.content_types.get(path, "application/octet-stream"))
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cuts = publisher.drops.get(path)
                self.wfile.write(body[start : cuts.pop(0)] if cuts else body[start:])
                self.close_connection = True

        return Handler

    def __enter__(self) -> "Publisher":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture()
def publisher():
    with Publisher() as server:
        yield server


def tgz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def quiet() -> Fetcher:
    return Fetcher(retries=2, timeout=5, backoff=0, log=lambda message: None)


def publish_roxford(publisher: Publisher, tmp_path: Path) -> dict:
    """The mini Oxford set, packed the way the official files come (images in a subfolder)."""
    gnd = make_revisitop(tmp_path / "original", "roxford5k")
    folder = tmp_path / "original" / "roxford5k"
    images = {f"oxbuild_images/{p.name}": p.read_bytes() for p in sorted((folder / "jpg").iterdir())}
    publisher.files["oxbuildings/oxbuild_images-v1.tgz"] = tgz(images)
    publisher.files["datasets/roxford5k/gnd_roxford5k.pkl"] = (folder / "gnd_roxford5k.pkl").read_bytes()
    return gnd


def test_registry_has_the_official_revisitop_addresses():
    urls = {remote.url(None) for name in ("roxford5k", "rparis6k") for remote in SOURCES[name].files}
    assert "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images-v1.tgz" in urls
    assert "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_2-v1.tgz" in urls
    assert "http://cmp.felk.cvut.cz/revisitop/data/datasets/rparis6k/gnd_rparis6k.pkl" in urls
    distractors = [remote.url(None) for remote in SOURCES["revisitop1m"].files]
    assert len(distractors) == 101
    assert distractors[99] == "http://ptak.felk.cvut.cz/revisitop/revisitop1m/jpg/revisitop1m.100.tar.gz"


PRESETS = {
    "roxford5k": ("roxford5k",),
    "rparis6k": ("rparis6k",),
    "revisitop1m": ("roxford5k", "rparis6k"),  # dataset.distractors=revisitop1m, found under their root
    "voxdet": ("robotools", "owid"),
    "pitts30k": ("pitts30k",),
    "17places": ("17places",),
    "baidu_mall": ("baidu_mall",),
    "gl3d": ("gl3d",),
}
"""The dataset presets (conf/dataset/) that read each set `prepare` knows."""


def test_every_set_lands_where_its_presets_read_it():
    """`prepare voxdet` wrote data/voxdet while the robotools and owid presets read data/VoxDet."""
    assert set(PRESETS) == set(SOURCES)
    data = OmegaConf.load(REPO / "conf" / "config.yaml").paths.data
    for name, presets in PRESETS.items():
        for preset in presets:
            root = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "dataset" / f"{preset}.yaml"))["root"]
            assert root.replace("${paths.data}", data) == SOURCES[name].default_root, (name, preset)


def test_cli_prepares_roxford_from_mirror_and_loader_reads_it(publisher, tmp_path, capsys):
    gnd = publish_roxford(publisher, tmp_path)
    root = tmp_path / "data"
    assert cli(["roxford5k", "--root", str(root), "--mirror", publisher.url]) == 0
    assert "ready" in capsys.readouterr().out
    dataset = load_dataset("revisitop", root=root, name="roxford5k")
    assert dataset.gallery_keys == [f"jpg/{stem}.jpg" for stem in gnd["imlist"]]  # flattened
    assert dataset.truth["medium"][0].positives.tolist() == [0, 2, 5]
    manifest = json.loads((root / ".prepare" / "roxford5k.json").read_text())["files"]
    archive = publisher.files["oxbuildings/oxbuild_images-v1.tgz"]
    entry = manifest["oxbuildings/oxbuild_images-v1.tgz"]
    assert entry["size"] == len(archive) and entry["sha256"] == hashlib.sha256(archive).hexdigest()
    assert not list((root / ".prepare" / "downloads").iterdir())  # archive removed after unpacking
    assert not [p for p in (root / "roxford5k" / "jpg").iterdir() if p.name.startswith(".")]

    publisher.requests.clear()
    assert cli(["roxford5k", "--root", str(root), "--mirror", publisher.url]) == 0
    assert publisher.requests == []  # a finished set is not fetched again


def test_dropped_connection_resumes_with_range(publisher, tmp_path):
    publish_roxford(publisher, tmp_path)
    archive = publisher.files["oxbuildings/oxbuild_images-v1.tgz"]
    cut = len(archive) // 3
    publisher.drops["oxbuildings/oxbuild_images-v1.tgz"] = [cut]
    root = tmp_path / "data"
    assert prepare("roxford5k", root, publisher.url, quiet())
    tries = [r for r in publisher.requests if r[0] == "oxbuildings/oxbuild_images-v1.tgz"]
    assert tries == [("oxbuildings/oxbuild_images-v1.tgz", None),
                     ("oxbuildings/oxbuild_images-v1.tgz", f"bytes={cut}-")]
    manifest = json.loads((root / ".prepare" / "roxford5k.json").read_text())["files"]
    assert manifest["oxbuildings/oxbuild_images-v1.tgz"]["sha256"] == hashlib.sha256(archive).hexdigest()
    assert len(list((root / "roxford5k" / "jpg").glob("*.jpg"))) == 13


def test_server_ignoring_range_restarts_the_file(publisher, tmp_path):
    data = bytes(range(256)) * 64
    publisher.files["blob.bin"] = data
    publisher.drops["blob.bin"] = [1000]
    publisher.ignore_range.add("blob.bin")
    remote = Remote("unused", "blob.bin", "blob.bin")
    assert prepare("mini", tmp_path, publisher.url, quiet(), sources=one_file_source(remote))
    assert publisher.requests == [("blob.bin", None), ("blob.bin", "bytes=1000-")]
    assert (tmp_path / "blob.bin").read_bytes() == data


def test_retries_are_bounded_and_a_later_run_resumes(publisher, tmp_path):
    data = bytes(range(256)) * 64
    publisher.files["blob.bin"] = data
    publisher.drops["blob.bin"] = [100, 200, 300]  # three drops; quiet() allows two retries
    remote = Remote("unused", "blob.bin", "blob.bin", sha256=hashlib.sha256(data).hexdigest())
    sources = one_file_source(remote)
    with pytest.raises(DownloadError, match="after 3 tries .partial file kept"):
        prepare("mini", tmp_path, publisher.url, quiet(), sources=sources)
    assert not (tmp_path / "blob.bin").exists()
    assert (tmp_path / "blob.bin.part").stat().st_size == 300
    assert prepare("mini", tmp_path, publisher.url, quiet(), sources=sources)
    assert publisher.requests[-1] == ("blob.bin", "bytes=300-")
    assert (tmp_path / "blob.bin").read_bytes() == data and not (tmp_path / "blob.bin.part").exists()


def one_file_source(remote: Remote) -> dict[str, Source]:
    return {"mini": Source("a test set", "unused", "x", files=(remote,), expect=(remote.dest,))}


def test_checksum_mismatch_is_a_clear_error_and_nothing_is_kept(publisher, tmp_path):
    good = tgz({"a.txt": b"hello"})
    publisher.files["pack.tgz"] = good[:-8] + b"corrupt!"
    remote = Remote("unused", "pack.tgz", "mini", extract=True, sha256=hashlib.sha256(good).hexdigest())
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        prepare("mini", root, publisher.url, quiet(), sources=one_file_source(remote))
    downloads = root / ".prepare" / "downloads"
    assert not (downloads / "pack.tgz").exists() and not (downloads / "pack.tgz.part").exists()
    assert not (root / "mini").exists()
    assert not (root / ".prepare" / "mini.json").exists()

    publisher.files["pack.tgz"] = good  # the publisher fixes it: the next run succeeds
    assert prepare("mini", root, publisher.url, quiet(), sources=one_file_source(remote))
    assert (root / "mini" / "a.txt").read_bytes() == b"hello"


def test_cli_reports_checksum_error(publisher, tmp_path, capsys, monkeypatch):
    publisher.files["f.bin"] = b"abc"
    remote = Remote("unused", "f.bin", "f.bin", md5="0" * 32)
    monkeypatch.setitem(SOURCES, "mini", one_file_source(remote)["mini"])
    assert cli(["mini", "--root", str(tmp_path), "--mirror", publisher.url, "--retries", "0"]) == 1
    assert "md5 mismatch" in capsys.readouterr().err
    assert not (tmp_path / "f.bin").exists()


@pytest.mark.parametrize(
    "archive",
    [
        tgz({"ok.txt": b"1", "../escape.txt": b"2"}),
        tgz({"/abs.txt": b"3"}),
        zipped({"ok.txt": b"1", "../../escape.txt": b"2"}),
    ],
    ids=["tar-parent", "tar-absolute", "zip-parent"],
)
def test_archives_cannot_write_outside_their_folder(publisher, tmp_path, archive):
    publisher.files["evil.pack"] = archive
    remote = Remote("unused", "evil.pack", "sets/mini", extract=True)
    root = tmp_path / "deep" / "data"
    with pytest.raises(DownloadError, match="unsafe member"):
        prepare("mini", root, publisher.url, quiet(), sources=one_file_source(remote))
    assert not list(tmp_path.rglob("escape.txt")) and not list(tmp_path.rglob("ok.txt"))


def test_symlink_member_is_refused(publisher, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    publisher.files["link.tar"] = buffer.getvalue()
    remote = Remote("unused", "link.tar", "mini", extract=True)
    with pytest.raises(DownloadError, match="unsafe member"):
        prepare("mini", tmp_path, publisher.url, quiet(), sources=one_file_source(remote))


def test_zip_keeps_folders_and_missing_file_is_not_retried(publisher, tmp_path):
    publisher.files["set.zip"] = zipped({"top/a/b.txt": b"b", "top/c.txt": b"c"})
    remote = Remote("unused", "set.zip", "mini", extract=True)
    assert prepare("mini", tmp_path, publisher.url, quiet(), sources=one_file_source(remote))
    assert (tmp_path / "mini" / "top" / "a" / "b.txt").read_bytes() == b"b"

    publisher.requests.clear()
    gone = Remote("unused", "nothing.zip", "none", extract=True)
    with pytest.raises(DownloadError, match="404"):
        prepare("gone", tmp_path, publisher.url, quiet(), sources={"gone": one_file_source(gone)["mini"]})
    assert len(publisher.requests) == 1


def test_web_page_instead_of_file_is_refused(publisher, tmp_path):
    publisher.files["big.zip"] = b"<html>quota exceeded</html>"
    publisher.content_types["big.zip"] = "text/html; charset=utf-8"
    remote = Remote("unused", "big.zip", "mini", extract=True)
    with pytest.raises(DownloadError, match="web page"):
        prepare("mini", tmp_path, publisher.url, quiet(), sources=one_file_source(remote))


def test_manual_sets_print_steps_and_layout(tmp_path, capsys):
    assert cli(["gl3d", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "github.com/hlzz/mirror" in err and f"{tmp_path}/eval_img_list.txt" in err
    assert "Still missing" in err
    for name in ("eval_img_list.txt", "gl3d_gt_pairs"):
        (tmp_path / name).write_text("")
    assert cli(["gl3d", "--root", str(tmp_path)]) == 0
    for name in ("pitts30k", "17places", "baidu_mall"):
        assert cli([name, "--root", str(tmp_path / name)]) == 1
        assert "Expected layout" in capsys.readouterr().err


def test_list_and_unknown_name(capsys):
    assert cli(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("roxford5k", "revisitop1m", "voxdet", "gl3d"))
    assert cli(["nope"]) == 2
    assert "Valid:" in capsys.readouterr().err


def test_the_dataset_tools_list_the_presets_users_pass(capsys):
    """`list` names what `dataset=` takes (the presets), each with its format, where it reads
    its data and what it is, then the formats their `format:` names."""
    from retrieval.datasets.__main__ import main

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    presets = sorted(path.stem for path in (REPO / "conf" / "dataset").glob("*.yaml"))
    section = lines[2:lines.index("")]  # after the title and the column names
    rows = {line.split()[0]: line for line in section if not line.startswith("      ")}
    assert lines[0] == "Dataset presets: python evaluate.py dataset=NAME (conf/dataset/NAME.yaml)" and list(rows) == presets
    assert rows["roxford5k"].split() == ["roxford5k", "revisitop", "data/revisitop"]
    assert rows["folder"].split(None, 2) == ["folder", "folder", "dataset.root=<folder> (required)"]
    assert rows["demo"].split(None, 2) == ["demo", "demo", "built in"]
    below = lines[lines.index(rows["roxford5k"]) + 1]
    assert below == "      Revisited Oxford (roxford5k): 4993 database images, 70 queries; Easy/Medium/Hard setups."
    formats = lines[lines.index("") + 2:]
    assert [line.split()[0] for line in formats] == ["anns", "demo", "folder", "gl3d", "patterncom", "revisitop", "vpr"]


def test_the_dataset_tools_help_describes_each_command(capsys):
    from retrieval.datasets.__main__ import COMMANDS, main

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "Dataset tools: which datasets the pipeline reads" in out
    for name in ("list", "compose", "prepare"):
        assert f"{name} " in out and COMMANDS[name].split()[0] in out
    with pytest.raises(SystemExit) as stop:
        main([])
    assert stop.value.code == 2 and "required: COMMAND" in capsys.readouterr().err
    assert main(["prepare", "--list"]) == 0 and "roxford5k" in capsys.readouterr().out  # options pass through


def test_vpr_bench_fixture_round_trips_through_zip(publisher, tmp_path):
    """A manual-style set served as a zip still lands in the layout the loader reads."""
    from tests.fixtures_protocols import make_vpr_bench

    table = make_vpr_bench(tmp_path / "src")
    members = {p.relative_to(tmp_path / "src").as_posix(): p.read_bytes()
               for p in sorted((tmp_path / "src").rglob("*")) if p.is_file()}
    publisher.files["17places.zip"] = zipped(members)
    remote = Remote("unused", "17places.zip", "17places", extract=True)
    root = tmp_path / "data"
    assert prepare("mini", root, publisher.url, quiet(), sources=one_file_source(remote))
    dataset = load_dataset("vpr", root=root / "17places", queries="query", database="ref",
                           positives="vpr_bench")
    assert dataset.truth["all"][0].positives.tolist() == sorted(table[0, 1])
    assert np.array_equal(dataset.truth["all"][4].positives, [11])


def test_flattening_refuses_two_members_of_one_name(publisher, tmp_path):
    """Issue 16: flattening used to let the second file silently replace the first."""
    publisher.files["pack.tgz"] = tgz({"part1/img.jpg": b"first", "part2/img.jpg": b"second", "part2/b.jpg": b"b"})
    remote = Remote("unused", "pack.tgz", "mini/jpg", extract=True, flatten=True)
    clash = r"pack\.tgz: part1/img\.jpg and part2/img\.jpg would both become .*img\.jpg"
    with pytest.raises(DownloadError, match=clash):
        prepare("mini", tmp_path, publisher.url, quiet(), sources=one_file_source(remote))
    assert not [p for p in (tmp_path / "mini" / "jpg").rglob("*") if p.is_file()]


@pytest.mark.parametrize("pack", [tgz, zipped], ids=["tar", "zip"])
def test_archive_over_the_unpacked_size_limit_is_refused(publisher, tmp_path, pack):
    publisher.files["big.pack"] = pack({"a.bin": bytes(3000), "b.bin": bytes(3000)})  # compresses to little
    remote = Remote("unused", "big.pack", "mini", extract=True)
    limit = r"big\.pack would unpack to 5\.86 KiB, over the limit of 4\.88 KiB; .*--max-unpacked-gb"
    with pytest.raises(DownloadError, match=limit):
        prepare("mini", tmp_path, publisher.url, quiet(), sources=one_file_source(remote), max_unpacked_bytes=5000)
    assert not list((tmp_path / "mini").rglob("*.bin"))
    assert prepare("mini", tmp_path, publisher.url, quiet(), sources=one_file_source(remote), max_unpacked_bytes=6000)
    assert (tmp_path / "mini" / "b.bin").stat().st_size == 3000
