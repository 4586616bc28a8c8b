"""The compiled CPU kernel (``native.c``): built on first use with the system's C compiler, cached.

Nothing is compiled at install time. The first call of the loss on float32 CPU logits compiles
``native.c`` (about a second) into ``$FOCALREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/focalrec``, else
``~/.cache/focalrec`` (a private folder: created with mode 0700, and not used when another user
owns it or can write to it), keyed by a hash of the source, the compiler and the CPU's features,
so that a shared home folder never hands one machine another machine's build. Later processes
load the cached build. Where no C compiler works, :func:`load` reports why and the loss runs on
its torch path; ``FOCALREC_BACKEND=torch`` skips the kernel altogether.

The kernel works on float32 logits with a unit column stride; rows are split into blocks of
about :data:`BLOCK_ELEMENTS` elements that Python threads (one per
``torch.get_num_threads()``) hand to the kernel, which runs without the GIL (ctypes releases
it). The block sums are added in block order with :func:`math.fsum`, so the result is the same
for every number of threads.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

from focalrec._focal.blocks import run_blocks
from focalrec._focal.inputs import FocalInputs

__all__ = ["BLOCK_ELEMENTS", "forward", "load", "supports", "unavailable_reason"]

BLOCK_ELEMENTS = 1 << 16
"""Elements per block of rows: the unit of work of a thread and of the partial sums."""

SOURCE = Path(__file__).with_name("native.c")
_FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-fPIC", "-shared")
_TUNE = ("-march=native",)


class _Args(ctypes.Structure):
    """Mirror of ``focal_args`` in native.c (same order and types)."""

    _fields_ = [
        ("x", ctypes.c_void_p),
        ("x_row_stride", ctypes.c_int64),
        ("grad", ctypes.c_void_p),
        ("grad_row_stride", ctypes.c_int64),
        ("value", ctypes.c_void_p),
        ("value_row_stride", ctypes.c_int64),
        ("dense", ctypes.c_void_p),
        ("dense_row_stride", ctypes.c_int64),
        ("dense_is_bool", ctypes.c_int32),
        ("has_alpha", ctypes.c_int32),
        ("index", ctypes.c_void_p),
        ("index_width", ctypes.c_int64),
        ("alpha_vec", ctypes.c_void_p),
        ("weight", ctypes.c_void_p),
        ("weight_row_stride", ctypes.c_int64),
        ("weight_col_stride", ctypes.c_int64),
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
        ("col_offset", ctypes.c_int64),
        ("rows_per_block", ctypes.c_int64),
        ("alpha", ctypes.c_float),
        ("gamma", ctypes.c_float),
        ("scale", ctypes.c_float),
        ("gamma_int", ctypes.c_int32),
    ]


_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_reason: str | None = None
_tried = False


def _compiler() -> list[str] | None:
    """The C compiler command: ``$CC``, Python's own compiler, or cc/gcc/clang on the PATH."""
    candidates = [os.environ.get("CC", ""), sysconfig.get_config_var("CC") or ""]
    candidates += ["cc", "gcc", "clang"]
    for candidate in candidates:
        parts = candidate.split()
        if parts and shutil.which(parts[0]):
            return parts
    return None


def _cpu_features() -> str:
    """What the build depends on besides the source: the CPU's feature flags where Linux says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _cache_dir() -> Path | None:
    """A private cache folder, or None when none can be had safely."""
    root = os.environ.get("FOCALREC_CACHE_DIR")
    if root:
        path = Path(root)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "focalrec"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError:
        return None
    if hasattr(os, "getuid") and (
        info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        return None
    return path


def _build(compiler: list[str], target: Path) -> str | None:
    """Compile native.c into ``target`` atomically; the compiler's message on failure."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    message = ""
    try:
        for tune in (_TUNE, ()):
            cmd = [*compiler, *_FLAGS, *tune, str(SOURCE), "-o", tmp]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as e:
                return f"running {compiler[0]} failed: {e}"
            if done.returncode == 0:
                os.replace(tmp, target)
                return None
            last = (done.stderr or done.stdout).strip().splitlines()[-1:]
            message = f"{compiler[0]} failed: {' '.join(last)}"
        return message
    finally:
        Path(tmp).unlink(missing_ok=True)


