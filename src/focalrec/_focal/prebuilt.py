"""The CPU kernel as platform wheels ship it: built per instruction-set variant, picked at load.

A platform wheel carries ``native.c`` compiled once per variant of its architecture, in
``focalrec/_focal/_kernels/`` beside a ``manifest.json`` (the variants, their files and flags,
and the SHA-256 of the ``native.c`` they were built from):

========  =============================  ===========================  =====================
variant   the CPU needs                  GCC / clang                  MSVC
========  =============================  ===========================  =====================
baseline  any x86-64 (or 64-bit ARM)     ``-march=x86-64``            (none: SSE2)
avx2      x86-64-v3: AVX2, FMA, BMI1/2,  ``-march=x86-64-v3``         ``/arch:AVX2``
          F16C, LZCNT, MOVBE
avx512    x86-64-v4: the above and       ``-march=x86-64-v4``         ``/arch:AVX512``
          AVX-512 F, CD, BW, DQ, VL
========  =============================  ===========================  =====================

On 64-bit ARM there is one variant, ``baseline`` (``-march=armv8-a`` on Linux, the compiler's
default on macOS, whose oldest arm64 CPU is the M1): NEON is part of armv8-a. Every variant is
compiled with the math flags of the run-time build (:data:`MATH_FLAGS`) and never with
``-march=native``. :func:`build` compiles them; the wheel's build hook (``hatch_build.py``)
calls it and packs the result. :func:`load` opens the baseline library, asks its
``focal_cpu_level()`` (CPUID and the operating system's XCR0 register) which variant this CPU
runs, and opens the highest shipped variant that it runs. ``FOCALREC_KERNEL_VARIANT=auto|
baseline|avx2|avx512`` overrides the choice; a variant that is not shipped or that this CPU
cannot run is refused with the reason, and nothing is built at run time in its place.

This module imports the standard library only: the wheel's build runs it by its path, before
torch or focalrec are importable.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ENV_VARIANT",
    "KERNELS",
    "MATH_FLAGS",
    "SOURCE",
    "Loaded",
    "Variant",
    "build",
    "cpu_level",
    "load",
    "machine",
    "requested_variant",
    "variants",
]

SOURCE = Path(__file__).with_name("native.c")
KERNELS = Path(__file__).with_name("_kernels")
"""Where a platform wheel installs the prebuilt libraries and their manifest."""
MANIFEST = "manifest.json"
ENV_VARIANT = "FOCALREC_KERNEL_VARIANT"
MATH_FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd")
"""The run-time build's flags (native.py), less ``-fPIC -shared``, which :func:`build` adds."""
_MSVC_FLAGS = ("/O2", "/fp:precise", "/nologo")


@dataclass(frozen=True)
class Variant:
    """One build of the kernel for one instruction set.

    Attributes:
        name: ``baseline``, ``avx2`` or ``avx512``.
        level: the value of ``focal_cpu_level()`` from which the CPU runs it.
        needs: what the CPU needs, in words.
        flags: GCC / clang flag sets, tried in order until one compiles.
        msvc: MSVC flags.
    """

    name: str
    level: int
    needs: str
    flags: tuple[tuple[str, ...], ...]
    msvc: tuple[str, ...] = ()


_V3 = ("-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt", "-mmovbe")
_V4 = (*_V3, "-mavx512f", "-mavx512cd", "-mavx512bw", "-mavx512dq", "-mavx512vl")
_X86_64 = (
    Variant("baseline", 0, "any x86-64 CPU", (("-march=x86-64", "-mtune=generic"),)),
    Variant(
        "avx2",
        1,
        "AVX2, FMA, F16C, BMI1, BMI2, LZCNT and MOVBE (x86-64-v3)",
        (("-march=x86-64-v3", "-mtune=generic"), ("-march=x86-64", "-mtune=generic", *_V3)),
        ("/arch:AVX2",),
    ),
    Variant(
        "avx512",
        2,
        "x86-64-v3 and AVX-512 F, CD, BW, DQ and VL (x86-64-v4)",
        (("-march=x86-64-v4", "-mtune=generic"), ("-march=x86-64", "-mtune=generic", *_V4)),
        ("/arch:AVX512",),
    ),
)
LEVEL_NAMES = {v.level: v.name for v in _X86_64}
"""``focal_cpu_level()`` -> the highest variant that the CPU runs."""


def machine(arch: str | None = None) -> str:
    """The architecture in the names the manifest uses: ``x86_64``, ``arm64`` or as reported.

    Example:
        >>> machine("AMD64"), machine("aarch64"), machine("arm64")
        ('x86_64', 'arm64', 'arm64')
    """
    name = (arch or platform.machine()).lower()
    return {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}.get(name, name)


