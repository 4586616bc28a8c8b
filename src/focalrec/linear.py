r"""Sigmoid focal loss with the output layer fused in: the ``(N, C)`` logits are never formed.

A recommender's output layer scores every item: ``logits = F.linear(features, W, b)`` is
``(N, C)``, 16 GiB for a batch of 4,096 and a million items, and its gradient as much again.
A sigmoid loss is a sum of independent per-item terms, so the same loss and the same gradients
can be computed chunk by chunk: each chunk of logits is formed by a matmul, turned in place into
its focal gradient by the loss's own kernel, and folded into the gradients of the features, the
weight and the bias. The same decomposition splits a catalogue over processes by item ranges
(``process_group``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from focalrec._checks import (
    check_chunk_size,
    check_int,
    check_linear_layer,
    check_process_group,
    check_same_device,
)
from focalrec._focal.inputs import FocalInputs
from focalrec._focal.op import evaluate
from focalrec._indices import is_index_list, values_readable
from focalrec.losses import (
    _check_hyper,
    _check_targets,
    _check_weight,
    _num_elements,
    _num_positives,
)
from focalrec.priors import init_prior_bias_

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEVICE_CHUNK_SIZE",
    "LinearFocalLoss",
    "LinearReduction",
    "linear_sigmoid_focal_loss",
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


def linear_sigmoid_focal_loss(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    alpha: float | Tensor | None = 0.25,
    gamma: float = 2.0,
    reduction: LinearReduction = "mean",
    weight: Tensor | None = None,
    chunk_size: tuple[int, int] | None = None,
    item_offset: int = 0,
    num_items: int | None = None,
    process_group: ProcessGroup | None = None,
    validate_args: bool = True,
) -> Tensor:
    r"""Sigmoid focal loss of the logits ``F.linear(input, linear_weight, linear_bias)``, computed
    without forming them.

    Equal in value and in the gradients of ``input``, ``linear_weight`` and ``linear_bias`` (to
    floating-point rounding) to

    .. code-block:: python

        sigmoid_focal_loss(F.linear(input, linear_weight, linear_bias), target, ...)

    (see :func:`focalrec.sigmoid_focal_loss` for the loss, its ``alpha``, ``gamma``, ``weight``
    and the reductions), as :func:`torch.nn.functional.linear_cross_entropy` is to
    ``cross_entropy(linear(...))``. With :math:`z = x W^\top + b`,

    .. math::

        L = \frac{1}{D} \sum_{i < N} \sum_{j < C} w_{ij}\,\mathrm{FL}(z_{ij}, t_{ij}), \qquad
        \frac{\partial L}{\partial x} = G W, \quad
        \frac{\partial L}{\partial W} = G^\top x, \quad
        \frac{\partial L}{\partial b} = \mathbf{1}^\top G,

    where :math:`G_{ij} = w_{ij} \mathrm{FL}'(z_{ij}, t_{ij}) / D` and :math:`D` is the
    reduction's divisor. The logits are formed ``chunk_size`` at a time by a matmul; the loss's
    kernel turns each chunk, in place, into its block of :math:`G`, which the three products
    above consume before the next chunk is formed.

    **Memory.** Besides the arguments, a call holds one chunk of logits, ``rows * items``
    elements of the input's dtype (by default :data:`DEFAULT_CHUNK_SIZE` on the CPU, 8 MiB of
    float32, and :data:`DEVICE_CHUNK_SIZE` on accelerators), and, when gradients are wanted,
    the three gradients, :math:`(N d + C d + C)` elements (float32 for half-precision inputs),
    computed in the forward pass and handed to backward, which only scales them by the incoming
    gradient: however large :math:`N C` is (under autocast, also the operands cast to its dtype,
    :math:`N d + C d + C` elements). The unfused computation holds :math:`2 N C`
    elements (the logits and their gradient).
    ``benchmarks/bench_linear.py`` measures both.

    **Precision.** The matmuls run in the input's dtype, as ``F.linear`` does; the focal terms
    are computed in float32 (float64 for float64 inputs) and the gradients accumulate over the
    chunks in that dtype, then are cast to the dtype of each input.

    **Autocast.** Under ``torch.autocast`` for the input's device, the matmuls run in the
    autocast dtype, as ``F.linear``'s do: ``input``, ``linear_weight`` and ``linear_bias`` may
    then be of different floating dtypes (say bfloat16 features from an autocast model and a
    float32 layer) and are cast to it, once per call (float64 operands are left alone, as
    autocast leaves them); the terms, the loss (float32) and the gradients' accumulation stay
    in float32, and each gradient is cast straight from the float32 accumulator to its own
    tensor's dtype.

    **torch.compile.** The call is one operator, ``focalrec::linear_focal_loss``, with a fake
    implementation and a registered backward: ``torch.compile`` (``fullgraph=True`` and
    ``dynamic=True`` included) traces a training step through it without a graph break. As
    with :func:`focalrec.sigmoid_focal_loss`, the checks that read values (``validate_args``)
    are skipped while compiling, the shape and dtype checks are not. With ``process_group``
    the call runs eagerly under ``torch.compile`` (a graph break, and an error under
    ``fullgraph=True``): its all-reduces stay outside the graph.

    **Item shards.** Row ``j`` of ``linear_weight`` is catalogue item ``item_offset + j``;
    index-list targets hold catalogue ids (below ``num_items``), and ids outside
    ``[item_offset, item_offset + C)`` are positives of other items that add nothing here.
    With ``process_group``, each rank passes its own contiguous range of the catalogue
    (``linear_weight``, ``linear_bias``, a per-item ``alpha``, dense targets and ``weight``
    cover its ``C`` items; the ranges partition the catalogue) and the same ``input`` and
    index-list ``target`` as every other rank. The call then returns the loss over the whole
    catalogue on every rank (the divisor counts every rank's items, positives or weights; one
    all-reduce of two numbers), and backward gives each rank the gradient of its own weight and
    bias and the whole gradient of ``input``, summed over the ranks by an all-reduce. Every rank
    must call forward and backward. :class:`LinearFocalLoss` splits a catalogue into such
    ranges.

    Args:
        input: Features ``(N, d)``, floating point.
        linear_weight: Output-layer weight ``(C, d)``, with the input's device and dtype
            (under autocast, any of float16, bfloat16 and float32).
        target: Either an **index list** ``(N, m)`` of catalogue ids padded with ``-1``
            (repeats count once), or **dense** ``(N, C)`` floating or bool targets in
            ``[0, 1]``.
        linear_bias: Optional output-layer bias ``(C,)``.
        alpha: Weight of the positive class in ``[0, 1]``, a per-item tensor ``(C,)``, or
            ``None``.
        gamma: Focusing parameter, ``>= 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"sum_over_positives"``, as in
            :func:`focalrec.sigmoid_focal_loss`. ``"none"`` is rejected: its result is the
            ``(N, C)`` tensor this function exists to avoid.
        weight: Optional non-negative elementwise weight or bool mask, broadcastable to
            ``(N, C)`` (e.g. ``(C,)`` per item, ``(N, 1)`` per row).
        chunk_size: ``(rows, items)``: the most logits formed at once; default
            :data:`DEFAULT_CHUNK_SIZE` on the CPU, :data:`DEVICE_CHUNK_SIZE` elsewhere. The
            result does not depend on it beyond rounding.
        item_offset: Catalogue id of the first row of ``linear_weight``.
        num_items: Size of the whole catalogue, which index-list ids must lie below (checked
            with ``validate_args``); by default ``item_offset + C``, or with
            ``process_group`` every rank's ``C`` added up (one all-reduce, when checking).
        process_group: The group over which the catalogue is split, or ``None``.
        validate_args: Check the values of ``target``, ``alpha`` and ``weight`` and that the
            loss is not NaN (reads them from the device). Shapes, dtypes and ``gamma`` are
            always checked.

    Returns:
        The loss, a scalar of dtype ``torch.promote_types(input.dtype, torch.float32)``.
        Gradients flow to ``input``, ``linear_weight`` and ``linear_bias``; they cannot be
        differentiated again (``create_graph=True`` gives first derivatives whose own backward
        raises). A second backward through a retained graph recomputes them.

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If a shape or value is out of its range, or the loss is NaN.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> features = torch.randn(4, 8, requires_grad=True)
        >>> head = torch.nn.Linear(8, 100)
        >>> positives = torch.tensor([[3, 17, -1], [42, -1, -1], [0, 99, 5], [7, 7, -1]])
        >>> fused = linear_sigmoid_focal_loss(
        ...     features, head.weight, positives, linear_bias=head.bias, chunk_size=(3, 32)
        ... )
        >>> from focalrec import sigmoid_focal_loss
        >>> unfused = sigmoid_focal_loss(head(features), positives)
        >>> torch.allclose(fused, unfused)
        True
        >>> fused.backward()
        >>> grad = features.grad.clone()
        >>> features.grad = None
        >>> unfused.backward()
        >>> torch.allclose(grad, features.grad, atol=1e-7)
        True
    """
    plan = _plan(
        input,
        linear_weight,
        target,
        linear_bias,
        alpha,
        gamma,
        reduction,
        weight,
        chunk_size,
        item_offset,
        num_items,
        process_group,
        validate_args,
    )
    need = tuple(
        torch.is_grad_enabled() and t is not None and t.requires_grad
        for t in (input, linear_weight, linear_bias)
    )
    loss = _apply(input, linear_weight, linear_bias, plan, need)
    if plan.read_values and bool(torch.isnan(loss)):
        _raise_nan(input, linear_weight, linear_bias)
    return loss


# --------------------------------------------------------------------------------------------------
# argument checks and the plan of a call


@dataclass(frozen=True)
class _Chunks:
    """What the chunk loop needs besides ``input``, ``linear_weight`` and ``linear_bias``.

    Index lists are shifted to this range's ids (``target - item_offset``), so that column ``j``
    of the weight is item ``j`` for the kernel, and ``alpha_vec`` covers the range's items.
    ``weight`` is as given (broadcastable to ``(N, C)``, in the compute dtype); ``dtype`` is the
    dtype the matmuls run in: the input's, or autocast's.
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


