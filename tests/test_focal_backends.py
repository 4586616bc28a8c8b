"""The loss backends: agreement, blocks and threads, item ranges, in-place gradients, dispatch.

The compiled CPU kernel (``native``) and the torch backend evaluate the same formulas: they must
agree to float32 rounding on every input, and each must give results that do not depend on its
block size or the number of threads.
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT, available_backends, backend
from focalrec import SlowPathWarning, show_config, sigmoid_focal_loss, use_backend
from focalrec._focal import blocks, native, op, torch_kernel
from focalrec._focal.inputs import FocalInputs
from focalrec.losses import REDUCTIONS

needs_native = pytest.mark.skipif(
    native.load() is None, reason=f"no compiled kernel here: {native.unavailable()}"
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
    with use_backend("torch"):
        assert op.backend_name(_inputs(x32)) == "torch"
        with use_backend("auto"):  # blocks nest
            assert op.backend_name(_inputs(x32)) == expected
        assert op.backend_name(_inputs(x32)) == "torch"
    assert op.backend_name(_inputs(x32)) == expected
    if native.load() is not None:
        with (
            use_backend("native"),
            pytest.raises(
                ValueError,
                match=r"focalrec.use_backend\('native'\) does not apply: the native backend takes "
                r"float32 CPU logits, got torch.float64",
            ),
        ):
            sigmoid_focal_loss(x64, torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match=r"`name` must be one of .*got 'fast'"):
        use_backend("fast").__enter__()
    with pytest.raises(TypeError, match=r"`name` must be a str"):
        use_backend(None).__enter__()  # type: ignore[arg-type]


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "FOCALREC_BACKEND"} | env
    return subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300
    )


def test_the_environment_is_read_once_and_use_backend_overrides_it() -> None:
    code = (
        "import os, torch, focalrec\n"
        "from focalrec._focal import op\n"
        "from focalrec._focal.inputs import FocalInputs\n"
        "inp = FocalInputs(torch.zeros(2, 3), None, None, 0.25, None, 2.0, None, None)\n"
        "first = op.backend_name(inp)\n"
        "os.environ['FOCALREC_BACKEND'] = 'native'\n"  # read once: no effect now
        "with focalrec.use_backend('auto'):\n"
        "    inner = op.backend_name(inp)\n"
        "print(first, op.backend_name(inp), inner != 'torch' or inner)\n"
    )
    done = _run(code, FOCALREC_BACKEND="torch")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["torch", "torch"]


def test_an_invalid_environment_value_is_an_error_naming_it() -> None:
    code = (
        "import torch, focalrec\n"
        "focalrec.sigmoid_focal_loss(torch.zeros(2, 3), torch.tensor([[0], [1]]))\n"
    )
    done = _run(code, FOCALREC_BACKEND="fast")
    assert done.returncode != 0
    assert "ValueError: FOCALREC_BACKEND must be one of" in done.stderr
    assert "got 'fast'" in done.stderr


def test_without_a_compiler_the_torch_backend_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "_compiler", lambda: None)
    assert native._load() == "no C compiler found (set CC, or install cc, gcc or clang)"
    # As the process sees it once loading failed: auto takes the torch backend, and forcing
    # the kernel says why it cannot.
    monkeypatch.setattr(native, "_tried", True)
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_reason", "no C compiler found")
    monkeypatch.setattr(op, "_warned", set())
    x = torch.zeros(2, 3, requires_grad=True)
    with pytest.warns(SlowPathWarning, match="no C compiler found"):
        assert op.backend_name(_inputs(x)) == "torch"
    sigmoid_focal_loss(x, torch.tensor([[0], [1]])).backward()
    with (
        use_backend("native"),
        pytest.raises(
            RuntimeError, match=r"the native backend is not available here \(no C compiler found"
        ),
    ):
        sigmoid_focal_loss(x, torch.tensor([[0], [1]]))


def test_the_slower_path_is_announced_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # As the process sees it once loading failed: the first call on the torch path warns,
    # naming the reason and the fix; later calls do not; choosing the torch path is silent.
    monkeypatch.setattr(native, "_tried", True)
    monkeypatch.setattr(native, "_library", None)
    monkeypatch.setattr(native, "_reason", "no C compiler found (set CC, or install cc)")
    monkeypatch.setattr(op, "_warned", set())
    x = torch.zeros(2, 3, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            sigmoid_focal_loss(x, torch.tensor([[0], [1]])).backward()
    slow = [w for w in caught if w.category is SlowPathWarning]
    assert len(slow) == 1, [str(w.message) for w in caught]
    message = str(slow[0].message)
    assert "no C compiler found" in message
    assert "FOCALREC_BACKEND=torch" in message
    assert slow[0].filename == __file__  # points at the caller
    monkeypatch.setattr(op, "_warned", set())
    with use_backend("torch"), warnings.catch_warnings():
        warnings.simplefilter("error", SlowPathWarning)
        sigmoid_focal_loss(x, torch.tensor([[0], [1]])).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPathWarning)  # a report, not a call of the loss
        config = show_config(print_out=False)
    row = config["backends"]["float32 CPU"]
    assert row["backend"] == "torch"
    assert "no C compiler found" in row["why_not"]["native"]


def test_show_config_prints_and_returns_the_backends(capsys: pytest.CaptureFixture[str]) -> None:
    config = show_config()
    printed = capsys.readouterr().out
    json.dumps(config)  # plain data, for a bug report
    assert config["focalrec"] in printed
    assert config["torch"] == torch.__version__
    expected = "native" if native.load() is not None else "torch"
    assert config["backends"]["float32 CPU"]["backend"] == expected
    assert f"float32 CPU: {expected}" in printed
    half = config["backends"]["float16/bfloat16 CPU"]
    assert half["backend"] == "torch"
    assert set(half["why_not"]) == {"native", "triton"}
    assert half["why_not"]["native"] == (
        "it takes float32 CPU logits, got torch.float16 logits on cpu"
    )
    cuda = config["backends"]["CUDA"]
    if not torch.cuda.is_available():
        assert cuda["backend"] is None
        assert "no CUDA device" in cuda["why_not"]["triton"]
    kernel = config["cpu_kernel"]
    assert kernel["origin"] == native.origin()
    assert kernel["unavailable"] == native.unavailable()
    assert kernel["cache_folder"] == str(native.cache_folder())
    assert f"cache folder: {kernel['cache_folder']}" in printed


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

    def loaded_from() -> Path | None:
        lib = native._load()
        assert not isinstance(lib, str), lib
        return lib.path

    first = loaded_from()
    assert first is not None
    assert first.parent == cache
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    built = first.stat().st_mtime_ns
    assert loaded_from() == first  # a second load takes the cached build
    assert first.stat().st_mtime_ns == built
    assert not list(cache.glob(".*.tmp"))  # nothing half-written is left
    assert sorted(p.name for p in cache.iterdir()) == [first.name, first.name + ".json"]
    # A cache folder that others may write to is not used: the build goes to a private folder.
    cache.chmod(0o777)
    lib = native._load()
    assert not isinstance(lib, str), lib
    assert lib.path is None
    assert "temporary folder" in lib.origin
    assert "others may write to the cache folder" in lib.origin


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


# --------------------------------------------------------------------------------------------------
# threads: a shared pool that never shuts down under a caller, results that do not depend on them


@contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def _block_elements(name: str, elements: int) -> Iterator[None]:
    module = native if name == "native" else torch_kernel
    old = module.BLOCK_ELEMENTS
    module.BLOCK_ELEMENTS = elements
    try:
        yield
    finally:
        module.BLOCK_ELEMENTS = old


def test_a_smaller_or_larger_pool_request_leaves_the_pool_usable() -> None:
    # The race of bug 1, made deterministic: a call that asks for another number of workers
    # must not shut down the pool that another thread is about to submit to.
    pool = blocks._executor(3)
    assert blocks._executor(1) is pool  # fewer workers: the same pool
    assert pool.submit(lambda: 1).result() == 1
    larger = blocks._executor(5)
    assert larger._max_workers >= 5
    assert pool.submit(lambda: 2).result() == 2  # the replaced pool still takes work
    assert blocks._executor(3) is larger


def test_threads_with_different_block_counts_share_the_pool() -> None:
    # Bug 1's reproducer: with 4 intra-op threads, Python threads whose inputs have different
    # block counts made the shared pool shut down while another thread submitted to it.
    errors: list[BaseException] = []
    inputs = []
    for rows in (1024, 4096):
        g = torch.Generator().manual_seed(rows)
        inputs.append((torch.randn(rows, 256, generator=g), torch.randint(-1, 256, (rows, 4))))
    expected = [sigmoid_focal_loss(x, t) for x, t in inputs]

    def loop(which: int) -> None:
        x, t = inputs[which]
        for _ in range(25):
            try:
                got = sigmoid_focal_loss(x, t)
                assert torch.equal(got, expected[which])
            except BaseException as e:  # reported by the main thread
                errors.append(e)

    with _threads(4):
        workers = [threading.Thread(target=loop, args=(i % 2,)) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert not errors, errors[:3]


@st.composite
def thread_cases(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, str]:
    """Logits, index or soft targets, a weight (none, row, expanded row, full) and a reduction;
    large enough (up to 3 x ATen's grain size) for the divisor's sum to use threads."""
    n, c = draw(st.integers(1, 400)), draw(st.integers(1, 257))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(n, c, generator=g) * 4
    if draw(st.booleans()):
        targets = torch.randint(-1, c, (n, 3), generator=g)
    else:
        targets = torch.rand(n, c, generator=g)
    kind = draw(st.sampled_from(["none", "row", "expanded", "full"]))
    weight = {
        "none": None,
        "row": torch.rand(n, 1, generator=g),
        "expanded": torch.rand(1, c, generator=g).expand(n, c),
        "full": torch.rand(n, c, generator=g),
    }[kind]
    return x, targets, weight, draw(st.sampled_from(REDUCTIONS))


@pytest.mark.parametrize("name", available_backends())
@settings(max_examples=25)
@given(
    case=thread_cases(),
    threads=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    block_elements=st.sampled_from([16, 500, 4096, 1 << 15]),
)
def test_results_are_bit_identical_for_every_thread_count(
    name: str,
    case: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, str],
    threads: list[int],
    block_elements: int,
) -> None:
    x, targets, weight, reduction = case
    results = []
    with backend(name), _block_elements(name, block_elements):
        for n in threads:
            with _threads(n):
                results.append(_loss_and_grad(x, targets, reduction, weight=weight))
    for value, grad in results[1:]:
        assert torch.equal(value, results[0][0]), (value, results[0][0])
        assert torch.equal(grad, results[0][1])


@pytest.mark.parametrize("name", available_backends())
@settings(max_examples=10)
@given(
    cases=st.lists(thread_cases(), min_size=2, max_size=4),
    block_elements=st.sampled_from([64, 4096]),
)
def test_concurrent_calls_give_the_sequential_results(
    name: str,
    cases: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, str]],
    block_elements: int,
) -> None:
    # Python threads calling the loss at once (each with its own block count) get exactly
    # what each call gives alone.
    with backend(name), _block_elements(name, block_elements), _threads(4):
        expected = [_loss_and_grad(x, t, r, weight=w) for x, t, w, r in cases]
        got: list[tuple[torch.Tensor, torch.Tensor] | BaseException | None] = [None] * len(cases)

        def run(i: int) -> None:
            x, t, w, r = cases[i]
            try:
                for _ in range(3):
                    got[i] = _loss_and_grad(x, t, r, weight=w)
            except BaseException as e:  # reported by the main thread
                got[i] = e

        workers = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    for result, (value, grad) in zip(got, expected, strict=True):
        assert isinstance(result, tuple), result
        assert torch.equal(result[0], value)
        assert torch.equal(result[1], grad)


@pytest.mark.parametrize("name", available_backends())
def test_mean_divisor_does_not_depend_on_the_thread_count(name: str) -> None:
    # Bug 6's reproducer: an expanded weight and reduction="mean" gave 0.25460628 on 1 thread and
    # 0.25460356 on 2 (the divisor was a float32 sum split by threads); also a full weight and
    # soft targets over many of ATen's grains, and the positives' count of sum_over_positives.
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1100, 257, generator=g)
    index = torch.randint(-1, 257, (1100, 3), generator=g)
    soft = torch.rand(1100, 257, generator=g)
    weights = [
        torch.rand(1, 257, generator=g).expand(1100, 257),
        torch.rand(1100, 257, generator=g),
    ]
    with backend(name):
        for weight in weights:
            for targets, reduction in (
                (index, "mean"),
                (soft, "mean"),
                (soft, "sum_over_positives"),
            ):
                values = []
                for n in (1, 2, 3, 4):
                    with _threads(n):
                        values.append(
                            sigmoid_focal_loss(x, targets, weight=weight, reduction=reduction)
                        )
                assert all(torch.equal(v, values[0]) for v in values), values
                w64 = weight.double()
                dense = targets.double() if targets.is_floating_point() else None
                if reduction == "mean":
                    divisor = math.fsum(w64.flatten().tolist())
                else:
                    assert dense is not None
                    divisor = math.fsum((dense * w64).flatten().tolist())
                total = sigmoid_focal_loss(x, targets, weight=weight, reduction="sum")
                assert values[0].item() == pytest.approx(total.item() / divisor, rel=2e-6)


# --------------------------------------------------------------------------------------------------
# edge cases of the reproducers


@pytest.mark.parametrize("name", available_backends())
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_input_without_a_unit_column_stride(name: str, reduction: str) -> None:
    # Bug 5: the compiled kernel asserted on the gradient's column stride of an empty input.
    x = torch.zeros(0, 20)[:, ::2].requires_grad_()
    with backend(name):
        out = sigmoid_focal_loss(x, torch.zeros(0, 3, dtype=torch.int64), reduction=reduction)  # type: ignore[arg-type]
        out.sum().backward()
    assert out.shape == ((0, 10) if reduction == "none" else ())
    assert out.sum().item() == 0.0
    assert x.grad is not None
    assert x.grad.shape == (0, 10)


def _reference_grad_t0(x: list[float], gamma: float) -> list[float]:
    """d/dx of sigmoid(x)^gamma softplus(x) (target 0, no alpha) by float64 autograd, in log
    space: exp(gamma logsigmoid(x)) softplus(x)."""
    x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    f = torch.exp(gamma * torch.nn.functional.logsigmoid(x64)) * torch.nn.functional.softplus(x64)
    f.sum().backward()
    assert x64.grad is not None
    return x64.grad.tolist()


@pytest.mark.parametrize("name", available_backends())
def test_huge_gamma_at_saturated_logits(name: str) -> None:
    # Bug 7's reproducer: the torch backend gave [0.9978, 0.9999] (sigmoid(-y) underflows in
    # float32); the float64 gradient is [1.1956, 1.0101].
    x = torch.tensor([89.0, 92.0], requires_grad=True)
    with backend(name):
        sigmoid_focal_loss(x, torch.zeros(2), gamma=1e36, alpha=None, reduction="sum").backward()
    assert x.grad is not None
    torch.testing.assert_close(
        x.grad.double(), torch.tensor([1.1956, 1.0101]).double(), rtol=0, atol=6e-5
    )
    torch.testing.assert_close(
        x.grad.double(),
        torch.tensor(_reference_grad_t0([89.0, 92.0], 1e36), dtype=torch.float64),
        rtol=1e-5,
        atol=0,
    )


@pytest.mark.parametrize("name", available_backends())
@settings(max_examples=40)
@given(
    y=st.floats(60.0, 120.0),
    gamma=st.sampled_from(
        [2.5, 1e20, 1e29, 1e33, 1e36, 1e38, float(torch.finfo(torch.float32).max)]
    ),
    target_one=st.booleans(),
)
def test_gradient_at_saturated_logits_matches_float64(
    name: str, y: float, gamma: float, target_one: bool
) -> None:
    # A logit y against target 0 is the logit -y against target 1: both sides, every gamma.
    y = float(torch.tensor(y))  # a float32 value, so that float64 sees the same input
    x = torch.tensor([-y if target_one else y], requires_grad=True)
    with backend(name):
        sigmoid_focal_loss(
            x, torch.tensor([float(target_one)]), gamma=gamma, alpha=None, reduction="sum"
        ).backward()
    assert x.grad is not None
    expected = _reference_grad_t0([y], gamma)[0] * (-1.0 if target_one else 1.0)
    assert x.grad.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("name", available_backends())
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_infinite_terms_of_both_signs_in_different_blocks(name: str, reduction: str) -> None:
    # Bug 9: with validate_args=False, +inf and -inf terms (a negative weight) in different
    # blocks made the compiled kernel's fsum raise; the sum is NaN, as float addition gives.
    x = torch.zeros(4, 3)
    x[0, 0] = x[3, 0] = float("inf")  # target 0: infinite terms
    weight = torch.ones(4, 3)
    weight[3, 0] = -1.0
    targets = torch.zeros(4, 3)
    with backend(name), _block_elements(name, 3):
        out = sigmoid_focal_loss(
            x, targets, weight=weight, reduction=reduction, validate_args=False
        )  # type: ignore[arg-type]
        none = sigmoid_focal_loss(x, targets, weight=weight, reduction="none", validate_args=False)
    assert math.isnan(out.item())
    assert none[0, 0].item() == math.inf
    assert none[3, 0].item() == -math.inf
    weight[3, 0] = 1.0
    with backend(name), _block_elements(name, 3):
        out = sigmoid_focal_loss(
            x, targets, weight=weight, reduction=reduction, validate_args=False
        )  # type: ignore[arg-type]
    assert out.item() == math.inf
