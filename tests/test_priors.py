"""Prior-bias initialization against closed forms, plain-Python counts and a brute-force search."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from focalrec import (
    class_priors,
    focal_prior_bias,
    index_list_to_dense,
    init_prior_bias_,
    prior_bias,
)


def expected_focal_loss(
    b: torch.Tensor, pi: float, alpha: float | None, gamma: float
) -> torch.Tensor:
    """E(b) in float64, written from the definition with 1 - p computed as sigmoid(-b)."""
    b = b.double()
    p, one_minus_p = torch.sigmoid(b), torch.sigmoid(-b)
    a = 0.5 if alpha is None else alpha
    pos = one_minus_p**gamma * -torch.log(p)
    neg = p**gamma * -torch.log(one_minus_p)
    return pi * a * pos + (1 - pi) * (1 - a) * neg


def test_prior_bias_values_and_sign() -> None:
    assert prior_bias(0.01) == pytest.approx(-math.log((1 - 0.01) / 0.01))
    assert prior_bias(0.01) == pytest.approx(-4.59512, abs=1e-5)
    assert prior_bias(0.5) == 0.0
    priors = torch.tensor([1e-6, 0.01, 0.5, 0.99], dtype=torch.float64)
    torch.testing.assert_close(torch.sigmoid(prior_bias(priors)), priors)


def test_init_prior_bias_on_layer_tensor_and_per_class() -> None:
    layer = nn.Linear(4, 3)
    out = init_prior_bias_(layer, 0.01)
    assert out is layer.bias
    torch.testing.assert_close(layer.bias.detach(), torch.full((3,), prior_bias(0.01)))
    bias = torch.zeros(3)
    per_class = torch.tensor([0.1, 0.2, 0.3])
    init_prior_bias_(bias, per_class)
    torch.testing.assert_close(torch.sigmoid(bias), per_class)
    init_prior_bias_(bias, 0.01, alpha=0.25, gamma=2.0)
    focal = focal_prior_bias(0.01, alpha=0.25, gamma=2.0)
    torch.testing.assert_close(bias, torch.full((3,), focal))
    assert layer.bias.requires_grad


def test_class_priors_sparse_equals_dense_and_loop() -> None:
    g = torch.Generator().manual_seed(0)
    index = torch.randint(-1, 6, (20, 4), generator=g)
    dense = index_list_to_dense(index, 6, dtype=torch.float32)
    counts = [0] * 6
    for row in index.tolist():
        for item in set(row) - {-1}:
            counts[item] += 1
    for s in (0.0, 1.0, 0.5):
        expected = torch.tensor([(c + s) / (20 + 2 * s) for c in counts])
        torch.testing.assert_close(class_priors(index, 6, smoothing=s), expected)
        torch.testing.assert_close(class_priors(dense, smoothing=s), expected)
        torch.testing.assert_close(class_priors(dense.bool(), 6, smoothing=s), expected)


def test_class_priors_unseen_class_gets_smoothed_prior() -> None:
    priors = class_priors(torch.tensor([[0], [0]]), num_classes=3)
    assert priors.tolist() == pytest.approx([0.75, 0.25, 0.25])
    assert torch.isfinite(prior_bias(priors)).all()


@pytest.mark.parametrize("pi", [1e-4, 0.01, 0.3, 0.9])
@pytest.mark.parametrize("alpha", [None, 0.25, 0.75])
def test_focal_prior_bias_without_focusing_is_weighted_logit(
    pi: float, alpha: float | None
) -> None:
    a = 0.5 if alpha is None else alpha
    expected = math.log(pi * a / ((1 - pi) * (1 - a)))
    assert focal_prior_bias(pi, alpha=alpha, gamma=0.0) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=20)
@given(
    st.floats(1e-4, 0.999),
    st.one_of(st.none(), st.floats(0.01, 0.99)),
    st.floats(0.0, 5.0),
)
def test_focal_prior_bias_is_the_minimizer(pi: float, alpha: float | None, gamma: float) -> None:
    b = focal_prior_bias(pi, alpha=alpha, gamma=gamma)
    grid = torch.linspace(-20.0, 20.0, 8001, dtype=torch.float64)
    losses = expected_focal_loss(grid, pi, alpha, gamma)
    best = float(losses.min())
    at_b = float(expected_focal_loss(torch.tensor(b), pi, alpha, gamma))
    assert at_b <= best + 1e-12 * max(1.0, abs(best))
    assert abs(b - float(grid[losses.argmin()])) <= 1e-2 + 1e-3 * abs(b)


def test_focal_prior_bias_is_far_above_logit_for_rare_class() -> None:
    b = focal_prior_bias(0.01, alpha=0.25, gamma=2.0)
    assert b > prior_bias(0.01) + 2.0
    per_class = focal_prior_bias(torch.tensor([0.01, 0.2]), alpha=0.25, gamma=2.0)
    assert per_class[0].item() == pytest.approx(b, rel=1e-6)
    assert per_class.dtype == torch.float32


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: prior_bias(0.0), ValueError, r"`prior` must be in \(0, 1\).*got 0.0"),
        (lambda: prior_bias(1.5), ValueError, r"`prior` must be in \(0, 1\).*got 1.5"),
        (lambda: prior_bias("x"), TypeError, r"`prior` must be a real number, got str"),
        (lambda: prior_bias(torch.tensor([0.5, 1.0])), ValueError, r"values in \(0, 1\)"),
        (lambda: prior_bias(torch.tensor([1])), TypeError, r"`prior` must be a floating"),
        (lambda: focal_prior_bias(0.1, alpha=1.0, gamma=2.0), ValueError, r"`alpha` must be in"),
        (lambda: focal_prior_bias(0.1, alpha=0.2, gamma=-1.0), ValueError, r"`gamma` must be"),
        (lambda: class_priors(torch.tensor([[1]])), ValueError, r"`num_classes` is required"),
        (lambda: class_priors([[1]]), TypeError, r"`target` must be a torch.Tensor, got list"),
        (lambda: class_priors(torch.zeros(2, 3), 4), ValueError, r"must have 4 classes"),
        (lambda: class_priors(torch.zeros(())), ValueError, r"must have shape \(\.\.\., C\)"),
        (
            lambda: class_priors(torch.zeros(2, 3), smoothing=-1.0),
            ValueError,
            r"`smoothing` must be a finite number >= 0, got -1.0",
        ),
        (lambda: class_priors(torch.tensor([[5]]), 3), ValueError, r"indices in \[5, 5\]"),
        (lambda: init_prior_bias_(nn.ReLU()), TypeError, r"must have a `bias` tensor"),
        (lambda: init_prior_bias_("layer"), TypeError, r"must be an nn.Module .*got str"),
        (
            lambda: init_prior_bias_(torch.zeros(3), torch.full((4,), 0.1)),
            ValueError,
            r"prior` of shape \(4,\) does not broadcast to the bias of shape \(3,\)",
        ),
    ],
)
def test_errors(call: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()  # type: ignore[operator]
