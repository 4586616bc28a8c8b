"""The prebuilt kernels of a platform wheel: the build, the CPU's variant, the override, agreement.

``prebuilt.build`` is what the wheel's build hook runs; here it compiles the variants into a
temporary folder, which :func:`prebuilt.load` then reads as an installed wheel's ``_kernels``.
Every variant this CPU runs must give the run-time build's values (``-march=native``) to float
rounding: the variants differ only in vector width and fused multiply-adds.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings

from conftest import backend
from focalrec import sigmoid_focal_loss
from focalrec._focal import native, prebuilt
from test_focal_backends import cases

needs_compiler = pytest.mark.skipif(
    sys.platform == "win32" or prebuilt._unix_compiler() is None,
    reason="these tests compile the variants with GCC or clang",
)
pytestmark = needs_compiler

V3_FLAGS = {"avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "abm", "movbe"}
V4_FLAGS = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


def _cpuinfo_flags() -> set[str] | None:
    """The CPU's flags as Linux reports them (features the kernel has enabled), or None."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def _expected_level() -> int | None:
    """The variant level that /proc/cpuinfo implies, independently of focal_cpu_level()."""
    flags = _cpuinfo_flags()
    if flags is None or prebuilt.machine() != "x86_64":
        return None
    if not flags >= V3_FLAGS:
        return 0
    return 2 if flags >= V4_FLAGS else 1


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as a wheel's ``_kernels``: every variant of this machine, built."""
    out = tmp_path_factory.mktemp("kernels")
    files, problems = prebuilt.build(out)
    assert not problems, problems
    assert {f.name for f in files} == {"manifest.json"} | {
        _file(v.name) for v in prebuilt.variants()
    }
    return out


@pytest.fixture
def auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(prebuilt.ENV_VARIANT, raising=False)


@pytest.fixture
def fresh_native(monkeypatch: pytest.MonkeyPatch) -> None:
    """native.py as a new process finds it: nothing loaded or tried yet."""
    for name in ("_library", "_reason", "_prebuilt_note"):
        monkeypatch.setattr(native, name, None)
    monkeypatch.setattr(native, "_tried", False)


def _file(name: str) -> str:
    return f"focal-{name}{prebuilt._suffix(sys.platform)}"


def _level(kernels: Path) -> int:
    baseline = ctypes.CDLL(str(kernels / _file("baseline")))
    return prebuilt.cpu_level(baseline)


def _runnable(kernels: Path) -> list[str]:
    level = _level(kernels)
    return [v.name for v in prebuilt.variants() if v.level <= level]


def test_math_flags_are_the_run_time_builds() -> None:
    run_time = tuple(f for f in native._FLAGS if f not in ("-fPIC", "-shared"))
    assert run_time == prebuilt.MATH_FLAGS
    for variant in prebuilt.variants("x86_64", "linux") + prebuilt.variants("arm64", "linux"):
        for flags in variant.flags:
            assert "-march=native" not in flags


def test_variants_per_architecture() -> None:
    assert [v.name for v in prebuilt.variants("x86_64", "linux")] == ["baseline", "avx2", "avx512"]
    assert [v.name for v in prebuilt.variants("AMD64", "win32")] == ["baseline", "avx2", "avx512"]
    assert [v.msvc for v in prebuilt.variants("AMD64", "win32")] == [
        (),
        ("/arch:AVX2",),
        ("/arch:AVX512",),
    ]
    assert [v.name for v in prebuilt.variants("aarch64", "linux")] == ["baseline"]
    assert prebuilt.variants("arm64", "darwin")[0].flags == ((),)  # macOS arm64 starts at the M1
    assert prebuilt.machine("AMD64") == prebuilt.machine("x86_64") == "x86_64"
    assert prebuilt.machine("aarch64") == prebuilt.machine("arm64") == "arm64"


def test_manifest_names_the_source_and_each_variants_flags(kernels: Path) -> None:
    manifest = json.loads((kernels / "manifest.json").read_text())
    assert manifest["arch"] == prebuilt.machine()
    assert manifest["source_sha256"] == hashlib.sha256(prebuilt.SOURCE.read_bytes()).hexdigest()
    for variant in prebuilt.variants():
        flags = manifest["variants"][variant.name]["flags"].split()
        assert set(prebuilt.MATH_FLAGS) <= set(flags)
        assert "-march=native" not in flags
        assert (kernels / manifest["variants"][variant.name]["file"]).is_file()


