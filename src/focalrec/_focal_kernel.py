"""The fused sigmoid focal loss: closed-form terms and a memory-lean ``autograd.Function``.

Notation: ``x`` a logit, ``t`` its target in ``[0, 1]``, ``p = sigmoid(x)``, ``s = softplus``, so
``log p = x - s(x)``, ``log(1 - p) = -s(x)``, ``q = 1 - p_t = p (1 - t) + (1 - p) t`` and
``BCE = s(x) - t x``. Without the ``alpha_t`` factor the focal term and its derivative are

.. math::

    f = q^\\gamma \\, \\mathrm{BCE}, \\qquad
    \\frac{\\partial f}{\\partial x} = q^\\gamma \\left(\\gamma (1 - 2t) \\, r \\, \\mathrm{BCE}
        + p - t\\right), \\qquad r = \\frac{p (1 - p)}{q} \\in [0, 1],

with ``q^gamma = exp(gamma log q)`` evaluated in log space. Every factor is bounded, so the
gradient is finite for every ``gamma >= 0`` and every finite logit (the textbook form
``gamma q^(gamma - 1) dq/dx`` is ``inf * 0`` at saturated logits when ``gamma < 1``). For hard
targets ``r`` is ``1 - p`` (``t = 0``) or ``p`` (``t = 1``) and ``log q`` is ``log p`` or
``log(1 - p)``.

:class:`FocalFunction` saves only the logits and the (compact) targets and recomputes the terms in
backward, one block of rows at a time, so its temporaries stay cache-sized and the only
logits-sized allocation is the gradient itself. With index-list targets the loss of a row is the
``t = 0`` term summed over all classes plus a correction at the positive indices, so no ``(N, C)``
target tensor is ever built.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from focalrec._indices import first_occurrence

__all__ = [
    "CHUNK_ELEMENTS",
    "FocalFunction",
    "focal_loss_sum_or_elementwise",
    "hard_negative_terms",
    "hard_positive_terms",
    "soft_terms",
]

CHUNK_ELEMENTS = 1 << 15
"""Elements per block of rows: 128 KiB of float32 per temporary, small enough for an L2 cache."""


def hard_negative_terms(x: Tensor, gamma: float, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """``f`` and ``df/dx`` for ``t = 0``.

    ``f = p^gamma s(x)`` and ``df/dx = p^gamma (gamma (1 - p) s(x) + p)``.
    """
    sp = F.softplus(x)
    # p^gamma = exp(gamma * log p) with log p = x - softplus(x); gamma == 0 gives exactly 1.
    mod = torch.exp(torch.sub(x, sp).mul_(gamma)) if gamma != 0.0 else None
    value = sp if mod is None else sp * mod
    if not need_grad:
        return value, None
    one_minus_p = torch.exp(-sp)
    grad = one_minus_p.mul_(sp).mul_(gamma).add_(torch.sigmoid(x))
    if mod is not None:
        grad.mul_(mod)
    return value, grad


def hard_positive_terms(x: Tensor, gamma: float, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """``f`` and ``df/dx`` for ``t = 1``.

    ``f = (1 - p)^gamma s(-x)`` and ``df/dx = -(1 - p)^gamma (gamma p s(-x) + 1 - p)``.
    """
    bce = F.softplus(-x)  # s(-x) directly: s(x) - x would cancel for large x
    sp = F.softplus(x)
    mod = torch.exp(sp * -gamma) if gamma != 0.0 else None
    value = bce if mod is None else bce * mod
    if not need_grad:
        return value, None
    grad = torch.sigmoid(x).mul_(bce).mul_(gamma).add_(torch.exp(-sp)).neg_()
    if mod is not None:
        grad.mul_(mod)
    return value, grad


def soft_terms(x: Tensor, t: Tensor, gamma: float, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """``f`` and ``df/dx`` for targets ``t`` anywhere in ``[0, 1]`` (the general formula above)."""
    sp = F.softplus(x)
    log_p = x - sp
    log_q = torch.logaddexp(log_p + torch.log1p(-t), torch.log(t) - sp)
    # t s(-x) + (1 - t) s(x): two non-negative terms, no cancellation.
    bce = torch.addcmul(torch.rsub(t, 1.0).mul_(sp), t, F.softplus(-x))
    mod = torch.exp(log_q * gamma) if gamma != 0.0 else None
    value = bce if mod is None else bce * mod
    if not need_grad:
        return value, None
    # r = p (1 - p) / q = exp(log p + log(1 - p) - log q), in [0, 1].
    r = torch.exp(log_p.sub_(sp).sub_(log_q))
    grad = r.mul_(bce).mul_(torch.mul(t, -2.0).add_(1.0)).mul_(gamma)
    # p - t as p (1 - t) - (1 - p) t: exact at t = 1 where p - 1 would cancel.
    one_minus_t = torch.rsub(t, 1.0)
    grad.addcmul_(torch.sigmoid(x), one_minus_t).addcmul_(torch.sigmoid(-x), t, value=-1.0)
    if mod is not None:
        grad.mul_(mod)
    return value, grad


def _factor(
    alpha: float | Tensor | None, weight: Tensor | None, t: Tensor | None
) -> Tensor | float | None:
    """``alpha_t * weight`` for one block (``t`` None: the ``t = 0`` factor ``1 - alpha``)."""
    if alpha is None:
        factor: Tensor | float | None = None
    elif t is None:
        factor = 1.0 - alpha
    else:
        # alpha_t = alpha t + (1 - alpha)(1 - t) = (1 - alpha) + (2 alpha - 1) t
        factor = t * (2.0 * alpha - 1.0) + (1.0 - alpha)
    if weight is None:
        return factor
    return weight if factor is None else weight * factor


def _block_terms(
    x: Tensor,
    t: Tensor | None,
    alpha: float | Tensor | None,
    weight: Tensor | None,
    gamma: float,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """Weighted loss and gradient of one block; ``t`` None means the ``t = 0`` terms."""
    if t is None:
        value, grad = hard_negative_terms(x, gamma, need_grad)
    else:
        value, grad = soft_terms(x, t, gamma, need_grad)
    factor = _factor(alpha, weight, t)
    if factor is not None:
        value = value * factor
        if grad is not None:
            grad = grad.mul_(factor)
    return value, grad


class _Problem:
    """The inputs of one call, flattened to ``(rows, C)``; computed in float32 or wider."""

    def __init__(
        self,
        logits: Tensor,
        dense: Tensor | None,
        index: Tensor | None,
        alpha: float | Tensor | None,
        gamma: float,
        weight: Tensor | None,
        need_grad: bool,
    ) -> None:
        self.shape = logits.shape
        self.num_classes = logits.shape[-1] if logits.ndim > 0 else 1
        self.x = logits.reshape(-1, self.num_classes)
        self.compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        self.dense = None if dense is None else dense.reshape(-1, self.num_classes)
        self.alpha = alpha.to(self.compute_dtype) if isinstance(alpha, Tensor) else alpha
        self.gamma = gamma
        self.weight = None
        if weight is not None:
            self.weight = weight.expand(self.shape).reshape(-1, self.num_classes)
        self.need_grad = need_grad
        self.correction = None if index is None else self._positive_correction(index)

    def blocks(self) -> list[tuple[int, int]]:
        """Row ranges of about :data:`CHUNK_ELEMENTS` elements each."""
        rows = self.x.shape[0]
        step = max(1, CHUNK_ELEMENTS // max(self.num_classes, 1))
        return [(start, min(start + step, rows)) for start in range(0, rows, step)]

    def block(self, start: int, stop: int) -> tuple[Tensor, Tensor | None]:
        """Weighted loss and (if ``need_grad``) gradient of rows ``start:stop``."""
        cd = self.compute_dtype
        x = self.x[start:stop].to(cd)
        t = None if self.dense is None else self.dense[start:stop].to(cd)
        w = None if self.weight is None else self.weight[start:stop].to(cd)
        value, grad = _block_terms(x, t, self.alpha, w, self.gamma, self.need_grad)
        if self.correction is not None:
            cols, corr_value, corr_grad = self.correction
            value = value.scatter_add(1, cols[start:stop], corr_value[start:stop])
            if grad is not None and corr_grad is not None:
                grad.scatter_add_(1, cols[start:stop], corr_grad[start:stop])
        return value, grad

    def _positive_correction(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Columns, value and gradient that turn the ``t = 0`` terms into ``t = 1`` at positives.

        Padding and repeated indices get a zero correction (their column is clamped to 0).
        """
        cd = self.compute_dtype
        cols = index.clamp_min(0).long()
        x = self.x.gather(1, cols).to(cd)
        pos_val, pos_grad = hard_positive_terms(x, self.gamma, self.need_grad)
        neg_val, neg_grad = hard_negative_terms(x, self.gamma, self.need_grad)
        a_pos: Tensor | float = 1.0
        a_neg: Tensor | float = 1.0
        if isinstance(self.alpha, Tensor):
            a_pos = self.alpha[cols]
            a_neg = 1.0 - a_pos
        elif self.alpha is not None:
            a_pos, a_neg = self.alpha, 1.0 - self.alpha
        scale = first_occurrence(index).to(cd)
        if self.weight is not None:
            scale = scale * self.weight.gather(1, cols).to(cd)
        value = (pos_val * a_pos - neg_val * a_neg) * scale
        grad = None
        if pos_grad is not None and neg_grad is not None:
            grad = (pos_grad * a_pos - neg_grad * a_neg) * scale
        return cols, value, grad


