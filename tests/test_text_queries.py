"""Text queries: the open_clip text tower (random weights and a checkpoint the test writes), the
tokenizer offline, query files (CSV and JSON) as queries and truth, the text store's key, the
refusal of models without a text tower, and an end-to-end run scored against a longhand AP."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, ComposeFn
from retrieval import artifacts, pipeline
from retrieval.config import ConfigError
from retrieval.errors import UserError
from retrieval.features.keys import text_key
from retrieval.leaderboard import read_rows
from retrieval.models import create_model, create_text_model, tokenizer_settings
from retrieval.queries.files import NO_IMAGE, QueryFileError, with_query_file
from retrieval.ranking import Ranking
from retrieval.plan import RunPlan
from retrieval.plan import model as model_spec
from retrieval.stages import evaluate as evaluate_stage
from retrieval.plan import run as plan_run
from retrieval.plan.dataset import run_dataset
from retrieval.queries.spec import query_spec

ARCH = "ViT-S-32-alt"
"""The smallest open_clip CLIP that builds in about a second with random weights (224 px)."""
TEXTS = ["a red apple", "a green apple", "a white cup", "a red apple"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A random open_clip model and its state_dict saved with torch.save, as a checkpoint file."""
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None).eval()
    path = tmp_path_factory.mktemp("weights") / "clip.pt"
    torch.save(model.state_dict(), path)
    return model, path


def clip_overrides(checkpoint: Path) -> list[str]:
    """The clip_vit_b32 preset with the small architecture, random tag, the test's weights."""
    return ["model=clip_vit_b32", f"model.arch={ARCH}", "model.pretrained=null", f"model.checkpoint={checkpoint}",
            "model.input_size=null"]


def encode_text(model: torch.nn.Module, texts: list[str]) -> np.ndarray:
    """open_clip's own text embedding, L2-normalised."""
    with torch.inference_mode():
        vectors = model.encode_text(open_clip.get_tokenizer(ARCH)(texts))
    return torch.nn.functional.normalize(vectors, dim=1).numpy()


# ------------------------------------------------------------------ the tower and the tokenizer


def test_tokenizer_runs_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLIP's BPE vocabulary ships inside open_clip: no connection is attempted."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokens = open_clip.get_tokenizer("ViT-B-32")(["a red apple"])
    assert tokens.shape == (1, 77) and tokens[0, 0] == 49406 and 49407 in tokens[0].tolist()  # start, end
    tower = create_text_model("open_clip", arch=ARCH, pretrained=None)
    assert torch.equal(tower.tokenize(["a red apple"]), open_clip.get_tokenizer(ARCH)(["a red apple"]))
    assert tokenizer_settings("open_clip", arch="ViT-B-32", pretrained="openai") == {
        "arch": "ViT-B-32", "context_length": 77, "vocab_size": 49408}


def test_text_tower_from_random_initialisation() -> None:
    tower = create_text_model("open_clip", arch=ARCH, pretrained=None, input_size=96, resize="stretch")
    image = create_model("open_clip", arch=ARCH, pretrained=None)
    assert tower.dim == image.dim == open_clip.get_model_config(ARCH)["embed_dim"]
    assert tower.clip.visual is None  # the image tower's weights are not kept
    with torch.inference_mode():
        vectors = tower(tower.tokenize(["a red apple", "a white cup"]))
    assert vectors.shape == (2, tower.dim) and torch.isfinite(vectors).all()


def test_text_tower_from_a_checkpoint(source: tuple[torch.nn.Module, Path]) -> None:
    model, path = source
    tower = create_text_model("open_clip", arch=ARCH, pretrained=None, checkpoint=str(path))
    with torch.inference_mode():
        vectors = torch.nn.functional.normalize(tower(tower.tokenize(TEXTS)), dim=1).numpy()
    np.testing.assert_allclose(vectors, encode_text(model, TEXTS), atol=1e-5)


# ------------------------------------------------------------------ query files


