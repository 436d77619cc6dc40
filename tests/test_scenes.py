"""Composed sets: determinism, the anns.pt format, and masks that match the pasted pixels.

Masks are decoded here by a decoder written for the test (not the module's or retrieval.masks'),
and pixel checks use objects of one flat colour each, so a mask that is off by a pixel fails.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ETH80
from retrieval.scenes import (
    ANNS,
    COMPOSE_JSON,
    BackgroundSource,
    ComposeSpec,
    Cutout,
    ObjectSource,
    compose,
    folder_objects,
    skimage_backgrounds,
)
from retrieval.scenes.cli import cli
from retrieval.scenes.write import builder_rle, coco_rle

TINY = ComposeSpec(scenes=6, instances=6, queries_per_instance=3, scene_size=(200, 150),
                   query_size=96, scene_format="png", seed=3)


def runs_to_mask(counts: list[int], size: tuple[int, int], column_major: bool) -> np.ndarray:
    """Independent decoder: runs alternate 0, 1, 0, ... starting with zeros."""
    flat = np.zeros(size[0] * size[1], dtype=bool)
    position, value = 0, False
    for run in counts:
        flat[position : position + run] = value
        position, value = position + run, not value
    assert position == flat.size, "runs do not cover the image exactly"
    return flat.reshape(size, order="F" if column_major else "C")


def query_mask(entry: dict) -> np.ndarray:
    rle = entry["mask"]
    assert rle["transpose"] is False and isinstance(rle["size"], tuple)
    return runs_to_mask(rle["counts"], rle["size"], column_major=False)


def gallery_masks(entry: dict) -> list[np.ndarray]:
    masks = []
    for rle in entry["mask"]:
        assert isinstance(rle["size"], list) and set(rle) == {"counts", "size"}
        masks.append(runs_to_mask(rle["counts"], tuple(rle["size"]), column_major=True))
    return masks


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def read_set(out: Path) -> tuple[dict, dict]:
    anns = torch.load(out / ANNS, weights_only=True)
    return anns, json.loads((out / COMPOSE_JSON).read_text())


def file_hashes(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def eth80_set(tmp_path_factory) -> Path:
    return compose(folder_objects(ETH80), skimage_backgrounds(), TINY, tmp_path_factory.mktemp("eth") / "set")


# --- RLE ------------------------------------------------------------------------------------


@pytest.mark.parametrize("corner", [False, True])
def test_rle_round_trips_through_an_independent_decoder(corner: bool) -> None:
    mask = np.random.default_rng(0).random((7, 5)) > 0.5
    mask[0, 0] = corner
    rows, cols = builder_rle(mask), coco_rle(mask)
    assert (rows["counts"][0] == 0) == corner  # a leading zero-run exactly when (0, 0) is set
    assert rows["size"] == (7, 5) and rows["transpose"] is False and cols["size"] == [7, 5]
    assert np.array_equal(runs_to_mask(rows["counts"], (7, 5), column_major=False), mask)
    assert np.array_equal(runs_to_mask(cols["counts"], (7, 5), column_major=True), mask)
    assert all(isinstance(c, int) for c in rows["counts"] + cols["counts"])


def test_rle_of_full_and_empty_masks() -> None:
    assert builder_rle(np.ones((2, 3), bool))["counts"] == [0, 6]
    assert coco_rle(np.zeros((2, 3), bool))["counts"] == [6]


# --- Format and ground truth on a tiny ETH-80 set ---------------------------------------------


def test_entries_follow_the_voxdet_format(eth80_set: Path) -> None:
    anns, summary = read_set(eth80_set)
    queries = {k: v for k, v in anns.items() if v["is_query"]}
    gallery = {k: v for k, v in anns.items() if not v["is_query"]}
    assert len(queries) == 6 * 3 and len(gallery) == 6
    for key, entry in anns.items():
        assert not Path(key).is_absolute() and (eth80_set / key).is_file()
        assert entry["set"] == "compose"
    for key, entry in queries.items():
        assert key.startswith("queries/") and isinstance(entry["ins"], int)
        assert isinstance(entry["bbox"], tuple) and all(type(v) is int for v in entry["bbox"])
    for key, entry in gallery.items():
        assert key.startswith("scenes/")
        count = len(entry["ins"])
        assert count >= 2 and len(entry["bbox"]) == len(entry["mask"]) == count
        assert entry["num_ins"] == [count] * count
        assert all(isinstance(box, tuple) and all(type(v) is int for v in box) for box in entry["bbox"])
    assert summary["counts"]["scenes"] == 6 and summary["counts"]["queries"] == 18


def test_masks_and_boxes_agree(eth80_set: Path) -> None:
    anns, _ = read_set(eth80_set)
    for key, entry in anns.items():
        height, width = Image.open(eth80_set / key).size[::-1]
        if entry["is_query"]:
            mask = query_mask(entry)
            assert mask.shape == (height, width)
            assert box_of(mask) == entry["bbox"]  # inclusive
            continue
        masks = gallery_masks(entry)
        for mask, box in zip(masks, entry["bbox"]):
            x1, y1, x2, y2 = box_of(mask)
            assert mask.shape == (height, width) and box == (x1, y1, x2 + 1, y2 + 1)  # exclusive
        assert (np.sum(masks, axis=0) <= 1).all(), f"{key}: visible masks overlap"


def test_area_fractions_within_the_requested_range(eth80_set: Path) -> None:
    anns, summary = read_set(eth80_set)
    low, high = TINY.area
    scene_area = TINY.scene_size[0] * TINY.scene_size[1]
    for scene in summary["scenes"]:
        masks = gallery_masks(anns[scene["file"]])
        assert len(masks) == len(scene["objects"])
        for obj, mask in zip(scene["objects"], masks):
            assert low <= obj["area_fraction"] <= high
            assert mask.sum() / scene_area == pytest.approx(obj["visible_fraction"], abs=1e-6)
            assert mask.sum() / scene_area >= (1 - TINY.max_occlusion) * obj["area_fraction"] - 1e-6


def test_query_views_are_never_used_in_scenes(eth80_set: Path) -> None:
    _, summary = read_set(eth80_set)
    in_scenes = defaultdict(set)
    for scene in summary["scenes"]:
        for obj in scene["objects"]:
            in_scenes[obj["instance"]].add(obj["view"])
    query_views = defaultdict(set)
    for query in summary["queries"]:
        query_views[query["instance"]].add(query["view"])
    assert len(query_views) == 6 and all(len(v) == 3 for v in query_views.values())
    for instance, views in query_views.items():
        assert not views & in_scenes[instance], instance


def test_distractors_share_a_category_and_have_no_queries(eth80_set: Path) -> None:
    _, summary = read_set(eth80_set)
    categories = {name: info["category"] for name, info in summary["instances"].items()}
    queried = {name for name, info in summary["instances"].items() if info["role"] == "query"}
    distractors = 0
    for scene in summary["scenes"]:
        targets = {categories[o["instance"]] for o in scene["objects"] if o["role"] == "target"}
        for obj in scene["objects"]:
            if obj["role"] == "distractor":
                distractors += 1
                assert categories[obj["instance"]] in targets and obj["instance"] not in queried
    assert distractors > 0


def test_same_seed_gives_identical_files_and_another_seed_does_not(eth80_set: Path, tmp_path: Path) -> None:
    again = compose(folder_objects(ETH80), skimage_backgrounds(), TINY, tmp_path / "again")
    assert file_hashes(again) == file_hashes(eth80_set)
    other = compose(folder_objects(ETH80), skimage_backgrounds(), replace(TINY, seed=4), tmp_path / "other")
    assert file_hashes(other) != file_hashes(eth80_set)


def test_rerun_is_a_no_op_and_new_parameters_replace_the_set(tmp_path: Path) -> None:
    spec = replace(TINY, scenes=2, instances=2, queries_per_instance=1)
    out = compose(folder_objects(ETH80), skimage_backgrounds(), spec, tmp_path / "set")
    stamp = (out / ANNS).stat().st_mtime_ns
    compose(folder_objects(ETH80), skimage_backgrounds(), spec, out)
    assert (out / ANNS).stat().st_mtime_ns == stamp
    compose(folder_objects(ETH80), skimage_backgrounds(), replace(spec, scenes=3), out)
    assert read_set(out)[1]["counts"]["scenes"] == 3 and len(list((out / "scenes").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary folders left


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        compose(folder_objects(ETH80), skimage_backgrounds(), replace(TINY, scenes=1), tmp_path / "set")
    assert (tmp_path / "set" / "notes.txt").read_text() == "mine"


# --- Pixels: flat-coloured objects on black, no lighting jitter --------------------------------

COLOURS = {"ball1": (250, 20, 20), "ball2": (20, 250, 20), "box1": (20, 20, 250), "box2": (250, 250, 20)}


def flat_objects() -> ObjectSource:
    """Discs and squares of one colour each, over their whole crop."""
    def read(instance: str, view: str) -> Cutout:
        size = 40 + 10 * int(view)
        yy, xx = np.mgrid[:size, :size]
        mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2) ** 2 if instance.startswith("ball") \
            else np.pad(np.ones((size - 8, size - 8), bool), 4)
        return Cutout(np.full((size, size, 3), COLOURS[instance], np.uint8), mask)

    return ObjectSource("flat", {name: ("0", "1", "2") for name in COLOURS}, read)


def test_masks_are_exactly_the_visible_pasted_pixels(tmp_path: Path) -> None:
    black = BackgroundSource("black", ("black",), lambda name: np.zeros((60, 80, 3), np.uint8))
    spec = ComposeSpec(scenes=8, queries_per_instance=1, objects_per_scene=(3, 4), distractors_per_scene=(0, 0),
                       scene_size=(160, 120), query_size=64, area=(0.03, 0.1), overlap=1.0, lighting=0.0,
                       scene_format="png", set_name="flat")
    out = compose(flat_objects(), black, spec, tmp_path / "flat")
    anns, summary = read_set(out)
    ids = {name: info["ins"] for name, info in summary["instances"].items()}
    occluded = 0
    for scene in summary["scenes"]:
        pixels = np.asarray(Image.open(out / scene["file"]))
        entry = anns[scene["file"]]
        for obj, ins, mask in zip(scene["objects"], entry["ins"], gallery_masks(entry)):
            assert ins == ids[obj["instance"]]
            assert np.array_equal((pixels == COLOURS[obj["instance"]]).all(axis=2), mask), scene["file"]
            occluded += obj["occluded_fraction"] > 0
    assert occluded > 0, "no occlusion happened, so the visible-part logic went untested"
    for query in summary["queries"]:
        pixels = np.asarray(Image.open(out / query["file"]))
        mask = query_mask(anns[query["file"]])
        assert np.array_equal((pixels == COLOURS[query["instance"]]).all(axis=2), mask)


# --- Loading, demo set and CLI ----------------------------------------------------------------


def test_composed_set_loads_through_the_anns_reader(eth80_set: Path) -> None:
    pytest.importorskip("retrieval.datasets.anns")
    from retrieval.datasets import load_dataset

    dataset = load_dataset("anns", root=eth80_set, name="tiny")
    _, summary = read_set(eth80_set)
    assert len(dataset.queries) == 18 and len(dataset.gallery) == 6 and not dataset.skipped
    holders = defaultdict(set)
    for scene in summary["scenes"]:
        for obj in scene["objects"]:
            holders[f"compose/{obj['ins']}"].add(scene["file"])
    for query, truth in zip(dataset.queries, dataset.truth["all"]):
        found = {dataset.gallery[i].key for i in truth.positives}
        assert found == holders[query.instances[0].id], query.key


def test_demo_set_is_generated_once_and_loads(tmp_path: Path) -> None:
    pytest.importorskip("retrieval.datasets.anns")
    from retrieval.datasets import available, load_dataset

    assert "built-in demo set" in available()["demo"]
    dataset = load_dataset("demo", cache=tmp_path, seed=0)
    assert dataset.name == "demo" and len(dataset.queries) == 40 and len(dataset.gallery) == 40
    assert all(len(truth.positives) > 0 for truth in dataset.truth["all"])
    (root,) = (tmp_path / "demo").iterdir()
    stamp = (root / ANNS).stat().st_mtime_ns
    load_dataset("demo", cache=tmp_path, seed=0)
    assert (root / ANNS).stat().st_mtime_ns == stamp


def test_cli_composes_and_reports_counts(tmp_path: Path, capsys) -> None:
    argv = ["--objects", str(ETH80), "--out", str(tmp_path / "cli"), "--scenes", "2", "--instances", "2",
            "--queries-per-instance", "1", "--size", "160", "120", "--query-size", "64", "--seed", "1"]
    assert cli(argv) == 0
    assert "2 queries of 2 instances, 2 scenes" in capsys.readouterr().out
    params = read_set(tmp_path / "cli")[1]["params"]
    assert params["scene_size"] == [160, 120] and params["seed"] == 1 and params["area"] == [0.005, 0.05]
    assert cli(argv) == 0 and "up to date" in capsys.readouterr().out
