r"""Exact top-k lists with the tie rule and exclusions, from a score matrix or from embeddings.

**The order.** The list of a row holds the ``k`` eligible (not excluded) items that come first
when items are ordered by score, higher first, and **ties broken by lower item index first**.
NaN ranks above every number (the order of :func:`torch.sort` and :func:`torch.topk`), NaN items
among themselves by index; ``-0.0`` and ``0.0`` tie; ``-inf`` is eligible and ranks below every
other score. The public functions reject NaN scores with ``validate_args=True`` (the default);
the rule says what a NaN does without validation. The order is total and a property of the
scores alone, so the lists do not depend on the device, the number of threads, the tie order of
:func:`torch.topk`, or how the items are split into chunks or shards. A row with fewer than ``k``
eligible items is padded with ``-1``.

**Cost on the CPU.** One :func:`torch.topk` of width ``k + 1`` over the untouched scores, plus
work on the ``(N, k + 1)`` candidates. Only the rows whose list could depend on items outside the
candidates get more work, on those rows alone: rows with an excluded item among their candidates
and fewer than ``k + 1`` eligible ones get a second top-k of width ``k + h + 1`` (``h`` = width of
``exclude``), and rows tied at the cut get an exact pass that picks the lowest-index eligible
items of the tied value. Where rows must be copied (to mask exclusions or to scan one value),
they are copied in chunks of about ``2**24`` elements, so no ``(N, C)`` temporary is made. When
most rows need the second top-k (exclusions that are each user's best-scored items, as a history
often is), it runs in place over all rows instead, and once the first 2,048 rows show this, the
rows after them go straight to it.

**On accelerators** reading a value back to the host waits for the device, so the lists are made
without any read (no ``.item()``, no ``bool(tensor)``, no shape that depends on values): one
top-k of width ``k + h + 1``, which holds ``k + 1`` eligible candidates in every row, then the
exact pass for rows tied at the cut, run over every row (in chunks) and kept where a row is tied.
With ``validate_args=True`` the NaN check reads from the device anyway, and the exact pass is
skipped when no row is tied.

**From embeddings.** Since the order is total, the best ``k`` items of a union of item sets are
among the best ``k`` of each set. :func:`topk_items_from_embeddings` forms the scores of a
factorized model one block of rows x items at a time, takes each block's exact best ``k`` as
above and merges them into a running best ``k`` per row; over ``torch.distributed``, each rank
does so on its slice of the items and the ranks' best ``k`` are all-gathered and merged the same
way.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from focalrec._checks import (
    check_chunk_size,
    check_int,
    check_linear_layer,
    check_process_group,
    check_same_device,
)
from focalrec._indices import CHUNK_ELEMENTS, PAD, check_index_list, isin_rows
from focalrec._shard import check_offsets, gather_sizes, item_layout

__all__ = [
    "topk_items",
    "topk_items_from_embeddings",
]

_PROBE_ROWS = 2048
"""With exclusions, the first rows show whether the rest should go straight to the wide pass."""
_MIN_CHUNK_ITEMS = 4096
"""A block of scores from embeddings spans at least this many items (or all of them)."""
_FORCE_SYNC_FREE = False
"""Run the accelerator path on CPU tensors too: the tests set it to prove that path reads no
value back to the host."""
_SCORES = "`scores`"
_FACTORED_SCORES = "the scores `input @ linear_weight.T + linear_bias`"


# --------------------------------------------------------------------------------------------------
# argument checks


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"`k` must be a positive int, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"`k` must be a positive int (k >= 1), got {k}")
    return k


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


def _check_no_nan(top_vals: Tensor, first_row: int, what: str) -> None:
    """Reject NaN scores, seen for free: torch.topk orders NaN above every number."""
    nan_rows = torch.isnan(top_vals[:, 0])
    if bool(nan_rows.any()):
        row = first_row + int(nan_rows.nonzero()[0, 0])
        raise ValueError(f"{what} must not contain NaN; row {row} holds a NaN score")


# --------------------------------------------------------------------------------------------------
# the order


def _above(a: Tensor, b: Tensor) -> Tensor:
    """Whether ``a`` ranks strictly above ``b`` (broadcast): larger, or NaN against a number."""
    return (a > b) | (a.isnan() & ~b.isnan())


def _ties(a: Tensor, b: Tensor) -> Tensor:
    """Whether ``a`` and ``b`` tie (broadcast): equal, or both NaN."""
    return (a == b) | (a.isnan() & b.isnan())


def _reads_allowed(device: torch.device) -> bool:
    """Whether the top-k may read values back to the host to skip work: on the CPU, where a read
    costs nothing, and not on accelerators, where it waits for the device."""
    return device.type == "cpu" and not _FORCE_SYNC_FREE


def _order_candidates(vals: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Sort candidates by (value descending, NaN first, index ascending): two small stable sorts."""
    idx, perm = idx.sort(dim=1)
    vals = vals.gather(1, perm)
    vals, perm = vals.sort(dim=1, descending=True, stable=True)
    return vals, idx.gather(1, perm)


