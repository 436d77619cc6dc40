"""The values options may take that the schema cannot list itself: the names of registered
entries, read when checking (registries fill up on first use, and a plug-in adds its own), and
tests of what this machine has (a torch device, a faiss GPU, the Segment Anything package)."""
from __future__ import annotations

from collections.abc import Iterable

from retrieval.config.rules import ConfigError


def formats() -> Iterable[str]:
    from retrieval.datasets import LOADERS

    return LOADERS.available()


def families() -> Iterable[str]:
    from retrieval.models import FAMILIES

    return FAMILIES.available()


def modes() -> Iterable[str]:
    """query.name: an image mode, or a kind of query with words (text, composed)."""
    from retrieval.queries.spec import TEXT_KINDS

    return [*image_modes(), *TEXT_KINDS]


def image_modes() -> Iterable[str]:
    from retrieval.queries import MODES

    return MODES.available()


def combinations() -> Iterable[str]:
    from retrieval.search.composed import COMBINATIONS

    return COMBINATIONS.available()


def representations() -> Iterable[str]:
    from retrieval.representations import REPRESENTATIONS

    return REPRESENTATIONS.available()


def aggregations() -> Iterable[str]:
    from retrieval.search.images import AGGREGATIONS

    return AGGREGATIONS


def sam_model_types() -> Iterable[str]:
    """Segment Anything's own registry of model types; the package is needed to use SAM at all."""
    try:
        from segment_anything import sam_model_registry
    except ImportError:
        raise ConfigError(
            "regions.proposals.sam needs the segment_anything package: "
            "pip install git+https://github.com/facebookresearch/segment-anything"
        ) from None
    return sam_model_registry


def engines() -> Iterable[str]:
    from retrieval.features.engines import ENGINES

    return ENGINES.available()


def engine_problem(name: str) -> str | None:
    """What the extraction engine `name` lacks on this machine (None: nothing)."""
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            from retrieval.features.engines.ray_tasks import INSTALL

            return f"the ray package is not installed: {INSTALL}, or use local"
    return None


def device_problem(name: str) -> str | None:
    """Why torch cannot compute on device `name` here (None: it can)."""
    if name == "auto":
        return None
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        return "choose auto or a torch device such as cpu, cuda or cuda:1"
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return "torch sees no CUDA device here; use auto or cpu"
        if device.index is not None and device.index >= count:
            return f"torch sees {count} CUDA device(s): use cuda:0 to cuda:{count - 1}, or auto"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return "torch sees no MPS device here; use auto or cpu"
    return None


def gpu_problem(use_gpu: bool) -> str | None:
    """index.gpu=true needs faiss to see a GPU (a CPU-only build never does)."""
    import faiss

    if use_gpu and getattr(faiss, "get_num_gpus", lambda: 0)() == 0:
        return "faiss sees no GPU here; use null (the GPU when there is one) or false"
    return None
