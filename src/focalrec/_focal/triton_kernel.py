r"""The Triton backend: the loss and its gradient in one pass over logits on an accelerator.

One program takes a tile of ``BLOCK_R x BLOCK_C`` logits (rows of the ``(R, C)`` block by columns),
reads each logit once, and writes its gradient once (in the logits' dtype; the gradient may
overwrite the logits in place), its elementwise value when asked, and the tile's sum into a
buffer of per-program partial sums that is added in a fixed order (``torch.sum`` in float64 over
the buffer): the value does not depend on scheduling, and no float atomics are used. Index-list
targets are matched inside the kernel: each program loads its rows' ``m`` catalogue ids and
compares them with its columns' ids (``m`` comparisons per logit, no dense target, no scatter).
The math is that of the compiled CPU kernel (``native.c``) and of
:mod:`focalrec._focal.terms`, in float32 for float32, float16 and bfloat16 logits:

.. math::

    f(y) = p^\gamma s, \qquad f'(y) = p^\gamma (\gamma (1 - p) s + p),
    \qquad p = \sigma(y),\ s = \log(1 + e^{y}),

at ``y = x`` (target 0) or ``y = -x`` (target 1) for hard targets, in tiles whose targets are all
0 or 1; a tile holding a soft target takes the general formulas. ``pos_weight`` multiplies the
positive terms (inside ``BCE`` for soft targets), and the asymmetric loss (ASL) mixes the ``t = 1``
term with ``gamma`` and its negative term with ``gamma_neg`` and the margin ``clip``
(``_margin_terms``), ``t L+ + (1 - t) L-``; hard tiles with ``clip = 0`` and ``gamma_neg = gamma``
take the focal code itself. The same safeguards hold:
bounded factors, ``+inf`` clamped where it multiplies a vanishing factor, ``p = 0`` giving
``p^gamma = 0`` (also when ``gamma`` rounds to 0 in float32), and a term whose factor
(``alpha_t * weight * scale``) is 0 being 0, value and gradient, whatever its logit. ``exp`` and
``log`` are Triton's ``tl.exp`` and ``tl.log`` (on NVIDIA GPUs the hardware's ``ex2``/``lg2``
approximations: ``exp(-a)`` carries a relative error of about ``a * 2**-24`` beyond a few ulp,
under ``1e-5`` for ``a < 100``, where ``native.c`` is within about 1 ulp); ``log1p`` on
``[0, 1]`` is ``native.c``'s series, since ``tl.log(1 + e)`` loses every digit of ``e`` below
float32's epsilon. Offsets are 64-bit, so blocks of more than ``2**31`` elements work.

Importing this module does not import Triton: the kernel source below is plain Python until
:func:`_kernel` binds it to Triton on first use. On the CPU the kernel runs in Triton's
interpreter, which must be switched on (``TRITON_INTERPRET=1``) before Triton is imported; it
is slow, and meant for tests.
"""

from __future__ import annotations

import functools
import importlib
import os
import types
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from focalrec._focal.inputs import FocalInputs

if TYPE_CHECKING:
    import triton.language as tl

__all__ = [
    "forward",
    "interpreting",
    "launch_arguments",
    "refusal",
    "unavailable",
]

TILE_ELEMENTS = 2048
"""Logits per program (a power of two)."""

MAX_BLOCK_C = 1024
"""The widest column tile (a power of two); narrower blocks of logits take more rows per tile."""

NUM_WARPS = 4
"""Warps per program on GPUs."""

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_FLT_MAX = float(torch.finfo(torch.float32).max)
_NO_TARGETS, _INDEX, _BOOL, _FLOAT = 0, 1, 2, 3  # how the kernel reads targets


# --------------------------------------------------------------------------------------------------
# kernel source: plain functions in Triton's language, bound to Triton by _kernel()


def _log1p01(e: tl.tensor) -> tl.tensor:
    """``log(1 + e)`` for ``e`` in ``[0, 1]``: ``2 atanh(s)`` with ``s = e / (2 + e)``."""
    s = e / (2.0 + e)
    z = s * s
    p = 2.0 / 13.0
    p = p * z + 2.0 / 11.0
    p = p * z + 2.0 / 9.0
    p = p * z + 2.0 / 7.0
    p = p * z + 2.0 / 5.0
    p = p * z + 2.0 / 3.0
    p = p * z + 2.0
    return s * p


