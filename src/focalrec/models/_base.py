r"""What every sequence recommender of :mod:`focalrec.models` shares.

A history is an index list ``(N, L')`` of item ids, left-padded with ``-1`` (the most recent item in
the last column). Every model reads it the same way and scores the items the same way:

.. math::
    h = f_\theta\big(e_{x_1}, \dots, e_{x_L}\big) \in \mathbb{R}^H, \qquad
    z = W h + b \in \mathbb{R}^C, \qquad
    b_i = \log\frac{\pi_i}{1 - \pi_i}

where :math:`e_j` is row :math:`j` of the item table ``embedding`` (row :math:`C`, the padding row,
is zero and never updated), :math:`f_\theta` is the model's own part (:meth:`features`) and
:math:`(W, b)` is the output layer ``output``, whose bias starts at the logit of the prior
:math:`\pi` (:func:`focalrec.init_prior_bias_`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from focalrec._indices import PAD, check_index_list
from focalrec.priors import init_prior_bias_

__all__ = ["SequenceRecommender"]


def check_positive_int(value: object, name: str) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is an int >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")


def check_dropout(value: object) -> None:
    """Raise a ``ValueError`` unless ``value`` is a dropout probability in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"`dropout` must lie in [0, 1), got {value!r}")


def items_to_one_side(index: Tensor, pad: int, *, last: bool) -> Tensor:
    """Move the items of each row (entries ``!= pad``) to its end or start, keeping their order.

    Example:
        >>> index = torch.tensor([[9, 4, 9, 5], [9, 9, 9, 9]])
        >>> items_to_one_side(index, 9, last=True)
        tensor([[9, 9, 4, 5],
                [9, 9, 9, 9]])
        >>> items_to_one_side(index, 9, last=False)
        tensor([[4, 5, 9, 9],
                [9, 9, 9, 9]])
    """
    is_item = index != pad
    order = torch.argsort((is_item if last else ~is_item).to(torch.uint8), dim=1, stable=True)
    return index.gather(1, order)


class SequenceRecommender(nn.Module, ABC):
    r"""Base of the sequence recommenders: a history ``(N, L')`` in, one logit per item out.

    A subclass computes the features :math:`h` ``(N, H)`` of its histories (:meth:`features`);
    this class holds what every model shares: the item table ``embedding`` (an
    :class:`torch.nn.Embedding` ``(C + 1, D)`` whose last row is the zero padding row), the
    reading of histories (validated, left-padded to ``L``, ``-1`` mapped to the padding row) and
    the output layer ``output`` (an :class:`torch.nn.Linear` ``(C, H)`` whose bias starts at the
    logit of the prior), so that

    .. math::
        z = W h + b, \qquad \text{i.e.}\quad
        \texttt{model(history)} = \texttt{model.output(model.features(history))}.

    A fused output-layer loss takes :meth:`features`, :meth:`output_weight` and
    ``output.bias`` instead of the logits.
    """

    output: nn.Linear

    def __init__(self, num_items: int, history_length: int, embedding_dim: int) -> None:
        super().__init__()
        check_positive_int(num_items, "num_items")
        check_positive_int(history_length, "history_length")
        check_positive_int(embedding_dim, "embedding_dim")
        self.num_items = num_items
        self.history_length = history_length
        # Row C of the table is the padding row: always zero, never updated.
        self.embedding = nn.Embedding(num_items + 1, embedding_dim, padding_idx=num_items)

    def _init_output(self, width: int, prior: float | Tensor) -> None:
        """Create ``output``, ``Linear(width, C)``, with its bias at the logit of ``prior``."""
        self.output = nn.Linear(width, self.num_items)
        init_prior_bias_(self.output, prior)

    def _columns(self, history: Tensor) -> Tensor:
        """Rows of ``embedding`` for ``history``: ``(N, L')`` int64, as given, ``-1`` -> ``C``."""
        check_index_list(history, "history", num_classes=self.num_items)
        if history.shape[1] > self.history_length:
            raise ValueError(
                f"`history` must have at most history_length={self.history_length} columns "
                f"(the most recent items, left-padded with -1), got shape {tuple(history.shape)}; "
                f"pass history[:, -{self.history_length}:]"
            )
        return torch.where(history == PAD, self.num_items, history).long()

    def _rows(self, history: Tensor) -> Tensor:
        """Rows of ``embedding`` for ``history``: ``(N, L)`` int64, left-padded, ``-1`` -> ``C``."""
        rows = self._columns(history)
        width = rows.shape[1]
        if width < self.history_length:
            rows = nn.functional.pad(rows, (self.history_length - width, 0), value=self.num_items)
        return rows

    @abstractmethod
    def features(self, history: Tensor) -> Tensor:
        """The features ``(N, H)`` of histories ``(N, L')`` left-padded with ``-1``."""

    def sequence_features(self, history: Tensor) -> Tensor:
        """One state per position, ``(N, L', H)``, for histories ``(N, L')``: column ``j`` is
        ``features(history[:, : j + 1])``, the state after the items up to column ``j``.

        Only the order-aware models (:class:`~focalrec.models.SequenceGRU`,
        :class:`~focalrec.models.SequenceTransformer`) compute them, in one causal pass; this
        default raises.

        Raises:
            NotImplementedError: The model has no per-position states (the history is valid;
                the model lacks the capability).
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no per-position states: it reads a fixed window of "
            f"{self.history_length} columns at once, not a sequence in order; use SequenceGRU or "
            "SequenceTransformer, or give each position its own window through features()"
        )

    def output_weight(self) -> Tensor:
        """The weight ``(C, H)`` that scores the features: ``output.weight`` here."""
        return self.output.weight

    def forward(self, history: Tensor) -> Tensor:
        """Logits ``(N, C)`` for histories ``(N, L')`` left-padded with ``-1``."""
        logits: Tensor = self.output(self.features(history))
        return logits

    def extra_repr(self) -> str:
        return f"num_items={self.num_items}, history_length={self.history_length}"
