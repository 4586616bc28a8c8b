r"""Prior-bias initialization of a classifier's final layer (Lin et al., 2017, section 4.1).

Starting every logit at a constant that matches the rarity of positives keeps the first steps of
training from being dominated by the many easy negatives. For a class with prior :math:`\pi`, the
bias :math:`b = \log\frac{\pi}{1 - \pi} = -\log\frac{1 - \pi}{\pi}` makes :math:`\sigma(b) = \pi`.

**Mind the sign.** :math:`-\log((1 - 0.01) / 0.01) = -4.595` is a 1% prior;
:math:`+\log((1 - 0.01) / 0.01) = +4.595` is a 99% prior, which starts training by predicting every
item as positive (a public write-up of the challenge pipeline this project grew from printed the
wrong sign while its code used the right one).

Under the focal loss the best constant logit is not :math:`\operatorname{logit}(\pi)`:
:func:`focal_prior_bias` solves for the constant that minimizes the expected loss.
"""

from __future__ import annotations

import math
from typing import overload

import torch
from torch import Tensor, nn

from focalrec._focal.terms import hard_terms
from focalrec._indices import check_index_list, first_occurrence, is_index_list
from focalrec.losses import _broadcasts_to, _check_gamma

__all__ = ["class_priors", "focal_prior_bias", "init_prior_bias_", "prior_bias"]


@overload
def prior_bias(prior: float) -> float: ...


@overload
def prior_bias(prior: Tensor) -> Tensor: ...


def prior_bias(prior: float | Tensor) -> float | Tensor:
    r"""The logit whose sigmoid is ``prior``: :math:`b = -\log\frac{1 - \pi}{\pi}`.

    Mind the minus sign: ``+log((1 - 0.01) / 0.01) = +4.595`` would be a 99% prior.

    Args:
        prior: A probability in ``(0, 1)``, or a tensor of them (per class).

    Returns:
        A float for a float, a tensor of the same shape and dtype for a tensor.

    Raises:
        TypeError: If ``prior`` is neither a real number nor a floating tensor.
        ValueError: If a value lies outside ``(0, 1)``.

    Example:
        >>> round(prior_bias(0.01), 3)
        -4.595
        >>> prior_bias(torch.tensor([0.5, 0.9]))
        tensor([0.0000, 2.1972])
    """
    if isinstance(prior, Tensor):
        _check_prior_tensor(prior)
        return torch.log(prior) - torch.log1p(-prior)
    value = _check_prior_float(prior, "prior")
    return math.log(value) - math.log1p(-value)


@overload
def focal_prior_bias(prior: float, *, alpha: float | None, gamma: float) -> float: ...


@overload
def focal_prior_bias(prior: Tensor, *, alpha: float | None, gamma: float) -> Tensor: ...


def focal_prior_bias(prior: float | Tensor, *, alpha: float | None, gamma: float) -> float | Tensor:
    r"""The constant logit that minimizes the expected focal loss of a class with rate ``prior``.

    For a class whose labels are positive with probability :math:`\pi`, a constant logit
    :math:`b` has expected loss

    .. math::

        E(b) = \pi \, \alpha \, (1 - p)^\gamma (-\log p)
            + (1 - \pi)(1 - \alpha) \, p^\gamma (-\log(1 - p)), \qquad p = \sigma(b),

    (``alpha=None``: no weighting). This returns the root of :math:`E'(b) = 0`, found by bisection
    in float64 on the closed-form derivative. With ``gamma = 0`` it is
    :math:`\operatorname{logit}\frac{\pi\alpha}{\pi\alpha + (1 - \pi)(1 - \alpha)}`, and with
    ``alpha=None`` as well it is :func:`prior_bias`. Because the focal term discounts the many
    easy negatives, the optimum for a rare class is far above :math:`\operatorname{logit}(\pi)`.

    Args:
        prior: The positive rate :math:`\pi` in ``(0, 1)``, a float or a per-class tensor.
        alpha: Positive-class weight in ``(0, 1)``, or ``None``.
        gamma: Focusing parameter, ``>= 0``.

    Returns:
        A float for a float prior, else a tensor with the prior's shape and dtype.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``prior`` or ``alpha`` is outside ``(0, 1)`` or ``gamma < 0``.

    Example:
        >>> round(prior_bias(0.01), 3), round(focal_prior_bias(0.01, alpha=0.25, gamma=2.0), 3)
        (-4.595, -2.107)
    """
    gamma = _check_gamma(gamma)
    a = 0.5 if alpha is None else _check_prior_float(alpha, "alpha")
    if isinstance(prior, Tensor):
        _check_prior_tensor(prior)
        pi = prior.detach().to(torch.float64)
    else:
        pi = torch.tensor(_check_prior_float(prior, "prior"), dtype=torch.float64)
    w_pos, w_neg = pi * a, (1.0 - pi) * (1.0 - a)
    if gamma == 0.0:
        bias = torch.log(w_pos) - torch.log(w_neg)
    else:
        bias = _bisect_focal_root(w_pos, w_neg, gamma)
    if isinstance(prior, Tensor):
        return bias.to(prior.dtype)
    return float(bias)


