"""What a run says of its model's weights, and the check that they can be had, before any work.

`weights_label(family, **options)` names the weights as metrics.json, the report and the
leaderboard's `weights` column show them: the checkpoint file's name, the hub tag, the
packaged weights' name, or `random` (`pretrained` null or false without a checkpoint: the
numbers of such a run measure no trained model, and say so wherever they are shown).

`check_weights(model)` runs with the config check, before the dataset is listed: it warns
of random weights in one console line, and stops a run whose hub weights are neither cached
here nor downloadable now (`retrieval.models.offline`) with one line naming the file to fetch
and `model.checkpoint=`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrieval.errors import UserError
from retrieval.models import bound_options, pretrained_weights
from retrieval.models import offline

log = logging.getLogger(__name__)

RANDOM = "random"
"""The label of weights from a random initialisation."""


def weights_label(family: str, **options: Any) -> str:
    """The weights `create_model(family, **options)` loads, as a person reads them."""
    checkpoint = bound_options(family, options).get("checkpoint")
    if checkpoint:
        return Path(checkpoint).name
    pretrained = pretrained_weights(family, **options)
    return pretrained.name if pretrained else RANDOM


def check_weights(model: Mapping[str, Any]) -> str:
    """The label of the configured model's weights (the `model` group: name, family, options),
    once they are known to be there: random weights get a warning line; hub weights neither
    cached nor downloadable raise a UserError that says how to pass them as a file."""
    options = dict(model)
    name, family = options.pop("name"), options.pop("family")
    label = weights_label(family, **options)
    if label == RANDOM:
        given = "null" if options.get("pretrained") is None else "false"
        log.warning("model=%s has random weights (model.pretrained=%s and no model.checkpoint): its results measure no "
                    "trained model, and metrics.json and the leaderboard say weights=random", name, given)
        return label
    pretrained = pretrained_weights(family, **options)
    hub = pretrained.hub if pretrained else None
    if hub is None or offline.cached(hub):
        return label
    why = offline.unreachable(hub)
    if why:
        raise UserError(
            f"model={name} needs weights {hub.what}, which are not cached here and the hub cannot be reached ({why}): "
            f"download {hub.file} from {hub.source} and pass model.checkpoint=/path/to/{hub.file}"
        )
    return label