def variants(arch: str | None = None, system: str | None = None) -> tuple[Variant, ...]:
    """The variants built for an architecture (this machine's by default), lowest first.

    Example:
        >>> [(v.name, v.level) for v in variants("x86_64", "linux")]
        [('baseline', 0), ('avx2', 1), ('avx512', 2)]
        >>> [(v.name, v.flags) for v in variants("aarch64", "linux")]
        [('baseline', (('-march=armv8-a',),))]
    """
    arch, system = machine(arch), system or sys.platform
    if arch == "x86_64":
        return _X86_64
    if arch == "arm64":
        flags = ((),) if system == "darwin" else (("-march=armv8-a",),)
        return (Variant("baseline", 0, "any 64-bit ARM CPU (NEON is part of armv8-a)", flags),)
    return (Variant("baseline", 0, f"any {arch} CPU", ((),)),)


def _suffix(system: str) -> str:
    return ".dll" if system == "win32" else ".dylib" if system == "darwin" else ".so"


def _unix_compiler() -> list[str] | None:
    """``$CC``, Python's own compiler, or cc/gcc/clang on the PATH."""
    for candidate in (os.environ.get("CC", ""), sysconfig.get_config_var("CC") or "", "cc"):
        parts = shlex.split(candidate)
        if parts and shutil.which(parts[0]):
            return parts
    for name in ("gcc", "clang"):
        if shutil.which(name):
            return [name]
    return None


def _run(cmd: list[str]) -> str | None:
    """Run a compiler command; None on success, else the last line of its complaint."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        return f"running {cmd[0]} failed: {e}"
    if done.returncode == 0:
        return None
    last = (done.stderr or done.stdout).strip().splitlines()[-1:]
    return f"{cmd[0]} failed: {' '.join(last)}"


def _build_unix(
    compiler: list[str], variant: Variant, target: Path, arch_flags: Sequence[str]
) -> tuple[str | None, str]:
    """Compile one variant with GCC or clang: (error or None, the flags used)."""
    error = "no flag set"
    for flags in variant.flags:
        # -fopenmp-simd last of all: a compiler without it still builds a (less vectorized) kernel.
        for math in (MATH_FLAGS, tuple(f for f in MATH_FLAGS if f != "-fopenmp-simd")):
            used = [*math, "-fPIC", "-shared", *arch_flags, *flags]
            found = _run([*compiler, *used, str(SOURCE), "-o", str(target)])
            if found is None:
                return None, " ".join(used)
            error = found
    return error, ""


def _build_msvc(variant: Variant, target: Path) -> tuple[str | None, str]:
    """Compile one variant with MSVC, found through setuptools' compiler classes."""
    try:
        from setuptools._distutils.ccompiler import new_compiler
    except ImportError as e:
        return f"MSVC needs setuptools to be found: {e}", ""
    used = [*_MSVC_FLAGS, *variant.msvc]
    try:
        cc = new_compiler(compiler="msvc")
        cc.initialize()
        with tempfile.TemporaryDirectory(prefix="focalrec-msvc-") as tmp:
            objects = cc.compile([str(SOURCE)], output_dir=tmp, extra_postargs=used)
            cc.link_shared_object(objects, str(target), build_temp=tmp)
    except Exception as e:  # distutils' CompileError, LinkError, DistutilsPlatformError
        return f"MSVC failed: {type(e).__name__}: {e}", ""
    return None, " ".join(used)


def build(out_dir: Path, arch: str | None = None) -> tuple[list[Path], list[str]]:
    """Compile every variant of this machine's architecture into ``out_dir``, with its manifest.

    Args:
        out_dir: an existing folder; the libraries are named ``focal-<variant><suffix>``.
        arch: the target architecture (macOS's ``ARCHFLAGS`` with one ``-arch``); this machine's
            by default. Other architectures are not cross-compiled.

    Returns:
        The files written (libraries and ``manifest.json``), and one message per variant that
        failed. No file is written, the manifest included, when the baseline variant fails.
    """
    system = sys.platform
    arch = machine(arch)
    arch_flags: list[str] = []
    if system == "darwin":
        arch_flags = ["-arch", arch]
    compiler = None if system == "win32" else _unix_compiler()
    if system != "win32" and compiler is None:
        return [], ["no C compiler found (set CC, or install cc, gcc or clang)"]
    built: dict[str, dict[str, str]] = {}
    files: list[Path] = []
    problems: list[str] = []
    for variant in variants(arch, system):
        target = out_dir / f"focal-{variant.name}{_suffix(system)}"
        if compiler is None:
            error, used = _build_msvc(variant, target)
        else:
            error, used = _build_unix(compiler, variant, target, arch_flags)
        if error is not None:
            problems.append(f"{variant.name}: {error}")
            if variant.level == 0:
                return [], problems
            continue
        built[variant.name] = {"file": target.name, "flags": used}
        files.append(target)
    manifest = {
        "format": 1,
        "arch": arch,
        "system": system,
        "source_sha256": hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
        "compiler": "msvc" if compiler is None else " ".join(compiler),
        "variants": built,
    }
    path = out_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return [*files, path], problems