@dataclass(frozen=True)
class _Plan:
    """Everything a call needs besides ``input``, ``linear_weight`` and ``linear_bias``."""

    chunks: _Chunks
    reduction: str
    divisor_part: Tensor
    group: ProcessGroup | None
    read_values: bool


def _plan(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    alpha: float | Tensor | None,
    gamma: float,
    reduction: str,
    weight: Tensor | None,
    chunk_size: tuple[int, int] | None,
    item_offset: int,
    num_items: int | None,
    process_group: ProcessGroup | None,
    validate_args: bool,
) -> _Plan:
    """Check the arguments and prepare the targets, weights and divisor of one call."""
    autocast = _autocast_dtype(input, linear_weight, linear_bias)
    check_linear_layer(input, linear_weight, linear_bias, same_dtype=autocast is None)
    dtype = input.dtype if autocast is None else autocast
    n, c = input.shape[0], linear_weight.shape[0]
    _check_reduction(reduction)
    read_values = validate_args and values_readable()
    _check_hyper(alpha, gamma, reduction, c, read_values)
    chunk = check_chunk_size(chunk_size)
    if chunk is None:
        chunk = DEFAULT_CHUNK_SIZE if input.device.type == "cpu" else DEVICE_CHUNK_SIZE
    check_int(item_offset, "item_offset", minimum=0)
    check_process_group(process_group)
    if num_items is not None and check_int(num_items, "num_items", minimum=0) < item_offset + c:
        raise ValueError(
            f"`num_items` must be an int >= item_offset + C = {item_offset + c}, got {num_items!r}"
        )
    if isinstance(target, Tensor):
        check_same_device(target, "target", input, "input")
    catalogue = None
    if read_values and isinstance(target, Tensor) and is_index_list(target):
        catalogue = _catalogue_size(num_items, item_offset, c, process_group, input.device)
    sparse = _check_targets((n, c), target, read_values, name="target", num_classes=catalogue)
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
    return _Plan(
        chunks=_Chunks(
            index=index,
            dense=None if sparse else target,
            weight=weight,
            alpha=None if alpha is None or isinstance(alpha, Tensor) else float(alpha),
            alpha_vec=alpha.to(device=input.device, dtype=cd)
            if isinstance(alpha, Tensor)
            else None,
            gamma=float(gamma),
            rows=chunk[0],
            items=chunk[1],
            dtype=dtype,
        ),
        reduction=reduction,
        divisor_part=divisor_part,
        group=process_group,
        read_values=read_values,
    )


