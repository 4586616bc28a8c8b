"""Atomic file output: a reader sees the old file or the new one, never a half-written one.

Each function writes into a temporary file in the destination's directory (the same filesystem),
flushes it to disk, then renames it over the destination with :func:`os.replace`, which is atomic
on POSIX and Windows. A crash (``kill -9`` included) leaves at most a stray ``.*.tmp`` file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["save_json", "save_torch", "write_atomic", "write_text"]


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(f)`` on a temporary binary file, then move it to ``path`` in one step."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (load it with ``weights_only=True``)."""
    write_atomic(path, lambda f: torch.save(obj, f))
