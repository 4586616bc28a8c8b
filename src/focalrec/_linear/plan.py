"""The plan of one call of the fused layer: its arguments checked, its targets, weights and
divisor prepared, and the shape of its chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from focalrec._checks import (
    check_chunk_size,
    check_linear_layer,
    check_process_group,
    check_same_device,
)
from focalrec._focal.inputs import FocalInputs
from focalrec._indices import is_index_list, values_readable
from focalrec._linear.loop import autocast_on
from focalrec._shard import gather_sizes, item_layout
from focalrec.losses import (
    _check_hyper,
    _check_pos_weight,
    _check_targets,
    _check_weight,
    _num_elements,
    _num_positives,
)

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEVICE_CHUNK_SIZE",
    "LINEAR_REDUCTIONS",
    "Chunks",
    "Family",
    "LinearReduction",
    "Plan",
    "autocast_dtype",
    "check_reduction",
    "make_plan",
]

LinearReduction = Literal["mean", "sum", "sum_over_positives"]
LINEAR_REDUCTIONS: tuple[str, ...] = ("mean", "sum", "sum_over_positives")
"""The accepted values of ``reduction`` (``"none"`` would be the ``(N, C)`` tensor itself)."""

DEFAULT_CHUNK_SIZE: tuple[int, int] = (2048, 1024)
"""``(rows, items)`` of one chunk of logits by default on the CPU: 2M elements, 8 MiB of float32.

