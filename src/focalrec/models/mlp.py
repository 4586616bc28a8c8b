"""A next-items recommender over the last ``L`` items of a user's history.

:class:`SequenceMLP` reads a history as an index list ``(N, L)`` of item ids, left-padded with
``-1`` (the most recent item in the last column), and returns one logit per item, ``(N, C)``,
ready for :func:`focalrec.sigmoid_focal_loss` with sparse targets and for the ranking metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from focalrec.models._base import SequenceRecommender, check_dropout, check_positive_int
from focalrec.models._metadata import ItemMetadata, check_item_table

__all__ = ["SequenceMLP"]


class SequenceMLP(SequenceRecommender):
    r"""Embedding + MLP recommender: the last ``L`` items of a history in, one logit per item out.

    Each of the ``L`` history positions is embedded (``embedding_dim``), the ``L`` vectors are
    concatenated and passed through ``Linear -> ReLU -> Dropout`` blocks of ``hidden_sizes``, and a
    final linear layer gives one logit per item:

    .. math::
        h = \mathrm{MLP}\big([v_{x_1}; \dots; v_{x_L}]\big), \qquad
        z_i = w_i^\top h + b_i \; \big(+\; (P h)^\top m_i\big)

    where :math:`v_j = e_j (+\, m_j)` is item :math:`j`'s id embedding plus, when item metadata is
    given, its metadata embedding :math:`m_j` (a linear map of its embedded categorical features
    and standardized numeric features). Items share metadata, so an item seen rarely or never in
    training is still placed near similar items, both in a history and in the ranking.
    The metadata score starts at zero (:math:`P = 0`), so training begins from the id-only scores.

    The padding value ``-1`` embeds as a zero vector, so a short history is left-padded with ``-1``
    (the most recent item in the last column); a history narrower than ``L`` is left-padded here.

    The output bias starts at the logit of the prior (:func:`focalrec.init_prior_bias_`),
    :math:`b_i = -\log\frac{1-\pi_i}{\pi_i}`,
    so that :math:`\sigma(z_i) \approx \pi_i` at initialization (Lin et al., 2017): with focal
    loss and thousands of negatives per positive, this keeps the first steps from being swamped by
    the easy negatives.

    Args:
        num_items: number of items ``C`` (the vocabulary; ids in ``[0, C)``).
        history_length: ``L``, the number of most recent items the model reads.
        embedding_dim: size of each item embedding.
        hidden_sizes: widths of the hidden layers; empty for a linear model.
        dropout: dropout probability after each hidden layer and on the concatenated embeddings.
        prior: the positive rate ``pi`` the output bias starts from: a float for every item or a
            tensor ``(C,)`` of per-item rates (e.g. each item's frequency among the targets), all
            in ``(0, 1)``.
        item_features: optional ``(C, F)`` integer tensor of categorical metadata; column ``f``
            holds ids in ``[0, K_f)`` (``K_f`` inferred as the column's maximum plus one) or ``-1``
            for unknown.
        item_numeric: optional ``(C, G)`` floating tensor of numeric metadata (e.g. ``log1p`` of a
            count); standardized per column here, non-finite values meaning unknown.
        feature_dim: size of each categorical feature's embedding.

    Shape:
        - history: ``(N, L')`` integer, ``L' <= L``, ids in ``[0, C)`` or ``-1``, left-padded.
        - output: ``(N, C)`` logits.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> model = SequenceMLP(num_items=6, history_length=3, embedding_dim=4, hidden_sizes=[8],
        ...                     prior=0.25)
        >>> model(torch.tensor([[4, 0, 5], [-1, -1, 2]])).shape
        torch.Size([2, 6])
        >>> round(torch.sigmoid(model.output.bias[0]).item(), 4)
        0.25
    """

    def __init__(
        self,
        num_items: int,
        history_length: int,
        *,
        embedding_dim: int = 50,
        hidden_sizes: Sequence[int] = (256,),
        dropout: float = 0.0,
        prior: float | Tensor = 0.01,
        item_features: Tensor | None = None,
        item_numeric: Tensor | None = None,
        feature_dim: int = 16,
    ) -> None:
        super().__init__(num_items, history_length, embedding_dim)
        check_positive_int(feature_dim, "feature_dim")
        hidden = list(hidden_sizes)
        if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ValueError(f"`hidden_sizes` must be positive ints, got {hidden_sizes!r}")
        check_dropout(dropout)
        check_item_table(item_features, "item_features", num_items, floating=False)
        check_item_table(item_numeric, "item_numeric", num_items, floating=True)

        self.metadata: ItemMetadata | None = None
        self.metadata_query: nn.Linear | None = None
        if item_features is not None or item_numeric is not None:
            self.metadata = ItemMetadata(
                item_features, item_numeric, num_items, embedding_dim, feature_dim
            )
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        width = history_length * embedding_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.mlp = nn.Sequential(*layers)
        self._init_output(width, prior)
        if self.metadata is not None:
            self.metadata_query = nn.Linear(width, embedding_dim, bias=False)
            # The metadata score starts at zero: training begins from the id-only scores and
            # grows the shared part only as far as it helps.
            nn.init.zeros_(self.metadata_query.weight)

    def _features(self, history: Tensor) -> tuple[Tensor, Tensor | None]:
        """The features ``(N, H)`` and, with metadata, the items' metadata vectors ``(C, D)``."""
        rows = self._rows(history)
        if self.metadata is None:
            return self.mlp(self.embedding(rows).flatten(1)), None
        meta = self.metadata()
        table = self.embedding.weight + nn.functional.pad(meta, (0, 0, 0, 1))
        embedded = nn.functional.embedding(rows, table, padding_idx=self.num_items)
        return self.mlp(embedded.flatten(1)), meta

    def features(self, history: Tensor) -> Tensor:
        """The last hidden layer's output ``(N, H)``, after its dropout, for histories ``(N, L')``.

        With item metadata, score them with :meth:`output_weight`, not ``output.weight`` alone.
        """
        return self._features(history)[0]

    def output_weight(self) -> Tensor:
        """The weight ``(C, H)`` that scores the features, the metadata term included.

        Without metadata it is ``output.weight``; with metadata it is
        :math:`W + M Q` (``output.weight + metadata() @ metadata_query.weight``).
        """
        if self.metadata is None or self.metadata_query is None:
            return self.output.weight
        weight: Tensor = self.output.weight + self.metadata() @ self.metadata_query.weight
        return weight

    def forward(self, history: Tensor) -> Tensor:
        """Logits ``(N, C)`` for histories ``(N, L')`` left-padded with ``-1``."""
        h, meta = self._features(history)
        logits: Tensor = self.output(h)
        if meta is not None and self.metadata_query is not None:
            logits = logits + self.metadata_query(h) @ meta.T
        return logits
