"""The Triton backend against float64 references and the torch backend.

Without CUDA the kernel runs on CPU tensors in Triton's interpreter, which ``tests/conftest.py``
turns on (``TRITON_INTERPRET=1``) before Triton is imported; with CUDA the same tests run the
compiled kernel on the GPU. The interpreter is slow (each program runs its tile op by op in
numpy): shapes are small and most blocks fit in one program; the tests that need many programs
shrink the tiles. References are computed on the CPU in float64.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings

import focalrec
from focalrec import index_list_to_dense, sigmoid_focal_loss
from focalrec._focal import op, torch_kernel, triton_kernel
from focalrec._focal.inputs import FocalInputs
from test_losses import mp_focal_and_grad, problems, reduce_reference, reference

pytest.importorskip("triton", reason="triton is not installed (the test extra installs it)")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DEVICE.type == "cpu" and not triton_kernel.interpreting():
    pytest.skip(
        "no GPU, and TRITON_INTERPRET=1 is not set (tests/conftest.py sets it unless the "
        "environment sets TRITON_INTERPRET)",
        allow_module_level=True,
    )


def _interpreter_defect() -> str | None:
    """The known defect of older Triton interpreters (before 3.9 at the latest: 3.2 has it) under
    NumPy >= 2.4: a loop over a runtime bound fails. Any other error is the kernel's and fails."""
    probe = FocalInputs(torch.zeros(1, 1), None, torch.zeros(1, 1, dtype=torch.long), None, None,
                        2.0, None, None)  # fmt: skip
    try:
        triton_kernel.forward(probe, elementwise=False, need_grad=False)
    except Exception as e:
        if "only 0-dimensional arrays can be converted to Python scalars" in str(e):
            return str(e)
        raise
    return None


if DEVICE.type == "cpu" and (defect := _interpreter_defect()) is not None:
    import triton

    pytest.skip(
        f"Triton {triton.__version__}'s interpreter cannot run loops over a runtime bound with "
        f"this NumPy ({defect}); Triton 3.9 runs them",
        allow_module_level=True,
    )

# The interpreter evaluates both sides of every tl.where in numpy: the side not taken may be
# inf * 0 (the kernel's formulas are written for that).
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

GAMMAS = [0.0, 0.5, 1.0, 2.0, 2.5]
TARGET_KINDS = ["index", "float", "bool", "soft"]


@pytest.fixture(autouse=True)
def triton_backend() -> Iterator[None]:
    """The public functions take the Triton backend, for this test only."""
    with focalrec.use_backend("triton"):
        yield


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles of 4 x 16 logits, so that a small block spans programs in both directions."""
    monkeypatch.setattr(triton_kernel, "TILE_ELEMENTS", 64)
    monkeypatch.setattr(triton_kernel, "MAX_BLOCK_C", 16)


def make_targets(
    kind: str, n: int, c: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of ``kind`` and the same targets as a dense float64 tensor.

    Index lists hold padding and repeats (row 0 is ``[3, 3, -1, 1]``); soft targets hold some
    exact 0s and 1s.
    """
    if kind == "index":
        index = torch.randint(-1, c, (n, 4), generator=g)
        index[0] = torch.tensor([3, 3, -1, 1])
        return index, index_list_to_dense(index, c, dtype=torch.float64)
    if kind == "soft":
        soft = torch.rand(n, c, generator=g)
        soft[0, :4] = torch.tensor([0.0, 1.0, 0.5, 1.0])
        return soft, soft.double()
    hard = torch.rand(n, c, generator=g) < 0.2
    return (hard if kind == "bool" else hard.float()), hard.double()


def inputs(x: torch.Tensor, targets: torch.Tensor, **kwargs: object) -> FocalInputs:
    """The block ``x`` against ``targets`` (index list or dense); ``kwargs`` set other fields."""
    sparse = not (targets.is_floating_point() or targets.dtype == torch.bool)
    fields: dict[str, object] = {
        "logits": x,
        "dense": None if sparse else targets,
        "index": targets if sparse else None,
        "alpha": None,
        "alpha_vec": None,
        "gamma": 2.0,
        "weight": None,
        "scale": None,
        "col_offset": 0,
    }
    fields.update(kwargs)
    for name, value in fields.items():
        if isinstance(value, torch.Tensor):
            fields[name] = value.to(DEVICE)
    return FocalInputs(**fields)  # type: ignore[arg-type]


