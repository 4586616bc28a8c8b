"""The loss under torch.compile (no graph break), torch.export, and TorchScript (unsupported)."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from focalrec import FocalLoss, index_list_to_dense, sigmoid_focal_loss
from focalrec.losses import REDUCTIONS
from focalrec.models import SequenceMLP

needs_cxx = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="torch.compile's inductor backend needs a C++ compiler on the CPU; none found",
)


def _training_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = SequenceMLP(40, 4, embedding_dim=8, hidden_sizes=[16])
    g = torch.Generator().manual_seed(1)
    history = torch.randint(-1, 40, (24, 4), generator=g)
    targets = torch.randint(-1, 40, (24, 3), generator=g)
    return model, history, targets


def _grads(model: nn.Module) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    return grads


@needs_cxx
def test_fullgraph_training_step_with_inductor_matches_eager() -> None:
    model, history, index = _training_problem()
    criterion = FocalLoss(alpha=0.25, gamma=2.0, reduction="sum_over_positives")

    def step(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return criterion(model(h), t)

    dense = index_list_to_dense(index, 40, dtype=torch.float32)
    for targets in (index, dense):
        torch._dynamo.reset()
        compiled = torch.compile(step, fullgraph=True)  # fails on any graph break
        loss = compiled(history, targets)
        loss.backward()
        compiled_grads = _grads(model)
        eager = step(history, targets)
        eager.backward()
        torch.testing.assert_close(loss, eager)
        for got, expected in zip(compiled_grads, _grads(model), strict=True):
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_fullgraph_with_aot_autograd_for_every_target_form(reduction: str) -> None:
    # aot_eager runs dynamo and AOT autograd (the custom op's fake implementation and its
    # saved gradient) without a C++ toolchain.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 11, generator=g)
    index = torch.randint(-1, 11, (6, 3), generator=g)
    alpha = torch.rand(11, generator=g)
    weight = torch.rand(6, 1, generator=g)
    for targets in (index, index_list_to_dense(index, 11).float(), torch.rand(6, 11, generator=g)):

        def fn(z: torch.Tensor, t: torch.Tensor = targets) -> torch.Tensor:
            out = sigmoid_focal_loss(
                torch.tanh(z) * 5,
                t,
                alpha=alpha,
                weight=weight,
                reduction=reduction,  # type: ignore[arg-type]
            )
            return out.sum() * 2

        torch._dynamo.reset()
        compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        eager_out, compiled_out = fn(xe), compiled(xc)
        eager_out.backward()
        compiled_out.backward()
        torch.testing.assert_close(compiled_out, eager_out)
        torch.testing.assert_close(xc.grad, xe.grad)


def test_export_of_model_and_loss() -> None:
    model, history, index = _training_problem()

    class WithLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.criterion = FocalLoss()

        def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.criterion(self.model(h), t)
            return out

    module = WithLoss()
    exported = torch.export.export(module, (history, index))
    assert "focalrec.focal_loss" in exported.graph_module.code
    torch.testing.assert_close(exported.module()(history, index), module(history, index))


def test_torchscript_is_not_supported() -> None:
    # Documented in docs/focal-loss.md: torch.compile and torch.export are the supported
    # graph captures; the argument checks are Python that TorchScript cannot compile.
    with pytest.raises(Exception):  # noqa: B017, PT011 - the error type is up to torch.jit
        torch.jit.script(FocalLoss())


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=needs_cxx)])
def test_dynamic_shapes_and_a_symbolic_gamma(backend: str) -> None:
    # Bug 8: under dynamic=True a float argument is symbolic, and math.isfinite(gamma) broke
    # the graph ("torch.* op returned non-Tensor"). The reproducer, then gamma passed in.
    torch._dynamo.reset()
    module_fn = torch.compile(
        lambda x, t: FocalLoss()(x, t), fullgraph=True, dynamic=True, backend=backend
    )
    gamma_fn = torch.compile(
        lambda x, t, gamma: sigmoid_focal_loss(x, t, gamma=gamma),
        fullgraph=True,
        dynamic=True,
        backend=backend,
    )
    g = torch.Generator().manual_seed(8)
    for rows, cols, gamma in ((4, 5, 2.0), (6, 7, 1.5), (3, 9, 0.5)):
        x = torch.randn(rows, cols, generator=g)
        for targets in (
            torch.randint(-1, cols, (rows, 2), generator=g),
            torch.rand(rows, cols, generator=g),
        ):
            for compiled, eager, args in (
                (module_fn, lambda x, t: FocalLoss()(x, t), ()),
                (gamma_fn, lambda x, t, gamma: sigmoid_focal_loss(x, t, gamma=gamma), (gamma,)),
            ):
                xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
                got, expected = compiled(xc, targets, *args), eager(xe, targets, *args)
                got.backward()
                expected.backward()
                torch.testing.assert_close(got, expected)
                torch.testing.assert_close(xc.grad, xe.grad)
