"""A next-items recommender over the last ``L`` items of a user's history.

:class:`SequenceMLP` reads a history as an index list ``(N, L)`` of item ids, left-padded with
``-1`` (the most recent item in the last column), and returns one logit per item, ``(N, C)``,
ready for :func:`focalrec.sigmoid_focal_loss` with sparse targets and for the ranking metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from focalrec._indices import PAD, check_index_list
from focalrec.priors import init_prior_bias_

__all__ = ["SequenceMLP"]


def _check_item_table(x: Tensor | None, name: str, num_items: int, *, floating: bool) -> None:
    """Check an optional per-item metadata table: a ``(C, columns)`` tensor of the right kind."""
    if x is None:
        return
    kind = "a floating tensor (C, G)" if floating else "an integer tensor (C, F) of categorical ids"
    if not isinstance(x, Tensor) or x.is_floating_point() != floating:
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"`{name}` must be {kind}, got {got}")
    if x.ndim != 2 or x.shape[0] != num_items:
        raise ValueError(
            f"`{name}` must have shape ({num_items}, {'G' if floating else 'F'}), one row per "
            f"item, got shape {tuple(x.shape)}"
        )
    if not floating and x.numel() > 0 and int(x.min()) < PAD:
        raise ValueError(
            f"`{name}` must hold ids >= 0 or -1 for unknown, got minimum {int(x.min())}"
        )


class _ItemMetadata(nn.Module):
    """Embeds each item's metadata into one vector per item, ``(C, dim)``.

    Categorical column ``f`` holds ids in ``[0, K_f)`` or ``-1`` when unknown; an unknown value
    embeds as zeros. Numeric columns are standardized over the items; a non-finite value (unknown)
    becomes 0, the mean.
    """

    categorical: Tensor
    numeric: Tensor

    def __init__(
        self,
        categorical: Tensor | None,
        numeric: Tensor | None,
        num_items: int,
        dim: int,
        feature_dim: int,
    ) -> None:
        super().__init__()
        cat = torch.empty(num_items, 0, dtype=torch.long) if categorical is None else categorical
        num = torch.empty(num_items, 0) if numeric is None else numeric
        # Shift by one so that the unknown value -1 lands on the zero padding row 0.
        self.register_buffer("categorical", cat.long() + 1)
        cardinalities = (cat.amax(dim=0) + 2).tolist() if cat.numel() > 0 else []
        self.tables = nn.ModuleList(
            nn.Embedding(int(k), feature_dim, padding_idx=0) for k in cardinalities
        )
        num = num.detach().to(torch.float32)
        finite = torch.isfinite(num)
        count = finite.sum(dim=0).clamp_min(1)
        mean = torch.where(finite, num, 0.0).sum(dim=0) / count
        var = torch.where(finite, (num - mean) ** 2, 0.0).sum(dim=0) / count
        standardized = (num - mean) / var.sqrt().clamp_min(1e-12)
        self.register_buffer("numeric", torch.where(finite, standardized, 0.0))
        self.project = nn.Linear(len(cardinalities) * feature_dim + num.shape[1], dim)

    def forward(self) -> Tensor:
        parts = [table(self.categorical[:, f]) for f, table in enumerate(self.tables)]
        out: Tensor = self.project(torch.cat([*parts, self.numeric], dim=1))
        return out


class SequenceMLP(nn.Module):
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
        super().__init__()
        for name, value in (
            ("num_items", num_items),
            ("history_length", history_length),
            ("embedding_dim", embedding_dim),
            ("feature_dim", feature_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        hidden = list(hidden_sizes)
        if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ValueError(f"`hidden_sizes` must be positive ints, got {hidden_sizes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1), got {dropout!r}")
        _check_item_table(item_features, "item_features", num_items, floating=False)
        _check_item_table(item_numeric, "item_numeric", num_items, floating=True)

        self.num_items = num_items
        self.history_length = history_length
        # Row C of the table is the padding row: always zero, never updated.
        self.embedding = nn.Embedding(num_items + 1, embedding_dim, padding_idx=num_items)
        self.metadata: _ItemMetadata | None = None
        self.metadata_query: nn.Linear | None = None
        if item_features is not None or item_numeric is not None:
            self.metadata = _ItemMetadata(
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
        self.output = nn.Linear(width, num_items)
        if self.metadata is not None:
            self.metadata_query = nn.Linear(width, embedding_dim, bias=False)
            # The metadata score starts at zero: training begins from the id-only scores and
            # grows the shared part only as far as it helps.
            nn.init.zeros_(self.metadata_query.weight)
        init_prior_bias_(self.output, prior)

    def forward(self, history: Tensor) -> Tensor:
        """Logits ``(N, C)`` for histories ``(N, L')`` left-padded with ``-1``."""
        check_index_list(history, "history", num_classes=self.num_items)
        width = history.shape[1]
        if width > self.history_length:
            raise ValueError(
                f"`history` must have at most history_length={self.history_length} columns "
                f"(the most recent items, left-padded with -1), got shape {tuple(history.shape)}; "
                f"pass history[:, -{self.history_length}:]"
            )
        if width < self.history_length:
            history = nn.functional.pad(history, (self.history_length - width, 0), value=PAD)
        # Padding maps to row C of the table, which is zero.
        index = torch.where(history == PAD, self.num_items, history).long()
        if self.metadata is None or self.metadata_query is None:
            logits: Tensor = self.output(self.mlp(self.embedding(index).flatten(1)))
            return logits
        meta = self.metadata()
        table = self.embedding.weight + nn.functional.pad(meta, (0, 0, 0, 1))
        h = self.mlp(nn.functional.embedding(index, table, padding_idx=self.num_items).flatten(1))
        logits = self.output(h) + self.metadata_query(h) @ meta.T
        return logits

    def extra_repr(self) -> str:
        return f"num_items={self.num_items}, history_length={self.history_length}"
