"""The parameters of a composed set, and its plan: which instances are queried, which of
their views go to queries and which to scenes, and what each scene holds, all decided before
any pixel is drawn."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.scenes.sources import ObjectSource


@dataclass(frozen=True)
class ComposeSpec:
    """Everything besides the sources that determines a composed set."""

    scenes: int = 500
    instances: int | None = None
    """Instances that get queries (spread over categories); None = all. The others of the
    source appear only as distractors."""
    queries_per_instance: int = 5
    objects_per_scene: tuple[int, int] = (2, 4)
    """Query instances per scene (inclusive range); dealt from a deck so all appear evenly."""
    distractors_per_scene: tuple[int, int] = (0, 2)
    """Extra objects of the same category as one of the scene's instances."""
    scene_size: tuple[int, int] = (640, 480)
    """Width, height."""
    query_size: int = 224
    area: tuple[float, float] = (0.005, 0.05)
    """Object area as a fraction of the scene, before occlusion (log-uniform)."""
    max_occlusion: float = 0.5
    """Largest fraction of an object that later-pasted objects may hide."""
    overlap: float = 0.3
    """Chance that an object is aimed at an earlier one, to make occlusion common."""
    rotation: float = 20.0
    """Largest in-plane rotation, degrees."""
    lighting: float = 0.25
    """Brightness, contrast (+-) and per-channel colour (+- half) jitter strength."""
    tilt: float = 0.12
    """Query views only: corner jitter of a perspective warp, as a fraction of the side."""
    scene_format: str = "jpg"
    set_name: str = "compose"
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.area
        if not 0 < lo < hi < 1:
            raise ValueError(f"area range must satisfy 0 < low < high < 1, got {self.area}")
        if self.objects_per_scene[0] < 1 or self.objects_per_scene[0] > self.objects_per_scene[1]:
            raise ValueError(f"bad objects_per_scene {self.objects_per_scene}")
        if not 0 <= self.max_occlusion < 1:
            raise ValueError(f"max_occlusion must be in [0, 1), got {self.max_occlusion}")
        if self.scene_format not in ("jpg", "png"):
            raise ValueError(f"scene_format must be jpg or png, got {self.scene_format!r}")


DEMO_SPEC = ComposeSpec(
    scenes=40,
    distractors_per_scene=(0, 0),
    scene_size=(384, 288),
    query_size=192,
    area=(0.03, 0.12),
    rotation=30.0,
    set_name="demo",
)
"""The built-in demo set: 8 instances x 5 queries, 40 scenes of 2-4 large objects."""


@dataclass(frozen=True)
class Paste:
    """One object to paste into a scene."""

    instance: str
    view: str
    role: str
    """"target" (dealt instance) or "distractor" (same category as a target)."""


@dataclass(frozen=True)
class Plan:
    """Which instances are queried, which views go where, and what each scene holds."""

    ids: dict[str, int]
    query_views: dict[str, tuple[str, ...]]
    scenes: list[list[Paste]]


def rng_for(spec: ComposeSpec, purpose: int, *index: int) -> np.random.Generator:
    """The generator of one part of a set: purpose 0 plans, 1 draws scene n, 2 query (instance, n)."""
    return np.random.default_rng([spec.seed, purpose, *index])


def _query_instances(objects: ObjectSource, count: int | None, rng: np.random.Generator) -> list[str]:
    """`count` instances taken round-robin over categories, so every category is queried."""
    by_category: dict[str, list[str]] = {}
    for name in sorted(objects.views):
        by_category.setdefault(objects.category(name), []).append(name)
    queues = [list(rng.permutation(names)) for names in by_category.values()]
    order = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]
    return sorted(order[: count or len(order)])


def _split_views(
    views: tuple[str, ...], count: int, rng: np.random.Generator
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(query views, scene views), disjoint unless the instance has a single view."""
    if len(views) == 1:
        return views * count, views
    chosen = set(rng.choice(len(views), size=min(count, len(views) - 1), replace=False).tolist())
    picked = [views[i] for i in sorted(chosen)]
    query = tuple(picked[i % len(picked)] for i in range(count))
    return query, tuple(v for i, v in enumerate(views) if i not in chosen)


def _deal(deck: list[str], pool: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """Take `count` distinct instances off the deck, reshuffling the pool into it when short."""
    hand: list[str] = []
    while len(hand) < count:
        fresh = [name for name in deck if name not in hand]
        if not fresh:
            deck.extend(rng.permutation(pool).tolist())
            continue
        deck.remove(fresh[0])
        hand.append(fresh[0])
    return hand


def _distractors(objects: ObjectSource, hand: list[str], queried: set[str], count: int,
                 rng: np.random.Generator) -> list[str]:
    """Same-category instances not in the scene, preferring ones that have no queries."""
    chosen: list[str] = []
    for _ in range(count):
        category = objects.category(hand[rng.integers(len(hand))])
        taken = set(hand) | set(chosen)
        same = [n for n in sorted(objects.views) if objects.category(n) == category and n not in taken]
        candidates = [n for n in same if n not in queried] or same
        if candidates:
            chosen.append(candidates[rng.integers(len(candidates))])
    return chosen


def _between(bounds: tuple[int, int], rng: np.random.Generator) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def plan(objects: ObjectSource, spec: ComposeSpec) -> Plan:
    """Decide everything discrete (instances, views, scene contents) before any rendering."""
    rng = rng_for(spec, 0)
    queried = _query_instances(objects, spec.instances, rng)
    query_views, scene_views = {}, {}
    for name, views in sorted(objects.views.items()):
        if name in queried:
            query_views[name], scene_views[name] = _split_views(views, spec.queries_per_instance, rng)
        else:
            scene_views[name] = views
    deck: list[str] = []
    scenes = []
    for _ in range(spec.scenes):
        size = min(_between(spec.objects_per_scene, rng), len(queried))
        hand = _deal(deck, queried, size, rng)
        extra = _distractors(objects, hand, set(queried), _between(spec.distractors_per_scene, rng), rng)
        roles = [(n, "target") for n in hand] + [(n, "distractor") for n in extra]
        pastes = [Paste(n, scene_views[n][rng.integers(len(scene_views[n]))], role) for n, role in roles]
        scenes.append([pastes[i] for i in rng.permutation(len(pastes))])
    ids = {name: i + 1 for i, name in enumerate(sorted(objects.views))}
    return Plan(ids=ids, query_views=query_views, scenes=scenes)
