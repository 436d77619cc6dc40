"""Hostile and broken inputs (issue 16): each test builds the bad input and checks that it is a
clear error or a counted skip, never a crash, a hang, or code run from a data file."""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval import masks, pipeline
from retrieval.artifacts import NotWritable, write_text
from retrieval.cli import is_user_error
from retrieval.datasets import load_dataset
from retrieval.scenes import folder_backgrounds
from retrieval.datasets.safe_pickle import UnsafePickleError
from retrieval.errors import UnreadableFile
from retrieval.images import ImageError, load_rgb
from retrieval.search.index import build_row_index
from retrieval.leaderboard import append_row, read_rows
from retrieval.queries import QueryError, get_query_mode
from retrieval.queries.files import with_query_file
from retrieval.ranking import Ranking
from retrieval.records import Instance
from retrieval.report.inputs import load_run
from retrieval.report.thumbnails import Request, make_thumbnails
from tests.fixtures_protocols import make_revisitop, make_vpr_bench, make_vpr_utm


def guarded(call: Callable[[], Any], fifo: Path, seconds: float = 20.0) -> Any:
    """`call()`, failing instead of hanging the suite if it blocks on opening `fifo`: after
    `seconds` the FIFO's write end is opened once, which releases a reader stuck on it."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the test thread below
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"reading {fifo} blocked for {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def photo(path: Path, size: tuple[int, int] = (40, 30), **save: Any) -> Path:
    """A small image with distinct halves, in the format its suffix names."""
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((30, 30, 200), (size[0] // 2, 0, size[0], size[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height and whose data is one empty chunk: what a
    decompression bomb looks like before it is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


# Item 2: a malformed EXIF block.


def test_malformed_exif_is_the_images_skip(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate, so the EXIF block is rewritten after the transpose
    exif[0x010F] = "Make"
    raw = bytearray(exif.tobytes())
    entry = raw.index(b"\x01\x0f", 8)  # the Make tag (big-endian TIFF header)
    raw[entry + 2 : entry + 8] = struct.pack(">HI", 11, 1)  # stored as one FLOAT, not ASCII
    path = photo(tmp_path / "odd_exif.jpg", exif=bytes(raw))
    with pytest.raises(ImageError, match=r"cannot decode .*odd_exif\.jpg: AttributeError"):
        load_rgb(path)


# Item 4: FIFOs, devices and folders named like images.


def test_fifo_and_folder_named_like_images_say_what_they_are(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match=r"pipe\.jpg is a FIFO \(named pipe\); only regular files"):
        guarded(lambda: load_rgb(fifo), fifo)
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageError, match=r"folder\.jpg is a directory"):
        load_rgb(tmp_path / "folder.jpg")
    with pytest.raises(ImageError, match="is a character device"):
        load_rgb("/dev/null")
    with pytest.raises(ImageError, match="missing file"):
        load_rgb(tmp_path / "nothing.jpg")


def test_report_thumbnail_of_a_fifo_is_skipped_not_awaited(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    real = photo(tmp_path / "real.jpg")
    requests = {Request(str(fifo)), Request(str(real), box=(1, 1, 10, 10))}
    made = guarded(lambda: make_thumbnails(requests, tmp_path / "thumbs", workers=1), fifo)
    assert made[Request(str(fifo))] is None
    assert (tmp_path / "thumbs" / made[Request(str(real), box=(1, 1, 10, 10))]).is_file()


def test_mask_fifo_is_an_unreadable_mask(tmp_path: Path) -> None:
    fifo = tmp_path / "mask.png"
    os.mkfifo(fifo)
    with pytest.raises(masks.MaskFileError, match=r"unreadable mask: .*mask\.png is a FIFO"):
        guarded(lambda: masks.decode(fifo), fifo)


# Item 8a: decompression bombs and the pixel cap.


def test_pixel_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = png_header_only(tmp_path / "bomb.png", 17000, 17000)
    assert bomb.stat().st_size < 100
    with pytest.raises(ImageError, match=r"17000x17000 = 289,000,000 pixels, over max_pixels=100,000,000"):
        load_rgb(bomb)
    with pytest.raises(ImageError, match=r"extract\.max_pixels"):
        load_rgb(bomb)


def test_max_pixels_is_a_keyword_and_max_side_decodes_jpegs_reduced(tmp_path: Path) -> None:
    jpeg = photo(tmp_path / "big.jpg", size=(800, 600), quality=95)
    png = photo(tmp_path / "big.png", size=(800, 600))
    with pytest.raises(ImageError, match="800x600 = 480,000 pixels, over max_pixels=100,000"):
        load_rgb(jpeg, max_pixels=100_000)
    reduced = load_rgb(jpeg, max_pixels=100_000, max_side=200)  # decoded at 1/4 scale
    assert reduced.shape == (150, 200, 3)
    assert reduced[75, 20, 0] > 150 and reduced[75, 180, 2] > 150  # red left, blue right
    with pytest.raises(ImageError, match="over max_pixels"):
        load_rgb(png, max_pixels=100_000, max_side=200)  # PNG has no reduced decode
    assert load_rgb(jpeg, max_side=200).shape == (150, 200, 3)
    assert load_rgb(jpeg).shape == (600, 800, 3)


# Item 3: a mask file that is not an image.


def test_folder_mask_that_is_not_an_image_is_a_counted_skip(folder_root: Path) -> None:
    broken = folder_root / "masks" / "cup1" / "cup1-045-180.png"
    broken.write_text("not an image")
    dataset = load_dataset("folder", root=folder_root)
    ((path, reason),) = dataset.skipped
    assert path == "masks/cup1/cup1-045-180.png"
    assert "unreadable mask" in reason and "query=box: the whole image" in reason
    record = next(r for r in dataset.queries if r.key == "images/cup1/cup1-045-180.png")
    assert record.instances[0].mask is None
    image = load_rgb(record.path)
    np.testing.assert_array_equal(get_query_mode("box")(image, record.instances[0]), image)
    with pytest.raises(QueryError, match="needs a mask"):
        get_query_mode("mask")(image, record.instances[0])
    others = [r for r in dataset.gallery if r.key != record.key]
    assert all(r.instances[0].mask is not None for r in others)


def test_unreadable_mask_at_query_time_falls_back_in_box_mode(tmp_path: Path) -> None:
    """A mask that breaks after loading: box mode uses the whole image, mask mode skips."""
    broken = tmp_path / "mask.png"
    broken.write_text("not an image")
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    instance = Instance("a", mask=str(broken))
    np.testing.assert_array_equal(get_query_mode("box")(image, instance), image)
    np.testing.assert_array_equal(get_query_mode("square")(image, instance), image)
    with pytest.raises(QueryError, match=r"unreadable mask: cannot decode .*mask\.png"):
        get_query_mode("mask")(image, instance)
    small = tmp_path / "small.png"
    Image.fromarray(np.full((5, 5), 255, dtype=np.uint8)).save(small)
    with pytest.raises(QueryError, match="unusable mask: mask is 5x5, expected 20x30"):
        get_query_mode("mask")(image, Instance("a", mask=str(small)))


# Item 8j and item 4 in folder datasets: hidden entries and non-regular files.


def test_folder_ignores_hidden_entries_and_skips_non_regular_files(folder_root: Path) -> None:
    photo(folder_root / "images" / ".hidden" / "secret.png")
    photo(folder_root / "images" / "apple1" / "._apple1-000-000.png")  # a macOS resource fork
    photo(folder_root / "masks" / "apple1" / ".apple1-045-180.png")
    os.mkfifo(folder_root / "images" / "cup2" / "pipe.png")
    (folder_root / "images" / "cup2" / "folder.jpg").mkdir()
    dataset = load_dataset("folder", root=folder_root)
    assert len(dataset.gallery) == 12
    assert {i for r in dataset.gallery for i in r.instance_ids} == {"apple1", "apple2", "cup1", "cup2"}
    assert sorted(dataset.skipped) == [
        ("images/cup2/folder.jpg", "is a directory, not an image file"),
        ("images/cup2/pipe.png", "is a FIFO (named pipe), not an image file"),
    ]


# Item 8c: an inverted box.


@pytest.mark.parametrize("mode", ["box", "square", "mask"])
def test_inverted_box_is_called_inverted(mode: str) -> None:
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:10, 5:10] = True
    with pytest.raises(QueryError, match=r"box \(30, 5, 10, 25\) is inverted"):
        get_query_mode(mode)(image, Instance("a", box=(30, 5, 10, 25), mask=mask))
    with pytest.raises(QueryError, match="non-finite"):
        get_query_mode(mode)(image, Instance("a", box=(1, 2, float("nan"), 25), mask=mask))


# Item 1: pickled ground truth must not run code.


class Payload:
    """Unpickling this runs `touch <marker>`: the file appearing means code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_vpr_bench_ground_truth_payload_is_refused(tmp_path: Path) -> None:
    make_vpr_bench(tmp_path)
    marker = tmp_path / "ran"
    table = np.empty((5, 2), dtype=object)
    table[:, 0] = range(5)
    table[:, 1] = [[0, 1]] * 5
    table[2, 1] = Payload(marker)
    np.save(tmp_path / "ground_truth_new.npy", table, allow_pickle=True)
    with pytest.raises(UnsafePickleError, match=r"refusing to load posix\.system from .*ground_truth_new\.npy"):
        load_dataset("vpr", root=tmp_path, queries="query", database="ref", positives="vpr_bench")
    assert not marker.exists()


