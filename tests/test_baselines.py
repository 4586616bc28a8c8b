"""Tests for examples/baselines.py against plain-Python references."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from baselines import item_popularity, popularity_scores, transition_scores

C = 7


def _reference_transitions(
    sequences: list[list[int]],
    histories: list[list[int]],
    *,
    window: int,
    decay: float,
    max_gap: int,
    popularity_weight: float,
) -> list[list[float]]:
    follows: Counter[tuple[int, int]] = Counter()
    for seq in sequences:
        for i, a in enumerate(seq):
            for j in range(i + 1, min(i + max_gap, len(seq) - 1) + 1):
                if a >= 0 and seq[j] >= 0:
                    follows[a, seq[j]] += 1
    pop = Counter(x for seq in sequences for x in seq if x >= 0)
    top = max(pop.values(), default=0) or 1
    out = []
    for hist in histories:
        recent = [x for x in hist if x >= 0][-window:]
        row = []
        for b in range(C):
            s = sum(decay ** (len(recent) - 1 - j) * follows[a, b] for j, a in enumerate(recent))
            row.append(s + popularity_weight * pop[b] / top)
        out.append(row)
    return out


index_rows = st.lists(st.lists(st.integers(-1, C - 1), min_size=5, max_size=5), max_size=6)


@settings(max_examples=40)
@given(
    sequences=index_rows,
    histories=index_rows.filter(len),
    window=st.integers(1, 5),
    decay=st.sampled_from([1.0, 0.5, 0.3]),
    max_gap=st.integers(1, 4),
    popularity_weight=st.sampled_from([0.0, 1e-3]),
)
def test_transition_scores_match_reference(
    sequences: list[list[int]],
    histories: list[list[int]],
    window: int,
    decay: float,
    max_gap: int,
    popularity_weight: float,
) -> None:
    kwargs = {
        "window": window,
        "decay": decay,
        "max_gap": max_gap,
        "popularity_weight": popularity_weight,
    }
    seq = torch.tensor(sequences, dtype=torch.long).view(-1, 5)
    got = transition_scores(seq, torch.tensor(histories), C, **kwargs)  # type: ignore[arg-type]
    expected = _reference_transitions(sequences, histories, **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32))


def test_transition_scores_ignore_history_padding_and_use_only_the_window() -> None:
    train = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4]])
    a = transition_scores(train, torch.tensor([[0, 1, 2]]), C, window=2, popularity_weight=0.0)
    b = transition_scores(train, torch.tensor([[-1, 1, 2]]), C, window=2, popularity_weight=0.0)
    torch.testing.assert_close(a, b)
    assert a[0].tolist() == [0, 0, 1, 1, 0, 0, 0]


def test_popularity_breaks_ties_without_overturning_counts() -> None:
    train = torch.tensor([[0, 1, -1], [5, 5, 5], [6, 6, 6], [6, 4, 4]])
    scores = transition_scores(train, torch.tensor([[0], [3]]), C)
    assert scores[0].argmax() == 1  # the one transition beats any popularity
    assert scores[1].argmax() == 6  # no transitions from item 3: most popular item first


@settings(max_examples=40)
@given(sequences=index_rows.filter(len))
def test_popularity_matches_counter(sequences: list[list[int]]) -> None:
    counts = Counter(x for seq in sequences for x in seq if x >= 0)
    seq = torch.tensor(sequences)
    assert item_popularity(seq, C).tolist() == [counts[i] for i in range(C)]
    scores = popularity_scores(seq, C, num_rows=3)
    assert scores.shape == (3, C)
    assert (scores == item_popularity(seq, C)).all()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: item_popularity([[0]], C), TypeError, r"`sequences` must be a torch.Tensor"),
        (
            lambda: item_popularity(torch.zeros(2, 2), C),
            TypeError,
            r"`sequences` must be an integer tensor .* got dtype torch.float32",
        ),
        (
            lambda: item_popularity(torch.zeros(3, dtype=torch.long), C),
            ValueError,
            r"`sequences` must have shape \(N, length\), got shape \(3,\)",
        ),
        (
            lambda: item_popularity(torch.tensor([[0, 7]]), C),
            ValueError,
            r"`sequences` holds ids in \[0, 7\]; expected ids in \[0, 7\) or -1",
        ),
        (
            lambda: transition_scores(torch.tensor([[0, 1]]), torch.tensor([[-2]]), C),
            ValueError,
            r"`histories` holds ids in \[-2, -2\]",
        ),
        (
            lambda: transition_scores(torch.tensor([[0, 1]]), torch.tensor([[0]]), C, window=0),
            ValueError,
            r"`window` must be a positive int, got 0",
        ),
        (
            lambda: transition_scores(torch.tensor([[0, 1]]), torch.tensor([[0]]), C, max_gap=1.5),
            ValueError,
            r"`max_gap` must be a positive int, got 1.5",
        ),
        (
            lambda: transition_scores(torch.tensor([[0, 1]]), torch.tensor([[0]]), C, decay=0.0),
            ValueError,
            r"`decay` must be positive, got 0.0",
        ),
        (
            lambda: transition_scores(
                torch.tensor([[0, 1]]), torch.tensor([[0]]), C, popularity_weight=-1.0
            ),
            ValueError,
            r"`popularity_weight` must be non-negative, got -1.0",
        ),
    ],
)
def test_errors_name_the_argument(call: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()  # type: ignore[operator]
