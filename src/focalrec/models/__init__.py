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
"""

from focalrec.models._base import SequenceRecommender
from focalrec.models.gru import SequenceGRU
from focalrec.models.mlp import SequenceMLP
from focalrec.models.transformer import SequenceTransformer

__all__ = ["SequenceGRU", "SequenceMLP", "SequenceRecommender", "SequenceTransformer"]