def test_vpr_bench_numeric_ground_truth_and_corrupt_file(tmp_path: Path) -> None:
    make_vpr_bench(tmp_path)
    table = np.array([[q, 2 * q] for q in range(5)], dtype=np.int64)  # one reference per query
    np.save(tmp_path / "ground_truth_new.npy", table)
    dataset = load_dataset("vpr", root=tmp_path, queries="query", database="ref", positives="vpr_bench")
    assert [t.positives.tolist() for t in dataset.truth["all"]] == [[0], [2], [4], [6], [8]]
    (tmp_path / "ground_truth_new.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(UnreadableFile, match=r"ground_truth_new\.npy is not a readable \.npy array file: no \.npy header"):
        load_dataset("vpr", root=tmp_path, queries="query", database="ref", positives="vpr_bench")


def test_revisitop_ground_truth_payload_is_refused(tmp_path: Path) -> None:
    make_revisitop(tmp_path, "roxford5k")
    marker = tmp_path / "ran"
    with open(tmp_path / "roxford5k" / "gnd_roxford5k.pkl", "wb") as handle:
        pickle.dump({"imlist": [], "qimlist": [], "gnd": [Payload(marker)]}, handle)
    with pytest.raises(UnsafePickleError, match=r"posix\.system from .*gnd_roxford5k\.pkl.*Re-download"):
        load_dataset("revisitop", root=tmp_path, name="roxford5k")
    assert not marker.exists()
    (tmp_path / "roxford5k" / "gnd_roxford5k.pkl").write_bytes(b"\x80\x04\x95")
    with pytest.raises(UnreadableFile, match=r"gnd_roxford5k\.pkl is not a readable pickle file: corrupt or not a pickle"):
        load_dataset("revisitop", root=tmp_path, name="roxford5k")


def test_pixel_label_index_payload_is_refused(tmp_path: Path) -> None:
    make_revisitop(tmp_path, "roxford5k")
    marker = tmp_path / "ran"
    release = tmp_path / "release"
    release.mkdir()
    index = np.empty((), dtype=object)
    index[()] = {"0_1": Payload(marker)}
    np.save(release / "oxford_pair2labelpath.npy", index, allow_pickle=True)
    with pytest.raises(UnsafePickleError, match=r"posix\.system from .*oxford_pair2labelpath\.npy"):
        load_dataset("revisitop", root=tmp_path, name="roxford5k", pixel_labels=release)
    assert not marker.exists()


def test_anns_payload_is_refused_unless_trusted(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"x.png": {"note": Payload(marker)}}, tmp_path / "anns.pt")
    with pytest.raises(UnsafePickleError, match="dataset.trusted=true"):
        load_dataset("anns", root=tmp_path)
    assert not marker.exists()