def _sigmoids(z: tl.tensor) -> tuple[tl.tensor, tl.tensor, tl.tensor, tl.tensor]:
    """``sigmoid(z)``, ``sigmoid(-z)``, ``log(1 + exp(-|z|))`` and ``z >= 0``."""
    e = tl.exp(-tl.abs(z))
    inv = 1.0 / (1.0 + e)
    ei = e * inv
    pos = z >= 0.0
    return tl.where(pos, inv, ei), tl.where(pos, ei, inv), _log1p01(e), pos


def _int_power(b: tl.tensor, K: tl.constexpr) -> tl.tensor:
    """``b ** K`` for ``K`` in ``0..4`` as products."""
    b2 = b * b
    if K == 0:
        r = tl.zeros_like(b) + 1.0
    elif K == 1:
        r = b
    elif K == 2:
        r = b2
    elif K == 3:
        r = b2 * b
    else:
        r = b2 * b2
    return r


def _hard_terms(
    x: tl.tensor, one: tl.tensor, gamma: tl.tensor, GAMMA_INT: tl.constexpr, FLT_MAX: tl.constexpr
) -> tuple[tl.tensor, tl.tensor]:
    """Value and derivative in ``x`` for 0/1 targets (``one``): the ``t = 0`` terms at ``y``."""
    y = tl.where(one, -x, x)
    p, omp, lg, pos = _sigmoids(y)
    s = tl.where(pos, y, 0.0) + lg
    if GAMMA_INT >= 0:
        pg = _int_power(p, GAMMA_INT)
    else:
        # p = 0 gives 0 even when gamma rounds to 0 in float32 (not exp(0 * inf)).
        pg = tl.where(p > 0.0, tl.exp(-gamma * (lg - tl.where(pos, 0.0, y))), 0.0)
    s_fin = tl.where(s < FLT_MAX, s, FLT_MAX)  # (1 - p) s -> 0 at y = inf, not 0 * inf
    value = pg * s
    grad = (pg * gamma) * (omp * s_fin) + pg * p
    return value, tl.where(one, -grad, grad)


def _soft_terms(
    x: tl.tensor,
    t: tl.tensor,
    tw: tl.tensor,
    gamma: tl.tensor,
    GAMMA_INT: tl.constexpr,
    FLT_MAX: tl.constexpr,
) -> tuple[tl.tensor, tl.tensor]:
    """Value and derivative in ``x`` for targets ``t`` anywhere in ``[0, 1]``; ``tw`` is
    ``pos_weight * t`` (``t`` without a positive weight)."""
    p, omp, lg, pos = _sigmoids(x)
    sp = tl.where(pos, x, 0.0) + lg  # softplus(x) = -log(1 - p)
    sn = tl.where(pos, 0.0, -x) + lg  # softplus(-x) = -log p
    u = 1.0 - t
    bce = tl.where(tw > 0.0, tw * sn, 0.0) + tl.where(u > 0.0, u * sp, 0.0)
    q = p * u + omp * t
    q_pos = q > 0.0
    if GAMMA_INT >= 0:
        qg = _int_power(q, GAMMA_INT)
    else:
        qg = tl.where(q_pos, tl.exp(gamma * tl.log(tl.where(q_pos, q, 1.0))), 0.0)
    r = tl.where(q_pos, (p * omp) / tl.where(q_pos, q, 1.0), 0.0)
    bce_fin = tl.where(bce < FLT_MAX, bce, FLT_MAX)
    # An infinite BCE has q >= min(t, 1 - t) > 0: the term is infinite even where q^gamma
    # underflows to 0 (not 0 * inf).
    value = tl.where(bce < FLT_MAX, qg * bce, bce)
    grad = (qg * gamma) * ((1.0 - 2.0 * t) * r * bce_fin) + qg * (p * u - omp * tw)
    return value, grad


