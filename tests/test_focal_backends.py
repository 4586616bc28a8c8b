"""The loss backends: agreement, blocks and threads, item ranges, in-place gradients, dispatch.

The compiled CPU kernel (``native``) and the torch backend evaluate the same formulas: they must
agree to float32 rounding on every input, and each must give results that do not depend on its
block size or the number of threads.
"""

from __future__ import annotations

import math
import stat
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT, available_backends, backend
from focalrec import sigmoid_focal_loss
from focalrec._focal import native, op, torch_kernel
from focalrec._focal.inputs import FocalInputs
from focalrec.losses import REDUCTIONS

needs_native = pytest.mark.skipif(
    native.load() is None, reason=f"no compiled kernel here: {native.unavailable_reason()}"
)


def _loss_and_grad(
    x: torch.Tensor, targets: torch.Tensor, reduction: str, **kwargs: object
) -> tuple[torch.Tensor, torch.Tensor]:
    xs = x.clone().requires_grad_()
    out = sigmoid_focal_loss(xs, targets, reduction=reduction, **kwargs)  # type: ignore[arg-type]
    out.sum().backward()
    assert xs.grad is not None
    return out.detach(), xs.grad


@st.composite
def cases(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, dict[str, object], str]:
    """Logits, targets of every kind, alpha, gamma, a broadcast weight and a reduction."""
    n, c = draw(st.integers(0, 6)), draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g) * draw(st.sampled_from([0.5, 4.0, 40.0]))
    kind = draw(st.sampled_from(["index", "float", "bool", "soft"]))
    if kind == "index":
        targets = torch.randint(-1, c, (n, draw(st.integers(0, 5))), generator=g)
    elif kind == "soft":
        targets = torch.rand(n, c, generator=g)
    else:
        targets = torch.rand(n, c, generator=g) < 0.2
        targets = targets if kind == "bool" else targets.float()
    alpha = draw(st.sampled_from([None, 0.25, 0.0, "per-class"]))
    weight = draw(st.sampled_from([None, "row", "column", "full", "mask"]))
    kwargs: dict[str, object] = {
        "alpha": torch.rand(c, generator=g) if alpha == "per-class" else alpha,
        "gamma": draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, 4.0])),
    }
    if weight == "row":
        kwargs["weight"] = torch.rand(n, 1, generator=g)
    elif weight == "column":
        kwargs["weight"] = torch.rand(c, generator=g)
    elif weight == "full":
        kwargs["weight"] = torch.rand(n, c, generator=g) * 3
    elif weight == "mask":
        kwargs["weight"] = torch.rand(n, c, generator=g) < 0.5
    return x, targets, kwargs, draw(st.sampled_from(REDUCTIONS))


@needs_native
@settings(max_examples=80)
@given(cases())
def test_native_and_torch_backends_agree(
    case: tuple[torch.Tensor, torch.Tensor, dict[str, object], str],
) -> None:
    x, targets, kwargs, reduction = case
    with backend("native"):
        value, grad = _loss_and_grad(x, targets, reduction, **kwargs)
    with backend("torch"):
        expected_value, expected_grad = _loss_and_grad(x, targets, reduction, **kwargs)
    torch.testing.assert_close(value, expected_value, rtol=2e-5, atol=1e-6)
    scale = expected_grad.abs().amax() if expected_grad.numel() else torch.tensor(0.0)
    torch.testing.assert_close(grad, expected_grad, rtol=2e-5, atol=1e-6 * float(scale) + 1e-9)