def test_ranking_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "ranking.npz"
    with open(path, "wb") as handle:
        np.savez(handle, indices=np.array([Payload(marker)], dtype=object), scores=np.zeros((1, 1)))
    with pytest.raises(UnreadableFile, match=r"ranking\.npz is not a readable ranking file: .*allow_pickle.*; delete .* and run again"):
        Ranking.load(path)
    assert not marker.exists()


# Item 8b: an anns.pt that is not a torch file, or holds nothing.


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"anns\.pt is not a readable VoxDet annotation file: it is empty \(0 bytes\); rebuild it"),
        (b"id,path\n1,x.png\n", r"anns\.pt is not a readable VoxDet annotation file: not a torch file .*b'id,p'.* corrupt"),
        (b"PK\x03\x04" + b"\x00" * 40, r"anns\.pt is not a readable VoxDet annotation file: corrupt \(RuntimeError"),
        (pickle.dumps({"a": 1}, protocol=2), r"anns\.pt is not a readable VoxDet annotation file: corrupt"),
    ],
)
def test_corrupt_anns_is_called_corrupt_not_unsafe(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "anns.pt").write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        load_dataset("anns", root=tmp_path)
    assert not isinstance(error.value, UnsafePickleError) and "trusted" not in str(error.value)


def test_empty_anns_is_a_clear_error(tmp_path: Path) -> None:
    torch.save({}, tmp_path / "anns.pt")
    with pytest.raises(UnreadableFile, match=r"anns\.pt is not a readable VoxDet annotation file: it holds no annotations \(an empty dict\)"):
        load_dataset("anns", root=tmp_path)


