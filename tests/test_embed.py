"""extract() against the model run by hand, bad inputs, interruption and resume, float16 storage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from retrieval.embed import extract, load_embeddings
from retrieval.models import Embedder
from retrieval.queries import get_query_mode
from retrieval.records import Instance, Record

# (skimage image, crop rows, crop cols, suffix, box of the object in the crop)
SOURCES = [
    ("coffee", slice(0, 300), slice(100, 500), ".jpg", (50, 40, 250, 200)),
    ("chelsea", slice(0, 300), slice(0, 300), ".png", (20.5, 30.5, 200.5, 180.5)),
    ("astronaut", slice(0, 200), slice(100, 400), ".png", (100, 0, 300, 150)),
    ("rocket", slice(100, 400), slice(0, 200), ".jpg", (10, 10, 190, 290)),
    ("camera", slice(0, 256), slice(0, 384), ".png", (0, 0, 384, 256)),
    ("coffee", slice(100, 400), slice(0, 300), ".png", (30, 30, 130, 130)),
]


class Counting(Embedder):
    """Counts forward passes; raises on pass `fail_at`, as a killed job stops mid-extraction."""

    def __init__(self, inner: Embedder, fail_at: int | None = None):
        super().__init__(inner.preprocess, inner.dim)
        self.inner = inner
        self.fail_at = fail_at
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated interruption")
        return self.inner(images)


@pytest.fixture
def records(tmp_path: Path) -> list[Record]:
    out = []
    for n, (name, rows, cols, suffix, box) in enumerate(SOURCES):
        path = tmp_path / "images" / f"{n}_{name}{suffix}"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(getattr(skimage.data, name)()[rows, cols]).save(path)
        out.append(Record(path=path, key=path.name, instances=(Instance(name, box=box),)))
    return out


def by_hand(model: Embedder, paths: list[Path], boxes: list | None = None) -> np.ndarray:
    """Decode with Pillow, crop, stretch, normalise, forward, L2-normalise: extract's job done inline."""
    size, mean, std = model.preprocess.input_size, model.preprocess.mean, model.preprocess.std
    batch = []
    for n, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        if boxes is not None:
            image = image.crop(boxes[n])
        pixels = np.asarray(image.resize((size, size), Image.BICUBIC), np.float32) / 255
        batch.append((pixels - np.array(mean, np.float32)) / np.array(std, np.float32))
    with torch.inference_mode():
        vectors = model(torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)).double().numpy()
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def run(records: list[Record], model: Embedder, folder: Path, **options: object) -> dict:
    settings = dict(batch_size=4, shard_size=4, workers=0, desc="test") | options
    return extract(records, model, folder, **settings)


def test_vectors_equal_the_model_run_by_hand(records: list[Record], lite0: Embedder, tmp_path: Path) -> None:
    stats = run(records, lite0, tmp_path / "gallery")
    result = load_embeddings(tmp_path / "gallery", [r.key for r in records])
    assert stats["embedded"] == len(records) and stats["errors"] == 0
    assert result.keys == [r.key for r in records] and result.valid.all() and result.vectors.dtype == np.float32
    assert sorted(p.name for p in (tmp_path / "gallery").glob("shard_*.npz")) == ["shard_00000.npz", "shard_00001.npz"]
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(result.vectors, by_hand(lite0, [r.path for r in records]), atol=2e-5)


def test_box_query_mode_crops_before_resizing(records: list[Record], lite0: Embedder, tmp_path: Path) -> None:
    run(records, lite0, tmp_path / "queries", query_mode=get_query_mode("box"))
    result = load_embeddings(tmp_path / "queries", [r.key for r in records])
    boxes = [r.instances[0].box for r in records]
    np.testing.assert_allclose(result.vectors, by_hand(lite0, [r.path for r in records], boxes), atol=2e-5)


def test_bad_inputs_are_counted_skips_with_zero_rows(records: list[Record], lite0: Embedder, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    outside = Record(records[0].path, "outside", (Instance("coffee", box=(900, 900, 950, 950)),))
    mixed = [
        records[0],
        Record(tmp_path / "gone.png", "gone", (Instance("x"),)),
        Record(corrupt, "corrupt", (Instance("x"),)),
        records[1],
        outside,
    ]
    stats = run(mixed, lite0, tmp_path / "mixed", query_mode=get_query_mode("box"))
    result = load_embeddings(tmp_path / "mixed", [r.key for r in mixed])
    assert stats["errors"] == 3 and stats["embedded"] == 5
    np.testing.assert_array_equal(result.valid, [True, False, False, True, False])
    assert set(result.errors) == {1, 2, 4}
    assert "missing file" in result.errors[1] and "cannot decode" in result.errors[2] and "outside" in result.errors[4]
    assert not result.vectors[~result.valid].any()
    boxes = [records[0].instances[0].box, records[1].instances[0].box]
    np.testing.assert_allclose(result.vectors[result.valid], by_hand(lite0, [records[0].path, records[1].path], boxes), atol=2e-5)


def test_interrupted_run_resumes_with_the_missing_shards_only(records: list[Record], lite0: Embedder, tmp_path: Path) -> None:
    keys = [r.key for r in records]
    layout = dict(batch_size=1, shard_size=2)  # 3 shards of 2 batches
    whole = Counting(lite0)
    run(records, whole, tmp_path / "whole", **layout)
    assert whole.calls == 6

    folder = tmp_path / "resumed"
    killed = Counting(lite0, fail_at=4)  # dies half-way through the second shard
    with pytest.raises(RuntimeError, match="simulated"):
        run(records, killed, folder, **layout)
    assert [p.name for p in folder.glob("shard_*.npz")] == ["shard_00000.npz"]
    assert not list(folder.glob("*.tmp"))
    with pytest.raises(RuntimeError, match="rerun extraction"):
        load_embeddings(folder, keys)

    rerun = Counting(lite0)
    stats = run(records, rerun, folder, **layout)
    assert rerun.calls == 4 and stats["embedded"] == 4  # the half-done shard is redone whole

    (folder / "shard_00002.npz").unlink()  # a shard lost (e.g. a disk cleaned by hand)
    last = Counting(lite0)
    run(records, last, folder, **layout)
    assert last.calls == 2

    expected = load_embeddings(tmp_path / "whole", keys)
    result = load_embeddings(folder, keys)
    np.testing.assert_array_equal(result.vectors, expected.vectors)
    np.testing.assert_array_equal(result.valid, expected.valid)


def test_finished_extraction_computes_nothing(records: list[Record], lite0: Embedder, tmp_path: Path) -> None:
    run(records, lite0, tmp_path / "done")
    again = Counting(lite0)
    assert run(records, again, tmp_path / "done")["embedded"] == 0 and again.calls == 0


def test_float16_storage(records: list[Record], lite0: Embedder, tmp_path: Path) -> None:
    run(records, lite0, tmp_path / "f32")
    run(records, lite0, tmp_path / "f16", dtype="float16")
    keys = [r.key for r in records]
    half, full = load_embeddings(tmp_path / "f16", keys), load_embeddings(tmp_path / "f32", keys)
    assert half.vectors.dtype == np.float16 and full.vectors.dtype == np.float32
    np.testing.assert_array_equal(half.vectors, full.vectors.astype(np.float16))
    assert (tmp_path / "f16" / "shard_00000.npz").stat().st_size < (tmp_path / "f32" / "shard_00000.npz").stat().st_size
