"""The chunk loop of the fused layer: each chunk of logits formed by a matmul, turned in place
into its focal gradient by the loss's kernel, and folded into the three gradients."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from focalrec._focal.op import evaluate

if TYPE_CHECKING:
    from focalrec._linear.plan import Chunks

__all__ = [
    "add_column_sums",
    "add_product",
    "autocast_off",
    "autocast_on",
    "finish_divisor",
    "fused_pass",
    "raise_nan",
]


def raise_nan(input: Tensor, linear_weight: Tensor, linear_bias: Tensor | None) -> None:
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


def fused_pass(
    chunks: Chunks, x: Tensor, w: Tensor, b: Tensor | None, need: tuple[bool, ...]
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
    with autocast_off(x.device.type):
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
                inp = chunks.inputs(z, slice(r0, r1), slice(c0, c1), weight)
                value, g = evaluate(inp, False, any_grad, grad_into=z if any_grad else None)
                total += value
                if g is None:
                    continue
                if gx is not None:
                    add_product(gx[r0:r1], g, w_c)
                if gw is not None:
                    add_product(gw[c0:c1], g.t(), x_r)
                if gb is not None:
                    add_column_sums(gb[c0:c1], g, ones)
    return total, grads


def autocast_on(device_type: str) -> bool:
    """Whether autocast is on for ``device_type``."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def autocast_off(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """A context in which autocast leaves the chunk loop's operations alone, where it is on."""
    if autocast_on(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def add_product(out: Tensor, a: Tensor, b: Tensor) -> None:
    """``out += a @ b``, in place; the product in the operands' dtype when ``out`` is wider."""
    if out.dtype == a.dtype:
        out.addmm_(a, b)
    else:
        out += torch.mm(a, b)


def add_column_sums(out: Tensor, a: Tensor, ones: Tensor) -> None:
    """``out += a.sum(0)``, in place: a matrix-vector product, which is several times faster than
    a column sum on the CPU; in ``out``'s dtype when it is wider than ``a``'s."""
    if out.dtype == a.dtype:
        out.addmv_(a.t(), ones[: a.shape[0]])
    else:
        out += a.sum(0, dtype=out.dtype)


def finish_divisor(reduction: str, total: Tensor) -> Tensor:
    """The divisor from its (all-reduced) count: 1 for ``"sum"``, at least 1 for
    ``"sum_over_positives"``, 1 in place of 0 for ``"mean"``."""
    if reduction == "sum":
        return torch.ones_like(total)
    if reduction == "sum_over_positives":
        return total.clamp_min(1.0)
    return torch.where(total > 0, total, torch.ones_like(total))
