"""Shared test configuration: hypothesis profiles and depth, Triton's interpreter, and the optional
real challenge data.

``FOCALREC_HYPOTHESIS_DEPTH=N`` (an integer >= 1, default 1) multiplies the number of examples of
every hypothesis property in the suite by ``N``, whether the test fixes its own ``max_examples``
or takes the profile's (see ``docs/contributing.md``: run it with 20 before a change to the
numerics lands).

On a machine without CUDA, ``TRITON_INTERPRET=1`` is set here (unless the environment sets it),
before anything imports Triton: Triton decides at import whether its own library functions run
in the interpreter, and the Triton backend's tests (``tests/test_triton_kernel.py``) run the
kernel on CPU tensors in the interpreter. Nothing else in the suite runs Triton kernels on the
CPU. With CUDA, those tests run the compiled kernel on the GPU instead.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hypothesis import HealthCheck, settings

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "av-challenge"

DEPTH_VARIABLE = "FOCALREC_HYPOTHESIS_DEPTH"


def hypothesis_depth() -> int:
    """The multiplier of every property's examples, from ``FOCALREC_HYPOTHESIS_DEPTH``."""
    raw = os.environ.get(DEPTH_VARIABLE, "1")
    try:
        depth = int(raw)
    except ValueError:
        depth = 0
    if depth < 1:
        raise pytest.UsageError(f"{DEPTH_VARIABLE} must be an integer >= 1, got {raw!r}")
    return depth


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Multiply ``max_examples`` of every hypothesis test by the depth (once per function)."""
    depth = hypothesis_depth()
    if depth == 1:
        return
    seen: set[int] = set()
    for item in items:
        test = getattr(item, "obj", None)
        test = getattr(test, "__func__", test)  # a test method: its function
        current = getattr(test, "_hypothesis_internal_use_settings", None)
        if current is None or id(test) in seen:
            continue
        seen.add(id(test))
        test._hypothesis_internal_use_settings = settings(  # type: ignore[union-attr]
            current, max_examples=current.max_examples * depth
        )


def available_backends() -> list[str]:
    """The loss backends that run here on float32 CPU logits (``FOCALREC_BACKEND`` values)."""
    from focalrec._focal import native

    return ["torch"] + (["native"] if native.load() is not None else [])


def backend(name: str) -> AbstractContextManager[None]:
    """Run the loss on backend ``name`` inside the block (:func:`focalrec.use_backend`)."""
    import focalrec

    return focalrec.use_backend(name)


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module, imported as when it runs as a script: the
    ``benchmarks`` folder on ``sys.path``, so that it finds the shared harness beside it."""
    benchmarks = str(REPO_ROOT / "benchmarks")
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
