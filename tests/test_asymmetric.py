"""The asymmetric loss (ASL) and ``pos_weight``: closed forms, backends, peers, arguments.

References, all independent of the code under test:

- a plain float64 formula (``_reference``): ``p = sigmoid(x)``, ``p_m = max(p - m, 0)``,
  ``L+ = -(1 - p)^gamma_pos log p``, ``L- = -p_m^gamma_neg log(1 - p_m)``, written with
  ``logsigmoid`` so that it is finite at large logits, differentiated by autograd;
- mpmath at 50 digits at a few hostile points;
- timm's ``AsymmetricLossMultiLabel`` (its forward written out in float64);
- :func:`torch.nn.functional.binary_cross_entropy_with_logits` with ``pos_weight``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import mpmath
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import available_backends, backend
from focalrec import AsymmetricLoss, FocalLoss, asymmetric_loss, sigmoid_focal_loss
from focalrec._focal import triton_kernel
from focalrec._focal.terms import margin_terms
from focalrec.losses import REDUCTIONS

GAMMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 4.0, 3.7)
CLIPS = (0.01, 0.05, 0.3)


def _backends() -> list[str]:
    """Every backend that runs here on float32 CPU logits, Triton under its interpreter."""
    names = available_backends()
    if triton_kernel.unavailable() is None and triton_kernel.interpreting():
        names.append("triton")
    return names


def _reference_terms(
    x: torch.Tensor, gamma_pos: float, gamma_neg: float, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``L+`` and ``L-`` in float64 by the paper's formula (stable logs: ``logsigmoid``)."""
    x = x.double()
    p = torch.sigmoid(x)
    pos = torch.sigmoid(-x) ** gamma_pos * -F.logsigmoid(x)
    if clip == 0.0:
        neg = p**gamma_neg * -F.logsigmoid(-x)
    else:
        pm = (p - clip).clamp_min(0.0)
        neg = pm**gamma_neg * -torch.log1p(-pm)
    return pos, neg