def write_query_files(folder: Path) -> tuple[Path, Path]:
    """The same four queries as CSV and as JSON: by instance id, and by gallery paths."""
    cups = ["images/cup1/cup1-000-000.png", "images/cup2/cup2-045-180.png"]
    csv_path = folder / "queries.csv"
    csv_path.write_text(
        "id,text,instance,positives,group\n"
        f"q1,{TEXTS[0]},apple1,,fruit\n"
        f"q2,{TEXTS[1]},apple2,,fruit\n"
        f"q3,{TEXTS[2]},,{';'.join(cups)},\n"
        f"q4,{TEXTS[3]},cup2,,\n"
    )
    json_path = folder / "queries.json"
    json_path.write_text(json.dumps([
        {"id": "q1", "text": TEXTS[0], "instance": "apple1", "group": "fruit"},
        {"id": "q2", "text": TEXTS[1], "instance": "apple2", "group": "fruit"},
        {"id": "q3", "text": TEXTS[2], "positives": cups},
        {"id": "q4", "text": TEXTS[3], "instance": "cup2"},
    ]))
    return csv_path, json_path


def expected_positives(gallery_keys: list[str]) -> list[list[int]]:
    """Gallery indices of each query's positives, from the file names alone."""
    def of(instance: str) -> list[int]:
        return [i for i, key in enumerate(gallery_keys) if key.split("/")[1] == instance]

    cups = [gallery_keys.index("images/cup1/cup1-000-000.png"), gallery_keys.index("images/cup2/cup2-045-180.png")]
    return [of("apple1"), of("apple2"), sorted(cups), of("cup2")]


def test_query_file_replaces_queries_and_truth(make_cfg: ComposeFn, tmp_path: Path) -> None:
    csv_path, json_path = write_query_files(tmp_path)
    base = RunPlan.from_config(make_cfg()).dataset
    from_csv, from_json = with_query_file(base, csv_path), with_query_file(base, json_path)
    for dataset in (from_csv, from_json):
        assert [r.key for r in dataset.queries] == ["q1", "q2", "q3", "q4"]
        assert [r.text for r in dataset.queries] == TEXTS
        assert all(r.path == NO_IMAGE for r in dataset.queries)
        assert [r.group for r in dataset.queries] == ["fruit", "fruit", "", ""]
        assert list(dataset.truth) == ["all"] and dataset.protocol == "instance"
        assert [t.positives.tolist() for t in dataset.truth["all"]] == expected_positives(dataset.gallery_keys)
        assert all(t.junk.size == 0 for t in dataset.truth["all"])
        assert dataset.gallery == base.gallery
    # the pipeline's dataset is the file's when query.file is set
    cfg = make_cfg("query=text", f"query.file={csv_path}")
    dataset = run_dataset(OmegaConf.to_container(cfg.dataset, resolve=True), query_spec(cfg.query).file)
    assert [r.key for r in dataset.queries] == ["q1", "q2", "q3", "q4"]


