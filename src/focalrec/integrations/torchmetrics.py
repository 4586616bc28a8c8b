"""A :class:`torchmetrics.Metric` adapter for the ranking metrics @k of :mod:`focalrec.ranking`.

Requires ``torchmetrics`` (``pip install focalrec[torchmetrics]``): without it this module still
imports (so tools that walk the package keep working), but importing ``TorchmetricsRankingMetric``
from it raises an ``ImportError`` that says what to install. The adapter keeps the fixed-size state
of :class:`focalrec.RankingMetricsAtK` (a float64 sum and a row count, reduced by sum across
processes), so it fits a ``MetricCollection``, Lightning logging and torchmetrics' own
synchronization, unlike ``torchmetrics.retrieval.RetrievalMAP``, which stores every score.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from focalrec._topk import _check_k
from focalrec.metrics import _batch_state
from focalrec.ranking import (
    _DENOMINATORS,
    _EMPTY,
    METRICS,
    Denominator,
    EmptyTargets,
    _check_choice,
)

__all__ = ["TorchmetricsRankingMetric"]

_INSTALL_HINT = (
    "focalrec.integrations.torchmetrics.TorchmetricsRankingMetric needs torchmetrics, which is not "
    "installed: pip install 'focalrec[torchmetrics]'"
)


def __getattr__(name: str) -> object:
    # Reached only when the class below was not defined, that is without torchmetrics.
    if name == "TorchmetricsRankingMetric":
        raise ImportError(_INSTALL_HINT)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if importlib.util.find_spec("torchmetrics") is not None:
    from torchmetrics import Metric

    class TorchmetricsRankingMetric(Metric):  # type: ignore[misc, unused-ignore]  # Any without torchmetrics
        """One ranking metric @k of :mod:`focalrec.ranking` as a :class:`torchmetrics.Metric`.

        ``update(preds, target, exclude=None)`` takes the inputs of :func:`focalrec.map_at_k`
        (scores or ranked index lists; index-list or dense `target`; optional exclusions);
        ``compute()`` returns the mean of the metric over the rows seen, by every process under
        ``torch.distributed``.

        Args:
            metric: one of ``"hit_rate"``, ``"map"``, ``"mrr"``, ``"ndcg"``, ``"precision"``,
                ``"recall"``.
            k: cut-off, an int ``>= 1``.
            denominator: the AP@k denominator for ``"map"``: ``"min_k"``, ``"relevant"`` or
                ``"hits"``.
            empty_targets: ``"zero"`` or ``"skip"``.
            validate_args: check index ranges and reject NaN scores in ``update``.
            **kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``,
                ``process_group``, ...).

        Example:
            >>> metric = TorchmetricsRankingMetric("map", k=3)
            >>> metric.update(torch.tensor([[0.9, 0.1, 0.8, 0.3]]), torch.tensor([[2, 3]]))
            >>> metric.update(torch.tensor([[0.2, 0.7, 0.1, 0.4]]), torch.tensor([[0, -1]]))
            >>> metric.compute()
            tensor(0.4583)
        """

        is_differentiable = False
        higher_is_better = True
        full_state_update = False
        total: Tensor
        count: Tensor

        def __init__(
            self,
            metric: str,
            k: int,
            *,
            denominator: Denominator = "min_k",
            empty_targets: EmptyTargets = "zero",
            validate_args: bool = True,
            **kwargs: object,
        ) -> None:
            super().__init__(**kwargs)
            _check_choice(metric, "metric", METRICS)
            _check_choice(denominator, "denominator", _DENOMINATORS)
            _check_choice(empty_targets, "empty_targets", _EMPTY)
            self.metric = metric
            self.k = _check_k(k)
            self.denominator = denominator
            self.empty_targets = empty_targets
            self.validate_args = validate_args
            zero = torch.zeros((), dtype=torch.float64)
            self.add_state("total", default=zero.clone(), dist_reduce_fx="sum")
            self.add_state("count", default=zero.clone(), dist_reduce_fx="sum")

        def update(self, preds: Tensor, target: Tensor, exclude: Tensor | None = None) -> None:
            """Add a batch of rows, as :meth:`focalrec.RankingMetricsAtK.update` does."""
            total, count = _batch_state(
                preds,
                target,
                exclude,
                self.k,
                (self.metric,),
                self.denominator,
                self.empty_targets,
                self.validate_args,
            )
            self.total += total[0].to(self.total)
            self.count += count.to(self.count)

        def compute(self) -> Tensor:
            """The mean of the metric over the rows seen, a float32 scalar (0 when none counted)."""
            return (self.total / self.count.clamp(min=1)).to(torch.float32)