@pytest.mark.parametrize("name", available_backends())
@pytest.mark.parametrize("block_elements", [1, 7, 40, 1 << 16])
def test_block_size_does_not_change_results(
    monkeypatch: pytest.MonkeyPatch, name: str, block_elements: int
) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 9, generator=g) * 3
    index = torch.randint(-1, 9, (37, 4), generator=g)
    weight = torch.rand(37, 9, generator=g)
    soft = torch.rand(37, 9, generator=g)
    module = native if name == "native" else torch_kernel
    with backend(name):
        for reduction in REDUCTIONS:
            expected = [_loss_and_grad(x, t, reduction, weight=weight) for t in (index, soft)]
            with monkeypatch.context() as patch:
                patch.setattr(module, "BLOCK_ELEMENTS", block_elements)
                for t, (value, grad) in zip((index, soft), expected, strict=True):
                    got_value, got_grad = _loss_and_grad(x, t, reduction, weight=weight)
                    torch.testing.assert_close(got_value, value, rtol=1e-6, atol=1e-7)
                    torch.testing.assert_close(got_grad, grad, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", available_backends())
def test_thread_count_does_not_change_results(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    module = native if name == "native" else torch_kernel
    monkeypatch.setattr(module, "BLOCK_ELEMENTS", 16)  # many blocks, so threads are used
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g) * 4
    index = torch.randint(-1, 8, (64, 3), generator=g)
    threads = torch.get_num_threads()
    try:
        with backend(name):
            torch.set_num_threads(1)
            one = _loss_and_grad(x, index, "mean")
            torch.set_num_threads(max(threads, 3))
            many = _loss_and_grad(x, index, "mean")
            again = _loss_and_grad(x, index, "mean")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0])  # block sums are added in block order
    assert torch.equal(one[1], many[1])
    assert torch.equal(many[0], again[0])


def _inputs(x: torch.Tensor, **kwargs: object) -> FocalInputs:
    fields: dict[str, object] = {
        "dense": None,
        "index": None,
        "alpha": 0.25,
        "alpha_vec": None,
        "gamma": 2.0,
        "weight": None,
        "scale": None,
    }
    fields.update(kwargs)
    return FocalInputs(logits=x, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", available_backends())
def test_item_ranges_with_catalogue_ids(name: str) -> None:
    # Columns [lo, hi) evaluated on their own, with col_offset = lo, index lists of catalogue
    # ids (some outside the range) and alpha over the catalogue: the slice of the full result.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(11, 50, generator=g) * 3
    index = torch.randint(-1, 50, (11, 6), generator=g)
    alpha = torch.rand(50, generator=g)
    module = native if name == "native" else torch_kernel
    full_value, full_grad = module.forward(
        _inputs(x, index=index, alpha=None, alpha_vec=alpha), elementwise=True, need_grad=True
    )
    assert full_grad is not None
    for lo, hi in ((0, 7), (7, 33), (33, 50)):
        part = x[:, lo:hi]
        inp = _inputs(part, index=index, alpha=None, alpha_vec=alpha, col_offset=lo)
        value, grad = module.forward(inp, elementwise=True, need_grad=True)
        assert grad is not None
        # Equal up to the last bit that vectorized and scalar code may round differently.
        torch.testing.assert_close(value, full_value[:, lo:hi], rtol=1e-6, atol=0)
        torch.testing.assert_close(grad, full_grad[:, lo:hi], rtol=1e-6, atol=1e-12)
        total, _ = module.forward(inp, elementwise=False, need_grad=False)
        assert total.item() == pytest.approx(full_value[:, lo:hi].double().sum().item(), rel=1e-6)


@pytest.mark.parametrize("name", available_backends())
def test_gradient_written_in_place_over_the_logits(name: str) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(23, 300, generator=g) * 5
    soft = torch.rand(23, 300, generator=g)
    module = native if name == "native" else torch_kernel
    for targets in ({"index": torch.randint(-1, 300, (23, 4), generator=g)}, {"dense": soft}):
        total, grad = module.forward(_inputs(x, **targets), elementwise=False, need_grad=True)
        buffer = x.clone()
        total_in_place, same = module.forward(
            _inputs(buffer, **targets), elementwise=False, need_grad=True, grad_into=buffer
        )
        assert same is not None
        assert same.data_ptr() == buffer.data_ptr()
        assert torch.equal(buffer, grad)
        assert torch.equal(total_in_place, total)


def test_backend_choice_and_forcing(monkeypatch: pytest.MonkeyPatch) -> None:
    x32, x64 = torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64)
    expected = "native" if native.load() is not None else "torch"
    assert op.backend_name(_inputs(x32)) == expected
    assert op.backend_name(_inputs(x64)) == "torch"
    assert op.backend_name(_inputs(x32.half())) == "torch"
    monkeypatch.setenv("FOCALREC_BACKEND", "torch")
    assert op.backend_name(_inputs(x32)) == "torch"
    monkeypatch.setenv("FOCALREC_BACKEND", "native")
    with pytest.raises(ValueError, match=r"FOCALREC_BACKEND=native takes float32 CPU logits"):
        sigmoid_focal_loss(x64, torch.tensor([[0], [1]]))
    monkeypatch.setenv("FOCALREC_BACKEND", "fast")
    with pytest.raises(ValueError, match=r"FOCALREC_BACKEND must be one of .*got 'fast'"):
        sigmoid_focal_loss(x32, torch.tensor([[0], [1]]))


