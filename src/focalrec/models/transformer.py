"""A self-attentive next-items recommender (SASRec-style): causal self-attention over a history.

:class:`SequenceTransformer` has :class:`~focalrec.models.SequenceMLP`'s contract: a history
``(N, L')`` of item ids left-padded with ``-1`` in, one logit per item ``(N, C)`` out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from focalrec.models._base import (
    SequenceRecommender,
    check_dropout,
    check_positive_int,
)
from focalrec.models._dropout import Dropout

__all__ = ["SequenceTransformer"]


class _CausalBlock(nn.Module):
    """One pre-LN block: masked multi-head self-attention, then a GELU feed-forward layer."""

    def __init__(self, dim: int, num_heads: int, feedforward_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attention_dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.project = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.feedforward = nn.Sequential(
            nn.Linear(dim, feedforward_dim),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(feedforward_dim, dim),
        )
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """``x`` ``(N, L, D)``; ``allowed`` ``(N, L, L)``: query ``t`` may attend to key ``u``."""
        n, length, dim = x.shape
        q, k, v = (
            self.qkv(self.norm1(x))
            .view(n, length, 3, self.num_heads, dim // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        attended = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=allowed.unsqueeze(1),
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        x = x + self.dropout(self.project(attended.transpose(1, 2).reshape(n, length, dim)))
        out: Tensor = x + self.dropout(self.feedforward(self.norm2(x)))
        return out


class SequenceTransformer(SequenceRecommender):
    r"""SASRec-style recommender: causal self-attention over a history, one logit per item out.

    The :math:`n \le L` items :math:`x_1, \dots, x_n` of a history (oldest first; every ``-1``
    skipped) are embedded, item :math:`t` plus a learned embedding :math:`p_t` of its position
    :math:`t` counted from the oldest item read, so that an item's position never depends on the
    items after it. Blocks of pre-LN causal self-attention (Kang & McAuley, 2018; Vaswani et al.,
    2017) follow; the most recent item's state, normalized, is the features :math:`h`:

    .. math::
        x^{(0)}_t &= \mathrm{drop}(e_{x_t} + p_t), \\
        y_t &= x^{(\ell)}_t + \mathrm{drop}\big(\mathrm{MHA}(\mathrm{LN}(x^{(\ell)}))_t\big),
        \qquad x^{(\ell+1)}_t = y_t + \mathrm{drop}\big(\mathrm{FFN}(\mathrm{LN}(y))_t\big), \\
        h &= \mathrm{LN}\big(x^{(B)}_n\big), \qquad z_i = w_i^\top h + b_i

    where item :math:`t` attends to the items :math:`u \le t`,
    :math:`\mathrm{FFN}(y) = W_2\,\mathrm{drop}(\mathrm{GELU}(W_1 y))` and
    :math:`\mathrm{MHA}` is multi-head scaled dot-product attention (with dropout on its weights).
    Padding is never attended to and takes no position, so however many ``-1`` a history holds,
    its logits are those of its items alone; the state at every item is causal, which
    :meth:`sequence_features` returns in one pass. An empty history (all
    ``-1``) has :math:`h = 0`, so its logits are the output bias.

    The output bias starts at the logit of the prior (:func:`focalrec.init_prior_bias_`),
    :math:`b_i = -\log\frac{1-\pi_i}{\pi_i}`, as in :class:`~focalrec.models.SequenceMLP`.
    Item metadata is not supported by this model (:class:`~focalrec.models.SequenceMLP` takes it).

    Args:
        num_items: number of items ``C`` (the vocabulary; ids in ``[0, C)``).
        history_length: ``L``, the most items of a history the model reads (and the number of
            position embeddings).
        embedding_dim: size ``D`` of the item and position embeddings, the blocks' width and the
            size of the features.
        num_blocks: number of self-attention blocks ``B``.
        num_heads: number of attention heads; must divide ``embedding_dim``.
        feedforward_dim: width of each block's feed-forward layer (default ``4 * embedding_dim``).
        dropout: dropout probability (see above).
        prior: the positive rate ``pi`` the output bias starts from: a float for every item or a
            tensor ``(C,)`` of per-item rates, all in ``(0, 1)``.

    Shape:
        - history: ``(N, L')`` integer, ``L' <= L``, ids in ``[0, C)`` or ``-1``, left-padded.
        - output: ``(N, C)`` logits.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = SequenceTransformer(num_items=6, history_length=3, embedding_dim=8,
        ...                             num_heads=2, prior=0.25).eval()
        >>> logits = model(torch.tensor([[4, 0, 5], [-1, 3, 2], [-1, -1, -1]]))
        >>> logits.shape
        torch.Size([3, 6])
        >>> torch.allclose(model(torch.tensor([[3, 2]])), logits[1:2])  # padding changes nothing
        True
        >>> torch.sigmoid(logits[2])  # no history: the prior
        tensor([0.2500, 0.2500, 0.2500, 0.2500, 0.2500, 0.2500], grad_fn=<SigmoidBackward0>)
    """

    def __init__(
        self,
        num_items: int,
        history_length: int,
        *,
        embedding_dim: int = 64,
        num_blocks: int = 2,
        num_heads: int = 2,
        feedforward_dim: int | None = None,
        dropout: float = 0.2,
        prior: float | Tensor = 0.01,
    ) -> None:
        super().__init__(num_items, history_length, embedding_dim)
        check_positive_int(num_blocks, "num_blocks")
        check_positive_int(num_heads, "num_heads")
        if embedding_dim % num_heads:
            raise ValueError(
                f"`num_heads` must divide embedding_dim={embedding_dim}, got {num_heads!r}"
            )
        if feedforward_dim is None:
            feedforward_dim = 4 * embedding_dim
        check_positive_int(feedforward_dim, "feedforward_dim")
        check_dropout(dropout)
        self.position = nn.Embedding(history_length, embedding_dim)
        self.dropout = Dropout(dropout)
        self.blocks = nn.ModuleList(
            _CausalBlock(embedding_dim, num_heads, feedforward_dim, dropout)
            for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(embedding_dim)
        self._init_output(embedding_dim, prior)

    def _states(self, rows: Tensor) -> Tensor:
        """The normalized state after each column of ``rows`` ``(N, W)``.

        An item column has the state after the items up to it; a padding column the state of the
        latest item before it, zero before the first item.
        """
        is_item = rows != self.num_items
        # Each item's position is its rank among the history's items (the oldest is 0): it does
        # not depend on the padding nor on the items that come after it.
        count = is_item.cumsum(dim=1)
        x = self.dropout(self.embedding(rows) + self.position((count - 1).clamp_min(0)))
        length = rows.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=rows.device).tril()
        # A query attends to the items at or before it, and to itself: a padding position (whose
        # state is replaced below) then still has a finite state.
        itself = torch.eye(length, dtype=torch.bool, device=rows.device)
        allowed = causal & (is_item.unsqueeze(1) | itself)
        for block in self.blocks:
            x = block(x, allowed)
        states = self.norm(x)
        columns = torch.arange(length, device=rows.device)
        latest = torch.where(is_item, columns, -1).cummax(dim=1).values
        index = latest.clamp_min(0).unsqueeze(2).expand(-1, -1, states.shape[2])
        return torch.where((latest >= 0).unsqueeze(2), states.gather(1, index), 0.0)

    def features(self, history: Tensor) -> Tensor:
        """The most recent item's normalized state ``(N, D)`` for histories ``(N, L')``."""
        return self._states(self._rows(history))[:, -1]

    def sequence_features(self, history: Tensor) -> Tensor:
        r"""The normalized state after each column, ``(N, L', D)``, in one causal pass.

        Column ``j`` is ``features(history[:, : j + 1])``: the state :math:`\mathrm{LN}(x^{(B)})`
        at the history's latest item up to column ``j``, which attends to that item and the
        items before it and to nothing after it (positions are ranks from the oldest item, so
        they do not depend on later items either). A padding column has the state of the
        latest item before it, and the empty history's state, zero, before the first item. So
        the last column is ``features(history)``, and more left padding adds zero columns in
        front of the same states. Train every position at once with
        :func:`~focalrec.models.next_item_targets`.

        Example:
            >>> _ = torch.manual_seed(0)
            >>> model = SequenceTransformer(num_items=6, history_length=4, embedding_dim=4,
            ...                             num_heads=1).eval()
            >>> history = torch.tensor([[-1, 4, 0, 5]])
            >>> states = model.sequence_features(history)
            >>> states.shape
            torch.Size([1, 4, 4])
            >>> states[0, 0]  # padding before the first item: the empty history's state
            tensor([0., 0., 0., 0.], grad_fn=<SelectBackward0>)
            >>> torch.allclose(states[:, 2], model.features(history[:, :3]), atol=1e-6)
            True
            >>> torch.allclose(states[:, -1], model.features(history), atol=1e-6)
            True
        """
        return self._states(self._columns(history))
