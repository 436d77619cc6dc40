"""A feature store never serves vectors that are not what its key and names promise: weights
overwritten in place, random weights, a flipped bit in a shard read in place, a vector that
scores what no cosine can, a shard holding another shard's items."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ComposeFn
from retrieval import models, pipeline
from retrieval.features import mapped
from retrieval.features.extract import NON_FINITE
from retrieval.features.keys import gallery_items
from retrieval.features.mapped import MappedRows, locate_member
from retrieval.features.store import SHARD_GLOB, ShardRows, Store, shard_name, write_shard
from retrieval.models import Embedder, create_model
from retrieval.models.effnet_lite import packaged_checkpoint
from retrieval.models.identity import random_weights_digest
from retrieval.ranking import Ranking
from retrieval.plan import RunPlan
from test_features import global_rep, make_records, run


def store_folder(cfg, split: str) -> Path:
    """The split's store, as the config's plan names it."""
    return RunPlan.from_config(cfg).stores[split].folder


def ranked(cfg) -> tuple[np.ndarray, np.ndarray]:
    ranking = Ranking.load(pipeline.ranking(cfg))
    return ranking.indices, ranking.scores


# --- the weights ------------------------------------------------------------------------------


def test_a_checkpoint_overwritten_in_place_gets_a_store_of_its_own(make_cfg: ComposeFn, tmp_path: Path) -> None:
    """Other weights of the same shapes (so the same size) under the same name, even with the
    old modification time put back: the store of the new weights, as a fresh cache has."""
    weights = tmp_path / "w.pt"
    state = torch.load(packaged_checkpoint(), map_location="cpu", weights_only=True)

    def save(noise: float) -> None:
        """The packaged weights, their kernels moved by `noise` standard deviations at random."""
        draw = torch.Generator().manual_seed(1)
        torch.save({name: value + noise * value.std() * torch.randn(value.shape, generator=draw) if value.dim() > 1
                    else value.clone() for name, value in state.items()}, weights)

    save(0.0)
    cfg = make_cfg(f"model.checkpoint={weights}")
    before = ranked(cfg)
    old = weights.stat()
    save(0.5)
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert weights.stat().st_size == old.st_size and weights.stat().st_mtime_ns == old.st_mtime_ns
    after = ranked(cfg)
    fresh = ranked(make_cfg(f"model.checkpoint={weights}", f"paths.cache={tmp_path / 'fresh'}"))
    assert not np.array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], fresh[0])
    np.testing.assert_array_equal(after[1], fresh[1])


def test_random_weights_are_one_network_and_their_store_is_keyed_by_it(make_cfg: ComposeFn, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every build of random weights is the same network (so queries and gallery, extracted by
    separate builds, are embedded alike) and shares its store; another random network (here: a
    library that initialises differently, played by another seed) never does."""
    first, second = (create_model("effnet_lite", pretrained=False, input_size=64) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    cfg = make_cfg("+model.pretrained=false")
    folder = store_folder(cfg, "gallery")
    random_weights_digest.cache_clear()
    assert store_folder(cfg, "gallery") == folder
    monkeypatch.setattr(models, "RANDOM_INIT_SEED", 1)
    random_weights_digest.cache_clear()
    assert store_folder(cfg, "gallery") != folder
    random_weights_digest.cache_clear()


# --- damaged shards under search.memory_budget -------------------------------------------------


def gallery_shard(cfg) -> Path:
    """The shard that holds the gallery's first image."""
    gallery = RunPlan.from_config(cfg).stores["gallery"]
    folder, key = gallery.folder, gallery.items[0].key
    store = Store(folder)
    store.missing([key])
    return folder / store._where[key][0]


def test_a_flipped_bit_in_a_mapped_shard_is_named_set_aside_and_rebuilt(
    make_cfg: ComposeFn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One bit flipped in every shard (the gallery's, mapped, and the queries', loaded): each is
    named and set aside in turn, and the run ranks as on clean vectors."""
    cfg = make_cfg("search.memory_budget=20MB")
    clean = ranked(cfg)
    shards = sorted({path for split in ("queries", "gallery") for path in store_folder(cfg, split).glob(SHARD_GLOB)})
    assert gallery_shard(cfg) in shards and len(shards) == 2
    flipped = {}
    for shard in shards:
        vectors = locate_member(shard, "vectors")
        data = bytearray(shard.read_bytes())
        data[vectors.offset + 3 * vectors.shape[1] * 4 + 3] ^= 0x40  # an exponent bit of row 3's first value
        shard.write_bytes(bytes(data))
        flipped[shard] = bytes(data)
    shutil.rmtree(tmp_path / "cache" / "rankings")
    with caplog.at_level(logging.WARNING):
        again = ranked(cfg)
    for shard, data in flipped.items():
        assert f"shard {shard} cannot be read (BadZipFile: Bad CRC-32 for file 'vectors.npy')" in caplog.text
        assert shard.with_name(shard.name + ".unreadable").read_bytes() == data
        assert shard.exists()  # rebuilt
    np.testing.assert_array_equal(again[0], clean[0])
    np.testing.assert_array_equal(again[1], clean[1])


@pytest.mark.parametrize(("budget", "value"), [("20MB", 1e20), (None, np.nan)])
def test_a_vector_no_cosine_allows_is_named_set_aside_and_rebuilt(
    make_cfg: ComposeFn, tmp_path: Path, caplog: pytest.LogCaptureFixture, budget: str | None, value: float
) -> None:
    """A shard whose CRC holds (written so) but one of whose vectors scores what no two unit
    vectors can: in memory and mapped alike, the search names it and sets it aside, and the
    run ranks as on clean vectors."""
    cfg = make_cfg(*([f"search.memory_budget={budget}"] if budget else []))
    clean = ranked(cfg)
    shard = gallery_shard(cfg)
    with np.load(shard) as data:
        arrays = dict(data)
    arrays["vectors"][3] *= value
    with open(shard, "wb") as handle:
        np.savez(handle, **arrays)
    shutil.rmtree(tmp_path / "cache" / "rankings")
    with caplog.at_level(logging.WARNING):
        again = ranked(cfg)
    image = RunPlan.from_config(cfg).dataset.gallery[3].key  # the shard holds the gallery in listing order
    assert f"shard {shard} holds a corrupt vector of {image} (it scores " in caplog.text
    assert shard.with_name(shard.name + ".corrupt").exists() and shard.exists()
    np.testing.assert_array_equal(again[0], clean[0])
    np.testing.assert_array_equal(again[1], clean[1])


def test_each_mapped_shard_is_verified_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [f"item-{n}" for n in range(6)]
    Store(tmp_path).build(keys, 2, fake_rows)
    checked: list[str] = []
    check = mapped._check_crc
    monkeypatch.setattr(mapped, "_check_crc", lambda path, name: checked.append(Path(path).name) or check(path, name))
    for _ in range(2):  # two searches of a run (search, then a re-rank step), each with its own Store
        assert isinstance(Store(tmp_path).gather(keys, keys, mapped=True).vectors, MappedRows)
    assert sorted(checked) == sorted(shard_name(keys[n : n + 2]) for n in (0, 2, 4))
    rewritten = tmp_path / shard_name(keys[:2])
    write_shard(rewritten, fake_rows(keys[:2]))  # another file under the name: checked again
    Store(tmp_path).gather(keys, keys, mapped=True)
    assert checked.count(rewritten.name) == 2 and len(checked) == 4


# --- a shard whose items are not its name's ---------------------------------------------------


def fake_rows(keys: list[str]) -> ShardRows:
    """One unit row per item: [1, 0] for item-0, [0, 1] for item-1, ... (cycling over 2 dims)."""
    vectors = np.eye(2, dtype=np.float32)[[int(key.split("-")[1]) % 2 for key in keys]]
    return ShardRows(keys, np.ones(len(keys), bool), np.ones(len(keys), np.int64), vectors, {}, 0.0)


@pytest.mark.parametrize("how", ["link", "copy"])
def test_a_shard_holding_another_shards_items_is_set_aside_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    keys = [f"item-{n}" for n in range(8)]
    Store(tmp_path).build(keys, 4, fake_rows)
    first, second = tmp_path / shard_name(keys[:4]), tmp_path / shard_name(keys[4:])
    first.unlink()
    if how == "link":
        first.symlink_to(second.name)
    else:
        shutil.copyfile(second, first)
    embedded: list[str] = []
    with caplog.at_level(logging.WARNING):
        assert Store(tmp_path).build(keys, 4, lambda chunk: embedded.extend(chunk) or fake_rows(chunk)) == 4
    assert embedded == keys[:4]
    assert f"shard {first} holds the items of {second.name}, not its own" in caplog.text
    assert os.path.lexists(first.with_name(first.name + ".misnamed"))
    assert sorted(path.name for path in tmp_path.glob(SHARD_GLOB)) == sorted([first.name, second.name])
    np.testing.assert_array_equal(Store(tmp_path).gather(keys, keys).vectors, fake_rows(keys).vectors)


# --- what a model gives that is not a vector ----------------------------------------------------


class NaNFirst(Embedder):
    """The wrapped model, but NaN for the first image of every batch."""

    def __init__(self, inner: Embedder):
        super().__init__(inner.preprocess, inner.dim)
        self.inner = inner

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.inner(images).clone()
        out[0] = torch.nan
        return out


def test_non_finite_vectors_are_a_counted_skip_never_stored(tmp_path: Path, lite0: Embedder) -> None:
    records = make_records(tmp_path / "data", range(4))
    items = gallery_items(records, tmp_path / "data")
    store = Store(tmp_path / "store")
    run(store, items, NaNFirst(lite0), global_rep(), batch_size=2)
    features = store.gather([item.key for item in items], [record.key for record in records])
    assert features.valid.tolist() == [False, True, False, True]
    assert features.errors == {0: NON_FINITE, 2: NON_FINITE}
    assert np.isfinite(features.vectors).all() and len(features.vectors) == 2
