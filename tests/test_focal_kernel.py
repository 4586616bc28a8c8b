"""The fused kernel: block boundaries, threads, repeated backward and torch.compile."""

from __future__ import annotations

import pytest
import torch

import focalrec._focal_kernel as kernel
from focalrec import sigmoid_focal_loss
from focalrec.losses import REDUCTIONS


def _loss_and_grad(
    x: torch.Tensor, targets: torch.Tensor, reduction: str, **kwargs: object
) -> tuple[torch.Tensor, torch.Tensor]:
    xs = x.clone().requires_grad_()
    out = sigmoid_focal_loss(xs, targets, reduction=reduction, **kwargs)  # type: ignore[arg-type]
    out.sum().backward()
    assert xs.grad is not None
    return out.detach(), xs.grad


@pytest.mark.parametrize("block_elements", [1, 7, 40])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_block_size_does_not_change_results(
    monkeypatch: pytest.MonkeyPatch, block_elements: int, reduction: str
) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 9, generator=g) * 3
    index = torch.randint(-1, 9, (37, 4), generator=g)
    weight = torch.rand(37, 9, generator=g)
    soft = torch.rand(37, 9, generator=g)
    expected = [_loss_and_grad(x, t, reduction, weight=weight) for t in (index, soft)]
    monkeypatch.setattr(kernel, "BLOCK_ELEMENTS", block_elements)
    for t, (value, grad) in zip((index, soft), expected, strict=True):
        got_value, got_grad = _loss_and_grad(x, t, reduction, weight=weight)
        torch.testing.assert_close(got_value, value)
        torch.testing.assert_close(got_grad, grad)


def test_thread_count_does_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "BLOCK_ELEMENTS", 16)  # many blocks, so threads are used
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g) * 4
    index = torch.randint(-1, 8, (64, 3), generator=g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _loss_and_grad(x, index, "mean")
        torch.set_num_threads(max(threads, 2))
        many = _loss_and_grad(x, index, "mean")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0])  # partial sums are added in block order
    assert torch.equal(one[1], many[1])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_second_backward_with_retained_graph_recomputes(reduction: str) -> None:
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(5, 7, generator=g) * 2).requires_grad_()
    index = torch.tensor([[0, 1], [2, -1], [6, 6], [-1, -1], [3, 4]])
    out = sigmoid_focal_loss(x, index, reduction=reduction)  # type: ignore[arg-type]
    upstream = torch.rand(out.shape, generator=g) + 0.5
    out.backward(upstream, retain_graph=True)
    assert x.grad is not None
    first = x.grad.clone()
    out.backward(upstream)
    torch.testing.assert_close(x.grad, 2 * first)


def test_no_gradient_work_without_requires_grad() -> None:
    x = torch.randn(3, 4)
    out = sigmoid_focal_loss(x, torch.tensor([[1], [2], [3]]))
    assert out.grad_fn is None
    with torch.no_grad():
        y = torch.randn(3, 4, requires_grad=True)
        assert sigmoid_focal_loss(y, torch.tensor([[1], [2], [3]])).grad_fn is None


def test_torch_compile_matches_eager() -> None:
    # aot_eager exercises dynamo and AOT autograd without a C++ toolchain; the fused function is
    # excluded from tracing (a graph break) and runs eagerly inside the compiled region.
    def fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(torch.tanh(z) * 5, t, reduction="sum_over_positives") * 2

    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 11, generator=g)
    index = torch.randint(-1, 11, (6, 3), generator=g)
    compiled = torch.compile(fn, backend="aot_eager")
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager_out, compiled_out = fn(xe, index), compiled(xc, index)
    eager_out.backward()
    compiled_out.backward()
    torch.testing.assert_close(compiled_out, eager_out)
    torch.testing.assert_close(xc.grad, xe.grad)