def _autocast_dtype(
    input: object, linear_weight: object, linear_bias: object
) -> torch.dtype | None:
    """The dtype that autocast runs ``F.linear(input, linear_weight, linear_bias)`` in, or None
    where autocast is off for the input's device or leaves the call alone (a float64 or
    non-floating operand, which the argument checks then judge)."""
    if not isinstance(input, Tensor):
        return None
    device_type = input.device.type
    if not _autocast_on(device_type):
        return None
    eligible = (torch.float16, torch.bfloat16, torch.float32)
    for t in (input, linear_weight, linear_bias):
        if t is not None and not (isinstance(t, Tensor) and t.dtype in eligible):
            return None
    return torch.get_autocast_dtype(device_type)


def _check_reduction(reduction: object) -> None:
    if reduction == "none":
        raise ValueError(
            f"`reduction` must be one of {LINEAR_REDUCTIONS}, got 'none': the elementwise loss "
            "is the (N, C) tensor that the fused loss never forms; compute it with "
            "sigmoid_focal_loss(F.linear(input, linear_weight, linear_bias), target, "
            "reduction='none')"
        )
    if reduction not in LINEAR_REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {LINEAR_REDUCTIONS}, got {reduction!r}")


def _catalogue_size(
    num_items: int | None,
    item_offset: int,
    items: int,
    process_group: ProcessGroup | None,
    device: torch.device,
) -> int:
    """``num_items``, else the ranks' items added up (one all-reduce), else the end of this
    range."""
    if num_items is not None:
        return num_items
    if process_group is None:
        return item_offset + items
    size = torch.tensor(float(items), dtype=torch.float64, device=device)
    dist.all_reduce(size, group=process_group)
    return int(size)


