r"""Closed-form terms of the sigmoid focal loss: value, first and second derivative, in torch.

Notation: ``x`` a logit, ``t`` its target in ``[0, 1]``, ``p = sigmoid(x)``, ``s = softplus``,
``q = 1 - p_t = p (1 - t) + (1 - p) t``, ``BCE = t s(-x) + (1 - t) s(x)``, ``c = 1 - 2t`` and
``r = p (1 - p) / q``, which lies in ``[0, 1]``. The focal term without its weight is

.. math::

    f = q^\gamma \mathrm{BCE}, \qquad
    f' = q^\gamma \big(\gamma c r \mathrm{BCE} + p (1 - t) - (1 - p) t\big),

.. math::

    f'' = q^\gamma \big(\gamma (\gamma - 1) c^2 r^2 \mathrm{BCE}
        + 2 \gamma c r (p (1 - t) - (1 - p) t) + \gamma c r (1 - 2p) \mathrm{BCE}
        + p (1 - p)\big).

For a hard target the formulas are those of ``t = 0`` at ``y = x`` (``t = 0``) or ``y = -x``
(``t = 1``), since ``FL(x, 1) = FL(-x, 0)``; with ``p = sigmoid(y)``:

.. math::

    f = p^\gamma s(y), \qquad f' = p^\gamma (\gamma (1 - p) s(y) + p), \qquad
    f'' = p^\gamma (1 - p) \big(\gamma^2 (1 - p) s(y) + (2 \gamma + 1) p - \gamma p s(y)\big),

with ``df/dx = f'(y)`` for ``t = 0``, ``-f'(y)`` for ``t = 1``, and ``d^2 f / dx^2 = f''(y)`` for
both. Each factor is bounded (``(1 - p) s(y)`` and ``r BCE`` tend to 0 where ``s`` grows), so all
terms are finite for every finite logit and every ``gamma >= 0``: the textbook
``gamma q^(gamma - 1) dq/dx`` is ``inf * 0`` at saturated logits when ``gamma < 1``.
``q^gamma`` is a product for an integer ``gamma`` up to 4, else ``exp(gamma log q)`` with
``log q`` in log space (``log p = -s(-y)`` for hard targets). A factor ``s`` that multiplies a
vanishing one is clamped to the dtype's largest finite value, so that at ``x = +-inf`` the terms
are their limits rather than ``0 * inf``. Products are ordered so that no intermediate overflows
for any ``gamma`` up to the float32 maximum.

**Positive weights.** ``soft_terms`` takes ``pos_weight`` ``w`` with
:class:`torch.nn.BCEWithLogitsLoss`'s meaning: ``BCE = w t s(-x) + (1 - t) s(x)``, so that
``p - t`` becomes ``p (1 - t) - w t (1 - p)`` and the last term of ``f''`` is
``(w t + 1 - t) p (1 - p)``; the focusing factor ``q^gamma`` is unchanged. For hard targets the
weight is a plain factor on the positive terms.

**The asymmetric loss** (ASL, Ridnik et al. 2021) puts a probability margin ``m`` (``clip``) on
negatives: with ``u = p - m`` and ``p_m = max(u, 0)``, the negative term is
``L- = p_m^gamma (-log(1 - p_m))``. Where ``u > 0``, with ``w = 1 - u = (1 - p) + m`` (in log
space: ``1 - p = sigmoid(-x)``), ``l = -log(w)``, ``rho = l / u`` (in
``[1, -log(m) / (1 - m)]``) and ``a = p (1 - p)``:

.. math::

    L_- = u^\gamma l, \qquad
    L_-' = a \big(\gamma u^{\gamma - 1} l + u^\gamma / w\big), \qquad
    L_-'' = a (1 - 2p) F + a^2 \big(u^{\gamma - 1} (\gamma (\gamma - 1) \rho + 2 \gamma / w)
        + u^\gamma / w^2\big),

with ``F = L_-' / a``. Where ``p <= m`` the term and both derivatives are exactly 0. At the kink
``p = m`` the value is continuous (0); the answer there is the one-sided derivative from the zero
side: ``L_-' = 0`` and ``L_-'' = 0``. From the other side ``L_-'`` tends to ``m (1 - m)`` for
``gamma = 0`` (a jump) and to 0 for ``gamma > 0``; ``L_-''`` tends to 0 for ``gamma > 1``, to
``2 m^2 (1 - m)^2`` for ``gamma = 1``, and grows without bound for ``0 < gamma < 1`` (the function
has no second derivative there). ``l`` is ``-log1p(-u)`` where ``u < 1/2`` (exact for small
``u``) and ``-log((1 - p) + m)`` elsewhere (exact where ``p`` is near 1); everything is bounded
for ``m > 0``, also at ``x = +-inf``. With ``m = 0`` the term is the focal ``t = 0`` term,
computed by the same code (:func:`hard_terms`), so the focal loss is ASL with
``gamma_pos = gamma_neg = gamma, clip = 0`` bit for bit.

These functions are the math of the torch backend (:mod:`focalrec._focal.torch_kernel`); the
compiled and Triton kernels evaluate the same formulas.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["hard_terms", "margin_terms", "soft_terms"]

_INT_GAMMAS = (0.0, 1.0, 2.0, 3.0, 4.0)


def _power(base: Tensor, log_base: Tensor | None, gamma: float) -> Tensor:
    """``base ** gamma``: a product for small integer ``gamma``, else ``exp(gamma log base)``."""
    if gamma in _INT_GAMMAS:
        k = int(gamma)
        if k == 0:
            return torch.ones_like(base)
        out = base
        for _ in range(k - 1):
            out = out * base
        return out
    log = torch.log(base) if log_base is None else log_base
    # A zero base gives 0, also for a gamma that rounds to 0 in the dtype (not exp(0 * -inf)).
    return torch.where(base > 0, torch.exp(log * gamma), 0.0)


def _finite(x: Tensor) -> Tensor:
    """``x`` with ``+inf`` replaced by the dtype's largest finite value."""
    return x.clamp_max(torch.finfo(x.dtype).max)