Measured with ``benchmarks/bench_linear.py`` on a 2-core x86 CPU: chunks of 1M to 8M elements
all run faster than the unfused loss (the chunk stays in cache between its matmul, the kernel and
the two products), smaller ones lose time to the matmuls' efficiency.
"""

DEVICE_CHUNK_SIZE: tuple[int, int] = (8192, 8192)
"""The default on accelerators, where each operation is a kernel launch: 64M elements (256 MiB of
float32), as the torch backend's blocks there. Not tuned: pass ``chunk_size`` to trade memory
for launches."""


@dataclass(frozen=True)
class Family:
    """Which member of the sigmoid loss family, as the public functions take its options (the
    focal loss: ``gamma_neg = None``, ``clip = 0``; ASL otherwise); ``gamma`` is the positive
    terms' (and, for the focal loss, every term's). Checked by :func:`make_plan`."""

    alpha: float | Tensor | None
    gamma: float
    gamma_neg: float | None = None
    clip: float = 0.0
    pos_weight: float | Tensor | None = None


@dataclass(frozen=True)
class Chunks:
    """What the chunk loop needs besides ``input``, ``linear_weight`` and ``linear_bias``.

    Index lists are shifted to this range's ids (``target - item_offset``), so that column ``j``
    of the weight is item ``j`` for the kernel, and ``alpha_vec`` and ``pos_weight_vec`` cover
    the range's items. ``weight`` is as given (broadcastable to ``(N, C)``, in the compute
    dtype); ``dtype`` is the dtype the matmuls run in: the input's, or autocast's. The loss's
    options mean what :class:`~focalrec._focal.inputs.FocalInputs`' do.
    """

    index: Tensor | None
    dense: Tensor | None
    weight: Tensor | None
    alpha: float | None
    alpha_vec: Tensor | None
    gamma: float
    rows: int
    items: int
    dtype: torch.dtype
    gamma_neg: float | None = None
    clip: float = 0.0
    pos_weight: float | None = None
    pos_weight_vec: Tensor | None = None

    def inputs(
        self, logits: Tensor, rows: slice, cols: slice, weight: Tensor | None
    ) -> FocalInputs:
        """The kernel's inputs for the chunk ``logits`` of rows ``rows`` and items ``cols``
        (``weight``: the call's weight expanded to ``(N, C)``, or None)."""
        return FocalInputs(
            logits=logits,
            dense=None if self.dense is None else self.dense[rows, cols],
            index=None if self.index is None else self.index[rows],
            alpha=self.alpha,
            alpha_vec=self.alpha_vec,
            gamma=self.gamma,
            weight=None if weight is None else weight[rows, cols],
            scale=None,
            col_offset=cols.start,
            gamma_neg=self.gamma_neg,
            clip=self.clip,
            pos_weight=self.pos_weight,
            pos_weight_vec=self.pos_weight_vec,
        )


@dataclass(frozen=True)
class Plan:
    """Everything a call needs besides ``input``, ``linear_weight`` and ``linear_bias``."""

    chunks: Chunks
    reduction: str
    divisor_part: Tensor
    group: ProcessGroup | None
    read_values: bool


def make_plan(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    family: Family,
    reduction: str,
    weight: Tensor | None,
    chunk_size: tuple[int, int] | None,
    item_offset: int | None,
    num_items: int | None,
    process_group: ProcessGroup | None,
    validate_args: bool,
) -> Plan:
    """Check the arguments and prepare the targets, weights and divisor of one call."""
    autocast = autocast_dtype(input, linear_weight, linear_bias)
    check_linear_layer(input, linear_weight, linear_bias, same_dtype=autocast is None)
    dtype = input.dtype if autocast is None else autocast
    n, c = input.shape[0], linear_weight.shape[0]
    check_reduction(reduction)
    read_values = validate_args and values_readable()
    alpha, pos_weight = family.alpha, family.pos_weight
    _check_hyper(alpha, family.gamma, reduction, c, read_values)
    _check_pos_weight(pos_weight, c, input, read_values)
    chunk = check_chunk_size(chunk_size)
    if chunk is None:
        chunk = DEFAULT_CHUNK_SIZE if input.device.type == "cpu" else DEVICE_CHUNK_SIZE
    check_process_group(process_group)
    if isinstance(target, Tensor):
        check_same_device(target, "target", input, "input")
    ids = read_values and isinstance(target, Tensor) and is_index_list(target)
    counts = None  # the ranks' items, gathered where a left-out value depends on them
    if process_group is not None and (item_offset is None or (num_items is None and ids)):
        counts = [row[0] for row in gather_sizes([c], process_group, input.device)]
    item_offset, catalogue = item_layout(c, item_offset, num_items, process_group, counts)
    sparse = _check_targets(
        (n, c), target, read_values, name="target", num_classes=catalogue if ids else None
    )
    cd = torch.promote_types(dtype, torch.float32)
    if weight is not None:
        _check_weight(weight, (n, c), read_values)
        weight = weight.to(device=input.device, dtype=cd)
    index = None
    if sparse:
        index = target.to(torch.int64)
        if item_offset:
            index = index - item_offset  # ids of other ranges fall outside [0, C)
        index = index.contiguous()
    if reduction == "mean":
        divisor_part = _num_elements((n, c), weight, torch.float64, input.device)
    elif reduction == "sum_over_positives":
        source = index if index is not None else target
        divisor_part = _num_positives(source, sparse, weight, (n, c)).to(torch.float64)
    else:
        divisor_part = torch.zeros((), dtype=torch.float64, device=input.device)
    return Plan(
        chunks=Chunks(
            index=index,
            dense=None if sparse else target,
            weight=weight,
            alpha=None if alpha is None or isinstance(alpha, Tensor) else float(alpha),
            alpha_vec=alpha.to(device=input.device, dtype=cd)
            if isinstance(alpha, Tensor)
            else None,
            gamma=float(family.gamma),
            rows=chunk[0],
            items=chunk[1],
            dtype=dtype,
            gamma_neg=family.gamma_neg,
            clip=family.clip,
            pos_weight=None
            if pos_weight is None or isinstance(pos_weight, Tensor)
            else float(pos_weight),
            pos_weight_vec=pos_weight.to(device=input.device, dtype=cd).expand(c).contiguous()
            if isinstance(pos_weight, Tensor)
            else None,
        ),
        reduction=reduction,
        divisor_part=divisor_part,
        group=process_group,
        read_values=read_values,
    )


def autocast_dtype(input: object, linear_weight: object, linear_bias: object) -> torch.dtype | None:
    """The dtype that autocast runs ``F.linear(input, linear_weight, linear_bias)`` in, or None
    where autocast is off for the input's device or leaves the call alone (a float64 or
    non-floating operand, which the argument checks then judge)."""
    if not isinstance(input, Tensor):
        return None
    device_type = input.device.type
    if not autocast_on(device_type):
        return None
    eligible = (torch.float16, torch.bfloat16, torch.float32)
    for t in (input, linear_weight, linear_bias):
        if t is not None and not (isinstance(t, Tensor) and t.dtype in eligible):
            return None
    return torch.get_autocast_dtype(device_type)


def check_reduction(reduction: object) -> None:
    if reduction == "none":
        raise ValueError(
            f"`reduction` must be one of {LINEAR_REDUCTIONS}, got 'none': the elementwise loss "
            "is the (N, C) tensor that the fused loss never forms; compute it with "
            "sigmoid_focal_loss(F.linear(input, linear_weight, linear_bias), target, "
            "reduction='none')"
        )
    if reduction not in LINEAR_REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {LINEAR_REDUCTIONS}, got {reduction!r}")
