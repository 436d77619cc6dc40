"""Region-level retrieval: proposals, pooling, the one search over rows (an image scores as
its best row), the ranking's boxes and masks, and the localisation metrics evaluate adds.

Expected values come from computations written here: brute-force max over regions with
numpy, IoU by counting pixels, masks decoded from anns.pt by a decoder in this file, AP by
a loop over the ranking.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pycocotools.mask as coco_mask
import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from conftest import ETH80, REPO
from retrieval import artifacts, pipeline
from retrieval.config import ConfigError
from retrieval.scenes import ComposeSpec, compose, folder_objects, skimage_backgrounds
from retrieval.features import Features
from retrieval.models import create_model
from retrieval.models.transform import normalise
from retrieval.ranking import Ranking
from retrieval.regions.grid import grid
from retrieval.regions.pooling import pyramid_levels, roi_vectors
from retrieval.regions.proposals import available, propose
from retrieval.regions.segments import segments
from retrieval.search.exact import BlockPlan, exact_search
from retrieval.search.finish import ranking_masks
from retrieval.search.images import ImageHits, group_by_image
from retrieval.plan import RunPlan
from retrieval.stages import extract, search

TINY = ComposeSpec(scenes=6, instances=6, queries_per_instance=2, scene_size=(200, 150),
                   query_size=96, scene_format="png", seed=3)
FAST = ["regions.proposals.grid.scales=[0.5,0.3]"]
"""Small scenes, few windows: keeps each extraction to a second or two."""


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 composed scenes of ETH-80 objects (2-4 per scene) with 12 queries."""
    return compose(folder_objects(ETH80), skimage_backgrounds(), TINY, tmp_path_factory.mktemp("regions") / "set")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def config(root: Path, cache: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        return hydra_compose("config", overrides=[
            "dataset=anns", f"dataset.root={root}", f"paths.cache={cache}",
            f"paths.leaderboard={cache / 'leaderboard.csv'}", "extract.workers=0",
            "extract.batch_size=8", "model.input_size=64", "eval.report=false", *overrides,
        ])


def rows_of(cfg: DictConfig | dict | RunPlan, split: str = "gallery") -> Features:
    """The split's rows as the config (or plan) extracts them (its feature store, filled if needed)."""
    plan = cfg if isinstance(cfg, RunPlan) else RunPlan.from_config(cfg)
    extract.main(plan, split)
    return plan.stores[split].load()


# Proposals


def test_grid_windows_cover_the_image_at_every_scale():
    height, width, scales, overlap = 150, 200, (0.5, 0.3, 0.12), 0.5
    regions = grid(np.zeros((height, width, 3), np.uint8), scales=scales, overlap=overlap, min_side=8)
    boxes = regions.boxes.astype(int)
    assert regions.masks == [None] * len(boxes) and set(regions.sources) == {"grid"}
    sides = boxes[:, 2] - boxes[:, 0]
    assert np.array_equal(sides, boxes[:, 3] - boxes[:, 1]), "windows are square"
    assert sorted(set(sides.tolist())) == sorted(round(s * height) for s in scales)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    for side in set(sides.tolist()):
        covered = np.zeros((height, width), int)
        for x1, y1, x2, y2 in boxes[sides == side]:
            covered[y1:y2, x1:x2] += 1
        assert covered.min() >= 1, f"side {side} leaves pixels uncovered"
        for axis, length in ((0, width), (1, height)):
            starts = np.unique(boxes[sides == side][:, axis])
            steps = np.diff(starts)
            assert starts[0] == 0 and starts[-1] + side == length
            assert steps.max() <= side * (1 - overlap) + 0.5, "neighbours overlap at least as asked"
            if len(starts) > 2:  # as few windows as that allows
                assert (length - side) / (len(starts) - 2) > side * (1 - overlap)


def test_segments_recover_flat_objects_with_tight_masks():
    rng = np.random.default_rng(0)
    image = rng.integers(90, 140, (120, 160, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:120, :160]
    disc = (yy - 40) ** 2 + (xx - 45) ** 2 < 18**2
    square = (yy >= 60) & (yy < 100) & (xx >= 100) & (xx < 140)
    image[disc] = (230, 30, 30)
    image[square] = (20, 40, 220)
    found = segments(image, scales=(100,), min_area=0.01)
    assert len(found) > 0 and set(found.sources) == {"segments"}
    for obj in (disc, square):
        best = 0.0
        for box, mask in zip(found.boxes.astype(int), found.masks):
            x1, y1, x2, y2 = box
            assert mask.shape == (y2 - y1, x2 - x1) and mask[0].any() and mask[:, 0].any(), "box is tight"
            full = np.zeros_like(obj)
            full[y1:y2, x1:x2] = mask
            best = max(best, (full & obj).sum() / (full | obj).sum())
        assert best > 0.9


def test_whole_image_comes_first_and_registry_describes_entries():
    image = np.zeros((90, 120, 3), np.uint8)
    regions = propose(image, {"grid": {"scales": [0.5]}})
    assert regions.sources[0] == "image" and regions.boxes[0].tolist() == [0, 0, 120, 90]
    assert {"grid", "segments", "sam"} <= set(available()) and all(available().values())


def test_sam_without_weights_says_what_to_pass():
    with pytest.raises(ConfigError, match=r"^regions.proposals.sam.checkpoint=null is not valid: use the path of an existing file$"):
        propose(np.zeros((32, 32, 3), np.uint8), {"sam": {"checkpoint": None}})


# Pooling


def test_roi_pooled_vectors_match_crops_where_aligned():
    """Four different objects tiled 2x2: each quadrant is 4x4 feature cells, so its ROI
    vector should be the closest to its own crop's vector; the whole box gives the pool."""
    names = ("apple1", "car1", "cow1", "cup1")
    tiles = []
    for name in names:
        first = sorted(os.listdir(ETH80 / "images" / name))[0]
        tiles.append(np.asarray(Image.open(ETH80 / "images" / name / first).convert("RGB").resize((128, 128))))
    scene = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
    model = create_model("effnet_lite", input_size=128).eval()
    boxes = torch.tensor([[0, 0, 128, 128], [128, 0, 256, 128], [0, 128, 128, 256], [128, 128, 256, 256], [0, 0, 256, 256]],
                         dtype=torch.float32)
    with torch.inference_mode():
        features = model.feature_map(normalise(torch.from_numpy(scene.transpose(2, 0, 1).copy())[None], model.preprocess))
        cells = features.shape[-1] / 256
        roi = torch.nn.functional.normalize(roi_vectors(model, features, boxes, (cells, cells), torch.ones(5, 4, 4)), dim=1)
        crops = torch.stack([torch.from_numpy(t.transpose(2, 0, 1).copy()) for t in tiles])
        crop = torch.nn.functional.normalize(model(normalise(crops, model.preprocess)), dim=1)
        whole = torch.nn.functional.normalize(model.pool(features), dim=1)
    similarity = (roi[:4] @ crop.T).numpy()
    assert np.array_equal(similarity.argmax(0), np.arange(4)), similarity.round(3)
    assert float(roi[4] @ whole[0]) > 0.98


def test_pyramid_pools_each_region_at_the_pass_where_it_looks_query_sized():
    # a 1000 x 800 image in passes of longer side 500, 1000, 2000; queries are 224 pixels:
    # a 100-pixel region looks 50, 100, 200 -> pass 2; 300 -> 150, 300, 600 -> pass 1 (log
    # distance 0.40 vs 0.29); the whole image (1000) -> 500 at pass 0.
    boxes = np.array([[0, 0, 100, 60], [10, 10, 310, 200], [0, 0, 1000, 800]], dtype=np.float32)
    assert pyramid_levels(boxes, (800, 1000), (500, 1000, 2000), 224).tolist() == [2, 1, 0]


def test_pyramid_vectors_are_the_single_pass_vectors_of_their_level(scenes: Path, cache: Path):
    """A region pooled from pass 256 of a [128, 256] pyramid is the same vector as in a
    one-pass extraction at 256, and the pyramid uses both passes."""
    grid_only = ["regions=grid", "regions.pooling=roi", "regions.proposals.grid.scales=[0.5,0.3]"]
    pyramid = rows_of(config(scenes, cache, *grid_only, "regions.input_sizes=[128,256]"))
    single = rows_of(config(scenes, cache, *grid_only, "regions.input_sizes=[256]"))
    assert np.array_equal(pyramid.boxes, single.boxes) and np.array_equal(pyramid.row_image, single.row_image)
    levels = np.concatenate([
        pyramid_levels(pyramid.boxes[pyramid.row_image == g], (150, 200), (128, 256), 64) for g in range(len(pyramid.keys))
    ])
    assert set(levels.tolist()) == {0, 1}
    np.testing.assert_allclose(pyramid.vectors[levels == 1], single.vectors[levels == 1], atol=1e-5)
    assert not np.allclose(pyramid.vectors[levels == 0], single.vectors[levels == 0], atol=1e-3)


# Search


def test_exact_search_breaks_wide_ties_by_lower_image():
    """Forty images tie for every place: the top 5 are the five lowest, however topk orders them."""
    owners = np.repeat(np.arange(40), 3)[::-1].copy()
    hits = exact_search(np.ones((2, 4), np.float32), np.ones((len(owners), 4), np.float16), owners, 40, 5)
    assert hits.images.tolist() == [[0, 1, 2, 3, 4]] * 2


def test_exact_search_is_the_max_over_each_images_regions():
    """Small integer vectors make scores exact and ties frequent: within an image the lower
    region wins, between images the lower image; blocks are forced small (several of each)."""
    rng = np.random.default_rng(1)
    owners = np.sort(rng.integers(0, 9, 300))
    owners = owners[owners != 4]  # image 4 has no regions (skipped): never ranked
    vectors = rng.integers(-2, 3, (len(owners), 8)).astype(np.float16)
    vectors[1::4] = vectors[::4][: len(vectors[1::4])]  # exact ties between neighbouring regions
    queries = rng.integers(-2, 3, (5, 8)).astype(np.float32)
    hits = exact_search(queries, vectors, owners, n_images=9, k=9, plan=BlockPlan(2, 9))
    scores = queries @ vectors.astype(np.float32).T
    for q in range(len(queries)):
        best = {}
        for g in np.unique(owners).tolist():
            own = np.flatnonzero(owners == g)
            best[g] = min(own.tolist(), key=lambda r: (-scores[q, r], r))
        expected = sorted(best, key=lambda g: (-scores[q, best[g]], g))
        assert hits.images[q].tolist() == expected + [-1]
        assert hits.rows[q].tolist() == [best[g] for g in expected] + [-1]
        assert hits.scores[q, :8].tolist() == [scores[q, best[g]] for g in expected]
    order = np.argsort(-scores, axis=1, kind="stable")
    grouped = group_by_image(np.take_along_axis(scores, order, 1), order, owners, 9)
    assert np.array_equal(grouped.images, hits.images) and np.array_equal(grouped.rows, hits.rows)


def test_one_row_per_image_is_the_same_search_as_many():
    """Whole-image rows (one per image, written directly) rank as the general max over rows
    does when every image gets a second, identical row, and as a brute-force top-k; each
    entry carries its image's first row (a tie between rows goes to the lower one)."""
    rng = np.random.default_rng(2)
    vectors = rng.integers(-2, 3, (12, 6)).astype(np.float32)
    vectors[7] = vectors[3]  # a tie between images: the lower one first
    queries = np.concatenate([rng.integers(-2, 3, (3, 6)), vectors[[3]]]).astype(np.float32)
    whole = exact_search(queries, vectors, np.arange(12), n_images=12, k=5, plan=BlockPlan(2, 10))
    many = exact_search(queries, np.repeat(vectors, 2, axis=0), np.repeat(np.arange(12), 2),
                        n_images=12, k=5, plan=BlockPlan(2, 10))
    scores = queries @ vectors.T
    expected = np.array([sorted(range(12), key=lambda g: (-row[g], g))[:5] for row in scores])
    assert expected[3, :2].tolist() == [3, 7]
    for hits, first_row in ((whole, expected), (many, 2 * expected)):
        assert hits.images.tolist() == expected.tolist() and hits.rows.tolist() == first_row.tolist()
        np.testing.assert_array_equal(hits.scores, np.take_along_axis(scores, expected, 1))


# End to end


def _anns_truth(root: Path) -> dict[str, dict]:
    """Gallery boxes and masks straight from anns.pt, masks decoded here (COCO runs, column-major)."""
    truth = {}
    for key, entry in torch.load(root / "anns.pt", weights_only=False).items():
        if entry["is_query"]:
            continue
        masks = []
        for rle in entry["mask"]:
            height, width = rle["size"]
            flat = np.repeat(np.arange(len(rle["counts"])) % 2 == 1, rle["counts"])
            masks.append(flat.reshape(width, height).T)
        truth[key] = {"ins": list(entry["ins"]), "boxes": [tuple(b) for b in entry["bbox"]], "masks": masks}
    return truth


def _ap(hits: list[bool], npos: int) -> float:
    found, total = 0, 0.0
    for rank, hit in enumerate(hits, start=1):
        if hit:
            found += 1
            total += found / rank
    return total / npos


def test_region_search_localises_and_evaluate_scores_it(scenes: Path, cache: Path, tmp_path: Path):
    cfg = config(scenes, cache, "regions=grid_segments", *FAST)
    metrics = json.loads(pipeline.evaluate(cfg, tmp_path / "run").read_text())
    ranking = Ranking.load(tmp_path / "run" / "ranking.npz")
    assert metrics["regions"] == "grid_segments"
    assert ranking.boxes.shape == (*ranking.indices.shape, 4) and ranking.mask_ids.shape == ranking.indices.shape

    # The ranking: each image at its best region (brute force), carrying that region's box and mask.
    regions = rows_of(cfg)
    query_rows = rows_of(cfg, "queries")
    assert query_rows.keys == list(map(str, ranking.query_ids)) and regions.keys == list(map(str, ranking.gallery_ids))
    assert set(regions.source_names) == {"image", "grid", "segments"} and regions.localises
    queries = query_rows.per_image()
    scores = queries.astype(np.float32) @ regions.vectors.astype(np.float32).T
    for q in range(len(queries)):
        for j, g in enumerate(ranking.indices[q].tolist()):
            own = np.flatnonzero(regions.row_image == g)
            best = own[np.argmax(scores[q, own])]
            assert ranking.boxes[q, j].tolist() == regions.boxes[best].tolist()
            mask = ranking.mask(q, j)
            assert (json.dumps(mask) if mask else "") == regions.masks[best]
            assert ranking.scores[q, j] == pytest.approx(scores[q, best], abs=1e-5)
        assert np.all(np.diff(ranking.scores[q]) <= 1e-6)
    assert (ranking.mask_ids >= 0).any() and (ranking.mask_ids < 0).any()
    assert len(ranking.mask_table) == len(np.unique(ranking.mask_ids[ranking.mask_ids >= 0]))

    # Localisation metrics, recomputed from anns.pt with pixel counting.
    truth = _anns_truth(scenes)
    anns = torch.load(scenes / "anns.pt", weights_only=False)
    expected: dict[str, list[float]] = {}
    for q, query_key in enumerate(map(str, ranking.query_ids)):
        ins = anns[query_key]["ins"]
        positives = {j for j, g in enumerate(map(str, ranking.gallery_ids)) if ins in truth[g]["ins"]}
        if not positives:
            continue
        for kind in ("box", "mask"):
            ious = {}
            for j, g in enumerate(ranking.indices[q].tolist()):
                if g not in positives:
                    continue
                entry = truth[str(ranking.gallery_ids[g])]
                height, width = entry["masks"][0].shape
                x1, y1, x2, y2 = (int(v) for v in ranking.boxes[q, j])
                predicted = np.zeros((height, width), bool)
                if kind == "mask" and ranking.mask(q, j) is not None:
                    rle = ranking.mask(q, j)
                    predicted = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
                else:
                    predicted[y1:y2, x1:x2] = True
                best = 0.0
                for n, owner in enumerate(entry["ins"]):
                    if owner != ins:
                        continue
                    if kind == "box":
                        bx1, by1, bx2, by2 = entry["boxes"][n]
                        target = np.zeros((height, width), bool)
                        target[by1:by2, bx1:bx2] = True
                    else:
                        target = entry["masks"][n]
                    best = max(best, (predicted & target).sum() / (predicted | target).sum())
                ious[g] = best
            ranked = ranking.indices[q].tolist()
            for name, t in (("0", -1.0), ("50", 0.5)):
                expected.setdefault(f"{kind}_mAP@{name}", []).append(
                    _ap([g in positives and ious[g] > t for g in ranked], len(positives)))
            expected.setdefault(f"{kind}_mAP@50:95", []).append(np.mean([
                _ap([g in positives and ious[g] > t for g in ranked], len(positives))
                for t in np.arange(50, 100, 5) / 100]))
            expected.setdefault(f"{kind}_mIoU", []).append(np.mean([ious.get(g, 0.0) for g in positives]))
    summary = metrics["summary"]["all"]
    for name, values in expected.items():
        assert summary[name] == pytest.approx(np.mean(values), abs=1e-9), name
    assert summary["box_mAP@0"] == pytest.approx(summary["mAP"])


def test_approximate_indexes_run_and_agree_with_exact(scenes: Path, cache: Path):
    exact = Ranking.load(pipeline.ranking(config(scenes, cache, "regions=grid", *FAST)))
    for index in (["index=hnsw"], ["index=ivfpq", "index.factory='IVF2,PQ16x4'", "index.search_params.nprobe=2"]):
        approx = Ranking.load(pipeline.ranking(config(scenes, cache, "regions=grid", *FAST, *index)))
        assert approx.boxes is not None and approx.indices.shape == exact.indices.shape
        overlap = np.mean([len(set(a[:3]) & set(e[:3])) / 3 for a, e in zip(approx.indices, exact.indices)])
        assert overlap >= (0.9 if index == ["index=hnsw"] else 0.5), (index, overlap)


def test_crop_pooling_embeds_the_whole_image_as_the_gallery_stage_does(scenes: Path, cache: Path):
    """Each image's first crop row is the whole image, embedded as the whole-image gallery
    store embeds it; the search reports the rows it searched."""
    cfg = config(scenes, cache, "regions=grid", "regions.pooling=crop", "regions.proposals.grid.scales=[0.5]")
    regions = rows_of(cfg)
    whole = rows_of(RunPlan.from_config(cfg).whole_image())
    assert whole.keys == regions.keys and whole.row_image.tolist() == list(range(len(whole.keys)))
    first = np.flatnonzero(np.r_[True, np.diff(regions.row_image) != 0])
    assert regions.row_image[first].tolist() == list(range(len(whole.keys)))
    assert regions.source_names == ["image", "grid"] and regions.sources[first].tolist() == [0] * len(whole.keys)
    assert (np.delete(regions.sources, first) == 1).all(), "every other row is a grid window"
    np.testing.assert_allclose(regions.vectors[first], whole.vectors, atol=1e-4)
    searched = search.main(RunPlan.from_config(cfg))
    meta = artifacts.read_meta(searched.parent)
    assert (meta["n_gallery"], meta["n_rows"]) == (len(whole.keys), len(regions.row_image))
    assert meta["n_rows"] > len(whole.keys)
    # what gave each query its first result: the source of the top image's best row, by brute force
    ranking = Ranking.load(searched)
    scores = rows_of(cfg, "queries").per_image() @ regions.vectors.astype(np.float32).T
    counts = dict.fromkeys(regions.source_names, 0)
    for q, g in enumerate(ranking.indices[:, 0].tolist()):
        own = np.flatnonzero(regions.row_image == g)
        counts[regions.source_names[regions.sources[own[np.argmax(scores[q, own])]]]] += 1
    assert meta["top1_sources"] == counts and sum(counts.values()) == len(ranking.query_ids)


def test_region_run_reports_the_whole_image_baseline(scenes: Path, cache: Path, tmp_path: Path):
    region_run = json.loads(pipeline.evaluate(config(scenes, cache, "regions=grid", *FAST, "eval.report=true"), tmp_path / "grid").read_text())
    whole_run = json.loads(pipeline.evaluate(config(scenes, cache), tmp_path / "whole").read_text())
    assert region_run["whole_image_summary"] == whole_run["summary"] and whole_run["whole_image_summary"] is None
    report = (tmp_path / "grid" / "report.html").read_text()
    assert "all, whole image" in report and f"{100 * whole_run['summary']['all']['mAP']:.2f}" in report


def test_regions_none_is_the_one_row_per_image_case_of_the_same_search(scenes: Path, cache: Path):
    """`regions=none` (or no regions group at all) stores one row per gallery image, with no
    boxes, in the store a region run's baseline uses; the search over those rows is the exact
    whole-image top-k (ties by lower image), and the ranking carries no boxes or masks."""
    cfg = config(scenes, cache)
    without = OmegaConf.to_container(cfg, resolve=True)
    without.pop("regions")
    plan, plan_without = RunPlan.from_config(cfg), RunPlan.from_config(without)
    assert not plan.regional and not plan_without.regional
    region_plan = RunPlan.from_config(config(scenes, cache, "regions=grid", *FAST))
    assert plan.stores["gallery"].folder == plan_without.stores["gallery"].folder == region_plan.whole_image().stores["gallery"].folder
    assert plan.stores["gallery"].folder != region_plan.stores["gallery"].folder
    queries_store, gallery_store = pipeline.features(cfg)
    assert pipeline.features(without) == (queries_store, gallery_store)
    assert search.settings(plan) == search.settings(plan_without) == search.settings(region_plan.whole_image())

    gallery = plan.stores["gallery"].load()
    assert gallery.row_image.tolist() == list(range(len(gallery.keys))) and gallery.valid.all()
    assert gallery.boxes is None and gallery.masks is None and not gallery.localises
    queries = plan.stores["queries"].load().per_image()
    ranking = Ranking.load(pipeline.ranking(cfg))
    assert ranking.boxes is None and ranking.mask_ids is None and ranking.mask_table == []
    scores = queries @ gallery.vectors.astype(np.float32).T
    expected = np.array([sorted(range(len(row)), key=lambda g: (-row[g], g)) for row in scores])
    assert ranking.indices.tolist() == expected.tolist()
    np.testing.assert_allclose(ranking.scores, np.take_along_axis(scores, expected, 1), atol=1e-5)


def test_ranking_stores_each_returned_mask_once(tmp_path: Path):
    """Entries share one table row per distinct region mask; box-only regions and padding get -1."""
    strings = ["", json.dumps({"size": [2, 2], "counts": "a"}), json.dumps({"size": [2, 2], "counts": "b"}), ""]
    regions = Features(keys=["x", "y"], vectors=np.zeros((4, 2)), row_image=np.array([0, 0, 1, 1]),
                       boxes=np.zeros((4, 4)), sources=np.zeros(4, np.int8), source_names=["image"],
                       masks=strings, valid=np.ones(2, bool))
    hits = ImageHits(scores=np.zeros((3, 2)), images=np.array([[0, 1], [1, 0], [1, -1]]),
                     rows=np.array([[1, 2], [3, 1], [2, -1]]))
    ids, table = ranking_masks(hits.rows, regions)
    assert ids.tolist() == [[0, 1], [-1, 0], [1, -1]]
    assert table == [json.loads(strings[1]), json.loads(strings[2])]
    ranking = Ranking(indices=hits.images, scores=hits.scores, query_ids=np.array(["a", "b", "c"]),
                      gallery_ids=np.array(regions.keys), mask_ids=ids, mask_table=table)
    loaded = Ranking.load(ranking.save(tmp_path / "ranking.npz"))
    assert [[loaded.mask(q, j) for j in range(2)] for q in range(3)] == [
        [table[0], table[1]], [None, table[0]], [table[1], None]]
