"""The sequence models' dropout: torch.nn.Dropout's meaning with a cheaper mask on the CPU."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from focalrec.models import SequenceTransformer
from focalrec.models._dropout import Dropout


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5, 0.9])
def test_drop_rate_and_unbiased_mean(p: float) -> None:
    torch.manual_seed(0)
    x = torch.rand(400_000) + 0.5
    out = Dropout(p)(x)
    dropped = out == 0
    n = x.numel()
    # the rate used is round(p * 2^16) / 2^16; 6 standard deviations of a binomial
    rate = round(p * 65536) / 65536
    assert abs(float(dropped.float().mean()) - rate) < 6 * math.sqrt(rate * (1 - rate) / n)
    # a kept element is scaled by exactly 1 / (1 - rate) (the float32 product of x and the scale)
    scale = torch.tensor(1.0 / (1.0 - rate), dtype=torch.float32)
    assert torch.equal(out[~dropped], x[~dropped] * scale)


def test_every_lane_of_a_draw_is_uniform() -> None:
    # each 64-bit draw serves 4 consecutive elements: every lane must drop at the same rate
    torch.manual_seed(1)
    out = Dropout(0.5)(torch.ones(4 * 100_000)).view(-1, 4)
    rates = (out == 0).float().mean(dim=0)
    assert torch.all((rates - 0.5).abs() < 6 * math.sqrt(0.25 / 100_000)), rates
    # and neighbouring lanes are independent: both dropped about a quarter of the time
    both = ((out[:, 0] == 0) & (out[:, 1] == 0)).float().mean()
    assert abs(float(both) - 0.25) < 6 * math.sqrt(0.25 * 0.75 / 100_000)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 7), min_size=0, max_size=3),
    p=st.floats(0.0, 0.999),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_gradient_is_the_mask_times_the_scale(
    shape: list[int], p: float, dtype: torch.dtype, seed: int
) -> None:
    torch.manual_seed(seed)
    x = torch.randn(shape).to(dtype).requires_grad_()
    out = Dropout(p)(x)
    assert out.shape == x.shape
    assert out.dtype == dtype
    (grad,) = torch.autograd.grad(out.float().sum(), x) if x.numel() else (torch.zeros(shape),)
    kept = out != 0
    nonzero = x != 0
    # where x is not 0, the gradient is the factor that multiplied x: 0 or 1 / (1 - p')
    factor = (out.double() / x.double())[nonzero]
    assert torch.allclose(grad.double()[nonzero], factor, rtol=1e-2)
    assert torch.all(grad[nonzero & ~kept] == 0)


def test_repeatable_under_manual_seed_and_identity_in_eval() -> None:
    drop = Dropout(0.3)
    torch.manual_seed(5)
    a = drop(torch.ones(1001))
    torch.manual_seed(5)
    b = drop(torch.ones(1001))
    assert torch.equal(a, b)
    x = torch.randn(7, 3)
    assert drop.eval()(x) is x or torch.equal(drop(x), x)


def test_falls_back_to_torch_where_it_is_not_the_fast_path() -> None:
    x = torch.randn(64)
    for drop in (Dropout(0.0), Dropout(1.0)):
        torch.manual_seed(0)
        want = nn.functional.dropout(x, drop.p, True)
        torch.manual_seed(0)
        assert torch.equal(drop(x), want)
    inplace = Dropout(0.5, inplace=True)
    y = x.clone()
    torch.manual_seed(0)
    inplace(y)
    torch.manual_seed(0)
    assert torch.equal(y, nn.functional.dropout(x, 0.5, True))


def test_is_a_torch_dropout_in_the_transformer() -> None:
    model = SequenceTransformer(10, 4, embedding_dim=8, num_heads=2, dropout=0.25)
    layers = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert layers
    assert all(isinstance(m, Dropout) and m.p == 0.25 for m in layers)
    assert "Dropout(p=0.25" in repr(model)