def test_without_a_compiler_the_torch_backend_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_compiler", lambda: None)
    assert native._load() == "no C compiler found (set CC, or install cc, gcc or clang)"
    # As the process sees it once loading failed: auto takes the torch backend, and forcing
    # the kernel says why it cannot.
    monkeypatch.setattr(native, "_tried", True)
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_reason", "no C compiler found")
    x = torch.zeros(2, 3, requires_grad=True)
    assert op.backend_name(_inputs(x)) == "torch"
    sigmoid_focal_loss(x, torch.tensor([[0], [1]])).backward()
    monkeypatch.setenv("FOCALREC_BACKEND", "native")
    with pytest.raises(RuntimeError, match=r"kernel is not available here \(no C compiler found"):
        sigmoid_focal_loss(x, torch.tensor([[0], [1]]))


def test_a_failing_compiler_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FOCALREC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_compiler", lambda: [sys.executable, "-c", "raise SystemExit(3)"])
    reason = native._load()
    assert isinstance(reason, str)
    assert "failed" in reason
    assert not list(tmp_path.iterdir())  # nothing half-written is left


@needs_native
def test_kernel_cache_is_private_and_reused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FOCALREC_CACHE_DIR", str(cache))

    def loaded_from() -> Path:
        lib = native._load()
        assert not isinstance(lib, str), lib
        return Path(lib._name)

    first = loaded_from()
    assert first.parent == cache
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    built = first.stat().st_mtime_ns
    assert loaded_from() == first  # a second load takes the cached build
    assert first.stat().st_mtime_ns == built
    assert not list(cache.glob(".*.tmp"))  # nothing half-written is left
    # A cache folder that others may write to is not used: the build goes to a private folder.
    cache.chmod(0o777)
    assert loaded_from().parent != cache


@needs_native
def test_kernel_source_ships_with_the_package() -> None:
    assert native.SOURCE.is_file()
    assert native.SOURCE.parent == Path(native.__file__).parent
    assert (REPO_ROOT / "src" / "focalrec" / "_focal" / "native.c").is_file()


@pytest.mark.parametrize("name", available_backends())
def test_no_gradient_work_without_requires_grad(name: str) -> None:
    with backend(name):
        x = torch.randn(3, 4)
        out = sigmoid_focal_loss(x, torch.tensor([[1], [2], [3]]))
        assert out.grad_fn is None
        with torch.no_grad():
            y = torch.randn(3, 4, requires_grad=True)
            assert sigmoid_focal_loss(y, torch.tensor([[1], [2], [3]])).grad_fn is None


@pytest.mark.parametrize("name", available_backends())
def test_large_inputs_span_many_blocks_and_threads(name: str) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(300, 1000, generator=g) * 3
    index = torch.randint(0, 1000, (300, 3), generator=g)
    with backend(name):
        value = sigmoid_focal_loss(x, index, reduction="sum")
    dense = torch.zeros(300, 1000, dtype=torch.float64).scatter_(1, index, 1.0)
    p = torch.sigmoid(x.double())
    q = p * (1 - dense) + (1 - p) * dense
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x.double(), dense, reduction="none")
    expected = ((0.25 * dense + 0.75 * (1 - dense)) * q**2 * bce).sum()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert math.isfinite(value.item())