def _open(path: Path) -> ctypes.CDLL | str:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        return f"loading {path} failed: {e}"
    lib.focal_args_size.restype = ctypes.c_int64
    if lib.focal_args_size() != ctypes.sizeof(_Args):
        return f"{path} does not match this version of focalrec"
    lib.focal_blocks.restype = ctypes.c_int
    lib.focal_blocks.argtypes = [
        ctypes.POINTER(_Args),
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    return lib


def _load() -> ctypes.CDLL | str:
    if sys.platform == "win32":
        return "the compiled kernel is not built on Windows"
    compiler = _compiler()
    if compiler is None:
        return "no C compiler found (set CC, or install cc, gcc or clang)"
    try:
        version = subprocess.run(
            [*compiler, "--version"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"running {compiler[0]} failed: {e}"
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(compiler + list(_FLAGS)).encode()):
        key.update(part)
    for text in (version, _cpu_features(), platform.machine()):
        key.update(text.encode())
    name = f"focal-{key.hexdigest()[:20]}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"
    cache = _cache_dir()
    if cache is not None:
        path = cache / name
        if not path.is_file():
            error = _build(compiler, path)
            if error is not None:
                return error
        return _open(path)
    # No usable cache: build into a private temporary folder, load, and remove it.
    with tempfile.TemporaryDirectory(prefix="focalrec-") as tmp:
        error = _build(compiler, Path(tmp) / name)
        return error if error is not None else _open(Path(tmp) / name)


def load() -> ctypes.CDLL | None:
    """The kernel, compiled and loaded on the first call; None if it cannot be had here."""
    global _library, _reason, _tried
    if not _tried:
        with _lock:
            if not _tried:
                loaded = _load()
                if isinstance(loaded, str):
                    _reason = loaded
                else:
                    _library = loaded
                _tried = True
    return _library


def unavailable_reason() -> str | None:
    """Why the kernel cannot be used here (after :func:`load`), or None when it can."""
    load()
    return _reason


def _ordered_sum(parts: list[float]) -> float:
    """The exactly rounded sum of the block sums (:func:`math.fsum`), independent of their
    grouping; with infinite or NaN parts it is NaN or the infinity, as float addition gives."""
    if all(math.isfinite(v) for v in parts):
        return math.fsum(parts)
    return sum(parts)  # inf + -inf is nan here, where fsum raises


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def supports(inp: FocalInputs) -> bool:
    """Whether the kernel takes these inputs: float32 CPU logits."""
    x = inp.logits
    return x.device.type == "cpu" and x.dtype == torch.float32


def forward(
    inp: FocalInputs, elementwise: bool, need_grad: bool, grad_into: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """The loss (elementwise ``(R, C)``, or its sum, 0-d) and, if asked, its gradient.

    The gradient is written into ``grad_into`` when given (``(R, C)`` float32 with a unit column
    stride; it may be the logits themselves), else into a new tensor. Inputs must satisfy
    :func:`supports`; logits without a unit column stride are copied, dense targets other than
    float32 or bool converted.
    """
    lib = load()
    if lib is None:
        raise RuntimeError(f"the compiled focal loss kernel is not available: {_reason}")
    x = inp.logits.detach()
    if x.stride(-1) != 1 and x.shape[-1] > 1:
        x = x.contiguous()  # the kernel reads rows with a unit column stride
    rows, cols = x.shape
    grad = None
    if need_grad:
        grad = torch.empty(rows, cols) if grad_into is None else grad_into.detach()
        if grad.stride(-1) != 1 and cols > 1 and rows > 0:
            raise ValueError(
                f"`grad_into` needs a unit column stride, got strides {tuple(grad.stride())}"
            )
    value = torch.empty(rows, cols) if elementwise else None
    dense = inp.dense
    if dense is not None and dense.dtype not in (torch.float32, torch.bool):
        dense = dense.to(torch.float32)
    if dense is not None and dense.stride(-1) != 1:
        dense = dense.contiguous()
    index = None if inp.index is None else inp.index.to(torch.int64).contiguous()
    alpha_vec = inp.alpha_vec
    if alpha_vec is not None:
        alpha_vec = alpha_vec.detach().to(torch.float32).contiguous()
    weight = inp.weight
    if weight is not None:
        weight = weight.detach().to(torch.float32)
    scale = 1.0 if inp.scale is None else float(inp.scale)
    rows_per_block = max(1, BLOCK_ELEMENTS // max(cols, 1))
    num_blocks = -(-rows // rows_per_block) if cols > 0 else 0
    total = 0.0
    if num_blocks > 0:
        gamma = inp.gamma
        args = _Args(
            x=x.data_ptr(),
            x_row_stride=x.stride(0),
            grad=_ptr(grad),
            grad_row_stride=0 if grad is None else grad.stride(0),
            value=_ptr(value),
            value_row_stride=0 if value is None else value.stride(0),
            dense=_ptr(dense),
            dense_row_stride=0 if dense is None else dense.stride(0),
            dense_is_bool=int(dense is not None and dense.dtype == torch.bool),
            has_alpha=int(inp.has_alpha),
            index=_ptr(index),
            index_width=0 if index is None else index.shape[1],
            alpha_vec=_ptr(alpha_vec),
            weight=_ptr(weight),
            weight_row_stride=0 if weight is None else weight.stride(0),
            weight_col_stride=0 if weight is None else weight.stride(1),
            rows=rows,
            cols=cols,
            col_offset=inp.col_offset,
            rows_per_block=rows_per_block,
            alpha=0.0 if inp.alpha is None else inp.alpha,
            gamma=gamma,
            scale=scale,
            gamma_int=int(gamma) if gamma in (0.0, 1.0, 2.0, 3.0, 4.0) else -1,
        )
        sums = torch.empty(num_blocks, dtype=torch.float64)
        ref, out = ctypes.byref(args), sums.data_ptr()
        run_blocks(lambda first, last: lib.focal_blocks(ref, first, last, out), num_blocks)
        total = _ordered_sum(sums.tolist())
    if value is not None:
        return value, grad
    return torch.tensor(total, dtype=torch.float32), grad