@pytest.mark.parametrize(
    "rows, message",
    [
        ("id,text,instance\nq1,a cup,cup1\nq1,a mug,cup2\n", "query 2: id 'q1' is used twice"),
        ("id,text,instance\nq1,,cup1\n", "query 1: every query needs an id and a text"),
        ("id,text,instance,positives\nq1,a cup,cup1,images/cup1/cup1-000-000.png\n",
         "query 1: give exactly one of instance (an instance id) and positives (gallery paths)"),
        ("id,text,positives\nq1,a cup,images/cup9/nothing.png\n",
         "query 1: positive 'images/cup9/nothing.png' is not an image of the gallery of folder"),
        ("id,text,instance,colour\nq1,a cup,cup1,red\n", "query 1: unknown column 'colour'"),
        ("id,text,instance,box\nq1,a cup,cup1,1 2 3\n", "query 1: box must be 4 numbers x1 y1 x2 y2"),
    ],
)
def test_query_file_mistakes_are_one_line(make_cfg: ComposeFn, tmp_path: Path, rows: str, message: str) -> None:
    path = tmp_path / "queries.csv"
    path.write_text(rows)
    with pytest.raises(QueryFileError) as caught:
        with_query_file(RunPlan.from_config(make_cfg()).dataset, path)
    assert str(caught.value).startswith(f"query.file={path} ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------ refusals before any model loads


@pytest.mark.parametrize("model, family", [("dinov2_vits14", "timm"), ("effnet_lite0", "effnet_lite")])
@pytest.mark.parametrize("query", ["text", "composed"])
def test_model_without_text_tower_is_refused_up_front(make_cfg: ComposeFn, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path, model: str, family: str, query: str) -> None:
    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded")

    def no_dataset(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the dataset was listed")

    monkeypatch.setattr(model_spec, "create_model", no_model)
    monkeypatch.setattr(model_spec, "create_text_model", no_model)
    monkeypatch.setattr(plan_run, "run_dataset", no_dataset)
    csv_path, _ = write_query_files(tmp_path)
    with pytest.raises(ConfigError) as caught:
        pipeline.evaluate(make_cfg(f"model={model}", f"query={query}", f"query.file={csv_path}"), tmp_path / "run")
    assert str(caught.value) == (
        f"query={query} needs a model with a text tower, and model={model} (family {family}) has none: "
        "use model=clip_vit_b16, clip_vit_b32 or clip_vit_l14"
    )
    assert not (tmp_path / "leaderboard.csv").exists()


def test_entry_point_prints_the_refusal(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "evaluate.py", "query=text", "model=dinov2_vits14", f"paths.cache={tmp_path / 'cache'}",
         f"paths.leaderboard={tmp_path / 'board.csv'}", f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: query=text needs a model with a text tower, and model=dinov2_vits14 (family timm) has none: "
        "use model=clip_vit_b16, clip_vit_b32 or clip_vit_l14"
    )


@pytest.mark.parametrize("steps", ["[verify]", "[aqe,refine]"])
def test_steps_that_compare_pixels_are_refused_for_words_before_any_model(
        make_cfg: ComposeFn, source: tuple[torch.nn.Module, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        steps: str) -> None:
    monkeypatch.setattr(model_spec, "create_model", lambda *args, **kwargs: pytest.fail("a model was loaded"))
    monkeypatch.setattr(model_spec, "create_text_model", lambda *args, **kwargs: pytest.fail("a model was loaded"))
    csv_path, _ = write_query_files(tmp_path)
    pixel_steps = steps.strip("[]").split(",")[-1]
    with pytest.raises(UserError, match=rf"^rerank=\[{pixel_steps}\] compares the queries' pixels, and query=text has none: "
                                        r"drop it, or use an image query mode \(query=box, mask, full or composed\)$"):
        RunPlan.from_config(make_cfg("query=text", f"query.file={csv_path}", f"rerank={steps}", *clip_overrides(source[1])))


def test_text_query_needs_words(make_cfg: ComposeFn, source: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^query=text needs words, and the queries of dataset folder have none: "
                                          r"give query.file=<csv or json> \(columns id, text, and instance or positives\)$"):
        pipeline.features(make_cfg("query=text", *clip_overrides(source[1])))


# ------------------------------------------------------------------ the text store


def test_text_store_is_keyed_by_weights_and_tokenizer_only(make_cfg: ComposeFn, source: tuple[torch.nn.Module, Path],
                                                           tmp_path: Path) -> None:
    csv_path, _ = write_query_files(tmp_path)
    overrides = [*clip_overrides(source[1]), f"query.file={csv_path}"]
    text = make_cfg("query=text", *overrides)
    texts = RunPlan.from_config(text).stores["queries"].folder
    composed_file = tmp_path / "composed.json"  # composed queries need an image each
    composed_file.write_text(json.dumps([{"id": "c1", "image": "images/apple1/apple1-000-000.png", "text": TEXTS[0],
                                          "instance": "apple1"}]))
    composed = make_cfg("query=composed", *clip_overrides(source[1]), f"query.file={composed_file}")
    assert texts == RunPlan.from_config(composed).stores["texts"].folder
    # options that only touch images change the image stores, not the text store
    stretched = make_cfg("query=text", *overrides, "model.resize=stretch")
    assert RunPlan.from_config(stretched).stores["queries"].folder == texts
    assert RunPlan.from_config(stretched).stores["gallery"].folder != RunPlan.from_config(text).stores["gallery"].folder
    other = tmp_path / "other.pt"
    other.write_bytes(source[1].read_bytes())
    assert RunPlan.from_config(make_cfg("query=text", *overrides, f"model.checkpoint={other}")).stores["queries"].folder != texts
    stored = artifacts.read_yaml(pipeline.features(text)[0] / "config.yaml")
    assert stored["representation"] == "text" and stored["tokenizer"]["arch"] == ARCH
    assert set(stored["model"]) == {"name", "family", "arch", "pretrained", "checkpoint"}


# ------------------------------------------------------------------ end to end


def longhand_ap(ranked: list[int], positives: list[int]) -> float:
    """Non-interpolated AP over the whole ranking: the mean over positives of the precision at
    each one's 1-based rank."""
    ranks = sorted(ranked.index(p) + 1 for p in positives)
    return sum((j + 1) / rank for j, rank in enumerate(ranks)) / len(positives)


def test_text_queries_end_to_end(make_cfg: ComposeFn, source: tuple[torch.nn.Module, Path], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate_stage, "git_commit", lambda: "test")
    model, checkpoint = source
    csv_path, json_path = write_query_files(tmp_path)
    cfg = make_cfg("query=text", f"query.file={csv_path}", *clip_overrides(checkpoint), "eval.report=true")
    metrics = json.loads(pipeline.evaluate(cfg, tmp_path / "run").read_text())

    # the text vectors are open_clip's own, through model.checkpoint=; each distinct text once
    query_store, gallery_store = pipeline.features(cfg)
    stores = RunPlan.from_config(cfg).stores
    queries = stores["queries"].load()
    np.testing.assert_allclose(queries.per_image(), encode_text(model, TEXTS), atol=1e-5)
    stored = [key for shard in query_store.glob("shard-*.npz") for key in np.load(shard)["items"].tolist()]
    assert sorted(stored) == sorted({text_key(text) for text in TEXTS})

    # searched against the gallery's image vectors as they are
    gallery = stores["gallery"].load().per_image()
    ranking = Ranking.load(tmp_path / "run" / "ranking.npz")
    similarities = queries.per_image() @ gallery.T
    assert (np.sort(ranking.indices, axis=1) == np.arange(len(gallery))).all()  # every image, once
    along = np.take_along_axis(similarities, ranking.indices, 1)
    np.testing.assert_allclose(ranking.scores, along, atol=1e-5)
    assert (np.diff(along, axis=1) <= 1e-6).all()  # best first

    # scored against the file's truth, by longhand AP
    positives = expected_positives(list(ranking.gallery_ids))
    aps = [longhand_ap(ranking.indices[q].tolist(), positives[q]) for q in range(4)]
    assert metrics["summary"]["all"]["mAP"] == pytest.approx(np.mean(aps), abs=1e-9)
    assert metrics["summary"]["all/fruit"]["mAP"] == pytest.approx(np.mean(aps[:2]), abs=1e-9)
    assert metrics["query_mode"] == "text" and metrics["combination"] == ""

    row = read_rows(tmp_path / "leaderboard.csv")[0]
    assert row["query_mode"] == "text" and row["combination"] == ""
    assert float(row["mAP"]) == pytest.approx(round(100 * np.mean(aps), 2))

    # the report shows each query's words instead of an image
    data = json.loads((tmp_path / "run" / "report" / "data.js").read_text().removeprefix("window.REPORT_DATA = ").rstrip(";\n"))
    assert [q["text"] for q in data["queries"]] == TEXTS
    assert all(q["thumb"] is None and q["uri"] is None for q in data["queries"])
    manifest = json.loads((tmp_path / "run" / "dataset.json").read_text())
    assert [q["text"] for q in manifest["queries"]] == TEXTS

    # the same queries from the JSON file rank the same, reusing every vector
    again = make_cfg("query=text", f"query.file={json_path}", *clip_overrides(checkpoint))
    monkeypatch.setattr(model_spec, "create_text_model", lambda *a, **k: pytest.fail("texts embedded again"))
    monkeypatch.setattr(model_spec, "create_model", lambda *a, **k: pytest.fail("images embedded again"))
    assert pipeline.ranking(again) == pipeline.ranking(cfg)
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(csv_path.read_text().replace("q1,", "first,"))
    ranking = Ranking.load(pipeline.ranking(make_cfg("query=text", f"query.file={renamed}", *clip_overrides(checkpoint))))
    assert list(ranking.query_ids) == ["first", "q2", "q3", "q4"]  # ids are not in the items' keys