def _margin_terms(
    x: tl.tensor, gamma: tl.tensor, GAMMA_INT: tl.constexpr, clip: tl.tensor
) -> tuple[tl.tensor, tl.tensor]:
    """Value and derivative in ``x`` of ASL's negative term with margin ``clip > 0``: 0 where
    ``p <= clip`` (see :mod:`focalrec._focal.terms`)."""
    p, omp, _, _ = _sigmoids(x)
    zero = p <= clip
    us = tl.where(zero, 1.0, p - clip)
    w = omp + clip
    # log1p(-u) by the series for u <= 1/2 (|u / (2 - u)| <= 1/3), else log((1 - p) + m).
    ell = tl.where(us < 0.5, -_log1p01(-us), -tl.log(w))
    if GAMMA_INT >= 0:  # noqa: SIM108 (a compile-time branch)
        pg = _int_power(us, GAMMA_INT)
    else:
        pg = tl.exp(gamma * tl.log(us))
    pg1 = pg / us
    a = p * omp
    value = tl.where(zero, 0.0, pg * ell)
    grad = tl.where(zero, 0.0, a * ((pg1 * gamma) * ell + pg / w))
    return value, grad


def _focal_kernel(
    x_ptr: tl.tensor,
    x_stride: tl.tensor,
    grad_ptr: tl.tensor,
    grad_stride_r: tl.tensor,
    grad_stride_c: tl.tensor,
    value_ptr: tl.tensor,
    target_ptr: tl.tensor,
    target_stride_r: tl.tensor,
    target_stride_c: tl.tensor,
    alpha_ptr: tl.tensor,
    weight_ptr: tl.tensor,
    weight_stride_r: tl.tensor,
    weight_stride_c: tl.tensor,
    scale_ptr: tl.tensor,
    partial_ptr: tl.tensor,
    rows: tl.tensor,
    cols: tl.tensor,
    width: tl.tensor,
    col_offset: tl.tensor,
    col_tiles: tl.tensor,
    alpha: tl.tensor,
    gamma: tl.tensor,
    pos_weight_ptr: tl.tensor,
    pos_weight: tl.tensor,
    gamma_neg: tl.tensor,
    clip: tl.tensor,
    TARGETS: tl.constexpr,
    HAS_ALPHA: tl.constexpr,
    HAS_ALPHA_VEC: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    GAMMA_INT: tl.constexpr,
    POS_WEIGHT: tl.constexpr,
    ASL: tl.constexpr,
    GAMMA_NEG_INT: tl.constexpr,
    CLIP_ZERO: tl.constexpr,
    STORE_VALUE: tl.constexpr,
    STORE_GRAD: tl.constexpr,
    STORE_SUM: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    FLT_MAX: tl.constexpr,
) -> None:
    """One tile: the terms, their gradient and (``STORE_SUM``) their sum at ``partial_ptr[pid]``."""
    pid = tl.program_id(0).to(tl.int64)
    r = (pid // col_tiles) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    c = (pid % col_tiles) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    r_in = r < rows
    c_in = c < cols
    inside = r_in[:, None] & c_in[None, :]
    x_at = r[:, None] * x_stride + c[None, :]
    x = tl.load(x_ptr + x_at, mask=inside, other=0.0).to(tl.float32)
    ids = col_offset + c  # catalogue ids of the tile's columns
    t = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    if TARGETS == 1:
        # Padding (-1) never equals an id (ids are >= 0); repeats set the same column again.
        for k in range(0, width):
            pos_id = tl.load(
                target_ptr + r * target_stride_r + k * target_stride_c, mask=r_in, other=-1
            ).to(tl.int64)
            t = tl.where(pos_id[:, None] == ids[None, :], 1.0, t)
    elif TARGETS >= 2:
        t_at = r[:, None] * target_stride_r + c[None, :] * target_stride_c
        t = tl.load(target_ptr + t_at, mask=inside, other=0).to(tl.float32)  # bool: 0 or 1
    # The positive weight of each column: 0 none, 1 a float, 2 one per item.
    if POS_WEIGHT == 2:
        pw = tl.load(pos_weight_ptr + ids, mask=c_in, other=0.0).to(tl.float32)[None, :]
    else:
        pw = pos_weight
    # ASL: 0 the focal loss; 1 ASL; 2 ASL for soft tiles, the focal loss for hard ones (clip 0,
    # gamma_neg = gamma: the same numbers).
    soft = 0
    if TARGETS == 3:
        soft = tl.max(tl.max(((t != 0.0) & (t != 1.0)).to(tl.int32), axis=1), axis=0)
    mixed = 0
    if ASL == 1:
        mixed = 1
    elif ASL == 2:
        mixed = soft
    if mixed != 0:
        # t a_pos L+ + (1 - t) a_neg L-, then the common factor weight * scale.
        all_true = t == t
        vp, gp = _hard_terms(x, all_true, gamma, GAMMA_INT, FLT_MAX)
        if CLIP_ZERO:
            vn, gn = _hard_terms(x, t != t, gamma_neg, GAMMA_NEG_INT, FLT_MAX)
        else:
            vn, gn = _margin_terms(x, gamma_neg, GAMMA_NEG_INT, clip)
        a_pos = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32) + 1.0
        a_neg = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32) + 1.0
        if HAS_ALPHA_VEC:
            a = tl.load(alpha_ptr + ids, mask=c_in, other=0.0).to(tl.float32)[None, :]
            a_pos = a_pos * a
            a_neg = a_neg * (1.0 - a)
        elif HAS_ALPHA:
            a_pos = a_pos * alpha
            a_neg = a_neg * (1.0 - alpha)
        if POS_WEIGHT != 0:
            a_pos = a_pos * pw
        wp = t * a_pos
        wn = (1.0 - t) * a_neg
        value = tl.where(wp != 0.0, wp * vp, 0.0) + tl.where(wn != 0.0, wn * vn, 0.0)
        grad = tl.where(wp != 0.0, wp * gp, 0.0) + tl.where(wn != 0.0, wn * gn, 0.0)
        if HAS_SCALE:
            factor = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32) + tl.load(scale_ptr).to(
                tl.float32
            )
        else:
            factor = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32) + 1.0
        if HAS_WEIGHT:
            w_at = r[:, None] * weight_stride_r + c[None, :] * weight_stride_c
            factor = factor * tl.load(weight_ptr + w_at, mask=inside, other=0.0).to(tl.float32)
    else:
        if soft != 0:
            tw = t
            if POS_WEIGHT != 0:
                tw = t * pw
            value, grad = _soft_terms(x, t, tw, gamma, GAMMA_INT, FLT_MAX)
        else:
            value, grad = _hard_terms(x, t != 0.0, gamma, GAMMA_INT, FLT_MAX)
        # The factor alpha_t * weight * scale, in native.c's order (pos_weight on hard 1s).
        if HAS_SCALE:
            factor = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32) + tl.load(scale_ptr).to(
                tl.float32
            )
        else:
            factor = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32) + 1.0
        if HAS_ALPHA_VEC:
            a = tl.load(alpha_ptr + ids, mask=c_in, other=0.0).to(tl.float32)[None, :]
            factor = factor * (a * t + (1.0 - a) * (1.0 - t))
        elif HAS_ALPHA:
            factor = factor * (alpha * t + (1.0 - alpha) * (1.0 - t))
        if POS_WEIGHT != 0:  # noqa: SIM102 (compile time, then run time)
            if soft == 0:
                factor = factor * tl.where(t != 0.0, pw, 1.0)
        if HAS_WEIGHT:
            w_at = r[:, None] * weight_stride_r + c[None, :] * weight_stride_c
            factor = factor * tl.load(weight_ptr + w_at, mask=inside, other=0.0).to(tl.float32)
    keep = (factor != 0.0) & inside
    value = tl.where(keep, factor * value, 0.0)
    if STORE_GRAD:
        grad = tl.where(keep, factor * grad, 0.0)
        g_at = r[:, None] * grad_stride_r + c[None, :] * grad_stride_c
        tl.store(grad_ptr + g_at, grad.to(grad_ptr.dtype.element_ty), mask=inside)
    if STORE_VALUE:
        tl.store(value_ptr + (r[:, None] * cols + c[None, :]), value, mask=inside)
    if STORE_SUM:
        tl.store(partial_ptr + pid, tl.sum(tl.sum(value, axis=1), axis=0))


