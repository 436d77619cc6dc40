"""Instance retrieval (FORMATS.md section 3): mAP, mAP@K, P@K, recall@K and hit@K."""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from retrieval.metrics import AP_MODES, per_query_metrics
from retrieval.protocols import ProtocolResult, evaluate_setups, register
from retrieval.ranking import Ranking
from retrieval.records import Dataset


@register("instance")
def instance(
    ranking: Ranking, dataset: Dataset, ks: Sequence[int] = (1, 5, 10), ap: str = "standard"
) -> ProtocolResult:
    """Instance retrieval: mAP, mAP@K, P@K, recall@K, hit@K (ap='fyn': Find-your-Needle AP).

    With `ap="standard"` queries without positives are left out of every mean and counted;
    `ap="fyn"` divides AP by the positives found in the returned list and scores queries
    without positives as 0, kept in the means, to reproduce SoIR's published numbers.
    """
    if ap not in AP_MODES:
        raise ValueError(f"ap must be one of {AP_MODES}, not {ap!r}")
    scorer = partial(per_query_metrics, n_gallery=len(dataset.gallery), ks=tuple(ks), ap=ap)
    return evaluate_setups(ranking, dataset, scorer)
