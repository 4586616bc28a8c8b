"""The loss and the fused output layer under torch.compile (no graph break), torch.export, and
TorchScript (unsupported)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

from conftest import REPO_ROOT
from focalrec import (
    FocalLoss,
    LinearFocalLoss,
    index_list_to_dense,
    linear_sigmoid_focal_loss,
    sigmoid_focal_loss,
)
from focalrec._linear.plan import LINEAR_REDUCTIONS
from focalrec.losses import REDUCTIONS
from focalrec.models import SequenceMLP

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
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


# ------------------------------------------------------------------ the fused output layer

ITEMS = 37


class _Tower(nn.Module):
    """A small model whose features feed the output layer: embeddings of a history, an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 8)
        self.mlp = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 6))

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.mlp(self.embedding(history).mean(1))
        return out


def _fused_problem(
    n: int, seed: int = 0
) -> tuple[_Tower, LinearFocalLoss, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    tower = _Tower()
    head = LinearFocalLoss(6, ITEMS, prior=0.05, chunk_size=(5, 16))  # several chunks each way
    g = torch.Generator().manual_seed(seed + 1)
    history = torch.randint(0, 50, (n, 4), generator=g)
    index = torch.randint(-1, ITEMS, (n, 3), generator=g)
    return tower, head, history, index, torch.rand(n, 1, generator=g)


def _step_grads(
    step: Callable[..., torch.Tensor], modules: tuple[nn.Module, ...], *args: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss of ``step(*args)`` and every parameter's gradient after its backward."""
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.grad = None
    loss = step(*args)
    loss.backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    return loss.detach(), grads


def _assert_same(got: tuple[torch.Tensor, list[torch.Tensor]], want: tuple[Any, Any]) -> None:
    torch.testing.assert_close(got[0], want[0])
    for a, b in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("reduction", LINEAR_REDUCTIONS)
@pytest.mark.parametrize("form", ["module-index", "module-dense", "function-weighted"])
def test_fused_layer_fullgraph_training_step_matches_eager(reduction: str, form: str) -> None:
    # aot_eager runs dynamo and AOT autograd (the operator's fake implementation and its
    # registered backward) without a C++ toolchain; fullgraph=True fails on any graph break.
    tower, head, history, index, row_weight = _fused_problem(13)
    head.reduction = reduction  # type: ignore[assignment]
    alpha = torch.rand(ITEMS, generator=torch.Generator().manual_seed(5))
    target = index_list_to_dense(index, ITEMS) if form == "module-dense" else index

    def step(h: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        if form.startswith("module"):
            return head(tower(h), t)
        return linear_sigmoid_focal_loss(
            tower(h),
            head.weight,
            t,
            linear_bias=head.bias,
            alpha=alpha,
            gamma=1.5,
            weight=r,
            reduction=reduction,  # type: ignore[arg-type]
            chunk_size=(4, 8),
        )

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(step, backend=counter, fullgraph=True)
    got = _step_grads(compiled, (tower, head), history, target, row_weight)
    _assert_same(got, _step_grads(step, (tower, head), history, target, row_weight))
    assert counter.frame_count == 1
    assert any(
        "focalrec.linear_focal_loss" in str(node.target)
        for graph in counter.graphs
        for node in graph.graph.nodes
    )


def test_fused_layer_explain_finds_no_graph_break() -> None:
    tower, head, history, index, _ = _fused_problem(9)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(lambda h, t: head(tower(h), t))(history, index)
    assert explained.graph_break_count == 0
    assert explained.graph_count == 1


@needs_cxx
def test_fused_layer_with_inductor_and_dynamic_batch_sizes() -> None:
    tower, head, _, _, _ = _fused_problem(1)

    def step(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return head(tower(h), t)

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(step, backend=counter, fullgraph=True, dynamic=True)
    frames = []
    for n in (12, 7, 30):
        _, _, history, index, _ = _fused_problem(n, seed=n)
        for target in (index, index_list_to_dense(index, ITEMS)):
            _assert_same(
                _step_grads(compiled, (tower, head), history, target),
                _step_grads(step, (tower, head), history, target),
            )
        frames.append(counter.frame_count)
    assert frames[0] == frames[-1]  # no recompilation for another batch size


def test_export_of_model_and_fused_layer() -> None:
    tower, head, history, index, _ = _fused_problem(8)

    class WithHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tower, self.head = tower, head

        def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.head(self.tower(h), t)
            return out

    module = WithHead()
    exported = torch.export.export(module, (history, index))
    assert "focalrec.linear_focal_loss" in exported.graph_module.code
    torch.testing.assert_close(exported.module()(history, index), module(history, index))


def test_fused_layer_compiled_without_gradients() -> None:
    tower, head, history, index, _ = _fused_problem(10)

    def evaluate(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return head(tower(h), t)

    torch._dynamo.reset()
    compiled = torch.compile(evaluate, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(history, index), evaluate(history, index))


@pytest.mark.parametrize(
    ("device", "dtype"),
    [
        pytest.param("cpu", torch.bfloat16, id="cpu-bfloat16"),
        pytest.param("cuda", torch.float16, id="cuda-float16", marks=needs_cuda),
        pytest.param("cuda", torch.bfloat16, id="cuda-bfloat16", marks=needs_cuda),
    ],
)
def test_fused_layer_compiled_under_autocast_matches_eager_autocast(
    device: str, dtype: torch.dtype
) -> None:
    # The autocast context inside the compiled function and around it: both run the
    # operator's matmuls in the autocast dtype, as eager does (the same kernels on the CPU;
    # on a GPU, to the autocast dtype's rounding of the largest entry).
    tower, head, history, index, _ = _fused_problem(11)
    tower, head, history, index = (
        tower.to(device),
        head.to(device),
        history.to(device),
        index.to(device),
    )

    def step(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device, dtype=dtype):
            return head(tower(h), t)

    def outside(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return head(tower(h), t)

    def check(got: tuple[torch.Tensor, list[torch.Tensor]], want: tuple[Any, Any]) -> None:
        if device == "cpu":
            _assert_same(got, want)
            return
        for a, b in zip([got[0], *got[1]], [want[0], *want[1]], strict=True):
            atol = 2.0**-8 * float(b.abs().max()) + 1e-7
            torch.testing.assert_close(a, b, rtol=0, atol=atol)

    want = _step_grads(step, (tower, head), history, index)
    assert want[0].dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in want[1])
    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    check(_step_grads(compiled, (tower, head), history, index), want)
    torch._dynamo.reset()
    compiled = torch.compile(outside, backend="aot_eager", fullgraph=True)
    with torch.autocast(device, dtype=dtype):
        check(_step_grads(compiled, (tower, head), history, index), want)


def test_fused_layer_eager_call_imports_no_dynamo() -> None:
    # Eagerly the fused loss is an autograd Function: neither the operator nor
    # torch.compiler.disable runs, either of which would import dynamo on the first call.
    code = (
        "import sys, torch, focalrec\n"
        "x = torch.randn(4, 3, requires_grad=True)\n"
        "w = torch.randn(5, 3, requires_grad=True)\n"
        "t = torch.tensor([[1], [2], [-1], [4]])\n"
        "focalrec.linear_sigmoid_focal_loss(x, w, t).backward()\n"
        "with torch.autocast('cpu', dtype=torch.bfloat16):\n"
        "    focalrec.linear_sigmoid_focal_loss(x, w, t).backward()\n"
        "sys.exit('torch._dynamo' in sys.modules)\n"
    )
    env_path = str(REPO_ROOT / "src")
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": env_path},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_fused_layer_compiled_checks_shapes_and_skips_value_reads() -> None:
    # As the plain loss: the checks that read values (a sync, a graph break) run eagerly only,
    # the shape checks everywhere.
    g = torch.Generator().manual_seed(7)
    x, w = torch.randn(4, 3, generator=g), torch.randn(5, 3, generator=g)
    out_of_range = torch.tensor([[1], [7], [-1], [4]])
    with pytest.raises(ValueError, match=r"`target` holds item indices in \[-1, 7\]"):
        linear_sigmoid_focal_loss(x, w, out_of_range)

    def fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return linear_sigmoid_focal_loss(z, w, t)

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    unchecked = linear_sigmoid_focal_loss(x, w, out_of_range, validate_args=False)
    torch.testing.assert_close(compiled(x, out_of_range), unchecked)
    torch._dynamo.reset()
    with pytest.raises(ValueError, match=r"`target` must have 4 rows"):
        torch.compile(fn, backend="aot_eager")(x, out_of_range[:3])


def test_fused_layer_compiled_without_bias_and_with_a_frozen_weight() -> None:
    tower, _, history, index, _ = _fused_problem(9)
    head = LinearFocalLoss(6, ITEMS, bias=False, chunk_size=(4, 8)).requires_grad_(False)

    def step(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return head(tower(h), t)

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    got = _step_grads(compiled, (tower,), history, index)
    _assert_same(got, _step_grads(step, (tower,), history, index))
    assert head.weight.grad is None


OPCHECK_CASES = {
    "float32-index": (torch.float32, torch.float32, "index", True, (True, True, True)),
    "bfloat16-dense": (torch.bfloat16, torch.bfloat16, "dense", True, (True, False, True)),
    "float64-no-bias": (torch.float64, torch.float64, "index", False, (False, True, False)),
    "autocast-cast": (torch.float32, torch.bfloat16, "dense", True, (True, True, True)),
    "no-gradients": (torch.float32, torch.float32, "index", True, (False, False, False)),
}


@pytest.mark.parametrize("case", OPCHECK_CASES, ids=list(OPCHECK_CASES))
def test_fused_operator_passes_opcheck(case: str) -> None:
    # torch.library's own checks of the operator: its schema, that autograd is registered,
    # that the fake implementation gives the real one's shapes, dtypes and strides, and AOT
    # dispatch with dynamic shapes.
    from focalrec._focal.inputs import values_of
    from focalrec._linear.autograd import linear_focal_loss_op as _linear_focal_loss_op
    from focalrec._linear.plan import Chunks

    dtype, matmul, targets, bias, need = OPCHECK_CASES[case]
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(7, 3, generator=g).to(dtype), torch.randn(11, 3, generator=g).to(dtype)
    b = torch.randn(11, generator=g).to(dtype) if bias else None
    for t, wanted in zip((x, w, b), need, strict=True):
        if t is not None and wanted:
            t.requires_grad_()
    index = torch.randint(-1, 11, (7, 2), generator=g)
    dense = index_list_to_dense(index, 11) if targets == "dense" else None
    compute = torch.promote_types(matmul, torch.float32)
    weight = torch.rand(7, 1, generator=g).to(compute)
    chunks = Chunks(
        index=index if dense is None else None,
        dense=dense,
        weight=weight,
        alpha=None,
        alpha_vec=torch.rand(11, generator=g).to(compute),
        gamma=2.0,
        rows=3,
        items=4,
        dtype=matmul,
    )
    torch.library.opcheck(_linear_focal_loss_op, (x, w, b, *values_of(chunks), *need))


def test_dynamic_shapes_with_a_module_holding_float_hyperparameters() -> None:
    # dynamic=True makes a module's float attributes (gamma, alpha) symbolic: the argument
    # checks compare them without math.isfinite, which a symbolic float does not support.
    criterion = FocalLoss(alpha=0.25, gamma=2.0)

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = criterion(x, t)
        return out

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True, dynamic=True)
    g = torch.Generator().manual_seed(6)
    for n in (5, 9):
        x, t = torch.randn(n, 7, generator=g), torch.randint(-1, 7, (n, 2), generator=g)
        torch.testing.assert_close(compiled(x, t), fn(x, t))


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