def both(inp: FocalInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Elementwise values, gradient and sum from the Triton kernel (two launches), on the CPU."""
    values, grad = triton_kernel.forward(inp, elementwise=True, need_grad=True)
    total, no_grad = triton_kernel.forward(inp, elementwise=False, need_grad=False)
    assert grad is not None
    assert no_grad is None
    assert total.shape == ()
    assert values.dtype == total.dtype == torch.float32
    assert grad.dtype == inp.logits.dtype
    assert values.device == grad.device == total.device == inp.logits.device
    return values.cpu(), grad.cpu(), total.cpu()


def by_torch(inp: FocalInputs, need_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Elementwise values and gradient from the torch backend, on the CPU."""
    values, grad = torch_kernel.forward(inp, elementwise=True, need_grad=need_grad)
    return values.cpu(), None if grad is None else grad.cpu()


def float64_reference(
    x: torch.Tensor, t: torch.Tensor, alpha: float | torch.Tensor | None, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise values and their gradient from the paper's formula in float64 (autograd)."""
    xr = x.double().requires_grad_()
    expected = reference(xr, t, alpha, gamma)
    expected.sum().backward()
    assert xr.grad is not None
    return expected.detach(), xr.grad


# ------------------------------------------------------------------ values and gradients


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_matches_float64_reference_and_torch_backend(kind: str, gamma: float) -> None:
    g = torch.Generator().manual_seed(0)
    n, c = 5, 37
    x = torch.randn(n, c, generator=g) * 4
    targets, t = make_targets(kind, n, c, g)
    inp = inputs(x, targets, alpha=0.25, gamma=gamma)
    values, grad, total = both(inp)
    expected, expected_grad = float64_reference(x, t, 0.25, gamma)
    torch.testing.assert_close(values.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-6)
    assert total.item() == pytest.approx(expected.sum().item(), rel=1e-5)
    torch_values, torch_grad = by_torch(inp)
    torch.testing.assert_close(values, torch_values)
    torch.testing.assert_close(grad, torch_grad)


@pytest.mark.parametrize("alpha", [None, "per-class"])
@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_alpha_none_and_per_class(kind: str, alpha: str | None) -> None:
    g = torch.Generator().manual_seed(1)
    n, c = 4, 29
    x = torch.randn(n, c, generator=g) * 3
    targets, t = make_targets(kind, n, c, g)
    a = torch.rand(c, generator=g) if alpha else None
    inp = inputs(x, targets, alpha_vec=a, gamma=1.5)
    values, grad, total = both(inp)
    expected, expected_grad = float64_reference(x, t, a, 1.5)
    torch.testing.assert_close(values.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-6)
    assert total.item() == pytest.approx(expected.sum().item(), rel=1e-5)


@pytest.mark.parametrize("gamma", [*GAMMAS, 1e-50])  # 1e-50 rounds to 0 in float32
@pytest.mark.parametrize("t", [0.0, 1.0, 0.3])
def test_saturated_logits_match_high_precision(t: float, gamma: float) -> None:
    xs = [-1e4, -100.0, -30.0, -17.0, 17.0, 30.0, 100.0, 1e4]
    x = torch.tensor([xs])
    # t = 1 as an index list (every column), t = 0 as dense float targets, t = 0.3 soft.
    targets = torch.tensor([list(range(len(xs)))]) if t == 1.0 else torch.full_like(x, t)
    inp = inputs(x, targets, alpha=0.25, gamma=gamma)
    values, grad, total = both(inp)
    assert torch.isfinite(values).all()
    assert torch.isfinite(grad).all()
    for j, xj in enumerate(xs):
        value, derivative = mp_focal_and_grad(xj, t, 0.25, gamma)
        assert values[0, j].item() == pytest.approx(value, rel=1e-5, abs=1e-37), xj
        assert grad[0, j].item() == pytest.approx(derivative, rel=1e-5, abs=1e-37), xj
    assert total.item() == pytest.approx(math.fsum(values[0].double().tolist()), rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 2.5])
def test_infinite_logits_give_the_limits(gamma: float) -> None:
    inf = math.inf
    x = torch.tensor([[inf, -inf, inf, -inf, inf, -inf]])
    dense = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.3, 0.3]])
    # Target 0: inf loss and gradient 1 at +inf, 0 and 0 at -inf; target 1 mirrored (times
    # alpha_t). A hard tile (dense or index list) and a tile holding soft targets agree.
    hard = (dense[:, :4], torch.tensor([[2, 3]]))
    for inp in [inputs(x[:, :4], t, alpha=0.25, gamma=gamma) for t in hard] + [
        inputs(x, dense, alpha=0.25, gamma=gamma)
    ]:
        values, grad, _ = both(inp)
        assert values[0, :4].tolist() == [inf, 0.0, 0.0, inf]
        assert grad[0, :4].tolist() == [0.75, 0.0, 0.0, -0.25]
        torch_values, torch_grad = by_torch(inp)
        torch.testing.assert_close(values, torch_values)
        torch.testing.assert_close(grad, torch_grad)
    # t = 0.3: BCE = inf at both ends; q = 0.7 at +inf, 0.3 at -inf.
    a_t = 0.25 * 0.3 + 0.75 * 0.7
    assert values[0, 4:].tolist() == [inf, inf]
    assert grad[0, 4].item() == pytest.approx(a_t * 0.7**gamma * 0.7, rel=1e-6)
    assert grad[0, 5].item() == pytest.approx(-a_t * 0.3**gamma * 0.3, rel=1e-6)