# Items 8d and 8h: one bad annotation; paths that lead out of the root.


def voxdet(root: Path, entries: dict) -> Path:
    """`root/anns.pt` with these entries; the images are 20x16 PNGs under root."""
    for key in entries:
        if not Path(key).is_absolute() and ".." not in key:
            photo(root / key, size=(20, 16), format="PNG")
    torch.save(entries, root / "anns.pt")
    return root


def test_nan_box_drops_only_that_annotation(tmp_path: Path) -> None:
    root = voxdet(tmp_path, {
        "P1/q.png": {"bbox": (1, 1, 5, 5), "ins": 7, "is_query": True, "set": "S"},
        "P2/g.png": {"bbox": [(1, 1, 6, 6), (float("nan"), 2, 8, 9), (9, 2, 4, 9)], "ins": [7, 8, 9],
                     "mask": [], "is_query": False, "set": "S"},
    })
    dataset = load_dataset("anns", root=root)
    (gallery,) = dataset.gallery
    assert gallery.instance_ids == ("S/7",) and gallery.instances[0].box == (1, 1, 6, 6)
    assert dataset.skipped == [
        ("P2/g.png", "annotation 1 dropped: box (nan, 2, 8, 9) is not finite"),
        ("P2/g.png", "annotation 2 dropped: box (9, 2, 4, 9) is inverted (x2 < x1 or y2 < y1)"),
    ]
    assert dataset.extra["dropped_annotations"] == 2
    assert [t.positives.tolist() for t in dataset.truth["all"]] == [[0]]


def test_anns_paths_cannot_lead_out_of_the_root(tmp_path: Path) -> None:
    outside = photo(tmp_path / "private" / "photo.png", size=(20, 16))
    root = tmp_path / "set"
    root.mkdir()
    voxdet(root, {
        "P1/q.png": {"bbox": (1, 1, 5, 5), "ins": 7, "is_query": True, "set": "S"},
        str(outside): {"bbox": [(1, 1, 6, 6)], "ins": [7], "is_query": False, "set": "S"},
        "../private/photo.png": {"bbox": [(1, 1, 6, 6)], "ins": [7], "is_query": False, "set": "S"},
        str(tmp_path / "elsewhere" / "gone.png"): {"bbox": [(1, 1, 6, 6)], "ins": [7], "is_query": False, "set": "S"},
    })
    dataset = load_dataset("anns", root=root)
    assert dataset.gallery == []
    reasons = dict(dataset.skipped)
    assert "outside dataset.root" in reasons[str(outside)] and "not read" in reasons[str(outside)]
    assert "outside dataset.root" in reasons["../private/photo.png"]
    assert "image not found" in reasons[str(tmp_path / "elsewhere" / "gone.png")]


def test_anns_path_outside_the_root_is_rerooted_by_its_tail(tmp_path: Path) -> None:
    outside = photo(tmp_path / "private" / "photo.png", size=(20, 16))
    root = tmp_path / "set"
    photo(root / "private" / "photo.png", size=(20, 16))
    voxdet(root, {
        "P1/q.png": {"bbox": (1, 1, 5, 5), "ins": 7, "is_query": True, "set": "S"},
        str(outside): {"bbox": [(1, 1, 6, 6)], "ins": [7], "is_query": False, "set": "S"},
    })
    dataset = load_dataset("anns", root=root)
    assert [r.path for r in dataset.gallery] == [root / "private" / "photo.png"]
    assert dataset.extra["rerooted_paths"] == 1


# Item 8e: a leaderboard whose last line was cut.


def test_append_after_a_cut_last_line_starts_a_new_line(tmp_path: Path) -> None:
    board = tmp_path / "leaderboard.csv"
    append_row(board, {"date": "d1", "dataset": "a", "mAP": "0.5"})
    board.write_bytes(board.read_bytes() + b"d2,b,0.")  # a writer killed mid-row
    append_row(board, {"date": "d3", "dataset": "c", "mAP": "0.7"})
    rows = read_rows(board)
    assert [row["date"] for row in rows] == ["d1", "d2", "d3"]
    assert rows[2] == {"date": "d3", "dataset": "c", "mAP": "0.7"}


