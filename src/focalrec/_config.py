"""What serves the loss on this machine, and why: :func:`show_config`; and
:class:`SlowPathWarning`, said once per process when a slower path serves than the machine could
run."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

import torch

from focalrec._focal import backends, native, op
from focalrec._focal.inputs import FocalInputs
from focalrec._warnings import SlowPathWarning

__all__ = ["SlowPathWarning", "show_config"]

_TRITON_ON_CPU = (
    "the default picks it for GPU tensors only (focalrec.use_backend('triton') or "
    "FOCALREC_BACKEND=triton runs it on CPU tensors in Triton's interpreter, TRITON_INTERPRET=1: "
    "slow, for tests)"
)
_NAMES = backends.ORDER


def _inputs(dtype: torch.dtype, device: str) -> FocalInputs:
    x = torch.zeros(1, 1, dtype=dtype, device=device)
    return FocalInputs(x, None, None, 0.25, None, 2.0, None, None)


def _why_not(name: str, inp: FocalInputs, chosen: str) -> str:
    """Why backend ``name`` does not serve ``inp`` (``chosen`` serves it)."""
    backend = backends.get(name)
    if name == "triton" and inp.logits.device.type == "cpu":
        return _TRITON_ON_CPU
    refusal = backend.refusal(inp)
    if refusal is not None:
        return f"it {refusal}"
    unavailable = backend.unavailable()
    if unavailable is not None:
        return f"not available here: {unavailable}"
    if backends.requested() != "auto":
        return f"{backends.asked_by()} chooses {chosen}"
    return f"{chosen} applies, and is faster"


def _row(inp: FocalInputs) -> dict[str, Any]:
    """Which backend serves ``inp`` and why each other one does not."""
    names = _NAMES
    try:
        chosen = op.backend_name(inp, warn=False)
    except (RuntimeError, ValueError) as e:  # a forced backend that does not apply
        return {"backend": None, "why_not": dict.fromkeys(names, str(e))}
    why_not = {name: _why_not(name, inp, chosen) for name in names if name != chosen}
    return {"backend": chosen, "why_not": why_not}


def show_config(*, print_out: bool = True) -> dict[str, Any]:
    """Print and return what serves the focal loss here: versions, backends, the CPU kernel.

    For float32 CPU logits, float16/bfloat16 CPU logits and CUDA logits it names the backend
    that :func:`focalrec.sigmoid_focal_loss` uses (``native``, ``triton`` or ``torch``; see
    ``FOCALREC_BACKEND`` in the "Focal loss" guide) and, for every other backend, why that one
    does not serve them. It loads the compiled CPU kernel (building it on first use, as the
    loss would) and imports Triton where a CUDA device is present. Paste its output into a bug
    report.

    Args:
        print_out: Print the report (as ``numpy.show_config()`` does); ``False`` only returns it.

    Returns:
        A dict (JSON-serializable): the ``focalrec``, ``torch``, ``python``, ``platform`` and
        ``triton`` versions (None where Triton is not installed), ``threads``
        (``torch.get_num_threads()``), ``FOCALREC_BACKEND``, ``backends`` (for each of
        ``"float32 CPU"``, ``"float16/bfloat16 CPU"`` and ``"CUDA"``: ``backend``, the one that
        serves, None where none does, and ``why_not``, a reason per other backend) and
        ``cpu_kernel`` (``origin``: where the compiled kernel came from, or None;
        ``unavailable``: why there is none, or None; ``uncached``: why it is not cached, or
        None; ``cache_folder``).

    Example:
        >>> config = show_config(print_out=False)
        >>> sorted(config["backends"])
        ['CUDA', 'float16/bfloat16 CPU', 'float32 CPU']
        >>> half = config["backends"].get("float16/bfloat16 CPU")
        >>> half.get("backend")
        'torch'
    """
    from focalrec import __version__

    if torch.cuda.is_available():
        cuda = _row(_inputs(torch.float32, "cuda"))
    else:
        absent = "no CUDA device here (torch.cuda.is_available() is False)"
        cuda = {"backend": None, "why_not": dict.fromkeys(_NAMES, absent)}
    config: dict[str, Any] = {
        "focalrec": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()} ({sys.platform})",
        "triton": _version("triton"),
        "threads": torch.get_num_threads(),
        "FOCALREC_BACKEND": os.environ.get("FOCALREC_BACKEND", "auto"),
        "backends": {
            "float32 CPU": _row(_inputs(torch.float32, "cpu")),
            "float16/bfloat16 CPU": _row(_inputs(torch.float16, "cpu")),
            "CUDA": cuda,
        },
        "cpu_kernel": {
            "origin": native.origin(),
            "unavailable": native.unavailable(),
            "uncached": native.uncached_reason(),
            "cache_folder": str(native.cache_folder()),
        },
    }
    if print_out:
        print(_format(config))
    return config


def _version(package: str) -> str | None:
    """The installed version of ``package`` (without importing it), or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _format(config: dict[str, Any]) -> str:
    lines = [
        f"focalrec {config['focalrec']} (torch {config['torch']}, Python {config['python']}, "
        f"{config['platform']})",
        f"triton: {config['triton'] or 'not installed'}; threads: {config['threads']}",
        f"FOCALREC_BACKEND: {config['FOCALREC_BACKEND']}",
        "backends:",
    ]
    for case, row in config["backends"].items():
        lines.append(f"  {case}: {row['backend'] or 'none'}")
        lines.extend(f"    not {name}: {why}" for name, why in row["why_not"].items())
    kernel = config["cpu_kernel"]
    lines.append("compiled CPU kernel:")
    lines.extend(f"  {key.replace('_', ' ')}: {value}" for key, value in kernel.items())
    return "\n".join(lines)