def test_infinite_bce_stays_infinite_where_q_to_the_gamma_underflows() -> None:
    # A soft target near 0 at a -inf logit: q = t, q^3 underflows in float32, BCE is inf.
    x = torch.tensor([[-math.inf, 0.0]])
    t = torch.tensor([[5e-20, 0.0]])
    values, grad, _ = both(inputs(x, t, alpha=None, gamma=3.0))
    assert values[0, 0].item() == math.inf
    assert torch.isfinite(grad).all()
    torch_values, _ = by_torch(inputs(x, t, alpha=None, gamma=3.0))
    torch.testing.assert_close(values, torch_values)


def test_zero_factor_gives_zero_whatever_the_logit() -> None:
    x = torch.tensor([[math.inf, -math.inf, math.nan, 1e4, 2.0], [math.nan, 0.0, 1.0, 2.0, 3.0]])
    weight = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0, 1.0]])
    for targets in (torch.tensor([[0, 1], [2, -1]]), torch.full_like(x, 0.5)):
        values, grad, total = both(inputs(x, targets, weight=weight, gamma=0.5))
        assert (values[weight == 0] == 0).all()
        assert (grad[weight == 0] == 0).all()
        assert torch.isfinite(total)
        torch.testing.assert_close(total, values.sum())
    # alpha = 1 makes every negative's factor 0; alpha = 0 every positive's.
    values, grad, _ = both(inputs(x[:1, :2], torch.tensor([[0]]), alpha=1.0))
    assert values[0, 1].item() == 0.0
    assert grad[0, 1].item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["index", "soft"])
