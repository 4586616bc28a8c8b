"""linear_sigmoid_focal_loss and LinearFocalLoss against the unfused loss and a float64 formula."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT
from focalrec import (
    FocalLoss,
    LinearFocalLoss,
    index_list_to_dense,
    linear_sigmoid_focal_loss,
    sigmoid_focal_loss,
)
from focalrec._linear.plan import LINEAR_REDUCTIONS
from test_losses import reduce_reference, reference

Tensor = torch.Tensor


def layer(
    n: int, d: int, c: int, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor, Tensor]:
    """Features, weight and bias whose logits spread over about [-12, 4]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(c, d, generator=g, dtype=torch.float64) * (2.0 / max(d, 1) ** 0.5)
    b = torch.randn(c, generator=g, dtype=torch.float64) - 4.0
    return x.to(dtype), w.to(dtype), b.to(dtype)


def expected_loss(
    x: Tensor,
    w: Tensor,
    b: Tensor | None,
    dense: Tensor,
    alpha: float | Tensor | None,
    gamma: float,
    reduction: str,
    weight: Tensor | None = None,
) -> Tensor:
    """The loss of the logits written out in float64 (autograd differentiates it)."""
    z = x.double() @ w.double().T + (0.0 if b is None else b.double())
    terms = reference(z, dense.double(), alpha, gamma)
    return reduce_reference(terms, dense, reduction, weight)


def grads(loss: Tensor, *tensors: Tensor) -> list[Tensor]:
    return list(torch.autograd.grad(loss, tensors))


def assert_float32_close(got: Tensor, want: Tensor) -> None:
    """Equal to float32 rounding: each entry is a sum of a few dozen products, so an entry near
    0 by cancellation carries an absolute error of a few float32 ulps of the largest entries."""
    scale = float(want.abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=2e-6 * scale + 1e-12)


# ------------------------------------------------------------------ equal to the unfused loss


