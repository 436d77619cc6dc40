"""Each family's input tensor equals the one its library's own eval transform makes from the
same photo, so the weights see exactly the preprocessing they were trained with.

Tolerance: `prepare` and the libraries resize the same uint8 Pillow image with the same filter,
so the resized pixels are identical, and `normalise` runs ToTensor's and Normalize's float32
operations in their order: the tensors are expected to be equal. ATOL leaves room only for
float32 rounding should a library reorder its normalisation; one uint8 level is worth
1 / 255 / std > 0.01 after it, so a crop one pixel off or another filter fails by far.
Weights are random (hub downloads are replaced by no-ops): only the configuration matters.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import pytest
import skimage.data
import timm
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from retrieval.models import create_model, resolve_preprocess
from retrieval.models.base import Preprocess
from retrieval.models.effnet_lite import LITE_PREPROCESS
from retrieval.models.openclip import clip_preprocess
from retrieval.models.timm_models import timm_preprocess
from retrieval.models.transform import normalise, prepare

ATOL = 1e-6
PHOTO = skimage.data.astronaut()  # 512 x 512
IMAGES = {
    "landscape": PHOTO[:300],  # 300 x 512
    "portrait": PHOTO[:, 100:400],  # 512 x 300
    # 302 x 512 at 224 px: the shorter side to 224 leaves a 155 px margin, whose half (77.5)
    # torchvision's CenterCrop rounds to even (78), not down
    "odd_margin": PHOTO[:302],
}
Transform = Callable[[Image.Image], torch.Tensor]


def ours(image: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
    """The project's pipeline: CPU `prepare`, then device-side `normalise` (here on the CPU)."""
    pixels = torch.from_numpy(np.array(prepare(image, preprocess))).permute(2, 0, 1)[None]
    return normalise(pixels, preprocess)[0]


def assert_same_input(preprocess: Preprocess, library: Transform) -> None:
    for name, image in IMAGES.items():
        expected = library(Image.fromarray(image))
        torch.testing.assert_close(ours(image, preprocess), expected, rtol=0, atol=ATOL, msg=name)


@pytest.mark.parametrize("input_size", [None, 224], ids=["weights_518", "preset_224"])
def test_dinov2_input_is_timms_eval_transform(monkeypatch: pytest.MonkeyPatch, input_size: int | None) -> None:
    """The tag's pretrained_cfg (lvd142m: 518 px, crop_pct 1, bicubic, ImageNet mean/std), and
    with the presets' 224 px override, what timm makes of that size."""
    monkeypatch.setattr(timm.models._builder, "load_pretrained", lambda model, **_: None)
    model = create_model("timm", arch="vit_small_patch14_dinov2", pretrained="lvd142m", input_size=input_size)
    reference = timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False)
    config = timm.data.resolve_data_config({"img_size": input_size}, model=reference)
    assert model.preprocess.input_size == (input_size or 518) and model.preprocess.resize == "center_crop"
    assert_same_input(model.preprocess, timm.data.create_transform(**config))


def test_clip_input_is_open_clips_eval_transform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The openai tag's preprocess_cfg: shorter side to 224, centre crop, bicubic, CLIP mean/std."""
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, **_: str(tmp_path / "served.pt"))
    monkeypatch.setattr(open_clip.factory, "load_checkpoint", lambda model, path, **_: None)
    model = create_model("open_clip", arch="ViT-B-32", pretrained="openai")
    _, _, library = open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai", force_quick_gelu=True)
    assert model.preprocess.resize == "center_crop" and model.preprocess.interpolation == "bicubic"
    assert_same_input(model.preprocess, library)


