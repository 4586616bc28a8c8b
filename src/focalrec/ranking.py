"""The ranking metrics @k, computed from one top-k pass.

Every function here takes the same inputs, in the index-list convention of
:mod:`focalrec._indices`:

- ``preds``: a floating ``(N, C)`` score matrix (higher is better), or an integer ``(N, r)`` matrix
  of ranked item indices padded with ``-1`` (best first; a repeated item counts only at its first
  position, as in Kaggle's ``apk``; a ``-1`` holds its rank but recommends nothing).
- ``target``: an integer ``(N, m)`` index list of relevant items padded with ``-1`` (repeats count
  once), or a bool/floating ``(N, C)`` relevance matrix: an item is relevant where its value is
  ``> 0`` (``True``). With ``validate_args=True`` a floating relevance matrix must hold finite
  values ``>= 0``; without validation a NaN or negative value is simply not relevant.
- ``exclude``: an optional integer ``(N, h)`` index list of items that must never be recommended
  (for instance the items a user already solved). A score matrix is never modified; from a ranked
  list the excluded items are removed and the items below them move up.

**Ranking.** With a score matrix, the recommended list of a row is :func:`topk_items`'s: the
``k`` eligible items that come first when items are ordered by score, higher first, and **ties
broken by lower item index first**, the same on every device and thread count; NaN scores are
rejected (``validate_args=True``, the default) or, without validation, rank above every number.
:mod:`focalrec._topk` describes the rule and how the top-k pass costs about one
:func:`torch.topk`. On accelerators, with ``validate_args=False`` the metrics read no value back
to the host.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from focalrec._checks import check_same_device
from focalrec._indices import (
    PAD,
    check_index_list,
    first_occurrence,
    is_index_list,
    isin_rows,
    row_blocks,
)
from focalrec._topk import _check_k, _check_scores, _topk_items, topk_items

__all__ = [
    "METRICS",
    "hit_rate_at_k",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics_at_k",
    "recall_at_k",
    "topk_items",
]

Reduction = Literal["mean", "sum", "none"]
EmptyTargets = Literal["zero", "skip"]
Denominator = Literal["min_k", "relevant", "hits"]

_REDUCTIONS = ("mean", "sum", "none")
_EMPTY = ("zero", "skip")
_DENOMINATORS = ("min_k", "relevant", "hits")
_BROADCAST_PAIRS = 64
"""Relevant items are told apart by comparing all pairs up to this many per row, else by a sort."""


# --------------------------------------------------------------------------------------------------
# argument checks


def _check_choice(value: object, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_index_rows(
    x: Tensor, name: str, num_rows: int, num_classes: int | None, validate_args: bool
) -> None:
    """An index list of ``num_rows`` rows; ``num_classes`` is unknown when no input is dense."""
    check_index_list(
        x, name, num_rows=num_rows, num_classes=num_classes, validate_args=validate_args
    )
    if validate_args and num_classes is None and x.numel() > 0:
        lo = int(x.min())
        if lo < PAD:
            raise ValueError(
                f"`{name}` holds item index {lo}; expected indices >= 0 or -1 for padding"
            )


def _check_relevance(target: Tensor) -> None:
    """A floating relevance matrix holds finite values ``>= 0`` (reads values from the device)."""
    if target.dtype == torch.bool or target.numel() == 0:
        return
    bad = ~(torch.isfinite(target) & (target >= 0))
    if bool(bad.any()):
        row, col = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"`target` as a relevance matrix must hold finite values >= 0 (an item is relevant "
            f"where its value is > 0), got {target[row, col].item()} in row {row}, column {col}"
        )


def _relevant(target: Tensor) -> Tensor:
    """Where a relevance matrix (or a part of it) marks an item relevant: where it is ``> 0``."""
    return target if target.dtype == torch.bool else target > 0


def _count_distinct(x: Tensor) -> Tensor:
    """Distinct valid indices per row of an index list (as ``count_unique``, in fewer steps for
    narrow lists: one pairwise comparison instead of a sort)."""
    m = x.shape[1]
    if m * m > _BROADCAST_PAIRS:
        return first_occurrence(x).sum(dim=1)
    pos = torch.arange(m, device=x.device)
    earlier = pos.unsqueeze(1) > pos  # earlier[j, i]: i comes before j (tril_ would use threads)
    repeat = ((x.unsqueeze(2) == x.unsqueeze(1)) & earlier).any(dim=2)
    return ((x != PAD) & ~repeat).sum(dim=1)


# --------------------------------------------------------------------------------------------------
# relevance of the top-k lists


def _ranked_relevance(
    preds: Tensor,
    target: Tensor,
    k: int,
    exclude: Tensor | None,
    validate_args: bool,
) -> tuple[Tensor, Tensor]:
    """Validate the inputs and return ``rel`` (N, k) bool and ``num_relevant`` (N,) int64.

    ``rel[i, j]`` says the item at rank ``j + 1`` of row ``i`` is relevant (a repeat or a padding
    entry never is); ``num_relevant[i]`` is ``|R_i|``, the number of distinct relevant items.
    """
    k = _check_k(k)
    if not isinstance(preds, Tensor):
        raise TypeError(f"`preds` must be a torch.Tensor, got {type(preds).__name__}")
    if not isinstance(target, Tensor):
        raise TypeError(f"`target` must be a torch.Tensor, got {type(target).__name__}")
    check_same_device(target, "target", preds, "preds")
    if isinstance(exclude, Tensor):
        check_same_device(exclude, "exclude", preds, "preds")
    if preds.ndim != 2:
        raise ValueError(
            f"`preds` must be a score matrix (N, C) or a ranked index list (N, r), "
            f"got shape {tuple(preds.shape)}"
        )
    n = preds.shape[0]
    dense_targets = not is_index_list(target)
    if dense_targets and target.ndim != 2:
        raise ValueError(
            f"`target` must be a relevance matrix (N, C) or an index list (N, m), "
            f"got shape {tuple(target.shape)}"
        )
    if dense_targets and target.is_complex():
        raise TypeError(f"`target` must be bool, floating or integer, got dtype {target.dtype}")
    scored = not is_index_list(preds)
    num_classes: int | None = None
    if scored:
        _check_scores(preds, "preds")
        num_classes = preds.shape[1]
    if dense_targets:
        if scored and target.shape != preds.shape:
            raise ValueError(
                f"`target` as a relevance matrix must have the shape of `preds` "
                f"{tuple(preds.shape)}, got {tuple(target.shape)}"
            )
        if target.shape[0] != n:
            raise ValueError(
                f"`target` must have {n} rows (one per row of `preds`), "
                f"got shape {tuple(target.shape)}"
            )
        num_classes = target.shape[1]
        if validate_args:
            _check_relevance(target)
    else:
        _check_index_rows(target, "target", n, num_classes, validate_args)
    if exclude is not None:
        _check_index_rows(exclude, "exclude", n, num_classes, validate_args)
    if scored:
        items = _topk_items(preds, k, exclude, validate_args)
    else:
        _check_index_rows(preds, "preds", n, num_classes, validate_args)
        # At most h excluded items are dropped, so the first k + h ranks are all that matter.
        items = preds[:, : k + (exclude.shape[1] if exclude is not None else 0)].long()
        if exclude is not None:
            drop = isin_rows(items, exclude) & (items != PAD)
            order = torch.argsort(drop.to(torch.uint8), dim=1, stable=True)
            items = items.gather(1, order).masked_fill_(drop.gather(1, order), PAD)
        items = items[:, :k]
        if items.shape[1] < k:
            pad = items.new_full((n, k - items.shape[1]), PAD)
            items = torch.cat([items, pad], dim=1)
    if dense_targets:
        width = k
        num_relevant = torch.count_nonzero(_relevant(target), dim=1)
    else:
        width = k * max(target.shape[1], 1)
        num_relevant = torch.cat(
            [_count_distinct(target[rows]) for rows in row_blocks(n, width, target.device)]
        )
    rel = torch.cat(
        [
            _relevance(items[rows], target[rows], scored, dense_targets)
            for rows in row_blocks(n, width, items.device)
        ]
    )
    return rel, num_relevant


def _relevance(items: Tensor, target: Tensor, scored: bool, dense_targets: bool) -> Tensor:
    """``rel`` of :func:`_ranked_relevance` for a block of rows."""
    # A list from scores holds no repeats; a ranked list counts an item at its first rank only.
    valid = items != PAD if scored else first_occurrence(items)
    if not dense_targets:
        return isin_rows(items, target) & valid
    if target.shape[1] == 0:  # no items at all: nothing is relevant
        return torch.zeros_like(valid)
    return _relevant(target.gather(1, items.clamp(min=0))) & valid


# --------------------------------------------------------------------------------------------------
# per-row formulas and reduction


METRICS = ("hit_rate", "map", "mrr", "ndcg", "precision", "recall")
"""Names of the metrics of :func:`ranking_metrics_at_k` and the streaming classes."""


def _ranks(k: int, device: torch.device) -> Tensor:
    return torch.arange(1, k + 1, dtype=torch.float64, device=device)


def _per_row(metric: str, rel: Tensor, num_relevant: Tensor, denominator: str) -> Tensor:
    """Float64 ``(N,)`` values of ``metric`` from the relevance of the top-k lists."""
    k = rel.shape[1]
    relf = rel.to(torch.float64)
    inv_ranks = 1.0 / _ranks(k, rel.device)
    if metric == "map":
        total = (relf.cumsum(dim=1) * relf) @ inv_ranks
        if denominator == "min_k":
            denom = num_relevant.clamp(min=1, max=k).to(torch.float64)
        elif denominator == "relevant":
            denom = num_relevant.clamp(min=1).to(torch.float64)
        else:
            denom = relf.sum(dim=1).clamp(min=1)
        return total / denom
    if metric == "precision":
        return relf.sum(dim=1) / k
    if metric == "recall":
        return relf.sum(dim=1) / num_relevant.clamp(min=1).to(torch.float64)
    if metric == "hit_rate":
        return rel.any(dim=1).to(torch.float64)
    if metric == "mrr":
        return (relf * inv_ranks).amax(dim=1)
    # ndcg: binary gains, discount 1 / log2(i + 1), ideal list = min(|R|, k) hits on top.
    discount = 1.0 / torch.log2(_ranks(k, rel.device) + 1.0)
    # ideal[0] = 1 only avoids 0 / 0: a row without relevant items has DCG 0.
    ideal = torch.cat([discount.new_ones(1), discount.cumsum(dim=0)])
    return (relf @ discount) / ideal[num_relevant.clamp(max=k)]


def _per_row_values(
    metrics: tuple[str, ...], rel: Tensor, num_relevant: Tensor, denominator: str
) -> Tensor:
    """Float64 ``(len(metrics), N)`` per-row values, in row blocks (see ``row_blocks``)."""
    return torch.cat(
        [
            torch.stack([_per_row(m, rel[rows], num_relevant[rows], denominator) for m in metrics])
            for rows in row_blocks(rel.shape[0], rel.shape[1], rel.device)
        ],
        dim=1,
    )


def _reduce(values: Tensor, num_relevant: Tensor, empty_targets: str, reduction: str) -> Tensor:
    """Apply the empty-row rule and the reduction to float64 per-row values; return float32."""
    count: Tensor | int = max(values.numel(), 1)
    if empty_targets == "skip":
        counted = num_relevant > 0
        values = values.masked_fill(~counted, float("nan") if reduction == "none" else 0.0)
        count = counted.sum().clamp(min=1)
    if reduction == "none":
        return values.to(torch.float32)
    total = values.sum()
    if reduction == "sum":
        return total.to(torch.float32)
    return (total / count).to(torch.float32)


def _check_options(denominator: str, empty_targets: str, reduction: str) -> None:
    _check_choice(denominator, "denominator", _DENOMINATORS)
    _check_choice(empty_targets, "empty_targets", _EMPTY)
    _check_choice(reduction, "reduction", _REDUCTIONS)


def _metric_at_k(
    metric: str,
    preds: Tensor,
    target: Tensor,
    k: int,
    exclude: Tensor | None,
    empty_targets: str,
    reduction: str,
    validate_args: bool,
    denominator: str = "min_k",
) -> Tensor:
    _check_options(denominator, empty_targets, reduction)
    rel, num_relevant = _ranked_relevance(preds, target, k, exclude, validate_args)
    values = _per_row_values((metric,), rel, num_relevant, denominator)[0]
    return _reduce(values, num_relevant, empty_targets, reduction)


def map_at_k(
    preds: Tensor,
    target: Tensor,
    k: int,
    *,
    exclude: Tensor | None = None,
    denominator: Denominator = "min_k",
    empty_targets: EmptyTargets = "zero",
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    r"""Mean average precision at ``k`` (mAP@k) of ranked recommendations.

    For a row with recommended list :math:`L_1, \dots, L_k` and relevant set :math:`R`:

    .. math::

        \mathrm{AP@k} = \frac{1}{D} \sum_{i=1}^{k} P(i)\,\mathrm{rel}(i), \qquad
        P(i) = \frac{1}{i} \sum_{j=1}^{i} \mathrm{rel}(j),

    where :math:`\mathrm{rel}(i) = 1` iff :math:`L_i \in R` and :math:`L_i` is not a repeat of an
    earlier item. The field disagrees on the denominator :math:`D`:

    ===============  ==============================  ========================================
    ``denominator``  :math:`D`                       used by
    ===============  ==============================  ========================================
    ``"min_k"``      :math:`\min(|R|, k)`            Kaggle, ml_metrics ``apk`` (default)
    ``"relevant"``   :math:`|R|`                     trec_eval ``map_cut``, pytrec_eval, ranx
    ``"hits"``       :math:`\sum_i \mathrm{rel}(i)`  torchmetrics ``RetrievalMAP(top_k=k)``
    ===============  ==============================  ========================================

    (torchmetrics also counts a relevant item scored ``<= 0`` as irrelevant; with positive scores,
    ``denominator="hits"`` reproduces it, as the tests check.)

    A row with no hit scores 0 under all three. A row with an empty :math:`R` scores 0 and counts
    in the mean with ``empty_targets="zero"`` (Kaggle, the default), or is left out of the mean
    with ``empty_targets="skip"`` (its per-row value is then NaN; the mean of no rows is 0).

    Args:
        preds: floating ``(N, C)`` scores, or an integer ``(N, r)`` ranked index list.
        target: integer ``(N, m)`` index list of relevant items, or a bool/floating ``(N, C)``
            relevance matrix.
        k: cut-off, an int ``>= 1``.
        exclude: optional integer ``(N, h)`` index list of items never to recommend.
        denominator: ``"min_k"``, ``"relevant"`` or ``"hits"`` (table above).
        empty_targets: ``"zero"`` or ``"skip"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per row, shape ``(N,)``).
        validate_args: check index ranges and reject NaN scores (reads values from the device).

    Returns:
        A float32 tensor, computed in float64: a scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> scores = torch.tensor([[0.9, 0.1, 0.8, 0.3], [0.2, 0.7, 0.1, 0.4]])
        >>> target = torch.tensor([[2, 3], [0, -1]])
        >>> map_at_k(scores, target, 3, reduction="none")  # lists [0, 2, 3] and [1, 3, 0]
        tensor([0.5833, 0.3333])
        >>> map_at_k(scores, target, 3)
        tensor(0.4583)
        >>> map_at_k(torch.tensor([[2, 2, 3]]), target[:1], 3)  # ranked list with a repeat
        tensor(0.8333)
    """
    return _metric_at_k(
        "map", preds, target, k, exclude, empty_targets, reduction, validate_args, denominator
    )


def precision_at_k(
    preds: Tensor,
    target: Tensor,
    k: int,
    *,
    exclude: Tensor | None = None,
    empty_targets: EmptyTargets = "zero",
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    r"""Precision at ``k``: the fraction of the ``k`` recommendations that are relevant.

    .. math:: \mathrm{P@k} = \frac{1}{k} \sum_{i=1}^{k} \mathrm{rel}(i)

    The denominator is always ``k``: a list shorter than ``k`` (fewer eligible items, a short ranked
    list) counts its missing ranks as misses.

    Args:
        preds: scores ``(N, C)`` or ranked index list ``(N, r)``, as in :func:`map_at_k`.
        target: relevant items, as in :func:`map_at_k`.
        k: cut-off, an int ``>= 1``.
        exclude: items never to recommend, as in :func:`map_at_k`.
        empty_targets: ``"zero"`` (rows with no relevant item score 0 and count) or ``"skip"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check index ranges and reject NaN scores.

    Returns:
        A float32 scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> precision_at_k(torch.tensor([[0.9, 0.1, 0.8, 0.3]]), torch.tensor([[2, 3]]), 2)
        tensor(0.5000)
    """
    return _metric_at_k(
        "precision", preds, target, k, exclude, empty_targets, reduction, validate_args
    )


def recall_at_k(
    preds: Tensor,
    target: Tensor,
    k: int,
    *,
    exclude: Tensor | None = None,
    empty_targets: EmptyTargets = "zero",
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    r"""Recall at ``k``: the fraction of the relevant items found in the ``k`` recommendations.

    .. math:: \mathrm{R@k} = \frac{1}{|R|} \sum_{i=1}^{k} \mathrm{rel}(i)

    A row with an empty :math:`R` scores 0 (``empty_targets="zero"``) or is skipped.

    Args:
        preds: scores ``(N, C)`` or ranked index list ``(N, r)``, as in :func:`map_at_k`.
        target: relevant items, as in :func:`map_at_k`.
        k: cut-off, an int ``>= 1``.
        exclude: items never to recommend, as in :func:`map_at_k`.
        empty_targets: ``"zero"`` or ``"skip"``, as in :func:`map_at_k`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check index ranges and reject NaN scores.

    Returns:
        A float32 scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> recall_at_k(torch.tensor([[0.9, 0.1, 0.8, 0.3]]), torch.tensor([[2, 3, 1]]), 2)
        tensor(0.3333)
    """
    return _metric_at_k(
        "recall", preds, target, k, exclude, empty_targets, reduction, validate_args
    )


def hit_rate_at_k(
    preds: Tensor,
    target: Tensor,
    k: int,
    *,
    exclude: Tensor | None = None,
    empty_targets: EmptyTargets = "zero",
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    r"""Hit rate at ``k``: 1 for a row whose ``k`` recommendations hold a relevant item, else 0.

    .. math:: \mathrm{HR@k} = \max_{i \le k} \mathrm{rel}(i)

    Args:
        preds: scores ``(N, C)`` or ranked index list ``(N, r)``, as in :func:`map_at_k`.
        target: relevant items, as in :func:`map_at_k`.
        k: cut-off, an int ``>= 1``.
        exclude: items never to recommend, as in :func:`map_at_k`.
        empty_targets: ``"zero"`` or ``"skip"``, as in :func:`map_at_k`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check index ranges and reject NaN scores.

    Returns:
        A float32 scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> scores = torch.tensor([[0.9, 0.1, 0.8, 0.3], [0.9, 0.1, 0.8, 0.3]])
        >>> hit_rate_at_k(scores, torch.tensor([[2], [1]]), 2, reduction="none")
        tensor([1., 0.])
    """
    return _metric_at_k(
        "hit_rate", preds, target, k, exclude, empty_targets, reduction, validate_args
    )


def mrr_at_k(
    preds: Tensor,
    target: Tensor,
    k: int,
    *,
    exclude: Tensor | None = None,
    empty_targets: EmptyTargets = "zero",
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    r"""Mean reciprocal rank at ``k``: one over the rank of the first relevant recommendation.

    .. math:: \mathrm{RR@k} = \max_{i \le k} \frac{\mathrm{rel}(i)}{i}

    A row without a relevant item in its first ``k`` recommendations scores 0.

    Args:
        preds: scores ``(N, C)`` or ranked index list ``(N, r)``, as in :func:`map_at_k`.
        target: relevant items, as in :func:`map_at_k`.
        k: cut-off, an int ``>= 1``.
        exclude: items never to recommend, as in :func:`map_at_k`.
        empty_targets: ``"zero"`` or ``"skip"``, as in :func:`map_at_k`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check index ranges and reject NaN scores.

    Returns:
        A float32 scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> mrr_at_k(torch.tensor([[3, 1, 2]]), torch.tensor([[2, 1]]), 3)
        tensor(0.5000)
    """
    return _metric_at_k("mrr", preds, target, k, exclude, empty_targets, reduction, validate_args)


def ndcg_at_k(
    preds: Tensor,
    target: Tensor,
    k: int,
    *,
    exclude: Tensor | None = None,
    empty_targets: EmptyTargets = "zero",
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> Tensor:
    r"""Normalized discounted cumulative gain at ``k``, with binary relevance.

    .. math::

        \mathrm{nDCG@k} = \frac{\sum_{i=1}^{k} \mathrm{rel}(i) / \log_2(i + 1)}
        {\sum_{i=1}^{\min(|R|, k)} 1 / \log_2(i + 1)}

    The ideal list puts :math:`\min(|R|, k)` relevant items first (as trec_eval, ranx and
    torchmetrics do); a relevance matrix counts every nonzero entry as a gain of 1.

    Args:
        preds: scores ``(N, C)`` or ranked index list ``(N, r)``, as in :func:`map_at_k`.
        target: relevant items, as in :func:`map_at_k`.
        k: cut-off, an int ``>= 1``.
        exclude: items never to recommend, as in :func:`map_at_k`.
        empty_targets: ``"zero"`` or ``"skip"``, as in :func:`map_at_k`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check index ranges and reject NaN scores.

    Returns:
        A float32 scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> ndcg_at_k(torch.tensor([[3, 1, 2]]), torch.tensor([[1]]), 3)  # 1 / log2(3)
        tensor(0.6309)
    """
    return _metric_at_k("ndcg", preds, target, k, exclude, empty_targets, reduction, validate_args)


def ranking_metrics_at_k(
    preds: Tensor,
    target: Tensor,
    k: int,
    *,
    metrics: tuple[str, ...] = METRICS,
    exclude: Tensor | None = None,
    denominator: Denominator = "min_k",
    empty_targets: EmptyTargets = "zero",
    reduction: Reduction = "mean",
    validate_args: bool = True,
) -> dict[str, Tensor]:
    """Several metrics @k from one top-k pass: a dict from metric name to its value.

    The values equal those of :func:`map_at_k`, :func:`precision_at_k`, :func:`recall_at_k`,
    :func:`ndcg_at_k`, :func:`hit_rate_at_k` and :func:`mrr_at_k` called one by one
    (``denominator`` applies to ``"map"`` only), for the price of one.

    Args:
        preds: scores ``(N, C)`` or ranked index list ``(N, r)``, as in :func:`map_at_k`.
        target: relevant items, as in :func:`map_at_k`.
        k: cut-off, an int ``>= 1``.
        metrics: names among ``"hit_rate"``, ``"map"``, ``"mrr"``, ``"ndcg"``, ``"precision"``,
            ``"recall"``.
        exclude: items never to recommend, as in :func:`map_at_k`.
        denominator: the AP@k denominator, as in :func:`map_at_k`.
        empty_targets: ``"zero"`` or ``"skip"``, as in :func:`map_at_k`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        validate_args: check index ranges and reject NaN scores.

    Returns:
        ``{name: float32 value}`` in the order of ``metrics``.

    Example:
        >>> scores = torch.tensor([[0.9, 0.1, 0.8, 0.3], [0.2, 0.7, 0.1, 0.4]])
        >>> out = ranking_metrics_at_k(scores, torch.tensor([[2, 3], [0, -1]]), 3)
        >>> for name, value in out.items():
        ...     print(f"{name}: {value.item():.4f}")
        hit_rate: 1.0000
        map: 0.4583
        mrr: 0.4167
        ndcg: 0.5967
        precision: 0.5000
        recall: 1.0000
    """
    _check_metrics(metrics)
    _check_options(denominator, empty_targets, reduction)
    rel, num_relevant = _ranked_relevance(preds, target, k, exclude, validate_args)
    values = _per_row_values(metrics, rel, num_relevant, denominator)
    return {
        name: _reduce(values[i], num_relevant, empty_targets, reduction)
        for i, name in enumerate(metrics)
    }


def _check_metrics(metrics: object) -> tuple[str, ...]:
    if isinstance(metrics, str) or not isinstance(metrics, tuple | list):
        raise TypeError(
            f"`metrics` must be a tuple of metric names among {METRICS}, got {metrics!r}"
        )
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(
            f"`metrics` must be a non-empty tuple of names among {METRICS}, got {tuple(metrics)!r}"
        )
    return tuple(metrics)
