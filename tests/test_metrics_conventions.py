"""Where focalrec's numbers differ from other libraries' by convention (docs/metrics.md's table).

Each test states both sides on a small case: focalrec's value from its definition, and the other
library's, computed by the installed library where it is installable (torchmetrics is in the test
extra; scikit-learn only where installed) or by a plain-Python port (Kaggle's ``apk``).
"""

from __future__ import annotations

import math
from types import ModuleType

import pytest
import torch

from focalrec import (
    hit_rate_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from test_ranking import ml_metrics_apk


@pytest.fixture
def tmf() -> ModuleType:
    pytest.importorskip("torchmetrics")
    import torchmetrics.functional.retrieval as functional

    return functional


def test_torchmetrics_counts_a_relevant_item_scored_at_most_0_as_not_retrieved(
    tmf: ModuleType,
) -> None:
    # The only relevant item is ranked first, but its score is negative.
    scores = torch.tensor([[-1.0, -2.0]])
    relevant = torch.tensor([[True, False]])
    pairs = {
        "precision": (precision_at_k, tmf.retrieval_precision),
        "recall": (recall_at_k, tmf.retrieval_recall),
        "mrr": (mrr_at_k, tmf.retrieval_reciprocal_rank),
        "map": (map_at_k, tmf.retrieval_average_precision),
        "hit_rate": (hit_rate_at_k, tmf.retrieval_hit_rate),
        "ndcg": (ndcg_at_k, tmf.retrieval_normalized_dcg),
    }
    ours = {name: fn(scores, relevant, 1).item() for name, (fn, _) in pairs.items()}
    theirs = {name: tm(scores[0], relevant[0], top_k=1).item() for name, (_, tm) in pairs.items()}
    assert ours == dict.fromkeys(pairs, 1.0)
    # torchmetrics: 0 for precision, recall, MRR and AP; its hit rate and nDCG count the item.
    assert theirs == {
        "precision": 0.0,
        "recall": 0.0,
        "mrr": 0.0,
        "map": 0.0,
        "hit_rate": 1.0,
        "ndcg": 1.0,
    }
    # Shifted to positive scores (the same ranking), torchmetrics agrees with focalrec.
    shifted = {
        name: tm(scores[0] + 3.0, relevant[0], top_k=1).item() for name, (_, tm) in pairs.items()
    }
    assert shifted == ours


def _tie_averaged_ndcg(scores: list[float], gains: list[float], k: int) -> float:
    """nDCG@k averaging the gains of tied items over their positions (scikit-learn's default,
    ``ignore_ties=False``), written from its definition."""
    discount = [1.0 / math.log2(i + 2) if i < k else 0.0 for i in range(len(scores))]
    dcg, position = 0.0, 0
    for value in sorted(set(scores), reverse=True):
        group = [g for s, g in zip(scores, gains, strict=True) if s == value]
        dcg += sum(group) / len(group) * sum(discount[position : position + len(group)])
        position += len(group)
    ideal = sum(g * d for g, d in zip(sorted(gains, reverse=True), discount, strict=True))
    return dcg / ideal


@pytest.mark.parametrize(("k", "focalrec_value"), [(1, 0.0), (2, 1.0 / math.log2(3))])
def test_ndcg_with_tied_scores_breaks_ties_where_others_average(
    tmf: ModuleType, k: int, focalrec_value: float
) -> None:
    # Items 0 and 1 tie; only item 1 is relevant. focalrec ranks item 0 first (lower index).
    scores = torch.tensor([[1.0, 1.0, 0.0]])
    relevant = torch.tensor([[False, True, False]])
    assert ndcg_at_k(scores, relevant, k).item() == pytest.approx(focalrec_value)
    averaged = _tie_averaged_ndcg([1.0, 1.0, 0.0], [0.0, 1.0, 0.0], k)
    assert averaged == pytest.approx({1: 0.5, 2: (1 + 1 / math.log2(3)) / 2}[k])
    theirs = tmf.retrieval_normalized_dcg(scores[0], relevant[0], top_k=k).item()
    assert theirs == pytest.approx(averaged)
    assert theirs != pytest.approx(focalrec_value)


@pytest.mark.parametrize("k", [1, 2])
def test_ndcg_with_tied_scores_against_scikit_learn(k: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    theirs = metrics.ndcg_score([[0, 1, 0]], [[1.0, 1.0, 0.0]], k=k)
    assert theirs == pytest.approx(_tie_averaged_ndcg([1.0, 1.0, 0.0], [0.0, 1.0, 0.0], k))
    ours = ndcg_at_k(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[1]]), k).item()
    assert ours == pytest.approx({1: 0.0, 2: 1.0 / math.log2(3)}[k])


def test_kaggle_apk_counts_repeated_targets_focalrec_counts_each_item_once() -> None:
    # The target list repeats item 1; the recommendation ranks it first.
    actual, predicted = [1, 1], [1, 2]
    # Kaggle: one hit at rank 1, divided by min(len(actual), k) = 2.
    assert ml_metrics_apk(actual, predicted, 2) == 0.5
    # focalrec: the relevant set is {1}, so the denominator is min(|R|, k) = 1.
    assert map_at_k(torch.tensor([predicted]), torch.tensor([actual]), 2).item() == 1.0
    # The same once the targets hold each item once.
    assert ml_metrics_apk(sorted(set(actual)), predicted, 2) == 1.0
