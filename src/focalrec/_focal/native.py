"""The compiled CPU kernel (``native.c``): prebuilt in platform wheels, else built on first use.

A platform wheel ships the kernel prebuilt for its architecture's instruction-set variants
(:mod:`focalrec._focal.prebuilt`), and :func:`load` opens the one this CPU runs; then no compiler
is involved. Otherwise (a source install) the first call of the loss on float32 CPU logits compiles
``native.c`` (about a second) into ``$FOCALREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/focalrec``, else
``~/.cache/focalrec`` (a private folder: created with mode 0700, and not used when another user
owns it or can write to it), keyed by a hash of the source, the compiler and the CPU's features,
so that a shared home folder never hands one machine another machine's build. Later processes
load the cached build. Where no C compiler works, :func:`load` reports why and the loss runs on
its torch path; ``FOCALREC_BACKEND=torch`` skips the kernel altogether.

The cache cannot break the loss: each build is written under a temporary name and renamed into
place, with a record of its size and SHA-256 beside it (``<name>.json``, renamed into place too),
so other processes see whole files only; a cached build is loaded only when it matches its
record (a truncated file would kill the process with SIGBUS when loaded) and exports the
kernel's functions, else it is rebuilt and replaced. A cache folder that cannot be written to is
passed over for a private temporary folder. The compiler's version is asked once per process, and
the outcome of loading, success or failure, is kept for the life of the process: :func:`origin`
says where the kernel came from, :func:`unavailable` why there is none.

The kernel works on float32 logits with a unit column stride; rows are split into blocks of
about :data:`BLOCK_ELEMENTS` elements that Python threads (one per
``torch.get_num_threads()``) hand to the kernel, which runs without the GIL (ctypes releases
it). The block sums are added in block order with :func:`math.fsum`, so the result is the same
for every number of threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
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

from focalrec._focal import prebuilt
from focalrec._focal.blocks import run_blocks
from focalrec._focal.inputs import FocalInputs

__all__ = [
    "BLOCK_ELEMENTS",
    "cache_folder",
    "forward",
    "load",
    "origin",
    "refusal",
    "unavailable",
    "uncached_reason",
]

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
        ("pos_weight_vec", ctypes.c_void_p),
        ("pos_weight", ctypes.c_float),
        ("asymmetric", ctypes.c_int32),
        ("gamma_neg", ctypes.c_float),
        ("gamma_neg_int", ctypes.c_int32),
        ("clip", ctypes.c_float),
        ("reserved", ctypes.c_int32),
    ]


_lock = threading.Lock()
_library: _Kernel | None = None
_reason: str | None = None
_prebuilt_note: str | None = None  # why a shipped prebuilt kernel was not used
_tried = False
_versions: dict[tuple[str, ...], tuple[bool, str]] = {}  # command -> (ran, --version or why not)


class _Kernel(ctypes.CDLL):
    """The loaded library, with where it came from (:func:`origin`) and the file it is at."""

    origin: str = ""
    path: Path | None = None
    uncached: str | None = None  # why the build is not cached, when it is not


def _compiler() -> list[str] | None:
    """The C compiler command: ``$CC``, Python's own compiler, or cc/gcc/clang on the PATH."""
    candidates = [os.environ.get("CC", ""), sysconfig.get_config_var("CC") or ""]
    candidates += ["cc", "gcc", "clang"]
    for candidate in candidates:
        parts = candidate.split()
        if parts and shutil.which(parts[0]):
            return parts
    return None


def _compiler_version(compiler: list[str]) -> str:
    """The output of ``compiler --version`` (part of the cache key), asked once per process.

    Raises:
        OSError: If the compiler cannot be run (the message says why; remembered too).
    """
    key = tuple(compiler)
    if key not in _versions:
        try:
            done = subprocess.run(
                [*compiler, "--version"], capture_output=True, text=True, timeout=60
            )
            _versions[key] = (True, done.stdout)
        except (OSError, subprocess.SubprocessError) as e:
            _versions[key] = (False, f"running {compiler[0]} failed: {e}")
    ok, text = _versions[key]
    if not ok:
        raise OSError(text)
    return text


