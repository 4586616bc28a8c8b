"""The backends of the loss, one protocol for all, and the choice between them.

Every backend is a module with the same three functions (:class:`Backend`):

- ``unavailable() -> str | None``: why it cannot run on this machine at all (the compiled
  kernel did not load, Triton does not import), or None;
- ``refusal(inp) -> str | None``: why it does not take these inputs (a phrase that follows
  "it"), or None;
- ``forward(inp, elementwise, need_grad, grad_into=None) -> (loss, grad)``: the loss, elementwise
  or summed, and its gradient when asked, written into ``grad_into`` when given.

The choice: :func:`use_backend` inside a ``with`` block (process-wide, as ``torch.backends``'
flags), else the environment variable ``FOCALREC_BACKEND``, read once, at the first call that
needs it; ``auto`` (the default) takes the first backend of :data:`ORDER` that runs here and takes
the inputs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from torch import Tensor

from focalrec._focal import native, torch_kernel, triton_kernel
from focalrec._focal.inputs import FocalInputs

__all__ = [
    "BACKENDS",
    "ORDER",
    "Backend",
    "asked_by",
    "get",
    "requested",
    "use_backend",
]

BACKENDS = ("auto", "native", "torch", "triton")
"""The values of ``FOCALREC_BACKEND`` and of :func:`use_backend`'s ``name``."""


class Backend(Protocol):
    """What every backend module provides (see the module docstring)."""

    def unavailable(self) -> str | None: ...

    def refusal(self, inp: FocalInputs) -> str | None: ...

    def forward(
        self,
        inp: FocalInputs,
        elementwise: bool,
        need_grad: bool,
        grad_into: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]: ...


_MODULES: dict[str, Backend] = {
    "native": native,
    "triton": triton_kernel,
    "torch": torch_kernel,
}
ORDER = ("native", "triton", "torch")
"""The order in which ``auto`` tries the backends (``triton`` for accelerator tensors only)."""


def get(name: str) -> Backend:
    """The backend module called ``name`` (one of :data:`ORDER`)."""
    return _MODULES[name]


_chosen: list[str] = []  # use_backend's choices, innermost last
_environment: list[str] = []  # FOCALREC_BACKEND, once read and found valid
_lock = threading.Lock()


def _check_name(name: object, source: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{source} must be a str, one of {BACKENDS}, got {type(name).__name__}")
    value = name.strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{source} must be one of {BACKENDS}, got {name!r}")
    return value


def requested() -> str:
    """The backend asked for: :func:`use_backend`'s, else ``FOCALREC_BACKEND`` (read on the
    first call of the process, kept after; an invalid value raises and is read again)."""
    if _chosen:
        return _chosen[-1]
    if not _environment:
        with _lock:
            if not _environment:
                raw = os.environ.get("FOCALREC_BACKEND", "auto")
                _environment.append(_check_name(raw, "FOCALREC_BACKEND"))
    return _environment[0]


def asked_by() -> str:
    """How the backend asked for was asked for, as a user would write it: for messages."""
    if _chosen:
        return f"focalrec.use_backend({_chosen[-1]!r})"
    return f"FOCALREC_BACKEND={requested()}"


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Evaluate the sigmoid losses on backend ``name`` inside the ``with`` block.

    ``name`` is one of ``"auto"``, ``"native"`` (the compiled CPU kernel), ``"triton"`` and
    ``"torch"``, as for the environment variable ``FOCALREC_BACKEND``, which it overrides until
    the block ends; blocks nest. The choice holds for the whole process (every thread, as
    ``torch.backends``' flags do). A backend that does not run here or does not take a call's
    inputs makes that call raise, saying why.
    :func:`focalrec.show_config` lists the backends and why each serves or not.

    Raises:
        TypeError: If ``name`` is not a str.
        ValueError: If ``name`` is not one of the backends.

    Example:
        >>> import torch, focalrec
        >>> x = torch.tensor([[2.0, -1.0]])
        >>> with focalrec.use_backend("torch"):
        ...     loss = focalrec.sigmoid_focal_loss(x, torch.tensor([[0]]))
        >>> torch.allclose(loss, focalrec.sigmoid_focal_loss(x, torch.tensor([[0]])))
        True
    """
    value = _check_name(name, "`name`")
    with _lock:
        _chosen.append(value)
        depth = len(_chosen)
    try:
        yield
    finally:
        with _lock:
            del _chosen[depth - 1]