# Item 8f: atomically written files get the mode open() would give them.


def test_atomic_files_follow_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_text(tmp_path / "shared.txt", "x")
        os.umask(0o077)
        write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["private.txt", "shared.txt"]


# Item 8i: a corrupt ranking file.


def small_ranking(indices: list[list[int]]) -> Ranking:
    values = np.asarray(indices, dtype=np.int64)
    return Ranking(indices=values, scores=np.zeros(values.shape, dtype=np.float32),
                   query_ids=np.array([f"q{i}" for i in range(len(values))]), gallery_ids=np.array(["a", "b", "c"]))


@pytest.mark.parametrize(
    "indices, message",
    [([[0, -2]], r"indices run from -2 to 0; valid are -1 \(padding\) to 2"), ([[3, 0]], "indices run from 0 to 3")],
)
def test_ranking_indices_outside_the_gallery_are_corrupt(tmp_path: Path, indices: list, message: str) -> None:
    path = small_ranking(indices).save(tmp_path / "ranking.npz")
    with pytest.raises(UnreadableFile, match=rf"ranking\.npz is not a readable ranking file: {message}"):
        Ranking.load(path)
    good = small_ranking([[0, 2], [1, -1]]).save(tmp_path / "good.npz")
    assert Ranking.load(good).indices.tolist() == [[0, 2], [1, -1]]


def test_ranking_that_is_not_a_ranking_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ranking.npz"
    path.write_text("not a zip")
    with pytest.raises(UnreadableFile, match=r"ranking\.npz is not a readable ranking file: not a \.npz archive \(it starts with b'not a zip'\)"):
        Ranking.load(path)
    np.savez(path, indices=np.zeros((1, 1), dtype=np.int64))
    with pytest.raises(UnreadableFile, match=r"ranking\.npz is not a readable ranking file: .*scores"):
        Ranking.load(path)


# Item 8k: an IVF index on fewer vectors than centroids.


def test_ivf_on_too_few_vectors_says_which_factory_fits() -> None:
    vectors = np.random.default_rng(0).standard_normal((500, 64)).astype(np.float32)
    with pytest.raises(ValueError) as error:
        build_row_index(vectors, "IVF1024,PQ32", use_gpu=False)
    assert str(error.value) == (
        "IVF1024 needs at least 1024 training vectors, the gallery has 500; "
        "use index=flat or a smaller factory such as \"index.factory='IVF8,PQ32x3'\" index.search_params.nprobe=8"
    )
    index = build_row_index(vectors, "IVF8,PQ32x3", use_gpu=False)
    assert index.ntotal == 500
    with pytest.raises(ValueError, match="IVF2 needs at least 2 training vectors, the gallery has 1; use index=flat$"):
        build_row_index(vectors[:1], "IVF2,Flat", use_gpu=False)


# Item 8j beyond folder datasets: hidden files are no one's images in VPR and composed sets either.


def test_vpr_and_compose_ignore_hidden_files(tmp_path: Path) -> None:
    written = make_vpr_utm(tmp_path / "vpr")
    (tmp_path / "vpr" / "database" / "._@1@2@x.jpg").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble
    (tmp_path / "vpr" / "database" / ".cache").mkdir()
    photo(tmp_path / "vpr" / "database" / ".cache" / "@1@2@y.jpg")
    dataset = load_dataset("vpr", root=tmp_path / "vpr")
    assert len(dataset.gallery) == len(written["database"])
    backgrounds = tmp_path / "backgrounds"
    photo(backgrounds / "one.jpg")
    photo(backgrounds / ".trash" / "two.jpg")
    (backgrounds / "._one.jpg").write_bytes(b"\x00\x05\x16\x07")
    assert folder_backgrounds(backgrounds).names == ("one.jpg",)


def test_revisitop_image_that_is_a_fifo_is_named_as_such(tmp_path: Path) -> None:
    gnd = make_revisitop(tmp_path, "roxford5k")
    image = tmp_path / "roxford5k" / "jpg" / f"{gnd['imlist'][2]}.jpg"
    image.unlink()
    os.mkfifo(image)
    with pytest.raises(FileNotFoundError, match=r"1 of \d+ roxford5k images are missing or not regular files") as error:
        load_dataset("revisitop", root=tmp_path, name="roxford5k")
    assert f"{image} (is a FIFO (named pipe))" in str(error.value)