@dataclass(frozen=True)
class Loaded:
    """What :func:`load` found.

    Attributes:
        library: the kernel, or None.
        about: ``"prebuilt <variant> kernel <path>"``, or why no prebuilt kernel was loaded.
        shipped: whether this installation ships prebuilt kernels.
        final: when no library: nothing is to be loaded in its place (``FOCALREC_KERNEL_VARIANT``
            asked for what cannot be had), so no kernel is built at run time either.
    """

    library: ctypes.CDLL | None
    about: str
    shipped: bool
    final: bool = False


def requested_variant() -> str | None:
    """``FOCALREC_KERNEL_VARIANT``: a variant's name, or None for ``auto`` (or unset).

    Raises:
        ValueError: the variable names no variant.
    """
    value = os.environ.get(ENV_VARIANT, "").strip().lower()
    if value in ("", "auto"):
        return None
    names = ("auto", *LEVEL_NAMES.values())
    if value not in names:
        raise ValueError(f"{ENV_VARIANT} must be one of {names}, got {value!r}")
    return value


def cpu_level(library: ctypes.CDLL) -> int:
    """``focal_cpu_level()`` of a loaded kernel: 0 baseline, 1 avx2, 2 avx512 (see native.c)."""
    function = library.focal_cpu_level
    function.restype = ctypes.c_int32
    function.argtypes = []
    return int(function())


def _open(opener: Callable[[Path], ctypes.CDLL | str], path: Path) -> ctypes.CDLL | str:
    try:
        return opener(path)
    except (OSError, AttributeError) as e:  # a library without the kernel's symbols
        return f"loading {path} failed: {e}"


def load(opener: Callable[[Path], ctypes.CDLL | str], directory: Path | None = None) -> Loaded:
    """The best prebuilt kernel for this CPU, opened (and ABI-checked) by ``opener``.

    Args:
        opener: opens one library and checks it against this version of focalrec (native.py's),
            returning the library or why it cannot be used.
        directory: where the libraries and their manifest lie; :data:`KERNELS` by default.

    Raises:
        ValueError: ``FOCALREC_KERNEL_VARIANT`` names no variant.
    """
    directory = KERNELS if directory is None else directory
    requested = requested_variant()
    refuse = f"{ENV_VARIANT}={requested}"
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        if requested is not None:
            why = f"{refuse}: this installation ships no prebuilt kernel (a source install)"
            return Loaded(None, why, shipped=False, final=True)
        return Loaded(None, "this installation ships no prebuilt kernel", shipped=False)

    def failed(why: str) -> Loaded:
        return Loaded(None, why, shipped=True, final=requested is not None)

    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        arch, digest = manifest["arch"], manifest["source_sha256"]
        built = {str(name): str(entry["file"]) for name, entry in manifest["variants"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return failed(f"reading {manifest_path} failed: {e!r}")
    if any(Path(file).name != file for file in built.values()):
        return failed(f"{manifest_path} names a file outside {directory}")
    if arch != machine():
        return failed(f"the prebuilt kernels are built for {arch}, this machine is {machine()}")
    if digest != hashlib.sha256(SOURCE.read_bytes()).hexdigest():
        return failed(f"the prebuilt kernels in {directory} were built from another native.c")
    if "baseline" not in built:
        return failed(f"{manifest_path} lists no baseline kernel")
    baseline_path = directory / built["baseline"]
    baseline = _open(opener, baseline_path)
    if isinstance(baseline, str):
        return failed(baseline)
    try:
        level = cpu_level(baseline)
    except AttributeError as e:
        return failed(f"{baseline_path} has no focal_cpu_level: {e}")
    runs = LEVEL_NAMES.get(level, "baseline") if arch == "x86_64" else "baseline"
    shipped = [v for v in variants(arch) if v.name in built]
    if requested is not None:
        chosen = next((v for v in shipped if v.name == requested), None)
        if chosen is None:
            names = ", ".join(v.name for v in shipped)
            return failed(f"{refuse}: not shipped for {arch} (shipped: {names})")
        if chosen.level > level:
            return failed(f"{refuse}: this CPU lacks {chosen.needs}; it runs up to {runs}")
    else:
        chosen = [v for v in shipped if v.level <= level][-1]
    if chosen.level == 0:
        return Loaded(baseline, f"prebuilt baseline kernel {baseline_path}", shipped=True)
    path = directory / built[chosen.name]
    library = _open(opener, path)
    if isinstance(library, str):
        if requested is not None:
            return failed(library)
        why = f"prebuilt baseline kernel {baseline_path} (the {chosen.name} one: {library})"
        return Loaded(baseline, why, shipped=True)
    return Loaded(library, f"prebuilt {chosen.name} kernel {path}", shipped=True)
