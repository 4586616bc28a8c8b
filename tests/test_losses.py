"""sigmoid_focal_loss and FocalLoss against independent references written from the definition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import available_backends, backend
from focalrec import FocalLoss, index_list_to_dense, sigmoid_focal_loss
from focalrec.losses import GAMMA_MAX, REDUCTIONS

GAMMAS = [0.0, 0.3, 0.5, 1.0, 2.0, 4.5]


def reference(
    x: torch.Tensor, t: torch.Tensor, alpha: float | torch.Tensor | None, gamma: float
) -> torch.Tensor:
    """The paper's formula, elementwise, in float64 (torch autograd differentiates it)."""
    x, t = x.double(), t.double()
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        a = alpha.double() if isinstance(alpha, torch.Tensor) else alpha
        loss = loss * (a * t + (1 - a) * (1 - t))
    return loss


def reduce_reference(
    loss: torch.Tensor, t: torch.Tensor, reduction: str, w: torch.Tensor | None = None
) -> torch.Tensor:
    w = torch.ones_like(loss) if w is None else w.double().expand_as(loss)
    if reduction == "none":
        return loss * w
    if reduction == "sum":
        return (loss * w).sum()
    if reduction == "mean":
        return (loss * w).sum() / w.sum() if w.sum() > 0 else loss.sum() * 0
    return (loss * w).sum() / max(float((t.double() * w).sum()), 1.0)


