"""Next-items recommenders over a user's history of items.

Every model reads a history as an index list ``(N, L')`` of item ids, left-padded with ``-1``
(the most recent item in the last column), and returns one logit per item, ``(N, C)``, ready for
:func:`focalrec.sigmoid_focal_loss` with sparse targets and for the ranking metrics:

- :class:`SequenceMLP`: the last ``L`` item embeddings concatenated, then an MLP; optional item
  metadata.
- :class:`SequenceGRU`: a GRU reads the items in order.
- :class:`SequenceTransformer`: causal self-attention over the items (SASRec-style).

They share one base, :class:`SequenceRecommender`: the item table ``embedding`` (padding embeds
as zero), the reading of histories, and the output layer ``output`` whose bias starts at the logit
of the prior. Each exposes its features before the output layer, so that
``model(history) == model.output(model.features(history))``; a fused output-layer loss takes
``model.features(history)``, ``model.output_weight()`` and ``model.output.bias`` (the weight differs
from ``output.weight`` only for :class:`SequenceMLP` with item metadata).

The order-aware models also give one state per position in one causal pass,
``model.sequence_features(history)`` ``(N, L', H)``, column ``j`` the state after the items up to
column ``j``: with :func:`next_item_targets` (each position's next items as an index list) a
model learns from every step of a sequence at once, the rows of the positions that have a target
going straight into the fused output layer. :class:`SequenceMLP` reads a fixed window and has no
such states (its ``sequence_features`` raises ``NotImplementedError``).
"""

from focalrec.models._base import SequenceRecommender
from focalrec.models._targets import NextItemTargets, next_item_targets
from focalrec.models.gru import SequenceGRU
from focalrec.models.mlp import SequenceMLP
from focalrec.models.transformer import SequenceTransformer

__all__ = [
    "NextItemTargets",
    "SequenceGRU",
    "SequenceMLP",
    "SequenceRecommender",
    "SequenceTransformer",
    "next_item_targets",
]