def _cpu_features() -> str:
    """What the build depends on besides the source: the CPU's feature flags where Linux says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _cache_root() -> Path:
    """``$FOCALREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/focalrec``, else ``~/.cache/focalrec``."""
    root = os.environ.get("FOCALREC_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "focalrec"


def _cache_dir() -> Path | str:
    """The private cache folder, or why none can be had safely."""
    path = _cache_root()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as e:
        return f"the cache folder {path} cannot be made ({e})"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"the cache folder {path} belongs to another user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"others may write to the cache folder {path}"
    return path


def _record_path(path: Path) -> Path:
    """The file beside a build that holds its size and SHA-256, written when it was built."""
    return path.with_name(path.name + ".json")


def _fingerprint(path: Path) -> dict[str, object]:
    data = path.read_bytes()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _check_record(path: Path) -> str | None:
    """Why the cached build at ``path`` must not be loaded (None: it matches its record).

    A build is only ever loaded after this check: a truncated file (a full disk, a killed copy)
    would crash the process when loaded (SIGBUS), a foreign one would lack the kernel.
    """
    try:
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError) as e:
        return f"it has no readable record of its size and hash ({type(e).__name__})"
    try:
        size = path.stat().st_size
        if not isinstance(record, dict) or size != record.get("size"):
            got = record.get("size") if isinstance(record, dict) else None
            return f"it is {size} bytes, its record says {got}"
        if _fingerprint(path) != record:
            return "its SHA-256 differs from its record"
    except OSError as e:
        return f"it cannot be read ({e})"
    return None


def _write_atomically(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _build(compiler: list[str], folder: Path, name: str) -> Path | str:
    """Compile native.c into a new file in ``folder`` (a temporary name that starts with
    ``.name.``); its path, or the compiler's message on failure.

    Raises:
        OSError: If no file can be made in ``folder``.
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    message = ""
    try:
        for tune in (_TUNE, ()):
            cmd = [*compiler, *_FLAGS, *tune, str(SOURCE), "-o", tmp]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as e:
                message = f"running {compiler[0]} failed: {e}"
                break
            if done.returncode == 0:
                result, tmp = Path(tmp), ""
                return result
            last = " ".join((done.stderr or done.stdout).strip().splitlines()[-1:])
            message = f"{compiler[0]} failed (exit status {done.returncode})"
            message += f": {last}" if last else ""
        return message
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def _open(path: Path) -> _Kernel | str:
    """The library at ``path`` with its functions declared, or why it is not the kernel."""
    try:
        lib = _Kernel(str(path))
    except OSError as e:
        return f"loading {path} failed: {e}"
    try:
        args_size, blocks = lib.focal_args_size, lib.focal_blocks
    except AttributeError as e:
        return f"{path} is not focalrec's kernel ({e})"
    args_size.restype = ctypes.c_int64
    if args_size() != ctypes.sizeof(_Args):
        return f"{path} does not match this version of focalrec"
    blocks.restype = ctypes.c_int
    blocks.argtypes = [ctypes.POINTER(_Args), ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.path = path
    return lib


def _build_and_open(compiler: list[str], folder: Path, name: str) -> _Kernel | str:
    """Build into ``folder``, load that file, then publish it as ``folder / name`` with its
    record (each by an atomic rename, so that other processes see whole files only).

    The new file is loaded under its own temporary name, never a name this process may have
    loaded before (the dynamic loader would hand back the earlier library).

    Raises:
        OSError: If no file can be made in ``folder``.
    """
    built = _build(compiler, folder, name)
    if isinstance(built, str):
        return built
    try:
        record = json.dumps(_fingerprint(built)).encode()
        lib = _open(built)
        if isinstance(lib, str):
            return lib
        target = folder / name
        lib.path = None
        with contextlib.suppress(OSError):  # not cached, or without its record: rebuilt later
            os.replace(built, target)
            lib.path = target
            _write_atomically(_record_path(target), record)
        return lib
    finally:
        built.unlink(missing_ok=True)


def _build_name(compiler: list[str], version: str) -> str:
    """The file name of the build: a hash of the source, compiler, flags and CPU."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(compiler + list(_FLAGS)).encode()):
        key.update(part)
    for text in (version, _cpu_features(), platform.machine()):
        key.update(text.encode())
    return f"focal-{key.hexdigest()[:20]}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"


def _load() -> _Kernel | str:
    """The kernel, from the cache or built now, with its :attr:`_Kernel.origin`; or why not.

    A cached build is loaded only when it matches the size and SHA-256 recorded beside it;
    otherwise (or when it is not the kernel) it is rebuilt and replaced. A cache folder that
    cannot be used or written to is passed over for a private temporary folder.
    """
    global _prebuilt_note
    shipped = prebuilt.load(_open)
    if shipped.library is not None:
        assert isinstance(shipped.library, _Kernel)
        shipped.library.origin = shipped.about
        return shipped.library
    if shipped.final:
        return shipped.about
    _prebuilt_note = shipped.about if shipped.shipped else None
    if sys.platform == "win32":
        return "the compiled kernel is not built on Windows"
    compiler = _compiler()
    if compiler is None:
        return "no C compiler found (set CC, or install cc, gcc or clang)"
    try:
        name = _build_name(compiler, _compiler_version(compiler))
    except OSError as e:
        return str(e)
    cache = _cache_dir()
    notes = []
    if isinstance(cache, Path):
        path = cache / name
        if path.exists():
            problem = _check_record(path)
            if problem is None:
                lib = _open(path)
                if not isinstance(lib, str):
                    lib.origin = f"built at run time, cached in {path}"
                    return lib
                problem = lib
            notes.append(f"the cached build {path} was not loaded: {problem}")
        if os.access(cache, os.W_OK | os.X_OK):
            try:
                lib = _build_and_open(compiler, cache, name)
            except OSError as e:
                notes.append(f"building into {cache} failed ({e})")
            else:
                if isinstance(lib, str):
                    return "; ".join([*notes, lib])
                if lib.path is None:
                    lib.uncached = "; ".join([*notes, f"{cache / name} could not be written"])
                where = lib.path or "a temporary file (not cached)"
                lib.origin = "; ".join([f"built at run time into {where}", *notes])
                return lib
        else:
            notes.append(f"the cache folder {cache} is not writable")
    else:
        notes.append(cache)
    # No usable cache: build into a private temporary folder, load, and remove it.
    try:
        with tempfile.TemporaryDirectory(prefix="focalrec-") as tmp:
            lib = _build_and_open(compiler, Path(tmp), name)
    except OSError as e:
        return "; ".join([*notes, f"building into a temporary folder failed ({e})"])
    if isinstance(lib, str):
        return "; ".join([*notes, lib])
    lib.origin = "; ".join(["built at run time into a temporary folder (not cached)", *notes])
    lib.path = None
    lib.uncached = "; ".join(notes)
    return lib


def load() -> ctypes.CDLL | None:
    """The kernel (prebuilt, else compiled), loaded on the first call; None if it cannot be
    had here. The outcome, success or failure, is kept for the life of the process.
    """
    global _library, _reason, _tried
    if not _tried:
        prebuilt.requested_variant()  # a misspelt FOCALREC_KERNEL_VARIANT raises, not kept
        with _lock:
            if not _tried:
                try:
                    loaded = _load()
                except Exception as e:  # never let the kernel's machinery break the loss
                    loaded = f"loading the compiled kernel failed: {type(e).__name__}: {e}"
                note = "" if _prebuilt_note is None else f" (prebuilt kernel: {_prebuilt_note})"
                if isinstance(loaded, str):
                    _reason = loaded + note
                else:
                    loaded.origin += note
                    _library = loaded
                _tried = True
    return _library


def unavailable() -> str | None:
    """Why the kernel cannot be used here (after :func:`load`), or None when it can."""
    load()
    return _reason


def origin() -> str | None:
    """Where the loaded kernel came from (after :func:`load`), or None when it is not loaded.

    ``"prebuilt <variant> kernel <path>"`` when a platform wheel's library serves, else for
    example ``"built at run time, cached in /home/me/.cache/focalrec/focal-....so"``.
    """
    load()
    return None if _library is None else _library.origin


def uncached_reason() -> str | None:
    """Why the loaded kernel could not be cached (each process builds it anew), or None."""
    load()
    return None if _library is None else _library.uncached


def cache_folder() -> Path:
    """The folder the run-time build is cached in (whether or not it can be used)."""
    return _cache_root()


def _ordered_sum(parts: list[float]) -> float:
    """The exactly rounded sum of the block sums (:func:`math.fsum`), independent of their
    grouping; with infinite or NaN parts it is NaN or the infinity, as float addition gives."""
    if all(math.isfinite(v) for v in parts):
        return math.fsum(parts)
    return sum(parts)  # inf + -inf is nan here, where fsum raises


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _gamma_int(gamma: float) -> int:
    """``gamma`` as the kernel's integer code: 0..4 when it is that integer, else -1."""
    return int(gamma) if gamma in (0.0, 1.0, 2.0, 3.0, 4.0) else -1


def refusal(inp: FocalInputs) -> str | None:
    """Why the kernel does not take these inputs (a phrase after \"it\"), or None: it takes
    float32 CPU logits."""
    x = inp.logits
    if not (x.device.type == "cpu" and x.dtype == torch.float32):
        return f"takes float32 CPU logits, got {x.dtype} logits on {x.device}"
    return None


def forward(
    inp: FocalInputs, elementwise: bool, need_grad: bool, grad_into: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """The loss (elementwise ``(R, C)``, or its sum, 0-d) and, if asked, its gradient.

    The gradient is written into ``grad_into`` when given (``(R, C)`` float32 with a unit column
    stride; it may be the logits themselves), else into a new tensor. Inputs must pass
    :func:`refusal` (none); logits without a unit column stride are copied, dense targets other
    than float32 or bool converted.
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
    pos_weight_vec = inp.pos_weight_vec
    if pos_weight_vec is not None:
        pos_weight_vec = pos_weight_vec.detach().to(torch.float32).contiguous()
    weight = inp.weight
    if weight is not None:
        weight = weight.detach().to(torch.float32)
    scale = 1.0 if inp.scale is None else float(inp.scale)
    rows_per_block = max(1, BLOCK_ELEMENTS // max(cols, 1))
    num_blocks = -(-rows // rows_per_block) if cols > 0 else 0
    total = 0.0
    if num_blocks > 0:
        gamma = inp.gamma
        gamma_neg = gamma if inp.gamma_neg is None else inp.gamma_neg
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
            gamma_int=_gamma_int(gamma),
            pos_weight_vec=_ptr(pos_weight_vec),
            pos_weight=1.0 if inp.pos_weight is None else inp.pos_weight,
            asymmetric=int(inp.asymmetric),
            gamma_neg=gamma_neg,
            gamma_neg_int=_gamma_int(gamma_neg),
            clip=inp.clip,
            reserved=0,
        )
        sums = torch.empty(num_blocks, dtype=torch.float64)
        ref, out = ctypes.byref(args), sums.data_ptr()
        run_blocks(lambda first, last: lib.focal_blocks(ref, first, last, out), num_blocks)
        total = _ordered_sum(sums.tolist())
    if value is not None:
        return value, grad
    return torch.tensor(total, dtype=torch.float32), grad
