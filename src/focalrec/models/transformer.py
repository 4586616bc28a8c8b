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
    items_to_one_side,
)

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
            nn.Dropout(dropout),
            nn.Linear(feedforward_dim, dim),
        )
        self.dropout = nn.Dropout(dropout)

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

    The items of a history (every ``-1`` skipped) are placed in the last columns of ``L``
    positions, so that the most recent item always takes position ``L``; position ``t`` holds
    the item embedding plus a learned position embedding :math:`p_t`. Blocks of pre-LN causal
    self-attention (Kang & McAuley, 2018; Vaswani et al., 2017) follow; the last position's state,
    normalized, is the features :math:`h`:

    .. math::
        x^{(0)}_t &= \mathrm{drop}(e_{x_t} + p_t), \\
        y_t &= x^{(\ell)}_t + \mathrm{drop}\big(\mathrm{MHA}(\mathrm{LN}(x^{(\ell)}))_t\big),
        \qquad x^{(\ell+1)}_t = y_t + \mathrm{drop}\big(\mathrm{FFN}(\mathrm{LN}(y))_t\big), \\
        h &= \mathrm{LN}\big(x^{(B)}_L\big), \qquad z_i = w_i^\top h + b_i

    where position :math:`t` attends to the positions :math:`u \le t` that hold an item (and to
    itself), :math:`\mathrm{FFN}(y) = W_2\,\mathrm{drop}(\mathrm{GELU}(W_1 y))` and
    :math:`\mathrm{MHA}` is multi-head scaled dot-product attention (with dropout on its weights).
    Padding is never attended to and positions count back from the most recent item, so however
    many ``-1`` a history holds, its logits are those of its items alone. An empty history (all
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
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            _CausalBlock(embedding_dim, num_heads, feedforward_dim, dropout)
            for _ in range(num_blocks)
        )
        self.norm = nn.LayerNorm(embedding_dim)
        self._init_output(embedding_dim, prior)

    def features(self, history: Tensor) -> Tensor:
        """The last position's normalized state ``(N, D)`` for histories ``(N, L')``."""
        # The items last, padding first: the most recent item always takes position L.
        rows = items_to_one_side(self._rows(history), self.num_items, last=True)
        is_item = rows != self.num_items
        x = self.dropout(self.embedding(rows) + self.position.weight)
        length = rows.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=rows.device).tril()
        # A query attends to the items at or before it, and to itself: a padding position (whose
        # state is never read) then still has a finite state.
        itself = torch.eye(length, dtype=torch.bool, device=rows.device)
        allowed = causal & (is_item.unsqueeze(1) | itself)
        for block in self.blocks:
            x = block(x, allowed)
        h: Tensor = torch.where(is_item[:, -1:], self.norm(x[:, -1]), 0.0)
        return h