def _reference(
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    alpha: float | torch.Tensor | None = None,
    pos_weight: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """The elementwise loss in float64: ``alpha w t L+ + (1 - alpha)(1 - t) L-``."""
    pos, neg = _reference_terms(x, gamma_pos, gamma_neg, clip)
    t = t.double()
    a_pos: float | torch.Tensor = 1.0 if alpha is None else alpha
    a_neg: float | torch.Tensor = 1.0 if alpha is None else 1.0 - alpha
    if isinstance(a_pos, torch.Tensor):
        a_pos, a_neg = a_pos.double(), a_neg.double()  # type: ignore[union-attr]
    w = 1.0 if pos_weight is None else pos_weight
    if isinstance(w, torch.Tensor):
        w = w.double()
    wp, wn = t * a_pos * w, (1.0 - t) * a_neg
    return torch.where(wp != 0, wp * pos, 0.0) + torch.where(wn != 0, wn * neg, 0.0)


def _dense(index: torch.Tensor, c: int) -> torch.Tensor:
    out = torch.zeros(index.shape[0], c + 1)
    out.scatter_(1, torch.where(index >= 0, index, c), 1.0)
    return out[:, :c]


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


# --------------------------------------------------------------------------------------------------
# closed forms of the negative term


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("clip", CLIPS)
def test_margin_terms_match_the_float64_formula_and_mpmath(gamma: float, clip: float) -> None:
    x = torch.linspace(-12.0, 40.0, 4001, dtype=torch.float64)
    x = x[(torch.sigmoid(x) - clip).abs() > 1e-3]  # away from the kink
    _, neg = _reference_terms(x, 0.0, gamma, clip)
    value, _, _ = margin_terms(x, gamma, clip, need_grad=False)
    torch.testing.assert_close(value, neg, rtol=1e-12, atol=1e-300)
    # derivatives at 25 of the points against mpmath (autograd of the formula loses digits
    # where 1 - p is small: sigmoid's backward forms 1 - p)
    some = x[:: max(1, x.numel() // 25)]
    _, grad, _ = margin_terms(some, gamma, clip)
    _, _, hess = margin_terms(some, gamma, clip, need_grad=False, need_hess=True)
    assert grad is not None
    assert hess is not None
    for i, xi in enumerate(some.tolist()):
        _, d1, d2 = _mp_negative(xi, gamma, clip)
        assert math.isclose(float(grad[i]), d1, rel_tol=1e-10, abs_tol=1e-300), (xi, d1)
        assert math.isclose(float(hess[i]), d2, rel_tol=1e-9, abs_tol=1e-300), (xi, d2)


def _mp_negative(x: float, gamma: float, clip: float) -> tuple[float, float, float]:
    """``L-`` and its two derivatives at ``x`` by mpmath (80 digits, numerical derivatives)."""
    with mpmath.workdps(80):

        def f(z: mpmath.mpf) -> mpmath.mpf:
            p = 1 / (1 + mpmath.exp(-z))
            u = p - mpmath.mpf(clip)
            if u <= 0:
                return mpmath.mpf(0)
            return u**gamma * -mpmath.log(1 - u)

        xm = mpmath.mpf(x)
        return float(f(xm)), float(mpmath.diff(f, xm, 1)), float(mpmath.diff(f, xm, 2))


@pytest.mark.parametrize(
    ("x", "gamma", "clip"),
    [
        (_logit(0.05) + 1e-6, 0.5, 0.05),  # just above the kink, 0 < gamma < 1
        (_logit(0.05) + 1e-3, 4.0, 0.05),
        (0.0, 4.0, 0.05),
        (36.0, 0.5, 0.05),  # 1 - p about 2e-16: the log of (1 - p) + m
        (60.0, 2.5, 1e-8),  # a tiny margin far below 1 - p: l is about -log(m)
        (-2.0, 1.5, 0.1),
        (5.0, 1.0, 0.3),
    ],
)
def test_margin_terms_match_mpmath_at_hostile_points(x: float, gamma: float, clip: float) -> None:
    value, grad, _ = margin_terms(torch.tensor([x], dtype=torch.float64), gamma, clip)
    _, _, hess = margin_terms(
        torch.tensor([x], dtype=torch.float64), gamma, clip, need_grad=False, need_hess=True
    )
    assert grad is not None
    assert hess is not None
    want = _mp_negative(x, gamma, clip)
    for got, ref in zip((value, grad, hess), want, strict=True):
        assert math.isclose(float(got), ref, rel_tol=1e-9, abs_tol=1e-300), (float(got), ref)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_the_kink_and_the_zero_side_are_exactly_zero(gamma: float) -> None:
    clip = 0.05
    k = _logit(clip)
    x = torch.tensor([-math.inf, -1e4, -50.0, k - 1e-9, k - 1e-12], dtype=torch.float64)
    x = torch.cat([x, torch.nextafter(torch.tensor([k], dtype=torch.float64), torch.tensor(-9.0))])
    assert bool((torch.sigmoid(x) <= clip).all())
    value, grad, _ = margin_terms(x, gamma, clip)
    _, _, hess = margin_terms(x, gamma, clip, need_grad=False, need_hess=True)
    for out in (value, grad, hess):
        assert out is not None
        assert bool((out == 0).all()), out


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_at_infinite_logits_the_terms_are_their_limits(gamma: float, dtype: torch.dtype) -> None:
    clip = 0.05
    x = torch.tensor([math.inf, 1e4], dtype=dtype)
    value, grad, _ = margin_terms(x, gamma, clip)
    _, _, hess = margin_terms(x, gamma, clip, need_grad=False, need_hess=True)
    limit = (1 - clip) ** gamma * -math.log(clip)
    torch.testing.assert_close(value, torch.full_like(x, limit), rtol=1e-6, atol=0)
    assert grad is not None
    assert hess is not None
    assert bool((grad == 0).all())
    assert bool((hess == 0).all())


# --------------------------------------------------------------------------------------------------
# the public loss against the reference, on every backend


def _loss_and_grad(
    fn: Callable[..., torch.Tensor], x: torch.Tensor, target: torch.Tensor, **kwargs: object
) -> tuple[torch.Tensor, torch.Tensor]:
    xs = x.clone().requires_grad_()
    out = fn(xs, target, **kwargs)
    out.sum().backward()
    assert xs.grad is not None
    return out.detach(), xs.grad


@contextmanager
def _on(name: str) -> Iterator[None]:
    with backend(name):
        yield


@pytest.mark.parametrize("name", _backends())
@pytest.mark.parametrize(
    "hyper",
    [
        {},
        {"gamma_pos": 1.0, "gamma_neg": 0.5, "clip": 0.2, "alpha": 0.3, "pos_weight": 2.5},
        {"gamma_pos": 0.0, "gamma_neg": 0.0, "clip": 0.0, "pos_weight": "vec"},
        {"gamma_pos": 2.5, "gamma_neg": 3.0, "clip": 0.0, "alpha": "vec"},
    ],
)
def test_index_lists_dense_and_bool_agree_with_the_reference(
    name: str, hyper: dict[str, object]
) -> None:
    g = torch.Generator().manual_seed(3)
    n, c = 6, 40
    x = torch.randn(n, c, generator=g) * 5
    x[0, :4] = torch.tensor([math.inf, -math.inf, 1e4, -1e4])
    index = torch.randint(-1, c, (n, 5), generator=g)
    index[1] = -1  # an empty row
    index[2, :2] = 7  # a duplicate
    dense = _dense(index, c)
    kwargs = dict(hyper)
    if kwargs.get("pos_weight") == "vec":
        kwargs["pos_weight"] = torch.rand(c, generator=g) * 3
    if kwargs.get("alpha") == "vec":
        kwargs["alpha"] = torch.rand(c, generator=g)
    x64 = x.double().requires_grad_()
    full = {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05, **kwargs}
    want = _reference(x64, dense, **full)  # type: ignore[arg-type]
    fin = torch.isfinite(want)
    (want_grad,) = torch.autograd.grad(want[fin].sum(), x64)
    results = []
    with _on(name):
        for target in (index, dense, dense.bool()):
            results.append(_loss_and_grad(asymmetric_loss, x, target, reduction="none", **kwargs))
    for value, grad in results:
        torch.testing.assert_close(value, results[0][0], rtol=0, atol=0)
        torch.testing.assert_close(grad, results[0][1], rtol=0, atol=0)
    value, grad = results[0]
    assert torch.equal(torch.isfinite(value), fin)
    assert torch.equal(value[~fin], want.detach()[~fin].float())
    torch.testing.assert_close(value.double()[fin], want.detach()[fin], rtol=2e-6, atol=1e-6)
    # the autograd of the reference is NaN at infinite logits (inf * 0); elsewhere it is exact
    ok = torch.isfinite(want_grad) & fin
    assert bool(torch.isfinite(grad).all())
    torch.testing.assert_close(grad.double()[ok], want_grad[ok], rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", _backends())
@pytest.mark.parametrize("ones", [0, 1, 32, 33, 150, 256])
@pytest.mark.parametrize(
    "hyper",
    [
        {},
        {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05},
        {"gamma_pos": 0.5, "gamma_neg": 1.7, "clip": 0.3, "alpha": 0.3, "pos_weight": 2.5},
        {"gamma_pos": 2.0, "gamma_neg": 3.0, "clip": 0.0},
    ],
)
def test_every_share_of_positives_per_tile_agrees_with_the_reference(
    name: str, ones: int, hyper: dict[str, object]
) -> None:
    """Rows of 300 logits (a tile of 256 and one of 44 in the C kernel) with ``ones`` targets 1
    in the first tile: the kernel computes the negative term everywhere and the positive one at
    the ones where at most an eighth of a tile is 1, and both terms everywhere otherwise."""
    g = torch.Generator().manual_seed(ones)
    n, c = 4, 300
    x = (torch.randn(n, c, generator=g) * 6).double()  # float32 values
    dense = torch.zeros(n, c)
    for row in range(n):
        dense[row, torch.randperm(256, generator=g)[:ones]] = 1.0
    x64 = x.clone().requires_grad_()
    want = _reference(x64, dense, **{"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05, **hyper})  # type: ignore[arg-type]
    (want_grad,) = torch.autograd.grad(want.sum(), x64)
    with _on(name):
        value, grad = _loss_and_grad(asymmetric_loss, x.float(), dense, reduction="none", **hyper)
        bool_value, bool_grad = _loss_and_grad(
            asymmetric_loss, x.float(), dense.bool(), reduction="none", **hyper
        )
    assert torch.equal(value, bool_value)
    assert torch.equal(grad, bool_grad)
    torch.testing.assert_close(value.double(), want.detach(), rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), want_grad, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", _backends())
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 3.7])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_the_focal_loss_is_asl_with_equal_gammas_and_no_margin_bit_for_bit(
    name: str, gamma: float, reduction: str
) -> None:
    g = torch.Generator().manual_seed(5)
    n, c = 5, 37
    x = torch.randn(n, c, generator=g) * 6
    x[0, :2] = torch.tensor([math.inf, -math.inf])
    index = torch.randint(-1, c, (n, 4), generator=g)
    dense = _dense(index, c)
    weight = torch.rand(n, 1, generator=g)
    for pos_weight in (None, 2.0, torch.rand(c, generator=g) * 2):
        for target in (index, dense, dense.bool()):
            common = {"alpha": 0.25, "pos_weight": pos_weight, "reduction": reduction}
            with _on(name):
                focal = _loss_and_grad(
                    sigmoid_focal_loss, x, target, gamma=gamma, weight=weight, **common
                )
                asl = _loss_and_grad(
                    asymmetric_loss,
                    x,
                    target,
                    gamma_pos=gamma,
                    gamma_neg=gamma,
                    clip=0.0,
                    weight=weight,
                    **common,
                )
            assert torch.equal(focal[0], asl[0]), (focal[0], asl[0])
            assert torch.equal(focal[1], asl[1])


@pytest.mark.parametrize("name", _backends())
def test_soft_targets_mix_the_two_terms_linearly(name: str) -> None:
    g = torch.Generator().manual_seed(9)
    x = torch.randn(4, 33, generator=g) * 4
    t = torch.rand(4, 33, generator=g)
    t[0, :3] = torch.tensor([0.0, 1.0, 0.5])
    pw = torch.rand(33, generator=g) * 2
    hyper = {"gamma_pos": 1.0, "gamma_neg": 4.0, "clip": 0.05, "alpha": 0.4, "pos_weight": pw}
    with _on(name):
        value, grad = _loss_and_grad(asymmetric_loss, x, t, reduction="none", **hyper)
    x64 = x.double().requires_grad_()
    want = _reference(x64, t, **hyper)  # type: ignore[arg-type]
    (want_grad,) = torch.autograd.grad(want.sum(), x64)
    torch.testing.assert_close(value.double(), want.detach(), rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(grad.double(), want_grad, rtol=2e-5, atol=1e-6)


def _hostile_cases() -> st.SearchStrategy[tuple[torch.Tensor, torch.Tensor, dict[str, object]]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, dict[str, object]]:
        n, c = draw(st.integers(0, 5)), draw(st.integers(1, 70))
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        x = torch.randn(n, c, generator=g) * draw(st.sampled_from([0.5, 4.0, 40.0, 1e4]))
        if n > 0 and draw(st.booleans()):
            specials = torch.tensor([math.inf, -math.inf, 1e4, -1e4, 0.0])
            x.view(-1)[: min(5, x.numel())] = specials[: min(5, x.numel())]
        kind = draw(st.sampled_from(["index", "dense", "bool", "soft"]))
        if kind == "index":
            target = torch.randint(-1, c, (n, draw(st.integers(0, 6))), generator=g)
        elif kind == "soft":
            target = torch.rand(n, c, generator=g)
        else:
            target = torch.rand(n, c, generator=g) < 0.2
            target = target if kind == "bool" else target.float()
        hyper: dict[str, object] = {
            "gamma_pos": draw(st.sampled_from([0.0, 0.3, 1.0, 2.0])),
            "gamma_neg": draw(st.sampled_from([0.0, 0.7, 1.0, 4.0, 5.5])),
            "clip": draw(st.sampled_from([0.0, 0.05, 0.2])),
            "alpha": draw(st.sampled_from([None, 0.0, 0.25, 1.0])),
            "pos_weight": draw(st.sampled_from([None, 0.0, 3.0, "vec"])),
        }
        if hyper["pos_weight"] == "vec":
            hyper["pos_weight"] = torch.rand(c, generator=g) * 4
        if draw(st.booleans()):
            x = x.half() if draw(st.booleans()) else x.bfloat16()
        return x, target, hyper

    return build()


@settings(max_examples=40)
@given(case=_hostile_cases(), name=st.sampled_from(_backends()))
def test_hostile_inputs_agree_with_the_float64_reference(
    case: tuple[torch.Tensor, torch.Tensor, dict[str, object]], name: str
) -> None:
    x, target, hyper = case
    if x.dtype != torch.float32 and name == "native":
        name = "torch"  # the compiled kernel takes float32 only
    with _on(name):
        value, grad = _loss_and_grad(asymmetric_loss, x, target, reduction="none", **hyper)
    assert value.dtype == torch.float32
    assert grad.dtype == x.dtype
    dense = (
        _dense(target, x.shape[1])
        if not target.is_floating_point() and target.dtype != torch.bool
        else target
    )
    x64 = x.double().requires_grad_()
    want = _reference(x64, dense, **hyper)  # type: ignore[arg-type]
    fin = torch.isfinite(want)
    assert torch.equal(torch.isfinite(value), fin)
    torch.testing.assert_close(value.double()[fin], want.detach()[fin], rtol=2e-6, atol=1e-6)
    assert bool(torch.isfinite(grad).all())
    if fin.any():
        (want_grad,) = torch.autograd.grad(want[fin].sum(), x64)
        ok = torch.isfinite(want_grad) & fin  # where the loss is infinite, its gradient is a limit
        tol = 1e-2 if x.dtype != torch.float32 else 2e-5  # the gradient is rounded to x's dtype
        torch.testing.assert_close(grad.double()[ok], want_grad[ok], rtol=tol, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# autograd to second order


@pytest.mark.parametrize("soft", [False, True])
def test_gradcheck_and_gradgradcheck_away_from_the_kink(soft: bool) -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 7, generator=g, dtype=torch.float64) * 3
    clip = 0.05
    x = torch.where((torch.sigmoid(x) - clip).abs() < 1e-2, x + 0.5, x).requires_grad_()
    t = torch.rand(3, 7, generator=g, dtype=torch.float64)
    if not soft:
        t = (t < 0.3).double()
    pw = torch.rand(7, generator=g, dtype=torch.float64) * 2

    def f(z: torch.Tensor) -> torch.Tensor:
        return asymmetric_loss(
            z, t, gamma_pos=1.5, gamma_neg=2.5, clip=clip, pos_weight=pw, reduction="sum"
        )

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    h = torch.func.hessian(f)(x.detach())
    x64 = x.detach().clone().requires_grad_()
    want = _reference(x64, t, gamma_pos=1.5, gamma_neg=2.5, clip=clip, pos_weight=pw).sum()
    (d1,) = torch.autograd.grad(want, x64, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x64)
    torch.testing.assert_close(h.reshape(21, 21).diagonal(), d2.reshape(-1), rtol=1e-12, atol=0)


def test_pos_weight_gradgradcheck_on_the_focal_loss() -> None:
    g = torch.Generator().manual_seed(12)
    x = (torch.randn(3, 5, generator=g, dtype=torch.float64) * 3).requires_grad_()
    t = torch.rand(3, 5, generator=g, dtype=torch.float64)
    pw = torch.rand(5, generator=g, dtype=torch.float64) * 2

    def f(z: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(z, t, gamma=1.5, pos_weight=pw, reduction="sum")

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


# --------------------------------------------------------------------------------------------------
# pos_weight: torch's meaning


@pytest.mark.parametrize("name", available_backends())
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("soft", [False, True])
def test_pos_weight_with_gamma_0_is_torch_bce_with_logits(
    name: str, reduction: str, soft: bool
) -> None:
    g = torch.Generator().manual_seed(13)
    x = torch.randn(6, 9, generator=g, dtype=torch.float64) * 4
    t = torch.rand(6, 9, generator=g, dtype=torch.float64)
    if not soft:
        t = (t < 0.3).double()
    for pw in (torch.rand(9, generator=g, dtype=torch.float64) * 3, torch.tensor(2.5)):
        want = F.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction=reduction)
        got = sigmoid_focal_loss(x, t, gamma=0.0, alpha=None, pos_weight=pw, reduction=reduction)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
        got = asymmetric_loss(
            x, t, gamma_pos=0.0, gamma_neg=0.0, clip=0.0, pos_weight=pw, reduction=reduction
        )
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
        # float32 on this backend: values and gradients
        x32 = x.float().requires_grad_()
        xr = x.float().requires_grad_()
        with _on(name):
            out = sigmoid_focal_loss(
                x32, t.float(), gamma=0.0, alpha=None, pos_weight=pw.float(), reduction="sum"
            )
        out.backward()
        ref = F.binary_cross_entropy_with_logits(
            xr, t.float(), pos_weight=pw.float(), reduction="sum"
        )
        ref.backward()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        assert x32.grad is not None
        assert xr.grad is not None
        torch.testing.assert_close(x32.grad, xr.grad, rtol=1e-5, atol=1e-6)


def test_pos_weight_does_not_enter_the_sum_over_positives_divisor() -> None:
    x = torch.randn(4, 6)
    index = torch.tensor([[0, 1], [2, -1], [-1, -1], [5, 5]])
    per_item = asymmetric_loss(x, index, pos_weight=3.0, reduction="none")
    got = asymmetric_loss(x, index, pos_weight=3.0, reduction="sum_over_positives")
    torch.testing.assert_close(got, per_item.sum() / 4)  # 4 positives, not 3 * 4
    got = sigmoid_focal_loss(x, index, pos_weight=3.0, reduction="sum_over_positives")
    torch.testing.assert_close(
        got, sigmoid_focal_loss(x, index, pos_weight=3.0, reduction="sum") / 4
    )


# --------------------------------------------------------------------------------------------------
# the peer: timm's AsymmetricLossMultiLabel, written out in float64


def _timm_asymmetric_loss_multilabel(
    x: torch.Tensor,
    y: torch.Tensor,
    gamma_neg: float = 4.0,
    gamma_pos: float = 1.0,
    clip: float | None = 0.05,
    eps: float = 1e-8,
    disable_torch_grad_focal_loss: bool = False,
) -> torch.Tensor:
    """timm.loss.asymmetric_loss.AsymmetricLossMultiLabel.forward, its code's math as written."""
    xs_pos = torch.sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    if gamma_neg > 0 or gamma_pos > 0:
        if disable_torch_grad_focal_loss:
            torch.set_grad_enabled(False)
        pt0 = xs_pos * y
        pt1 = xs_neg * (1 - y)
        pt = pt0 + pt1
        one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
        one_sided_w = torch.pow(1 - pt, one_sided_gamma)
        if disable_torch_grad_focal_loss:
            torch.set_grad_enabled(True)
        loss *= one_sided_w
    return -loss.sum()


@pytest.mark.parametrize(("gamma_pos", "gamma_neg", "clip"), [(1.0, 4.0, 0.05), (0.0, 2.0, 0.2)])
def test_timm_asymmetric_loss_multilabel_agrees_where_its_clamps_are_inactive(
    gamma_pos: float, gamma_neg: float, clip: float
) -> None:
    g = torch.Generator().manual_seed(17)
    x = (torch.randn(8, 30, generator=g, dtype=torch.float64) * 3).requires_grad_()
    y = (torch.rand(8, 30, generator=g, dtype=torch.float64) < 0.2).double()
    want = _timm_asymmetric_loss_multilabel(x, y, gamma_neg, gamma_pos, clip)
    (want_grad,) = torch.autograd.grad(want, x)
    x2 = x.detach().clone().requires_grad_()
    got = asymmetric_loss(
        x2, y, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, reduction="sum"
    )
    got.backward()
    # |x| <= 15 here: timm's eps clamp (p < 1e-8) never acts, nor its clamp(max=1) off the zero side
    torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
    assert x2.grad is not None
    torch.testing.assert_close(x2.grad, want_grad, rtol=1e-10, atol=1e-12)


def test_where_timm_differs_its_eps_clamp_and_detached_weight() -> None:
    # a positive at x = -30: p = 9.4e-14 < eps, timm's log(clamp(p, min=1e-8)) caps the loss
    x = torch.tensor([[-30.0]], dtype=torch.float64)
    y = torch.ones(1, 1, dtype=torch.float64)
    timm = _timm_asymmetric_loss_multilabel(x, y, gamma_neg=4.0, gamma_pos=0.0)
    ours = asymmetric_loss(x, y, reduction="sum")
    assert math.isclose(float(timm), -math.log(1e-8), rel_tol=1e-12)
    assert math.isclose(float(ours), float(F.softplus(torch.tensor(30.0, dtype=torch.float64))))
    # ... and its gradient is 0 there, ours about -1
    xt = x.clone().requires_grad_()
    (g_timm,) = torch.autograd.grad(_timm_asymmetric_loss_multilabel(xt, y, 4.0, 0.0), xt)
    xg = x.clone().requires_grad_()
    asymmetric_loss(xg, y, reduction="sum").backward()
    assert float(g_timm) == 0.0
    assert xg.grad is not None
    assert math.isclose(float(xg.grad), -1.0, rel_tol=1e-12)
    # timm's disable_torch_grad_focal_loss detaches the focusing weight: another gradient
    xr = torch.tensor([[1.5]], dtype=torch.float64, requires_grad=True)
    y0 = torch.zeros(1, 1, dtype=torch.float64)
    detached = _timm_asymmetric_loss_multilabel(xr, y0, disable_torch_grad_focal_loss=True)
    (g_detached,) = torch.autograd.grad(detached, xr)
    xo = xr.detach().clone().requires_grad_()
    asymmetric_loss(xo, y0, gamma_neg=4.0, clip=0.05, reduction="sum").backward()
    assert xo.grad is not None
    p = torch.sigmoid(torch.tensor(1.5, dtype=torch.float64))
    pm = p - 0.05
    assert math.isclose(float(g_detached), float(pm**4 * p * (1 - p) / (1 - pm)), rel_tol=1e-12)
    assert not math.isclose(float(xo.grad), float(g_detached), rel_tol=1e-3)


# --------------------------------------------------------------------------------------------------
# modules and arguments


def test_asymmetric_loss_module_keeps_tensors_as_buffers() -> None:
    alpha, pw = torch.rand(5), torch.rand(5) * 2
    module = AsymmetricLoss(gamma_pos=1.0, gamma_neg=3.0, clip=0.1, alpha=alpha, pos_weight=pw)
    assert {name for name, _ in module.named_buffers()} == {"alpha", "pos_weight"}
    x, t = torch.randn(3, 5), torch.tensor([[0, 1], [4, -1], [-1, -1]])
    want = asymmetric_loss(x, t, gamma_pos=1.0, gamma_neg=3.0, clip=0.1, alpha=alpha, pos_weight=pw)
    assert torch.equal(module(x, t), want)
    assert "gamma_neg=3.0" in repr(module)
    module = module.double()
    assert module.pos_weight.dtype == torch.float64  # type: ignore[union-attr]
    focal = FocalLoss(pos_weight=pw)
    assert "pos_weight" in dict(focal.named_buffers())
    assert torch.equal(focal(x, t), sigmoid_focal_loss(x, t, pos_weight=pw))
    assert FocalLoss(pos_weight=2.0).pos_weight == 2.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"gamma_pos": -1.0}, ValueError, "`gamma_pos` must be a finite number"),
        ({"gamma_neg": "4"}, TypeError, "`gamma_neg` must be a real number"),
        ({"clip": 1.0}, ValueError, r"`clip` must be in \[0, 1\)"),
        ({"clip": -0.1}, ValueError, "`clip`"),
        ({"clip": True}, TypeError, "`clip` must be a real number"),
        ({"pos_weight": -1.0}, ValueError, "`pos_weight` must be a finite number >= 0"),
        ({"pos_weight": math.inf}, ValueError, "`pos_weight`"),
        ({"pos_weight": "2"}, TypeError, "`pos_weight` must be a float"),
        ({"pos_weight": torch.ones(4)}, ValueError, r"shape \(5,\)"),
        ({"pos_weight": torch.ones(5, dtype=torch.int64)}, TypeError, "floating-point"),
        ({"pos_weight": torch.tensor([1.0, -1.0, 1, 1, 1])}, ValueError, "finite values >= 0"),
        ({"alpha": 2.0}, ValueError, "`alpha` must be in"),
        ({"reduction": "avg"}, ValueError, "`reduction` must be one of"),
    ],
)
def test_arguments_are_checked(kwargs: dict[str, object], error: type, match: str) -> None:
    x, t = torch.randn(2, 5), torch.tensor([[0, 1], [4, -1]])
    with pytest.raises(error, match=match):
        asymmetric_loss(x, t, **kwargs)  # type: ignore[arg-type]
    if "pos_weight" in kwargs:
        with pytest.raises(error, match=match):
            sigmoid_focal_loss(x, t, pos_weight=kwargs["pos_weight"])  # type: ignore[arg-type]


def test_pos_weight_on_another_device_is_a_type_error() -> None:
    x, t = torch.randn(2, 5), torch.tensor([[0, 1], [4, -1]])
    with pytest.raises(TypeError, match="`pos_weight` must be on the device of `input`"):
        sigmoid_focal_loss(x, t, pos_weight=torch.ones(5, device="meta"))


@pytest.mark.parametrize("kind", ["float", "0-d", "strided"])
def test_every_backend_takes_every_form_of_pos_weight(kind: str) -> None:
    x, t = torch.randn(3, 8) * 3, torch.tensor([[0, 1], [4, -1], [-1, -1]])
    pw: float | torch.Tensor = 2.0
    if kind == "0-d":
        pw = torch.tensor(2.0)
    elif kind == "strided":
        pw = torch.arange(16.0)[::2] / 4
    want = _reference(
        x.double(), _dense(t, 8), gamma_pos=0.0, gamma_neg=4.0, clip=0.05, pos_weight=pw
    )
    for name in _backends():
        with _on(name):
            got = asymmetric_loss(x, t, pos_weight=pw, reduction="none")
        torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=1e-7)
