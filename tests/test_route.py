"""The route set (`retrieval.scenes.route`): crops are where their names say, positives are the
database crops within the radius, a seed fixes the set, and evaluate runs on it."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from retrieval.datasets.vpr import load
from retrieval.scenes.route import ROUTE_JSON, RouteSpec, build_route, read_photo
from tests.fixtures_protocols import run_evaluate

SMALL = RouteSpec(photos=("coffee", "motorcycle"), photo_height=240, crop=100, step=20.0, queries_per_photo=5)
"""Two photos (one the stereo pair) at a small size: 30 database crops, 10 queries."""
STILL = replace(SMALL, rotation=0.0, zoom=1.0, tilt=0.0, image_format="png")
"""No synthetic viewpoint change (lighting still changes), lossless: crops can be found again."""


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_route(SMALL, tmp_path_factory.mktemp("route") / "set")


def manifest(root: Path) -> dict:
    return json.loads((root / ROUTE_JSON).read_text())


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("radius", [25.0, 45.0])
def test_positives_are_exactly_the_database_crops_within_the_radius(small_set: Path, radius: float) -> None:
    dataset = load(small_set, radius_m=radius)
    made = manifest(small_set)
    by_key = {entry["file"]: entry for entry in made["database"] + made["queries"]}
    gallery = [by_key[record.key] for record in dataset.gallery]
    assert len(dataset.queries) == len(made["queries"]) == 10 and len(gallery) == len(made["database"])
    for record, truth in zip(dataset.queries, dataset.truth["all"]):
        query = by_key[record.key]
        expected = [i for i, crop in enumerate(gallery) if crop["photo"] == query["photo"]
                    and np.hypot(crop["x"] - query["x"], crop["y"] - query["y"]) <= radius]
        assert truth.positives.tolist() == expected
        assert expected, "every query lies within step/2 + lateral of a database crop"


def test_database_crops_are_every_step_along_the_path(small_set: Path) -> None:
    for photo in SMALL.photos:
        centres = np.array([[c["x"], c["y"]] for c in manifest(small_set)["database"] if c["photo"] == photo])
        gaps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
        assert np.allclose(gaps, SMALL.step, atol=0.02)
        height, width = read_photo(photo, SMALL.photo_height).rgb.shape[:2]
        assert centres.min() >= SMALL.crop / 2 - 0.01
        assert (centres.max(axis=0) <= [width - SMALL.crop / 2 + 0.01, height - SMALL.crop / 2 + 0.01]).all()


def found_at(photo: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """Centre of the best match of `crop` in `photo` (normalised cross-correlation)."""
    scores = cv2.matchTemplate(photo, crop, cv2.TM_CCOEFF_NORMED)
    _, _, _, corner = cv2.minMaxLoc(scores)
    return np.array(corner) + crop.shape[1] / 2


def test_crops_show_the_photo_where_their_names_say(tmp_path: Path) -> None:
    root = build_route(STILL, tmp_path / "still")
    made = manifest(root)
    for entry in made["database"] + made["queries"]:
        crop = np.asarray(Image.open(root / entry["file"]))
        found = found_at(read_photo(entry["photo"], STILL.photo_height).rgb, crop)
        error = found - [entry["x"], entry["y"]]
        if entry.get("camera") == "right":  # the other camera: parallax inside the crop, rows aligned
            assert abs(error[0]) <= 0.15 * STILL.crop and abs(error[1]) <= 1, entry
        else:
            assert np.abs(error).max() <= 0.6, entry
    assert sum(e.get("camera") == "right" for e in made["queries"]) == STILL.queries_per_photo


def test_queries_change_viewpoint_and_lighting(small_set: Path) -> None:
    queries = manifest(small_set)["queries"]
    warped = [q for q in queries if "angle" in q]
    assert len(warped) == SMALL.queries_per_photo and all(abs(q["angle"]) <= SMALL.rotation for q in warped)
    assert len({q["angle"] for q in warped}) == len(warped)
    assert all(q["lighting"]["gamma"] != 1 for q in queries)


def test_same_seed_gives_identical_files_and_another_seed_does_not(small_set: Path, tmp_path: Path) -> None:
    assert file_hashes(build_route(SMALL, tmp_path / "again")) == file_hashes(small_set)
    assert file_hashes(build_route(replace(SMALL, seed=1), tmp_path / "other")) != file_hashes(small_set)


def test_rerun_is_a_no_op_and_new_parameters_replace_the_set(tmp_path: Path) -> None:
    spec = replace(SMALL, photos=("coffee",), queries_per_photo=1)
    out = build_route(spec, tmp_path / "set")
    stamp = (out / ROUTE_JSON).stat().st_mtime_ns
    build_route(spec, out)
    assert (out / ROUTE_JSON).stat().st_mtime_ns == stamp
    build_route(replace(spec, queries_per_photo=2), out)
    assert len(list((out / "queries").iterdir())) == 2 == manifest(out)["counts"]["queries"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary folders left


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_route(SMALL, tmp_path / "set")
    assert (tmp_path / "set" / "notes.txt").read_text() == "mine"


def test_photos_lie_too_far_apart_to_be_positives(small_set: Path) -> None:
    crops = manifest(small_set)["database"]
    coffee = np.array([[c["east"], c["north"]] for c in crops if c["photo"] == "coffee"])
    motorcycle = np.array([[c["east"], c["north"]] for c in crops if c["photo"] == "motorcycle"])
    assert np.linalg.norm(coffee[:, None] - motorcycle[None], axis=2).min() > 1000


def test_evaluate_runs_end_to_end_on_the_route(small_set: Path, tmp_path: Path) -> None:
    run = run_evaluate(tmp_path, "vpr", f"dataset.root='{small_set}'")
    metrics = json.loads((run / "metrics.json").read_text())
    positives = [t.positives for t in load(small_set).truth["all"]]
    with np.load(run / "ranking.npz") as ranking:
        indices = ranking["indices"]
    for n in (1, 5, 10):
        hits = np.mean([np.isin(row[:n], p).any() for row, p in zip(indices, positives)])
        assert metrics["summary"]["all"][f"hit@{n}"] == pytest.approx(hits)
    assert metrics["counts"]["all"]["n_queries"] == 10
    assert metrics["summary"]["all"]["hit@10"] >= 0.8  # chance: about 0.56 (10 of 30 crops, 1-2 positives)


def test_cli_writes_the_set_and_refuses_a_crop_larger_than_the_photo(tmp_path: Path, capsys) -> None:
    from retrieval.datasets.__main__ import main

    out = tmp_path / "cli"
    assert main(["route", "--out", str(out), "--photos", "coffee", "--photo-height", "160", "--crop", "80",
                 "--queries-per-photo", "2"]) == 0
    assert "database and 2 query crops of 1 photos" in capsys.readouterr().out
    assert manifest(out)["params"]["crop"] == 80
    with pytest.raises(SystemExit) as exit_:
        main(["route", "--out", str(tmp_path / "big"), "--crop", "500"])
    assert exit_.value.code == 2
    assert "error: crop 500 must be in 1..photo_height (400)" in capsys.readouterr().err
    assert not (tmp_path / "big").exists()