def test_cpu_level_matches_proc_cpuinfo(kernels: Path) -> None:
    expected = _expected_level()
    if expected is None:
        pytest.skip("needs Linux on x86-64 (/proc/cpuinfo flags) for an independent reference")
    assert _level(kernels) == expected


@pytest.mark.usefixtures("auto")
def test_load_picks_the_highest_variant_the_cpu_runs(kernels: Path) -> None:
    found = prebuilt.load(native._open, kernels)
    best = _runnable(kernels)[-1]
    assert found.library is not None, found.about
    assert found.about == f"prebuilt {best} kernel {kernels / _file(best)}"
    assert found.shipped
    assert found.library.focal_args_size() == ctypes.sizeof(native._Args)


def test_override_takes_each_runnable_variant(
    kernels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in _runnable(kernels):
        monkeypatch.setenv(prebuilt.ENV_VARIANT, name.upper())
        found = prebuilt.load(native._open, kernels)
        assert found.library is not None, found.about
        assert found.about.startswith(f"prebuilt {name} kernel ")


def test_override_refuses_what_the_cpu_cannot_run(
    kernels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = [v for v in prebuilt.variants() if v.name not in _runnable(kernels)]
    if not refused:
        pytest.skip("this CPU runs every variant")
    for variant in refused:
        monkeypatch.setenv(prebuilt.ENV_VARIANT, variant.name)
        found = prebuilt.load(native._open, kernels)
        assert found.library is None
        assert found.final  # no run-time build in its place
        assert found.about.startswith(f"FOCALREC_KERNEL_VARIANT={variant.name}: this CPU lacks")
        assert variant.needs in found.about


def test_override_refuses_unknown_and_unshipped_variants(
    kernels: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(prebuilt.ENV_VARIANT, "sse9")
    with pytest.raises(ValueError, match=r"FOCALREC_KERNEL_VARIANT must be one of .*got 'sse9'"):
        prebuilt.load(native._open, kernels)
    monkeypatch.setenv(prebuilt.ENV_VARIANT, "baseline")
    found = prebuilt.load(native._open, tmp_path)  # a source install: no _kernels
    assert (found.library, found.shipped, found.final) == (None, False, True)
    assert "ships no prebuilt kernel" in found.about
    # A wheel that shipped only the baseline.
    only = tmp_path / "only"
    shutil.copytree(kernels, only)
    manifest = json.loads((only / "manifest.json").read_text())
    manifest["variants"] = {"baseline": manifest["variants"]["baseline"]}
    (only / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv(prebuilt.ENV_VARIANT, "avx2")
    found = prebuilt.load(native._open, only)
    assert found.library is None
    assert found.final
    assert found.about == (
        f"FOCALREC_KERNEL_VARIANT=avx2: not shipped for {prebuilt.machine()} (shipped: baseline)"
    )
    monkeypatch.setenv(prebuilt.ENV_VARIANT, "auto")
    assert prebuilt.load(native._open, only).about.startswith("prebuilt baseline kernel ")


@pytest.mark.usefixtures("auto")
def test_unusable_kernels_are_reported_not_loaded(kernels: Path, tmp_path: Path) -> None:
    assert prebuilt.load(native._open, tmp_path) == prebuilt.Loaded(
        None, "this installation ships no prebuilt kernel", shipped=False
    )
    bad = tmp_path / "bad"
    shutil.copytree(kernels, bad)
    manifest = json.loads((bad / "manifest.json").read_text())

    def found_with(change: dict[str, object]) -> prebuilt.Loaded:
        (bad / "manifest.json").write_text(json.dumps({**manifest, **change}))
        found = prebuilt.load(native._open, bad)
        assert found.library is None
        assert found.shipped
        assert not found.final  # the run-time build may still serve
        return found

    assert "built from another native.c" in found_with({"source_sha256": "0" * 64}).about
    assert "built for riscv64" in found_with({"arch": "riscv64"}).about
    assert "reading" in found_with({"variants": None}).about
    assert "reading" in found_with({"variants": {"baseline": "focal-baseline.so"}}).about
    outside = {"baseline": {"file": "../focal-baseline.so"}}
    assert "names a file outside" in found_with({"variants": outside}).about
    (bad / "manifest.json").write_text("{not json")
    assert "reading" in prebuilt.load(native._open, bad).about
    # A baseline that is no library at all.
    (bad / "manifest.json").write_text(json.dumps(manifest))
    (bad / _file("baseline")).write_bytes(b"not a shared library\n" * 100)
    assert prebuilt.load(native._open, bad).about.startswith("loading ")


@pytest.mark.usefixtures("auto")
def test_a_broken_higher_variant_falls_back_to_the_baseline(kernels: Path, tmp_path: Path) -> None:
    best = _runnable(kernels)[-1]
    if best == "baseline":
        pytest.skip("this CPU runs the baseline variant only")
    broken = tmp_path / "broken"
    shutil.copytree(kernels, broken)
    (broken / _file(best)).write_bytes(b"\0" * 4096)
    found = prebuilt.load(native._open, broken)
    assert found.library is not None
    assert found.about.startswith(f"prebuilt baseline kernel {broken / _file('baseline')} (the")


@contextmanager
def _serving(library: ctypes.CDLL) -> Iterator[None]:
    """The loss's native backend runs ``library`` inside the block."""
    saved = native._library, native._tried, native._reason
    native._library, native._tried, native._reason = library, True, None
    try:
        with backend("native"):
            yield
    finally:
        native._library, native._tried, native._reason = saved


def _loss_and_grad(
    x: torch.Tensor, targets: torch.Tensor, kwargs: dict[str, object], reduction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    xs = x.clone().requires_grad_()
    out = sigmoid_focal_loss(xs, targets, reduction=reduction, **kwargs)  # type: ignore[arg-type]
    out.sum().backward()
    assert xs.grad is not None
    return out.detach(), xs.grad


def _close(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = 1e-30) -> None:
    """1e-6 relative (about 8 float32 ulps); ``atol`` where rounding is not relative to the result.

    Values are sums of non-negative terms: relative, with a floor for subnormal terms only.
    A gradient subtracts terms of up to the term's factor f = alpha_t * weight * scale times
    (1 + gamma) (``p (1 - t) - (1 - p) t`` for a soft target): where they cancel, the variants'
    fused multiply-adds round differently by a few ulps of those terms, not of the result.
    """
    torch.testing.assert_close(a, b, rtol=1e-6, atol=atol, msg=lambda m: f"{what}: {m}")


def _grad_atol(x: torch.Tensor, kwargs: dict[str, object], reduction: str) -> float:
    """8 float32 ulps of the largest term a gradient element subtracts (see :func:`_close`)."""
    weight = kwargs.get("weight")
    w = torch.as_tensor(1.0 if weight is None else weight).float().abs()
    w_max = max(float(w.max()) if w.numel() else 0.0, 1.0)
    gamma = float(kwargs.get("gamma", 2.0))  # type: ignore[arg-type]
    scale = 1.0 / max(x.numel(), 1) if reduction == "mean" else 1.0
    return 8 * torch.finfo(torch.float32).eps * (1.0 + gamma) * w_max * scale


@pytest.fixture(scope="module")
def libraries(kernels: Path) -> dict[str, ctypes.CDLL]:
    """Every variant this CPU runs, loaded, and the run-time build (-march=native)."""
    runtime = native._load()
    if isinstance(runtime, str):
        pytest.skip(f"no run-time build to compare with: {runtime}")
    found = {}
    for name in _runnable(kernels):
        lib = native._open(kernels / _file(name))
        assert not isinstance(lib, str), lib
        found[name] = lib
    return {"run-time": runtime, **found}


@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_every_runnable_variant_matches_the_run_time_build(
    libraries: dict[str, ctypes.CDLL],
    case: tuple[torch.Tensor, torch.Tensor, dict[str, object], str],
) -> None:
    x, targets, kwargs, reduction = case
    results = {}
    for name, library in libraries.items():
        with _serving(library):
            results[name] = _loss_and_grad(x, targets, kwargs, reduction)
    value, grad = results.pop("run-time")
    atol = _grad_atol(x, kwargs, reduction)
    for name, (v, g) in results.items():
        _close(v, value, f"{name} values")
        _close(g, grad, f"{name} gradients", atol)


def test_large_sums_match_the_run_time_build(libraries: dict[str, ctypes.CDLL]) -> None:
    """A sum over many tiles and blocks (the variants' vector widths split it differently)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1000, generator=g) * 3
    targets = torch.randint(-1, 1000, (300, 3), generator=g)
    results = {}
    for name, library in libraries.items():
        with _serving(library):
            results[name] = _loss_and_grad(x, targets, {"gamma": 2.0, "alpha": 0.25}, "mean")
    value, grad = results.pop("run-time")
    atol = _grad_atol(x, {"gamma": 2.0}, "mean")
    for name, (v, gr) in results.items():
        _close(v, value, f"{name} value")
        _close(gr, grad, f"{name} gradient", atol)


@pytest.mark.usefixtures("auto", "fresh_native")
def test_native_serves_the_prebuilt_kernel_without_a_compiler_or_cache(
    kernels: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FOCALREC_CACHE_DIR", str(cache))
    monkeypatch.setenv("CC", "/bin/false")
    monkeypatch.setattr(native, "_compiler", lambda: None)
    monkeypatch.setattr(prebuilt, "KERNELS", kernels)
    best = _runnable(kernels)[-1]
    assert native.load() is not None
    assert native.origin() == f"prebuilt {best} kernel {kernels / _file(best)}"
    assert native.unavailable() is None
    x = torch.randn(4, 7, requires_grad=True)
    with backend("native"):
        sigmoid_focal_loss(x, torch.tensor([[0], [3], [6], [-1]]), reduction="sum").backward()
    assert not cache.exists()  # nothing was built, not even the cache folder made


@pytest.mark.usefixtures("auto", "fresh_native")
def test_native_reports_a_refused_override_and_does_not_build(
    kernels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = kernels.parent / "no-such-kernels"  # a source install
    monkeypatch.setattr(prebuilt, "KERNELS", missing)

    def no_build() -> None:
        raise AssertionError("the run-time build was tried")

    monkeypatch.setattr(native, "_compiler", no_build)
    monkeypatch.setenv(prebuilt.ENV_VARIANT, "baseline")
    assert native.load() is None
    assert native.origin() is None
    assert native.unavailable() == (
        "FOCALREC_KERNEL_VARIANT=baseline: this installation ships no prebuilt kernel "
        "(a source install)"
    )
    assert not missing.exists()


@pytest.mark.usefixtures("auto", "fresh_native")
def test_native_builds_at_run_time_when_the_shipped_kernels_do_not_load(
    kernels: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if isinstance(native._load(), str):
        pytest.skip("no run-time build here")
    bad = tmp_path / "bad"
    shutil.copytree(kernels, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    (bad / "manifest.json").write_text(json.dumps({**manifest, "arch": "riscv64"}))
    monkeypatch.setattr(prebuilt, "KERNELS", bad)
    assert native.load() is not None
    text = native.origin()
    assert text is not None
    assert text.startswith("built at run time")
    assert text.endswith(
        "(prebuilt kernel: the prebuilt kernels are built for riscv64, "
        f"this machine is {prebuilt.machine()})"
    )


@pytest.mark.usefixtures("fresh_native")
def test_the_loss_rejects_an_unknown_variant_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(prebuilt.ENV_VARIANT, "avx-512")
    x = torch.randn(2, 5)
    with pytest.raises(ValueError, match=r"FOCALREC_KERNEL_VARIANT must be one of .*'avx-512'"):
        sigmoid_focal_loss(x, torch.tensor([[1], [-1]]))
    monkeypatch.setenv(prebuilt.ENV_VARIANT, "auto")
    sigmoid_focal_loss(x, torch.tensor([[1], [-1]]))  # the process recovers: nothing was cached
