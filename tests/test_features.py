"""Feature stores filled by `fill_store`: vectors against the model run by hand, query cut-outs,
skips, resuming, and what item keys guarantee (added, moved, changed files; lost or truncated
shards; shards built by two processes; leave-one-out queries; region rows)."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from retrieval.features import Features
from retrieval.features.extract import fill_store
from retrieval.features.keys import Item, gallery_items, query_items
from retrieval.features.store import SHARD_GLOB, ShardRows, Store, shard_name
from retrieval.models import Embedder
from retrieval.queries import get_query_mode
from retrieval.records import Box, Instance, Record
from retrieval.representations import Representation, create_representation

CPU = torch.device("cpu")
MAX_PIXELS = 10**8
# (skimage image, crop rows, crop cols, suffix, box of the object in the crop)
SOURCES = [
    ("coffee", slice(0, 150), slice(100, 300), ".jpg", (50, 40, 150, 120)),
    ("chelsea", slice(0, 150), slice(0, 150), ".png", (20.5, 30.5, 100.5, 90.5)),
    ("astronaut", slice(0, 100), slice(100, 250), ".png", (60, 0, 140, 75)),
    ("rocket", slice(100, 250), slice(0, 100), ".jpg", (10, 10, 90, 140)),
    ("camera", slice(0, 128), slice(0, 192), ".png", (0, 0, 192, 128)),
    ("coffee", slice(100, 250), slice(0, 150), ".png", (30, 30, 90, 90)),
]


class Counting(Embedder):
    """Counts forward passes and images; raises on pass `fail_at`, as a killed job stops."""

    def __init__(self, inner: Embedder, fail_at: int | None = None):
        super().__init__(inner.preprocess, inner.dim)
        self.inner = inner
        self.fail_at = fail_at
        self.calls = 0
        self.images = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated interruption")
        self.images += len(images)
        return self.inner(images)


def save_photo(path: Path, index: int) -> None:
    """Write crop `index` of SOURCES at `path` (format from the suffix)."""
    name, rows, cols = SOURCES[index][:3]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(getattr(skimage.data, name)()[rows, cols]).save(path)


def make_records(root: Path, indices: Sequence[int] = range(len(SOURCES)), boxes: bool = True) -> list[Record]:
    """One record per SOURCES index under `root/images` (written when absent), with its box."""
    out = []
    for n in indices:
        name, _, _, suffix, box = SOURCES[n]
        path = root / "images" / f"{n}_{name}{suffix}"
        if not path.exists():
            save_photo(path, n)
        out.append(Record(path=path, key=path.name, instances=(Instance(name, box=box if boxes else None),)))
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


def global_rep(mode: str | None = None, **options: object) -> Representation:
    return create_representation("global", max_pixels=MAX_PIXELS, mode=get_query_mode(mode) if mode else None, mode_options=options)


def run(store: Store, items: Sequence[Item], model: Embedder, representation: Representation | None = None, **options: object) -> dict:
    settings = dict(device=CPU, precision="auto", dtype="float32", batch_size=4, shard_size=2, workers=0, desc="test") | options
    return fill_store(store, items, representation or global_rep(), model, **settings)


def gather(store: Store, items: Sequence[Item], records: Sequence[Record]) -> Features:
    return store.gather([item.key for item in items], [record.key for record in records])


def queries(records: list[Record], root: Path, mode: str, **options: object) -> list[Item]:
    return query_items(records, root, mode, get_query_mode(mode), dict(options))


def by_hand(model: Embedder, paths: Sequence[Path], boxes: Sequence[Box | None] | None = None) -> np.ndarray:
    """Decode with Pillow, crop, stretch, normalise, forward, L2-normalise: extraction inline."""
    size, mean, std = model.preprocess.input_size, model.preprocess.mean, model.preprocess.std
    batch = []
    for n, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        if boxes is not None and boxes[n] is not None:
            image = image.crop(boxes[n])
        pixels = np.asarray(image.resize((size, size), Image.BICUBIC), np.float32) / 255
        batch.append((pixels - np.array(mean, np.float32)) / np.array(std, np.float32))
    with torch.inference_mode():
        vectors = model(torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)).double().numpy()
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def shard_names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob(SHARD_GLOB))


def overwrite(path: Path, write: Callable[[Path], None]) -> None:
    """Rewrite `path` later than its last write (so a coarse file clock has ticked)."""
    time.sleep(0.05)
    write(path)


# --- carried over from the old extract() tests ------------------------------------------------


def test_vectors_equal_the_model_run_by_hand(root: Path, lite0: Embedder, tmp_path: Path) -> None:
    records = make_records(root)
    items = gallery_items(records, root)
    store = Store(tmp_path / "store")
    stats = run(store, items, lite0)
    result = gather(store, items, records)
    assert stats["embedded"] == len(records)
    assert result.keys == [r.key for r in records] and result.valid.all() and not result.errors
    assert result.vectors.dtype == np.float32 and not result.localises
    np.testing.assert_array_equal(result.row_image, np.arange(len(records)))
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(result.vectors, by_hand(lite0, [r.path for r in records]), atol=2e-5)
    # keys are root-relative path, size and mtime; shards of 2 items, in listing order
    stat = records[0].path.stat()
    assert items[0].key == f"images/{records[0].path.name}|{stat.st_size}|{stat.st_mtime_ns}"
    chunks = [[item.key for item in items[start : start + 2]] for start in (0, 2, 4)]
    assert shard_names(store.folder) == sorted(shard_name(chunk) for chunk in chunks)
    for chunk in chunks:
        with np.load(store.folder / shard_name(chunk)) as shard:
            assert shard["items"].tolist() == chunk


def test_box_query_mode_crops_before_resizing(root: Path, lite0: Embedder, tmp_path: Path) -> None:
    records = make_records(root)
    items = queries(records, root, "box")
    store = Store(tmp_path / "store")
    run(store, items, lite0, global_rep("box"))
    result = gather(store, items, records)
    assert all("#" in item.key for item in items)  # cut-outs, not the images' keys
    boxes = [r.instances[0].box for r in records]
    np.testing.assert_allclose(result.per_image(), by_hand(lite0, [r.path for r in records], boxes), atol=2e-5)


def test_bad_inputs_are_counted_logged_skips_with_zero_rows(
    root: Path, lite0: Embedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = make_records(root, [0, 1])
    corrupt = root / "images" / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    mixed = [
        good[0],
        Record(root / "images" / "gone.png", "gone", (Instance("x", box=(0, 0, 5, 5)),)),
        Record(corrupt, "corrupt", (Instance("x", box=(0, 0, 5, 5)),)),
        good[1],
        Record(good[0].path, "outside", (Instance("coffee", box=(900, 900, 950, 950)),)),
    ]
    items = queries(mixed, root, "box")
    store = Store(tmp_path / "store")
    with caplog.at_level(logging.WARNING):
        stats = run(store, items, lite0, global_rep("box"))
    result = gather(store, items, mixed)
    assert stats["embedded"] == 5
    np.testing.assert_array_equal(result.valid, [True, False, False, True, False])
    assert set(result.errors) == {1, 2, 4}
    assert "missing file" in result.errors[1] and "cannot decode" in result.errors[2] and "outside" in result.errors[4]
    np.testing.assert_array_equal(result.row_image, [0, 3])  # skipped items have no rows
    assert not result.per_image()[~result.valid].any()
    skipped = [r.message for r in caplog.records if r.message.startswith("skipped")]
    assert len(skipped) == 3 and any("corrupt.jpg" in m for m in skipped) and any("gone.png" in m for m in skipped)
    boxes = [good[0].instances[0].box, good[1].instances[0].box]
    np.testing.assert_allclose(result.vectors, by_hand(lite0, [good[0].path, good[1].path], boxes), atol=2e-5)
    # a skip is a result: the next run does not retry it
    again = Counting(lite0)
    assert run(Store(store.folder), items, again, global_rep("box"))["embedded"] == 0 and again.calls == 0


def test_interrupted_run_resumes_with_the_missing_shards_only(root: Path, lite0: Embedder, tmp_path: Path) -> None:
    records = make_records(root)
    items = gallery_items(records, root)
    layout = dict(batch_size=1, shard_size=2)  # 3 shards of 2 one-image batches
    whole = Store(tmp_path / "whole")
    run(whole, items, lite0, **layout)

    folder = tmp_path / "resumed"
    killed = Counting(lite0, fail_at=4)  # dies half-way through the second shard
    with pytest.raises(RuntimeError, match="simulated"):
        run(Store(folder), items, killed, **layout)
    assert len(shard_names(folder)) == 1 and not list(folder.glob("*.tmp"))
    with pytest.raises(RuntimeError, match="holds no vectors for 4 items"):
        gather(Store(folder), items, records)

    rerun = Counting(lite0)
    stats = run(Store(folder), items, rerun, **layout)
    assert rerun.images == 4 and stats["embedded"] == 4  # the half-done shard is redone whole
    expected, result = gather(whole, items, records), gather(Store(folder), items, records)
    np.testing.assert_array_equal(result.vectors, expected.vectors)
    np.testing.assert_array_equal(result.valid, expected.valid)


def test_finished_extraction_computes_nothing(root: Path, lite0: Embedder, tmp_path: Path) -> None:
    records = make_records(root, [0, 1, 2])
    items = gallery_items(records, root)
    run(Store(tmp_path / "store"), items, lite0)
    again = Counting(lite0)
    stats = run(Store(tmp_path / "store"), items, again)
    assert stats["embedded"] == 0 and stats["images_per_s"] is None and again.calls == 0


def test_float16_storage(root: Path, lite0: Embedder, tmp_path: Path) -> None:
    records = make_records(root, [0, 1])
    items = gallery_items(records, root)
    full, half = Store(tmp_path / "f32"), Store(tmp_path / "f16")
    run(full, items, lite0)
    run(half, items, lite0, dtype="float16")
    f32, f16 = gather(full, items, records), gather(half, items, records)
    assert f16.vectors.dtype == np.float16 and f32.vectors.dtype == np.float32
    np.testing.assert_array_equal(f16.vectors, f32.vectors.astype(np.float16))
    [name] = shard_names(half.folder)
    assert (half.folder / name).stat().st_size < (full.folder / name).stat().st_size


# --- what item keys guarantee ----------------------------------------------------------------


def test_adding_images_extracts_only_the_new_ones(root: Path, lite0: Embedder, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    first = make_records(root, [0, 1, 2, 3])
    run(store, gallery_items(first, root), lite0)
    grown = make_records(root, [4, 0, 5, 1, 2, 3])  # two new images, another listing order
    counting = Counting(lite0)
    stats = run(store, gallery_items(grown, root), counting)
    assert stats["embedded"] == 2 and counting.images == 2
    result = gather(Store(store.folder), gallery_items(grown, root), grown)
    assert result.keys == [r.key for r in grown]
    np.testing.assert_allclose(result.vectors, by_hand(lite0, [r.path for r in grown]), atol=2e-5)


@pytest.mark.parametrize("how", ["rename", "copytree"])
def test_moving_the_dataset_root_keeps_every_vector(how: str, root: Path, lite0: Embedder, tmp_path: Path) -> None:
    records = make_records(root, [0, 1, 2])
    items = gallery_items(records, root)
    store = Store(tmp_path / "store")
    run(store, items, lite0)
    before = gather(store, items, records)
    moved_root = tmp_path / "elsewhere" / "data"
    moved_root.parent.mkdir()
    if how == "rename":
        os.rename(root, moved_root)
    else:
        shutil.copytree(root, moved_root, copy_function=shutil.copy2)
        shutil.rmtree(root)
    moved = make_records(moved_root, [0, 1, 2])
    assert all(r.path.is_file() and not str(r.path).startswith(str(root)) for r in moved)
    moved_items = gallery_items(moved, moved_root)
    assert [i.key for i in moved_items] == [i.key for i in items]
    counting = Counting(lite0)
    assert run(Store(store.folder), moved_items, counting)["embedded"] == 0 and counting.calls == 0
    np.testing.assert_array_equal(gather(Store(store.folder), moved_items, moved).vectors, before.vectors)


def test_a_copy_that_drops_times_is_extracted_again(root: Path, lite0: Embedder, tmp_path: Path) -> None:
    records = make_records(root, [0, 1])
    store = Store(tmp_path / "store")
    run(store, gallery_items(records, root), lite0)
    copied_root = tmp_path / "copy"
    time.sleep(0.05)
    shutil.copytree(root, copied_root, copy_function=shutil.copyfile)  # `cp -r`: new mtimes
    counting = Counting(lite0)
    run(store, gallery_items(make_records(copied_root, [0, 1]), copied_root), counting)
    assert counting.images == 2


def test_a_changed_image_is_extracted_again(root: Path, lite0: Embedder, tmp_path: Path) -> None:
    records = make_records(root, [0, 1, 2])
    # a BMP of the same size in bytes: only the modification time tells the new content apart
    changed = root / "images" / "changed.bmp"
    save_photo(changed, 1)
    records.append(Record(changed, changed.name))
    store = Store(tmp_path / "store")
    run(store, gallery_items(records, root), lite0)
    size = changed.stat().st_size
    overwrite(changed, lambda path: Image.fromarray(skimage.data.coffee()[:150, :150]).save(path))
    assert changed.stat().st_size == size

    counting = Counting(lite0)
    items = gallery_items(records, root)
    assert run(store, items, counting)["embedded"] == 1 and counting.images == 1
    result = gather(store, items, records)
    np.testing.assert_allclose(result.vectors, by_hand(lite0, [r.path for r in records]), atol=2e-5)
    assert np.dot(result.vectors[3], result.vectors[1]) < 0.99  # no longer a copy of image 1


def test_an_edited_query_box_is_cut_out_again(root: Path, lite0: Embedder, tmp_path: Path) -> None:
    records = make_records(root, [0, 1, 2])
    store = Store(tmp_path / "store")
    run(store, queries(records, root, "box"), lite0, global_rep("box"))
    edited = [*records[:2], Record(records[2].path, records[2].key, (Instance("astronaut", box=(0, 10, 70, 90)),))]
    items = queries(edited, root, "box")
    counting = Counting(lite0)
    assert run(store, items, counting, global_rep("box"))["embedded"] == 1 and counting.images == 1
    boxes = [r.instances[0].box for r in edited]
    np.testing.assert_allclose(gather(store, items, edited).per_image(), by_hand(lite0, [r.path for r in edited], boxes), atol=2e-5)


def test_an_overwritten_query_mask_is_cut_out_again(root: Path, lite0: Embedder, tmp_path: Path) -> None:
    [record] = make_records(root, [0])
    mask_path = root / "masks" / "0.png"
    mask_path.parent.mkdir()

    def rectangle(x1: int, y1: int, x2: int, y2: int) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            mask = np.zeros((150, 200), np.uint8)
            mask[y1:y2, x1:x2] = 255
            Image.fromarray(mask).save(path)
        return write

    rectangle(20, 30, 120, 100)(mask_path)
    query = [Record(record.path, record.key, (Instance("coffee", mask=mask_path),))]
    store = Store(tmp_path / "store")
    run(store, queries(query, root, "mask"), lite0, global_rep("mask"))
    before = gather(store, queries(query, root, "mask"), query).vectors
    np.testing.assert_allclose(before, by_hand(lite0, [record.path], [(20, 30, 120, 100)]), atol=2e-5)

    overwrite(mask_path, rectangle(100, 10, 190, 140))
    items = queries(query, root, "mask")
    counting = Counting(lite0)
    assert run(store, items, counting, global_rep("mask"))["embedded"] == 1 and counting.images == 1
    np.testing.assert_allclose(gather(store, items, query).vectors, by_hand(lite0, [record.path], [(100, 10, 190, 140)]), atol=2e-5)


# --- lost and damaged shards -----------------------------------------------------------------


def test_deleted_and_truncated_shards_are_named_and_rebuilt_alone(
    root: Path, lite0: Embedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = make_records(root)
    items = gallery_items(records, root)
    store = Store(tmp_path / "store")
    run(store, items, lite0)
    before = gather(store, items, records)
    first, second, third = shard_names(store.folder)

    def rebuild(store: Store, damaged: str) -> None:
        caplog.clear()
        counting = Counting(lite0)
        with caplog.at_level(logging.INFO):
            assert run(store, items, counting)["embedded"] == 2 and counting.images == 2
        assert damaged in caplog.text
        assert shard_names(store.folder) == [first, second, third]
        result = gather(store, items, records)
        np.testing.assert_array_equal(result.vectors, before.vectors)
        np.testing.assert_array_equal(result.row_image, before.row_image)

    # deleted, then a new run (a fresh Store, as a new process has) or the same Store object
    (store.folder / first).unlink()
    rebuild(Store(store.folder), first)
    (store.folder / second).unlink()
    rebuild(store, second)
    assert "is gone" in caplog.text
    # truncated to its first half: set aside (kept for inspection), named, rebuilt
    data = (store.folder / third).read_bytes()
    (store.folder / third).write_bytes(data[: len(data) // 2])
    rebuild(Store(store.folder), third)
    assert "cannot be read" in caplog.text
    assert (store.folder / f"{third}.unreadable").read_bytes() == data[: len(data) // 2]


# --- two processes, one store ----------------------------------------------------------------

WAIT_S = 60.0


def wait_for(path: Path, timeout: float = WAIT_S) -> None:
    """Block until `path` exists (another process's signal); TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.01)


class ClaimLog(Store):
    """A Store that records its claims and, before waiting for a lock, says so by a file."""

    def __init__(self, folder: Path, signals: Path, who: str):
        super().__init__(folder)
        self.signals, self.who = signals, who
        self.claims: list[list] = []

    @contextmanager
    def claim(self, name: str, wait: bool) -> Iterator[bool]:
        self.claims.append([name, wait])
        if wait:
            (self.signals / f"{self.who}-waits-{name}").touch()
        with super().claim(name, wait) as mine:
            yield mine


def fake_rows(keys: list[str]) -> ShardRows:
    """Rows that say which item they belong to: [length of its key, its place in the shard]."""
    return ShardRows(
        items=keys,
        valid=np.ones(len(keys), bool),
        counts=np.ones(len(keys), np.int64),
        vectors=np.array([[len(key), n] for n, key in enumerate(keys)], np.float32),
        errors={},
        seconds=0.0,
    )


def build_in_process(folder: str, signals: str, who: str, keys: list[str], hold: str) -> None:
    """Child process: build `keys` (shards of 2) in the store at `folder`. `first` holds shard
    `hold` until `second` is about to wait for it; `second` starts once `first` embeds it."""
    signals_dir = Path(signals)
    store = ClaimLog(Path(folder), signals_dir, who)
    spans: dict[str, list[float]] = {}

    def embed(chunk: list[str]) -> ShardRows:
        name = shard_name(chunk)
        spans[name] = [time.monotonic()]
        (signals_dir / f"{who}-embeds-{name}").touch()
        if who == "first" and name == hold:
            wait_for(signals_dir / f"second-waits-{name}")
        spans[name].append(time.monotonic())
        return fake_rows(chunk)

    if who == "second":
        wait_for(signals_dir / f"first-embeds-{hold}")
    embedded = store.build(keys, 2, embed)
    (signals_dir / f"{who}.json").write_text(json.dumps({"claims": store.claims, "embedded": embedded, "spans": spans}))


def test_two_processes_share_a_store_shard_by_shard(tmp_path: Path) -> None:
    """Different shards are built at the same time; for a shard the other holds, one waits."""
    folder, signals = tmp_path / "store", tmp_path / "signals"
    signals.mkdir()
    keys = [f"images/{n}.png|100|{n}" for n in range(4)]
    held, other = shard_name(keys[:2]), shard_name(keys[2:])
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=build_in_process, args=(str(folder), str(signals), who, keys, held))
        for who in ("first", "second")
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join(timeout=2 * WAIT_S)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0, 0]
    first, second = (json.loads((signals / f"{who}.json").read_text()) for who in ("first", "second"))
    # each shard embedded once, each by one process
    assert list(first["spans"]) == [held] and list(second["spans"]) == [other]
    assert first["embedded"] == 2 and second["embedded"] == 2
    # in parallel: the second built its shard entirely while the first was embedding the held one
    (held_start, held_end), (other_start, other_end) = first["spans"][held], second["spans"][other]
    assert held_start < other_start <= other_end < held_end
    # the second found the held shard locked, built the free one, then waited for the held one
    assert second["claims"] == [[held, False], [other, False], [held, True]]
    assert first["claims"] == [[held, False], [other, False]]
    assert shard_names(folder) == sorted([held, other])
    result = Store(folder).gather(keys, keys)
    np.testing.assert_array_equal(result.vectors, [[len(k), n % 2] for n, k in enumerate(keys)])