def _raise_nan(input: Tensor, linear_weight: Tensor, linear_bias: Tensor | None) -> None:
    """The loss is NaN: name the argument that holds a non-finite value, if one does."""
    tensors = (("input", input), ("linear_weight", linear_weight), ("linear_bias", linear_bias))
    culprits = [f"`{name}`" for name, t in tensors if t is not None and not t.isfinite().all()]
    where = (
        f"non-finite values in {', '.join(culprits)}"
        if culprits
        else "finite arguments whose products overflow"
    )
    raise ValueError(
        f"the loss is NaN: the logits F.linear(input, linear_weight, linear_bias) must not hold "
        f"NaN, got {where}; pass validate_args=False to skip this check"
    )


# --------------------------------------------------------------------------------------------------
# the fused pass


def _fused_pass(
    chunks: _Chunks, x: Tensor, w: Tensor, b: Tensor | None, need: tuple[bool, ...]
) -> tuple[Tensor, list[Tensor | None]]:
    """The sum of the (weighted, unscaled) terms and the gradients of ``x``, ``w``, ``b`` that
    ``need`` asks for, over chunks of at most ``chunks.rows x chunks.items`` logits.

    The matmuls run in ``chunks.dtype`` (``x``, ``w`` and ``b`` are cast to it first, once, where
    they differ, as autocast casts ``F.linear``'s operands); the terms, their sum and the
    gradients are in float32 for half precision, else in that dtype. Items are the outer loop,
    so a chunk of the weight and of its gradient stays in cache while the rows pass; the
    features and their gradient (``N d``) are the part read again.
    """
    n, c = x.shape[0], w.shape[0]
    acc = torch.promote_types(chunks.dtype, torch.float32)
    grads: list[Tensor | None] = [
        torch.zeros(t.shape, dtype=acc, device=x.device) if t is not None and wanted else None
        for t, wanted in zip((x, w, b), need, strict=True)
    ]
    gx, gw, gb = grads
    any_grad = any(g is not None for g in grads)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    x, w = x.to(chunks.dtype), w.to(chunks.dtype)
    b = None if b is None else b.to(chunks.dtype)
    weight = None if chunks.weight is None else chunks.weight.expand(n, c)
    step_r, step_c = max(min(chunks.rows, n), 1), max(min(chunks.items, c), 1)
    buffer = torch.empty(step_r * step_c, dtype=x.dtype, device=x.device)
    ones = torch.ones(step_r if gb is not None else 0, dtype=x.dtype, device=x.device)
    with _autocast_off(x.device.type):
        for c0 in range(0, c, step_c):
            c1 = min(c0 + step_c, c)
            w_c = w[c0:c1]
            for r0 in range(0, n, step_r):
                r1 = min(r0 + step_r, n)
                x_r = x[r0:r1]
                z = buffer[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0)
                if b is None:
                    torch.mm(x_r, w_c.t(), out=z)
                else:
                    torch.addmm(b[c0:c1], x_r, w_c.t(), out=z)
                inp = FocalInputs(
                    logits=z,
                    dense=None if chunks.dense is None else chunks.dense[r0:r1, c0:c1],
                    index=None if chunks.index is None else chunks.index[r0:r1],
                    alpha=chunks.alpha,
                    alpha_vec=chunks.alpha_vec,
                    gamma=chunks.gamma,
                    weight=None if weight is None else weight[r0:r1, c0:c1],
                    scale=None,
                    col_offset=c0,
                )
                value, g = evaluate(inp, False, any_grad, grad_into=z if any_grad else None)
                total += value
                if g is None:
                    continue
                if gx is not None:
                    _add_product(gx[r0:r1], g, w_c)
                if gw is not None:
                    _add_product(gw[c0:c1], g.t(), x_r)
                if gb is not None:
                    _add_column_sums(gb[c0:c1], g, ones)
    return total, grads


