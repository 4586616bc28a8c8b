"""Two baselines for next-items recommendation: item popularity and item-to-item transitions.

Both read training sequences and users' histories as index lists (integer tensors padded with
``-1``) and return a score matrix ``(N, C)`` (higher is better) for the ranking functions of
focalrec, which exclude each user's own history::

    scores = transition_scores(train_sequences, histories, num_items)
    top3 = focalrec.topk_items(scores, 3, exclude=histories)

Neither builds a ``(C, C)`` matrix: transitions are kept as a sorted list of distinct item pairs,
so memory grows with the number of distinct pairs seen, not with the square of the catalogue.
"""

from __future__ import annotations

import torch
from torch import Tensor

import focalrec

__all__ = ["item_popularity", "popularity_scores", "transition_scores", "validation_maps"]


def _check_sequences(x: object, name: str, num_items: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(
            f"`{name}` must be an integer tensor of item ids padded with -1, got dtype {x.dtype}"
        )
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape (N, length), got shape {tuple(x.shape)}")
    if x.numel() > 0:
        lo, hi = int(x.min()), int(x.max())
        if lo < -1 or hi >= num_items:
            raise ValueError(
                f"`{name}` holds ids in [{lo}, {hi}]; expected ids in [0, {num_items}) or -1"
            )
    return x.long()


def item_popularity(sequences: Tensor, num_items: int) -> Tensor:
    """How many times each item occurs in ``sequences`` (padding ignored), ``float32 (C,)``.

    Example:
        >>> item_popularity(torch.tensor([[0, 2, 2], [2, 1, -1]]), 4)
        tensor([1., 1., 3., 0.])
    """
    seq = _check_sequences(sequences, "sequences", num_items)
    return torch.bincount(seq[seq >= 0], minlength=num_items).float()


def popularity_scores(sequences: Tensor, num_items: int, num_rows: int) -> Tensor:
    """The popularity baseline: every row scores item ``i`` by its count in ``sequences``.

    Returns an ``(num_rows, C)`` view of one ``(C,)`` vector (no copy per row).

    Example:
        >>> popularity_scores(torch.tensor([[0, 2, 2], [2, 1, -1]]), 4, num_rows=2)
        tensor([[1., 1., 3., 0.],
                [1., 1., 3., 0.]])
    """
    return item_popularity(sequences, num_items).expand(num_rows, num_items)


def _transition_table(sequences: Tensor, num_items: int, max_gap: int) -> tuple[Tensor, ...]:
    """Distinct pairs ``a -> b`` (``b`` at 1..max_gap positions after ``a``), sorted by ``a``.

    Returns ``(row_start, targets, counts)``: the pairs leaving item ``a`` are
    ``targets[row_start[a]:row_start[a + 1]]`` with their counts.
    """
    length = sequences.shape[1]
    src = torch.cat([sequences[:, : length - g].reshape(-1) for g in range(1, max_gap + 1)])
    dst = torch.cat([sequences[:, g:].reshape(-1) for g in range(1, max_gap + 1)])
    keep = (src >= 0) & (dst >= 0)
    pair_id, counts = torch.unique(src[keep] * num_items + dst[keep], return_counts=True)
    sources = pair_id // num_items  # sorted, since pair ids are
    row_start = torch.zeros(num_items + 1, dtype=torch.long)
    row_start[1:] = torch.bincount(sources, minlength=num_items).cumsum(0)
    return row_start, pair_id % num_items, counts.float()


def transition_scores(
    sequences: Tensor,
    histories: Tensor,
    num_items: int,
    *,
    window: int = 3,
    decay: float = 1.0,
    max_gap: int = 1,
    popularity_weight: float = 1e-3,
) -> Tensor:
    r"""The item-transition baseline: score items by how often they follow a user's last items.

    With :math:`n(a \to b)` the number of times item ``b`` occurs from 1 to ``max_gap``
    positions after item ``a`` in the training ``sequences``, and :math:`h_1, \dots, h_w` the last
    ``w = window`` valid items of a history (:math:`h_w` the most recent), the score of item
    ``b`` is

    .. math::
        s(b) = \sum_{j=1}^{w} \mathrm{decay}^{\,w-j}\, n(h_j \to b)
               \;+\; \mathrm{popularity\_weight} \cdot \frac{\mathrm{pop}(b)}{\max \mathrm{pop}}

    The small popularity term only breaks ties, so a user whose recent items were never followed
    by anything still gets the most popular items.

    Args:
        sequences: training sequences ``(U, T)``, item ids in order, padded with ``-1``.
        histories: histories to score ``(N, L)``, left-padded with ``-1`` (most recent last).
        num_items: number of items ``C``.
        window: how many of the most recent valid items of each history are used.
        decay: weight ratio between an item and the one after it (1 = equal weights).
        max_gap: count ``b`` as following ``a`` when it comes at most this many positions later.
        popularity_weight: weight of the popularity tie-breaker (0 turns it off).

    Returns:
        ``float32 (N, C)`` scores.

    Example:
        >>> train = torch.tensor([[0, 1, 2], [0, 1, 3], [2, 3, -1]])
        >>> transition_scores(train, torch.tensor([[-1, 0], [2, 1]]), 4, popularity_weight=0.0)
        tensor([[0., 2., 0., 0.],
                [0., 0., 1., 2.]])
    """
    seq = _check_sequences(sequences, "sequences", num_items)
    hist = _check_sequences(histories, "histories", num_items)
    for name, value in (("window", window), ("max_gap", max_gap)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    if not decay > 0:
        raise ValueError(f"`decay` must be positive, got {decay!r}")
    if not popularity_weight >= 0:
        raise ValueError(f"`popularity_weight` must be non-negative, got {popularity_weight!r}")

    n = hist.shape[0]
    # Recency rank of each valid history entry: 0 for the most recent, 1 for the one before, ...
    valid = hist >= 0
    rank = valid.flip(1).cumsum(1).flip(1) - 1
    use = valid & (rank < window)
    rows = torch.arange(n).unsqueeze(1).expand_as(hist)[use]
    items = hist[use]
    weights = decay ** rank[use].double()

    row_start, targets, counts = _transition_table(seq, num_items, max_gap)
    # Expand each (row, item) query into the pairs leaving that item, without a Python loop.
    begin, lengths = row_start[items], row_start[items + 1] - row_start[items]
    query = torch.repeat_interleave(torch.arange(items.numel()), lengths)
    offset = torch.arange(query.numel()) - torch.repeat_interleave(
        lengths.cumsum(0) - lengths, lengths
    )
    pair = begin[query] + offset

    scores = torch.zeros(n, num_items, dtype=torch.float64)
    scores.index_put_((rows[query], targets[pair]), weights[query] * counts[pair], accumulate=True)
    if popularity_weight > 0:
        pop = item_popularity(seq, num_items).double()
        scores += popularity_weight * pop / pop.max().clamp_min(1)
    return scores.float()


def validation_maps(
    sequences: Tensor, history: Tensor, target: Tensor, num_items: int, k: int
) -> dict[str, float]:
    """mAP@k of both baselines, trained on ``sequences``, for users with ``history`` whose next
    items are ``target`` (index lists); each user's own history is excluded."""
    scores = {
        "popularity": popularity_scores(sequences, num_items, len(history)),
        "transition": transition_scores(sequences, history, num_items),
    }
    top = {name: focalrec.topk_items(s, k, exclude=history) for name, s in scores.items()}
    return {name: float(focalrec.map_at_k(t, target, k)) for name, t in top.items()}
