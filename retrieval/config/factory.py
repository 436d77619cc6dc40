"""The FAISS index factory and its search parameters, checked by building the index: faiss
alone knows which factory strings and parameters it accepts. The knobs this package tunes
(nprobe, efSearch) are checked further, since faiss takes any number for them and then fails
in the middle of a search (nprobe=-3) or silently finds almost nothing (efSearch=0)."""
from __future__ import annotations

import re
from collections.abc import Mapping

from retrieval.config.nodes import unknown
from retrieval.config.rules import ConfigError

REPRESENTATIVE_DIM = 7680
"""The descriptor size index.factory is checked at when no model gives the real one: the
least common multiple of the shipped models' sizes (384 DINOv2-S, 512 CLIP-B, 768 DINOv2-B
and CLIP-L, 1280 EfficientNet-Lite0), so a PQ or OPQ sub-quantizer count that divides the
size of any of them divides it too and no factory valid for a shipped model is refused."""
MAX_CODE_BITS = 16
"""Most bits per code (the `x16` of PQ32x16) a factory may ask for: faiss allows 24, but a
code of b bits needs a 2^b x d codebook (2 GB at 16 bits and the dimension above, 515 GB at
24), which the check itself would have to allocate."""


def check_index(
    factory: str,
    search_params: Mapping[str, float] | None = None,
    dim: int = REPRESENTATIVE_DIM,
    target_recall: float | None = None,
) -> None:
    """Raise ConfigError unless faiss builds `factory` for inner-product search at `dim` (the
    model's descriptor size; REPRESENTATIVE_DIM when no model is known), accepts every search
    parameter, with nprobe and efSearch in their range (but for the one a `target_recall`
    tunes, whose value tuning replaces), and has a knob to tune when a `target_recall` is set
    (exact `Flat` needs none)."""
    import faiss

    from retrieval.search.approximate.knobs import knob_of

    bits = [int(b) for b in re.findall(r"x(\d+)", factory)]
    if bits and max(bits) > MAX_CODE_BITS:
        raise ConfigError(
            f"index.factory={factory} is not valid: use at most {MAX_CODE_BITS} bits per code "
            f"(x{MAX_CODE_BITS}); x{max(bits)} means {2 ** max(bits)}-entry codebooks"
        )
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise ConfigError(
            f"index.factory={factory} is not valid: faiss cannot build it for inner product at d={dim} "
            f"({_faiss_reason(error)}); use index=flat, index=hnsw or another faiss index_factory string, "
            "such as \"index.factory='IVF1024,PQ32'\""
        ) from None
    tuned = knob_of(index) if target_recall is not None else None
    space = faiss.ParameterSpace()
    for name, value in (search_params or {}).items():
        try:
            space.set_index_parameter(index, name, float(value))
        except RuntimeError:
            space.initialize(index)
            known = [space.parameter_ranges.at(i).name for i in range(space.parameter_ranges.size())]
            raise ConfigError(unknown(f"index.search_params.{name}", f"index.factory={factory}", known)) from None
        problem = None if tuned is not None and name == tuned.name else _knob_problem(name, value, index, factory)
        if problem:
            raise ConfigError(f"index.search_params.{name}={value:g} is not valid: {problem}")
    if target_recall is not None and factory != "Flat":
        from retrieval.search.approximate.knobs import knob_to_tune

        knob_to_tune(index, factory, target_recall)


def _knob_problem(name: str, value: float, index, factory: str) -> str | None:
    """What to use instead of `value` for knob `name` of `index`, or None when it fits:
    nprobe from 1 to the lists the factory has, efSearch a whole number from 1."""
    from retrieval.search.approximate.knobs import inner_index

    whole = float(value).is_integer()
    if name == "nprobe":
        lists = inner_index(index).nlist
        if not (whole and 1 <= value <= lists):
            return f"index.factory={factory} has {lists} inverted lists: use a whole number from 1 to {lists}"
    if name == "efSearch" and not (whole and value >= 1):
        return ("use a whole number >= 1, and at least the k results each query keeps (dataset.k) "
                "for the graph search to find them all")
    return None


def _faiss_reason(error: RuntimeError) -> str:
    """The sentence of a faiss exception, without its C++ location ("Error in ... at file:line: ")."""
    text = (str(error).strip().splitlines() or [repr(error)])[0]
    located = re.search(r" at \S+:\d+: (.*)", text)
    reason = located.group(1) if located else text
    return re.sub(r"^Error: '.*' failed: ", "", reason).rstrip(".")
