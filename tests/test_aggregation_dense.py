"""Dense feature maps of real backbones (random or packaged weights, offline): a ViT block's
tokens and attention facets against a hand-run of that block, and the clear errors for a
model without a dense map, a block it lacks and an image smaller than a patch."""
from __future__ import annotations

import pytest
import torch

from retrieval.aggregation.dense import cells_to_pixels, check_map, dense_maps
from retrieval.errors import UserError
from retrieval.models import Embedder, create_model
from retrieval.models.dense import DenseFeatureError, check_dense, dense_features
from retrieval.models.openclip import ClipImageTower


@pytest.fixture(scope="module")
def vit() -> Embedder:
    """DINOv2 ViT-S/14 with random weights: 4 x 5 patches from a 56 x 70 input."""
    return create_model("timm", arch="vit_small_patch14_dinov2", pretrained=None, input_size=56)


def block_input(vit: Embedder, images: torch.Tensor, layer: int) -> torch.Tensor:
    """The tokens entering block `layer` in an ordinary forward pass of the whole model."""
    seen = []
    hook = vit.model.blocks[layer].register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    try:
        vit.model.forward_features(images)
    finally:
        hook.remove()
    return seen[0]


@pytest.mark.parametrize("facet", ["query", "key", "value"])
def test_vit_facet_is_the_blocks_attention_projection(vit: Embedder, facet: str) -> None:
    images = torch.randn(2, 3, 56, 70, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        block = vit.model.blocks[2]
        tokens = block.norm1(block_input(vit, images, 2))[:, vit.model.num_prefix_tokens :]
        width = tokens.shape[-1]
        rows = slice(width * ("query", "key", "value").index(facet), width * (("query", "key", "value").index(facet) + 1))
        expected = tokens @ block.attn.qkv.weight[rows].T + block.attn.qkv.bias[rows]
        features = dense_features(vit, images, layer=2, facet=facet)
    assert features.shape == (2, width, 4, 5)
    torch.testing.assert_close(features.flatten(2).transpose(1, 2), expected, atol=1e-5, rtol=1e-5)


def test_vit_token_facet_is_the_blocks_output(vit: Embedder) -> None:
    images = torch.randn(1, 3, 56, 70, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = vit.model.blocks[5](block_input(vit, images, 5))[:, vit.model.num_prefix_tokens :]
        features = dense_features(vit, images, layer=5)
    torch.testing.assert_close(features.flatten(2).transpose(1, 2), expected, atol=1e-5, rtol=1e-5)


def test_last_map_without_a_layer_is_the_models_own(vit: Embedder) -> None:
    images = torch.randn(1, 3, 56, 56)
    with torch.inference_mode():
        torch.testing.assert_close(dense_features(vit, images), vit.feature_map(images))


def test_dense_maps_of_uint8_pixels(lite0: Embedder) -> None:
    pixels = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    maps = dense_maps(lite0, pixels)
    assert maps.dtype == torch.float32 and maps.shape == (2, 1280, 2, 3)


def test_model_without_a_dense_map_is_refused(vit: Embedder) -> None:
    clip = ClipImageTower(torch.nn.Identity(), vit.preprocess, dim=8)
    with pytest.raises(DenseFeatureError, match="ClipImageTower has no dense feature map to aggregate .* use a timm or effnet_lite model"):
        check_dense(clip)
    assert isinstance(DenseFeatureError("x"), UserError)


def test_blocks_and_facets_a_model_lacks_are_refused(vit: Embedder, lite0: Embedder) -> None:
    with pytest.raises(DenseFeatureError, match="layer=12 is not a block of this model: use 0 to 11"):
        check_dense(vit, layer=12)
    with pytest.raises(DenseFeatureError, match="unknown facet 'keys': use one of token, query, key, value"):
        check_dense(vit, layer=3, facet="keys")
    with pytest.raises(DenseFeatureError, match="facet=value reads one block: give its layer too"):
        check_dense(vit, facet="value")
    with pytest.raises(DenseFeatureError, match="EffNetLite has no transformer blocks; layer=3 needs a ViT"):
        check_dense(lite0, layer=3)


def test_image_smaller_than_a_patch_is_refused(vit: Embedder) -> None:
    with pytest.raises(DenseFeatureError, match="an input of 10x28 pixels is smaller than one 14-pixel patch"):
        dense_features(vit, torch.zeros(1, 3, 10, 28))
    with pytest.raises(DenseFeatureError, match="an input of 30x28 pixels is not a whole number of 14-pixel patches"):
        dense_features(vit, torch.zeros(1, 3, 30, 28))
    with pytest.raises(UserError, match=r"the feature map is empty \(0x4 cells\)"):
        check_map(torch.zeros(8, 0, 4))


def test_cells_to_pixels_scales_by_the_map_stride() -> None:
    assert cells_to_pixels((1, 2, 4, 3), (4, 5), (56, 70)) == (14.0, 28.0, 56.0, 42.0)
