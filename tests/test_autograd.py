"""Derivatives of the loss beyond one backward: second order, torch.func, retained graphs."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from conftest import available_backends, backend
from focalrec import index_list_to_dense, sigmoid_focal_loss
from focalrec.losses import REDUCTIONS

GAMMAS = [0.0, 0.5, 1.0, 2.0, 4.5]
TARGETS = ["index", "dense", "soft"]


def _problem(kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64) * 3
    index = torch.tensor([[0, 3, -1], [4, 4, 1], [-1, -1, -1]])
    if kind == "index":
        return x, index
    if kind == "dense":
        return x, index_list_to_dense(index, 5, dtype=torch.float64)
    return x, torch.rand(3, 5, generator=g, dtype=torch.float64)


def _variant(i: int) -> dict[str, object]:
    """alpha and weight, cycling through None, a float, per-class and broadcast forms."""
    alphas: list[object] = [
        None,
        0.25,
        torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7], dtype=torch.float64),
    ]
    weights: list[object] = [
        None,
        torch.tensor([[0.5], [2.0], [1.0]], dtype=torch.float64),
        torch.tensor([1.0, 0.0, 3.0, 0.5, 2.0], dtype=torch.float64),
    ]
    return {"alpha": alphas[i % 3], "weight": weights[(i // 3) % 3]}


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", TARGETS)
def test_gradcheck_and_gradgradcheck(gamma: float, reduction: str, kind: str) -> None:
    x, targets = _problem(kind, seed=GAMMAS.index(gamma))
    kwargs = _variant(GAMMAS.index(gamma) + 2 * REDUCTIONS.index(reduction) + TARGETS.index(kind))

    def fn(z: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(z, targets, gamma=gamma, reduction=reduction, **kwargs)  # type: ignore[arg-type]

    xr = x.requires_grad_()
    assert torch.autograd.gradcheck(fn, (xr,))
    assert torch.autograd.gradgradcheck(fn, (xr,))


def _torchvision_formula(x: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    return (ce * (1 - p_t) ** gamma * (0.25 * t + 0.75 * (1 - t))).sum()


def test_hessian_is_the_true_second_derivative() -> None:
    # The case of the bug report: the Hessian came back as zeros.
    x = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    ours = torch.autograd.functional.hessian(lambda z: sigmoid_focal_loss(z, t, reduction="sum"), x)
    reference = torch.autograd.functional.hessian(lambda z: _torchvision_formula(z, t, 2.0), x)
    torch.testing.assert_close(ours, reference)
    diagonal = ours.reshape(3, 3).diagonal()
    torch.testing.assert_close(
        diagonal, torch.tensor([0.0762, 0.0570, 0.0032], dtype=torch.float64), atol=5e-5, rtol=0
    )


def _mp_second_derivative(x: float, t: float, gamma: float) -> float:
    """d^2/dx^2 of alpha_t q^gamma BCE with 80-digit arithmetic, by the textbook chain rule."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 80
    z = mpmath.mpf(x)
    p, one_minus_p = 1 / (1 + mpmath.exp(-z)), 1 / (1 + mpmath.exp(z))  # no cancellation
    q = p * (1 - t) + one_minus_p * t
    bce = -(t * mpmath.log(p) + (1 - t) * mpmath.log(one_minus_p))
    dq = (1 - 2 * t) * p * one_minus_p
    d2q = dq * (one_minus_p - p)
    dbce, d2bce = p - t, p * one_minus_p
    second = q**gamma * d2bce
    if gamma != 0:
        second += gamma * q ** (gamma - 1) * (d2q * bce + 2 * dq * dbce)
        second += gamma * (gamma - 1) * q ** (gamma - 2) * dq**2 * bce
    return float((0.25 * t + 0.75 * (1 - t)) * second)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5, 1.0, 2.0, 4.5])