def test_effnet_input_is_timms_transform_for_the_tf_release() -> None:
    """The packaged weights carry no data config: the family states the TF Lite0 release's, and
    timm runs both its default (stretch, timm's squash) and the release's own 87.5% crop alike."""
    model = create_model("effnet_lite", pretrained=False)
    assert model.preprocess == LITE_PREPROCESS and model.preprocess.resize == "stretch"
    release = timm.models.get_pretrained_cfg("tf_efficientnet_lite0.in1k")
    assert (model.preprocess.crop_pct, model.preprocess.interpolation) == (release.crop_pct, release.interpolation)
    lite = {
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "mean": model.preprocess.mean,
        "std": model.preprocess.std,
    }
    assert_same_input(model.preprocess, timm.data.create_transform(**lite, crop_pct=1.0, crop_mode="squash"))
    cropped = create_model("effnet_lite", pretrained=False, resize="center_crop").preprocess
    assert_same_input(cropped, timm.data.create_transform(**lite, crop_pct=release.crop_pct))


@pytest.mark.parametrize(
    "name",
    [
        "cspdarknet53.ra_in1k",  # bilinear, crop_pct 0.887
        "coat_lite_medium_384.in1k",  # squash without a margin: stretch
        "volo_d4_448.sail_in1k",  # crop_pct 1.15 > 1: zero padding
    ],
)
def test_timm_configs_beyond_dinov2(name: str) -> None:
    """Other pretrained_cfgs, as the family resolves them (no model is built), at the weights'
    size and at an odd one."""
    arch, tag = name.split(".")
    for size in (None, 97):
        weights = timm.models.get_pretrained_cfg(name).to_dict()
        config = timm.data.resolve_data_config({"img_size": size}, pretrained_cfg=weights)
        resolved = resolve_preprocess("timm", arch=arch, pretrained=tag, input_size=size)
        assert_same_input(resolved, timm.data.create_transform(**config))


@pytest.mark.parametrize(
    "arch,tag", [("ViT-H-14", "dfn5b"), ("ViT-L-14-CLIPA", "datacomp1b"), ("MobileCLIP-S1", "datacompdr")]
)
def test_open_clip_configs_beyond_openai(arch: str, tag: str) -> None:
    """Squash (bicubic, bilinear) and bilinear centre-crop tags (no model is built)."""
    cfg = open_clip.transform.merge_preprocess_dict(PreprocessCfg(), open_clip.get_pretrained_cfg(arch, tag))
    assert_same_input(clip_preprocess(cfg), image_transform_v2(PreprocessCfg(**cfg), is_train=False))


def test_modes_without_an_exact_equivalent_need_an_explicit_resize() -> None:
    border = timm.data.resolve_data_config(pretrained_cfg={"crop_mode": "border", "crop_pct": 1.0})
    with pytest.raises(ValueError, match="model.resize"):
        timm_preprocess(border)
    assert timm_preprocess(border, resize="letterbox").resize == "letterbox"
    longest = open_clip.transform.merge_preprocess_dict(PreprocessCfg(), {"resize_mode": "longest"})
    with pytest.raises(ValueError, match="model.resize"):
        clip_preprocess(longest)
    assert clip_preprocess(longest, resize="stretch").resize == "stretch"


def test_stretch_and_letterbox_keep_the_whole_image() -> None:
    """The Find-your-Needle modes ignore crop_pct: a uniform image stays uniform to the border,
    and a letterboxed landscape photo sits between bands of the mean colour."""
    preprocess = Preprocess(64, (0.5, 0.25, 0.75), (0.5, 0.5, 0.5), "stretch", crop_pct=0.5)
    flat = np.full((30, 90, 3), 200, np.uint8)
    assert (prepare(flat, preprocess) == 200).all()
    boxed = prepare(IMAGES["landscape"], Preprocess(64, (0.5, 0.25, 0.75), (0.5, 0.5, 0.5), "letterbox"))
    band = (64 - round(300 * 64 / 512)) // 2  # 38 rows of photo, 13 above and below
    assert (boxed[:band] == (128, 64, 191)).all() and (boxed[-band:] == (128, 64, 191)).all()