def _bisect_focal_root(w_pos: Tensor, w_neg: Tensor, gamma: float) -> Tensor:
    """Root of ``w_pos f1'(b) + w_neg f0'(b)`` (negative below, positive above), elementwise."""
    lo = torch.full_like(w_pos, -800.0)
    hi = torch.full_like(w_pos, 800.0)
    for _ in range(64):  # 1600 / 2**64 < 1e-16
        mid = 0.5 * (lo + hi)
        # d/db of the t = 1 term is -f'(-b), of the t = 0 term f'(b) (focalrec._focal.terms).
        g_pos = hard_terms(-mid, gamma)[1]
        g_neg = hard_terms(mid, gamma)[1]
        assert g_pos is not None
        assert g_neg is not None
        rising = w_neg * g_neg - w_pos * g_pos > 0
        hi = torch.where(rising, mid, hi)
        lo = torch.where(rising, lo, mid)
    return 0.5 * (lo + hi)


def class_priors(
    target: Tensor, num_classes: int | None = None, *, smoothing: float = 1.0
) -> Tensor:
    r"""Per-class positive rates from labels, smoothed so that unseen classes get a small prior.

    .. math::

        \pi_c = \frac{n_c + s}{N + 2 s},

    with :math:`n_c` the number of rows where class :math:`c` is positive (the sum of the targets
    for soft labels), :math:`N` the number of rows and :math:`s` = ``smoothing`` (add-``s``
    smoothing of a Bernoulli rate: ``s = 1`` is Laplace's rule of succession).

    Args:
        target: Dense labels ``(..., C)`` (floating in ``[0, 1]`` or bool; every leading
            position counts as a row) or an index list ``(N, m)`` padded with ``-1``.
        num_classes: ``C``; required for an index list, checked against dense labels.
        smoothing: Pseudo-count ``s >= 0``.

    Returns:
        A float tensor ``(C,)`` (float64 for float64 labels, else float32).

    Raises:
        TypeError: If ``target`` is not a tensor.
        ValueError: If ``num_classes`` is missing or inconsistent, or ``smoothing < 0``.

    Example:
        >>> class_priors(torch.tensor([[0, 2], [2, -1], [2, 2]]), num_classes=4)
        tensor([0.4000, 0.2000, 0.8000, 0.2000])
    """
    if not isinstance(target, Tensor):
        raise TypeError(f"`target` must be a torch.Tensor, got {type(target).__name__}")
    s = _check_real(smoothing, "smoothing")
    if not (math.isfinite(s) and s >= 0.0):
        raise ValueError(f"`smoothing` must be a finite number >= 0, got {smoothing}")
    if is_index_list(target):
        if num_classes is None:
            raise ValueError("`num_classes` is required for index-list `target`, got None")
        check_index_list(target, "target", num_classes=num_classes)
        dtype = torch.float32
        keep = first_occurrence(target)
        counts = torch.bincount(target[keep].long(), minlength=num_classes).to(dtype)
        rows = target.shape[0]
    else:
        if target.ndim == 0:
            raise ValueError("dense `target` must have shape (..., C), got a 0-d tensor")
        if num_classes is not None and target.shape[-1] != num_classes:
            raise ValueError(
                f"dense `target` must have {num_classes} classes in the last dimension, "
                f"got shape {tuple(target.shape)}"
            )
        dtype = torch.promote_types(
            target.dtype if target.is_floating_point() else torch.float32, torch.float32
        )
        flat = target.reshape(-1, target.shape[-1])
        counts = flat.sum(dim=0, dtype=dtype)
        rows = flat.shape[0]
    return (counts + s) / (rows + 2.0 * s)