def _topk_candidates(scores: Tensor, width: int, reads: bool) -> tuple[Tensor, Tensor]:
    """The ``width`` best items of each row, ordered by (value descending, index ascending).

    :func:`torch.topk` returns values in descending order but tied values in any order, so the
    candidates are re-sorted; where reads are allowed, only when some row holds a tie.
    """
    vals, idx = scores.topk(width, dim=1)
    if width > 1 and (not reads or bool(_ties(vals[:, 1:], vals[:, :-1]).any())):
        vals, idx = _order_candidates(vals, idx)
    return vals, idx


def _pick(
    vals: Tensor, idx: Tensor, excluded: Tensor | None, k: int, complete: bool
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The first ``k`` eligible ordered candidates, their values, and the rows left open.

    ``complete`` says the candidates are all the items of the row: then every row is settled.
    Otherwise every item outside them ranks at most as high as the last candidate ``vals[:, -1]``,
    so a row is settled iff it has ``k`` eligible candidates and the ``k``-th ranks strictly
    above the last. Open rows are ``short`` (with exclusions only: fewer than ``k + 1`` eligible
    candidates, so that the ``k``-th pick is missing or is the last candidate, which a wider pass
    settles) or ``tied`` (the ``k``-th pick ties with the last candidate, and maybe with items
    outside). ``None`` stands for ``excluded`` all false, and for no row left open.
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
    tied = ~_above(picked[:, -1], vals[:, -1])
    short = None
    if order is not None:
        # The k-th pick is the last candidate (nothing to compare it with), or is missing.
        short = (order[:, -1] == idx.shape[1] - 1) | (items[:, -1] == PAD)
        tied &= ~short
    return items, picked, short, tied


def _pad(items: Tensor, k: int) -> Tensor:
    """Lists of fewer than ``k`` items (fewer items than ``k`` in all) padded to ``k``."""
    if items.shape[1] == k:
        return items
    return torch.cat([items, items.new_full((items.shape[0], k - items.shape[1]), PAD)], dim=1)


def _row_ranges(n: int, num_cols: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(num_cols, 1))
    return [slice(start, start + step) for start in range(0, n, step)]


def _row_chunks(rows: Tensor, num_cols: int) -> list[Tensor]:
    return list(torch.split(rows, max(1, CHUNK_ELEMENTS // max(num_cols, 1))))


def _tie_lists(
    scores: Tensor, items: Tensor, picked: Tensor, exclude: Tensor | None, k: int
) -> Tensor:
    """The exact lists of rows tied at the cut, from all their scores: the picks that rank above
    the ``k``-th pick's value (a prefix of each row's picks), then the lowest-index eligible items
    tied with it."""
    num_cols = scores.shape[1]
    tie = picked[:, k - 1 : k]
    eq = _ties(scores, tie)
    if exclude is not None:
        ex = exclude.long()
        # A padding entry is scattered onto item 0: item 0 is restored unless the row excludes it.
        first = eq[:, 0] & ~(ex == 0).any(dim=1)
        eq.scatter_(1, ex.clamp(min=0), False)
        eq[:, 0] = first
    # The j-th tied item is the first column where the running count of tied items reaches j.
    count = eq.cumsum(dim=1, dtype=torch.int32)
    rank = torch.arange(1, k + 1, dtype=torch.int32, device=scores.device)
    cols = torch.searchsorted(count, rank.expand(scores.shape[0], k).contiguous())
    tied_items = cols.masked_fill_(cols == num_cols, PAD)
    kept = _above(picked, tie).sum(dim=1, keepdim=True)
    j = torch.arange(k, device=scores.device)
    source = torch.where(j < kept, j, j - kept + k)
    return torch.cat([items, tied_items], dim=1).gather(1, source)


def _resolve_ties(
    scores: Tensor, rows: Tensor, items: Tensor, picked: Tensor, exclude: Tensor | None, k: int
) -> None:
    """Rows tied at the cut, exactly, copied in chunks of rows. Writes ``items[rows]``."""
    for sel in _row_chunks(rows, scores.shape[1]):
        ex = exclude.index_select(0, sel) if exclude is not None else None
        items[sel] = _tie_lists(scores.index_select(0, sel), items[sel], picked[sel], ex, k)


# --------------------------------------------------------------------------------------------------
# the CPU passes


def _topk_pass(
    scores: Tensor, k: int, width: int, exclude: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """One top-k pass of ``width`` candidates over ``scores``, then :func:`_pick`."""
    vals, idx = _topk_candidates(scores, width, reads=True)
    excluded = isin_rows(idx, exclude) if exclude is not None else None
    return _pick(vals, idx, excluded, k, complete=width == scores.shape[1])


def _topk_wide(
    scores: Tensor, k: int, exclude: Tensor, validate_args: bool, first_row: int, what: str
) -> Tensor:
    """One top-k of width ``k + h + 1``, enough for ``k + 1`` eligible candidates in every row."""
    num_cols = scores.shape[1]
    vals, idx = _topk_candidates(scores, min(k + exclude.shape[1] + 1, num_cols), reads=True)
    if validate_args:
        _check_no_nan(vals, first_row, what)
    # Only reached when a narrow pass found short rows, so k + 1 < C: k items per row.
    complete = idx.shape[1] == num_cols
    items, picked, _, tied = _pick(vals, idx, isin_rows(idx, exclude), k, complete)
    if tied is not None and bool(tied.any()):
        _resolve_ties(scores, tied.nonzero().squeeze(1), items, picked, exclude, k)
    return items


def _topk_narrow(
    scores: Tensor,
    k: int,
    exclude: Tensor | None,
    validate_args: bool,
    first_row: int,
    what: str,
) -> tuple[Tensor, int]:
    """Top-k lists from one top-k of width ``k + 1``; a wider pass for the short rows alone.

    Also returns the number of short rows (those whose exclusions reach into the candidates).
    """
    n, num_cols = scores.shape
    vals, idx = _topk_candidates(scores, min(k + 1, num_cols), reads=True)
    if validate_args:
        _check_no_nan(vals, first_row, what)
    complete = idx.shape[1] == num_cols
    items, picked, _, tied = _pick(vals, idx, None, k, complete)
    items, picked = _pad(items, k).contiguous(), picked.contiguous()
    short_rows = None
    if exclude is not None:
        # Rows with an excluded candidate (usually few) are picked again, on their own.
        rows = isin_rows(idx, exclude).any(dim=1).nonzero().squeeze(1)
        if rows.numel() > 0:
            ex = exclude[rows]
            items_r, picked_r, short_r, tied_r = _pick(
                vals[rows], idx[rows], isin_rows(idx[rows], ex), k, complete
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


# --------------------------------------------------------------------------------------------------
# the accelerator pass


def _topk_sync_free(
    scores: Tensor,
    k: int,
    exclude: Tensor | None,
    validate_args: bool,
    first_row: int,
    what: str,
) -> Tensor:
    """One top-k of width ``k + h + 1`` and the tie pass masked over every row: no value is read
    back to the host unless ``validate_args`` reads one anyway."""
    num_cols = scores.shape[1]
    width = min(k + (exclude.shape[1] if exclude is not None else 0) + 1, num_cols)
    vals, idx = _topk_candidates(scores, width, reads=False)
    if validate_args:
        _check_no_nan(vals, first_row, what)
    excluded = isin_rows(idx, exclude) if exclude is not None else None
    # At most h candidates are excluded, so no row is short: only ties can leave a row open.
    items, picked, _, tied = _pick(vals, idx, excluded, k, complete=width == num_cols)
    if tied is None or (validate_args and not bool(tied.any())):
        return _pad(items, k)
    blocks = []
    for rows in _row_ranges(scores.shape[0], num_cols):
        ex = exclude[rows] if exclude is not None else None
        exact = _tie_lists(scores[rows], items[rows], picked[rows], ex, k)
        blocks.append(torch.where(tied[rows].unsqueeze(1), exact, items[rows]))
    return torch.cat(blocks)


def _topk_items(
    scores: Tensor,
    k: int,
    exclude: Tensor | None,
    validate_args: bool,
    *,
    first_row: int = 0,
    what: str = _SCORES,
) -> Tensor:
    """:func:`topk_items` on checked arguments (the passes are described in the module doc).

    On the CPU with exclusions, the first rows are a probe: when most of them are short (the
    excluded items are among the best-scored ones, as a user's history often is), the other rows
    skip the narrow pass and go straight to the wide one, which then costs one top-k instead of
    two. ``first_row`` and ``what`` only name the scores in an error message.
    """
    n, num_cols = scores.shape
    if n == 0 or num_cols == 0:
        return torch.full((n, k), PAD, dtype=torch.long, device=scores.device)
    if exclude is not None and exclude.shape[1] == 0:
        exclude = None
    if not _reads_allowed(scores.device):
        return _topk_sync_free(scores, k, exclude, validate_args, first_row, what)
    if exclude is None or n <= _PROBE_ROWS:
        return _topk_narrow(scores, k, exclude, validate_args, first_row, what)[0]
    p = _PROBE_ROWS
    head, num_short = _topk_narrow(scores[:p], k, exclude[:p], validate_args, first_row, what)
    tail_row = first_row + p
    if 2 * num_short > p:
        tail = _topk_wide(scores[p:], k, exclude[p:], validate_args, tail_row, what)
    else:
        tail = _topk_narrow(scores[p:], k, exclude[p:], validate_args, tail_row, what)[0]
    return torch.cat([head, tail])


def topk_items(
    scores: Tensor, k: int, *, exclude: Tensor | None = None, validate_args: bool = True
) -> Tensor:
    """The ``k`` best eligible items of each row of a score matrix, best first.

    Items are ordered by score, higher first, ties broken by **lower item index first**; the items
    of ``exclude`` are never returned. Without validation a NaN score ranks above every number
    (the order of :func:`torch.topk`), NaN items among themselves by index. The result is the
    same on every device and thread count, and on accelerators it is made without reading any
    value back to the host when ``validate_args=False`` (see :mod:`focalrec._topk` for how this
    is done in one ``torch.topk`` of width ``k + 1`` on the CPU).

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
        >>> topk_items(torch.tensor([[0.0, 0.0, float("nan")]]), 2, validate_args=False)
        tensor([[2, 0]])
    """
    scores = _check_scores(scores, "scores")
    k = _check_k(k)
    if isinstance(exclude, Tensor):
        check_same_device(exclude, "exclude", scores, "scores")
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
# from embeddings


def _block_shape(n: int, c: int, chunk_size: tuple[int, int] | None) -> tuple[int, int]:
    """Rows and items of a block of scores: ``chunk_size`` when given, else at most
    :data:`CHUNK_ELEMENTS` scores spanning at least 4,096 items (or all of them)."""
    if chunk_size is not None:
        return chunk_size
    budget = CHUNK_ELEMENTS
    items = max(1, min(c, max(budget // max(n, 1), min(budget, _MIN_CHUNK_ITEMS))))
    return max(1, budget // items), items


def _merge(vals: Tensor, idx: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The best ``k`` of candidate lists ``(N, w >= k)`` with values and distinct global indices
    (``-1`` marks no item), in the order of the module: their values and indices."""
    vals, idx = _order_candidates(vals, idx)
    items, picked, _, _ = _pick(vals, idx, idx == PAD, k, complete=True)
    return picked, items


def _block_best(
    q: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    k: int,
    exclude: Tensor | None,
    start: int,
    validate_args: bool,
    first_row: int,
) -> tuple[Tensor, Tensor]:
    """The exact best ``k`` of one block of scores, ``q`` against items whose first is global item
    ``start``: their scores and global indices. The block is freed on return."""
    # F.linear is q @ e.T; for small row blocks it is much faster than the @ operator.
    block = F.linear(q, linear_weight.to(q.dtype))
    if linear_bias is not None:
        block += linear_bias.to(q.dtype)
    local_ex = None
    if exclude is not None:
        # The excluded items of this block, in its own indices; the others become padding.
        shifted = exclude - start
        outside = (shifted < 0) | (shifted >= block.shape[1]) | (exclude == PAD)
        local_ex = shifted.masked_fill_(outside, PAD)
    top = _topk_items(block, k, local_ex, validate_args, first_row=first_row, what=_FACTORED_SCORES)
    return block.gather(1, top.clamp(min=0)), torch.where(top == PAD, PAD, top + start)


def _local_best(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    k: int,
    exclude: Tensor | None,
    chunk_size: tuple[int, int] | None,
    offset: int,
    validate_args: bool,
) -> tuple[Tensor, Tensor]:
    """The best ``k`` items of each query among ``linear_weight``, whose first row is global
    item ``offset``: their scores and global indices ``(N, k)``, streamed over blocks."""
    n, c = input.shape[0], linear_weight.shape[0]
    dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    device = input.device
    rows, items = _block_shape(n, c, chunk_size)
    out_vals = [torch.empty(0, k, dtype=dtype, device=device)]
    out_idx = [torch.empty(0, k, dtype=torch.long, device=device)]
    for r0 in range(0, n, rows):
        q = input[r0 : r0 + rows].to(dtype)
        best_vals = torch.full((q.shape[0], k), float("-inf"), dtype=dtype, device=device)
        best_idx = torch.full((q.shape[0], k), PAD, dtype=torch.long, device=device)
        ex = exclude[r0 : r0 + rows] if exclude is not None else None
        for c0 in range(0, c, items):
            bias = linear_bias[c0 : c0 + items] if linear_bias is not None else None
            top_vals, top_idx = _block_best(
                q, linear_weight[c0 : c0 + items], bias, k, ex, offset + c0, validate_args, r0
            )
            best_vals, best_idx = _merge(
                torch.cat([best_vals, top_vals], dim=1), torch.cat([best_idx, top_idx], dim=1), k
            )
        out_vals.append(best_vals)
        out_idx.append(best_idx)
    return torch.cat(out_vals), torch.cat(out_idx)


def _shard_layout(
    input: Tensor,
    num_local: int,
    k: int,
    exclude: Tensor | None,
    item_offset: int | None,
    num_items: int | None,
    group: dist.ProcessGroup,
) -> tuple[int, int]:
    """This rank's first global item and the size of the catalogue, from one all-gather of every
    rank's sizes (which must agree on everything but the number of items)."""
    sizes = [num_local, input.shape[0], input.shape[1], k]
    sizes.append(exclude.shape[1] if exclude is not None else -1)
    sizes.append(-1 if item_offset is None else check_int(item_offset, "item_offset", minimum=0))
    table = gather_sizes(sizes, group, input.device)
    for col, what in (
        (1, "the number of rows of `input`"),
        (2, "the embedding size d"),
        (3, "`k`"),
        (4, "the width of `exclude` (-1: none)"),
    ):
        values = [row[col] for row in table]
        if len(set(values)) > 1:
            raise ValueError(
                f"{what} must be the same on every rank of `process_group`, got {values} by rank"
            )
    counts = [row[0] for row in table]
    check_offsets(counts, [None if row[5] < 0 else row[5] for row in table])
    return item_layout(num_local, item_offset, num_items, group, counts)


def _raise_together(
    error: ValueError | None, device: torch.device, group: dist.ProcessGroup
) -> None:
    """Raise on every rank when any rank rejected its inputs, so that none waits forever in the
    next collective."""
    flag = torch.full((1,), int(error is not None), dtype=torch.int64, device=device)
    flags = [torch.empty_like(flag) for _ in range(dist.get_world_size(group))]
    dist.all_gather(flags, flag, group=group)
    if error is not None:
        raise error
    failed = [rank for rank, f in enumerate(flags) if int(f)]
    if failed:
        raise ValueError(
            f"rank {failed[0]} of `process_group` rejected its inputs (its own error says why)"
        )


def _merge_shards(vals: Tensor, idx: Tensor, k: int, group: dist.ProcessGroup) -> Tensor:
    """Every rank's best ``k`` (values and global indices), all-gathered in one float64 tensor
    (exact for both) and merged in rank order: the same list on every rank."""
    mine = torch.cat([vals.to(torch.float64), idx.to(torch.float64)], dim=1)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, mine, group=group)
    all_vals = torch.cat([g[:, :k] for g in gathered], dim=1)
    all_idx = torch.cat([g[:, k:] for g in gathered], dim=1).to(torch.long)
    return _merge(all_vals, all_idx, k)[1]


def topk_items_from_embeddings(
    input: Tensor,
    linear_weight: Tensor,
    k: int,
    *,
    linear_bias: Tensor | None = None,
    exclude: Tensor | None = None,
    chunk_size: tuple[int, int] | None = None,
    validate_args: bool = True,
    item_offset: int | None = None,
    num_items: int | None = None,
    process_group: dist.ProcessGroup | None = None,
) -> Tensor:
    r"""The ``k`` best eligible items of each query under a factorized scorer, never forming all
    the scores.

    The scores are those of a linear output layer over the items,

    .. math:: s_{ij} = q_i \cdot e_j + b_j,

    formed one block of rows x items at a time; each block's exact best ``k`` (the order of
    :func:`topk_items`: higher first, ties by lower item index, NaN above every number, excluded
    items never) is merged into a running best ``k`` per row. The order being total, the best
    ``k`` of all items are among the best ``k`` of the blocks, so the list is **exactly**
    ``topk_items(input @ linear_weight.T + linear_bias, k, exclude=exclude)`` whenever every
    block's scores equal the corresponding entries of that full product. They do when every
    summation order is exact (integer-valued embeddings of moderate size, as in the tests). With
    other floats, a BLAS library may round a product over a subset of the items differently from
    the full product (it blocks the dot products differently); the list is then the exact list of
    the scores as the blocks computed them, each within float rounding of the full product's.

    Half-precision inputs are multiplied in float32 (float32 accumulation and scores), so the
    reference is ``input.float() @ linear_weight.float().T + linear_bias.float()``; float32 and
    float64 inputs stay in their dtype.

    **Memory.** A block holds ``chunk_size = (rows, items)`` scores; by default at most ``2**24``
    (64 MiB of float32), spanning ``max(2**24 // N, 4096)`` items (or all ``C``) over
    ``2**24 // items`` rows. Besides the inputs and the ``(N, k)`` result, the extra memory
    is one block of scores and the best ``k`` of its rows (for half-precision inputs, also
    float32 copies of the block's rows of ``input`` and items); only where rows of a block tie
    at its cut, the exact tie pass adds up to about 2.25 blocks' worth of bytes (a copy of those
    rows, a bool mask and an int32 running count). In all
    :math:`O(N k + \text{rows} \cdot \text{items})`, never :math:`O(N C)`.

    **Item-sharded over torch.distributed.** With ``process_group``, every rank of the group holds
    a contiguous slice of the items, in rank order: rank :math:`r` holds ``linear_weight`` and
    ``linear_bias`` of the global items :math:`[o_r, o_r + C_r)` with :math:`o_r = C_0 + \dots +
    C_{r-1}`, the sizes found by one all-gather (slices may be uneven or empty). ``input``,
    ``k`` and ``exclude`` (global item indices) must be the same on every rank. Each rank takes
    the best ``k`` of its slice, the ranks' lists are all-gathered (one ``(N, 2k)`` float64
    tensor per rank) and merged with the same order: every rank returns the list a single process
    holding all the items returns. When a rank rejects its inputs under ``validate_args``, every
    rank raises (one more all-gather of a flag), so that no rank waits forever.

    Args:
        input: floating ``(N, d)`` query (user) embeddings, the input of the output layer.
        linear_weight: ``(C, d)`` item embeddings (this rank's slice with ``process_group``), the
            dtype and device of ``input``.
        k: number of items per row, ``k >= 1``; may exceed ``C``.
        linear_bias: optional ``(C,)`` item bias (this rank's slice with ``process_group``).
        exclude: optional integer ``(N, h)`` index list (padded with ``-1``) of global item
            indices never to return.
        chunk_size: ``(rows, items)``: the most rows and items of one block of scores (see
            Memory), as in :func:`linear_sigmoid_focal_loss`; it changes only the memory and the
            speed, never the list (beyond the rounding noted above).
        validate_args: check the range of ``exclude`` and reject NaN scores (each reads values
            back from the device; on accelerators nothing else does).
        item_offset: the catalogue id of row 0 of ``linear_weight`` (returned ids are
            catalogue ids); by default 0, or with ``process_group`` the items of the lower
            ranks (an ``item_offset`` given there must equal it).
        num_items: the size of the catalogue, which ``exclude`` ids must lie below; by default
            ``item_offset + C``, or with ``process_group`` every rank's ``C`` added up. The
            three arguments describe an item shard as for :func:`linear_sigmoid_focal_loss`.
        process_group: shard the items over this group (for instance
            ``torch.distributed.group.WORLD``); ``None``: every item is here.

    Returns:
        An ``int64`` index list ``(N, k)`` of global item indices, best first; a row with fewer
        than ``k`` eligible items ends with ``-1``. It is a ranked list for :func:`map_at_k` and
        the other metrics.

    Example:
        >>> users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> items = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [2.0, 1.0]])
        >>> topk_items_from_embeddings(users, items, 2)  # scores [2, 1, 0, 2] and [0, 1, 3, 1]
        tensor([[0, 3],
                [2, 1]])
        >>> topk_items_from_embeddings(users, items, 2, exclude=torch.tensor([[0], [2]]))
        tensor([[3, 1],
                [1, 3]])
        >>> topk_items_from_embeddings(users, items, 2, chunk_size=(1, 1))  # a score at a time
        tensor([[0, 3],
                [2, 1]])
    """
    k = _check_k(k)
    check_linear_layer(input, linear_weight, linear_bias)
    chunk = check_chunk_size(chunk_size)
    if isinstance(exclude, Tensor):
        check_same_device(exclude, "exclude", input, "input")
    if exclude is not None:
        check_index_list(exclude, "exclude", num_rows=input.shape[0], validate_args=False)
        exclude = exclude.long()
    num_local = linear_weight.shape[0]
    group = check_process_group(process_group)
    if group is None:
        offset, num_items = item_layout(num_local, item_offset, num_items, None)
    else:
        offset, num_items = _shard_layout(
            input, num_local, k, exclude, item_offset, num_items, group
        )
    error: ValueError | None = None
    try:
        if exclude is not None and validate_args:
            check_index_list(exclude, "exclude", num_classes=num_items)
        vals, idx = _local_best(
            input, linear_weight, linear_bias, k, exclude, chunk, offset, validate_args
        )
    except ValueError as rejected:
        if group is None or not validate_args:
            raise
        error = rejected
        vals = torch.zeros(input.shape[0], k, device=input.device)
        idx = torch.full_like(vals, PAD, dtype=torch.long)
    if group is None:
        return idx
    if validate_args:
        _raise_together(error, input.device, group)
    return _merge_shards(vals, idx, k, group)
