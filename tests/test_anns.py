"""The anns.pt reader against files written by the original VoxDet-SoIR builder.

Ground truth is `expected.json` (computed by the fixture generator, never from anns.pt), the
mask PNGs on disk, and masks the tests build themselves.
"""
from __future__ import annotations

import json
import pickle
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pycocotools.mask as coco_mask
import pytest
import torch
from PIL import Image

from conftest import VOXDET_MINI as MINI, data_file
from retrieval import masks
from retrieval.datasets import available, load_dataset
from retrieval.datasets.anns import UnsafePickleError, load

VOXDET = MINI / "VoxDet"


@pytest.fixture(scope="module")
def expected() -> dict:
    """The ground truth the generator wrote (read here, so a checkout without it fails the tests
    that need it, naming the file)."""
    return json.loads(data_file(MINI / "expected.json").read_text())


@pytest.fixture(scope="module")
def full():
    return load(root=data_file(VOXDET), anns=data_file(MINI / "anns.pt"))


def png_mask(key: str) -> np.ndarray:
    """The query's mask PNG, read the way the builder does (channel 0, object = non-zero)."""
    path = VOXDET / key.replace("/rgb/", "/mask/")
    return np.asarray(Image.open(path))[..., 0] > 0


def positives(dataset, setup: str = "all") -> dict[str, list[str]]:
    return {
        query.key: sorted(dataset.gallery[i].key for i in truth.positives)
        for query, truth in zip(dataset.queries, dataset.truth[setup])
    }


def test_queries_match_expected(full, expected) -> None:
    assert len(full.queries) == 54
    assert sorted(full.query_keys) == sorted(expected["queries"])
    for query in full.queries:
        want = expected["queries"][query.key]
        (instance,) = query.instances
        assert query.group == want["set"]
        assert instance.id == f"{want['set']}/{want['ins']}"
        x1, y1, x2, y2 = want["bbox_xyxy_inclusive"]
        assert instance.box == (x1, y1, x2 + 1, y2 + 1)
        mask = masks.decode(instance.mask)
        assert list(mask.shape) == want["mask_size_hw"]
        assert int(mask.sum()) == want["mask_area"]
        assert np.array_equal(mask, png_mask(query.key)), query.key
        assert bool(mask[0, 0]) == want["mask_pixel00_is_object"]
    assert all(len(truth.junk) == 0 for truth in full.truth["all"])


def test_positives_are_same_set_gallery(full, expected) -> None:
    assert positives(full) == {key: q["gallery"] for key, q in expected["queries"].items()}


def test_gallery_boxes_and_masks(full, expected) -> None:
    assert sorted(full.gallery_keys) == sorted(expected["gallery"])
    for image in full.gallery:
        want = expected["gallery"][image.key]
        assert image.group == want["set"]
        found = Counter((instance.id, instance.box) for instance in image.instances)
        objects = {(f"{want['set']}/{o['ins']}", tuple(o["bbox_xyxy"])): o for o in want["objects"]}
        assert found == Counter(objects.keys()) and len(objects) == len(want["objects"])
        for instance in image.instances:
            if want["set"] == "RoboTools":
                assert instance.mask is None
                continue
            mask = masks.decode(instance.mask)
            obj = objects[(instance.id, instance.box)]
            assert mask.shape == (360, 480)
            assert masks.tight_box(mask) == tuple(obj["bbox_xyxy"])
            assert int(mask.sum()) == obj["visible_area"]


def test_leading_zero_masks_repaired(full, expected) -> None:
    corner = sorted(key for key, q in expected["queries"].items() if q["mask_pixel00_is_object"])
    assert len(corner) == 2
    assert full.extra["mask_repairs"] == 2
    assert full.extra["repaired_queries"] == corner
    assert full.extra["mask_box_mismatches"] == [] and full.extra["empty_query_masks"] == []


def test_foreign_absolute_paths_rerooted(full) -> None:
    assert full.extra["rerooted_paths"] == 102
    assert full.skipped == []
    for record in full.queries + full.gallery:
        assert record.path == VOXDET / record.key and record.path.is_file()


