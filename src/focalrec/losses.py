"""Sigmoid focal loss (Lin et al., 2017) for dense and sparse multi-label targets."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from focalrec._checks import check_same_device
from focalrec._focal.inputs import FocalInputs
from focalrec._focal.op import focal_loss
from focalrec._indices import check_index_list, first_occurrence, is_index_list, values_readable

__all__ = [
    "REDUCTIONS",
    "AsymmetricLoss",
    "FocalLoss",
    "Reduction",
    "asymmetric_loss",
    "sigmoid_focal_loss",
]

Reduction = Literal["none", "mean", "sum", "sum_over_positives"]
REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum", "sum_over_positives")
"""The accepted values of ``reduction``."""


def sigmoid_focal_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float | Tensor | None = 0.25,
    gamma: float = 2.0,
    reduction: Reduction = "mean",
    weight: Tensor | None = None,
    pos_weight: float | Tensor | None = None,
    validate_args: bool = True,
) -> Tensor:
    r"""Sigmoid focal loss of ``input`` against dense or index-list ``target``.

    With :math:`p = \sigma(x)`, :math:`p_t = p t + (1 - p)(1 - t)` and
    :math:`\alpha_t = \alpha t + (1 - \alpha)(1 - t)`, the loss of one logit is

    .. math::

        \mathrm{FL}(x, t) = \alpha_t \, (1 - p_t)^\gamma \, \mathrm{BCE}(x, t), \qquad
        \mathrm{BCE}(x, t) = -t \log p - (1 - t) \log(1 - p).

    For hard targets (``t`` in {0, 1}) this is the paper's
    :math:`-\alpha_t (1 - p_t)^\gamma \log p_t`. Soft targets use the same formula as written (the
    values ``torchvision.ops.sigmoid_focal_loss`` computes); for ``gamma > 0`` and ``t`` other than
    0, 1/2 and 1 its minimum over ``x`` is **not** at ``p = t`` but between ``t`` and the nearer of
    0 and 1 (for ``t = 0.2, gamma = 2`` at ``p`` of about 0.05, see the example), so soft targets
    are sharpened; use ``gamma = 0`` if calibrated probabilities matter.

    Everything is computed in log space (``softplus``) with closed-form first and second
    derivatives that are finite for every ``gamma >= 0``, including ``0 < gamma < 1`` at logits as
    large as ``1e4``. At ``+-inf`` logits the loss and its gradient are their limits (``inf``
    where the target disagrees, gradient ``+-alpha_t * weight``). A term whose weight
    ``alpha_t * weight`` is 0 is 0, value and gradient, whatever its logit.
    ``gamma = 0, alpha = None`` equals :func:`torch.nn.functional.binary_cross_entropy_with_logits`,
    also with ``pos_weight``, which has its meaning: with :math:`w` the positive weight,
    :math:`\mathrm{BCE}(x, t) = -w t \log p - (1 - t) \log(1 - p)` (the focusing factor is
    unchanged; for hard targets the positive terms are multiplied by :math:`w`). Float16 and
    bfloat16 logits are computed in float32.

    When ``input`` requires grad, the forward pass computes the gradient too, in one pass, and
    backward hands it on: apart from the output of ``reduction="none"``, the loss allocates one
    logits-sized tensor, the gradient. Second derivatives, ``torch.func`` transforms,
    ``torch.compile`` (one operator, no graph break) and ``torch.export`` are supported; see the
    "Focal loss" guide for the backends (a C kernel compiled on first use for float32 CPU
    logits, torch operations elsewhere) and ``benchmarks/bench_focal.py`` for time and memory.

    Args:
        input: Logits of any shape; ``(N, C)`` with an index-list ``target``.
        target: Either **dense**: a floating or bool tensor with the input's shape and values in
            ``[0, 1]``; or an **index list**: an integer tensor ``(N, m)`` holding the positive
            classes of each row, padded with ``-1`` (repeats count once). The index-list form gives
            the same values and gradients as its dense equivalent and never builds an ``(N, C)``
            target tensor.
        alpha: Weight of the positive class in ``[0, 1]`` (negatives get ``1 - alpha``), a
            per-class tensor ``(C,)`` over the last dimension, or ``None`` for no weighting.
        gamma: Focusing parameter in ``[0, 3.4e38]`` (the float32 maximum).
        reduction: ``"none"`` (the elementwise loss), ``"sum"``, ``"mean"`` (the sum divided by
            the number of elements, or by the sum of ``weight`` when given) or
            ``"sum_over_positives"`` (the sum divided by ``max(P, 1)``, ``P`` the number of positive
            labels: the sum of the targets, times ``weight`` when given; RetinaNet's
            normalization). Denominators stay on the device (no host sync); an empty or fully
            masked input gives ``0`` for ``"mean"``.
        weight: Optional non-negative elementwise weight or bool keep-mask, broadcastable to
            ``input``. ``"mean"`` then averages over the kept entries only:
            ``sum(w * FL) / sum(w)``.
        pos_weight: Factor of the positive terms, ``>= 0``: a float, a per-class tensor
            ``(C,)`` over the last dimension, or ``None`` (as in
            :class:`torch.nn.BCEWithLogitsLoss`). It composes with ``alpha`` (positive terms get
            ``alpha * pos_weight``) and enters no divisor: ``"sum_over_positives"`` divides by
            the number of positives, not their weighted count, as torch's BCE does not
            renormalize either.
        validate_args: Check the values of ``target``, ``alpha``, ``pos_weight`` and ``weight``,
            and reject NaN
            logits where the weight is not 0 (reads values from the device; skipped under
            ``torch.compile`` and ``torch.func`` transforms). Shapes, dtypes and ``gamma`` are
            always checked.

    Returns:
        The loss: a scalar, or the input's shape for ``reduction="none"``. Its dtype is
        ``torch.promote_types(input.dtype, torch.float32)`` (float32 for half-precision logits);
        the gradient has the input's dtype. Gradients flow to ``input`` only.

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If a shape or value is out of its range.

    Example:
        >>> input = torch.tensor([[2.0, -1.0, 0.5, -3.0]])
        >>> sparse = sigmoid_focal_loss(input, torch.tensor([[0, 2, -1]]), reduction="sum")
        >>> dense_targets = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
        >>> dense = sigmoid_focal_loss(input, dense_targets, reduction="sum")
        >>> round(sparse.item(), 6) == round(dense.item(), 6)
        True
        >>> x = torch.linspace(-6.0, 6.0, 120001)
        >>> t = torch.full_like(x, 0.2)
        >>> loss = sigmoid_focal_loss(x, t, gamma=2.0, alpha=None, reduction="none")
        >>> round(torch.sigmoid(x[loss.argmin()]).item(), 2)
        0.05
    """
    _check_logits(input)
    num_classes = input.shape[-1] if input.ndim > 0 else 1
    _check_hyper(alpha, gamma, reduction, num_classes, validate_args and values_readable())
    return _sigmoid_loss(
        input,
        target,
        alpha=alpha,
        gamma=float(gamma),
        gamma_neg=None,
        clip=0.0,
        pos_weight=pos_weight,
        reduction=reduction,
        weight=weight,
        validate_args=validate_args,
    )


def asymmetric_loss(
    input: Tensor,
    target: Tensor,
    *,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    alpha: float | Tensor | None = None,
    pos_weight: float | Tensor | None = None,
    reduction: Reduction = "mean",
    weight: Tensor | None = None,
    validate_args: bool = True,
) -> Tensor:
    r"""Asymmetric loss (ASL, Ridnik et al., ICCV 2021) of ``input`` against dense or index-list
    ``target``.

    With :math:`p = \sigma(x)`, the margin :math:`m` (``clip``) and the shifted probability
    :math:`p_m = \max(p - m, 0)` of negatives, the positive and negative terms are

    .. math::

        L_+ = -(1 - p)^{\gamma_+} \log p, \qquad
        L_- = -p_m^{\gamma_-} \log(1 - p_m),

    and the loss of one logit with target :math:`t` is
    :math:`\alpha w t L_+ + (1 - \alpha)(1 - t) L_-` with :math:`w` the positive weight
    (``alpha = None`` and ``pos_weight = None`` are factors 1). Soft targets mix the two terms
    linearly (the focal loss's soft targets do not: it is the same as ASL for hard targets only).
    The margin discards easy negatives: where :math:`p \le m` a negative's term and its
    derivatives are exactly 0. At the kink :math:`p = m` the value is 0 and the derivatives
    returned are those of the zero side, 0 (from above, the first derivative tends to
    :math:`m(1 - m)` for :math:`\gamma_- = 0` and to 0 otherwise; the second to 0 for
    :math:`\gamma_- > 1`).

    ``gamma_pos = gamma_neg = gamma, clip = 0`` is :func:`sigmoid_focal_loss` with that ``gamma``
    for hard targets, bit for bit. Everything is computed in log space with closed-form first
    and second derivatives (:math:`1 - p_m = \sigma(-x) + m`), finite at every logit including
    ``+-inf`` for ``clip > 0``. Backends (the compiled CPU kernel, Triton, torch: one pass for
    the loss and its gradient), autograd, ``torch.compile`` and ``torch.func`` support are those
    of :func:`sigmoid_focal_loss`; ``benchmarks/bench_family.py`` times it against timm's ASL.

    Args:
        input: Logits of any shape; ``(N, C)`` with an index-list ``target``.
        target: Dense targets in ``[0, 1]`` (floating or bool) of the input's shape, or an index
            list ``(N, m)`` of positive classes padded with ``-1``, as for
            :func:`sigmoid_focal_loss`.
        gamma_pos: Focusing parameter of positive terms, in ``[0, 3.4e38]``.
        gamma_neg: Focusing parameter of negative terms, in ``[0, 3.4e38]``.
        clip: Probability margin :math:`m` of negative terms, in ``[0, 1)``.
        alpha: Weight of positive terms in ``[0, 1]`` (negatives get ``1 - alpha``), a per-class
            tensor ``(C,)``, or ``None``.
        pos_weight: Factor of positive terms, ``>= 0``: a float, a per-class tensor ``(C,)``, or
            ``None``; composes with ``alpha`` and enters no divisor.
        reduction: ``"none"``, ``"mean"``, ``"sum"`` or ``"sum_over_positives"``, as for
            :func:`sigmoid_focal_loss`.
        weight: Optional non-negative elementwise weight or bool keep-mask, broadcastable to
            ``input``.
        validate_args: Check argument values (reads the device), as for
            :func:`sigmoid_focal_loss`.

    Returns:
        The loss: a scalar, or the input's shape for ``reduction="none"``, in
        ``torch.promote_types(input.dtype, torch.float32)``.

    Raises:
        TypeError: If an argument has the wrong type or dtype.
        ValueError: If a shape or value is out of its range.

    Example:
        >>> x = torch.tensor([[3.0, -4.0, 0.0]])
        >>> loss = asymmetric_loss(x, torch.tensor([[0, -1]]), reduction="none")
        >>> loss[0, 1].item()  # p = 0.018 <= clip: an easy negative, discarded
        0.0
        >>> t = torch.tensor([[0, -1]])
        >>> focal = sigmoid_focal_loss(x, t, alpha=None, gamma=2.0)
        >>> same = asymmetric_loss(x, t, gamma_pos=2.0, gamma_neg=2.0, clip=0.0)
        >>> bool(focal == same)
        True
    """
    _check_logits(input)
    num_classes = input.shape[-1] if input.ndim > 0 else 1
    _check_gamma(gamma_pos, "gamma_pos")
    _check_gamma(gamma_neg, "gamma_neg")
    _check_clip(clip)
    _check_hyper(alpha, 0.0, reduction, num_classes, validate_args and values_readable())
    return _sigmoid_loss(
        input,
        target,
        alpha=alpha,
        gamma=float(gamma_pos),
        gamma_neg=float(gamma_neg),
        clip=float(clip),
        pos_weight=pos_weight,
        reduction=reduction,
        weight=weight,
        validate_args=validate_args,
    )


def _sigmoid_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float | Tensor | None,
    gamma: float,
    gamma_neg: float | None,
    clip: float,
    pos_weight: float | Tensor | None,
    reduction: Reduction,
    weight: Tensor | None,
    validate_args: bool,
) -> Tensor:
    """The loss of the family (focal, ASL, positive weights) once ``input``, ``alpha``,
    ``gamma`` and ``reduction`` are checked."""
    read_values = validate_args and values_readable()
    num_classes = input.shape[-1] if input.ndim > 0 else 1
    _check_pos_weight(pos_weight, num_classes, input, read_values)
    if isinstance(target, Tensor):
        check_same_device(target, "target", input, "input")
    if isinstance(weight, Tensor):
        check_same_device(weight, "weight", input, "input")
    sparse = _check_targets(input.shape, target, read_values)
    cd = torch.promote_types(input.dtype, torch.float32)
    if weight is not None:
        _check_weight(weight, input.shape, read_values)
        weight = weight.to(cd)
    divisor = None
    if reduction == "mean":
        divisor = _mean_denominator(input, weight)
    elif reduction == "sum_over_positives":
        divisor = _num_positives(target, sparse, weight, input.shape).clamp_min(1.0)
    rows = input.numel() // num_classes if num_classes > 0 else math.prod(input.shape[:-1])
    shape2d = (rows, num_classes)
    pos_weight_vec = None
    if isinstance(pos_weight, Tensor):
        # (C,) with a unit stride, as the kernels read it (a 0-d tensor too: no host read)
        pos_weight_vec = (
            pos_weight.to(device=input.device, dtype=cd).expand(num_classes).contiguous()
        )
    inputs = FocalInputs(
        logits=input.reshape(shape2d),
        dense=None if sparse else target.reshape(shape2d),
        index=target if sparse else None,
        alpha=None if alpha is None or isinstance(alpha, Tensor) else float(alpha),
        alpha_vec=alpha.to(device=input.device, dtype=cd) if isinstance(alpha, Tensor) else None,
        gamma=gamma,
        weight=None if weight is None else _rows_view(weight.expand(input.shape), shape2d),
        scale=None if divisor is None else torch.reciprocal(divisor.to(cd)),
        gamma_neg=gamma_neg,
        clip=clip,
        pos_weight=None
        if pos_weight is None or isinstance(pos_weight, Tensor)
        else float(pos_weight),
        pos_weight_vec=pos_weight_vec,
    )
    out = focal_loss(inputs, elementwise=reduction == "none")
    if reduction == "none":
        out = out.reshape(input.shape)
    if read_values:
        _check_no_nan(out, input, weight)
    return out


class FocalLoss(nn.Module):
    """Sigmoid focal loss as a module; see :func:`sigmoid_focal_loss` for the definition.

    A per-class ``alpha`` tensor is kept as a buffer, so ``.to()`` moves it with the module.

    Args:
        alpha: Positive-class weight in ``[0, 1]``, a per-class tensor ``(C,)``, or ``None``.
        gamma: Focusing parameter, ``>= 0``.
        reduction: ``"none"``, ``"mean"``, ``"sum"`` or ``"sum_over_positives"``.
        validate_args: Check argument values on every call.
        pos_weight: Factor of the positive terms: a float ``>= 0``, a per-class tensor ``(C,)``
            (kept as a buffer), or ``None``.

    Example:
        >>> criterion = FocalLoss(alpha=0.25, gamma=2.0, reduction="sum_over_positives")
        >>> input = torch.zeros(2, 5, requires_grad=True)
        >>> loss = criterion(input, torch.tensor([[1, 3], [4, -1]]))
        >>> loss.backward()
        >>> round(loss.item(), 4), input.grad.shape
        (0.3466, torch.Size([2, 5]))
    """

    alpha: Tensor | float | None
    pos_weight: Tensor | float | None

    def __init__(
        self,
        alpha: float | Tensor | None = 0.25,
        gamma: float = 2.0,
        reduction: Reduction = "mean",
        *,
        validate_args: bool = True,
        pos_weight: float | Tensor | None = None,
    ) -> None:
        super().__init__()
        num_classes = alpha.shape[0] if isinstance(alpha, Tensor) and alpha.ndim == 1 else None
        _check_hyper(alpha, gamma, reduction, num_classes, validate_args)
        _check_pos_weight(pos_weight, None, None, validate_args)
        _set_class_weights(self, alpha, pos_weight)
        self.gamma = float(gamma)
        self.reduction: Reduction = reduction
        self.validate_args = validate_args

    def forward(self, input: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Loss of ``input`` against dense or index-list ``target``, optionally weighted."""
        return sigmoid_focal_loss(
            input,
            target,
            alpha=self.alpha,
            gamma=self.gamma,
            reduction=self.reduction,
            weight=weight,
            pos_weight=self.pos_weight,
            validate_args=self.validate_args,
        )

    def extra_repr(self) -> str:
        alpha = "per-class" if isinstance(self.alpha, Tensor) else self.alpha
        out = f"alpha={alpha}, gamma={self.gamma}, reduction={self.reduction!r}"
        if self.pos_weight is not None:
            pw = "per-class" if isinstance(self.pos_weight, Tensor) else self.pos_weight
            out += f", pos_weight={pw}"
        return out


def _set_class_weights(
    module: nn.Module, alpha: float | Tensor | None, pos_weight: float | Tensor | None
) -> None:
    """``module.alpha`` and ``module.pos_weight``: a buffer for a tensor (moved by ``.to()``),
    else a float or None."""
    for name, value in (("alpha", alpha), ("pos_weight", pos_weight)):
        if isinstance(value, Tensor):
            module.register_buffer(name, value.detach().clone())
        else:
            setattr(module, name, None if value is None else float(value))


class AsymmetricLoss(nn.Module):
    """The asymmetric loss (ASL) as a module; see :func:`asymmetric_loss` for the definition.

    Per-class ``alpha`` and ``pos_weight`` tensors are kept as buffers, so ``.to()`` moves them
    with the module.

    Args:
        gamma_pos: Focusing parameter of positive terms, ``>= 0``.
        gamma_neg: Focusing parameter of negative terms, ``>= 0``.
        clip: Probability margin of negative terms, in ``[0, 1)``.
        alpha: Positive-class weight in ``[0, 1]``, a per-class tensor ``(C,)``, or ``None``.
        pos_weight: Factor of positive terms: a float ``>= 0``, a per-class tensor ``(C,)``, or
            ``None``.
        reduction: ``"none"``, ``"mean"``, ``"sum"`` or ``"sum_over_positives"``.
        validate_args: Check argument values on every call.

    Example:
        >>> criterion = AsymmetricLoss(gamma_neg=4.0, clip=0.05, reduction="sum")
        >>> input = torch.zeros(2, 5, requires_grad=True)
        >>> loss = criterion(input, torch.tensor([[1, 3], [4, -1]]))
        >>> loss.backward()
        >>> round(loss.item(), 4), input.grad.shape
        (2.251, torch.Size([2, 5]))
    """

    alpha: Tensor | float | None
    pos_weight: Tensor | float | None

    def __init__(
        self,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        alpha: float | Tensor | None = None,
        pos_weight: float | Tensor | None = None,
        reduction: Reduction = "mean",
        *,
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        self.gamma_pos = _check_gamma(gamma_pos, "gamma_pos")
        self.gamma_neg = _check_gamma(gamma_neg, "gamma_neg")
        self.clip = _check_clip(clip)
        num_classes = alpha.shape[0] if isinstance(alpha, Tensor) and alpha.ndim == 1 else None
        _check_hyper(alpha, 0.0, reduction, num_classes, validate_args)
        _check_pos_weight(pos_weight, None, None, validate_args)
        _set_class_weights(self, alpha, pos_weight)
        self.reduction: Reduction = reduction
        self.validate_args = validate_args

    def forward(self, input: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Loss of ``input`` against dense or index-list ``target``, optionally weighted."""
        return asymmetric_loss(
            input,
            target,
            gamma_pos=self.gamma_pos,
            gamma_neg=self.gamma_neg,
            clip=self.clip,
            alpha=self.alpha,
            pos_weight=self.pos_weight,
            reduction=self.reduction,
            weight=weight,
            validate_args=self.validate_args,
        )

    def extra_repr(self) -> str:
        alpha = "per-class" if isinstance(self.alpha, Tensor) else self.alpha
        pw = "per-class" if isinstance(self.pos_weight, Tensor) else self.pos_weight
        return (
            f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}, "
            f"alpha={alpha}, pos_weight={pw}, reduction={self.reduction!r}"
        )


def _rows_view(weight: Tensor, shape2d: tuple[int, int]) -> Tensor:
    """``weight`` (broadcast to the input's shape) as ``(R, C)`` rows: a view where the
    broadcast allows one (e.g. per-class or per-row weights), else a copy."""
    try:
        return weight.view(shape2d)
    except RuntimeError:
        return weight.reshape(shape2d)


def _check_no_nan(out: Tensor, input: Tensor, weight: Tensor | None) -> None:
    """Reject NaN logits (where the weight is not 0), seen in the loss itself: one read."""
    found = torch.isnan(out).any() if out.ndim > 0 else torch.isnan(out)
    if not bool(found):
        return
    bad = torch.isnan(input)
    if weight is not None:
        bad &= weight.expand(input.shape) != 0
    where = f" at index {tuple(int(i) for i in bad.nonzero()[0])}" if bool(bad.any()) else ""
    raise ValueError(
        f"`input` must not contain NaN, got NaN{where}; pass validate_args=False to skip this check"
    )


def _mean_denominator(input: Tensor, weight: Tensor | None) -> Tensor:
    """Number of elements, or the sum of the broadcast weight; 1 when that is 0 (0-d tensor)."""
    dtype = torch.promote_types(input.dtype, torch.float32)
    total = _num_elements(input.shape, weight, dtype, input.device)
    return torch.where(total > 0, total, torch.ones_like(total))


def _num_elements(
    shape: tuple[int, ...], weight: Tensor | None, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Number of elements of ``shape``, or the sum of ``weight`` broadcast to it (0-d tensor)."""
    if weight is None:
        return torch.tensor(float(math.prod(shape)), dtype=dtype, device=device)
    repeats = math.prod(shape) // max(weight.numel(), 1)
    return (_stable_sum(weight) * repeats).to(dtype)


def _num_positives(
    target: Tensor, sparse: bool, weight: Tensor | None, shape: tuple[int, ...]
) -> Tensor:
    """Number of positive labels (weighted), as a 0-d float32 device tensor (added in float64 by
    :func:`_stable_sum`: the same for every number of threads).

    Index lists count the ids in ``[0, C)`` only (an item range evaluates the ids of its range).
    """
    dtype = torch.float32 if weight is None else torch.promote_types(weight.dtype, torch.float32)
    if sparse:
        c = shape[-1]
        keep = first_occurrence(target) & (target >= 0) & (target < c)
        if weight is None or c == 0:
            return _stable_sum(keep).to(dtype)
        w = weight.expand(shape).gather(1, target.clamp(0, c - 1).long()).to(dtype)
        return _stable_sum(keep.to(dtype) * w).to(dtype)
    if weight is None:
        return _stable_sum(target).to(dtype)
    return _stable_sum(target.to(dtype) * weight.to(dtype)).to(dtype)


_SUM_CHUNK = 1 << 15
""":func:`_stable_sum` adds runs of this many elements on their own (below ATen's grain size, so
each run is one thread's sequential sum)."""


def _stable_sum(t: Tensor) -> Tensor:
    """The sum of ``t`` as a 0-d float64 tensor on its device, in an order fixed by its shape.

    A plain ``t.sum()`` on the CPU splits the work by the number of threads, and float addition
    is not associative: its last bits depend on ``torch.get_num_threads()``. Here runs of
    :data:`_SUM_CHUNK` elements are summed in float64 on their own, then the run sums, so the
    result depends on the values and their order only. Broadcast dimensions (stride 0, as
    ``expand`` makes) are summed once and multiplied by their size.

    Example:
        >>> w = torch.full((1, 3), 0.25).expand(1000, 3)
        >>> _stable_sum(w)
        tensor(750., dtype=torch.float64)
    """
    repeats = 1
    for dim in reversed(range(t.ndim)):
        if t.stride(dim) == 0 and t.shape[dim] > 1:
            repeats *= t.shape[dim]
            t = t.select(dim, 0)
    flat = t.reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    while flat.numel() > _SUM_CHUNK:
        runs = flat.numel() // _SUM_CHUNK
        head = flat[: runs * _SUM_CHUNK].view(runs, _SUM_CHUNK).sum(dim=1, dtype=torch.float64)
        tail = flat[runs * _SUM_CHUNK :].sum(dtype=torch.float64).reshape(1)
        flat = torch.cat([head, tail])
    return flat.sum(dtype=torch.float64) * repeats


GAMMA_MAX = float(torch.finfo(torch.float32).max)
"""The largest accepted ``gamma``: the float32 maximum, so that every kernel holds it exactly."""


def _check_gamma(gamma: object, name: str = "gamma") -> float:
    """``gamma`` as a float; ``TypeError``/``ValueError`` unless it is a real in
    ``[0, GAMMA_MAX]``."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise TypeError(f"`{name}` must be a real number >= 0, got {type(gamma).__name__}")
    if not 0.0 <= gamma <= GAMMA_MAX:  # NaN and inf fail too (no math.isfinite: symbolic)
        raise ValueError(
            f"`{name}` must be a finite number in [0, {GAMMA_MAX:.8g}] (the float32 maximum), "
            f"got {gamma}"
        )
    return float(gamma)


def _check_clip(clip: object) -> float:
    """``clip`` as a float; ``TypeError``/``ValueError`` unless it is a real in ``[0, 1)``."""
    if isinstance(clip, bool) or not isinstance(clip, (int, float)):
        raise TypeError(f"`clip` must be a real number in [0, 1), got {type(clip).__name__}")
    if not 0.0 <= clip < 1.0:
        raise ValueError(f"`clip` must be in [0, 1) (a probability margin), got {clip}")
    return float(clip)


def _check_pos_weight(
    pos_weight: object, num_classes: int | None, input: Tensor | None, validate_args: bool
) -> None:
    """``pos_weight``: None, a finite float ``>= 0`` or a floating tensor, 0-d or ``(C,)``, of
    finite values ``>= 0`` (values read only with ``validate_args``) on the input's device."""
    if pos_weight is None:
        return
    if isinstance(pos_weight, Tensor):
        if not pos_weight.is_floating_point():
            raise TypeError(
                f"`pos_weight` must be a floating-point tensor, got dtype {pos_weight.dtype}"
            )
        if pos_weight.ndim > 1 or (
            pos_weight.ndim == 1 and num_classes is not None and pos_weight.shape[0] != num_classes
        ):
            expected = "(C,)" if num_classes is None else f"({num_classes},)"
            raise ValueError(
                f"`pos_weight` must be a 0-d or per-class tensor of shape {expected}, "
                f"got shape {tuple(pos_weight.shape)}"
            )
        if input is not None:
            check_same_device(pos_weight, "pos_weight", input, "input")
        if validate_args and pos_weight.numel() > 0:
            ok = (pos_weight >= 0) & torch.isfinite(pos_weight)
            if not bool(ok.all()):
                bad = float(pos_weight.reshape(-1)[~ok.reshape(-1)][0])
                raise ValueError(f"`pos_weight` must hold finite values >= 0, got {bad}")
        return
    if isinstance(pos_weight, bool) or not isinstance(pos_weight, (int, float)):
        raise TypeError(
            f"`pos_weight` must be a float >= 0, a (C,) tensor or None, "
            f"got {type(pos_weight).__name__}"
        )
    if not 0.0 <= pos_weight <= GAMMA_MAX:
        raise ValueError(f"`pos_weight` must be a finite number >= 0, got {pos_weight}")


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` without changing ``target``."""
    if len(shape) > len(target):
        return False
    tail = target[len(target) - len(shape) :]
    return all(s in (1, t) for s, t in zip(shape, tail, strict=True))


def _check_logits(input: object) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"`input` must be a torch.Tensor, got {type(input).__name__}")
    if not input.is_floating_point():
        raise TypeError(f"`input` must be a floating-point tensor, got dtype {input.dtype}")


def _check_hyper(
    alpha: object,
    gamma: object,
    reduction: object,
    num_classes: int | None,
    validate_args: bool,
) -> None:
    """Validate ``alpha``, ``gamma`` and ``reduction``."""
    _check_gamma(gamma)
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")
    if alpha is None:
        return
    if isinstance(alpha, Tensor):
        if not alpha.is_floating_point():
            raise TypeError(f"`alpha` must be a floating-point tensor, got dtype {alpha.dtype}")
        if alpha.ndim != 1 or (num_classes is not None and alpha.shape[0] != num_classes):
            expected = "(C,)" if num_classes is None else f"({num_classes},)"
            raise ValueError(
                f"`alpha` must be a per-class tensor of shape {expected}, "
                f"got shape {tuple(alpha.shape)}"
            )
        if validate_args and alpha.numel() > 0 and not bool(((alpha >= 0) & (alpha <= 1)).all()):
            lo, hi = (float(v) for v in torch.aminmax(alpha))
            raise ValueError(f"`alpha` must hold values in [0, 1], got values in [{lo}, {hi}]")
        return
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(
            f"`alpha` must be a float in [0, 1], a (C,) tensor or None, got {type(alpha).__name__}"
        )
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha}")


def _check_targets(
    shape: tuple[int, ...],
    target: object,
    validate_args: bool,
    *,
    name: str = "target",
    num_classes: int | None = None,
) -> bool:
    """Validate ``target`` for logits of ``shape``; return whether they are an index list.

    Index lists hold ids in ``[0, num_classes)`` (by default the input's last dimension; an item
    range of a larger catalogue passes the catalogue's size).
    """
    if not isinstance(target, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(target).__name__}")
    if is_index_list(target):
        if len(shape) != 2:
            raise ValueError(
                f"index-list `{name}` needs `input` of shape (N, C), "
                f"got input of shape {tuple(shape)}"
            )
        check_index_list(
            target,
            name,
            num_rows=shape[0],
            num_classes=shape[1] if num_classes is None else num_classes,
            validate_args=validate_args,
        )
        return True
    if target.is_complex():
        raise TypeError(f"`{name}` must be floating, bool or integer, got dtype {target.dtype}")
    if tuple(target.shape) != tuple(shape):
        raise ValueError(
            f"dense `{name}` must have the logits' shape {tuple(shape)}, "
            f"got shape {tuple(target.shape)}"
        )
    if validate_args and target.is_floating_point() and target.numel() > 0:
        lo, hi = torch.stack(torch.aminmax(target)).tolist()  # one pass; NaN propagates
        if not (lo >= 0.0 and hi <= 1.0):
            outside = ~((target >= 0) & (target <= 1))
            bad = float(target[outside][0])
            raise ValueError(f"dense `{name}` must hold values in [0, 1], got {bad}")
    return False


def _check_weight(weight: object, shape: tuple[int, ...], validate_args: bool) -> None:
    if not isinstance(weight, Tensor):
        raise TypeError(f"`weight` must be a torch.Tensor or None, got {type(weight).__name__}")
    if not (weight.is_floating_point() or weight.dtype == torch.bool):
        raise TypeError(f"`weight` must be a floating or bool tensor, got dtype {weight.dtype}")
    if not _broadcasts_to(weight.shape, shape):
        raise ValueError(
            f"`weight` must be broadcastable to the input's shape {tuple(shape)}, "
            f"got shape {tuple(weight.shape)}"
        )
    if (
        validate_args
        and weight.is_floating_point()
        and weight.numel() > 0
        and not bool((weight >= 0).all())
    ):
        raise ValueError(f"`weight` must be >= 0, got a minimum of {float(weight.min())}")