_SOURCE = (
    _log1p01,
    _sigmoids,
    _int_power,
    _hard_terms,
    _soft_terms,
    _margin_terms,
    _focal_kernel,
)


@functools.cache
def _kernel(interpret: bool) -> Any:
    """The kernel, jitted (or, with ``interpret``, made for Triton's interpreter) on first use.

    Each function of the source is re-made with globals holding ``triton.language`` and the
    jitted helpers, so that importing this module never imports Triton.
    """
    import triton
    import triton.language

    scope: dict[str, Any] = {"tl": triton.language, "__name__": __name__}
    for fn in _SOURCE:
        plain = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__)
        plain.__qualname__, plain.__module__ = fn.__qualname__, fn.__module__
        plain.__annotations__ = fn.__annotations__
        scope[fn.__name__] = triton.jit(plain)
    return scope["_focal_kernel"]


# --------------------------------------------------------------------------------------------------
# dispatch


@functools.cache
def unavailable() -> str | None:
    """Why Triton cannot run here at all (``import triton`` fails), or None."""
    try:
        importlib.import_module("triton")
        importlib.import_module("triton.language")
    except Exception as e:  # a broken install raises more than ImportError
        return f"`import triton` failed ({type(e).__name__}: {e})"
    return None


def interpreting() -> bool:
    """Whether Triton's interpreter is on (``TRITON_INTERPRET=1``)."""
    try:
        import triton

        return bool(triton.knobs.runtime.interpret)
    except AttributeError:  # Triton before 3.4 reads the variable itself
        return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _device_reason(device: torch.device) -> str | None:
    """Why Triton cannot run on ``device``, or None when it can."""
    if device.type == "cpu":
        if interpreting():
            return None
        return "CPU tensors need Triton's interpreter (TRITON_INTERPRET=1, slow: for tests)"
    import triton.backends

    backends = getattr(triton.backends, "backends", {})
    if device.type == "cuda":
        name = "amd" if torch.version.hip else "nvidia"
        if name not in backends:
            return f"this Triton build has no {name} backend"
        if name == "nvidia" and torch.cuda.get_device_capability(device)[0] < 7:
            return "Triton needs an NVIDIA GPU of compute capability 7.0 or newer"
        return None
    if device.type == "xpu":
        return None if "intel" in backends else "this Triton build has no intel (XPU) backend"
    return f"Triton does not run on {device.type} devices"