# --- leave-one-out queries and region rows ------------------------------------------------------


@pytest.mark.parametrize("mode,boxes", [("full", True), ("box", False)])
def test_whole_image_queries_reuse_the_gallery_vectors(mode: str, boxes: bool, root: Path, lite0: Embedder, tmp_path: Path) -> None:
    records = make_records(root, [0, 1, 2], boxes=boxes)
    gallery, query = gallery_items(records, root), queries(records, root, mode)
    assert [i.key for i in query] == [i.key for i in gallery]
    store = Store(tmp_path / "store")
    run(store, gallery, lite0)
    counting = Counting(lite0)
    assert run(store, query, counting, global_rep(mode))["embedded"] == 0 and counting.calls == 0
    np.testing.assert_array_equal(gather(store, query, records).vectors, gather(store, gallery, records).vectors)
    # with boxes, a box query is a cut-out of its own
    cut = queries(make_records(root, [0, 1, 2]), root, "box")
    assert all(c.key.startswith(g.key + "#") for c, g in zip(cut, gallery))


# Grid windows of half the shorter side, not overlapping, spread over the image (x1, y1, x2, y2)
GRID = {
    (150, 200): [(0, 0, 75, 75), (62, 0, 137, 75), (125, 0, 200, 75), (0, 75, 75, 150), (62, 75, 137, 150), (125, 75, 200, 150)],
    (150, 150): [(0, 0, 75, 75), (75, 0, 150, 75), (0, 75, 75, 150), (75, 75, 150, 150)],
}


