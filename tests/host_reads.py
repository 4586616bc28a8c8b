"""The accelerator code path on CPU tensors, and a guard that fails on any read back to the host.

On CUDA, ``torch.cuda.set_sync_debug_mode("error")`` fails on every device-to-host
synchronization. CI has no GPU, so the same property is checked on the CPU: :func:`sync_free_path`
makes focalrec take the code path it takes on accelerators, and :func:`no_host_reads` makes every
operation that would synchronize there fail instead: reading a value (``bool``, ``int``,
``float``, ``.item()``, ``.tolist()``, printing), an output whose shape depends on the values
(``nonzero``, boolean-mask indexing, ``unique``, ...), and copying Python data to a device
(``torch.tensor``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import torch

from focalrec import _topk


class HostReadError(AssertionError):
    """An operation that would synchronize with an accelerator ran inside :func:`no_host_reads`."""


_METHODS = (
    "__bool__",
    "__int__",
    "__float__",
    "__complex__",
    "__index__",
    "__format__",
    "__repr__",
    "item",
    "tolist",
    "numpy",
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "unique_consecutive",
    "bincount",
)
_FUNCTIONS = (
    "nonzero",
    "argwhere",
    "masked_select",
    "unique",
    "unique_consecutive",
    "bincount",
    "tensor",
    "as_tensor",
)


def _forbidden(name: str) -> Callable[..., Any]:
    def fail(*args: object, **kwargs: object) -> Any:
        raise HostReadError(f"{name} reads tensor values back to the host")

    return fail


def _has_mask(index: object) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype in (torch.bool, torch.uint8) for p in parts)


def _mask_guard(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(self: torch.Tensor, index: object, *args: object) -> Any:
        if _has_mask(index):
            raise HostReadError(f"Tensor.{name} with a boolean mask has a data-dependent shape")
        return original(self, index, *args)

    return guarded


def _where(*args: object, **kwargs: object) -> Any:
    if len(args) + len(kwargs) == 1:
        raise HostReadError("torch.where(condition) is nonzero(): a data-dependent shape")
    return _REAL_WHERE(*args, **kwargs)


_REAL_WHERE = torch.where


@contextmanager
def no_host_reads() -> Iterator[None]:
    """Fail (:class:`HostReadError`) on every operation that would synchronize with a device."""
    with ExitStack() as stack:
        for name in _METHODS:
            stack.enter_context(mock.patch.object(torch.Tensor, name, _forbidden(f"Tensor.{name}")))
        for name in _FUNCTIONS:
            stack.enter_context(mock.patch.object(torch, name, _forbidden(f"torch.{name}")))
        for name in ("__getitem__", "__setitem__"):
            original = getattr(torch.Tensor, name)
            stack.enter_context(mock.patch.object(torch.Tensor, name, _mask_guard(name, original)))
        stack.enter_context(mock.patch.object(torch, "where", _where))
        yield


@contextmanager
def sync_free_path(enabled: bool = True) -> Iterator[None]:
    """Run focalrec's accelerator code path on CPU tensors (``enabled=False``: leave it alone)."""
    with mock.patch.object(_topk, "_FORCE_SYNC_FREE", enabled):
        yield
