"""A recurrent next-items recommender: a GRU reads a user's history in order.

:class:`SequenceGRU` has :class:`~focalrec.models.SequenceMLP`'s contract: a history ``(N, L')`` of
item ids left-padded with ``-1`` in, one logit per item ``(N, C)`` out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from focalrec.models._base import (
    SequenceRecommender,
    check_dropout,
    check_positive_int,
    items_to_one_side,
)

__all__ = ["SequenceGRU"]


class SequenceGRU(SequenceRecommender):
    r"""Embedding + GRU recommender: the items of a history read in order, one logit per item out.

    The :math:`n \le L` items :math:`x_1, \dots, x_n` of a history (oldest first; every ``-1``
    skipped) are embedded and read by a GRU of ``num_layers`` layers (Cho et al., 2014) from the
    zero state; its top layer's last state is the features :math:`h`, scored by the output layer:

    .. math::
        s_t = \mathrm{GRU}\big(\mathrm{drop}(e_{x_t}),\, s_{t-1}\big), \quad s_0 = 0, \qquad
        h = \mathrm{drop}(s_n), \qquad
        z_i = w_i^\top h + b_i

    An empty history (all ``-1``) has :math:`h = s_0 = 0`, so its logits are the output bias.
    Padding is skipped, not read: however many ``-1`` a history holds (to the left or anywhere),
    its logits are those of its items alone. Dropout (``drop``) acts on the embedded items,
    between stacked GRU layers and on the features.

    The output bias starts at the logit of the prior (:func:`focalrec.init_prior_bias_`),
    :math:`b_i = -\log\frac{1-\pi_i}{\pi_i}`, as in :class:`~focalrec.models.SequenceMLP`.
    Item metadata is not supported by this model (:class:`~focalrec.models.SequenceMLP` takes it).

    Args:
        num_items: number of items ``C`` (the vocabulary; ids in ``[0, C)``).
        history_length: ``L``, the most items of a history the model reads.
        embedding_dim: size of each item embedding.
        hidden_size: size ``H`` of the GRU's state, the features.
        num_layers: number of stacked GRU layers.
        dropout: dropout probability (see above).
        prior: the positive rate ``pi`` the output bias starts from: a float for every item or a
            tensor ``(C,)`` of per-item rates, all in ``(0, 1)``.

    Shape:
        - history: ``(N, L')`` integer, ``L' <= L``, ids in ``[0, C)`` or ``-1``, left-padded.
        - output: ``(N, C)`` logits.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = SequenceGRU(num_items=6, history_length=3, embedding_dim=4, hidden_size=8,
        ...                     prior=0.25).eval()
        >>> logits = model(torch.tensor([[4, 0, 5], [-1, -1, 2], [-1, -1, -1]]))
        >>> logits.shape
        torch.Size([3, 6])
        >>> torch.equal(model(torch.tensor([[2]])), logits[1:2])  # padding changes nothing
        True
        >>> torch.sigmoid(logits[2])  # no history: the prior
        tensor([0.2500, 0.2500, 0.2500, 0.2500, 0.2500, 0.2500], grad_fn=<SigmoidBackward0>)
    """

    def __init__(
        self,
        num_items: int,
        history_length: int,
        *,
        embedding_dim: int = 128,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.2,
        prior: float | Tensor = 0.01,
    ) -> None:
        super().__init__(num_items, history_length, embedding_dim)
        check_positive_int(hidden_size, "hidden_size")
        check_positive_int(num_layers, "num_layers")
        check_dropout(dropout)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self._init_output(hidden_size, prior)

    def _states(self, rows: Tensor) -> Tensor:
        """The top layer's state after each column of ``rows`` ``(N, W)``, before dropout.

        An item column has the state after the items up to it; a padding column the state of the
        latest item before it, zero before the first item.
        """
        if rows.shape[1] == 0:  # nothing to read (torch's GRU refuses an empty sequence)
            return self.embedding.weight.new_zeros(rows.shape[0], 0, self.gru.hidden_size)
        # The items first, padding after: the GRU (causal) reads only items, and its state after
        # the r-th item is exact whatever follows it.
        packed = items_to_one_side(rows, self.num_items, last=False)
        states, _ = self.gru(self.dropout(self.embedding(packed)))
        # Column j's latest item is the r-th item read, r = (items up to column j) - 1.
        latest = (rows != self.num_items).cumsum(dim=1) - 1
        index = latest.clamp_min(0).unsqueeze(2).expand(-1, -1, states.shape[2])
        return torch.where((latest >= 0).unsqueeze(2), states.gather(1, index), 0.0)

    def features(self, history: Tensor) -> Tensor:
        """The GRU's last state ``(N, H)`` (after dropout) for histories ``(N, L')``."""
        out: Tensor = self.dropout(self._states(self._rows(history))[:, -1])
        return out

    def sequence_features(self, history: Tensor) -> Tensor:
        r"""The GRU's state after each column, ``(N, L', H)`` (after dropout), in one pass.

        Column ``j`` is ``features(history[:, : j + 1])``: the state :math:`s_r` after the
        history's items up to column ``j`` (its :math:`r` items, every ``-1`` skipped) and
        nothing after it. A padding column has the state of the latest item before it, and
        the empty-history state :math:`s_0 = 0` before the first item. So the last column is
        ``features(history)``, and more left padding adds zero columns in front of the same
        states. Train every position at once with :func:`~focalrec.models.next_item_targets`.

        Example:
            >>> _ = torch.manual_seed(0)
            >>> model = SequenceGRU(num_items=6, history_length=4, embedding_dim=4,
            ...                     hidden_size=3).eval()
            >>> history = torch.tensor([[-1, 4, 0, 5]])
            >>> states = model.sequence_features(history)
            >>> states.shape
            torch.Size([1, 4, 3])
            >>> states[0, 0]  # padding before the first item: the empty history's state
            tensor([0., 0., 0.], grad_fn=<SelectBackward0>)
            >>> torch.allclose(states[:, 2], model.features(history[:, :3]))
            True
            >>> torch.allclose(states[:, -1], model.features(history))
            True
        """
        out: Tensor = self.dropout(self._states(self._columns(history)))
        return out
