"""The representation is a config group (`representation=roi`); the earlier spellings in
`regions` (`regions.pooling=roi`, `regions.crop_size=160`, ...) still say the same, and the
representation must go with the regions and with the queries."""
from __future__ import annotations

import pytest

from conftest import ComposeFn
from retrieval import config
from retrieval.config import ConfigError
from retrieval.plan import RunPlan


@pytest.mark.parametrize(
    ("earlier", "now"),
    [
        (["regions=grid", "regions.pooling=roi"], ["regions=grid", "representation=roi"]),
        (["regions=grid", "regions.pooling=crop"], ["regions=grid"]),
        (["regions=grid_crop", "regions.crop_size=160"], ["regions=grid_crop"]),
        (["regions=grid", "regions.crop_size=160"], ["regions=grid", "representation.crop_size=160"]),
        (["regions=grid", "regions.pooling=roi", "regions.input_sizes=[256]", "regions.roi_size=5"],
         ["regions=grid", "representation=roi", "representation.input_sizes=[256]", "representation.roi_size=5"]),
    ],
)
def test_earlier_spellings_plan_the_same_run(make_cfg: ComposeFn, earlier: list[str], now: list[str]) -> None:
    before, after = (RunPlan.from_config(make_cfg(*overrides)) for overrides in (earlier, now))
    assert before.stores["gallery"].folder == after.stores["gallery"].folder
    assert before.identity == after.identity
    assert config.resolve(make_cfg(*earlier))["regions"] == config.resolve(make_cfg(*now))["regions"]


def test_the_region_presets_choose_crop_and_the_command_line_wins(make_cfg: ComposeFn) -> None:
    assert config.resolve(make_cfg())["representation"]["name"] == "global"
    assert config.resolve(make_cfg("regions=segments"))["representation"] == {"name": "crop", "crop_size": None}
    assert config.resolve(make_cfg("regions=grid_crop"))["representation"] == {"name": "crop", "crop_size": 160}
    assert config.resolve(make_cfg("regions=grid_crop", "representation.crop_size=200"))["representation"]["crop_size"] == 200
    assert config.resolve(make_cfg("representation=roi", "regions=grid"))["representation"]["name"] == "roi"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["regions=grid", "regions.input_sizes=[256]"],
         "regions.input_sizes=[256] sets representation.input_sizes, which representation=crop does not take: "
         "drop it, or choose representation=roi"),
        (["representation=crop"],
         "representation=crop describes an image by its regions, and regions=none proposes none: "
         "choose regions=grid, grid_crop, grid_segments, sam or segments, or representation=global"),
        (["regions=grid", "representation=global"],
         "regions=grid proposes regions, which representation=global does not describe: "
         "choose representation=crop, roi or segvlad, or regions=none"),
        (["representation=text"],
         "representation=text embeds the words of queries, not images: the gallery needs representation=crop, global, rmac, roi, segvlad or vlad"),
        (["query=text", "model=clip_vit_b32", "representation.whiten=64"],
         "query=text searches with the text tower's vectors, and representation.whiten=64 learns a transform of the "
         "image vectors they cannot follow: drop it for queries with words"),
        (["regions=grid", "representation=roi", "representation.input_sizes=[]"],
         "representation.input_sizes=[] is not valid: list the scene sizes of the backbone passes, e.g. [640, 1280]"),
    ],
)
def test_a_representation_that_cannot_work_is_one_line(make_cfg: ComposeFn, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.resolve(make_cfg(*overrides))
    assert str(caught.value) == message
