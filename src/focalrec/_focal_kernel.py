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

:class:`FocalFunction` evaluates value and gradient together in one pass over blocks of rows
(at most :data:`BLOCK_ELEMENTS` elements, so the temporaries stay in cache and are reused from
block to block), keeps the gradient for backward and scales it there, in place, by the incoming
gradient (a no-op for the usual ``loss.backward()``, since the reduction's divisor is applied in
forward).
With index-list targets every element first gets its ``t = 0`` terms; then the few positives are
overwritten with their ``t = 1`` terms (a sum adds the difference), so no ``(N, C)`` target
tensor is ever built. Dense 0/1 targets take the same path, block by block.

Blocks are spread over ``torch.get_num_threads()`` Python threads (contiguous groups, one set of
scratch buffers each); every op inside a block is small enough to run single-threaded in ATen.
``exp`` is evaluated as ``exp2(x log2 e)``: on CPU, ``torch.exp`` and ``torch.log`` go to MKL's
vector math in 2048-element parallel tasks, whose synchronization stalls badly when other
processes share the cores, while ``exp2``, ``sigmoid`` and ``softplus`` are vectorized in ATen
itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from focalrec._indices import first_occurrence

__all__ = [
    "BLOCK_ELEMENTS",
    "FocalFunction",
    "focal_loss_sum_or_elementwise",
    "hard_negative_terms",
    "hard_positive_terms",
    "negative_terms_into",
    "soft_terms",
]

BLOCK_ELEMENTS = 1 << 15
"""Elements per block of rows (128 KiB of float32 per buffer), at most ATen's grain size."""

_LOG2_E = 1.4426950408889634

Factor = Tensor | float | None


def _exp_(y: Tensor, c: float = 1.0) -> Tensor:
    """``exp(c y)`` in place, as ``exp2(c log2(e) y)`` (see the module docstring)."""
    return y.mul_(c * _LOG2_E).exp2_()


def negative_terms_into(
    x: Tensor,
    gamma: float,
    factor: Factor,
    value: Tensor,
    grad: Tensor | None,
    scratch: Tensor,
) -> None:
    """Write ``factor * f`` into ``value`` and ``factor * df/dx`` into ``grad``, for ``t = 0``.

    ``f = p^gamma s(x)`` and ``df/dx = p^gamma (gamma (1 - p) s(x) + p)`` with
    ``p^gamma = exp(gamma (x - s(x)))``; both terms of the sum are non-negative, so the gradient
    is accurate to a few ulps everywhere. ``value``, ``grad`` and ``scratch`` are buffers with the
    shape and dtype of ``x`` (``grad`` None: no gradient); ``factor`` None means 1.
    """
    sp = F.softplus(x)
    mod: Tensor | float | None = factor
    if gamma != 0.0:
        mod = _exp_(torch.sub(x, sp, out=scratch), gamma)  # p^gamma
        if factor is not None:
            mod.mul_(factor)
    if mod is None:
        value.copy_(sp)
    else:
        torch.mul(sp, mod, out=value)
    if grad is None:
        return
    # p + gamma (1 - p) s(x), with 1 - p = exp(-s(x)) (no cancellation); sp's buffer takes p.
    one_minus_p_sp = _exp_(torch.neg(sp, out=grad)).mul_(sp)
    torch.add(torch.sigmoid(x, out=sp), one_minus_p_sp, alpha=gamma, out=grad)
    if mod is not None:
        grad.mul_(mod)