def test_robotools_file_and_sets_filter(full, expected) -> None:
    robotools = load_dataset("anns", root=VOXDET, anns=data_file(MINI / "anns_robotools.pt"), name="robotools")
    assert "anns" in available()
    assert robotools.name == "robotools"
    assert (len(robotools.queries), len(robotools.gallery)) == (26, 24)
    assert {r.group for r in robotools.queries + robotools.gallery} == {"RoboTools"}
    want = {key: q["gallery"] for key, q in expected["queries"].items() if q["set"] == "RoboTools"}
    assert positives(robotools) == want
    filtered = load(root=VOXDET, anns=MINI / "anns.pt", sets=["RoboTools"])
    assert positives(filtered) == want and filtered.gallery_keys == robotools.gallery_keys
    single = load(root=VOXDET, anns=MINI / "anns.pt", sets="RoboTools")
    assert single.query_keys == filtered.query_keys
    owid = load(root=VOXDET, anns=MINI / "anns.pt", sets=["OWID"])
    assert (len(owid.queries), len(owid.gallery)) == (28, 24)
    with pytest.raises(ValueError, match="RoboTools"):
        load(root=VOXDET, anns=MINI / "anns.pt", sets=["robotools"])


def test_missing_root_shows_layout(tmp_path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        load(root=tmp_path / "nowhere")
    message = str(error.value)
    layout = ("OWID/P1/<cat_id>", "OWID/P2/images", "RoboTools/test_video", "RoboTools/test/")
    for part in ("anns.pt", "dataset.root=", *layout):
        assert part in message
    with pytest.raises(FileNotFoundError, match="dataset.anns"):
        load(root=tmp_path)


# A small dataset written by the tests: every mask encoding, paths in every form.

H, W = 16, 20


def builder_runs(mask: np.ndarray) -> list[int]:
    """The builder's row-major RLE: runs start with pixel (0, 0)'s value (no leading zero-run)."""
    flat = mask.ravel().tolist()
    counts, length = [], 1
    for previous, pixel in zip(flat, flat[1:]):
        if pixel == previous:
            length += 1
        else:
            counts.append(length)
            length = 1
    return counts + [length]


def box_mask(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def inclusive(x1: int, y1: int, x2: int, y2: int) -> tuple:
    return tuple(np.int64(v) for v in (x1, y1, x2 - 1, y2 - 1))


def write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def small(tmp_path):
    """(root, anns dict, masks by name) of a tiny VoxDet layout under tmp_path."""
    root = tmp_path / "VoxDet"
    foreign = "/elsewhere/machine/VoxDet"
    corner = box_mask(0, 0, 5, 4)  # touches pixel (0, 0): the builder drops the leading zero-run
    column = box_mask(3, 2, 9, 12)
    shapes = {
        "dense": box_mask(1, 1, 4, 6),
        "tensor": box_mask(10, 2, 15, 7),
        "polygon": box_mask(6, 8, 11, 14),
        "compressed": box_mask(12, 9, 19, 15),
        "uncompressed": box_mask(0, 0, 2, 3),
    }
    write_image(root / "OWID/P1/7/rgb/000001.png")
    write_image(root / "OWID/P1/7/rgb/000002.png")
    write_image(root / "OWID/P1/7/rgb/000004.png")
    q3 = write_image(root / "OWID/P1/7/rgb/000003.png")
    write_image(root / "OWID/P2/images/000000.jpg")
    write_image(root / "RoboTools/test/L01/rgb/000000.jpg")
    compressed = coco_mask.encode(np.asfortranarray(shapes["compressed"].astype(np.uint8)))
    column_counts = builder_runs(column.T)  # column-major; pixel (0, 0) is background
    uncompressed_counts = [0] + builder_runs(shapes["uncompressed"].T)
    anns = {
        f"{foreign}/OWID/P1/7/rgb/000001.png": {
            "bbox": inclusive(0, 0, 5, 4),
            "mask": {"counts": builder_runs(corner), "size": (H, W), "transpose": False},
            "is_query": True, "ins": np.int64(7), "set": "OWID",
        },
        "OWID/P1/7/rgb/000002.png": {  # relative; a dict without `transpose` is column-major
            "bbox": inclusive(3, 2, 9, 12),
            "mask": {"counts": column_counts, "size": [H, W]},
            "is_query": True, "ins": 7, "set": "OWID",
        },
        str(q3): {  # empty mask: the builder writes (0, 0, W, H)
            "bbox": (np.int64(0), np.int64(0), np.int64(W), np.int64(H)),
            "mask": {"counts": [H * W], "size": (H, W), "transpose": False},
            "is_query": True, "ins": 7, "set": "OWID",
        },
        f"{foreign}/OWID/P1/7/rgb/000004.png": {  # no mask at all: the bbox still counts
            "bbox": inclusive(2, 3, 6, 9), "mask": [], "is_query": True, "ins": 7, "set": "OWID",
        },
        f"{foreign}/OWID/P2/images/000000.jpg": {
            "bbox": [(1, 1, 4, 6), (10, 2, 15, 7), (6, 8, 11, 14), (12, 9, 19, 15), (0, 0, 2, 3)],
            "ins": [7, 8, 9, 7, 10],
            "num_ins": [5] * 5,
            "mask": [
                shapes["dense"].astype(np.uint8),
                torch.from_numpy(shapes["tensor"]),
                [[6, 8, 11, 8, 11, 14, 6, 14]],
                compressed,
                {"counts": uncompressed_counts, "size": [H, W]},
            ],
            "is_query": False, "set": "OWID",
        },
        f"{foreign}/RoboTools/test/L01/rgb/000000.jpg": {
            "bbox": [(2, 2, 8, 8)], "ins": [7], "num_ins": [], "mask": [],
            "is_query": False, "set": "RoboTools",
        },
        f"{foreign}/OWID/P2/images/999999.jpg": {
            "bbox": [(0, 0, 1, 1)], "ins": [7], "num_ins": [1], "mask": [],
            "is_query": False, "set": "OWID",
        },
    }
    return root, anns, {"corner": corner, "column": column, **shapes}


def test_mask_forms_boxes_and_paths(small) -> None:
    root, anns, made = small
    torch.save(anns, root / "anns.pt")
    dataset = load(root=root)
    queries = {q.key: q.instances[0] for q in dataset.queries}
    assert sorted(queries) == [f"OWID/P1/7/rgb/00000{i}.png" for i in (1, 2, 3, 4)]
    corner, column, empty, unmasked = (queries[f"OWID/P1/7/rgb/00000{i}.png"] for i in (1, 2, 3, 4))
    assert corner.box == (0, 0, 5, 4) and np.array_equal(masks.decode(corner.mask), made["corner"])
    assert column.box == (3, 2, 9, 12) and np.array_equal(masks.decode(column.mask), made["column"])
    assert empty.box == (0, 0, W, H) and empty.mask is None
    assert unmasked.box == (2, 3, 6, 9) and unmasked.mask is None
    assert dataset.extra["repaired_queries"] == ["OWID/P1/7/rgb/000001.png"]
    assert dataset.extra["empty_query_masks"] == ["OWID/P1/7/rgb/000003.png"]

    assert dataset.gallery_keys == [
        "OWID/P2/images/000000.jpg",
        "RoboTools/test/L01/rgb/000000.jpg",
    ]
    owid, robotools = dataset.gallery
    names = ["dense", "tensor", "polygon", "compressed", "uncompressed"]
    for name, instance in zip(names, owid.instances):
        assert np.array_equal(masks.decode(instance.mask), made[name]), name
        assert masks.tight_box(made[name]) == instance.box
    assert [i.id for i in owid.instances] == ["OWID/7", "OWID/8", "OWID/9", "OWID/7", "OWID/10"]
    assert robotools.instances[0].id == "RoboTools/7" and robotools.instances[0].mask is None

    ((missing, reason),) = dataset.skipped
    assert missing == "/elsewhere/machine/VoxDet/OWID/P2/images/999999.jpg"
    assert "not found" in reason
    assert dataset.extra["rerooted_paths"] == 4
    assert [list(t.positives) for t in dataset.truth["all"]] == [[0]] * 4  # not the RoboTools id 7


def test_safe_loading_refuses_arbitrary_objects(small) -> None:
    root, anns, _ = small
    anns["OWID/P1/7/rgb/000002.png"]["note"] = Fraction(1, 3)
    torch.save(anns, root / "anns.pt")
    with pytest.raises(UnsafePickleError, match="dataset.trusted=true") as error:
        load(root=root)
    assert isinstance(error.value, pickle.UnpicklingError)
    assert "fractions.Fraction" in str(error.value)
    assert len(load(root=root, trusted=True).queries) == 4


def test_numpy_1_pickle_names_allowed(small, tmp_path) -> None:
    """Files written under numpy 1.x name `numpy.core.multiarray`; they are as harmless."""
    root, anns, _ = small
    torch.save(anns, tmp_path / "new.pt", _use_new_zipfile_serialization=False)
    blob = (tmp_path / "new.pt").read_bytes()
    assert b"numpy._core" in blob
    (tmp_path / "old.pt").write_bytes(blob.replace(b"numpy._core", b"numpy.core"))
    dataset = load(root=root, anns=tmp_path / "old.pt")
    assert len(dataset.queries) == 4 and dataset.queries[0].instances[0].box == (0, 0, 5, 4)
