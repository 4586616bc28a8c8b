"""The fused layer's autograd: an ``autograd.Function`` for eager calls and a custom operator
(``focalrec::linear_focal_loss``) with a fake implementation and a registered backward, so that
``torch.compile`` keeps it in one graph."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from focalrec._focal.inputs import schema_of, values_of
from focalrec._linear.loop import finish_divisor, fused_pass
from focalrec._linear.plan import Chunks, Plan

__all__ = [
    "FusedLinearFocal",
    "NoSecondDerivative",
    "apply_eager",
    "apply_plan",
    "eager_over_group",
    "linear_focal_loss_op",
    "no_second_derivative",
]


class FusedLinearFocal(torch.autograd.Function):
    """The fused loss; forward computes the gradients, backward scales and hands them on."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        w: Tensor,
        b: Tensor | None,
        plan: Plan,
        need: tuple[bool, ...],
    ) -> Tensor:
        total, grads = fused_pass(plan.chunks, x, w, b, need)
        stats = torch.stack([total, plan.divisor_part])
        if plan.group is not None:
            dist.all_reduce(stats, group=plan.group)
        divisor = finish_divisor(plan.reduction, stats[1])
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
                grads = fused_pass(ctx.plan.chunks, x, w, b, ctx.need)[1]
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
            out = [None if g is None else no_second_derivative(g, sources) for g in out]
        return out[0], out[1], out[2], None, None


def no_second_derivative(g: Tensor, sources: list[Tensor]) -> Tensor:
    """``g``, in the graph of ``sources`` (what it depends on), with a backward that raises."""
    out: Tensor = NoSecondDerivative.apply(g, *sources)  # type: ignore[no-untyped-call]
    return out


class NoSecondDerivative(torch.autograd.Function):
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


def apply_eager(
    x: Tensor, w: Tensor, b: Tensor | None, plan: Plan, need: tuple[bool, ...]
) -> Tensor:
    loss: Tensor = FusedLinearFocal.apply(x, w, b, plan, need)  # type: ignore[no-untyped-call]
    return loss


def apply_plan(
    x: Tensor, w: Tensor, b: Tensor | None, plan: Plan, need: tuple[bool, ...]
) -> Tensor:
    """The fused loss: eagerly, :class:`FusedLinearFocal`; under ``torch.compile``, the operator
    ``focalrec::linear_focal_loss`` (no graph break), except over a process group, whose
    all-reduces stay outside the graph: the call then runs eagerly (a graph break).

    Eager calls (but over a process group) neither call the operator nor apply
    ``torch.compiler.disable``: either would import dynamo (and triton, where it is installed)
    on the first call.
    """
    if not torch.compiler.is_compiling():
        if plan.group is not None:
            eager_over_group()  # made here, so that a compiled call's graph break says why
        return apply_eager(x, w, b, plan, need)
    if plan.group is not None:
        return eager_over_group()(x, w, b, plan, need)
    ch = plan.chunks
    total: Tensor = linear_focal_loss_op(x, w, b, *values_of(ch), *need)[0]
    divisor = finish_divisor(plan.reduction, plan.divisor_part)
    return (total / divisor).to(torch.promote_types(ch.dtype, torch.float32))


_EAGER_OVER_GROUP: list[Callable[..., Tensor]] = []

_OVER_GROUP_REASON = (
    "linear_sigmoid_focal_loss with a process_group runs eagerly under torch.compile: its "
    "all-reduces stay outside the graph (a graph break; fullgraph=True raises)"
)


def eager_over_group() -> Callable[..., Tensor]:
    """:func:`apply_eager` under ``torch.compiler.disable``, made once: by the first eager
    call or module over a process group, or else by the first compiled one (whose graph then
    breaks at the making too, with a reason less clear)."""
    if not _EAGER_OVER_GROUP:
        disabled = torch.compiler.disable(apply_eager, reason=_OVER_GROUP_REASON)  # type: ignore[no-untyped-call]
        _EAGER_OVER_GROUP.append(disabled)
    return _EAGER_OVER_GROUP[0]


# --------------------------------------------------------------------------------------------------
# the operator that torch.compile sees


_CHUNKS = len(fields(Chunks))


def _linear_focal_loss_impl(*args: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(total, grad_x, grad_w, grad_b)``: the sum of the terms (float64) and the unscaled
    gradients (float32 for half precision, else ``dtype``; empty where not asked for), by
    :func:`fused_pass`. ``args``: ``x, w, b``, the fields of :class:`Chunks` in order, and
    ``need_x, need_w, need_b``."""
    x, w, b = args[:3]
    chunks = Chunks(*args[3 : 3 + _CHUNKS])
    total, grads = fused_pass(chunks, x, w, b, args[3 + _CHUNKS :])
    acc = torch.promote_types(chunks.dtype, torch.float32)
    gx, gw, gb = (x.new_empty(0, dtype=acc) if g is None else g for g in grads)
    return total, gx, gw, gb


linear_focal_loss_op = torch.library.custom_op(
    "focalrec::linear_focal_loss",
    _linear_focal_loss_impl,
    mutates_args=(),
    schema=(
        f"(Tensor x, Tensor w, Tensor? b, {schema_of(Chunks)}, bool need_x, bool need_w, "
        "bool need_b) -> (Tensor, Tensor, Tensor, Tensor)"
    ),
)


@linear_focal_loss_op.register_fake
def _(*args: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, w, b = args[:3]
    dtype = Chunks(*args[3 : 3 + _CHUNKS]).dtype
    acc = torch.promote_types(dtype, torch.float32)
    gx, gw, gb = (
        x.new_empty(t.shape if t is not None and wanted else (0,), dtype=acc)
        for t, wanted in zip((x, w, b), args[3 + _CHUNKS :], strict=True)
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
    return (*out, *(None,) * (_CHUNKS + 3))


linear_focal_loss_op.register_autograd(_op_backward, setup_context=_op_setup_context)


# --------------------------------------------------------------------------------------------------
# the module
