r"""Per-position training data: every position of a sequence as a history and its next items.

A sequence model with per-position states (:meth:`~focalrec.models.SequenceGRU.sequence_features`)
learns from every step of a sequence in one pass: the state after item :math:`t` predicts the
items that follow it. :func:`next_item_targets` cuts left-padded sequences into the model's input
and, per position, the index list of the next ``horizon`` items; the states of the positions
that have a target go, as rows, straight into the fused output layer
(:func:`focalrec.linear_sigmoid_focal_loss`), so that no ``(N L', C)`` logits are formed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from focalrec._indices import PAD, check_index_list
from focalrec.models._base import check_positive_int, items_to_one_side

__all__ = ["NextItemTargets", "next_item_targets"]


class NextItemTargets(NamedTuple):
    """Every position of a batch of sequences, as :func:`next_item_targets` returns it."""

    history: Tensor
    """``(N, L - 1)``: the model's input, the sequences without their last column."""
    target: Tensor
    """``(N, L - 1, horizon)``: the next ``horizon`` items after each position, padded with -1."""
    mask: Tensor
    """``(N, L - 1)`` bool: the positions that hold an item, which all have a target."""


def next_item_targets(sequences: Tensor, horizon: int = 1) -> NextItemTargets:
    r"""Per-position inputs and targets of left-padded sequences: position ``j`` predicts the
    ``horizon`` items that follow it.

    A row of ``sequences`` holds a user's items oldest first, left-padded with ``-1`` (a ``-1``
    between items is skipped: the items are first moved, in order, to the end of the row). With
    :math:`x_1, \dots, x_n` the items of a row, placed in its last :math:`n` columns,

    .. math::

        \texttt{history}_{j} = \texttt{sequences}_{j}, \qquad
        \texttt{target}_{j,k} = \begin{cases}
            \texttt{sequences}_{j+1+k} & \text{column } j \text{ holds an item and } j+1+k < L, \\
            -1 & \text{otherwise,}
        \end{cases}

    for :math:`0 \le j < L - 1` and :math:`0 \le k < \texttt{horizon}`: the state after column
    ``j`` of ``history`` (:meth:`~focalrec.models.SequenceGRU.sequence_features`) is scored
    against the next ``horizon`` items of the sequence, fewer where the sequence ends, and a
    padding position gets no target. ``mask`` marks the positions with a target (those that hold
    an item; each is followed by at least one item). Repeated items in a target row count once,
    as everywhere in focalrec.

    Train on every position by taking the rows of the positions in ``mask``: ``states[mask]``
    ``(M, D)`` and ``target[mask]`` ``(M, horizon)`` go into
    :func:`focalrec.linear_sigmoid_focal_loss` (or :class:`focalrec.LinearFocalLoss`) as they
    are. This equals one window per position (``features(history[:, : j + 1])`` with the target
    row ``j``) in value and gradient, and forms no ``(M, C)`` tensor. Equivalently, keep all
    ``N (L - 1)`` rows and pass ``weight=mask.reshape(-1, 1)``: a masked row adds nothing to the
    loss nor to the divisor of ``"mean"``.

    Args:
        sequences: ``(N, L)`` integer item ids ``>= 0``, left-padded with ``-1``, oldest first.
        horizon: how many following items each position predicts, an int ``>= 1``.

    Returns:
        :class:`NextItemTargets` ``(history, target, mask)``, int64 index lists and a bool mask.

    Raises:
        TypeError: If ``sequences`` is not an integer tensor.
        ValueError: If ``sequences`` is not 2-D or holds a value below ``-1``, or ``horizon`` is
            not a positive int.

    Example:
        >>> import focalrec
        >>> from focalrec.models import SequenceGRU, next_item_targets
        >>> sequences = torch.tensor([[-1, -1, 3, 5, 2], [4, 1, 0, 3, 3]])
        >>> history, target, mask = next_item_targets(sequences, horizon=2)
        >>> history
        tensor([[-1, -1,  3,  5],
                [ 4,  1,  0,  3]])
        >>> target[0]
        tensor([[-1, -1],
                [-1, -1],
                [ 5,  2],
                [ 2, -1]])
        >>> mask
        tensor([[False, False,  True,  True],
                [ True,  True,  True,  True]])
        >>> _ = torch.manual_seed(0)
        >>> model = SequenceGRU(num_items=6, history_length=4, embedding_dim=4, hidden_size=8)
        >>> states = model.sequence_features(history)  # (2, 4, 8): one state per position
        >>> loss = focalrec.linear_sigmoid_focal_loss(
        ...     states[mask], model.output.weight, target[mask], linear_bias=model.output.bias
        ... )  # 6 rows, their index-list targets; no (6, 6) logits formed
        >>> loss.backward()
    """
    check_index_list(sequences, "sequences")
    check_positive_int(horizon, "horizon")
    if sequences.numel() > 0 and int(sequences.min()) < PAD:
        raise ValueError(
            f"`sequences` must hold item ids >= 0 or -1 for padding, got minimum "
            f"{int(sequences.min())}"
        )
    n, length = sequences.shape
    packed = items_to_one_side(sequences.long(), PAD, last=True)
    history = packed[:, :-1] if length > 0 else packed
    # Each position's next `horizon` columns: the sequence padded with -1 past its end.
    after = nn.functional.pad(packed[:, 1:], (0, horizon - 1), value=PAD)
    target = (
        after.unfold(1, horizon, 1) if after.shape[1] >= horizon else after.new_empty(n, 0, horizon)
    )
    mask = history != PAD
    target = torch.where(mask.unsqueeze(2), target, PAD)
    return NextItemTargets(history, target.contiguous(), mask)
