"""Sampled negatives and gSASRec's gBCE exponent, against plain-Python references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from focalrec import gbce_beta, sample_negatives

# --------------------------------------------------------------------------------------------------
# gbce_beta


def _gsasrec_beta(negatives: int, num_items: int, t: float) -> float:
    """gSASRec's expression as their gbce.py writes it, in Python floats (float64)."""
    alpha = negatives / (num_items - 1)
    return alpha * ((1 - 1 / alpha) * t + 1 / alpha)


def _gsasrec_positive_bce(logit: torch.Tensor, beta: float) -> torch.Tensor:
    """BCE of gSASRec's float64 transform of a positive logit (its clamps as published)."""
    eps = 1e-10
    probs = torch.clamp(torch.sigmoid(logit.double()), eps, 1 - eps)
    adjusted = torch.clamp(probs.pow(-beta), 1 + eps, torch.finfo(torch.float64).max)
    to_log = torch.clamp(1.0 / (adjusted - 1), eps, torch.finfo(torch.float64).max)
    return F.softplus(-to_log.log())


@given(st.integers(1, 5000), st.integers(2, 10**6), st.floats(0, 1))
def test_gbce_beta_is_gsasrecs(negatives: int, num_items: int, t: float) -> None:
    expected = _gsasrec_beta(negatives, num_items, t)
    assert gbce_beta(negatives, num_items, t) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("t", [0.0, 0.25, 0.75, 1.0])
@pytest.mark.parametrize(("negatives", "num_items"), [(1, 3416), (256, 3416), (16, 1000)])
def test_beta_weighted_bce_is_gsasrecs_transformed_bce(
    t: float, negatives: int, num_items: int
) -> None:
    # Where gSASRec's clamps do not act, BCE of its transformed logit is beta * softplus(-s).
    logits = torch.linspace(-8.0, 8.0, 161, dtype=torch.float64)
    beta = gbce_beta(negatives, num_items, t)
    torch.testing.assert_close(
        beta * F.softplus(-logits), _gsasrec_positive_bce(logits, beta), rtol=1e-9, atol=1e-12
    )


def test_gbce_beta_ends_and_oversampling() -> None:
    assert gbce_beta(256, 3416, 0.0) == 1.0  # plain BCE over the sample
    assert gbce_beta(256, 3416, 1.0) == pytest.approx(256 / 3415, rel=1e-15)  # the sampling rate
    assert gbce_beta(20, 11, 0.5) == pytest.approx(1.5, rel=1e-15)  # more draws than items: > 1


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((0, 10, 0.5), ValueError, r"`num_negatives` must be an int >= 1, got 0"),
        ((1.0, 10, 0.5), TypeError, r"`num_negatives` must be an int, got float"),
        ((1, 1, 0.5), ValueError, r"`num_items` must be an int >= 2, got 1"),
        ((1, 10, 1.5), ValueError, r"`t` must be in \[0, 1\], got 1.5"),
        ((1, 10, math.nan), ValueError, r"`t` must be in \[0, 1\], got nan"),
        ((1, 10, "0.5"), TypeError, r"`t` must be a number in \[0, 1\], got str"),
    ],
)
def test_gbce_beta_errors(args: tuple[object, ...], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        gbce_beta(*args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# sample_negatives


def _allowed(row: list[int], num_items: int) -> list[int]:
    return [i for i in range(num_items) if i not in set(row)]


@given(
    st.integers(0, 6),
    st.integers(1, 9),
    st.integers(1, 30),
    st.integers(0, 2**31),
    st.data(),
)
def test_draws_are_ids_the_row_does_not_exclude(
    rows: int, k: int, num_items: int, seed: int, data: st.DataObject
) -> None:
    width = data.draw(st.integers(0, num_items + 3))
    exclude_rows = [
        data.draw(st.lists(st.integers(-1, num_items - 1), min_size=width, max_size=width))
        for _ in range(rows)
    ]
    # Each row must leave an item: drop rows that exclude everything.
    exclude_rows = [r for r in exclude_rows if _allowed(r, num_items)]
    exclude = torch.tensor(exclude_rows, dtype=torch.long).reshape(len(exclude_rows), width)
    gen = torch.Generator().manual_seed(seed)
    got = sample_negatives(len(exclude_rows), k, num_items, exclude=exclude, generator=gen)
    assert got.dtype == torch.int64
    assert got.shape == (len(exclude_rows), k)
    for row, ids in zip(exclude_rows, got.tolist(), strict=True):
        assert set(ids) <= set(_allowed(row, num_items))


def test_draws_are_uniform_over_the_allowed_ids() -> None:
    # 200,000 draws over 7 allowed ids of 10: each count within 5 standard deviations of n / 7.
    exclude = torch.tensor([[2, 5, 5, -1, 9]] * 1000)
    gen = torch.Generator().manual_seed(0)
    ids = sample_negatives(1000, 200, 10, exclude=exclude, generator=gen)
    counts = torch.bincount(ids.flatten(), minlength=10).tolist()
    assert counts[2] == counts[5] == counts[9] == 0
    n, p = ids.numel(), 1 / 7
    sd = math.sqrt(n * p * (1 - p))
    for item in (0, 1, 3, 4, 6, 7, 8):
        assert abs(counts[item] - n * p) < 5 * sd, (item, counts)


def test_without_exclusions_every_id_is_possible_and_draws_are_reproducible() -> None:
    a = sample_negatives(50, 40, 6, generator=torch.Generator().manual_seed(3))
    b = sample_negatives(50, 40, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert sorted(set(a.flatten().tolist())) == list(range(6))
    assert sample_negatives(0, 3, 6).shape == (0, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_negatives": 0}, ValueError, r"`num_negatives` must be an int >= 1, got 0"),
        ({"num_items": 0}, ValueError, r"`num_items` must be an int >= 1, got 0"),
        ({"num_rows": -1}, ValueError, r"`num_rows` must be an int >= 0, got -1"),
        ({"num_rows": 2.0}, TypeError, r"`num_rows` must be an int, got float"),
        ({"exclude": torch.tensor([[0.0]])}, TypeError, r"`exclude` must be an integer tensor"),
        ({"exclude": torch.tensor([[5]])}, ValueError, r"`exclude` holds item indices"),
        ({"exclude": torch.tensor([[0], [1]])}, ValueError, r"`exclude` must have 1 rows"),
        (
            {"exclude": torch.tensor([[0, 1, 2, 3, 4]])},
            ValueError,
            r"`exclude` leaves no item to draw in row 0",
        ),
    ],
)
def test_sample_negatives_errors(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    args: dict[str, object] = {"num_rows": 1, "num_negatives": 2, "num_items": 5, **kwargs}
    with pytest.raises(error, match=match):
        sample_negatives(**args)  # type: ignore[arg-type]