def init_prior_bias_(
    layer_or_bias: nn.Module | Tensor,
    prior: float | Tensor = 0.01,
    *,
    alpha: float | None = None,
    gamma: float = 0.0,
) -> Tensor:
    """Fill a final layer's bias, in place, with the logit of ``prior`` (or its focal optimum).

    With the defaults (``gamma = 0``, ``alpha = None``) the bias is :func:`prior_bias` ``(prior)``,
    the rule of the RetinaNet paper. With ``gamma > 0`` (and the loss's ``alpha``) it is
    :func:`focal_prior_bias`, the constant that minimizes the expected focal loss.

    Args:
        layer_or_bias: A module with a ``bias`` parameter (e.g. :class:`torch.nn.Linear`) or the
            bias tensor itself.
        prior: A probability in ``(0, 1)`` or a per-class tensor broadcastable to the bias.
        alpha: The focal loss's ``alpha`` (``None``: no weighting).
        gamma: The focal loss's ``gamma``; ``0`` gives the plain logit of the prior.

    Returns:
        The bias tensor, modified in place.

    Raises:
        TypeError: If the module has no bias or the input is neither a module nor a tensor.
        ValueError: If a value is out of range or ``prior`` does not broadcast to the bias.

    Example:
        >>> layer = nn.Linear(8, 3)
        >>> init_prior_bias_(layer, 0.01)
        Parameter containing:
        tensor([-4.5951, -4.5951, -4.5951], requires_grad=True)
    """
    if isinstance(layer_or_bias, Tensor):
        bias = layer_or_bias
    elif isinstance(layer_or_bias, nn.Module):
        found = getattr(layer_or_bias, "bias", None)
        if not isinstance(found, Tensor):
            raise TypeError(
                f"`layer_or_bias` must have a `bias` tensor, got {type(layer_or_bias).__name__} "
                f"with bias={found!r}"
            )
        bias = found
    else:
        raise TypeError(
            "`layer_or_bias` must be an nn.Module with a bias or a tensor, "
            f"got {type(layer_or_bias).__name__}"
        )
    value = focal_prior_bias(prior, alpha=alpha, gamma=gamma)
    if isinstance(value, Tensor) and not _broadcasts_to(value.shape, bias.shape):
        raise ValueError(
            f"per-class `prior` of shape {tuple(value.shape)} does not broadcast to the bias "
            f"of shape {tuple(bias.shape)}"
        )
    with torch.no_grad():
        bias.copy_(torch.as_tensor(value, dtype=bias.dtype).expand_as(bias))
    return bias


def _check_real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}")
    return float(value)


def _check_prior_float(value: object, name: str) -> float:
    prior = _check_real(value, name)
    if not 0.0 < prior < 1.0:
        raise ValueError(f"`{name}` must be in (0, 1) (exclusive), got {value}")
    return prior


def _check_prior_tensor(prior: Tensor) -> None:
    if not prior.is_floating_point():
        raise TypeError(f"`prior` must be a floating-point tensor, got dtype {prior.dtype}")
    if prior.numel() > 0 and not bool(((prior > 0) & (prior < 1)).all()):
        lo, hi = (float(v) for v in torch.aminmax(prior))
        raise ValueError(f"`prior` must hold values in (0, 1), got values in [{lo}, {hi}]")
