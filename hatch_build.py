"""The wheel's build hook: compile the CPU kernel (``native.c``) into the wheel, per CPU variant.

Hatchling runs this for ``python -m build`` / ``pip wheel`` / ``pip install .`` (not for the
sdist, not for an editable install). It compiles the variants of this machine's architecture
with ``focalrec._focal.prebuilt.build`` (GCC or clang here, MSVC on Windows through setuptools),
puts them in ``focalrec/_focal/_kernels/`` and tags the wheel ``py3-none-<platform>``: the
libraries are plain C, with no Python ABI, so one wheel per platform serves every Python.

``FOCALREC_BUILD_KERNELS`` says what to do:

* ``auto`` (the default): ship what compiles; where even the baseline variant does not compile
  (no compiler), warn and build the pure-Python wheel, whose kernel is built at run time.
* ``require``: every variant must compile, else the build fails (the release workflow).
* ``skip``: build the pure-Python wheel.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MODES = ("auto", "require", "skip")


def _prebuilt(root: Path) -> ModuleType:
    """``focalrec._focal.prebuilt`` loaded by its path: focalrec itself needs torch."""
    path = root / "src" / "focalrec" / "_focal" / "prebuilt.py"
    spec = importlib.util.spec_from_file_location("_focalrec_prebuilt_build", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def platform_tag() -> str:
    """This machine's wheel platform tag, as hatchling infers it (linux_x86_64, win_amd64, ...)."""
    from packaging.tags import sys_tags

    # The first tag that is not manylinux / musllinux: auditwheel assigns those after the build.
    plat = next(t.platform for t in sys_tags() if not t.platform.startswith(("manylinux", "musl")))
    if sys.platform == "darwin":
        from hatchling.builders.macos import process_macos_plat_tag

        plat = process_macos_plat_tag(plat, compat=False)
    return plat


def _target_arch() -> str | None:
    """The architecture to build for: macOS's ARCHFLAGS when it names one, else this machine's."""
    if sys.platform != "darwin":
        return None
    archs = re.findall(r"-arch (\S+)", os.environ.get("ARCHFLAGS", ""))
    if len(set(archs)) > 1:
        raise RuntimeError(f"ARCHFLAGS names several architectures {archs}: build one wheel each")
    return archs[0] if archs else None


class KernelBuildHook(BuildHookInterface):
    """Compiles the kernel's variants into a platform wheel."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        self._tmp: str | None = None
        mode = os.environ.get("FOCALREC_BUILD_KERNELS", "auto").strip().lower() or "auto"
        if mode not in MODES:
            raise ValueError(f"FOCALREC_BUILD_KERNELS must be one of {MODES}, got {mode!r}")
        if self.target_name != "wheel" or version == "editable" or mode == "skip":
            return
        prebuilt = _prebuilt(Path(self.root))
        try:
            arch = _target_arch()
        except RuntimeError as e:
            if mode == "require":
                raise
            self.app.display_warning(f"focalrec: no prebuilt kernel: {e}")
            return
        self._tmp = tempfile.mkdtemp(prefix="focalrec-kernels-")
        files, problems = prebuilt.build(Path(self._tmp), arch)
        for problem in problems:
            self.app.display_warning(f"focalrec: the prebuilt kernel's {problem}")
        if problems and mode == "require":
            raise RuntimeError(
                "FOCALREC_BUILD_KERNELS=require: not every kernel variant compiled: "
                + "; ".join(problems)
            )
        if not files:
            self.app.display_warning(
                "focalrec: building a wheel without a prebuilt kernel "
                "(it is built at run time where a C compiler works)"
            )
            return
        for file in files:
            build_data["force_include"][str(file)] = f"focalrec/_focal/_kernels/{file.name}"
        build_data["pure_python"] = False
        build_data["tag"] = f"py3-none-{platform_tag()}"
        names = ", ".join(p.name for p in files)
        self.app.display_info(f"focalrec: prebuilt kernels {names} ({build_data['tag']})")

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if getattr(self, "_tmp", None):
            shutil.rmtree(str(self._tmp), ignore_errors=True)