@pytest.mark.parametrize("pooling", ["roi", "crop"])
def test_region_rows_through_fill_store(pooling: str, root: Path, lite0: Embedder, tmp_path: Path) -> None:
    records = make_records(root, [0, 1])  # 150x200 and 150x150
    records.insert(1, Record(root / "images" / "gone.png", "gone"))
    items = gallery_items(records, root)
    options = {"input_sizes": (64, 128), "roi_size": 7} if pooling == "roi" else {"crop_size": None}
    representation = create_representation(pooling, proposals={"grid": {"scales": [0.5], "overlap": 0.0}}, max_pixels=MAX_PIXELS, **options)
    store = Store(tmp_path / "store")
    assert run(store, items, lite0, representation)["embedded"] == 3
    result = gather(store, items, records)

    expected = [[(0, 0, 200, 150), *GRID[(150, 200)]], [], [(0, 0, 150, 150), *GRID[(150, 150)]]]
    assert result.localises and result.source_names == ["image", "grid"]
    np.testing.assert_array_equal(result.valid, [True, False, True])
    np.testing.assert_array_equal(result.row_image, np.repeat([0, 1, 2], [len(b) for b in expected]))
    np.testing.assert_array_equal(result.boxes, np.concatenate([b for b in expected if b]))
    np.testing.assert_array_equal(result.sources, np.concatenate([[0] + [1] * (len(b) - 1) for b in expected if b]))
    assert result.masks == [""] * len(result.boxes)  # grid windows and the image are their boxes
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1, atol=1e-5)

    first_rows = result.vectors[[0, len(expected[0])]]
    paths = [records[0].path, records[2].path]
    if pooling == "crop":
        # every row is its box cut out and embedded as a query is
        for image, boxes in ((0, expected[0]), (2, expected[2])):
            rows = result.vectors[result.row_image == image]
            np.testing.assert_allclose(rows, by_hand(lite0, [records[image].path] * len(boxes), boxes), atol=2e-5)
        np.testing.assert_allclose(first_rows, by_hand(lite0, paths), atol=2e-5)
    else:
        # the whole image: the model's own descriptor of the scene whose longer side is 64 px
        scenes = []
        for path in paths:
            image = Image.open(path).convert("RGB")
            scale = 64 / max(image.size)
            pixels = np.asarray(image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC), np.float32) / 255
            mean, std = np.array(lite0.preprocess.mean, np.float32), np.array(lite0.preprocess.std, np.float32)
            scenes.append((pixels - mean) / std)
        with torch.inference_mode():
            whole = np.concatenate([lite0(torch.from_numpy(s).permute(2, 0, 1)[None]).double().numpy() for s in scenes])
        np.testing.assert_allclose(first_rows, whole / np.linalg.norm(whole, axis=1, keepdims=True), atol=2e-5)
        # regions are pooled from the pyramid, not copies of the whole image
        assert (result.vectors[1:7] @ result.vectors[0] < 0.999).all()