def _autocast_on(device_type: str) -> bool:
    """Whether autocast is on for ``device_type``."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """A context in which autocast leaves the chunk loop's operations alone, where it is on."""
    if _autocast_on(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _add_product(out: Tensor, a: Tensor, b: Tensor) -> None:
    """``out += a @ b``, in place; the product in the operands' dtype when ``out`` is wider."""
    if out.dtype == a.dtype:
        out.addmm_(a, b)
    else:
        out += torch.mm(a, b)


def _add_column_sums(out: Tensor, a: Tensor, ones: Tensor) -> None:
    """``out += a.sum(0)``, in place: a matrix-vector product, which is several times faster than
    a column sum on the CPU; in ``out``'s dtype when it is wider than ``a``'s."""
    if out.dtype == a.dtype:
        out.addmv_(a.t(), ones[: a.shape[0]])
    else:
        out += a.sum(0, dtype=out.dtype)


def _finish_divisor(reduction: str, total: Tensor) -> Tensor:
    """The divisor from its (all-reduced) count: 1 for ``"sum"``, at least 1 for
    ``"sum_over_positives"``, 1 in place of 0 for ``"mean"``."""
    if reduction == "sum":
        return torch.ones_like(total)
    if reduction == "sum_over_positives":
        return total.clamp_min(1.0)
    return torch.where(total > 0, total, torch.ones_like(total))


class _FusedLinearFocal(torch.autograd.Function):
    """The fused loss; forward computes the gradients, backward scales and hands them on."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        w: Tensor,
        b: Tensor | None,
        plan: _Plan,
        need: tuple[bool, ...],
    ) -> Tensor:
        total, grads = _fused_pass(plan.chunks, x, w, b, need)
        stats = torch.stack([total, plan.divisor_part])
        if plan.group is not None:
            dist.all_reduce(stats, group=plan.group)
        divisor = _finish_divisor(plan.reduction, stats[1])
        ctx.kept = grads
        ctx.plan, ctx.need, ctx.divisor = plan, need, divisor
        ctx.save_for_backward(x, w, b)
        return (stats[0] / divisor).to(torch.promote_types(plan.chunks.dtype, torch.float32))

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, w, b = ctx.saved_tensors
        grads: list[Tensor | None] | None = ctx.kept
        ctx.kept = None  # handed on: a second backward through a retained graph recomputes them
        differentiated = torch.is_grad_enabled()
        with torch.no_grad():
            if grads is None:
                grads = _fused_pass(ctx.plan.chunks, x, w, b, ctx.need)[1]
            factor = grad_out.to(torch.float64) / ctx.divisor
            out: list[Tensor | None] = []
            for g, t in zip(grads, (x, w, b), strict=True):
                if g is not None:
                    g.mul_(factor.to(g.dtype))
                    g = g.to(t.dtype)
                out.append(g)
            if ctx.plan.group is not None and out[0] is not None:
                dist.all_reduce(out[0], group=ctx.plan.group)
        if differentiated:  # create_graph=True: first derivatives whose backward raises
            sources = [t for t in (x, w, b, grad_out) if t is not None and t.requires_grad]
            out = [None if g is None else _no_second_derivative(g, sources) for g in out]
        return out[0], out[1], out[2], None, None


_INIT_BLOCK_ELEMENTS = 1 << 22  # values drawn at once when a rank initializes its item range


def _uniform_rows_(out: Tensor, start: int, total: int, bound: float) -> None:
    """Fill ``out`` (CPU) with rows ``[start, start + len(out))`` of a ``(total, *out.shape[1:])``
    ``uniform_(-bound, bound)`` draw, block by block, drawing (and dropping) the other rows too
    so the generator ends where the whole draw leaves it."""
    width = math.prod(out.shape[1:])
    step = max(1, _INIT_BLOCK_ELEMENTS // max(width, 1))
    end = start + out.shape[0]
    for lo in range(0, total, step):
        hi = min(total, lo + step)
        block = torch.empty((hi - lo, *out.shape[1:]), dtype=out.dtype).uniform_(-bound, bound)
        a, b = max(lo, start), min(hi, end)
        if a < b:
            out[a - start : b - start].copy_(block[a - lo : b - lo])


def _no_second_derivative(g: Tensor, sources: list[Tensor]) -> Tensor:
    """``g``, in the graph of ``sources`` (what it depends on), with a backward that raises."""
    out: Tensor = _NoSecondDerivative.apply(g, *sources)  # type: ignore[no-untyped-call]
    return out


class _NoSecondDerivative(torch.autograd.Function):
    """Identity on its first input, whose backward raises: the fused loss has no second
    derivative. The other inputs are what the first depends on."""

    @staticmethod
    def forward(ctx: Any, g: Tensor, *sources: Tensor) -> Tensor:
        return g.view_as(g)

    @staticmethod
    def backward(ctx: Any, *_: Tensor) -> tuple[Tensor, ...]:
        raise RuntimeError(
            "linear_sigmoid_focal_loss has no second derivative (double backward, "
            "torch.func.hessian); differentiate sigmoid_focal_loss(F.linear(...), ...) instead"
        )


def _apply_eager(
    x: Tensor, w: Tensor, b: Tensor | None, plan: _Plan, need: tuple[bool, ...]
) -> Tensor:
    loss: Tensor = _FusedLinearFocal.apply(x, w, b, plan, need)  # type: ignore[no-untyped-call]
    return loss


def _apply(x: Tensor, w: Tensor, b: Tensor | None, plan: _Plan, need: tuple[bool, ...]) -> Tensor:
    """The fused loss: eagerly, :class:`_FusedLinearFocal`; under ``torch.compile``, the operator
    ``focalrec::linear_focal_loss`` (no graph break), except over a process group, whose
    all-reduces stay outside the graph: the call then runs eagerly (a graph break).

    Eager calls (but over a process group) neither call the operator nor apply
    ``torch.compiler.disable``: either would import dynamo (and triton, where it is installed)
    on the first call.
    """
    if not torch.compiler.is_compiling():
        if plan.group is not None:
            _eager_over_group()  # made here, so that a compiled call's graph break says why
        return _apply_eager(x, w, b, plan, need)
    if plan.group is not None:
        return _eager_over_group()(x, w, b, plan, need)
    ch = plan.chunks
    total: Tensor = _linear_focal_loss_op(
        x,
        w,
        b,
        ch.index,
        ch.dense,
        ch.weight,
        ch.alpha_vec,
        ch.alpha,
        ch.gamma,
        ch.rows,
        ch.items,
        ch.dtype,
        *need,
    )[0]
    divisor = _finish_divisor(plan.reduction, plan.divisor_part)
    return (total / divisor).to(torch.promote_types(ch.dtype, torch.float32))


_EAGER_OVER_GROUP: list[Callable[..., Tensor]] = []

_OVER_GROUP_REASON = (
    "linear_sigmoid_focal_loss with a process_group runs eagerly under torch.compile: its "
    "all-reduces stay outside the graph (a graph break; fullgraph=True raises)"
)


def _eager_over_group() -> Callable[..., Tensor]:
    """:func:`_apply_eager` under ``torch.compiler.disable``, made once: by the first eager
    call or module over a process group, or else by the first compiled one (whose graph then
    breaks at the making too, with a reason less clear)."""
    if not _EAGER_OVER_GROUP:
        disabled = torch.compiler.disable(_apply_eager, reason=_OVER_GROUP_REASON)  # type: ignore[no-untyped-call]
        _EAGER_OVER_GROUP.append(disabled)
    return _EAGER_OVER_GROUP[0]


# --------------------------------------------------------------------------------------------------
# the operator that torch.compile sees


@torch.library.custom_op("focalrec::linear_focal_loss", mutates_args=())
def _linear_focal_loss_op(
    x: Tensor,
    w: Tensor,
    b: Tensor | None,
    index: Tensor | None,
    dense: Tensor | None,
    weight: Tensor | None,
    alpha_vec: Tensor | None,
    alpha: float | None,
    gamma: float,
    rows: int,
    items: int,
    dtype: torch.dtype,
    need_x: bool,
    need_w: bool,
    need_b: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(total, grad_x, grad_w, grad_b)``: the sum of the terms (float64) and the unscaled
    gradients (float32 for half precision, else ``dtype``; empty where not asked for), by
    :func:`_fused_pass`."""
    chunks = _Chunks(index, dense, weight, alpha, alpha_vec, gamma, rows, items, dtype)
    total, grads = _fused_pass(chunks, x, w, b, (need_x, need_w, need_b))
    acc = torch.promote_types(dtype, torch.float32)
    gx, gw, gb = (x.new_empty(0, dtype=acc) if g is None else g for g in grads)
    return total, gx, gw, gb


@_linear_focal_loss_op.register_fake
def _(
    x: Tensor,
    w: Tensor,
    b: Tensor | None,
    index: Tensor | None,
    dense: Tensor | None,
    weight: Tensor | None,
    alpha_vec: Tensor | None,
    alpha: float | None,
    gamma: float,
    rows: int,
    items: int,
    dtype: torch.dtype,
    need_x: bool,
    need_w: bool,
    need_b: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    acc = torch.promote_types(dtype, torch.float32)
    gx, gw, gb = (
        x.new_empty(t.shape if t is not None and wanted else (0,), dtype=acc)
        for t, wanted in ((x, need_x), (w, need_w), (b, need_b))
    )
    return x.new_empty((), dtype=torch.float64), gx, gw, gb


def _op_setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    x, w, b = inputs[:3]
    ctx.mark_non_differentiable(*output[1:])
    ctx.save_for_backward(*output[1:])
    ctx.dtypes = (x.dtype, w.dtype, None if b is None else b.dtype)
    ctx.need = inputs[-3:]


def _op_backward(ctx: Any, grad_total: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
    """The kept gradients times the incoming gradient (of the sum: 1 / divisor times the
    loss's), each cast to its tensor's dtype."""
    out = [
        (g * grad_total.to(g.dtype)).to(dtype) if wanted else None
        for g, dtype, wanted in zip(ctx.saved_tensors, ctx.dtypes, ctx.need, strict=True)
    ]
    return (*out, *(None,) * 12)


_linear_focal_loss_op.register_autograd(_op_backward, setup_context=_op_setup_context)


# --------------------------------------------------------------------------------------------------
# the module


class LinearFocalLoss(nn.Module):
    r"""An output layer and its sigmoid focal loss in one module, fused: a drop-in for
    ``nn.Linear(in_features, num_items)`` followed by :class:`focalrec.FocalLoss`.

    ``loss = head(features, target)`` equals ``FocalLoss(...)(linear(features), target)`` for
    an ``nn.Linear`` with the same weight and bias, computed by
    :func:`linear_sigmoid_focal_loss` without forming the ``(N, C)`` logits. The weight and
    bias are initialized as ``nn.Linear`` does (on a rank of an item split: that rank's rows of
    the unsplit layer's draw, the same seed giving the same layer), then the bias at the logit
    of ``prior`` (:func:`focalrec.init_prior_bias_`), as ``SequenceMLP``'s output layer; the
    state dict holds ``weight`` and ``bias`` as ``nn.Linear``'s does (a per-item ``alpha`` is a
    buffer that ``.to()`` moves but the state dict leaves out), so either loads the other's.

    **Item shards.** With ``process_group``, each rank of the group holds a contiguous range of
    the catalogue: rank ``r`` of ``R`` holds ``num_items // R`` items, one more for the first
    ``num_items % R`` ranks, starting at :attr:`item_offset`; ``weight`` is
    ``(num_items_local, in_features)``, and ``alpha`` and ``prior`` are given for the whole
    catalogue and sliced here. Every rank passes the same features and index-list targets (see
    :func:`linear_sigmoid_focal_loss` for what the loss and its gradients are then).

    **Scores and top-k.** :meth:`scores` returns logits when they are wanted (all items for a
    small batch, or given items). For the top-k over a large catalogue, pass the layer's
    ``weight`` and ``bias`` as item embeddings and item bias to a streamed top-k over
    embeddings (``topk_items_from_embeddings``), which never forms the ``(N, C)`` scores.

    Args:
        in_features: Size ``d`` of each feature vector.
        num_items: Number of items ``C`` in the catalogue (all ranks together).
        bias: Whether the layer has a bias.
        alpha: Positive-class weight in ``[0, 1]``, a per-item tensor ``(num_items,)``, or
            ``None``.
        gamma: Focusing parameter, ``>= 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"sum_over_positives"``.
        prior: The positive rate the bias starts from: a float in ``(0, 1)``, a per-item
            tensor ``(num_items,)``, or ``None`` to keep ``nn.Linear``'s initialization.
        chunk_size: ``(rows, items)`` of one chunk of logits; see
            :func:`linear_sigmoid_focal_loss`.
        process_group: The group over which the catalogue is split, or ``None``.
        validate_args: Check argument values on every call.
        device: Device of the parameters.
        dtype: Dtype of the parameters.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> head = LinearFocalLoss(16, 1000, prior=0.01, chunk_size=(64, 256))
        >>> features = torch.randn(32, 16, requires_grad=True)
        >>> loss = head(features, torch.randint(-1, 1000, (32, 3)))
        >>> loss.backward()
        >>> head.weight.grad.shape, features.grad.shape
        (torch.Size([1000, 16]), torch.Size([32, 16]))
        >>> head.scores(features[:2], items=torch.tensor([3, 999])).shape
        torch.Size([2, 2])
    """

    weight: Tensor
    bias: Tensor | None
    alpha: Tensor | float | None

    def __init__(
        self,
        in_features: int,
        num_items: int,
        *,
        bias: bool = True,
        alpha: float | Tensor | None = 0.25,
        gamma: float = 2.0,
        reduction: LinearReduction = "mean",
        prior: float | Tensor | None = 0.01,
        chunk_size: tuple[int, int] | None = None,
        process_group: ProcessGroup | None = None,
        validate_args: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("num_items", num_items)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be an int >= 0, got {value!r}")
        _check_reduction(reduction)
        _check_hyper(alpha, gamma, reduction, num_items, validate_args)
        check_chunk_size(chunk_size)
        check_process_group(process_group)
        if process_group is not None:
            _eager_over_group()  # so that under torch.compile the graph break says why
        self.in_features = in_features
        self.num_items = num_items
        self.process_group = process_group
        rank, ranks = (0, 1)
        if process_group is not None:
            rank, ranks = dist.get_rank(process_group), dist.get_world_size(process_group)
        sizes = [num_items // ranks + (r < num_items % ranks) for r in range(ranks)]
        self.item_offset = sum(sizes[:rank])
        self.num_items_local = sizes[rank]
        local = slice(self.item_offset, self.item_offset + self.num_items_local)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.num_items_local, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(self.num_items_local, **factory)) if bias else None
        self._init_parameters(prior[local] if isinstance(prior, Tensor) else prior)
        if isinstance(alpha, Tensor):
            self.register_buffer("alpha", alpha.detach()[local].clone(), persistent=False)
        else:
            self.alpha = None if alpha is None else float(alpha)
        self.gamma = float(gamma)
        self.reduction: LinearReduction = reduction
        self.chunk_size = chunk_size
        self.validate_args = validate_args

    def _init_parameters(self, prior: float | Tensor | None) -> None:
        """``nn.Linear``'s initialization, then the bias at the logit of ``prior``.

        A rank of an item split gets the rows that ``nn.Linear(in_features, num_items)`` on
        the CPU would draw for its range, and leaves the generator where that draw does: the
        same seed gives the split layer the unsplit one's weights, whatever the number of ranks.
        """
        if self.num_items_local == self.num_items:
            nn.Linear.reset_parameters(self)  # type: ignore[arg-type]
        else:
            # nn.Linear: kaiming_uniform_(a=sqrt(5)) for the weight, then U(+-1/sqrt(fan_in)).
            gain = nn.init.calculate_gain("leaky_relu", math.sqrt(5))
            fan_in = self.in_features
            bound = math.sqrt(3.0) * gain / math.sqrt(fan_in) if fan_in > 0 else 0.0
            params = [(self.weight, bound)]
            if self.bias is not None:
                params.append((self.bias, 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0))
            with torch.no_grad():
                for param, b in params:
                    if param.numel() == 0 and fan_in == 0:
                        continue  # nn.init leaves a layer without inputs as it is
                    rows = torch.empty(param.shape, dtype=param.dtype)
                    _uniform_rows_(rows, self.item_offset, self.num_items, b)
                    param.copy_(rows)
        if self.bias is not None and prior is not None:
            init_prior_bias_(self.bias, prior)

    def forward(self, input: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """The loss of ``F.linear(input, self.weight, self.bias)`` against ``target``."""
        return linear_sigmoid_focal_loss(
            input,
            self.weight,
            target,
            linear_bias=self.bias,
            alpha=self.alpha,
            gamma=self.gamma,
            reduction=self.reduction,
            weight=weight,
            chunk_size=self.chunk_size,
            item_offset=self.item_offset,
            num_items=self.num_items,
            process_group=self.process_group,
            validate_args=self.validate_args,
        )

    def scores(self, input: Tensor, items: Tensor | None = None) -> Tensor:
        """Logits of this layer's items for ``input`` ``(N, d)``.

        Args:
            input: ``(N, in_features)``.
            items: ``None`` for every item of this layer (``(N, num_items_local)``: it forms
                the whole score matrix, so mind the size); catalogue ids ``(K,)`` scored for
                every row (``(N, K)``); or ``(N, K)`` ids scored row by row (``(N, K)``, e.g.
                each row's candidates). Ids lie in this layer's range
                ``[item_offset, item_offset + num_items_local)``.

        Returns:
            The logits, in the parameters' dtype.
        """
        if items is None:
            return nn.functional.linear(input, self.weight, self.bias)
        if not isinstance(items, Tensor) or not is_index_list(items):
            got = items.dtype if isinstance(items, Tensor) else type(items).__name__
            raise TypeError(f"`items` must be an integer tensor of catalogue ids, got {got}")
        if items.ndim not in (1, 2) or (items.ndim == 2 and items.shape[0] != input.shape[0]):
            raise ValueError(
                f"`items` must have shape (K,) or ({input.shape[0]}, K) for input of shape "
                f"{tuple(input.shape)}, got shape {tuple(items.shape)}"
            )
        local = items - self.item_offset
        if self.validate_args and values_readable() and local.numel() > 0:
            lo, hi = (int(v) for v in torch.aminmax(local))
            if lo < 0 or hi >= self.num_items_local:
                end = self.item_offset + self.num_items_local
                raise ValueError(
                    f"`items` holds ids in [{lo + self.item_offset}, {hi + self.item_offset}]; "
                    f"expected ids of this layer's items, in [{self.item_offset}, {end})"
                )
        if items.ndim == 1:
            bias = None if self.bias is None else self.bias[local]
            return nn.functional.linear(input, self.weight[local], bias)
        out = torch.bmm(self.weight[local], input.unsqueeze(-1)).squeeze(-1)
        return out if self.bias is None else out + self.bias[local]

    def extra_repr(self) -> str:
        alpha = "per-item" if isinstance(self.alpha, Tensor) else self.alpha
        text = (
            f"in_features={self.in_features}, num_items={self.num_items}, "
            f"bias={self.bias is not None}, alpha={alpha}, gamma={self.gamma}, "
            f"reduction={self.reduction!r}"
        )
        if self.process_group is not None:
            text += f", items=[{self.item_offset}, {self.item_offset + self.num_items_local})"
        return text
