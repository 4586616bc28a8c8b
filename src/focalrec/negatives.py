r"""Sampled negatives: uniform item ids per row, and gSASRec's calibration of the positive term.

A sigmoid loss over a whole catalogue costs :math:`N \cdot C \cdot d` per step through the output
layer. Training on each row's positives and :math:`k` sampled items instead costs
:math:`N (P + k) d`; :func:`sample_negatives` draws those items, and :func:`gbce_beta` gives the
exponent with which gBCE (Petrov & Macdonald, "gSASRec", RecSys 2023) corrects the
overconfidence that sampling causes:

.. math::

    \mathrm{gBCE} = -\log \sigma(s^+)^{\beta} - \sum_{j=1}^{k} \log\big(1 - \sigma(s^-_j)\big)
    = \beta\, \mathrm{softplus}(-s^+) + \sum_{j=1}^{k} \mathrm{softplus}(s^-_j),

that is BCE over the sampled set with the positive term weighted by :math:`\beta` (the
``pos_weight`` of :func:`torch.nn.functional.binary_cross_entropy_with_logits`). gSASRec reaches
the same value through a float64 transform of the positive logit,
:math:`s' = -\log(\sigma(s^+)^{-\beta} - 1)`, whose BCE is :math:`-\beta \log \sigma(s^+)`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from focalrec._checks import check_int
from focalrec._indices import PAD, check_index_list

__all__ = ["gbce_beta", "sample_negatives"]


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    r"""gSASRec's exponent :math:`\beta` of the positive's probability (its eq. 7).

    With :math:`k` negatives sampled for each positive from the :math:`C - 1` other items,
    the sampling rate is :math:`a = k / (C - 1)` and

    .. math:: \beta = a \big((1 - 1/a)\, t + 1/a\big) = 1 - t\,(1 - a),

    so the calibration :math:`t = 0` gives :math:`\beta = 1` (plain BCE over the sampled set) and
    :math:`t = 1` gives :math:`\beta = a`, the sampling rate (a model calibrated to the full
    catalogue's probabilities). gSASRec samples with replacement, so :math:`k` may exceed
    :math:`C - 1`; then :math:`a > 1` and :math:`\beta \ge 1`.

    Args:
        num_negatives: :math:`k`, the items sampled per positive, an int ``>= 1``.
        num_items: :math:`C`, the size of the catalogue, an int ``>= 2``.
        t: the calibration in ``[0, 1]`` (gSASRec's default: 0.75).

    Returns:
        :math:`\beta`, a float; the ``pos_weight`` of a BCE over the positive and its sample.

    Raises:
        TypeError: If ``num_negatives`` or ``num_items`` is not an int, or ``t`` not a number.
        ValueError: If a value is outside its range.

    Example:
        >>> gbce_beta(256, 3416, 0.0), round(gbce_beta(256, 3416, 0.75), 6)
        (1.0, 0.306223)
    """
    k = check_int(num_negatives, "num_negatives", minimum=1)
    c = check_int(num_items, "num_items", minimum=2)
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"`t` must be a number in [0, 1], got {type(t).__name__} {t!r}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"`t` must be in [0, 1], got {t}")
    a = k / (c - 1)
    return 1.0 - float(t) * (1.0 - a)


def sample_negatives(
    num_rows: int,
    num_negatives: int,
    num_items: int,
    *,
    exclude: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Item ids drawn uniformly with replacement, ``num_negatives`` per row.

    Without ``exclude`` every id of ``[0, num_items)`` is equally likely (gSASRec's sampler: a
    draw may then equal a row's positive, an *accidental hit*). With ``exclude`` (typically the
    rows' positives) each row draws uniformly from the ids it does not exclude: a draw :math:`u`
    from :math:`[0, C - m_i)`, with :math:`m_i` the number of distinct ids row :math:`i`
    excludes, is mapped to the :math:`u`-th id that row does not exclude, in one vectorized pass
    over the excluded ids (no rejection loop). The draw is ``floor(v * (C - m_i))`` for a float64
    uniform ``v``: uniform up to a relative bias below :math:`C \cdot 2^{-53}`.

    Args:
        num_rows: :math:`N`, an int ``>= 0``.
        num_negatives: :math:`k`, ids per row, an int ``>= 1``.
        num_items: :math:`C`, the catalogue, an int ``>= 1``.
        exclude: optional integer ``(N, m)`` index list (``-1`` pads, repeats count once) of the
            ids each row must not draw; a row must leave at least one id.
        generator: a :class:`torch.Generator` for reproducible draws (on ``device``).
        device: where the ids are drawn and returned (default: ``exclude``'s, else the CPU).

    Returns:
        An ``int64`` tensor ``(N, k)`` of item ids in ``[0, C)``.

    Raises:
        TypeError: If an argument has the wrong type, or ``exclude`` is not an index list.
        ValueError: If a value is outside its range, or a row excludes every item.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> ids = sample_negatives(2, 4, 5, exclude=torch.tensor([[0, 1], [4, -1]]), generator=gen)
        >>> ids.shape, bool((ids[0] >= 2).all()), bool((ids[1] != 4).all())
        (torch.Size([2, 4]), True, True)
    """
    n = check_int(num_rows, "num_rows", minimum=0)
    k = check_int(num_negatives, "num_negatives", minimum=1)
    c = check_int(num_items, "num_items", minimum=1)
    if exclude is not None:
        check_index_list(exclude, "exclude", num_rows=n, num_classes=c)
        device = exclude.device if device is None else device
    if exclude is None or exclude.shape[1] == 0:
        return torch.randint(0, c, (n, k), generator=generator, device=device)
    # The distinct excluded ids of each row, ascending, padding (and repeats) moved to the end.
    ids = exclude.to(device=device, dtype=torch.int64).sort(dim=1).values
    repeat = torch.zeros_like(ids, dtype=torch.bool)
    repeat[:, 1:] = ids[:, 1:] == ids[:, :-1]
    big = torch.iinfo(torch.int64).max
    ids = ids.masked_fill(repeat | (ids == PAD), big).sort(dim=1).values
    allowed = c - (ids != big).sum(dim=1, keepdim=True)
    if n > 0 and bool((allowed < 1).any()):
        row = int((allowed < 1).nonzero()[0, 0])
        raise ValueError(f"`exclude` leaves no item to draw in row {row} ({c} items, all excluded)")
    u = torch.rand((n, k), generator=generator, device=device, dtype=torch.float64)
    draws = (u * allowed.clamp_min(1)).floor().to(torch.int64).clamp_max(allowed - 1)
    # The u-th allowed id: step over each excluded id at or below the running value, ascending.
    for j in range(ids.shape[1]):
        draws += (draws >= ids[:, j : j + 1]).to(torch.int64)
    return draws
