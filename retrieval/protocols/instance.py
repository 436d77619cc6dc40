"""Instance retrieval (docs/formats.md section 3): mAP, mAP@K, P@K, recall@K and hit@K."""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from retrieval.metrics import AP_MODES, fyn_summary, per_query_metrics
from retrieval.protocols import ProtocolResult, evaluate_setups, register
from retrieval.ranking import Ranking
from retrieval.records import Dataset


@register("instance")
def instance(
    ranking: Ranking, dataset: Dataset, ks: Sequence[int] = (1, 5, 10), ap: str = "standard"
) -> ProtocolResult:
    """Instance retrieval: mAP, mAP@K, P@K, recall@K, hit@K (ap='fyn': Find-your-Needle's own).

    With `ap="standard"` queries without positives are left out of every mean and counted.
    `ap="fyn"` reproduces SoIR's published numbers on any ranking (`per_query_metrics`):
    repeated entries counted at each occurrence, AP divided by the positives found, P@K = hits
    in the top K / K with queries skipped when the gallery holds fewer than K items (a mean
    over no query is 0), and queries without positives scored 0, kept in the means.
    """
    if ap not in AP_MODES:
        raise ValueError(f"ap must be one of {AP_MODES}, not {ap!r}")
    scorer = partial(per_query_metrics, n_gallery=len(dataset.gallery), ks=tuple(ks), ap=ap)
    result = evaluate_setups(ranking, dataset, scorer)
    if ap == "fyn":
        result.summary = {label: fyn_summary(metrics) for label, metrics in result.summary.items()}
    return result
