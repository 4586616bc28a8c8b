"""Streaming metric classes: equal to the functional metrics on any split of the data."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from focalrec import MeanAveragePrecisionAtK, RankingMetricsAtK, map_at_k, ranking_metrics_at_k
from focalrec.ranking import METRICS


def _data(seed: int, n: int, c: int, ties: bool = False) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, (n, c), generator=gen).float() if ties else torch.randn(n, c)
    targets = torch.randint(-1, c, (n, 3), generator=gen)
    exclude = torch.randint(-1, c, (n, 4), generator=gen)
    return scores, targets, exclude


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(0, 40),
    cuts=st.lists(st.integers(0, 40), max_size=5),
    k=st.integers(1, 6),
    empty=st.sampled_from(["zero", "skip"]),
    denominator=st.sampled_from(["min_k", "relevant", "hits"]),
)
def test_any_batch_split_gives_the_functional_result(
    seed: int, n: int, cuts: list[int], k: int, empty: str, denominator: str
) -> None:
    scores, targets, exclude = _data(seed, n, 15, ties=seed % 2 == 0)
    bounds = sorted({0, n, *(min(c, n) for c in cuts)})
    metric = RankingMetricsAtK(k, denominator=denominator, empty_targets=empty)  # type: ignore[arg-type]
    single = MeanAveragePrecisionAtK(k, denominator=denominator, empty_targets=empty)  # type: ignore[arg-type]
    for lo, hi in itertools.pairwise(bounds):
        metric.update(scores[lo:hi], targets[lo:hi], exclude[lo:hi])
        single.update(scores[lo:hi], targets[lo:hi], exclude[lo:hi])
    expected = ranking_metrics_at_k(
        scores,
        targets,
        k,
        exclude=exclude,
        denominator=denominator,  # type: ignore[arg-type]
        empty_targets=empty,  # type: ignore[arg-type]
    )
    got = metric.compute()
    assert list(got) == list(METRICS)
    for name in METRICS:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6)
    torch.testing.assert_close(single.compute(), expected["map"], rtol=0, atol=1e-6)


def test_state_is_fixed_size_and_reset_forgets() -> None:
    metric = RankingMetricsAtK(3, ("map", "ndcg"))
    shapes = [tuple(b.shape) for b in metric.buffers()]
    for seed in range(3):
        metric.update(*_data(seed, 100, 30))
    assert [tuple(b.shape) for b in metric.buffers()] == shapes
    first = metric.compute()
    assert metric.compute() == first  # compute leaves the state as it is
    metric.reset()
    assert all(float(v) == 0.0 for v in metric.compute().values())
    scores, targets, exclude = _data(7, 50, 30)
    metric.update(scores, targets, exclude)
    assert metric.compute()["map"] == map_at_k(scores, targets, 3, exclude=exclude)


def test_state_is_not_saved_and_moves_with_the_module() -> None:
    metric = MeanAveragePrecisionAtK(3)
    assert metric.state_dict() == {}
    metric.update(torch.tensor([[0.3, 0.2, 0.1]]), torch.tensor([[2]]))
    metric = metric.half().to(torch.float32)  # dtype casts leave the float64 state alone
    assert metric.total.dtype == torch.float64
    assert metric.compute().item() == pytest.approx(1 / 3, abs=1e-7)
    assert "k=3" in repr(metric)


def test_ranked_lists_and_dense_targets_stream_too() -> None:
    preds = torch.tensor([[1, 2, 3], [4, 4, -1]])
    targets = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    metric = MeanAveragePrecisionAtK(3, empty_targets="skip")
    metric.update(preds, targets)
    assert metric.compute() == map_at_k(preds, targets, 3, empty_targets="skip")


def test_all_rows_skipped_gives_zero() -> None:
    metric = MeanAveragePrecisionAtK(3, empty_targets="skip")
    metric.update(torch.randn(4, 5), torch.full((4, 2), -1))
    assert metric.compute().item() == 0.0
    assert map_at_k(torch.randn(4, 5), torch.full((4, 2), -1), 3, empty_targets="skip") == 0.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, r"`k` must be a positive int \(k >= 1\), got 0"),
        ({"k": "3"}, TypeError, r"`k` must be a positive int, got str"),
        ({"k": 3, "metrics": ("map", "f1")}, ValueError, r"`metrics`.*got \('map', 'f1'\)"),
        ({"k": 3, "denominator": "mean"}, ValueError, r"`denominator` must be one of"),
        ({"k": 3, "empty_targets": "error"}, ValueError, r"`empty_targets` must be one of"),
    ],
)
def test_constructor_errors(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RankingMetricsAtK(**kwargs)  # type: ignore[arg-type]


def test_update_errors_name_the_argument() -> None:
    metric = MeanAveragePrecisionAtK(3)
    with pytest.raises(ValueError, match=r"`target` must have 2 rows"):
        metric.update(torch.zeros(2, 5), torch.zeros(3, 1, dtype=torch.long))
    assert metric.count.item() == 0  # a rejected batch leaves no trace