@pytest.mark.parametrize("reduction", LINEAR_REDUCTIONS)
@pytest.mark.parametrize("targets", ["index", "dense", "bool", "soft"])
@pytest.mark.parametrize("alpha", [None, 0.25, "per-item"])
def test_matches_unfused_and_float64_formula(reduction: str, targets: str, alpha: object) -> None:
    n, d, c = 37, 9, 53
    x, w, b = (t.requires_grad_() for t in layer(n, d, c))
    g = torch.Generator().manual_seed(1)
    index = torch.randint(-1, c, (n, 4), generator=g)
    dense = index_list_to_dense(index, c, dtype=torch.float32)
    target = {
        "index": index,
        "dense": dense,
        "bool": dense.bool(),
        "soft": torch.rand(n, c, generator=g),
    }[targets]
    a = torch.rand(c, generator=g) if alpha == "per-item" else alpha
    assert a is None or isinstance(a, (float, Tensor))
    kwargs = {"alpha": a, "gamma": 2.0, "reduction": reduction}
    fused = linear_sigmoid_focal_loss(
        x,
        w,
        target,
        linear_bias=b,
        chunk_size=(5, 7),
        **kwargs,  # type: ignore[arg-type]
    )
    unfused = sigmoid_focal_loss(F.linear(x, w, b), target, **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(fused, unfused, rtol=2e-6, atol=1e-7)
    got = grads(fused, x, w, b)
    for g, want in zip(got, grads(unfused, x, w, b), strict=True):
        assert_float32_close(g, want)
    dense_target = target if targets != "index" else dense
    formula = expected_loss(x, w, b, dense_target.double(), a, 2.0, reduction)
    torch.testing.assert_close(fused.double(), formula, rtol=2e-6, atol=1e-7)
    for g, want in zip(got, grads(formula, x, w, b), strict=True):
        assert_float32_close(g, want)


@pytest.mark.parametrize("reduction", LINEAR_REDUCTIONS)
@pytest.mark.parametrize("shape", [(53,), (37, 1), (37, 53), (1, 53)])
def test_elementwise_weight(reduction: str, shape: tuple[int, ...]) -> None:
    n, d, c = 37, 6, 53
    x, w, b = (t.requires_grad_() for t in layer(n, d, c, seed=2))
    g = torch.Generator().manual_seed(3)
    index = torch.randint(-1, c, (n, 3), generator=g)
    weight = torch.rand(shape, generator=g)
    weight[..., 0] = 0.0  # masked entries
    kw = {"reduction": reduction, "weight": weight}
    fused = linear_sigmoid_focal_loss(x, w, index, linear_bias=b, chunk_size=(8, 10), **kw)  # type: ignore[arg-type]
    unfused = sigmoid_focal_loss(F.linear(x, w, b), index, **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(fused, unfused, rtol=2e-6, atol=1e-7)
    for got, want in zip(grads(fused, x, w, b), grads(unfused, x, w, b), strict=True):
        assert_float32_close(got, want)


def test_without_bias_and_with_frozen_parts() -> None:
    x, w, _ = layer(11, 4, 17, seed=4)
    index = torch.randint(-1, 17, (11, 2), generator=torch.Generator().manual_seed(5))
    w.requires_grad_()  # features and bias frozen: only the weight's gradient is computed
    fused = linear_sigmoid_focal_loss(x, w, index, chunk_size=(3, 4))
    unfused = sigmoid_focal_loss(F.linear(x, w), index)
    torch.testing.assert_close(fused, unfused)
    torch.testing.assert_close(grads(fused, w)[0], grads(unfused, w)[0], rtol=1e-5, atol=1e-8)
    with torch.no_grad():
        torch.testing.assert_close(linear_sigmoid_focal_loss(x, w, index), unfused.detach())


@pytest.mark.parametrize("reduction", LINEAR_REDUCTIONS)
@pytest.mark.parametrize("alpha", [None, "per-item"])
def test_gradcheck_float64(reduction: str, alpha: object) -> None:
    x, w, b = (t.requires_grad_() for t in layer(6, 3, 7, seed=6, dtype=torch.float64))
    g = torch.Generator().manual_seed(7)
    index = torch.randint(-1, 7, (6, 3), generator=g)
    a = torch.rand(7, generator=g, dtype=torch.float64) if alpha == "per-item" else alpha

    def fn(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return linear_sigmoid_focal_loss(
            x,
            w,
            index,
            linear_bias=b,
            alpha=a,
            gamma=1.5,
            reduction=reduction,
            chunk_size=(4, 3),  # type: ignore[arg-type]
        )

    assert torch.autograd.gradcheck(fn, (x, w, b))


# ------------------------------------------------------------------ chunks, edges, dtypes


@dataclass(frozen=True)
class Case:
    """A layer, its targets and a chunk size, as hypothesis draws them."""

    n: int
    c: int
    d: int
    index: Tensor
    seed: int
    scale: float
    chunk: tuple[int, int]
    reduction: str
    alpha: str | float | None
    gamma: float
    dense: bool

    def alpha_for(self, dtype: torch.dtype) -> Tensor | float | None:
        if self.alpha == "per-item":
            return torch.linspace(0, 1, self.c, dtype=dtype)
        return None if self.alpha is None else float(self.alpha)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n, c, d, m = (draw(st.integers(lo, hi)) for lo, hi in ((0, 12), (0, 14), (1, 4), (0, 4)))
    ids = st.integers(-1, max(c - 1, -1))
    index = torch.tensor(draw(st.lists(ids, min_size=n * m, max_size=n * m)), dtype=torch.long)
    return Case(
        n=n,
        c=c,
        d=d,
        index=index.reshape(n, m),
        seed=draw(st.integers(0, 2**16)),
        scale=draw(st.sampled_from([1.0, 10.0, 1e3])),  # saturated logits too
        chunk=(draw(st.integers(1, n + 2)), draw(st.integers(1, c + 2))),
        reduction=draw(st.sampled_from(LINEAR_REDUCTIONS)),
        alpha=draw(st.sampled_from([None, 0.25, "per-item"])),
        gamma=draw(st.sampled_from([0.0, 0.5, 2.0, 3.7])),
        dense=draw(st.booleans()),
    )


@settings(max_examples=60)
@given(cases())
def test_any_chunk_size_gives_the_formula(case: Case) -> None:
    x, w, b = layer(case.n, case.d, case.c, case.seed, torch.float64)
    x = (x * case.scale).requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    dense = index_list_to_dense(case.index, case.c, dtype=torch.float64)
    alpha = case.alpha_for(torch.float64)
    kwargs = {"alpha": alpha, "gamma": case.gamma, "reduction": case.reduction}
    fused = linear_sigmoid_focal_loss(
        x,
        w,
        dense if case.dense else case.index,
        linear_bias=b,
        chunk_size=case.chunk,
        **kwargs,  # type: ignore[arg-type]
    )
    assert fused.dtype == torch.float64
    formula = expected_loss(x, w, b, dense, alpha, case.gamma, case.reduction)
    torch.testing.assert_close(fused, formula, rtol=1e-9, atol=1e-12)
    if case.n * case.c == 0:
        assert float(fused.detach()) == 0.0
    # Gradients against the unfused loss in float64 (the naive formula's autograd gives NaN at
    # saturated logits for gamma < 1; the unfused closed form is tested in test_losses.py).
    unfused = sigmoid_focal_loss(F.linear(x, w, b), case.index, **kwargs)  # type: ignore[arg-type]
    for got, want in zip(grads(fused, x, w, b), grads(unfused, x, w, b), strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@settings(max_examples=25)
@given(cases(), st.sampled_from([torch.float16, torch.bfloat16]))
def test_half_precision_inputs(case: Case, dtype: torch.dtype) -> None:
    x, w, b = (t.requires_grad_() for t in layer(case.n, case.d, case.c, case.seed, dtype))
    fused = linear_sigmoid_focal_loss(
        x,
        w,
        case.index,
        linear_bias=b,
        reduction=case.reduction,
        chunk_size=case.chunk,  # type: ignore[arg-type]
    )
    assert fused.dtype == torch.float32
    got = grads(fused, x, w, b)
    assert [g.dtype for g in got] == [dtype] * 3
    # The same half-precision inputs in float64: the differences are the matmuls' roundings.
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    dense = index_list_to_dense(case.index, case.c, dtype=torch.float64)
    formula = expected_loss(x64, w64, b64, dense, 0.25, 2.0, case.reduction)
    torch.testing.assert_close(fused.double(), formula, rtol=3e-2, atol=1e-3)
    bounds = term_magnitudes(x64, w64, b64, dense, 0.25, 2.0, case.reduction)
    for g_got, g_want, bound in zip(got, grads(formula, x64, w64, b64), bounds, strict=True):
        assert torch.isfinite(g_got).all()
        error = (g_got.double() - g_want).abs()
        assert bool((error <= 3e-2 * (bound + g_want.abs()) + 1e-6).all()), (error, bound)


def term_magnitudes(
    x: Tensor,
    w: Tensor,
    b: Tensor,
    dense: Tensor,
    alpha: float | Tensor | None,
    gamma: float,
    reduction: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """The sums of the magnitudes of the terms of each gradient entry, in float64.

    The gradient of the loss with respect to the logits, G, bounds each product's rounding by
    the sum of its terms' magnitudes (|G| |w|, |G|^T |x|, the column sums of |G|): sums that
    cancel are exact only to the half precision of their terms.
    """
    x, w, b = x.detach().double(), w.detach().double(), b.detach().double()
    z = x @ w.T + b
    n, c = z.shape
    eye, zero = torch.eye(n, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    w_z = z.T.clone().requires_grad_()  # logits = eye @ w_z.T + 0
    loss_z = expected_loss(eye, w_z, zero, dense, alpha, gamma, reduction)
    g = torch.autograd.grad(loss_z, w_z)[0].T.abs()
    return g @ w.abs(), g.T @ x.abs(), g.sum(0)


def test_chunk_size_does_not_change_float32_results_beyond_rounding() -> None:
    x, w, b = (t.requires_grad_() for t in layer(64, 16, 300, seed=8))
    index = torch.randint(-1, 300, (64, 5), generator=torch.Generator().manual_seed(9))
    results = []
    for chunk in [(1, 1), (7, 300), (64, 13), (64, 300), (1000, 1000)]:
        loss = linear_sigmoid_focal_loss(x, w, index, linear_bias=b, chunk_size=chunk)
        results.append([loss, *grads(loss, x, w, b)])
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)


def test_item_ranges_add_up_to_the_catalogue() -> None:
    x, w, b = (t.requires_grad_() for t in layer(20, 5, 31, seed=10))
    g = torch.Generator().manual_seed(11)
    index = torch.randint(-1, 31, (20, 6), generator=g)
    alpha = torch.rand(31, generator=g)
    whole = linear_sigmoid_focal_loss(x, w, index, linear_bias=b, alpha=alpha, reduction="sum")
    cuts = [0, 4, 4, 19, 31]  # an empty range included
    parts = [
        linear_sigmoid_focal_loss(
            x,
            w[lo:hi],
            index,
            linear_bias=b[lo:hi],
            alpha=alpha[lo:hi],
            reduction="sum",
            item_offset=lo,
            num_items=31,
            chunk_size=(7, 3),
        )
        for lo, hi in itertools.pairwise(cuts)
    ]
    torch.testing.assert_close(sum(parts), whole)
    for got, want in zip(grads(sum(parts), x, w, b), grads(whole, x, w, b), strict=True):  # type: ignore[arg-type]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ autocast

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

AUTOCAST_CASES = [
    pytest.param("cpu", torch.bfloat16, id="cpu-bfloat16"),
    pytest.param("cuda", torch.float16, id="cuda-float16", marks=needs_cuda),
    pytest.param("cuda", torch.bfloat16, id="cuda-bfloat16", marks=needs_cuda),
]

AUTOCAST_RTOL = {torch.bfloat16: 2.0**-5, torch.float16: 2.0**-7}
"""Error allowed to a gradient entry under autocast, relative to the magnitudes of its terms.

Both paths round the operands to the autocast dtype, the logits, their gradient and each
product once, each a relative error of at most the unit roundoff (2^-9 for bfloat16, 2^-11
for float16), and a logit's error moves its focal gradient by up to about (1 + gamma) times
as much: 2^-5 and 2^-7 allow about 16 such roundings. Both the fused layer and ``F.linear``
followed by the loss are held to it.
"""


def autocast_layer(device: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, w, b = (t.to(device).requires_grad_() for t in layer(48, 24, 200, seed=21))
    index = torch.randint(-1, 200, (48, 5), generator=torch.Generator().manual_seed(22))
    return x, w, b, index.to(device)


@pytest.mark.parametrize(("device", "dtype"), AUTOCAST_CASES)
@pytest.mark.parametrize("reduction", LINEAR_REDUCTIONS)
@pytest.mark.parametrize("dense", [False, True])
def test_autocast_matches_unfused_linear_under_autocast(
    device: str, dtype: torch.dtype, reduction: str, dense: bool
) -> None:
    x, w, b, index = autocast_layer(device)
    target = index_list_to_dense(index, 200, dtype=torch.float32) if dense else index
    kwargs = {"alpha": 0.25, "gamma": 2.0, "reduction": reduction}
    with torch.autocast(device, dtype=dtype):
        fused = linear_sigmoid_focal_loss(
            x,
            w,
            target,
            linear_bias=b,
            chunk_size=(16, 64),
            **kwargs,  # type: ignore[arg-type]
        )
        unfused = sigmoid_focal_loss(F.linear(x, w, b), target, **kwargs)  # type: ignore[arg-type]
    assert fused.dtype == unfused.dtype == torch.float32
    got, via_linear = grads(fused, x, w, b), grads(unfused, x, w, b)
    assert [g.dtype for g in got] == [g.dtype for g in via_linear] == [torch.float32] * 3
    # The float64 formula of the operands as autocast rounds them.
    x64, w64, b64 = (t.detach().to(dtype).double().cpu().requires_grad_() for t in (x, w, b))
    dense64 = index_list_to_dense(index.cpu(), 200, dtype=torch.float64)
    formula = expected_loss(x64, w64, b64, dense64, 0.25, 2.0, reduction)
    rtol = AUTOCAST_RTOL[dtype]
    for loss in (fused, unfused):
        torch.testing.assert_close(loss.double().cpu(), formula, rtol=rtol, atol=1e-6)
    bounds = term_magnitudes(x64, w64, b64, dense64, 0.25, 2.0, reduction)
    wanted = grads(formula, x64, w64, b64)
    for path in (got, via_linear):
        for g_got, g_want, bound in zip(path, wanted, bounds, strict=True):
            error = (g_got.double().cpu() - g_want).abs()
            assert bool((error <= rtol * (bound + g_want.abs()) + 1e-7).all()), (error, bound)


@pytest.mark.parametrize(("device", "dtype"), AUTOCAST_CASES)
def test_autocast_casts_the_operands_and_accumulates_in_float32(
    device: str, dtype: torch.dtype
) -> None:
    # Under autocast the call equals the call on the operands cast to the autocast dtype,
    # except that each gradient arrives in its tensor's dtype straight from the float32
    # accumulator (no round trip through the autocast dtype).
    x, w, b, index = autocast_layer(device)
    with torch.autocast(device, dtype=dtype):
        loss = linear_sigmoid_focal_loss(x, w, index, linear_bias=b, chunk_size=(16, 64))
    cast = [t.detach().to(dtype).requires_grad_() for t in (x, w, b)]
    explicit = linear_sigmoid_focal_loss(
        cast[0], cast[1], index, linear_bias=cast[2], chunk_size=(16, 64)
    )
    assert torch.equal(loss, explicit)
    plain = linear_sigmoid_focal_loss(x, w, index, linear_bias=b, chunk_size=(16, 64))
    assert not torch.equal(loss, plain)  # the matmuls did not run in float32
    for got, half in zip(grads(loss, x, w, b), grads(explicit, *cast), strict=True):
        assert got.dtype == torch.float32
        assert half.dtype == dtype
        assert torch.equal(got.to(dtype), half)


@settings(max_examples=30)
@given(cases(), st.sampled_from([torch.bfloat16, torch.float16]))
def test_autocast_equals_the_call_on_cast_operands(case: Case, dtype: torch.dtype) -> None:
    # Any shape (empty ones too), chunk, reduction, alpha, gamma and saturated logits: under
    # CPU autocast the call is the call on the operands cast to the autocast dtype, and each
    # gradient comes in its own tensor's dtype, rounded from the same float32 accumulator.
    x, w, b = layer(case.n, case.d, case.c, case.seed)
    x = (x * case.scale).requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    target = index_list_to_dense(case.index, case.c) if case.dense else case.index
    kwargs = {
        "alpha": case.alpha_for(torch.float32),
        "gamma": case.gamma,
        "reduction": case.reduction,
        "chunk_size": case.chunk,
    }
    with torch.autocast("cpu", dtype=dtype):
        loss = linear_sigmoid_focal_loss(x, w, target, linear_bias=b, **kwargs)  # type: ignore[arg-type]
    cast = [t.detach().to(dtype).requires_grad_() for t in (x, w, b)]
    explicit = linear_sigmoid_focal_loss(cast[0], cast[1], target, linear_bias=cast[2], **kwargs)  # type: ignore[arg-type]
    assert loss.dtype == explicit.dtype == torch.float32
    torch.testing.assert_close(loss, explicit, rtol=0, atol=0, equal_nan=True)
    for got, half in zip(grads(loss, x, w, b), grads(explicit, *cast), strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.to(dtype), half, rtol=0, atol=0, equal_nan=True)


def test_autocast_takes_features_and_layer_of_different_dtypes() -> None:
    # A model under autocast hands on bfloat16 features to a float32 output layer, as
    # F.linear takes them; each gradient comes back in its own tensor's dtype.
    x, w, b, index = autocast_layer("cpu")
    mix = torch.eye(24, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = F.linear(x, mix)
        assert features.dtype == torch.bfloat16
        loss = linear_sigmoid_focal_loss(features, w, index, linear_bias=b)
        unfused = sigmoid_focal_loss(F.linear(features, w, b), index)
    torch.testing.assert_close(loss, unfused, rtol=2.0**-5, atol=1e-6)
    got = torch.autograd.grad(loss, (features, mix, w, b), retain_graph=True)
    assert [g.dtype for g in got] == [torch.bfloat16, torch.float32, torch.float32, torch.float32]
    for g, want in zip(got, grads(unfused, features, mix, w, b), strict=True):
        scale = float(want.abs().max())
        torch.testing.assert_close(g.float(), want.float(), rtol=0, atol=2.0**-5 * scale)


def test_autocast_leaves_float64_alone() -> None:
    # As autocast leaves F.linear on float64 operands in float64.
    x, w, b, index = autocast_layer("cpu")
    x64, w64, b64 = (t.detach().double() for t in (x, w, b))
    plain = linear_sigmoid_focal_loss(x64, w64, index, linear_bias=b64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(linear_sigmoid_focal_loss(x64, w64, index, linear_bias=b64), plain)
        with pytest.raises(TypeError, match=r"`linear_weight` must have the dtype of `input`"):
            linear_sigmoid_focal_loss(x64, w, index)


# ------------------------------------------------------------------ autograd behaviour


def test_incoming_gradient_and_retained_graph() -> None:
    x, w, b = (t.requires_grad_() for t in layer(9, 4, 21, seed=12))
    index = torch.randint(-1, 21, (9, 3), generator=torch.Generator().manual_seed(13))
    once = grads(linear_sigmoid_focal_loss(x, w, index, linear_bias=b), x, w, b)
    loss = linear_sigmoid_focal_loss(x, w, index, linear_bias=b, chunk_size=(2, 5))
    (loss * -2.5).backward(retain_graph=True)
    (loss * -2.5).backward()  # recomputed, not the first call's scaled gradients again
    for t, g in zip((x, w, b), once, strict=True):
        assert t.grad is not None
        torch.testing.assert_close(t.grad, -5.0 * g, rtol=1e-5, atol=1e-7)


def test_second_derivative_raises() -> None:
    x, w, b = (t.requires_grad_() for t in layer(5, 3, 8, seed=14))
    index = torch.tensor([[0, 7], [1, -1], [2, 2], [-1, -1], [5, 6]])
    loss = linear_sigmoid_focal_loss(x, w, index, linear_bias=b)
    (gw,) = torch.autograd.grad(loss, w, create_graph=True)  # first derivatives are fine
    torch.testing.assert_close(gw, grads(sigmoid_focal_loss(F.linear(x, w, b), index), w)[0])
    with pytest.raises(RuntimeError, match="no second derivative"):
        gw.sum().backward()


# ------------------------------------------------------------------ arguments


def test_reduction_none_is_rejected_with_the_way_out() -> None:
    x, w, _ = layer(2, 3, 4)
    with pytest.raises(ValueError, match=r"got 'none'.*sigmoid_focal_loss\(F.linear"):
        linear_sigmoid_focal_loss(x, w, torch.tensor([[1], [2]]), reduction="none")  # type: ignore[arg-type]


X, W = torch.zeros(2, 3), torch.zeros(4, 3)
IDX = torch.tensor([[1], [-1]])


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (([[0.0]], W, IDX), {}, TypeError, r"`input` must be a torch.Tensor, got list"),
        ((X.long(), W, IDX), {}, TypeError, r"`input` must be a floating-point tensor"),
        ((X[0], W, IDX), {}, ValueError, r"`input` must have shape \(N, d\), got shape \(3,\)"),
        ((X, W[:, :2], IDX), {}, ValueError, r"`linear_weight` must have shape \(C, 3\)"),
        ((X, W.double(), IDX), {}, TypeError, r"`linear_weight` must have the dtype of `input`"),
        ((X, W, IDX), {"linear_bias": torch.zeros(3)}, ValueError, r"`linear_bias` must have"),
        ((X, W, IDX), {"linear_bias": 1.0}, TypeError, r"`linear_bias` must be a torch.Tensor"),
        ((X, W, IDX), {"reduction": "max"}, ValueError, r"`reduction` must be one of"),
        ((X, W, IDX), {"gamma": -1.0}, ValueError, r"`gamma`"),
        ((X, W, IDX), {"alpha": torch.ones(3)}, ValueError, r"`alpha` must be a per-class"),
        ((X, W, IDX), {"chunk_size": (0, 4)}, ValueError, r"`chunk_size\[0\] \(rows\)` must be"),
        ((X, W, IDX), {"chunk_size": 4}, TypeError, r"`chunk_size` must be a pair"),
        ((X, W, IDX), {"item_offset": 1.0}, TypeError, r"`item_offset` must be an int, got"),
        ((X, W, IDX), {"item_offset": -1}, ValueError, r"`item_offset` must be an int >= 0"),
        ((X, W, IDX), {"process_group": object()}, TypeError, r"`process_group` must be a"),
        ((X, W, IDX.to("meta")), {}, TypeError, r"`target` must be on the device of `input`"),
        ((X, W, torch.tensor([[4], [0]])), {}, ValueError, r"`target` holds item indices"),
        ((X, W, torch.tensor([[-2]])), {"item_offset": 3}, ValueError, r"`target` must have 2"),
        ((X, W, torch.tensor([[-2], [0]])), {"item_offset": 3}, ValueError, r"in \[-2, 0\]"),
        ((X, W, torch.tensor([[7], [0]])), {"item_offset": 3}, ValueError, r"in \[0, 7\)"),
        ((X, W, torch.tensor([[9], [0]])), {"num_items": 9}, ValueError, r"in \[0, 9\)"),
        ((X, W, IDX), {"item_offset": 2, "num_items": 5}, ValueError, r"`num_items` must be"),
        ((X, W, torch.zeros(2, 5)), {}, ValueError, r"dense `target` must have the logits'"),
        ((X, W, torch.full((2, 4), 2.0)), {}, ValueError, r"dense `target` must hold values"),
        ((X, W, IDX), {"weight": -torch.ones(4)}, ValueError, r"`weight` must be >= 0"),
        ((X, W, IDX), {"weight": torch.ones(3)}, ValueError, r"`weight` must be broadcastable"),
        ((X * torch.nan, W, IDX), {}, ValueError, r"loss is NaN.*non-finite values in `input`"),
    ],
)
def test_bad_arguments(
    args: tuple[object, ...], kwargs: dict[str, object], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        linear_sigmoid_focal_loss(*args, **kwargs)  # type: ignore[arg-type]


def test_validate_args_false_skips_value_checks() -> None:
    out = linear_sigmoid_focal_loss(X * torch.nan, W, IDX, validate_args=False)
    assert torch.isnan(out)


# ------------------------------------------------------------------ the module


def test_module_is_linear_plus_focal_loss() -> None:
    torch.manual_seed(0)
    alpha = torch.rand(50)
    head = LinearFocalLoss(6, 50, alpha=alpha, gamma=1.5, reduction="sum_over_positives")
    linear = torch.nn.Linear(6, 50)
    linear.load_state_dict(head.state_dict())  # the same state dict as nn.Linear's
    assert set(head.state_dict()) == {"weight", "bias"}
    criterion = FocalLoss(alpha=alpha, gamma=1.5, reduction="sum_over_positives")
    features = torch.randn(12, 6, requires_grad=True)
    index = torch.randint(-1, 50, (12, 4))
    fused, unfused = head(features, index), criterion(linear(features), index)
    torch.testing.assert_close(fused, unfused)
    fused.backward()
    g_features = features.grad
    features.grad = None
    unfused.backward()
    torch.testing.assert_close(g_features, features.grad)
    assert head.weight.grad is not None
    assert head.bias is not None
    assert head.bias.grad is not None
    torch.testing.assert_close(head.weight.grad, linear.weight.grad)
    torch.testing.assert_close(head.bias.grad, linear.bias.grad)
    head.double()
    assert isinstance(head.alpha, Tensor)
    assert head.alpha.dtype == torch.float64  # a buffer: moves with the module


def test_initialization_draws_the_whole_layer_and_keeps_a_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from focalrec._linear import init
    from focalrec._linear.init import uniform_rows_ as _uniform_rows_

    monkeypatch.setattr(init, "_INIT_BLOCK_ELEMENTS", 30)  # blocks of 4 rows
    torch.manual_seed(0)
    whole = torch.empty(101, 7).uniform_(-0.3, 0.3)
    after = torch.rand(2)
    for lo, hi in [(0, 101), (0, 40), (40, 101), (55, 55), (100, 101)]:
        torch.manual_seed(0)
        part = torch.empty(hi - lo, 7)
        _uniform_rows_(part, lo, 101, 0.3)
        assert torch.equal(part, whole[lo:hi])
        assert torch.equal(torch.rand(2), after)  # the generator ends where the whole draw's does
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 300)
    torch.manual_seed(0)
    head = LinearFocalLoss(16, 300, prior=None)
    assert torch.equal(head.weight, layer.weight)
    assert head.bias is not None
    assert torch.equal(head.bias, layer.bias)


def test_module_prior_and_initialization() -> None:
    torch.manual_seed(0)
    head = LinearFocalLoss(64, 1000, prior=0.02)
    assert head.bias is not None
    torch.testing.assert_close(torch.sigmoid(head.bias), torch.full((1000,), 0.02))
    bound = 1.0 / 64**0.5  # nn.Linear's initialization of the weight
    assert float(head.weight.abs().max()) <= bound
    assert float(head.weight.abs().max()) > 0.9 * bound
    priors = torch.linspace(0.01, 0.5, 1000)
    head = LinearFocalLoss(8, 1000, prior=priors, bias=True)
    assert head.bias is not None
    torch.testing.assert_close(torch.sigmoid(head.bias), priors)
    assert LinearFocalLoss(8, 10, bias=False).bias is None
    assert "num_items=10" in repr(LinearFocalLoss(8, 10))


def test_module_scores() -> None:
    torch.manual_seed(0)
    head = LinearFocalLoss(5, 30)
    features = torch.randn(4, 5)
    full = F.linear(features, head.weight, head.bias)
    torch.testing.assert_close(head.scores(features), full)
    items = torch.tensor([29, 0, 7, 7])
    torch.testing.assert_close(head.scores(features, items), full[:, items])
    per_row = torch.tensor([[1, 2], [3, 4], [29, 29], [0, 5]])
    torch.testing.assert_close(head.scores(features, per_row), full.gather(1, per_row))
    with pytest.raises(ValueError, match=r"`items` holds ids in \[0, 30\]"):
        head.scores(features, torch.tensor([0, 30]))
    with pytest.raises(ValueError, match=r"`items` must have shape \(K,\) or \(4, K\)"):
        head.scores(features, per_row[:2])
    with pytest.raises(TypeError, match="`items` must be an integer tensor"):
        head.scores(features, torch.zeros(3))


def test_module_arguments() -> None:
    with pytest.raises(ValueError, match="`num_items` must be an int >= 0"):
        LinearFocalLoss(4, -1)
    with pytest.raises(ValueError, match="got 'none'"):
        LinearFocalLoss(4, 3, reduction="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`alpha` must be a per-class tensor of shape \\(3,\\)"):
        LinearFocalLoss(4, 3, alpha=torch.ones(4))


# ------------------------------------------------------------------ memory


def _peak_extra(name: str, n: int, d: int, c: int) -> int:
    """Peak resident memory added by forward + backward, measured by the benchmark's child."""
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_linear.py")]
    cmd += ["--memory-child", name, "--n", str(n), "--d", str(d), "--items", str(c)]
    cmd += ["--chunk-size", "256", "1024"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["exact"]:
        pytest.skip("the peak resident memory cannot be reset on this system")
    return int(result["extra_bytes"])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_extra_memory_is_a_chunk_and_the_gradients() -> None:
    n, d, c = 1024, 32, 50_000
    logits = 4 * n * c  # 195 MiB
    gradients = 4 * (n * d + c * d + c)  # 6.4 MiB
    fused = _peak_extra("fused", n, d, c)
    unfused = _peak_extra("unfused_focal", n, d, c)
    assert unfused > 1.5 * logits  # the measurement sees the logits and their gradient
    assert fused < 0.25 * logits
    assert fused < gradients + 4 * 256 * 1024 + 16 * 2**20  # a chunk, the gradients, slack
