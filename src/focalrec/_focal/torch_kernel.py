"""The torch backend: the terms of :mod:`focalrec._focal.terms` over blocks of rows.

It serves every device and dtype (float64 and half-precision logits on the CPU, accelerators
without Triton, the second derivative everywhere). Each block of at most :data:`BLOCK_ELEMENTS`
elements on the CPU (small enough that every op runs single-threaded in ATen and stays in
cache; blocks are spread over Python threads) or :data:`DEVICE_BLOCK_ELEMENTS` on accelerators
(where each op is a kernel launch) is evaluated on its own: hard targets (index lists, bool
targets, float 0/1 targets on the CPU) become a block of 0/1 targets and take the ``t = 0``
formulas at ``y = +-x``; other targets take the general ones. Every term is exact on its own:
a block's sum adds the terms themselves, never a correction to a sum. The block sums are added
in block order in float64, so the result does not depend on the number of threads.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from focalrec._focal.blocks import run_blocks
from focalrec._focal.inputs import FocalInputs
from focalrec._focal.terms import hard_terms, margin_terms, soft_terms

__all__ = [
    "BLOCK_ELEMENTS",
    "DEVICE_BLOCK_ELEMENTS",
    "derivative",
    "forward",
    "refusal",
    "unavailable",
]

BLOCK_ELEMENTS = 1 << 15
"""Elements per block of rows on CPU (128 KiB of float32 per temporary), ATen's grain size."""

DEVICE_BLOCK_ELEMENTS = 1 << 26
"""Elements per block on accelerators: launches amortized, temporaries bounded (256 MiB)."""

BlockFn = Callable[[slice], tuple[Tensor, Tensor | None]]


