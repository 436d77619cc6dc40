"""dataset.distractors: images after any dataset's gallery, never positives, embedded once."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from retrieval import config
from retrieval.datasets import load_dataset
from retrieval.datasets.distractors import DistractorError, labelled, list_distractors, with_distractors
from retrieval.errors import UserError
from retrieval.leaderboard import read_rows
from retrieval.plan import model as model_spec
from retrieval.protocols import score
from retrieval.protocols.localisation import add_localisation
from retrieval.ranking import Ranking
from retrieval.records import Dataset
from retrieval.plan.dataset import run_dataset
from retrieval.queries.spec import query_spec
from tests.conftest import ETH80, VOXDET_MINI, copy_eth80, data_file
from tests.fixtures_protocols import (
    GL3D_PAIRS,
    REPO,
    compute_map,
    gl3d_map,
    make_gl3d,
    make_pixel_labels,
    make_revisitop,
    make_revisitop1m,
    make_vpr_utm,
    revisitop_gnd_t,
    run_evaluate,
)
from tests.test_patterncom import make_patterncom

PHOTOS = {"b.png": "pear1/pear1-000-000.png", "a/z.png": "dog1/dog1-045-180.png", "c.png": "car1/car1-090-068.png"}
"""Distractor file (under the folder) -> the ETH-80 photo it copies."""
LISTED = ["a/z.png", "b.png", "c.png"]
"""The folder's images as listed: sorted by relative path, the hidden one and the text left out."""


