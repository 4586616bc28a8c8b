"""Top-k recommendation lists and the ranking metrics @k computed from one top-k pass.

Every function here takes the same inputs, in the index-list convention of
:mod:`focalrec._indices`:

- ``preds``: a floating ``(N, C)`` score matrix (higher is better), or an integer ``(N, r)`` matrix
  of ranked item indices padded with ``-1`` (best first; a repeated item counts only at its first
  position, as in Kaggle's ``apk``; a ``-1`` holds its rank but recommends nothing).
- ``targets``: an integer ``(N, m)`` index list of relevant items padded with ``-1`` (repeats count
  once), or a bool/floating ``(N, C)`` relevance matrix (an item is relevant where it is nonzero).
- ``exclude``: an optional integer ``(N, h)`` index list of items that must never be recommended
  (for instance the items a user already solved). A score matrix is never modified; from a ranked
  list the excluded items are removed and the items below them move up.

**Ranking.** With a score matrix, the recommended list of a row holds the ``k`` eligible
(not excluded) items that come first when items are ordered by score, higher first, and **ties
broken by lower item index first**. This order is a property of the scores alone: it does not
depend on the device, the number of threads or the tie order of :func:`torch.topk`. A row with
fewer than ``k`` eligible items is padded with ``-1``. ``-0.0`` and ``0.0`` tie; ``-inf`` scores are
eligible and rank last; NaN scores are rejected (``validate_args=True``, the default) or, without
validation, give an unspecified (but valid) list.

**Cost.** One :func:`torch.topk` of width ``k + 1`` over the untouched scores, plus work on the
``(N, k + 1)`` candidates. Only the rows whose list could depend on items outside the candidates
get more work, on those rows alone: rows with an excluded item among their candidates and fewer
than ``k + 1`` eligible ones get a second top-k of width ``k + h + 1`` (``h`` = width of
``exclude``), and rows tied at the cut get an exact pass that picks the lowest-index eligible
items of the tied value. Where rows must be copied (to mask exclusions or to scan one value),
they are copied in chunks of about ``2**24`` elements, so no ``(N, C)`` temporary is made. When
most rows need the second top-k (exclusions that are each user's best-scored items, as a history
often is), it runs in place over all rows instead, and once the first 2,048 rows show this, the
rows after them go straight to it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from focalrec._indices import PAD, check_index_list, first_occurrence, is_index_list

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
_CHUNK_ELEMENTS = 1 << 24
"""Where rows must be copied, they are copied in chunks of about this many elements."""
_BROADCAST_PAIRS = 64
"""Distinct targets are counted by comparing all pairs up to this many per row, else by a sort."""
_BROADCAST_VALUES = 32
"""Row-wise membership compares all pairs up to this many values per row, else binary-searches."""
_INLINE_ELEMENTS = 32768
"""torch runs a CPU op on at most this many elements in the calling thread (ATen's grain size).

The steps on ``(N, k)``-sized tensors run in row blocks of that size on CPU: each is too small to
gain from threads, and on a busy machine every trip through the thread pool costs milliseconds.
"""
_PROBE_ROWS = 2048
"""With exclusions, the first rows show whether the rest should go straight to the wide pass."""


# --------------------------------------------------------------------------------------------------
# argument checks


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"`k` must be a positive int, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"`k` must be a positive int (k >= 1), got {k}")
    return k


def _check_choice(value: object, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_scores(scores: object, name: str) -> Tensor:
    if not isinstance(scores, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(
            f"`{name}` must be a floating (N, C) score matrix, got dtype {scores.dtype}"
        )
    if scores.ndim != 2:
        raise ValueError(
            f"`{name}` must be a score matrix of shape (N, C), got {tuple(scores.shape)}"
        )
    return scores


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


# --------------------------------------------------------------------------------------------------
# top-k


def _isin_rows(values: Tensor, sets: Tensor) -> Tensor:
    """``out[i, j] = values[i, j] in sets[i]`` for integer tensors ``(N, a)`` and ``(N, b)``.

    A few values per row (the usual case: the top-k candidates against targets or a history)
    are compared with every set member in one broadcast (in row blocks on CPU, see
    :func:`_row_slices`); many values per row binary-search the sorted sets instead.
    """
    a, b = values.shape[1], sets.shape[1]
    if a == 0 or b == 0:
        return torch.zeros(values.shape, dtype=torch.bool, device=values.device)
    if a <= _BROADCAST_VALUES:
        return torch.cat(
            [
                (values[rows].unsqueeze(2) == sets[rows].unsqueeze(1)).any(dim=2)
                for rows in _row_slices(values.shape[0], a * b, values.device)
            ]
        )
    sorted_sets = sets.to(values.dtype).sort(dim=1).values
    values = values.contiguous()
    pos = torch.searchsorted(sorted_sets, values).clamp_(max=b - 1)
    return sorted_sets.gather(1, pos) == values


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


def _order_candidates(vals: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Sort top-k candidates by (value descending, index ascending): two small stable sorts."""
    idx, perm = idx.sort(dim=1)
    vals = vals.gather(1, perm)
    vals, perm = vals.sort(dim=1, descending=True, stable=True)
    return vals, idx.gather(1, perm)


def _topk_candidates(scores: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """The ``width`` best items of each row, ordered by (value descending, index ascending).

    :func:`torch.topk` returns values in descending order but tied values in any order, so the
    candidates are re-sorted only when some row holds a tie among them.
    """
    vals, idx = scores.topk(width, dim=1)
    if width > 1 and bool((vals[:, 1:] == vals[:, :-1]).any()):
        vals, idx = _order_candidates(vals, idx)
    return vals, idx


def _pick(
    vals: Tensor, idx: Tensor, excluded: Tensor | None, k: int, complete: bool
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The first ``k`` eligible ordered candidates, their values, and the rows left open.

    ``complete`` says the candidates are all the items of the row: then every row is settled.
    Otherwise every item outside them scores at most the last candidate's value ``vals[:, -1]``,
    so a row is settled iff it has ``k`` eligible candidates and the ``k``-th scores strictly
    more. Open rows are ``short`` (with exclusions only: fewer than ``k + 1`` eligible candidates,
    so that the ``k``-th pick is missing or is the last candidate, which a wider pass settles) or
    ``tied`` (the ``k``-th pick ties with the last candidate, and maybe with items outside).
    ``None`` stands for ``excluded`` all false, and for no row left open.
    """
    width = min(k, idx.shape[1])
    order = None
    if excluded is None:
        items, picked = idx[:, :width], vals[:, :width]
    else:
        order = torch.argsort(excluded.to(torch.uint8), dim=1, stable=True)[:, :width]
        items = idx.gather(1, order).masked_fill_(excluded.gather(1, order), PAD)
        picked = vals.gather(1, order)
    if complete:
        return items, picked, None, None
    tied = ~(picked[:, -1] > vals[:, -1])  # also true for a NaN at the cut (no validation)
    short = None
    if order is not None:
        # The k-th pick is the last candidate (nothing to compare it with), or is missing.
        short = (order[:, -1] == idx.shape[1] - 1) | (items[:, -1] == PAD)
        tied &= ~short
    return items, picked, short, tied


def _topk_pass(
    scores: Tensor, k: int, width: int, exclude: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """One top-k pass of ``width`` candidates over ``scores``, then :func:`_pick`."""
    vals, idx = _topk_candidates(scores, width)
    excluded = _isin_rows(idx, exclude) if exclude is not None else None
    return _pick(vals, idx, excluded, k, complete=width == scores.shape[1])


def _row_chunks(rows: Tensor, num_cols: int) -> list[Tensor]:
    return list(torch.split(rows, max(1, _CHUNK_ELEMENTS // max(num_cols, 1))))


def _resolve_ties(
    scores: Tensor, rows: Tensor, items: Tensor, picked: Tensor, exclude: Tensor | None, k: int
) -> None:
    """Rows tied at the cut, exactly and in chunks: keep the picks that beat the tied value, then
    the lowest-index eligible items equal to it. Writes ``items[rows]``."""
    num_cols = scores.shape[1]
    # Descending keys over the columns: the largest key among the tied items is the lowest index.
    keys = torch.arange(num_cols, 0, -1, device=scores.device, dtype=torch.int32)
    for sel in _row_chunks(rows, num_cols):
        sub = scores.index_select(0, sel)
        tie = picked[sel, k - 1 : k]
        keep = picked[sel] > tie
        eq = sub == tie
        if exclude is not None:
            ex = exclude.index_select(0, sel).long()
            eq.scatter_(1, ex.clamp(min=0), False)
            # A padding entry was clamped to item 0: restore item 0 unless the row excludes it.
            eq[:, 0] = (sub[:, 0] == tie[:, 0]) & ~(ex == 0).any(dim=1)
        top_eq = torch.where(eq, keys, 0).topk(min(k, num_cols), dim=1)
        tied_items = (num_cols - top_eq.values.long()).masked_fill_(top_eq.values == 0, PAD)
        # Rank 0: picks above the tie, 1: tied items by index, 2: dropped; a stable sort merges.
        merged = torch.cat([torch.where(keep, items[sel], PAD), tied_items], dim=1)
        rank = torch.cat(
            [(~keep).to(torch.uint8) * 2, torch.ones_like(keep, dtype=torch.uint8)], dim=1
        )
        order = torch.argsort(rank, dim=1, stable=True)[:, :k]
        items[sel] = merged.gather(1, order)


def _check_no_nan(top_vals: Tensor, first_row: int) -> None:
    """Reject NaN scores, seen for free: torch.topk orders NaN above every number."""
    nan_rows = torch.isnan(top_vals[:, 0])
    if bool(nan_rows.any()):
        row = first_row + int(nan_rows.nonzero()[0, 0])
        raise ValueError(f"`scores` must not contain NaN; row {row} holds a NaN score")


def _topk_wide(
    scores: Tensor, k: int, exclude: Tensor, validate_args: bool, first_row: int
) -> Tensor:
    """One top-k of width ``k + h + 1``, enough for ``k + 1`` eligible candidates in every row."""
    num_cols = scores.shape[1]
    vals, idx = _topk_candidates(scores, min(k + exclude.shape[1] + 1, num_cols))
    if validate_args:
        _check_no_nan(vals, first_row)
    # Only reached when a narrow pass found short rows, so k + 1 < C: k items per row.
    complete = idx.shape[1] == num_cols
    items, picked, _, tied = _pick(vals, idx, _isin_rows(idx, exclude), k, complete)
    if tied is not None and bool(tied.any()):
        _resolve_ties(scores, tied.nonzero().squeeze(1), items, picked, exclude, k)
    return items


def _topk_narrow(
    scores: Tensor, k: int, exclude: Tensor | None, validate_args: bool, first_row: int = 0
) -> tuple[Tensor, int]:
    """Top-k lists from one top-k of width ``k + 1``; a wider pass for the short rows alone.

    Also returns the number of short rows (those whose exclusions reach into the candidates).
    """
    n, num_cols = scores.shape
    vals, idx = _topk_candidates(scores, min(k + 1, num_cols))
    if validate_args:
        _check_no_nan(vals, first_row)
    complete = idx.shape[1] == num_cols
    items, picked, _, tied = _pick(vals, idx, None, k, complete)
    if items.shape[1] < k:
        items = torch.cat([items, items.new_full((n, k - items.shape[1]), PAD)], dim=1)
    items, picked = items.contiguous(), picked.contiguous()
    short_rows = None
    if exclude is not None:
        # Rows with an excluded candidate (usually few) are picked again, on their own.
        rows = _isin_rows(idx, exclude).any(dim=1).nonzero().squeeze(1)
        if rows.numel() > 0:
            ex = exclude[rows]
            items_r, picked_r, short_r, tied_r = _pick(
                vals[rows], idx[rows], _isin_rows(idx[rows], ex), k, complete
            )
            items[rows, : items_r.shape[1]] = items_r
            picked[rows] = picked_r
            if tied is not None and tied_r is not None and short_r is not None:
                tied[rows] = tied_r
                short_rows = rows[short_r]
    if short_rows is not None and short_rows.numel() > 0:
        # Second pass, wide enough to hold k + 1 eligible items, over the short rows only: copied
        # in chunks when they are few, in place when most rows are short (a copy costs about a
        # pass). Here k + 1 < C, so it returns k items per row and leaves no row short.
        assert exclude is not None
        assert tied is not None
        width = min(k + exclude.shape[1] + 1, num_cols)
        if 2 * short_rows.numel() > n:
            short = torch.zeros(n, dtype=torch.bool, device=scores.device)
            short[short_rows] = True
            items2, picked2, _, tied2 = _topk_pass(scores, k, width, exclude)
            items = torch.where(short.unsqueeze(1), items2, items)
            picked = torch.where(short.unsqueeze(1), picked2, picked)
            tied = torch.where(short, tied2 if tied2 is not None else False, tied)
        else:
            for sel in _row_chunks(short_rows, num_cols):
                ex = exclude.index_select(0, sel)
                items2, picked2, _, tied2 = _topk_pass(scores.index_select(0, sel), k, width, ex)
                items[sel] = items2
                picked[sel] = picked2
                tied[sel] = tied2 if tied2 is not None else False
    if tied is not None and bool(tied.any()):
        _resolve_ties(scores, tied.nonzero().squeeze(1), items, picked, exclude, k)
    return items, 0 if short_rows is None else short_rows.numel()


def _topk_items(scores: Tensor, k: int, exclude: Tensor | None, validate_args: bool) -> Tensor:
    """:func:`topk_items` on checked arguments (the passes are described in the module doc).

    With exclusions, the first rows are a probe: when most of them are short (the excluded items
    are among the best-scored ones, as a user's history often is), the other rows skip the
    narrow pass and go straight to the wide one, which then costs one top-k instead of two.
    """
    n, num_cols = scores.shape
    if n == 0 or num_cols == 0:
        return torch.full((n, k), PAD, dtype=torch.long, device=scores.device)
    if exclude is not None and exclude.shape[1] == 0:
        exclude = None
    if exclude is None or n <= _PROBE_ROWS:
        return _topk_narrow(scores, k, exclude, validate_args)[0]
    p = _PROBE_ROWS
    head, num_short = _topk_narrow(scores[:p], k, exclude[:p], validate_args)
    if 2 * num_short > p:
        tail = _topk_wide(scores[p:], k, exclude[p:], validate_args, p)
    else:
        tail = _topk_narrow(scores[p:], k, exclude[p:], validate_args, p)[0]
    return torch.cat([head, tail])


def topk_items(
    scores: Tensor, k: int, *, exclude: Tensor | None = None, validate_args: bool = True
) -> Tensor:
    """The ``k`` best eligible items of each row of a score matrix, best first.

    Items are ordered by score, higher first, ties broken by **lower item index first**; the items
    of ``exclude`` are never returned. The result is the same on every device and thread count
    (see the module docstring for how this is done in one ``torch.topk`` of width ``k + 1``).

    Args:
        scores: floating ``(N, C)`` scores; never modified.
        k: number of items per row, ``k >= 1``; may exceed ``C``.
        exclude: optional integer ``(N, h)`` index list (padded with ``-1``) of items never to
            return.
        validate_args: check the range of ``exclude`` and reject NaN scores (each reads values
            back from the device).

    Returns:
        An ``int64`` index list ``(N, k)``; a row with fewer than ``k`` eligible items ends with
        ``-1``.

    Example:
        >>> scores = torch.tensor([[0.1, 0.9, 0.5, 0.9], [0.3, 0.2, 0.1, 0.0]])
        >>> topk_items(scores, 3)
        tensor([[1, 3, 2],
                [0, 1, 2]])
        >>> topk_items(scores, 3, exclude=torch.tensor([[1, -1], [0, 2]]))
        tensor([[ 3,  2,  0],
                [ 1,  3, -1]])
    """
    scores = _check_scores(scores, "scores")
    k = _check_k(k)
    if exclude is not None:
        check_index_list(
            exclude,
            "exclude",
            num_rows=scores.shape[0],
            num_classes=scores.shape[1],
            validate_args=validate_args,
        )
    return _topk_items(scores, k, exclude, validate_args)


# --------------------------------------------------------------------------------------------------
# relevance of the top-k lists


def _ranked_relevance(
    preds: Tensor,
    targets: Tensor,
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
    if not isinstance(targets, Tensor):
        raise TypeError(f"`targets` must be a torch.Tensor, got {type(targets).__name__}")
    if preds.ndim != 2:
        raise ValueError(
            f"`preds` must be a score matrix (N, C) or a ranked index list (N, r), "
            f"got shape {tuple(preds.shape)}"
        )
    n = preds.shape[0]
    dense_targets = not is_index_list(targets)
    if dense_targets and targets.ndim != 2:
        raise ValueError(
            f"`targets` must be a relevance matrix (N, C) or an index list (N, m), "
            f"got shape {tuple(targets.shape)}"
        )
    if dense_targets and targets.is_complex():
        raise TypeError(f"`targets` must be bool, floating or integer, got dtype {targets.dtype}")
    scored = not is_index_list(preds)
    num_classes: int | None = None
    if scored:
        _check_scores(preds, "preds")
        num_classes = preds.shape[1]
    if dense_targets:
        if scored and targets.shape != preds.shape:
            raise ValueError(
                f"`targets` as a relevance matrix must have the shape of `preds` "
                f"{tuple(preds.shape)}, got {tuple(targets.shape)}"
            )
        if targets.shape[0] != n:
            raise ValueError(
                f"`targets` must have {n} rows (one per row of `preds`), "
                f"got shape {tuple(targets.shape)}"
            )
        num_classes = targets.shape[1]
    else:
        _check_index_rows(targets, "targets", n, num_classes, validate_args)
    if exclude is not None:
        _check_index_rows(exclude, "exclude", n, num_classes, validate_args)
    if scored:
        items = _topk_items(preds, k, exclude, validate_args)
    else:
        _check_index_rows(preds, "preds", n, num_classes, validate_args)
        # At most h excluded items are dropped, so the first k + h ranks are all that matter.
        items = preds[:, : k + (exclude.shape[1] if exclude is not None else 0)].long()
        if exclude is not None:
            drop = _isin_rows(items, exclude) & (items != PAD)
            order = torch.argsort(drop.to(torch.uint8), dim=1, stable=True)
            items = items.gather(1, order).masked_fill_(drop.gather(1, order), PAD)
        items = items[:, :k]
        if items.shape[1] < k:
            pad = items.new_full((n, k - items.shape[1]), PAD)
            items = torch.cat([items, pad], dim=1)
    if dense_targets:
        width = k
        num_relevant = torch.count_nonzero(targets, dim=1)
    else:
        width = k * max(targets.shape[1], 1)
        num_relevant = torch.cat(
            [_count_distinct(targets[rows]) for rows in _row_slices(n, width, targets.device)]
        )
    rel = torch.cat(
        [
            _relevance(items[rows], targets[rows], scored, dense_targets)
            for rows in _row_slices(n, width, items.device)
        ]
    )
    return rel, num_relevant


def _relevance(items: Tensor, targets: Tensor, scored: bool, dense_targets: bool) -> Tensor:
    """``rel`` of :func:`_ranked_relevance` for a block of rows."""
    # A list from scores holds no repeats; a ranked list counts an item at its first rank only.
    valid = items != PAD if scored else first_occurrence(items)
    if not dense_targets:
        return _isin_rows(items, targets) & valid
    if targets.shape[1] == 0:  # no items at all: nothing is relevant
        return torch.zeros_like(valid)
    return (targets.gather(1, items.clamp(min=0)) != 0) & valid


def _row_slices(n: int, width: int, device: torch.device) -> list[slice]:
    """Row blocks for steps on tensors of ``width`` elements per row.

    On CPU the blocks hold at most ``_INLINE_ELEMENTS`` elements, which torch runs in the calling
    thread; elsewhere they only bound temporaries to about ``_CHUNK_ELEMENTS`` elements.
    """
    limit = _INLINE_ELEMENTS if device.type == "cpu" else _CHUNK_ELEMENTS
    step = max(1, limit // max(width, 1))
    return [slice(start, start + step) for start in range(0, n, step)] or [slice(0, 0)]


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
    """Float64 ``(len(metrics), N)`` per-row values, in row blocks (see :func:`_row_slices`)."""
    return torch.cat(
        [
            torch.stack([_per_row(m, rel[rows], num_relevant[rows], denominator) for m in metrics])
            for rows in _row_slices(rel.shape[0], rel.shape[1], rel.device)
        ],
        dim=1,
    )


def _reduce(values: Tensor, num_relevant: Tensor, empty_targets: str, reduction: str) -> Tensor:
    """Apply the empty-row rule and the reduction to float64 per-row values; return float32."""
    if empty_targets == "skip":
        counted = num_relevant > 0
        if reduction == "none":
            return values.masked_fill(~counted, float("nan")).to(torch.float32)
        total = values.masked_fill(~counted, 0.0).sum()
        count = counted.sum()
    else:
        if reduction == "none":
            return values.to(torch.float32)
        total = values.sum()
        count = torch.tensor(values.numel(), device=values.device)
    if reduction == "sum":
        return total.to(torch.float32)
    return (total / count.clamp(min=1)).to(torch.float32)


def _check_options(denominator: str, empty_targets: str, reduction: str) -> None:
    _check_choice(denominator, "denominator", _DENOMINATORS)
    _check_choice(empty_targets, "empty_targets", _EMPTY)
    _check_choice(reduction, "reduction", _REDUCTIONS)


def _metric_at_k(
    metric: str,
    preds: Tensor,
    targets: Tensor,
    k: int,
    exclude: Tensor | None,
    empty_targets: str,
    reduction: str,
    validate_args: bool,
    denominator: str = "min_k",
) -> Tensor:
    _check_options(denominator, empty_targets, reduction)
    rel, num_relevant = _ranked_relevance(preds, targets, k, exclude, validate_args)
    values = _per_row_values((metric,), rel, num_relevant, denominator)[0]
    return _reduce(values, num_relevant, empty_targets, reduction)


def map_at_k(
    preds: Tensor,
    targets: Tensor,
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
        targets: integer ``(N, m)`` index list of relevant items, or a bool/floating ``(N, C)``
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
        >>> targets = torch.tensor([[2, 3], [0, -1]])
        >>> map_at_k(scores, targets, 3, reduction="none")  # lists [0, 2, 3] and [1, 3, 0]
        tensor([0.5833, 0.3333])
        >>> map_at_k(scores, targets, 3)
        tensor(0.4583)
        >>> map_at_k(torch.tensor([[2, 2, 3]]), targets[:1], 3)  # ranked list with a repeat
        tensor(0.8333)
    """
    return _metric_at_k(
        "map", preds, targets, k, exclude, empty_targets, reduction, validate_args, denominator
    )


def precision_at_k(
    preds: Tensor,
    targets: Tensor,
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
        targets: relevant items, as in :func:`map_at_k`.
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
        "precision", preds, targets, k, exclude, empty_targets, reduction, validate_args
    )


def recall_at_k(
    preds: Tensor,
    targets: Tensor,
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
        targets: relevant items, as in :func:`map_at_k`.
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
        "recall", preds, targets, k, exclude, empty_targets, reduction, validate_args
    )


def hit_rate_at_k(
    preds: Tensor,
    targets: Tensor,
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
        targets: relevant items, as in :func:`map_at_k`.
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
        "hit_rate", preds, targets, k, exclude, empty_targets, reduction, validate_args
    )


def mrr_at_k(
    preds: Tensor,
    targets: Tensor,
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
        targets: relevant items, as in :func:`map_at_k`.
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
    return _metric_at_k("mrr", preds, targets, k, exclude, empty_targets, reduction, validate_args)


def ndcg_at_k(
    preds: Tensor,
    targets: Tensor,
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
        targets: relevant items, as in :func:`map_at_k`.
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
    return _metric_at_k("ndcg", preds, targets, k, exclude, empty_targets, reduction, validate_args)


def ranking_metrics_at_k(
    preds: Tensor,
    targets: Tensor,
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
        targets: relevant items, as in :func:`map_at_k`.
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
    rel, num_relevant = _ranked_relevance(preds, targets, k, exclude, validate_args)
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