def hard_negative_terms(x: Tensor, gamma: float, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """``f`` and (if ``need_grad``) ``df/dx`` for ``t = 0``; see :func:`negative_terms_into`."""
    value = torch.empty_like(x)
    grad = torch.empty_like(x) if need_grad else None
    negative_terms_into(x, gamma, None, value, grad, torch.empty_like(x))
    return value, grad


def hard_positive_terms(x: Tensor, gamma: float, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """``f`` and ``df/dx`` for ``t = 1``.

    ``f = (1 - p)^gamma s(-x)`` and ``df/dx = -(1 - p)^gamma (gamma p s(-x) + 1 - p)``.
    """
    bce = F.softplus(-x)  # s(-x) directly: s(x) - x would cancel for large x
    mod = _exp_(F.softplus(x), -gamma) if gamma != 0.0 else None
    value = bce if mod is None else bce * mod
    if not need_grad:
        return value, None
    grad = torch.addcmul(torch.sigmoid(-x), torch.sigmoid(x), bce, value=gamma).neg_()
    if mod is not None:
        grad.mul_(mod)
    return value, grad


def soft_terms(x: Tensor, t: Tensor, gamma: float, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """``f`` and ``df/dx`` for targets ``t`` anywhere in ``[0, 1]`` (the general formula above)."""
    sp = F.softplus(x)
    log_p = x - sp
    log_q = torch.logaddexp(log_p + torch.log1p(-t), torch.log(t) - sp)
    one_minus_t = torch.rsub(t, 1.0)
    # t s(-x) + (1 - t) s(x): two non-negative terms, no cancellation.
    bce = torch.addcmul(one_minus_t * sp, t, F.softplus(-x))
    mod = _exp_(log_q.clone(), gamma) if gamma != 0.0 else None
    value = bce if mod is None else bce * mod
    if not need_grad:
        return value, None
    # r = p (1 - p) / q = exp(log p + log(1 - p) - log q), in [0, 1].
    r = _exp_(log_p.sub_(sp).sub_(log_q))
    grad = r.mul_(bce).mul_(torch.mul(t, -2.0).add_(1.0)).mul_(gamma)
    # p - t as p (1 - t) - (1 - p) t: exact at t = 1 where p - 1 would cancel.
    grad.addcmul_(torch.sigmoid(x), one_minus_t).addcmul_(torch.sigmoid(-x), t, value=-1.0)
    if mod is not None:
        grad.mul_(mod)
    return value, grad


def _factor(alpha: float | Tensor | None, weight: Tensor | None, t: Tensor | None) -> Factor:
    """``alpha_t * weight`` for one block (``t`` None: the ``t = 0`` factor ``1 - alpha``)."""
    if alpha is None:
        factor: Factor = None
    elif t is None:
        factor = 1.0 - alpha
    else:
        # alpha_t = alpha t + (1 - alpha)(1 - t): two non-negative terms, no cancellation
        factor = (t * alpha).add_(torch.rsub(t, 1.0).mul_(1.0 - alpha))
    if weight is None:
        return factor
    return weight if factor is None else weight * factor


def _run_groups(fn: Callable[[Sequence[int]], None], num_blocks: int) -> None:
    """Call ``fn`` on contiguous groups of block numbers, one per thread."""
    workers = min(torch.get_num_threads(), num_blocks // 4)
    if workers <= 1:
        fn(range(num_blocks))
        return
    bounds = [num_blocks * i // workers for i in range(workers + 1)]
    groups = [range(bounds[i], bounds[i + 1]) for i in range(workers)]
    with ThreadPoolExecutor(workers, thread_name_prefix="focalrec") as pool:
        for done in [pool.submit(fn, group) for group in groups]:
            done.result()


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
        divisor: Tensor | None,
        need_grad: bool,
    ) -> None:
        self.shape = logits.shape
        self.num_classes = logits.shape[-1] if logits.ndim > 0 else 1
        # Detached: worker threads run in the default grad mode.
        self.x = logits.detach().reshape(-1, self.num_classes)
        self.compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        self.dense = None if dense is None else dense.reshape(-1, self.num_classes)
        self.alpha = alpha.to(self.compute_dtype) if isinstance(alpha, Tensor) else alpha
        self.gamma = gamma
        self.weight = None
        if weight is not None:
            self.weight = weight.expand(self.shape).reshape(-1, self.num_classes)
        self.inverse = None if divisor is None else torch.reciprocal(divisor.to(self.compute_dtype))
        self.need_grad = need_grad
        self.rows_per_block = max(1, BLOCK_ELEMENTS // max(self.num_classes, 1))
        self.cast = self.x.dtype != self.compute_dtype
        # Without weights or dense targets the t = 0 factor is the same for every block.
        self.const_factor: Factor = None
        self.varying_factor = weight is not None or dense is not None
        if not self.varying_factor:
            self.const_factor = self._with_inverse(_factor(self.alpha, None, None))
        self.correction = None if index is None else self._positive_correction(index)

    @property
    def num_blocks(self) -> int:
        return -(-self.x.shape[0] // self.rows_per_block)

    def rows(self, block: int) -> slice:
        start = block * self.rows_per_block
        return slice(start, min(start + self.rows_per_block, self.x.shape[0]))

    def scratch(self) -> tuple[Tensor, Tensor, Tensor]:
        """Block-sized buffers in the compute dtype, reused across one thread's blocks: value,
        gradient (with one spare column, see :meth:`block`) and scratch."""
        rows, c = min(self.rows_per_block, self.x.shape[0]), self.num_classes
        cd, device = self.compute_dtype, self.x.device
        value = torch.empty(rows, c, dtype=cd, device=device)
        grad = torch.empty(rows, c + 1, dtype=cd, device=device)
        return value, grad, torch.empty(rows, c, dtype=cd, device=device)

    def block(
        self, block: int, value: Tensor, grad: Tensor | None, scratch: Tensor, correct_grad: bool
    ) -> None:
        """Write the weighted loss and (if ``grad``) gradient of one block of rows.

        ``value``, ``grad`` and ``scratch`` have the block's shape and the compute dtype. With
        index-list targets the positives are left to the caller (:meth:`correct`), except for
        the gradient when ``correct_grad``: then ``grad`` must be the first ``C`` columns of a
        buffer with one spare column, which absorbs the padding.
        """
        rows = self.rows(block)
        cd = self.compute_dtype
        x = self.x[rows].to(cd) if self.cast else self.x[rows]
        if self.dense is not None and self._hard(self.dense[rows]):
            self._hard_dense_block(rows, x, value, grad, scratch)
            return
        t = None if self.dense is None else self.dense[rows].to(cd)
        factor = self.const_factor
        if self.varying_factor:
            w = None if self.weight is None else self.weight[rows].to(cd)
            factor = self._with_inverse(_factor(self.alpha, w, t))
        if t is None:
            negative_terms_into(x, self.gamma, factor, value, grad, scratch)
        else:
            soft_value, soft_grad = soft_terms(x, t, self.gamma, grad is not None)
            torch.mul(soft_value, 1.0 if factor is None else factor, out=value)
            if grad is not None and soft_grad is not None:
                torch.mul(soft_grad, 1.0 if factor is None else factor, out=grad)
        if correct_grad and grad is not None and self.correction is not None:
            cols, _, _, pos_grad, _ = self.correction
            assert pos_grad is not None
            spare = grad.as_strided((grad.shape[0], grad.shape[1] + 1), grad.stride())
            spare.scatter_(1, cols[rows], pos_grad[rows])

    def _hard(self, t: Tensor) -> bool:
        """Whether dense targets are all 0 or 1 (bool targets, or float ones checked on CPU)."""
        if t.dtype == torch.bool:
            return True
        return t.device.type == "cpu" and bool(torch.logical_or(t == 0, t == 1).all())

    def _hard_dense_block(
        self, rows: slice, x: Tensor, value: Tensor, grad: Tensor | None, scratch: Tensor
    ) -> None:
        """Dense 0/1 targets: the ``t = 0`` terms everywhere, then corrections at the ones."""
        cd = self.compute_dtype
        assert self.dense is not None
        w = None if self.weight is None else self.weight[rows].to(cd)
        factor = self._with_inverse(_factor(self.alpha, w, None))
        negative_terms_into(x, self.gamma, factor, value, grad, scratch)
        where = self.dense[rows].nonzero(as_tuple=True)
        if where[0].numel() == 0:
            return
        scale = None if w is None else w[where]
        pos_value, pos_grad, _ = self._correction_terms(x[where], where[1], scale, grad is not None)
        value.index_put_(where, pos_value)
        if grad is not None and pos_grad is not None:
            grad.index_put_(where, pos_grad)

    def _correction_terms(
        self, x: Tensor, cols: Tensor, scale: Tensor | None, need_grad: bool
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Weighted ``t = 1`` value and gradient, and ``t = 0`` value, at positives ``x``."""
        pos_val, pos_grad = hard_positive_terms(x, self.gamma, need_grad)
        neg_val = hard_negative_terms(x, self.gamma, need_grad=False)[0]
        a_pos: Tensor | float = 1.0
        a_neg: Tensor | float = 1.0
        if isinstance(self.alpha, Tensor):
            a_pos = self.alpha[cols]
            a_neg = 1.0 - a_pos
        elif self.alpha is not None:
            a_pos, a_neg = self.alpha, 1.0 - self.alpha
        if self.inverse is not None:
            scale = self.inverse if scale is None else scale * self.inverse
        pos_val, neg_val = pos_val * a_pos, neg_val * a_neg
        pos_grad = None if pos_grad is None else pos_grad * a_pos
        if scale is not None:
            pos_val, neg_val = pos_val * scale, neg_val * scale
            pos_grad = None if pos_grad is None else pos_grad * scale
        return pos_val, pos_grad, neg_val

    def _with_inverse(self, factor: Factor) -> Factor:
        if self.inverse is None:
            return factor
        return self.inverse if factor is None else factor * self.inverse

    def correction_sum(self) -> Tensor | None:
        """``t = 1`` minus ``t = 0`` loss summed over the positives (None without an index list)."""
        return None if self.correction is None else self.correction[4]

    def correct(self, values: Tensor | None, grad: Tensor | None) -> None:
        """Overwrite the positives of a flat ``rows * C + 1`` loss and gradient with their ``t = 1``
        terms; padding and repeats go to the spare last element."""
        if self.correction is None:
            return
        _, flat, pos_value, pos_grad, _ = self.correction
        if values is not None:
            values.index_put_((flat,), pos_value.view(-1))
        if grad is not None and pos_grad is not None:
            grad.index_put_((flat,), pos_grad.view(-1).to(grad.dtype))

    def _positive_correction(
        self, index: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
        """The positives of an index list: ``(cols, flat, value, grad, delta)``.

        ``cols`` and ``flat`` locate them in a row and in the flattened logits; padding and
        repeats point past the end (column ``C``, element ``rows * C``) so that writes to them
        land in a spare slot. ``value`` and ``grad`` are their ``t = 1`` terms and ``delta`` the
        sum of ``t = 1`` minus ``t = 0`` loss over the true positives.
        """
        cd, c = self.compute_dtype, self.num_classes
        keep = first_occurrence(index)
        gather_cols = index.clamp_min(0).long()
        x = self.x.gather(1, gather_cols).to(cd)
        scale = None if self.weight is None else self.weight.gather(1, gather_cols).to(cd)
        value, grad, neg_value = self._correction_terms(x, gather_cols, scale, self.need_grad)
        delta = torch.where(keep, value - neg_value, 0.0).sum()
        cols = torch.where(keep, gather_cols, c)
        rows = torch.arange(cols.shape[0], device=cols.device).unsqueeze(1)
        flat = torch.where(keep, rows * c + cols, self.x.shape[0] * c).view(-1)
        return cols, flat, value, grad, delta


def _evaluate(problem: _Problem, elementwise: bool) -> tuple[Tensor, Tensor | None]:
    """The loss (elementwise, or its sum) and, if ``problem.need_grad``, its gradient."""
    cd, device = problem.compute_dtype, problem.x.device
    need_grad = problem.need_grad
    size = problem.x.numel()
    # One spare element at the end takes the writes aimed at index-list padding.
    out_flat = torch.empty(size + 1 if elementwise else 0, dtype=cd, device=device)
    grad_flat = torch.empty(size + 1 if need_grad else 0, dtype=problem.x.dtype, device=device)
    out = out_flat[:size].view(problem.x.shape) if elementwise else out_flat
    grad = grad_flat[:size].view(problem.x.shape) if need_grad else grad_flat
    sums: list[Tensor | None] = [None] * problem.num_blocks
    direct_grad = problem.x.dtype == cd

    def run(blocks: Sequence[int]) -> None:
        value_buf, grad_buf, scratch = problem.scratch()
        for block in blocks:
            rows = problem.rows(block)
            n = rows.stop - rows.start
            value = out[rows] if elementwise else value_buf[:n]
            block_grad = None
            if need_grad:
                block_grad = grad[rows] if direct_grad else grad_buf[:n, :-1]
            problem.block(block, value, block_grad, scratch[:n], not direct_grad)
            if need_grad and not direct_grad:
                grad[rows] = grad_buf[:n, :-1]
            if not elementwise:
                sums[block] = value.sum()

    _run_groups(run, problem.num_blocks)
    problem.correct(
        out_flat if elementwise else None, grad_flat if need_grad and direct_grad else None
    )
    if elementwise:
        out = out.reshape(problem.shape)
    else:
        parts = [part for part in sums if part is not None]
        correction = problem.correction_sum()
        if correction is not None:
            parts.append(correction)
        out = torch.stack(parts).sum() if parts else torch.zeros((), dtype=cd, device=device)
    return out, grad.reshape(problem.shape) if need_grad else None


class FocalFunction(torch.autograd.Function):
    """Fused focal loss: the elementwise loss or its sum over ``divisor``, differentiable in logits.

    ``forward(logits, dense, index, alpha, gamma, weight, divisor, elementwise)``: exactly one of
    ``dense`` (targets with the logits' shape) and ``index`` (an ``(N, m)`` index list for
    ``(N, C)`` logits) is given; ``alpha`` is None, a float or a ``(C,)`` tensor; ``weight`` is
    None or broadcastable to the logits; ``divisor`` is None or a positive 0-d tensor that divides
    the loss. The output has the compute dtype ``promote_types(logits.dtype, float32)``; the
    gradient has the logits' dtype. Targets, ``alpha``, ``weight`` and ``divisor`` are constants
    (no gradient flows to them).

    When the logits require grad, forward computes the gradient alongside the value and keeps it
    until backward, which scales it in place by the incoming gradient and hands it on: one
    logits-sized tensor in all. A second backward through the same graph (``retain_graph=True``)
    recomputes the gradient from the saved logits.
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
        divisor: Tensor | None,
        elementwise: bool,
    ) -> Tensor:
        need_grad = bool(ctx.needs_input_grad[0])
        problem = _Problem(logits, dense, index, alpha, gamma, weight, divisor, need_grad)
        out, ctx.grad = _evaluate(problem, elementwise)
        if need_grad:
            ctx.save_for_backward(logits, dense, index, weight, divisor)
            ctx.hyper = (alpha, gamma)
        ctx.elementwise = elementwise
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad: Tensor | None = ctx.grad
        ctx.grad = None  # handed on below; a second backward recomputes it
        if grad is None:
            logits, dense, index, weight, divisor = ctx.saved_tensors
            alpha, gamma = ctx.hyper
            problem = _Problem(logits, dense, index, alpha, gamma, weight, divisor, need_grad=True)
            grad = _evaluate(problem, elementwise=False)[1]
            assert grad is not None
        if ctx.elementwise or grad_out.device.type != "cpu" or float(grad_out) != 1.0:
            grad.mul_(grad_out.to(grad.dtype))
        return grad, None, None, None, None, None, None, None


def focal_loss_sum_or_elementwise(
    logits: Tensor,
    dense: Tensor | None,
    index: Tensor | None,
    alpha: float | Tensor | None,
    gamma: float,
    weight: Tensor | None,
    divisor: Tensor | None,
    elementwise: bool,
) -> Tensor:
    """The weighted elementwise focal loss or its sum over ``divisor``, via :class:`FocalFunction`.

    The one entry point of the loss into this module, where a device-specific kernel would be
    dispatched; inputs are assumed validated. Under ``torch.compile`` it runs eagerly (a graph
    break): its block loop is not worth tracing. The check for that is free when dynamo was never
    imported, so importing focalrec does not import it.
    """
    args = (logits, dense, index, alpha, gamma, weight, divisor, elementwise)
    if "torch._dynamo" in sys.modules:
        return _untraced_apply()(*args)
    out: Tensor = FocalFunction.apply(*args)  # type: ignore[no-untyped-call]
    return out


_untraced: Callable[..., Tensor] | None = None


def _untraced_apply() -> Callable[..., Tensor]:
    """``FocalFunction.apply`` excluded from dynamo tracing (created on first use)."""
    global _untraced
    if _untraced is None:
        _untraced = torch.compiler.disable(FocalFunction.apply)  # type: ignore[no-untyped-call]
    return _untraced