def refusal(inp: FocalInputs) -> str | None:
    """Why this backend does not take ``inp`` (a phrase after "it"), or None: it takes float32,
    float16 or bfloat16 ``(R, C)`` logits with a unit column stride on a device Triton runs on
    (CUDA, ROCm, XPU; the CPU under ``TRITON_INTERPRET=1``)."""
    x = inp.logits
    if x.dtype not in _DTYPES:
        return f"it takes float32, float16 or bfloat16 logits, got {x.dtype}"
    if x.dim() != 2 or (x.stride(-1) != 1 and x.shape[-1] > 1):
        return "it takes (R, C) logits with a unit column stride"
    error = unavailable()
    if error is not None:
        return error
    reason = _device_reason(x.device)
    return None if reason is None else f"{reason}; got logits on {x.device}"


def _tile(rows: int, cols: int) -> tuple[int, int]:
    """``(BLOCK_R, BLOCK_C)``: powers of two, about :data:`TILE_ELEMENTS` logits per tile."""
    block_c = min(_next_power_of_two(cols), MAX_BLOCK_C, TILE_ELEMENTS)
    block_r = min(max(1, TILE_ELEMENTS // block_c), _next_power_of_two(rows))
    return block_r, block_c


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _float32(v: float) -> float:
    """``v`` rounded to float32 (beyond its range: +-inf), as the kernel holds it."""
    return float(torch.tensor(v, dtype=torch.float32))


def forward(
    inp: FocalInputs, elementwise: bool, need_grad: bool, grad_into: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """The loss (elementwise ``(R, C)`` float32, or its sum as a 0-d float32 tensor) and, if
    asked, its gradient in the logits' dtype.

    The gradient is written into ``grad_into`` when given (``(R, C)`` in the logits' dtype, any
    strides; it may be the logits themselves: each tile is read before it is written), else into
    a new tensor. Inputs must pass :func:`refusal` (none). Nothing is read back to the host: the
    scale stays a device tensor, and the sum is a device tensor.
    """
    x = inp.logits.detach()
    rows, cols = x.shape
    device = x.device
    grad = None
    if need_grad:
        grad = torch.empty_like(x) if grad_into is None else grad_into.detach()
    value = torch.empty(rows, cols, dtype=torch.float32, device=device) if elementwise else None
    if rows == 0 or cols == 0:
        total = torch.zeros((), dtype=torch.float32, device=device)
        return (total if value is None else value), grad
    programs = _programs(rows, cols)
    partial = None if elementwise else torch.empty(programs, dtype=torch.float32, device=device)
    args, constants = launch_arguments(inp, grad, value, partial)
    launch = _kernel(interpreting())[(programs,)]
    # a * b + c contracted into fused multiply-adds, as native.c is compiled: Triton's default
    # through 3.9, stated because 3.10 changes it.
    launch(*args, **constants, num_warps=NUM_WARPS, enable_fp_fusion=True)
    if value is not None:
        return value, grad
    assert partial is not None
    return partial.sum(dtype=torch.float64).to(torch.float32), grad


def _programs(rows: int, cols: int) -> int:
    """The number of programs (tiles) over a ``(rows, cols)`` block."""
    block_r, block_c = _tile(rows, cols)
    return -(-rows // block_r) * -(-cols // block_c)


def launch_arguments(
    inp: FocalInputs, grad: Tensor | None, value: Tensor | None, partial: Tensor | None
) -> tuple[tuple[object, ...], dict[str, object]]:
    """The kernel's arguments and its compile-time constants for ``inp`` and these outputs.

    ``grad``, ``value`` and ``partial`` (one float32 per program) are written where given.
    """
    x = inp.logits.detach()
    rows, cols = x.shape
    block_r, block_c = _tile(rows, cols)
    kind, target, t_strides = _targets(inp)
    weight = None if inp.weight is None else inp.weight.detach()
    alpha_vec = None if inp.alpha_vec is None else inp.alpha_vec.detach()
    scale = None if inp.scale is None else inp.scale.detach()
    pos_weight_vec = None if inp.pos_weight_vec is None else inp.pos_weight_vec.detach()
    gamma = inp.gamma
    gamma_neg = gamma if inp.gamma_neg is None else inp.gamma_neg
    asl = 0
    if inp.asymmetric:
        asl = 2 if inp.clip == 0.0 and _float32(gamma_neg) == _float32(gamma) else 1
    args = (
        x,
        x.stride(0),
        x if grad is None else grad,
        0 if grad is None else grad.stride(0),
        0 if grad is None else grad.stride(1),
        x if value is None else value,
        x if target is None else target,
        *t_strides,
        x if alpha_vec is None else alpha_vec,
        x if weight is None else weight,
        0 if weight is None else weight.stride(0),
        0 if weight is None else weight.stride(1),
        x if scale is None else scale,
        x if partial is None else partial,
        rows,
        cols,
        0 if inp.index is None else inp.index.shape[1],
        inp.col_offset,
        -(-cols // block_c),
        _float32(0.0 if inp.alpha is None else inp.alpha),
        _float32(gamma),
        x if pos_weight_vec is None else pos_weight_vec,
        _float32(1.0 if inp.pos_weight is None else inp.pos_weight),
        _float32(gamma_neg),
        _float32(inp.clip),
    )
    constants: dict[str, object] = {
        "TARGETS": kind,
        "HAS_ALPHA": inp.alpha is not None,
        "HAS_ALPHA_VEC": alpha_vec is not None,
        "HAS_WEIGHT": weight is not None,
        "HAS_SCALE": scale is not None,
        "GAMMA_INT": _gamma_int(gamma),
        "POS_WEIGHT": 2 if pos_weight_vec is not None else int(inp.pos_weight is not None),
        "ASL": asl,
        "GAMMA_NEG_INT": _gamma_int(gamma_neg),
        "CLIP_ZERO": inp.clip == 0.0,
        "STORE_VALUE": value is not None,
        "STORE_GRAD": grad is not None,
        "STORE_SUM": partial is not None,
        "BLOCK_R": block_r,
        "BLOCK_C": block_c,
        "FLT_MAX": _FLT_MAX,
    }
    return args, constants


def _gamma_int(gamma: float) -> int:
    """``gamma`` as a compile-time constant: 0..4 when it is that integer, else -1."""
    return int(gamma) if gamma in (0.0, 1.0, 2.0, 3.0, 4.0) else -1


def _targets(inp: FocalInputs) -> tuple[int, Tensor | None, tuple[int, int]]:
    """How the kernel reads the targets, the tensor it reads, and its strides."""
    if inp.index is not None:
        index = inp.index.detach()
        return _INDEX, index, (index.stride(0), index.stride(1))
    if inp.dense is None:
        return _NO_TARGETS, None, (0, 0)
    dense = inp.dense.detach()
    if dense.dtype == torch.bool:
        return _BOOL, dense.view(torch.uint8), (dense.stride(0), dense.stride(1))
    return _FLOAT, dense, (dense.stride(0), dense.stride(1))
