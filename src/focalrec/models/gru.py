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

    def features(self, history: Tensor) -> Tensor:
        """The GRU's last state ``(N, H)`` (after dropout) for histories ``(N, L')``."""
        # The items first, padding after: the state after the last item is exact (the GRU is
        # causal), and the padding that follows it is never read.
        rows = items_to_one_side(self._rows(history), self.num_items, last=False)
        lengths = (rows != self.num_items).sum(dim=1)
        states, _ = self.gru(self.dropout(self.embedding(rows)))
        last = (lengths - 1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, states.shape[2])
        h = torch.where((lengths > 0).unsqueeze(1), states.gather(1, last).squeeze(1), 0.0)
        out: Tensor = self.dropout(h)
        return out
