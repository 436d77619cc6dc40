"""Limits stated once, beside the parameter (`Annotated[int, Rule(low=1)]`): the config schema
and every call of the entry refuse the same values in the same words."""
from __future__ import annotations

from typing import Annotated

import pytest

from conftest import ComposeFn
from retrieval import config
from retrieval.config.arguments import parameters
from retrieval.config.rules import ConfigError, Rule
from retrieval.registry import Registry
from retrieval.rerank import STEPS


def below(rule: Rule) -> float | None:
    """A number the rule refuses for being too small (None: it has no lower bound)."""
    if rule.low is not None:
        return rule.low - 1
    if rule.above is not None:
        return rule.above
    return None


def bounded_options() -> list[tuple[str, str, float]]:
    """(step, option, refused value) of every re-rank step option with a lower bound."""
    return [(name, option, below(rule)) for name in STEPS.available()
            for option, (_, rule, _) in parameters(STEPS.get(name)).items() if rule is not None and below(rule) is not None]


def test_every_bounded_step_option_is_found() -> None:
    found = {(name, option) for name, option, _ in bounded_options()}
    assert {("aqe", "k"), ("alpha_qe", "alpha"), ("dba", "k"), ("verify", "top_n"), ("verify", "threshold")} <= found


@pytest.mark.parametrize(("name", "option", "value"), bounded_options())
def test_the_config_and_the_library_refuse_a_step_option_alike(make_cfg: ComposeFn, name: str, option: str, value: float) -> None:
    with pytest.raises(ConfigError) as from_config:
        config.resolve(make_cfg(f"rerank=[{name}]", f"rerank.{name}.{option}={value}"))
    defaults = {key: 1 for key, (_, _, has_default) in parameters(STEPS.get(name)).items() if not has_default}
    with pytest.raises(ConfigError) as from_library:
        STEPS.get(name)(**{**defaults, option: value})
    assert str(from_library.value) == str(from_config.value)
    assert str(from_config.value).startswith(f"rerank.{name}.{option}={value:g} is not valid: use ")


def test_a_checked_registry_checks_functions_and_classes() -> None:
    registry: Registry = Registry("toy", __name__, checked="toys.{name}")

    @registry.register("scaled")
    def scaled(value: float, factor: Annotated[float, Rule(above=0)] = 1.0, note: str = "") -> float:
        return value * factor

    @registry.register("sized")
    class Sized:
        def __init__(self, side: Annotated[int, Rule(low=1, high=10)], label: Annotated[str, Rule(choices=lambda: ("a", "b"))] = "a"):
            self.side = side

    assert scaled(2.0, factor=3.0) == 6.0 and registry.get("scaled")(2.0) == 2.0
    assert Sized(4).side == 4 and Sized(side=10, label="b").side == 10
    with pytest.raises(ConfigError, match=r"^toys.scaled.factor=0 is not valid: use a number > 0$"):
        scaled(1.0, 0)
    with pytest.raises(ConfigError, match=r"^toys.sized.side=11 is not valid: use an integer from 1 to 10$"):
        Sized(11)
    with pytest.raises(ConfigError, match=r"^toys.sized.label=c is not valid: choose a or b$"):
        Sized(3, label="c")
    assert parameters(Sized)["side"][1] == Rule(low=1, high=10) and parameters(scaled)["note"][1] is None


def test_proposers_protocols_and_representations_check_their_calls_as_the_config_does(make_cfg: ComposeFn) -> None:
    """Library calls of the other checked registries refuse what the config refuses, in its words."""
    import numpy as np

    from retrieval.protocols import get_protocol
    from retrieval.regions.proposals import PROPOSERS
    from retrieval.representations import create_representation

    image = np.zeros((64, 64, 3), np.uint8)
    cases = [
        (["regions=grid", "regions.proposals.grid.overlap=1.0"], lambda: PROPOSERS.get("grid")(image, overlap=1.0)),
        (["regions=grid", "representation.crop_size=0"],
         lambda: create_representation("crop", proposals={"grid": {}}, max_pixels=10, crop_size=0)),
        (["representation.whiten=0"], lambda: create_representation("global", max_pixels=10, whiten=0)),
    ]
    for overrides, call in cases:
        with pytest.raises(ConfigError) as from_config:
            config.resolve(make_cfg(*overrides))
        with pytest.raises(ConfigError) as from_library:
            call()
        assert str(from_library.value) == str(from_config.value)
    with pytest.raises(ConfigError, match=r"^dataset.protocol_options.ks=\[0, 5\] is not valid: use a list of integers >= 1$"):
        get_protocol("instance")(None, None, ks=[0, 5])
