"""focalrec: exact, fast sigmoid focal loss and mAP@k for sparse multi-label recommenders.

Integer tensors are index lists (item indices padded with ``-1``); floating and bool tensors are
dense. See :mod:`focalrec._indices` for the convention shared by every function.
"""

from focalrec._config import show_config
from focalrec._focal.backends import use_backend
from focalrec._indices import dense_to_index_list, index_list_to_dense
from focalrec._topk import topk_items_from_embeddings
from focalrec._warnings import SlowPathWarning
from focalrec.linear import (
    LinearAsymmetricLoss,
    LinearFocalLoss,
    linear_asymmetric_loss,
    linear_sigmoid_focal_loss,
)
from focalrec.losses import AsymmetricLoss, FocalLoss, asymmetric_loss, sigmoid_focal_loss
from focalrec.metrics import MeanAveragePrecisionAtK, RankingMetricsAtK
from focalrec.negatives import gbce_beta, sample_negatives
from focalrec.priors import class_priors, focal_prior_bias, init_prior_bias_, prior_bias
from focalrec.ranking import (
    hit_rate_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics_at_k,
    recall_at_k,
    topk_items,
)

__version__ = "0.1.0"

__all__ = [
    "AsymmetricLoss",
    "FocalLoss",
    "LinearAsymmetricLoss",
    "LinearFocalLoss",
    "MeanAveragePrecisionAtK",
    "RankingMetricsAtK",
    "SlowPathWarning",
    "__version__",
    "asymmetric_loss",
    "class_priors",
    "dense_to_index_list",
    "focal_prior_bias",
    "gbce_beta",
    "hit_rate_at_k",
    "index_list_to_dense",
    "init_prior_bias_",
    "linear_asymmetric_loss",
    "linear_sigmoid_focal_loss",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "prior_bias",
    "ranking_metrics_at_k",
    "recall_at_k",
    "sample_negatives",
    "show_config",
    "sigmoid_focal_loss",
    "topk_items",
    "topk_items_from_embeddings",
    "use_backend",
]