def test_report_refuses_a_run_artifact_that_is_a_fifo(tmp_path: Path) -> None:
    for name in ("ranking.npz", "dataset.json", "per_query.csv"):
        (tmp_path / name).write_text("")
    os.mkfifo(tmp_path / "metrics.json")
    with pytest.raises(ValueError, match=r"metrics\.json is a FIFO \(named pipe\); the run's artifacts must be regular"):
        guarded(lambda: load_run(tmp_path), tmp_path / "metrics.json")


# Issue 21: damaged files, a read-only cache, broken links and bad query files are one line
# (`error: ...`, status 2) naming the file, before any model is loaded where that is possible.

REPO = Path(__file__).resolve().parents[1]


def evaluate_py(tmp_path: Path, *overrides: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    """`python evaluate.py` as a user runs it: cache, leaderboard and run folder under tmp_path,
    64 px inputs, no worker processes."""
    command = [
        sys.executable, "evaluate.py", f"paths.cache={cache or tmp_path / 'cache'}",
        f"paths.leaderboard={tmp_path / 'leaderboard.csv'}", f"hydra.run.dir={tmp_path / 'run'}",
        "extract.workers=0", "model.input_size=64", "eval.report=false", *overrides,
    ]
    inherited = {name: value for name, value in os.environ.items() if name != "HYDRA_FULL_ERROR"}
    env = {**inherited, "GIT_DIR": str(tmp_path / "no-repository"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def error_line(done: subprocess.CompletedProcess) -> str:
    """The line a run ended with, once it is known to have ended as a user error does: status
    2 and no traceback."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done.stderr.strip().splitlines()[-1]


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder`, in which no file can be created for the block. Root ignores permission bits,
    so for root the folder is made immutable instead (chattr +i)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: no folder can be made read-only")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_eval_ranking_that_is_a_text_file_is_one_line(tmp_path: Path, folder_root: Path) -> None:
    ranking = tmp_path / "ranking.csv"
    ranking.write_text("query,rank\nq1,3\n")
    done = evaluate_py(tmp_path, "dataset=folder", f"dataset.root={folder_root}", f"eval.ranking={ranking}")
    assert error_line(done) == (
        f"error: {ranking} is not a readable ranking file: not a .npz archive (it starts with b'query,rank\\nq1,3\\n'); "
        "give eval.ranking the ranking.npz that search or evaluate wrote"
    )
    assert not (tmp_path / "leaderboard.csv").exists()


@pytest.mark.parametrize("cut", ["truncated", "garbage"])
def test_damaged_ranking_in_the_cache_says_how_to_rebuild_it(tmp_path: Path, cut: str) -> None:
    path = small_ranking([[0, 2], [1, -1]]).save(tmp_path / "rankings" / "abc" / "ranking.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if cut == "truncated" else bytes(range(256)))
    reason = r"a damaged or foreign \.npz archive \(BadZipFile: " if cut == "truncated" else r"not a \.npz archive \(it starts with b'\\x00"
    with pytest.raises(UnreadableFile, match=rf"^{re.escape(str(path))} is not a readable ranking file: {reason}.*; "
                                             rf"delete {re.escape(str(path.parent))} and run again to rebuild it$"):
        Ranking.load(path)


def test_ground_truth_pickles_and_npy_files_cut_short_name_the_file(tmp_path: Path) -> None:
    make_revisitop(tmp_path, "roxford5k")
    gnd = tmp_path / "roxford5k" / "gnd_roxford5k.pkl"
    gnd.write_bytes(gnd.read_bytes()[:100])
    with pytest.raises(UnreadableFile, match=rf"^{re.escape(str(gnd))} is not a readable pickle file: corrupt or not a "
                                             r"pickle \(UnpicklingError: pickle data was truncated\); re-download it"):
        load_dataset("revisitop", root=tmp_path, name="roxford5k")
    make_vpr_bench(tmp_path / "vpr")
    truth = tmp_path / "vpr" / "ground_truth_new.npy"
    np.save(truth, np.array([[q, 2 * q] for q in range(5)], dtype=np.int64))
    truth.write_bytes(truth.read_bytes()[:-20])  # the header intact, the numbers cut short
    with pytest.raises(UnreadableFile, match=rf"^{re.escape(str(truth))} is not a readable \.npy array file: its int64 "
                                             r"array of shape \(5, 2\) cannot be read \(ValueError: .*\); re-download it"):
        load_dataset("vpr", root=tmp_path / "vpr", queries="query", database="ref", positives="vpr_bench")


def test_refused_pickles_are_user_errors_on_one_line(tmp_path: Path) -> None:
    make_revisitop(tmp_path, "roxford5k")
    with open(tmp_path / "roxford5k" / "gnd_roxford5k.pkl", "wb") as handle:
        pickle.dump({"imlist": [], "qimlist": [], "gnd": [Payload(tmp_path / "ran")]}, handle)
    with pytest.raises(UnsafePickleError) as refused:
        load_dataset("revisitop", root=tmp_path, name="roxford5k")
    assert is_user_error(refused.value)
    torch.save({"x.png": {"note": Payload(tmp_path / "ran")}}, tmp_path / "anns.pt")
    with pytest.raises(UnsafePickleError) as refused:
        load_dataset("anns", root=tmp_path)
    assert is_user_error(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "ran").exists()


def test_anns_without_a_usable_entry_fails_before_the_model_loads(tmp_path: Path) -> None:
    root = tmp_path / "set"
    root.mkdir()
    torch.save({
        "P1/q.png": {"bbox": (1, 1, 5, 5), "ins": 7, "is_query": True, "set": "S"},
        "/elsewhere/P2/g.png": {"bbox": [(1, 1, 6, 6)], "ins": [7], "is_query": False, "set": "S"},
    }, root / "anns.pt")
    done = evaluate_py(tmp_path, "dataset=anns", f"dataset.root={root}")
    assert error_line(done) == (
        f"error: {root / 'anns.pt'} gives no usable image: every one of its 2 entries was skipped (first: P1/q.png: "
        f"image not found, not even re-rooted under the root); set dataset.root (now {root}) to the folder its image "
        "paths lead to, or rebuild it with VoxDet-SoIR's create_dataset.py"
    )
    assert "GlobalRepresentation with" not in done.stdout + done.stderr  # no split was extracted: no model
    assert not (tmp_path / "cache" / "features").exists()


def test_read_only_cache_is_one_line_naming_the_folder(tmp_path: Path, folder_root: Path) -> None:
    with read_only(tmp_path / "locked") as locked:
        done = evaluate_py(tmp_path, "dataset=folder", f"dataset.root={folder_root}", cache=locked / "cache")
    line = error_line(done)
    assert re.fullmatch(rf"error: paths\.cache: cannot write in {re.escape(str(locked))} \((Permission denied|Operation not "
                        r"permitted)\); make it writable, or point paths\.cache somewhere you can write", line), line
    assert "GlobalRepresentation with" not in done.stdout + done.stderr
    assert not (tmp_path / "leaderboard.csv").exists()


def test_read_only_cache_still_serves_what_it_holds(make_cfg: Callable[..., Any], tmp_path: Path) -> None:
    cfg = make_cfg("query=full")
    pipeline.ranking(cfg)
    cache = tmp_path / "cache"
    with contextlib.ExitStack() as stack:
        for folder in sorted(path for path in cache.rglob("*") if path.is_dir()):
            stack.enter_context(read_only(folder))
        stack.enter_context(read_only(cache))
        assert pipeline.ranking(cfg).is_file()  # complete artifacts are read, nothing written
        with pytest.raises(NotWritable, match=rf"^paths\.cache: cannot write in {re.escape(str(cache / 'rankings'))} "):
            pipeline.ranking(make_cfg("query=full", "dataset.k=5"))  # a new ranking: refused before the search
        with pytest.raises(NotWritable, match=rf"^paths\.leaderboard: cannot write in {re.escape(str(cache))} "):
            pipeline.evaluate(make_cfg("query=full", f"paths.leaderboard={cache / 'leaderboard.csv'}"), tmp_path / "run")


def test_missing_query_list_is_one_line(folder_root: Path) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        load_dataset("folder", root=folder_root, queries="queries.txt")
    assert is_user_error(missing.value)
    assert str(missing.value) == (
        f"dataset.queries=queries.txt: no file at {folder_root / 'queries.txt'}; dataset.queries names a text file "
        "(under dataset.root unless absolute) listing query images as images/<instance_id>/<name>, one per line"
    )


def test_query_list_that_is_not_utf8_names_the_line(folder_root: Path) -> None:
    (folder_root / "queries.txt").write_bytes(b"images/cup1/cup1-000-000.png\nimages/caf\xe9.png\n")
    with pytest.raises(UnreadableFile, match=rf"^{re.escape(str(folder_root / 'queries.txt'))} is not a readable query "
                                             r"list: line 2 is not UTF-8 \(byte 0xe9\); save it as UTF-8 text$"):
        load_dataset("folder", root=folder_root, queries="queries.txt")


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("q.csv", b"id,text,instance\nq1,a cup,cup1\nq2,caf\xe9 cup,cup2\n", r"line 3 is not UTF-8 \(byte 0xe9\); save it as UTF-8 text"),
        ("q.json", b'[{"id": "q1",\n "text": "caf\xe9", "instance": "cup1"}]', r"line 2 is not UTF-8 \(byte 0xe9\); save it as UTF-8 text"),
        ("q.csv", b"id,text,instance\nq1,a cup,cup1\nq2,\"an open quote,cup2\nq3," + b"x" * 140_000 + b",cup1\n",
         r"the row from line 3 has a cell over 131,072 characters; a quote left open runs on to the end of the file: "
         r"close it, or shorten the cell"),
    ],
    ids=["csv-not-utf8", "json-not-utf8", "csv-128k-cell"],
)
def test_query_file_that_cannot_be_read_names_file_and_line(folder_root: Path, tmp_path: Path, name: str, content: bytes,
                                                            reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableFile, match=rf"^{re.escape(str(path))} is not a readable query file: {reason}$"):
        with_query_file(load_dataset("folder", root=folder_root), path)


def test_dangling_symlink_is_a_broken_link_not_a_missing_file(folder_root: Path, tmp_path: Path) -> None:
    link = folder_root / "images" / "cup1" / "cup1-999-999.png"
    link.symlink_to(tmp_path / "moved" / "cup1-999-999.png")
    dataset = load_dataset("folder", root=folder_root)
    assert dataset.skipped == [("images/cup1/cup1-999-999.png",
                                f"is a broken link to {tmp_path / 'moved' / 'cup1-999-999.png'}, not an image file")]
    relative = folder_root / "images" / "cup1" / "relative.png"
    relative.symlink_to("../gone/relative.png")
    with pytest.raises(ImageError, match=rf"^{re.escape(str(relative))} is a broken link to "
                                         rf"{re.escape(str(folder_root / 'images' / 'gone' / 'relative.png'))}$"):
        load_rgb(relative)


def test_damaged_cached_vectors_name_the_file(tmp_path: Path) -> None:
    from retrieval.local_features import create_extractor
    from retrieval.local_features.cache import FeatureCache
    from retrieval.local_features.frames import Frame
    from retrieval.stages.rerank import GALLERY_VECTORS, _saved_vectors

    vectors = tmp_path / "rankings" / "dba" / GALLERY_VECTORS
    vectors.parent.mkdir(parents=True)
    np.save(vectors, np.ones((4, 8), dtype=np.float32))
    vectors.write_bytes(vectors.read_bytes()[:-16])
    with pytest.raises(UnreadableFile, match=rf"^{re.escape(str(vectors))} is not a readable saved gallery vectors file: "
                                             rf"ValueError: .*; delete {re.escape(str(vectors.parent))} and run again"):
        _saved_vectors(vectors)
    cache = FeatureCache(tmp_path / "cache", create_extractor("sift"), resize=64)
    frame = Frame("photo", photo(tmp_path / "photo.png", size=(64, 48)))
    cache.ensure([frame])
    cache.path(frame.key).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(UnreadableFile, match=rf"^{re.escape(str(cache.path(frame.key)))} is not a readable local-feature "
                                             r"cache file: BadZipFile: .*; delete it and run again to extract it again$"):
        cache.load(frame.key)


def test_a_region_extraction_says_its_regions_per_image_and_how_long_it_will_take(
    make_cfg: Callable[..., Any], folder_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Large gallery images make hundreds of grid windows each, many seconds per image on a CPU:
    the run says how many before it starts (counted on the first image, whose size sets the
    grid) and, after the first image, how long the rest will take."""
    from retrieval import pipeline

    first = folder_root / "images" / "apple1" / "apple1-000-000.png"
    Image.open(first).resize((640, 480), Image.BICUBIC).save(first)  # the first gallery image, enlarged
    cfg = make_cfg("regions=grid", "regions.proposals.grid.scales=[0.5]")
    with caplog.at_level(logging.INFO):
        pipeline.features(cfg)
    said = [record.getMessage() for record in caplog.records]
    # 240 px windows overlapping by half on 640 x 480: 5 x 3 of them, and the whole image
    plan = ("gallery: 16 regions per image (1 whole image + 15 grid; counted on apple1-000-000.png, 640x480), "
            "each cut out and embedded alone: about 192 regions for 12 images")
    estimates = [line for line in said if line.startswith("gallery: 1 of 12 items done in ")]
    assert len(estimates) == 1 and re.search(r"; the other 11 will take about \d+ (s|min|h)$", estimates[0])
    assert plan in said and said.index(plan) < said.index(estimates[0])