def test_half_precision_logits_are_read_as_they_are(kind: str, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(2)
    n, c = 4, 33
    x = (torch.randn(n, c, generator=g) * 4).to(dtype)
    x[0, :2] = torch.tensor([6e4, -6e4], dtype=dtype)
    targets, t = make_targets(kind, n, c, g)
    inp = inputs(x, targets, alpha=0.25, gamma=0.5)
    values, grad, total = both(inp)
    expected, expected_grad = float64_reference(x, t, 0.25, 0.5)  # of the half logits
    finite = torch.isfinite(expected_grad)
    torch.testing.assert_close(values.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad[finite], expected_grad[finite].to(dtype))
    assert total.item() == pytest.approx(expected.sum().item(), rel=1e-5)
    torch_values, torch_grad = by_torch(inp)
    torch.testing.assert_close(values, torch_values)
    torch.testing.assert_close(grad, torch_grad)


# ------------------------------------------------------------------ the public function


def public(
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    x: torch.Tensor,
    targets: torch.Tensor,
    **kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sigmoid_focal_loss`` and the gradient of its sum, by ``backend``, on the CPU."""
    for name, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            kwargs[name] = value.to(DEVICE)
    xs = x.to(DEVICE, copy=True).requires_grad_()
    with focalrec.use_backend(backend):
        out = sigmoid_focal_loss(xs, targets.to(DEVICE), **kwargs)  # type: ignore[arg-type]
        out.sum().backward()
    assert xs.grad is not None
    return out.detach().cpu(), xs.grad.cpu()


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "sum_over_positives"])
@pytest.mark.parametrize("kind", ["index", "float", "soft"])
def test_every_reduction_through_the_public_function(
    kind: str, reduction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator().manual_seed(3)
    n, c = 6, 21
    x = torch.randn(n, c, generator=g) * 3
    targets, t = make_targets(kind, n, c, g)
    out, grad = public("triton", monkeypatch, x, targets, reduction=reduction)
    torch_out, torch_grad = public("torch", monkeypatch, x, targets, reduction=reduction)
    torch.testing.assert_close(out, torch_out)
    torch.testing.assert_close(grad, torch_grad)
    xr = x.double().requires_grad_()
    expected = reduce_reference(reference(xr, t, 0.25, 2.0), t, reduction)
    expected.sum().backward()
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), xr.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "weight_shape",
    [(6, 1), (21,), (1, 21), (1, 1), (6, 21)],
    ids=["row", "class", "1xC", "1x1", "full"],
)
def test_broadcast_weights_through_the_public_function(
    weight_shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator().manual_seed(4)
    n, c = 6, 21
    x = torch.randn(n, c, generator=g) * 3
    index = torch.randint(-1, c, (n, 3), generator=g)
    weight = torch.rand(weight_shape, generator=g)
    weight.view(-1)[0] = 0.0
    out, grad = public("triton", monkeypatch, x, index, weight=weight)
    torch_out, torch_grad = public("torch", monkeypatch, x, index, weight=weight)
    torch.testing.assert_close(out, torch_out)
    torch.testing.assert_close(grad, torch_grad)
    t = index_list_to_dense(index, c, dtype=torch.float64)
    expected = reduce_reference(reference(x, t, 0.25, 2.0), t, "mean", weight)
    assert out.item() == pytest.approx(expected.item(), rel=1e-5)


def test_zero_weights_hide_infinite_and_nan_logits_through_the_public_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = torch.tensor([[math.inf, 0.5, -1.0], [math.nan, -math.inf, 2.0]])
    weight = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    index = torch.tensor([[1], [0]])
    out, grad = public("triton", monkeypatch, x, index, reduction="sum", weight=weight)
    assert (grad[weight == 0] == 0).all()
    assert torch.isfinite(grad).all()
    kept = reference(torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.0, 0.0, 0.0]), 0.25, 2.0)
    assert out.item() == pytest.approx(kept.sum().item(), rel=1e-6)


# ------------------------------------------------------------------ the kernel's contract


def test_column_offset_with_ids_outside_the_block() -> None:
    """Columns 7..29 of a catalogue of 50 ids: index lists and alpha hold catalogue ids."""
    g = torch.Generator().manual_seed(5)
    n, items, first, c = 5, 50, 7, 23
    full = torch.randn(n, items, generator=g) * 3
    index = torch.randint(-1, items, (n, 6), generator=g)
    index[0] = torch.tensor([0, 6, 7, 7, 29, 30])  # both edges, a repeat, ids on either side
    alpha = torch.rand(items, generator=g)
    whole = inputs(full, index, alpha_vec=alpha, gamma=0.5)
    block = inputs(full[:, first : first + c], index, alpha_vec=alpha, gamma=0.5, col_offset=first)
    expected, expected_grad = by_torch(whole)
    assert expected_grad is not None
    values, grad, total = both(block)
    torch.testing.assert_close(values, expected[:, first : first + c])
    torch.testing.assert_close(grad, expected_grad[:, first : first + c])
    torch.testing.assert_close(total, values.sum())
    torch_values, _ = by_torch(block, need_grad=False)
    torch.testing.assert_close(values, torch_values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_into_the_logits_themselves(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(5, 19, generator=g) * 3).to(device=DEVICE, dtype=dtype)
    index = torch.randint(-1, 19, (5, 3), generator=g)
    expected_total, expected_grad = triton_kernel.forward(inputs(x, index), False, True)
    logits = x.clone()
    total, grad = triton_kernel.forward(inputs(logits, index), False, True, grad_into=logits)
    assert grad is not None
    assert grad.data_ptr() == logits.data_ptr()
    assert torch.equal(logits, expected_grad)
    assert torch.equal(total, expected_total)


@pytest.mark.usefixtures("small_tiles")
@pytest.mark.parametrize("kind", ["index", "float", "soft"])
def test_many_programs_cover_every_element_once_and_are_deterministic(kind: str) -> None:
    g = torch.Generator().manual_seed(7)
    n, c = 7, 37  # tiles of 4 x 16: 2 x 3 programs, ragged at both edges
    x = torch.randn(n, c, generator=g) * 3
    targets, _ = make_targets(kind, n, c, g)
    weight = torch.rand(1, c, generator=g).expand(n, c)
    inp = inputs(x, targets, alpha=0.25, weight=weight, scale=torch.tensor(0.5))
    values, grad, total = both(inp)
    torch_values, torch_grad = by_torch(inp)
    torch.testing.assert_close(values, torch_values)
    torch.testing.assert_close(grad, torch_grad)
    assert total.item() == pytest.approx(values.double().sum().item(), rel=1e-6)
    again, grad_again = triton_kernel.forward(inp, elementwise=False, need_grad=True)
    assert torch.equal(again, total)  # bitwise: partial sums added in a fixed order
    assert torch.equal(grad_again, grad)


def test_empty_blocks_and_empty_index_lists() -> None:
    for shape in ((0, 5), (3, 0)):
        x = torch.zeros(shape)
        for targets in (torch.zeros(shape), torch.zeros(shape[0], 2, dtype=torch.long) - 1):
            values, grad, total = both(inputs(x, targets))
            assert values.shape == grad.shape == shape
            assert total.item() == 0.0
    x = torch.tensor([[2.0, -1.0, 0.0]])
    values, _, _ = both(inputs(x, torch.zeros(1, 0, dtype=torch.long), gamma=1.0))
    torch.testing.assert_close(values.double(), reference(x, torch.zeros(1, 3), None, 1.0))


@settings(max_examples=15)
@given(problems())
def test_hostile_inputs_match_the_torch_backend(
    problem: tuple[torch.Tensor, torch.Tensor, torch.Tensor, object, float],
) -> None:
    x, index, soft, alpha, gamma = problem
    alpha_vec = alpha if isinstance(alpha, torch.Tensor) else None
    a = alpha if isinstance(alpha, float) else None
    for targets in (index, soft):
        inp = inputs(x, targets, alpha=a, alpha_vec=alpha_vec, gamma=gamma)
        values, grad = triton_kernel.forward(inp, elementwise=True, need_grad=True)
        torch_values, torch_grad = by_torch(inp)
        assert grad is not None
        assert torch.isfinite(grad).all()  # values are inf where an inf logit disagrees
        # The kernel forms 1 - alpha from a float32 alpha (as native.c does), the torch backend
        # from the Python float: near alpha = 1 that factor differs by eps32 / (1 - alpha).
        rtol = 1e-5 if a is None or a == 1.0 else max(1e-5, 2.0**-23 / (1.0 - a))
        torch.testing.assert_close(values, torch_values, rtol=rtol, atol=1e-6)
        torch.testing.assert_close(grad, torch_grad, rtol=rtol, atol=1e-6)


# ------------------------------------------------------------------ dispatch


def test_auto_takes_triton_for_accelerator_tensors_only(monkeypatch: pytest.MonkeyPatch) -> None:
    inp = inputs(torch.zeros(2, 3), torch.tensor([[0], [1]]))
    assert op.backend_name(inp) == "triton"  # forced by the fixture
    assert triton_kernel.refusal(inp) is None
    cpu = FocalInputs(torch.zeros(2, 3), torch.zeros(2, 3), None, None, None, 2.0, None, None)
    with focalrec.use_backend("auto"):
        assert op.backend_name(cpu) in ("native", "torch")  # never the interpreter by default
        if DEVICE.type != "cpu":
            assert op.backend_name(inp) == "triton"


def test_forced_backend_says_why_it_does_not_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    x64 = inputs(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3))
    with pytest.raises(
        ValueError, match=r"float32, float16 or bfloat16 logits, got torch\.float64"
    ):
        op.backend_name(x64)
    cpu = FocalInputs(torch.zeros(2, 3), torch.zeros(2, 3), None, None, None, 2.0, None, None)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        op.backend_name(cpu)
    monkeypatch.setattr(triton_kernel, "unavailable", lambda: "`import triton` failed (test)")
    with pytest.raises(
        RuntimeError, match=r"the triton backend is not available here \(`import triton` failed"
    ):
        op.backend_name(cpu)


def test_importing_focalrec_does_not_import_triton() -> None:
    code = "import sys, focalrec; sys.exit('triton' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_value_only_calls_skip_the_gradient() -> None:
    x = torch.randn(3, 8)
    total, grad = triton_kernel.forward(inputs(x, torch.tensor([[1], [2], [-1]])), False, False)
    assert grad is None
    expected, _ = torch_kernel.forward(inputs(x, torch.tensor([[1], [2], [-1]])), False, False)
    torch.testing.assert_close(total, expected)


def test_dense_targets_in_any_float_dtype() -> None:
    x = torch.randn(3, 8)
    t = torch.rand(3, 8, dtype=torch.float64)
    values, _, _ = both(inputs(x, t))
    expected, _ = by_torch(inputs(x, t), need_grad=False)
    torch.testing.assert_close(values, expected)