def _gamma_times_omp(gamma: float, omp: Tensor, s: Tensor) -> Tensor | None:
    """``gamma (1 - p)`` with ``1 - p = exp(-s(y))`` taken in log space where it underflows, or
    None where that cannot matter.

    ``sigmoid(-y)`` underflows to 0 (float32: ``y`` above about 88) while ``gamma (1 - p) s(y)``
    may still be of order 1 for a huge ``gamma`` (``gamma = 1e36`` at ``y = 92``: 0.01).
    Where ``1 - p`` is below the dtype's smallest normal number, the term is
    ``exp(log(gamma) - s(y))``. For ``gamma`` small enough that ``gamma (1 - p) s(y)`` is then
    below the rounding of ``p`` (about 1), the plain product is exact to rounding: None.
    """
    info = torch.finfo(omp.dtype)
    if gamma * info.tiny * 1e3 < info.eps:  # s(y) < 1e3 wherever 1 - p is about tiny
        return None
    return torch.where(omp >= info.tiny, omp * gamma, torch.exp(math.log(gamma) - s))


def hard_terms(
    y: Tensor, gamma: float, *, need_grad: bool = True, need_hess: bool = False
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``f``, ``f'`` and ``f''`` of the ``t = 0`` term at ``y`` (None where not asked for)."""
    p, omp = torch.sigmoid(y), torch.sigmoid(-y)
    s = F.softplus(y)
    pg = _power(p, None if gamma in _INT_GAMMAS else -F.softplus(-y), gamma)
    value = pg * s
    if not (need_grad or need_hess):
        return value, None, None
    s_fin = _finite(s)
    omp_s = omp * s_fin
    grad = None
    if need_grad:
        gamma_omp = _gamma_times_omp(gamma, omp, s)
        if gamma_omp is None:
            grad = (pg * gamma) * omp_s + pg * p
        else:
            grad = pg * (gamma_omp * s_fin) + pg * p
    hess = None
    if need_hess:
        inner = (gamma * gamma) * omp_s + (2.0 * gamma + 1.0) * p - (gamma * p) * s_fin
        hess = pg * omp * inner
    return value, grad, hess


def soft_terms(
    x: Tensor,
    t: Tensor,
    gamma: float,
    *,
    need_grad: bool = True,
    need_hess: bool = False,
    pos_weight: Tensor | float | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``f``, ``df/dx`` and ``d^2 f / dx^2`` for targets ``t`` anywhere in ``[0, 1]``; the
    positive part of ``BCE`` multiplied by ``pos_weight`` (a float or a tensor that broadcasts
    to ``x``) when given."""
    p, omp = torch.sigmoid(x), torch.sigmoid(-x)
    sp, sn = F.softplus(x), F.softplus(-x)
    u = 1.0 - t
    tw = t if pos_weight is None else t * pos_weight
    # w t s(-x) + (1 - t) s(x): a zero weight contributes 0, also where s is infinite.
    bce = torch.where(tw > 0, tw * sn, 0.0) + torch.where(u > 0, u * sp, 0.0)
    q = p * u + omp * t
    qg = _power(q, None, gamma)
    # An infinite BCE has q >= min(t, 1 - t) > 0: the term is infinite even where q^gamma
    # underflows to 0 (not 0 * inf).
    value = torch.where(torch.isinf(bce), bce, qg * bce)
    if not (need_grad or need_hess):
        return value, None, None
    r = torch.where(q > 0, (p * omp) / q, 0.0)
    c = 1.0 - 2.0 * t
    bce_fin = _finite(bce)
    p_minus_t = p * u - omp * tw  # p - t without cancellation at t = 1 (w = 1)
    cr = c * r
    grad = None
    if need_grad:
        grad = (qg * gamma) * (cr * bce_fin) + qg * p_minus_t
    hess = None
    if need_hess:
        inner = (
            (gamma - 1.0) * (cr * cr * bce_fin) * gamma
            + 2.0 * gamma * cr * p_minus_t
            + gamma * cr * (1.0 - 2.0 * p) * bce_fin
            + (p * omp if pos_weight is None else (tw + u) * (p * omp))
        )
        hess = qg * inner
    return value, grad, hess


def margin_terms(
    x: Tensor, gamma: float, clip: float, *, need_grad: bool = True, need_hess: bool = False
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``f``, ``df/dx`` and ``d^2 f / dx^2`` of ASL's negative term with probability margin
    ``clip`` at logits ``x`` (see the module docstring); :func:`hard_terms` for ``clip = 0``."""
    if clip == 0.0:
        return hard_terms(x, gamma, need_grad=need_grad, need_hess=need_hess)
    p, omp = torch.sigmoid(x), torch.sigmoid(-x)
    u = p - clip
    active = u > 0
    # Where p <= m everything is 0; NaN logits propagate (NaN > 0 is False: test the zero side).
    zero = p <= clip
    u_safe = torch.where(active, u, 1.0)
    w = omp + clip
    ell = torch.where(u_safe < 0.5, -torch.log1p(-u_safe), -torch.log(w))
    pg = _power(u_safe, None if gamma in _INT_GAMMAS else torch.log(u_safe), gamma)
    value = torch.where(zero, 0.0, pg * ell)
    if not (need_grad or need_hess):
        return value, None, None
    a = p * omp
    pg1 = pg / u_safe  # u^(gamma - 1)
    first = (pg1 * gamma) * ell + pg / w  # F = f' / a
    grad = torch.where(zero, 0.0, a * first) if need_grad else None
    hess = None
    if need_hess:
        rho = ell / u_safe
        second = pg1 * ((gamma * (gamma - 1.0)) * rho + (2.0 * gamma) / w) + pg / (w * w)
        hess = torch.where(zero, 0.0, a * (omp - p) * first + (a * a) * second)
    return value, grad, hess
