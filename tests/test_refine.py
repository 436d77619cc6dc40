"""rerank=[refine]: a planted object is re-framed closer than its seed; crop vectors are those of
a query's cut-out and are shared by queries that share results (and across runs, on disk); bad
inputs are counted and keep the entry's first-pass result; the step runs in a real pipeline."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from conftest import ETH80, REPO
from retrieval import artifacts, pipeline
from retrieval.errors import UserError
from retrieval.features import Features
from retrieval.images import load_rgb
from retrieval.localisation import box_iou, mask_iou
from retrieval.masks import decode, tight_box
from retrieval.models import Embedder
from retrieval.models.transform import normalise
from retrieval.plan import RunPlan
from retrieval.plan import model as model_spec
from retrieval.ranking import Ranking
from retrieval.records import Dataset, Record
from retrieval.regions.pooling import crop_pixels
from retrieval.regions.proposals import boxes_only
from retrieval.regions.windows import fit_window, neighbours
from retrieval.representations import create_representation
from retrieval.rerank import QueryModel, RerankInputs, StepOutput, create_step
from retrieval.rerank.crops import CropVectors, GalleryImage
from retrieval.scenes import ComposeSpec, compose, folder_objects, skimage_backgrounds
from retrieval.stages import extract as extract_stage
from retrieval.stages import rerank as rerank_stage

OBJECT = ETH80 / "images" / "car1" / "car1-000-000.png"
OBJECT_MASK = ETH80 / "masks" / "car1" / "car1-000-000.png"
PLANTED = (150, 60, 230, 140)
"""Where the car is pasted in the scene, 80x80 pixels."""
FAST = {"seeds": 1, "unions": 4, "steps": 2, "batch_size": 16}


@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One composed 320x240 scene (ETH-80 objects on a photo background) with the car pasted
    at PLANTED through its mask, beside a copy of the car's photo (the query)."""
    spec = ComposeSpec(scenes=1, instances=2, queries_per_instance=1, scene_size=(320, 240), query_size=96,
                       scene_format="png", seed=5)
    folder = tmp_path_factory.mktemp("refine")
    composed = compose(folder_objects(ETH80), skimage_backgrounds(), spec, folder / "set")
    scene = load_rgb(next((composed / "scenes").iterdir())).copy()
    x1, y1, x2, y2 = PLANTED
    car = cv2.resize(load_rgb(OBJECT), (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(decode(OBJECT_MASK).astype(np.uint8), (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST).astype(bool)
    scene[y1:y2, x1:x2] = np.where(mask[..., None], car, scene[y1:y2, x1:x2])
    truth = np.zeros(scene.shape[:2], bool)
    truth[y1:y2, x1:x2] = mask
    save(folder / "scene.png", scene)
    save(folder / "car.png", load_rgb(OBJECT))
    np.save(folder / "truth.npy", truth)
    return folder


def save(path: Path, rgb: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(rgb).save(path)
    return path


def query_model(model: Embedder) -> QueryModel:
    return QueryModel(model, torch.device("cpu"), "fp32", "float32", 10**8, {"model": "lite0 at 64 px"},
                      create_representation("global", max_pixels=10**8))


def query_vector(model: Embedder, path: Path, box: tuple[int, int, int, int]) -> np.ndarray:
    """The query's vector as extraction makes it for query=box: the box cut out, prepared, embedded, unit length."""
    pixels = crop_pixels(load_rgb(path), boxes_only(np.array([box]), "query"), model.preprocess)
    with torch.inference_mode():
        vector = model(normalise(torch.from_numpy(pixels), model.preprocess))
    return torch.nn.functional.normalize(vector, dim=1)[0].numpy()


def refine(root: Path, model: Embedder, vectors: np.ndarray, gallery: list[Path], seeds: list[np.ndarray | None],
           indices: list[list[int]], cache: bool = False, **options: object) -> StepOutput:
    """The refine step on these images: `vectors` the queries', `seeds` one first-pass region per
    gallery image (None: a whole-image run, no boxes), `indices` each query's ranking."""
    dataset = Dataset("planted", root, [Record(root / f"q{q}", f"q{q}") for q in range(len(vectors))],
                      [Record(path, path.name) for path in gallery], truth={})
    boxes = None if seeds[0] is None else np.array(seeds, dtype=np.float32)
    rows = Features([path.name for path in gallery], np.eye(len(gallery), vectors.shape[1], dtype=np.float32),
                    np.arange(len(gallery)), np.ones(len(gallery), bool), boxes=boxes)
    order = np.array(indices, dtype=np.int64)
    ranking = Ranking(order, np.where(order >= 0, 0.5 - 0.01 * np.arange(order.shape[1]), -np.inf).astype(np.float32),
                      np.array([f"q{q}" for q in range(len(vectors))]), np.array([path.name for path in gallery]),
                      None if boxes is None else np.where(order[..., None] >= 0, boxes[order], np.nan).astype(np.float32))
    step = create_step("refine", **{**FAST, "crop_cache": cache, **options})
    inputs = RerankInputs(loaders={"query_vectors": lambda: vectors, "gallery": lambda: rows, "dataset": lambda: dataset,
                                   "cache": lambda: root / "cache", "query_model": lambda: query_model(model)},
                          search=None, allowed=step.needs)
    return step(ranking, inputs)


def car_vector(lite0: Embedder, folder: Path) -> np.ndarray:
    return query_vector(lite0, folder / "car.png", tight_box(decode(OBJECT_MASK)))


def test_a_planted_object_is_framed_closer_than_its_seed(scene_folder: Path, lite0: Embedder) -> None:
    seed = np.array([120, 40, 280, 200], dtype=np.float32)  # the car in its top-left quarter
    out = refine(scene_folder, lite0, car_vector(lite0, scene_folder)[None], [scene_folder / "scene.png"], [seed], [[0]])
    truth = np.load(scene_folder / "truth.npy")
    found = out.ranking.boxes[0, 0]
    assert box_iou(found[None], np.array([tight_box(truth)]))[0, 0] > box_iou(seed[None], np.array([tight_box(truth)]))[0, 0] + 0.2
    assert out.ranking.scores[0, 0] > 0.5  # the crop's cosine with the query, not the first pass's 0.5
    mask = out.ranking.mask(0, 0)
    assert mask is not None and mask_iou(decode(mask), truth) > mask_iou(_box_mask(seed, truth.shape), truth)
    assert out.report["counts"]["refined"] == 1 and out.report["counts"]["with_mask"] == 1


def _box_mask(box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    x1, y1, x2, y2 = (int(v) for v in box)
    mask[y1:y2, x1:x2] = True
    return mask


@pytest.mark.parametrize("overrides", [[], ["representation.whiten=4", "representation.fit_sample=6"]],
                         ids=["plain", "whitened"])
def test_a_crop_vector_is_the_query_vector_of_the_same_cut_out(make_cfg, lite0: Embedder, overrides: list[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The vector refine gets for a box of an image is the one extraction stores for a query
    cut out by that box, through the queries' representation and the state it learnt: crop
    scores and query vectors are one scale."""
    plan = RunPlan.from_config(make_cfg("query=box", *overrides))
    monkeypatch.setattr(model_spec, "create_model", lambda *_, **__: lite0)
    extract_stage.main(plan, "queries")
    queries = plan.stores["queries"].load().per_image()
    cutout = rerank_stage.query_cutouts(plan)[0]
    box = cutout.box if cutout.box is not None else (0, 0, *load_rgb(cutout.path).shape[1::-1])
    crops = CropVectors(rerank_stage.query_model(plan), 8, None, images_in_memory=4)
    (vector,) = crops.vectors([(GalleryImage("query", load_rgb(cutout.path)), boxes_only(np.array([box]), "window"))])
    assert cutout.box is not None and np.abs(vector[0] - queries[0]).max() < 1e-5


def test_crops_are_shared_by_queries_and_kept_on_disk(scene_folder: Path, lite0: Embedder,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    vector = car_vector(lite0, scene_folder)
    seed = np.array([120, 40, 280, 200], dtype=np.float32)
    one = refine(scene_folder, lite0, vector[None], [scene_folder / "scene.png"], [seed], [[0]], cache=True)
    alone = one.report["crops_embedded"]
    assert alone > 0 and Path(one.report["crop_cache"]).is_relative_to(scene_folder / "cache" / "crops")
    # a second query with the same result and seed: its first crops are the first query's
    other = vector + 0.05 * np.random.default_rng(0).normal(size=vector.shape).astype(np.float32)
    two = refine(scene_folder, lite0, np.stack([vector, other / np.linalg.norm(other)]), [scene_folder / "scene.png"],
                 [seed], [[0], [0]])
    assert two.report["crops_reused"] > 0 and two.report["crops_embedded"] < 2 * alone
    # the same run again: every crop from the disk, none embedded, the same ranking
    monkeypatch.setattr(type(lite0), "forward", lambda *_: pytest.fail("embedded a crop the cache holds"))
    again = refine(scene_folder, lite0, vector[None], [scene_folder / "scene.png"], [seed], [[0]], cache=True)
    assert again.report["crops_embedded"] == 0
    np.testing.assert_array_equal(again.ranking.boxes, one.ranking.boxes)
    np.testing.assert_array_equal(again.ranking.scores, one.ranking.scores)
    assert again.report["counts"]["crop_cache_files_unreadable"] == 0


def test_a_damaged_crop_cache_file_is_counted_and_rebuilt(scene_folder: Path, lite0: Embedder, tmp_path: Path) -> None:
    vector = car_vector(lite0, scene_folder)
    seed = np.array([120, 40, 280, 200], dtype=np.float32)
    root = tmp_path / "run"
    (root / "cache").mkdir(parents=True)
    first = refine(root, lite0, vector[None], [scene_folder / "scene.png"], [seed], [[0]], cache=True)
    (cached,) = Path(first.report["crop_cache"]).rglob("*.npz")
    cached.write_bytes(cached.read_bytes()[:100])  # cut short, as by a full disk
    damaged = refine(root, lite0, vector[None], [scene_folder / "scene.png"], [seed], [[0]], cache=True)
    assert damaged.report["counts"]["crop_cache_files_unreadable"] == 1
    assert damaged.report["crops_embedded"] == first.report["crops_embedded"]
    np.testing.assert_array_equal(damaged.ranking.boxes, first.ranking.boxes)
    rebuilt = refine(root, lite0, vector[None], [scene_folder / "scene.png"], [seed], [[0]], cache=True)
    assert rebuilt.report["crops_embedded"] == 0 and rebuilt.report["counts"]["crop_cache_files_unreadable"] == 0


def test_windows_stay_inside_the_image_and_are_never_empty() -> None:
    size = (100, 80)
    assert fit_window((-30, -20, 20, 10), size, 16) == (0, 0, 20, 16)  # clipped at the border, grown inward
    assert fit_window((90, 70, 140, 130), size, 16) == (84, 64, 100, 80)  # mostly outside: the border strip
    assert fit_window((200, 200, 300, 300), size, 16) == (84, 64, 100, 80)  # wholly outside: the nearest corner
    assert fit_window((40, 30, 42, 31), size, 16) == (33, 22, 49, 38)  # 2x1 px: grown about its centre
    assert fit_window((0, 0, 10, 10), (8, 6), 16) == (0, 0, 8, 6)  # an image under min_side: all of it
    assert fit_window(np.full(4, np.nan), size, 16) == (0, 0, 100, 80)
    for box in neighbours((0, 0, 30, 30), 1.0, 0.25, [0.7, 1.4], [0.7, 1.4]):
        x1, y1, x2, y2 = fit_window(box, size, 16)
        assert 0 <= x1 < x2 <= 100 and 0 <= y1 < y2 <= 80 and min(x2 - x1, y2 - y1) >= 16


def test_bad_inputs_are_counted_and_keep_their_first_pass_result(scene_folder: Path, lite0: Embedder) -> None:
    broken = scene_folder / "broken.png"
    broken.write_bytes(b"not an image")  # unreadable when the step reads it
    scene = scene_folder / "scene.png"
    seeds = [np.array([-40, -30, 60, 50], np.float32),  # past the top-left border
             np.array([300, 230, 303, 232], np.float32),  # 3x2 px at the bottom-right corner
             np.array([10, 10, 90, 90], np.float32)]
    vectors = np.stack([car_vector(lite0, scene_folder)] * 2)
    out = refine(scene_folder, lite0, vectors, [scene, scene, broken], seeds, [[2, 0, 1], [1, -1, -1]], top_n=5)
    counts = out.report["counts"]
    assert counts == {**counts, "unreadable": 1, "seeds_grown": 2, "top_n_beyond_ranking": 2, "pairs": 4, "refined": 3}
    ranking = out.ranking
    assert ranking.indices.tolist() == [[ranking.indices[0, 0], ranking.indices[0, 1], 2], [1, -1, -1]]
    assert ranking.scores[0, 2] == pytest.approx(0.5) and ranking.boxes[0, 2].tolist() == seeds[2].tolist()
    for q, p in ((0, 0), (0, 1), (1, 0)):  # refined: inside the 320x240 scene, never empty; a window without a mask >= min_side
        x1, y1, x2, y2 = ranking.boxes[q, p]
        assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
        assert ranking.mask(q, p) is not None or min(x2 - x1, y2 - y1) >= 16


def test_a_whole_image_run_is_refined_from_the_whole_image(scene_folder: Path, lite0: Embedder) -> None:
    out = refine(scene_folder, lite0, car_vector(lite0, scene_folder)[None], [scene_folder / "scene.png"], [None], [[0]])
    assert out.report["counts"]["refined"] == 1 and np.isfinite(out.ranking.boxes[0, 0]).all()


def test_a_query_without_a_vector_keeps_its_row(scene_folder: Path, lite0: Embedder) -> None:
    vectors = np.stack([np.zeros(lite0.dim, np.float32), car_vector(lite0, scene_folder)])
    out = refine(scene_folder, lite0, vectors, [scene_folder / "scene.png"], [np.array([120, 40, 280, 200], np.float32)],
                 [[0], [0]])
    assert out.report["counts"]["queries_without_vector"] == 1 and out.report["counts"]["refined"] == 1
    assert out.ranking.scores[0, 0] == pytest.approx(0.5) and out.ranking.boxes[0, 0].tolist() == [120, 40, 280, 200]


@pytest.mark.parametrize("options, message", [
    ({"top_n": 0}, r"rerank.refine.top_n=0 is not valid: use an integer >= 1"),
    ({"scales": [1.0, 1.4]}, r"rerank.refine.scales=\[1.0, 1.4\] is not valid: list factors other than 1"),
    ({"aspects": [0.7, -1]}, r"rerank.refine.aspects=\[0.7, -1\] is not valid: use a list of numbers > 0"),
    ({"shift": 0}, r"rerank.refine.shift=0 is not valid: use a number > 0"),
])
def test_options_out_of_range_are_a_user_error(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        create_step("refine", **options)


def test_roi_then_refine_in_a_real_run(tmp_path: Path, lite0: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    """preset=roi_refine through the pipeline: the refine artifact, its counts, boxes and masks."""
    spec = ComposeSpec(scenes=3, instances=3, queries_per_instance=1, scene_size=(200, 150), query_size=96,
                       scene_format="png", seed=3)
    root = compose(folder_objects(ETH80), skimage_backgrounds(), spec, tmp_path / "set")
    monkeypatch.setattr(model_spec, "create_model", lambda *_, **__: lite0)
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        cfg = hydra_compose("config", overrides=[
            "dataset=anns", f"dataset.root={root}", f"paths.cache={tmp_path / 'cache'}", "extract.workers=0",
            "model.input_size=64", "eval.report=false", "preset=roi_refine", "representation.input_sizes=[256]",
            "regions.proposals.grid.scales=[0.5,0.3]", "rerank.refine.top_n=2", "rerank.refine.steps=1",
            "rerank.refine.unions=2"])
    path = pipeline.ranking(cfg)
    ranking, meta = Ranking.load(path), artifacts.read_meta(path.parent)
    assert [step["name"] for step in ranking.provenance if step["step"] == "rerank"] == ["refine"]
    assert meta["counts"]["pairs"] == 2 * len(ranking.query_ids) == meta["counts"]["refined"]
    assert np.isfinite(ranking.boxes[:, :2]).all() and meta["crops_embedded"] > 0
    assert Path(meta["crop_cache"]).parent == tmp_path / "cache" / "crops"