def _rows_per_block(inp: FocalInputs) -> int:
    limit = BLOCK_ELEMENTS if inp.logits.device.type == "cpu" else DEVICE_BLOCK_ELEMENTS
    return max(1, limit // max(inp.logits.shape[1], 1))


def _targets(inp: FocalInputs, rows: slice, dtype: torch.dtype) -> tuple[Tensor, bool]:
    """The block's targets in ``dtype`` and whether they are all 0 or 1.

    Float targets are checked for 0/1 on the CPU only (a check elsewhere would read the device);
    the general formulas are exact for 0/1 targets too.
    """
    x = inp.logits
    n, c = rows.stop - rows.start, x.shape[1]
    if inp.index is not None:
        cols = inp.index[rows].long() - inp.col_offset
        # Padding and items outside this block's columns go to a spare column, then dropped.
        cols = torch.where((cols >= 0) & (cols < c) & (inp.index[rows] >= 0), cols, c)
        hit = torch.zeros(n, c + 1, dtype=dtype, device=x.device)
        hit.scatter_(1, cols, 1.0)
        return hit[:, :c], True
    if inp.dense is None:
        return torch.zeros(n, c, dtype=dtype, device=x.device), True
    t = inp.dense[rows]
    hard = t.dtype == torch.bool or (
        t.device.type == "cpu" and bool(torch.logical_or(t == 0, t == 1).all())
    )
    return t.to(dtype), hard


def _pos_weight(inp: FocalInputs, c: int, dtype: torch.dtype) -> Tensor | float | None:
    """The positive terms' factor over the block's ``c`` columns: a float, a ``(c,)`` tensor, or
    None."""
    if inp.pos_weight_vec is not None:
        return inp.pos_weight_vec[inp.col_offset : inp.col_offset + c].to(dtype)
    return inp.pos_weight


def _alphas(inp: FocalInputs, c: int, dtype: torch.dtype) -> tuple[Tensor | float, Tensor | float]:
    """The factors of the positive and negative terms from ``alpha``: ``(alpha, 1 - alpha)``."""
    if inp.alpha_vec is not None:
        a = inp.alpha_vec[inp.col_offset : inp.col_offset + c].to(dtype)
        return a, 1.0 - a
    if inp.alpha is not None:
        return inp.alpha, 1.0 - inp.alpha
    return 1.0, 1.0


def _common_factor(inp: FocalInputs, rows: slice, dtype: torch.dtype) -> Tensor | float:
    """``weight * scale`` for the block (a float when it is the same everywhere)."""
    factor: Tensor | float = 1.0
    if inp.weight is not None:
        factor = inp.weight[rows].to(dtype)
    if inp.scale is not None:
        factor = inp.scale.to(dtype) * factor
    return factor


def _soft_asymmetric_terms(
    inp: FocalInputs, x: Tensor, t: Tensor, order: int
) -> tuple[Tensor, Tensor | None]:
    """ASL's weighted value and derivative of ``order`` for soft targets, before
    ``weight * scale``: ``t a_pos L+ + (1 - t) a_neg L-`` with ``a_pos = alpha * pos_weight``,
    ``a_neg = 1 - alpha``. A part whose factor is 0 is 0, value and derivative, whatever its logit.
    """
    need_grad, need_hess = order == 1, order == 2
    c = x.shape[1]
    a_pos, a_neg = _alphas(inp, c, x.dtype)
    pw = _pos_weight(inp, c, x.dtype)
    if pw is not None:
        a_pos = a_pos * pw
    vp, gp, hp = hard_terms(-x, inp.gamma, need_grad=need_grad, need_hess=need_hess)
    vn, gn, hn = margin_terms(
        x, _gamma_neg(inp), inp.clip, need_grad=need_grad, need_hess=need_hess
    )
    wp, wn = t * a_pos, (1.0 - t) * a_neg

    def mix(pos: Tensor, neg: Tensor) -> Tensor:
        return torch.where(wp != 0, wp * pos, 0.0) + torch.where(wn != 0, wn * neg, 0.0)

    if order == 1:
        assert gp is not None
        assert gn is not None
        return mix(vp, vn), mix(-gp, gn)
    if order == 2:
        assert hp is not None
        assert hn is not None
        return mix(vp, vn), mix(hp, hn)
    return mix(vp, vn), None


def _gamma_neg(inp: FocalInputs) -> float:
    return inp.gamma if inp.gamma_neg is None else inp.gamma_neg


def _factor(inp: FocalInputs, rows: slice, t: Tensor, hard: bool) -> Tensor | float:
    """``alpha_t * weight * scale`` for the block (a float when it is the same everywhere), with
    ``pos_weight`` on the positive terms of hard targets (soft targets take it in
    :func:`soft_terms`)."""
    c = inp.logits.shape[1]
    factor: Tensor | float = 1.0
    if inp.alpha_vec is not None:
        a = inp.alpha_vec[inp.col_offset : inp.col_offset + c].to(t.dtype)
        factor = t * a + (1.0 - t) * (1.0 - a)
    elif inp.alpha is not None:
        a_pos, a_neg = inp.alpha, 1.0 - inp.alpha
        if hard:  # in t's dtype: torch.where of two Python floats would be float32
            factor = torch.full_like(t, a_neg).masked_fill_(t != 0, a_pos)
        else:
            factor = t * a_pos + (1.0 - t) * a_neg
    pw = _pos_weight(inp, c, t.dtype) if hard else None
    if pw is not None:
        ones = torch.ones_like(t)
        factor = torch.where(t != 0, ones * pw, ones) * factor
    if inp.weight is not None:
        factor = inp.weight[rows].to(t.dtype) * factor
    if inp.scale is not None:
        factor = inp.scale.to(t.dtype) * factor
    return factor


def _block_terms(
    inp: FocalInputs, rows: slice, dtype: torch.dtype, order: int, need_value: bool
) -> tuple[Tensor | None, Tensor | None]:
    """The weighted value and the weighted derivative of ``order`` (0: none, 1 or 2) of a block.

    A term whose factor is 0 is 0, value and derivative, whatever its logit.
    """
    x = inp.logits[rows].to(dtype)
    t, hard = _targets(inp, rows, dtype)
    need_grad, need_hess = order == 1, order == 2
    if inp.asymmetric and not hard:
        value, derivative = _soft_asymmetric_terms(inp, x, t, order)
        common = _common_factor(inp, rows, dtype)
        if isinstance(common, float):
            return (value if need_value else None), derivative
        keep = common != 0
        value = torch.where(keep, value * common, 0.0)
        if derivative is not None:
            derivative = torch.where(keep, derivative * common, 0.0)
        return (value if need_value else None), derivative
    if hard:
        # The focal terms at y = -x (positives) and y = x (negatives); ASL's negatives instead
        # take gamma_neg and the margin (the same code where clip = 0 and gamma_neg = gamma).
        one = t != 0
        value, grad, hess = hard_terms(
            torch.where(one, -x, x), inp.gamma, need_grad=need_grad, need_hess=need_hess
        )
        if grad is not None:
            grad = torch.where(one, -grad, grad)
        if inp.asymmetric:
            vn, gn, hn = margin_terms(
                x, _gamma_neg(inp), inp.clip, need_grad=need_grad, need_hess=need_hess
            )
            value = torch.where(one, value, vn)
            grad = None if grad is None or gn is None else torch.where(one, grad, gn)
            hess = None if hess is None or hn is None else torch.where(one, hess, hn)
    else:
        pw = _pos_weight(inp, x.shape[1], dtype)
        value, grad, hess = soft_terms(
            x, t, inp.gamma, need_grad=need_grad, need_hess=need_hess, pos_weight=pw
        )
    factor = _factor(inp, rows, t, hard)
    derivative = grad if order == 1 else hess
    if isinstance(factor, float):
        return (value if need_value else None), derivative
    keep = factor != 0
    if need_value:
        value = torch.where(keep, value * factor, 0.0)
    if derivative is not None:
        derivative = torch.where(keep, derivative * factor, 0.0)
    return (value if need_value else None), derivative


def unavailable() -> None:
    """The torch backend runs everywhere torch does."""
    return None


def refusal(inp: FocalInputs) -> None:
    """The torch backend takes every input the loss accepts."""
    return None


def forward(
    inp: FocalInputs, elementwise: bool, need_grad: bool, grad_into: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """The loss (elementwise ``(R, C)``, or its sum as a 0-d tensor) and, if asked, its gradient.

    The value is in the compute dtype, the gradient in the logits' dtype; it is written into
    ``grad_into`` when given (``(R, C)``; it may be the logits themselves: each block is read
    before it is written), else into a new tensor.
    """
    inp = _detached(inp)
    x, cd = inp.logits, inp.compute_dtype
    rows_total = x.shape[0]
    step = _rows_per_block(inp)
    num_blocks = -(-rows_total // step)
    out = torch.empty(x.shape if elementwise else (0,), dtype=cd, device=x.device)
    grad = None
    if need_grad:
        grad = torch.empty_like(x) if grad_into is None else grad_into.detach()
    sums: list[Tensor | None] = [None] * num_blocks

    def run(first: int, last: int) -> None:
        for block in range(first, last):
            rows = slice(block * step, min((block + 1) * step, rows_total))
            value, g = _block_terms(inp, rows, cd, 1 if need_grad else 0, need_value=True)
            assert value is not None
            if elementwise:
                out[rows] = value
            else:
                sums[block] = value.sum(dtype=torch.float64)
            if grad is not None and g is not None:
                grad[rows] = g

    if x.numel() > 0:
        run_blocks(run, num_blocks)
    if not elementwise:
        parts = [s for s in sums if s is not None]
        total = torch.stack(parts).sum() if parts else torch.zeros((), dtype=torch.float64)
        out = total.to(device=x.device, dtype=cd)
    return out, grad


def derivative(inp: FocalInputs, order: int) -> Tensor:
    """The weighted first (``order=1``) or second (``order=2``) derivative, ``(R, C)``.

    The second derivative is computed in float64 (its products of ``gamma`` would overflow
    float32 for huge ``gamma``) and returned in the logits' dtype.
    """
    inp = _detached(inp)
    x = inp.logits
    dtype = inp.compute_dtype if order == 1 else torch.float64
    rows_total = x.shape[0]
    step = _rows_per_block(inp)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)

    def run(first: int, last: int) -> None:
        for block in range(first, last):
            rows = slice(block * step, min((block + 1) * step, rows_total))
            d = _block_terms(inp, rows, dtype, order, need_value=False)[1]
            assert d is not None
            out[rows] = d

    if x.numel() > 0:
        run_blocks(run, -(-rows_total // step))
    return out


def _detached(inp: FocalInputs) -> FocalInputs:
    """The inputs without autograd history: worker threads run in the default grad mode."""

    def d(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach()

    return FocalInputs(
        logits=inp.logits.detach(),
        dense=d(inp.dense),
        index=d(inp.index),
        alpha=inp.alpha,
        alpha_vec=d(inp.alpha_vec),
        gamma=inp.gamma,
        weight=d(inp.weight),
        scale=d(inp.scale),
        col_offset=inp.col_offset,
        gamma_neg=inp.gamma_neg,
        clip=inp.clip,
        pos_weight=inp.pos_weight,
        pos_weight_vec=d(inp.pos_weight_vec),
    )