class FocalFunction(torch.autograd.Function):
    """Fused focal loss; returns the elementwise loss or its sum, differentiable in ``logits``.

    ``forward(logits, dense, index, alpha, gamma, weight, elementwise)``: exactly one of ``dense``
    (targets with the logits' shape) and ``index`` (an ``(N, m)`` index list for ``(N, C)``
    logits) is given; ``alpha`` is None, a float or a ``(C,)`` tensor; ``weight`` is None or
    broadcastable to the logits. The output has the compute dtype
    ``promote_types(logits.dtype, float32)``; the gradient has the logits' dtype. Targets,
    ``alpha`` and ``weight`` are constants (no gradient flows to them).
    """

    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        dense: Tensor | None,
        index: Tensor | None,
        alpha: float | Tensor | None,
        gamma: float,
        weight: Tensor | None,
        elementwise: bool,
    ) -> Tensor:
        problem = _Problem(logits, dense, index, alpha, gamma, weight, need_grad=False)
        cd = problem.compute_dtype
        if elementwise:
            out = torch.empty(problem.x.shape, dtype=cd, device=logits.device)
            for start, stop in problem.blocks():
                out[start:stop] = problem.block(start, stop)[0]
            out = out.reshape(problem.shape)
        else:
            out = torch.zeros((), dtype=cd, device=logits.device)
            for start, stop in problem.blocks():
                out += problem.block(start, stop)[0].sum()
        ctx.save_for_backward(logits, dense, index, weight)
        ctx.alpha = alpha
        ctx.gamma = gamma
        ctx.elementwise = elementwise
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        logits, dense, index, weight = ctx.saved_tensors
        problem = _Problem(logits, dense, index, ctx.alpha, ctx.gamma, weight, need_grad=True)
        g_out = grad_out.to(problem.compute_dtype)
        if ctx.elementwise:
            g_out = g_out.reshape(problem.x.shape)
        grad = torch.empty(problem.x.shape, dtype=logits.dtype, device=logits.device)
        for start, stop in problem.blocks():
            block_grad = problem.block(start, stop)[1]
            assert block_grad is not None
            grad[start:stop] = block_grad.mul_(g_out[start:stop] if ctx.elementwise else g_out)
        return grad.reshape(problem.shape), None, None, None, None, None, None


def focal_loss_sum_or_elementwise(
    logits: Tensor,
    dense: Tensor | None,
    index: Tensor | None,
    alpha: float | Tensor | None,
    gamma: float,
    weight: Tensor | None,
    elementwise: bool,
) -> Tensor:
    """The weighted elementwise focal loss (``elementwise``) or its sum, via :class:`FocalFunction`.

    The one entry point of the loss into this module, where a device-specific kernel would be
    dispatched; inputs are assumed validated.
    """
    out: Tensor = FocalFunction.apply(  # type: ignore[no-untyped-call]
        logits, dense, index, alpha, gamma, weight, elementwise
    )
    return out