def mp_focal_and_grad(x: float, t: float, alpha: float | None, gamma: float) -> tuple[float, float]:
    """Value and derivative of one focal term with 60-digit arithmetic (textbook chain rule)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    xm, tm = mpmath.mpf(x), mpmath.mpf(t)
    p, one_minus_p = 1 / (1 + mpmath.exp(-xm)), 1 / (1 + mpmath.exp(xm))  # no cancellation
    q = p * (1 - tm) + one_minus_p * tm
    bce = -(tm * mpmath.log(p) + (1 - tm) * mpmath.log(one_minus_p))
    a_t = 1 if alpha is None else alpha * tm + (1 - alpha) * (1 - tm)
    dq = p * one_minus_p * (1 - 2 * tm)
    dbce = p - tm
    dq_gamma = gamma * q ** (gamma - 1) * dq if gamma != 0 else 0
    return float(a_t * q**gamma * bce), float(a_t * (dq_gamma * bce + q**gamma * dbce))


def random_index_list(n: int, m: int, c: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(-1, c, (n, m), generator=generator)


# ------------------------------------------------------------------ values and gradients


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", [None, 0.25, "per-class"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sparse_and_dense_match_reference(gamma: float, alpha: object, reduction: str) -> None:
    g = torch.Generator().manual_seed(0)
    n, c = 9, 13
    x = torch.randn(n, c, generator=g) * 4
    index = random_index_list(n, 5, c, g)
    dense = index_list_to_dense(index, c, dtype=torch.float32)
    a = torch.rand(c, generator=g) if alpha == "per-class" else alpha
    assert a is None or isinstance(a, (float, torch.Tensor))
    expected_x = x.double().requires_grad_()
    expected = reduce_reference(reference(expected_x, dense, a, gamma), dense, reduction)
    upstream = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    expected.backward(upstream)
    for targets in (index, dense, dense.bool()):
        xs = x.clone().requires_grad_()
        out = sigmoid_focal_loss(xs, targets, alpha=a, gamma=gamma, reduction=reduction)  # type: ignore[arg-type]
        out.backward(upstream.float())
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
        assert xs.grad is not None
        torch.testing.assert_close(xs.grad.double(), expected_x.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_soft_targets_match_reference(gamma: float) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 7, generator=g) * 5
    t = torch.rand(6, 7, generator=g)
    t[0, :3] = torch.tensor([0.0, 1.0, 0.5])
    xs, xr = x.clone().requires_grad_(), x.double().requires_grad_()
    out = sigmoid_focal_loss(xs, t, gamma=gamma, reduction="none")
    expected = reference(xr, t, 0.25, gamma)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
    assert xs.grad is not None
    torch.testing.assert_close(xs.grad.double(), xr.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("x", [-1e4, -80.0, -17.0, 17.0, 80.0, 1e4])
@pytest.mark.parametrize("t", [0.0, 1.0, 0.3])
def test_saturated_logits_match_high_precision(gamma: float, x: float, t: float) -> None:
    value, grad = mp_focal_and_grad(x, t, 0.25, gamma)
    xs = torch.tensor([x], dtype=torch.float64, requires_grad=True)
    tt = torch.tensor([t], dtype=torch.float64)
    out = sigmoid_focal_loss(xs, tt, gamma=gamma, reduction="sum")
    out.backward()
    assert xs.grad is not None
    assert math.isfinite(out.item())
    assert math.isfinite(xs.grad.item())
    assert out.item() == pytest.approx(value, rel=1e-9, abs=1e-300)
    assert xs.grad.item() == pytest.approx(grad, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("gamma", [0.3, 0.5, 2.0])
def test_gradcheck_float64(gamma: float) -> None:
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(4, 6, generator=g, dtype=torch.float64) * 3).requires_grad_()
    index = torch.tensor([[0, 3, -1], [5, 5, 1], [-1, -1, -1], [2, 4, 0]])
    soft = torch.rand(4, 6, generator=g, dtype=torch.float64)
    w = torch.rand(4, 6, generator=g, dtype=torch.float64)
    for targets in (index, soft):
        for reduction in REDUCTIONS:
            assert torch.autograd.gradcheck(
                lambda z, tt=targets, r=reduction: sigmoid_focal_loss(
                    z, tt, gamma=gamma, reduction=r, weight=w
                ),
                (x,),
            )


def test_gamma_zero_without_alpha_is_bce() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 8, generator=g) * 10
    t = torch.rand(5, 8, generator=g)
    xs, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    for reduction in ("none", "sum", "mean"):
        ours = sigmoid_focal_loss(xs, t, alpha=None, gamma=0.0, reduction=reduction)  # type: ignore[arg-type]
        bce = F.binary_cross_entropy_with_logits(xb, t, reduction=reduction)
        torch.testing.assert_close(ours, bce)
        ours.sum().backward()
        bce.sum().backward()
    assert xs.grad is not None
    assert xb.grad is not None
    torch.testing.assert_close(xs.grad, xb.grad)


# ------------------------------------------------------------------ reductions and weights


def test_weight_mask_mean_counts_kept_entries_only() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 5, generator=g)
    index = torch.tensor([[0, 1], [2, -1], [4, 4], [-1, -1]])
    keep = torch.rand(4, 5, generator=g) > 0.4
    elementwise = sigmoid_focal_loss(x, index, reduction="none")
    masked = sigmoid_focal_loss(x, index, reduction="mean", weight=keep)
    torch.testing.assert_close(masked, elementwise[keep].mean())
    dense = index_list_to_dense(index, 5, dtype=torch.float32)
    per_pos = sigmoid_focal_loss(x, index, reduction="sum_over_positives", weight=keep)
    torch.testing.assert_close(per_pos, elementwise[keep].sum() / dense[keep].sum().clamp_min(1))


def test_per_class_weight_broadcasts() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, generator=g)
    t = torch.tensor([[1, -1], [0, 3], [2, 2]])
    w = torch.tensor([0.5, 2.0, 0.0, 1.0])
    full = w.expand(3, 4).clone()
    for reduction in REDUCTIONS:
        a = sigmoid_focal_loss(x, t, reduction=reduction, weight=w)  # type: ignore[arg-type]
        b = sigmoid_focal_loss(x, t, reduction=reduction, weight=full)  # type: ignore[arg-type]
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("alpha", [0.25, 0.3])
def test_float64_reductions_keep_float64_precision(alpha: float) -> None:
    # Regression: the alpha factor of hard targets was float32, which rounded the mean's scale.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 53, generator=g, dtype=torch.float64) * 3
    t = random_index_list(37, 4, 53, g)
    total = sigmoid_focal_loss(x, t, alpha=alpha, reduction="sum")
    mean = sigmoid_focal_loss(x, t, alpha=alpha, reduction="mean")
    expected = reference(x, index_list_to_dense(t, 53, dtype=torch.float64), alpha, 2.0).sum()
    torch.testing.assert_close(total, expected, rtol=1e-13, atol=0)
    torch.testing.assert_close(mean, expected / (37 * 53), rtol=1e-13, atol=0)


def test_empty_and_fully_masked_inputs_give_zero() -> None:
    x = torch.zeros(0, 5, requires_grad=True)
    for targets in (torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 5)):
        for reduction in ("sum", "mean", "sum_over_positives"):
            out = sigmoid_focal_loss(x, targets, reduction=reduction)  # type: ignore[arg-type]
            assert out.item() == 0.0
            out.backward()
        assert sigmoid_focal_loss(x, targets, reduction="none").shape == (0, 5)
    y = torch.randn(2, 3)
    masked = sigmoid_focal_loss(y, torch.tensor([[0], [1]]), weight=torch.zeros(2, 3))
    assert masked.item() == 0.0


def test_duplicates_and_padding_count_once() -> None:
    x = torch.randn(2, 6)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = sigmoid_focal_loss(xa, torch.tensor([[3, 3, -1, 1], [0, -1, 0, -1]]), reduction="none")
    b = sigmoid_focal_loss(xb, torch.tensor([[3, 1], [0, -1]]), reduction="none")
    torch.testing.assert_close(a, b)
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)


def test_module_matches_function_and_moves_alpha_buffer() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 4, generator=g)
    t = torch.tensor([[1, 2], [0, -1], [3, 3]])
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.9])
    module = FocalLoss(alpha=alpha, gamma=1.5, reduction="sum_over_positives")
    assert "alpha" in dict(module.named_buffers())
    expected = sigmoid_focal_loss(x, t, alpha=alpha, gamma=1.5, reduction="sum_over_positives")
    torch.testing.assert_close(module(x, t), expected)
    assert module.to(torch.float64).alpha.dtype == torch.float64  # type: ignore[union-attr]
    assert "per-class" in repr(module)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"gamma": -0.5}, ValueError, r"`gamma` must be a finite number in \[0, 3.40.*got -0.5"),
        ({"gamma": float("nan")}, ValueError, r"`gamma` must be a finite number .*got nan"),
        ({"gamma": float("inf")}, ValueError, r"`gamma` must be a finite number .*got inf"),
        ({"gamma": "2"}, TypeError, r"`gamma` must be a real number >= 0, got str"),
        ({"alpha": 1.5}, ValueError, r"`alpha` must be in \[0, 1\], got 1.5"),
        ({"alpha": "a"}, TypeError, r"`alpha` must be a float in \[0, 1\].*got str"),
        ({"alpha": torch.ones(3)}, ValueError, r"`alpha` must be a per-class tensor .*\(4,\)"),
        ({"alpha": torch.ones(4, dtype=torch.long)}, TypeError, r"`alpha` must be a floating"),
        ({"alpha": torch.full((4,), 2.0)}, ValueError, r"`alpha` must hold values in \[0, 1\]"),
        ({"reduction": "avg"}, ValueError, r"`reduction` must be one of .*got 'avg'"),
        ({"weight": torch.ones(3)}, ValueError, r"`weight` must be broadcastable .*4\).*\(3,\)"),
        ({"weight": -torch.ones(4)}, ValueError, r"`weight` must be >= 0"),
        ({"weight": torch.ones(4, dtype=torch.long)}, TypeError, r"`weight` must be a floating"),
        ({"weight": [1.0]}, TypeError, r"`weight` must be a torch.Tensor or None, got list"),
    ],
)
def test_bad_hyperparameters(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        sigmoid_focal_loss(torch.zeros(2, 4), torch.tensor([[0], [1]]), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("logits", "targets", "error", "match"),
    [
        (torch.zeros(2, 4), torch.zeros(2, 3), ValueError, r"dense `target` must have the logits'"),
        (torch.zeros(2, 4), torch.full((2, 4), 1.5), ValueError, r"values in \[0, 1\], got 1.5"),
        (torch.zeros(2, 4), torch.tensor([[0], [4]]), ValueError, r"indices in \[0, 4\]"),
        (torch.zeros(2, 4), torch.tensor([[0], [-2]]), ValueError, r"indices in \[-2, 0\]"),
        (torch.zeros(2, 4), torch.tensor([[0]]), ValueError, r"must have 2 rows"),
        (torch.zeros(2, 2, 4), torch.tensor([[0], [1]]), ValueError, r"needs `input` of shape"),
        (torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4), TypeError, r"`input` must be"),
        ([[0.0]], torch.zeros(1, 1), TypeError, r"`input` must be a torch.Tensor, got list"),
        (torch.zeros(1, 1), [[1.0]], TypeError, r"`target` must be a torch.Tensor, got list"),
    ],
)
def test_bad_inputs(logits: object, targets: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        sigmoid_focal_loss(logits, targets)  # type: ignore[arg-type]


def test_validate_args_false_skips_value_checks() -> None:
    out = sigmoid_focal_loss(torch.zeros(1, 2), torch.full((1, 2), 0.5), validate_args=False)
    assert torch.isfinite(out)


# ------------------------------------------------------------------ properties


@st.composite
def problems(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object, float]:
    n = draw(st.integers(0, 5))
    c = draw(st.integers(1, 7))
    m = draw(st.integers(0, 4))
    big = st.one_of(
        st.floats(-1e4, 1e4, allow_nan=False, width=32),
        st.sampled_from([math.inf, -math.inf, 319.0, -319.0, 1e4, -1e4]),
    )
    x = torch.tensor(draw(st.lists(big, min_size=n * c, max_size=n * c))).reshape(n, c)
    index = torch.tensor(
        draw(st.lists(st.integers(-1, c - 1), min_size=n * m, max_size=n * m)), dtype=torch.long
    ).reshape(n, m)
    soft = torch.tensor(
        draw(st.lists(st.floats(0, 1, width=32), min_size=n * c, max_size=n * c))
    ).reshape(n, c)
    alpha = draw(
        st.one_of(
            st.none(),
            st.floats(0, 1),
            st.just(torch.linspace(0, 1, c)),
        )
    )
    gamma = draw(st.one_of(st.floats(0, 5), st.sampled_from([0.0, 0.25, 0.5, 1.0])))
    return x, index, soft, alpha, gamma


@settings(max_examples=60)
@given(problems())
def test_hostile_inputs_are_finite_and_sparse_equals_dense(
    problem: tuple[torch.Tensor, torch.Tensor, torch.Tensor, object, float],
) -> None:
    x, index, soft, alpha, gamma = problem
    dense = index_list_to_dense(index, x.shape[1], dtype=torch.float32)
    # The loss is infinite exactly where an infinite logit disagrees with its target.
    disagree = ((x == math.inf) & (dense == 0)) | ((x == -math.inf) & (dense == 1))
    for name in available_backends():
        with backend(name):
            xs, xd, xb, xsoft = (x.clone().requires_grad_() for _ in range(4))
            kw = {"alpha": alpha, "gamma": gamma}
            a = sigmoid_focal_loss(xs, index, reduction="none", **kw)  # type: ignore[arg-type]
            b = sigmoid_focal_loss(xd, dense, reduction="none", **kw)  # type: ignore[arg-type]
            bb = sigmoid_focal_loss(xb, dense.bool(), reduction="sum", **kw)  # type: ignore[arg-type]
            c = sigmoid_focal_loss(xsoft, soft, reduction="sum", **kw)  # type: ignore[arg-type]
            a.sum().backward()
            b.sum().backward()
            bb.backward()
            c.backward()
            for grad in (xs.grad, xd.grad, xb.grad, xsoft.grad):
                assert grad is not None
                assert torch.isfinite(grad).all()
            assert (a >= 0).all()
            # (A zero alpha_t makes a term 0, an infinite one included.)
            assert torch.equal(torch.isinf(a), disagree & (a != 0))
            assert torch.isfinite(a[~disagree]).all()
            # Index lists, dense and bool targets give the same terms, bit for bit, and the
            # same sum: no term is formed by subtracting a large one.
            assert torch.equal(a, b)
            assert torch.equal(xs.grad, xd.grad)
            assert torch.equal(xs.grad, xb.grad)
            assert torch.equal(bb, sigmoid_focal_loss(x, index, reduction="sum", **kw))  # type: ignore[arg-type]
            # focal <= BCE elementwise (alpha_t <= 1 and (1 - p_t)^gamma <= 1)
            finite = torch.isfinite(x)
            bce = F.binary_cross_entropy_with_logits(x[finite], dense[finite], reduction="none")
            assert (a[finite] <= bce * (1 + 1e-6) + 1e-6).all()


@settings(max_examples=25)
@given(problems(), st.sampled_from([torch.float16, torch.bfloat16]))
def test_half_precision_is_computed_in_float32(
    problem: tuple[torch.Tensor, torch.Tensor, torch.Tensor, object, float], dtype: torch.dtype
) -> None:
    x, index, _, alpha, gamma = problem
    x = x.clamp(-6e4, 6e4).to(dtype)
    xh = x.clone().requires_grad_()
    out = sigmoid_focal_loss(xh, index, alpha=alpha, gamma=gamma, reduction="none")  # type: ignore[arg-type]
    out.sum().backward()
    assert out.dtype == torch.float32
    assert xh.grad is not None
    assert xh.grad.dtype == dtype
    # Half-precision CPU logits take the torch backend; the float32 reference takes it too, so
    # that the comparison is of the precision alone (across backends, float32 results agree to
    # a few ulps only: test_focal_backends.py).
    x32 = x.float().requires_grad_()
    with backend("torch"):
        expected = sigmoid_focal_loss(x32, index, alpha=alpha, gamma=gamma, reduction="none")  # type: ignore[arg-type]
    expected.sum().backward()
    torch.testing.assert_close(out, expected)
    assert x32.grad is not None
    torch.testing.assert_close(xh.grad, x32.grad.to(dtype))


def test_dense_targets_of_any_shape_and_non_contiguous_logits() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 3, 5, generator=g).transpose(0, 1) * 3  # (3, 4, 5), non-contiguous
    t = (torch.rand(3, 4, 5, generator=g) > 0.7).float()
    alpha = torch.rand(5, generator=g)
    w = torch.rand(3, 1, 5, generator=g)
    xs, xr = x.clone().requires_grad_(), x.double().requires_grad_()
    out = sigmoid_focal_loss(xs, t, alpha=alpha, gamma=1.5, weight=w, reduction="mean")
    expected = (reference(xr, t, alpha, 1.5) * w).sum() / (w.double().sum() * 4)
    out.backward()
    expected.backward()
    torch.testing.assert_close(out.double(), expected)
    assert xs.grad is not None
    torch.testing.assert_close(xs.grad.double(), xr.grad)


# ------------------------------------------------------------------ edges found by fuzzing


def float64_terms(
    x: torch.Tensor, t: torch.Tensor, alpha: float | None, gamma: float
) -> torch.Tensor:
    """Elementwise focal terms in float64 with softplus written out (accurate at every logit)."""
    x, t = x.double(), t.double()

    def softplus(z: torch.Tensor) -> torch.Tensor:
        return z.clamp_min(0) + torch.log1p(torch.exp(-z.abs()))

    p, one_minus_p = torch.sigmoid(x), torch.sigmoid(-x)
    q = p * (1 - t) + one_minus_p * t
    bce = t * softplus(-x) + (1 - t) * softplus(x)
    loss = q**gamma * bce
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return loss


@pytest.mark.parametrize("name", available_backends())
def test_index_list_sum_does_not_drift_at_large_positive_logits(name: str) -> None:
    x = torch.tensor([[0.0, 0.0]] * 4 + [[0.0, 319.0]])
    index = torch.tensor([[0]] * 4 + [[1]])
    dense = index_list_to_dense(index, 2, dtype=torch.float32)
    with backend(name):
        sparse = sigmoid_focal_loss(x, index, alpha=None, gamma=0.0)
        dense_out = sigmoid_focal_loss(x, dense, alpha=None, gamma=0.0)
    expected = float64_terms(x, dense, None, 0.0).mean()
    assert torch.equal(sparse, dense_out)
    assert sparse.item() == pytest.approx(expected.item(), rel=1e-6)
    g = torch.Generator().manual_seed(8)
    for logit in (20.0, 1e3, 1e4, 1e30):
        x = torch.randn(4096, 100, generator=g)
        index = torch.randint(0, 100, (4096, 3), generator=g)
        dense = index_list_to_dense(index, 100, dtype=torch.float32)
        x[dense.bool()] = logit
        with backend(name):
            sparse = sigmoid_focal_loss(x, index, reduction="sum")
            dense_out = sigmoid_focal_loss(x, dense, reduction="sum")
        expected = float64_terms(x, dense, 0.25, 2.0).sum()
        assert torch.equal(sparse, dense_out)
        assert sparse.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("name", available_backends())
def test_infinite_logits_give_the_limits(name: str) -> None:
    inf = math.inf
    x = torch.tensor([[inf, -inf, inf, -inf, inf, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.3, 0.0]])
    w = torch.tensor([[2.0, 3.0, 1.0, 1.0, 1.0, 1.0]])
    with backend(name):
        out = sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, weight=w, reduction="none")
        out.sum().backward()
    # inf where the target disagrees, 0 where it agrees; the gradient is the limit: +-alpha_t * w
    # where the loss is infinite (t = 0.3 at +inf: (1 - t)^gamma (1 - t) alpha_t).
    soft_limit = 0.7**2 * 0.7 * (0.25 * 0.3 + 0.75 * 0.7)
    assert out[0, :4].tolist() == [inf, inf, 0.0, 0.0]
    assert out[0, 4].item() == inf
    assert x.grad is not None
    at_zero = 0.75 * 0.5**2 * (2.0 * 0.5 * math.log(2.0) + 0.5)  # p^g (g (1 - p) s + p)
    expected = [0.75 * 2.0, -0.25 * 3.0, 0.0, 0.0, soft_limit, at_zero]
    torch.testing.assert_close(x.grad[0], torch.tensor(expected), rtol=1e-6, atol=1e-7)
    # The case: an inf logit at a positive, index list against dense.
    with backend(name):
        for targets in (torch.tensor([[0]]), torch.tensor([[1.0, 0.0]])):
            value = sigmoid_focal_loss(torch.tensor([[inf, 0.0]]), targets, reduction="sum")
            assert value.item() == pytest.approx(0.75 * 0.25 * math.log(2.0), rel=1e-6)


@pytest.mark.parametrize("name", available_backends())
def test_nan_logits_are_rejected_unless_masked_or_unchecked(name: str) -> None:
    x = torch.tensor([[0.0, math.nan, 1.0], [2.0, 0.0, -1.0]])
    index = torch.tensor([[0], [2]])
    with backend(name):
        for reduction in REDUCTIONS:
            with pytest.raises(ValueError, match=r"`input` must not contain NaN.*index \(0, 1\)"):
                sigmoid_focal_loss(x, index, reduction=reduction)  # type: ignore[arg-type]
        # A zero weight removes the element, its NaN included.
        keep = torch.ones(2, 3)
        keep[0, 1] = 0.0
        masked = sigmoid_focal_loss(x.clone().requires_grad_(), index, weight=keep)
        assert torch.isfinite(masked)
        unchecked = sigmoid_focal_loss(x, index, validate_args=False)
        assert torch.isnan(unchecked)


@pytest.mark.parametrize("shape", [(3, 0), (0,), (0, 0), (2, 0, 4), (2, 3, 0)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_dimensions_give_empty_or_zero(shape: tuple[int, ...], reduction: str) -> None:
    x = torch.zeros(shape, requires_grad=True)
    targets: list[torch.Tensor] = [torch.zeros(shape), torch.zeros(shape, dtype=torch.bool)]
    if len(shape) == 2:
        targets.append(torch.full((shape[0], 2), -1))
    for t in targets:
        out = sigmoid_focal_loss(x, t, reduction=reduction)  # type: ignore[arg-type]
        assert out.shape == (shape if reduction == "none" else ())
        if reduction != "none":
            assert out.item() == 0.0
        out.sum().backward()
        assert x.grad is not None
        assert x.grad.shape == shape


def test_huge_gamma_is_defined_and_beyond_float32_is_refused() -> None:
    x = torch.tensor([[-3.0, 0.0, 2.0, 50.0]], requires_grad=True)
    t = torch.tensor([[1, -1]])
    for name in available_backends():
        with backend(name):
            out = sigmoid_focal_loss(x, t, gamma=GAMMA_MAX, reduction="sum")
            out.backward()
        assert torch.isfinite(out)
        assert x.grad is not None
        assert torch.isfinite(x.grad).all()
        x.grad = None
    with pytest.raises(ValueError, match=r"`gamma` must be a finite number in \[0, 3.40"):
        sigmoid_focal_loss(x, t, gamma=3.5e38)
    tiny = sigmoid_focal_loss(
        torch.tensor([[0.0, -104.0]]), torch.tensor([[0.0, 0.5]]), gamma=1e-300
    )
    assert torch.isfinite(tiny)
