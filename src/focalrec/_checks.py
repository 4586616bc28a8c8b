"""Argument checks shared by the public functions: one rule, one wording.

The rule, as in ``torch.nn.functional``: a wrong **type, dtype or device** raises ``TypeError``;
a wrong **value or shape** raises ``ValueError``. Every message names the argument in backticks,
says what was expected and what was received. Checks that read tensor values (and so would make
an accelerator wait) belong behind a ``validate_args`` flag at the call site; the checks here
look at Python values, shapes, dtypes and devices only, unless they say otherwise.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor

__all__ = [
    "check_chunk_size",
    "check_int",
    "check_linear_layer",
    "check_process_group",
    "check_same_device",
    "check_tensor",
]


def check_tensor(x: object, name: str, *, floating: bool = False) -> Tensor:
    """``x`` itself, after checking that it is a tensor (a floating one when ``floating``)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_int(value: object, name: str, *, minimum: int) -> int:
    """``value`` as an int, after checking that it is one (not a bool) and ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value}")
    return value


def check_same_device(x: Tensor, name: str, reference: Tensor, reference_name: str) -> None:
    """``x`` must be on the device of ``reference`` (a ``TypeError`` otherwise, as in torch)."""
    if x.device != reference.device:
        raise TypeError(
            f"`{name}` must be on the device of `{reference_name}` ({reference.device}), "
            f"got {x.device}"
        )


def check_linear_layer(
    input: object, linear_weight: object, linear_bias: object, *, same_dtype: bool = True
) -> None:
    """The factors of a linear output layer over the items, as ``F.linear`` takes them:
    ``input`` ``(N, d)``, ``linear_weight`` ``(C, d)``, ``linear_bias`` ``(C,)`` or None, all
    floating, on one device, and of one dtype unless ``same_dtype`` is False (autocast casts
    them)."""
    x = check_tensor(input, "input", floating=True)
    if x.ndim != 2:
        raise ValueError(f"`input` must have shape (N, d), got shape {tuple(x.shape)}")
    d = x.shape[1]
    w = check_tensor(linear_weight, "linear_weight", floating=True)
    if w.ndim != 2 or w.shape[1] != d:
        raise ValueError(
            f"`linear_weight` must have shape (C, {d}) for `input` of shape {tuple(x.shape)}, "
            f"got shape {tuple(w.shape)}"
        )
    factors = [("linear_weight", w)]
    if linear_bias is not None:
        b = check_tensor(linear_bias, "linear_bias", floating=True)
        if tuple(b.shape) != (w.shape[0],):
            raise ValueError(
                f"`linear_bias` must have shape ({w.shape[0]},) (one value per row of "
                f"`linear_weight`), got shape {tuple(b.shape)}"
            )
        factors.append(("linear_bias", b))
    for name, t in factors:
        if same_dtype and t.dtype != x.dtype:
            raise TypeError(f"`{name}` must have the dtype of `input` ({x.dtype}), got {t.dtype}")
        check_same_device(t, name, x, "input")


def check_chunk_size(chunk_size: object) -> tuple[int, int] | None:
    """``chunk_size`` as ``(rows, items)``: the most rows and items of one block of scores or
    logits that a streamed function forms at once; ``None`` leaves the choice to the function."""
    if chunk_size is None:
        return None
    if not isinstance(chunk_size, (tuple, list)) or len(chunk_size) != 2:
        raise TypeError(
            f"`chunk_size` must be a pair (rows, items) of ints or None, "
            f"got {type(chunk_size).__name__} {chunk_size!r}"
        )
    rows = check_int(chunk_size[0], "chunk_size[0] (rows)", minimum=1)
    items = check_int(chunk_size[1], "chunk_size[1] (items)", minimum=1)
    return rows, items


def check_process_group(process_group: object) -> dist.ProcessGroup | None:
    """``process_group`` itself: None, or a group of an initialized ``torch.distributed``."""
    if process_group is None:
        return None
    if not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            f"`process_group` must be a torch.distributed.ProcessGroup (such as "
            f"torch.distributed.group.WORLD) or None, got {type(process_group).__name__}"
        )
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "`process_group` was given but torch.distributed is not initialized "
            "(call torch.distributed.init_process_group first)"
        )
    return process_group