@pytest.mark.parametrize("x", [-1e4, -60.0, -8.0, -0.7, 0.0, 1.3, 9.0, 60.0, 1e4])
@pytest.mark.parametrize("t", [0.0, 1.0, 0.3])
def test_second_derivative_matches_high_precision(gamma: float, x: float, t: float) -> None:
    expected = _mp_second_derivative(x, t, gamma)
    xs = torch.tensor([x], dtype=torch.float64, requires_grad=True)
    tt = torch.tensor([t], dtype=torch.float64)
    (g,) = torch.autograd.grad(
        sigmoid_focal_loss(xs, tt, gamma=gamma, reduction="sum"), xs, create_graph=True
    )
    (h,) = torch.autograd.grad(g.sum(), xs)
    assert math.isfinite(h.item())
    assert h.item() == pytest.approx(expected, rel=1e-7, abs=1e-300)


def _hessian_diagonal(x: torch.Tensor, index: torch.Tensor, gamma: float) -> torch.Tensor:
    xs = x.clone().requires_grad_()
    loss = sigmoid_focal_loss(xs, index, gamma=gamma, reduction="mean")
    (grad,) = torch.autograd.grad(loss, xs, create_graph=True)
    (h,) = torch.autograd.grad(grad.sum(), xs)
    return h


@pytest.mark.parametrize("name", available_backends())
def test_second_derivative_of_float32_logits_is_finite_and_matches_float64(name: str) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(2, 20, generator=g) * 5, torch.tensor([[1e4, -1e4] * 10])])
    index = torch.tensor([[0, 5], [7, -1], [0, 1]])
    for gamma in (0.0, 0.5, 2.0):
        with backend(name):
            h32 = _hessian_diagonal(x, index, gamma)
        h64 = _hessian_diagonal(x.double(), index, gamma)
        assert h32.dtype == torch.float32
        assert torch.isfinite(h32).all()
        torch.testing.assert_close(h32.double(), h64, rtol=1e-4, atol=1e-9)


def test_third_order_raises_instead_of_returning_a_wrong_number() -> None:
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[0], [2]])
    (g,) = torch.autograd.grad(sigmoid_focal_loss(x, index, reduction="sum"), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"focal_loss_derivative.*no autograd formula"):
        torch.autograd.grad(h.sum(), x)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", TARGETS)
def test_torch_func_transforms_match_autograd(reduction: str, kind: str) -> None:
    x, targets = _problem(kind, seed=5)

    def fn(z: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(z, targets, gamma=0.5, reduction=reduction).sum()  # type: ignore[arg-type]

    xr = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(fn(xr), xr)
    expected_hessian = torch.autograd.functional.hessian(fn, x)
    torch.testing.assert_close(torch.func.grad(fn)(x), expected)
    torch.testing.assert_close(torch.func.jacrev(fn)(x), expected)
    torch.testing.assert_close(torch.func.jacfwd(fn)(x), expected)
    torch.testing.assert_close(torch.func.hessian(fn)(x), expected_hessian)

    # Per-sample gradients: vmap over rows of a grad, against one autograd call per row.
    def row_loss(row: torch.Tensor, row_targets: torch.Tensor) -> torch.Tensor:
        out = sigmoid_focal_loss(row.unsqueeze(0), row_targets.unsqueeze(0), reduction=reduction)  # type: ignore[arg-type]
        return out.sum()

    per_sample = torch.func.vmap(torch.func.grad(row_loss))(x, targets)
    for i in range(x.shape[0]):
        xi = x[i].clone().requires_grad_()
        (gi,) = torch.autograd.grad(row_loss(xi, targets[i]), xi)
        torch.testing.assert_close(per_sample[i], gi)


def test_vmap_over_float32_batches_uses_the_fast_backends() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 7, 30, generator=g)
    index = torch.randint(-1, 30, (4, 7, 3), generator=g)
    for name in available_backends():
        with backend(name):
            losses = torch.func.vmap(lambda z, t: sigmoid_focal_loss(z, t, reduction="sum"))(
                x, index
            )
        expected = torch.stack(
            [sigmoid_focal_loss(x[i], index[i], reduction="sum") for i in range(4)]
        )
        torch.testing.assert_close(losses, expected)