@pytest.fixture
def distractors(tmp_path: Path) -> Path:
    folder = tmp_path / "distractors"
    for name, photo in PHOTOS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_file(ETH80 / "images" / photo), folder / name)
    shutil.copyfile(folder / "b.png", folder / ".hidden.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def configured(tmp_path: Path, preset: str, *overrides: str) -> Dataset:
    """The dataset of `preset` as the stages load it, from a checked config."""
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        cfg = compose("config", overrides=[f"dataset={preset}", f"paths.cache='{tmp_path / 'cache'}'", *overrides])
    tree = config.resolve(cfg)
    return run_dataset(tree["dataset"], query_spec(tree["query"]).file)


# ------------------------------------------------------------------ listing


def test_a_folder_lists_its_images_sorted_hidden_files_and_others_left_out(distractors):
    listing = list_distractors(str(distractors))
    assert listing.images == [distractors / name for name in LISTED]
    assert listing.skipped == []
    assert list_distractors([distractors / "c.png", distractors]).images[:2] == [distractors / "c.png", distractors / "a/z.png"]


def test_a_list_file_keeps_its_order_missing_entries_are_counted_skips(tmp_path, distractors):
    list_file = tmp_path / "lists" / "mine.txt"
    list_file.parent.mkdir()
    shutil.copyfile(distractors / "c.png", tmp_path / "lists" / "c.png")
    list_file.write_text(f"c.png\n\n{distractors / 'b.png'}\n  gone.png  \n../distractors/a/z.png\n")
    listing = list_distractors(str(list_file))
    assert listing.images == [tmp_path / "lists" / "c.png", distractors / "b.png", distractors / "a" / "z.png"]
    assert len(listing.skipped) == 1
    path, reason = listing.skipped[0]
    assert path == str(tmp_path / "lists" / "gone.png") and "missing file" in reason and str(list_file) in reason


def test_the_r1m_release_is_read_through_its_list_found_under_the_dataset_root(tmp_path, monkeypatch):
    names = make_revisitop1m(tmp_path, count=4)
    monkeypatch.chdir(tmp_path / "revisitop1m" / "jpg")  # "revisitop1m" is not here: looked up under root
    expected = [tmp_path / "revisitop1m" / "jpg" / name for name in names]  # the list's order
    assert list_distractors("revisitop1m", root=tmp_path).images == expected
    assert list_distractors(str(tmp_path / "revisitop1m" / "revisitop1m.txt")).images == expected


@pytest.mark.parametrize("make, message", [
    (lambda folder: folder / "nowhere", "no such folder or list"),
    (lambda folder: folder, "no image under"),  # only a text file in it
    (lambda folder: folder / "empty.txt", "empty.txt lists no image"),
    (lambda folder: folder / "stale.txt", "none of the 2 paths stale.txt lists is an image file"),
    (lambda folder: folder / "binary.txt", "binary.txt is not a text list of image paths"),
    (lambda folder: folder / "pipe.txt", "pipe.txt is a FIFO (named pipe)"),
])
def test_a_source_without_images_names_the_option(tmp_path, make: Callable[[Path], Path], message: str):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    (folder / "empty.txt").write_text("\n\n")
    (folder / "stale.txt").write_text("moved/a.jpg\nmoved/b.jpg\n")
    (folder / "binary.txt").write_bytes(bytes(range(128, 256)))
    os.mkfifo(folder / "pipe.txt")
    source = str(make(folder))
    with pytest.raises(UserError) as caught:
        list_distractors(source)
    assert isinstance(caught.value, DistractorError)
    text = str(caught.value)
    assert text.startswith(f"dataset.distractors={source}: ") and message in text


def test_images_of_the_dataset_and_repeats_are_dropped_and_counted(tmp_path, distractors):
    root = copy_eth80(tmp_path / "photos")
    plain = load_dataset("folder", root=root)
    own = root / "images" / "cup1" / "cup1-000-000.png"
    listed = tmp_path / "again.txt"
    listed.write_text(f"{own}\n{distractors / 'b.png'}\n")
    linked = tmp_path / "links" / "cup.png"
    linked.parent.mkdir()
    linked.symlink_to(own)
    sources = [str(distractors), str(root / "images" / "apple1"), str(listed), str(linked.parent)]
    dataset = with_distractors(plain, list_distractors(sources))
    assert [record.path for record in dataset.gallery[len(plain.gallery):]] == [distractors / name for name in LISTED]
    assert dataset.extra["n_distractors"] == 3
    assert dataset.extra["n_distractors_dropped"] == 6  # apple1's 3 views, a cup1 view, a link to it; b.png again
    assert len(set(dataset.gallery_keys)) == len(dataset.gallery)


def test_the_label_says_how_many_distractors():
    def with_count(count: int) -> Dataset:
        return Dataset("roxford5k", Path("."), [], [], {}, extra={"n_distractors": count} if count else {})

    assert [labelled(with_count(n)) for n in (0, 4, 12_500, 1_001_001)] == [
        "roxford5k", "roxford5k+4", "roxford5k+12.5k", "roxford5k+1M",
    ]


# ------------------------------------------------------------------ every format


FORMATS: dict[str, tuple[Callable[[Path], object] | None, tuple[str, ...]]] = {
    "demo": (None, ()),
    "folder": (copy_eth80, ()),
    "anns": (None, (f"dataset.root='{VOXDET_MINI / 'VoxDet'}'", f"dataset.anns='{VOXDET_MINI / 'anns_robotools.pt'}'")),
    "roxford5k": (make_revisitop, ()),
    "vpr": (make_vpr_utm, ()),
    "gl3d": (make_gl3d, ()),
    "patterncom": (make_patterncom, ()),
}
"""Preset -> what writes its data into dataset.root (None: the preset's own data), and overrides."""


@pytest.mark.parametrize("preset", FORMATS)
def test_every_format_takes_distractors_after_its_gallery_with_its_truth_unchanged(tmp_path, distractors, preset):
    write, settings = FORMATS[preset]
    if write is not None:
        write(tmp_path / "data")
        settings = (*settings, f"dataset.root='{tmp_path / 'data'}'")
    plain = configured(tmp_path, preset, *settings)
    dataset = configured(tmp_path, preset, *settings, f"dataset.distractors='{distractors}'")
    n = len(plain.gallery)
    assert dataset.gallery[:n] == plain.gallery and dataset.queries == plain.queries
    assert [record.path for record in dataset.gallery[n:]] == [distractors / name for name in LISTED]
    assert all(record.instances == () for record in dataset.gallery[n:])
    assert [record.key for record in dataset.gallery[n:]] == [str(distractors / name) for name in LISTED]  # outside root
    assert dataset.truth.keys() == plain.truth.keys()
    for setup, truths in plain.truth.items():
        for before, after in zip(truths, dataset.truth[setup], strict=True):
            assert np.array_equal(before.positives, after.positives) and np.array_equal(before.junk, after.junk)
            assert np.all(after.positives < n) and np.all(after.junk < n)
    assert dataset.extra["n_distractors"] == len(LISTED)


def test_a_query_file_cannot_name_a_distractor_as_a_positive(tmp_path, distractors):
    root = copy_eth80(tmp_path / "photos")
    query_file = tmp_path / "queries.csv"
    query_file.write_text(f"id,text,positives\nq1,a pear,{distractors / 'b.png'}\n")
    with pytest.raises(UserError, match="is not an image of the gallery of folder"):
        configured(tmp_path, "folder", f"dataset.root='{root}'", f"dataset.distractors='{distractors}'",
                   "model=clip_vit_b32", "query=text", f"query.file='{query_file}'")


# ------------------------------------------------------------------ scoring: distractors are misses


def distractors_first(dataset: Dataset, n_own: int, setup: str) -> np.ndarray:
    """Per query: every distractor, then its positives, then the rest of the gallery."""
    rows = []
    for truth in dataset.truth[setup]:
        positives = truth.positives.tolist()
        rest = [g for g in range(n_own) if g not in set(positives)]
        rows.append(list(range(n_own, len(dataset.gallery))) + positives + rest)
    return np.asarray(rows, dtype=np.int64)


def ranking_of(dataset: Dataset, indices: np.ndarray) -> Ranking:
    return Ranking(indices=indices, scores=-np.arange(indices.size, dtype=np.float32).reshape(indices.shape),
                   query_ids=np.array(dataset.query_keys), gallery_ids=np.array(dataset.gallery_keys))


def ap_after(misses: int, npos: int) -> float:
    """Non-interpolated AP of `npos` positives ranked straight after `misses` negatives."""
    return float(np.mean([i / (misses + i) for i in range(1, npos + 1)]))


def test_instance_protocol_scores_distractors_as_misses(tmp_path, distractors):
    plain = load_dataset("folder", root=copy_eth80(tmp_path / "photos"))
    dataset = with_distractors(plain, list_distractors(str(distractors)))
    d = len(LISTED)
    summary = score(ranking_of(dataset, distractors_first(dataset, len(plain.gallery), "all")), dataset).summary["all"]
    expected = [ap_after(d, truth.positives.size) for truth in plain.truth["all"] if truth.positives.size]
    assert summary["mAP"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert summary["hit@1"] == 0 and summary["P@1"] == 0 and summary["hit@5"] == 1  # 2 positives each


def test_revisitop_scores_and_localises_distractors_as_misses(tmp_path, distractors):
    gnd = make_revisitop(tmp_path, "roxford5k")
    labelled_boxes = make_pixel_labels(tmp_path / "labels", gnd)
    plain = load_dataset("revisitop", root=tmp_path, name="roxford5k", pixel_labels=tmp_path / "labels")
    dataset = with_distractors(plain, list_distractors(str(distractors)))
    for setup in ("easy", "medium", "hard"):
        indices = distractors_first(dataset, len(plain.gallery), setup)
        ranking = ranking_of(dataset, indices)
        # each labelled positive's exact box, the whole image elsewhere
        ranking.boxes = np.array([[labelled_boxes.get(f"{q}_{g}", (0, 0, 48, 36)) for g in row]
                                  for q, row in enumerate(indices.tolist())], dtype=np.float32)
        result = add_localisation(score(ranking, dataset), ranking, dataset, pixel_reference=True).summary[setup]
        expected_map, expected_mp = compute_map(indices.T, revisitop_gnd_t(gnd["gnd"], setup), [1, 5, 10])
        assert result["mAP"] == pytest.approx(expected_map, abs=1e-12)
        assert [result[f"mP@{k}"] for k in (1, 5, 10)] == pytest.approx(list(expected_mp), abs=1e-12)
        assert result["box_mAP@0"] == pytest.approx(expected_map, abs=1e-12)
        if setup != "easy":  # every positive passes every IoU threshold: the reference's mAP is the same
            assert result["reference_box_mAP@50:95"] == pytest.approx(expected_map, abs=1e-12)


def test_vpr_distractors_have_no_position_and_are_never_hits(tmp_path, distractors):
    make_vpr_utm(tmp_path)
    plain = load_dataset("vpr", root=tmp_path, positives="utm")
    dataset = with_distractors(plain, list_distractors(str(distractors)))
    summary = score(ranking_of(dataset, distractors_first(dataset, len(plain.gallery), "all")), dataset, ns=(1, 3, 4)).summary["all"]
    found = np.mean([truth.positives.size > 0 for truth in plain.truth["all"]])
    assert (summary["hit@1"], summary["hit@3"], summary["hit@4"]) == (0, 0, pytest.approx(found))


def test_gl3d_counts_distractors_as_misses_within_its_depth(tmp_path, distractors):
    names, _ = make_gl3d(tmp_path)
    plain = load_dataset("gl3d", root=tmp_path)
    dataset = with_distractors(plain, list_distractors(str(distractors)))
    indices = distractors_first(dataset, len(plain.gallery), "all")
    summary = score(ranking_of(dataset, indices), dataset, ap="reference").summary["all"]
    results = [f"{i} {j}" for i, row in enumerate(indices.tolist()) for j in row[:200]]
    pairs = [line for line in GL3D_PAIRS.splitlines() if line.strip()]
    assert summary["mAP@200"] == pytest.approx(gl3d_map(len(names), pairs, results), abs=1e-12)


def test_patterncom_counts_distractors_as_misses(tmp_path, distractors):
    make_patterncom(tmp_path)
    plain = load_dataset("patterncom", root=tmp_path)
    dataset = with_distractors(plain, list_distractors(str(distractors)))
    result = score(ranking_of(dataset, distractors_first(dataset, len(plain.gallery), "all")), dataset)
    expected = [round(100 * ap_after(len(LISTED), t.positives.size), 2) / 100 if t.positives.size else np.nan
                for t in plain.truth["all"]]
    assert result.per_query["ap"].to_numpy() == pytest.approx(np.array(expected), nan_ok=True, abs=1e-12)


# ------------------------------------------------------------------ pipeline


def test_distractors_are_embedded_once_across_reruns_and_datasets(tmp_path, monkeypatch, lite0, distractors):
    """roxford5k, then roxford5k +distractors (only they are new), then rparis6k with the same
    distractors (only its own images are new): the 5k part and the distractors each once."""
    from retrieval import pipeline
    from retrieval.stages import extract as extract_stage

    make_revisitop(tmp_path / "data", "roxford5k")
    make_revisitop(tmp_path / "data", "rparis6k")
    names = make_revisitop1m(tmp_path / "data", count=4)
    embedded: list[tuple[str, int]] = []
    fill = extract_stage.fill_store

    def counted(*args, desc, **options):
        stats = fill(*args, desc=desc, **options)
        embedded.append((desc, stats["embedded"]))
        return stats

    monkeypatch.setattr(extract_stage, "fill_store", counted)
    monkeypatch.setattr(model_spec, "create_model", lambda family, **options: lite0)

    def extracted(preset: str, *extra: str) -> list[tuple[str, int]]:
        embedded.clear()
        with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
            cfg = compose("config", overrides=[
                f"dataset={preset}", f"dataset.root='{tmp_path / 'data'}'", f"paths.cache='{tmp_path / 'cache'}'",
                "extract.workers=0", "model.input_size=64", *extra,
            ])
        pipeline.features(cfg)
        return list(embedded)

    assert extracted("roxford5k") == [("queries", 3), ("gallery", 10)]
    assert extracted("roxford5k", "dataset.distractors=revisitop1m") == [("gallery", len(names))]
    assert extracted("rparis6k", "dataset.distractors=revisitop1m") == [("queries", 3), ("gallery", 10)]
    assert extracted("rparis6k", f"dataset.distractors=[revisitop1m,'{distractors}']") == [("gallery", len(LISTED))]


def test_results_say_how_many_distractors_were_in_the_gallery(tmp_path, distractors):
    root = copy_eth80(tmp_path / "photos")
    run = run_evaluate(tmp_path, "folder", f"dataset.root='{root}'", "model.input_size=64",
                       f"dataset.distractors='{distractors}'")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "folder+3"
    assert (metrics["counts"]["n_gallery"], metrics["counts"]["n_distractors"]) == (12 + 3, 3)
    row = read_rows(tmp_path / "leaderboard.csv")[0]
    assert (row["dataset"], row["n_gallery"], row["n_distractors"]) == ("folder+3", "15", "3")