@pytest.mark.parametrize("name", available_backends())
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_second_backward_with_retained_graph_recomputes(name: str, reduction: str) -> None:
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(5, 7, generator=g) * 2).requires_grad_()
    index = torch.tensor([[0, 1], [2, -1], [6, 6], [-1, -1], [3, 4]])
    with backend(name):
        out = sigmoid_focal_loss(x, index, reduction=reduction)  # type: ignore[arg-type]
        upstream = torch.rand(out.shape, generator=g) + 0.5
        out.backward(upstream, retain_graph=True)
        assert x.grad is not None
        first = x.grad.clone()
        out.backward(upstream, retain_graph=True)
        torch.testing.assert_close(x.grad, 2 * first)
        x.grad.zero_()  # in place, on what may be the first backward's buffer
        out.backward(upstream)
        torch.testing.assert_close(x.grad, first)


@pytest.mark.parametrize("name", available_backends())
def test_scaled_and_summed_losses_get_scaled_gradients(name: str) -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 9, generator=g)
    index = torch.randint(-1, 9, (6, 2), generator=g)
    with backend(name):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        (sigmoid_focal_loss(xa, index) * 3.0 + sigmoid_focal_loss(xa, index)).backward()
        sigmoid_focal_loss(xb, index).backward()
    assert xa.grad is not None
    assert xb.grad is not None
    torch.testing.assert_close(xa.grad, 4.0 * xb.grad)


# --------------------------------------------------------------------------------------------------
# plain eager calls skip the operator; everything else still gets it


def _counting_operator_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the calls that go through the ``torch.library`` operators."""
    from focalrec._focal import op

    calls = {"op": 0}
    loss_op, derivative_op = op._focal_loss_op, op._focal_loss_derivative_op

    def counted(fn: object) -> object:
        def wrapper(*args: object) -> object:
            calls["op"] += 1
            return fn(*args)  # type: ignore[operator]

        return wrapper

    monkeypatch.setattr(op, "_focal_loss_op", counted(loss_op))
    monkeypatch.setattr(op, "_focal_loss_derivative_op", counted(derivative_op))
    return calls


@pytest.mark.parametrize("name", available_backends())
def test_plain_eager_calls_skip_the_operator(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    calls = _counting_operator_calls(monkeypatch)
    x, targets = _problem("index", seed=9)
    with backend(name):
        xs = x.float().requires_grad_()
        sigmoid_focal_loss(xs, targets).backward()
        assert calls["op"] == 0
        (g,) = torch.autograd.grad(sigmoid_focal_loss(xs, targets), xs, create_graph=True)
        g.sum().backward(retain_graph=True)  # a second derivative, not recorded
        assert calls["op"] == 0
        torch.autograd.grad(g.sum(), xs, create_graph=True)  # recorded: through the operator
    assert calls["op"] == 1


def test_modes_tracing_subclasses_and_meta_tensors_get_the_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.testing._internal.two_tensor import TwoTensor
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = _counting_operator_calls(monkeypatch)
    x, index = _problem("index", seed=10)
    expected = sigmoid_focal_loss(x, index)
    assert calls["op"] == 0
    with torch.device("cpu"):  # a torch-function mode
        torch.testing.assert_close(sigmoid_focal_loss(x, index), expected)
    assert calls["op"] == 1
    with FakeTensorMode() as mode:  # a dispatch mode, fake tensors: no data to read
        out = sigmoid_focal_loss(mode.from_tensor(x), mode.from_tensor(index), validate_args=False)
        assert out.shape == ()
    assert calls["op"] == 2
    meta = sigmoid_focal_loss(x.to("meta"), index.to("meta"), validate_args=False)
    assert meta.device.type == "meta"
    assert calls["op"] == 3
    pair = sigmoid_focal_loss(TwoTensor(x.clone(), x.clone()), index, validate_args=False)
    assert isinstance(pair, TwoTensor)  # a wrapper subclass without storage of its own
    torch.testing.assert_close(pair.a, expected)
    assert calls["op"] == 4

    class Recording(TorchDispatchMode):  # a dispatch mode over real tensors sees the operator
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    with Recording() as recording:
        torch.testing.assert_close(sigmoid_focal_loss(x, index), expected)
    assert "focalrec.focal_loss.default" in recording.ops
    assert calls["op"] == 5
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(
            lambda z: sigmoid_focal_loss(z, index, validate_args=False), (x,), check_trace=False
        )
    assert calls["op"] == 6
    other = torch.randn_like(x)
    torch.testing.assert_close(traced(other), sigmoid_focal_loss(other, index))
