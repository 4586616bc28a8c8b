"""Streaming ranking metrics: fixed-size state, ``update`` / ``compute`` / ``reset``, distributed.

The state of a metric is two small tensors, the running sum of the per-row values of each metric
(float64) and the number of rows counted, never the scores. So memory does not grow with the data,
any split of the data into batches gives the same result (up to float64 rounding), and under
:mod:`torch.distributed` :meth:`~RankingMetricsAtK.compute` costs one all-reduce of
``len(metrics) + 1`` numbers, after which every process holds the result of the whole data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor, nn

from focalrec._topk import _check_k
from focalrec.ranking import (
    _DENOMINATORS,
    _EMPTY,
    METRICS,
    Denominator,
    EmptyTargets,
    _check_choice,
    _check_metrics,
    _per_row_values,
    _ranked_relevance,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "MeanAveragePrecisionAtK",
    "RankingMetricsAtK",
]


def _batch_state(
    preds: Tensor,
    target: Tensor,
    exclude: Tensor | None,
    k: int,
    metrics: tuple[str, ...],
    denominator: str,
    empty_targets: str,
    validate_args: bool,
) -> tuple[Tensor, Tensor]:
    """The float64 sums of the per-row values of ``metrics`` over a batch, and its row count.

    Rows without a relevant item are counted only with ``empty_targets="zero"``; a mask rather
    than indexing keeps this free of device-to-host syncs.
    """
    with torch.no_grad():
        rel, num_relevant = _ranked_relevance(preds, target, k, exclude, validate_args)
        values = _per_row_values(metrics, rel, num_relevant, denominator)
        if empty_targets == "skip":
            counted = num_relevant > 0
            return (values * counted).sum(dim=1), counted.sum().to(torch.float64)
        count = torch.full((), float(rel.shape[0]), dtype=torch.float64, device=rel.device)
        return values.sum(dim=1), count


class _RankingState(nn.Module):
    """The state and update shared by the streaming classes: per-metric sums and a row count."""

    total: Tensor
    count: Tensor

    def __init__(
        self,
        k: int,
        metrics: tuple[str, ...] = METRICS,
        *,
        denominator: Denominator = "min_k",
        empty_targets: EmptyTargets = "zero",
        validate_args: bool = True,
        sync_on_compute: bool = True,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        self.k = _check_k(k)
        self.metrics = _check_metrics(metrics)
        _check_choice(denominator, "denominator", _DENOMINATORS)
        _check_choice(empty_targets, "empty_targets", _EMPTY)
        self.denominator = denominator
        self.empty_targets = empty_targets
        self.validate_args = validate_args
        self.sync_on_compute = sync_on_compute
        self.process_group = process_group
        self.register_buffer(
            "total", torch.zeros(len(self.metrics), dtype=torch.float64), persistent=False
        )
        self.register_buffer("count", torch.zeros((), dtype=torch.float64), persistent=False)

    def update(self, preds: Tensor, target: Tensor, exclude: Tensor | None = None) -> None:
        """Add a batch of rows: ``preds``, ``target`` and ``exclude`` as in :func:`map_at_k`."""
        total, count = _batch_state(
            preds,
            target,
            exclude,
            self.k,
            self.metrics,
            self.denominator,
            self.empty_targets,
            self.validate_args,
        )
        self.total += total.to(self.total)
        self.count += count.to(self.count)

    def _means(self) -> Tensor:
        """Float32 mean of each metric over the rows seen, by every process when synced."""
        total, count = self._synced_state()
        return (total / count.clamp(min=1)).to(torch.float32)

    def _synced_state(self) -> tuple[Tensor, Tensor]:
        if not (
            self.sync_on_compute
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(self.process_group) > 1
        ):
            return self.total, self.count
        state = torch.cat([self.total, self.count.reshape(1)])
        dist.all_reduce(state, op=dist.ReduceOp.SUM, group=self.process_group)
        return state[:-1], state[-1]

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Self:
        # Follow the module across devices, but keep the exact float64 state through dtype casts
        # such as ``.half()``: only the device of the converted buffers is taken.
        total, count = self.total, self.count
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        self.total = total.to(self.total.device)
        self.count = count.to(self.count.device)
        return self

    def reset(self) -> None:
        """Forget every row seen."""
        self.total.zero_()
        self.count.zero_()

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, metrics={self.metrics}, denominator={self.denominator!r}, "
            f"empty_targets={self.empty_targets!r}"
        )


class RankingMetricsAtK(_RankingState):
    """Several ranking metrics @k accumulated over batches, computed from one top-k pass each.

    The per-row definitions, conventions and inputs are those of :func:`focalrec.map_at_k` and its
    family (:func:`focalrec.ranking_metrics_at_k`); :meth:`compute` returns the mean over all the
    rows seen (with ``empty_targets="skip"``, over the rows with a relevant item; 0 when none).

    The state lives in two buffers, so ``.to(device)`` moves it; they are not saved in the
    ``state_dict``. When :mod:`torch.distributed` is initialized with more than one process,
    :meth:`compute` sums the state of all processes (``sync_on_compute=True``) without changing the
    local state, so ``update`` can go on afterwards.

    Args:
        k: cut-off, an int ``>= 1``.
        metrics: names among ``"hit_rate"``, ``"map"``, ``"mrr"``, ``"ndcg"``, ``"precision"``,
            ``"recall"`` (default: all).
        denominator: the AP@k denominator, ``"min_k"``, ``"relevant"`` or ``"hits"``.
        empty_targets: ``"zero"`` or ``"skip"``.
        validate_args: check index ranges and reject NaN scores in ``update``.
        sync_on_compute: all-reduce the state in :meth:`compute` under ``torch.distributed``.
        process_group: the group to reduce over (default: the whole world).

    Example:
        >>> metric = RankingMetricsAtK(3, metrics=("map", "recall"))
        >>> scores = torch.tensor([[0.9, 0.1, 0.8, 0.3], [0.2, 0.7, 0.1, 0.4]])
        >>> target = torch.tensor([[2, 3], [0, -1]])
        >>> metric.update(scores[:1], target[:1])
        >>> metric.update(scores[1:], target[1:])
        >>> {name: round(value.item(), 4) for name, value in metric.compute().items()}
        {'map': 0.4583, 'recall': 1.0}
    """

    def compute(self) -> dict[str, Tensor]:
        """The mean of each metric over the rows seen (by every process), as float32 scalars."""
        means = self._means()
        return {name: means[i] for i, name in enumerate(self.metrics)}


class MeanAveragePrecisionAtK(_RankingState):
    """Streaming mAP@k: :func:`focalrec.map_at_k` accumulated over batches and processes.

    :meth:`compute` returns one float32 scalar, the mean AP@k of every row seen; the rest is as in
    :class:`RankingMetricsAtK`, with the same fixed-size state.

    Args:
        k: cut-off, an int ``>= 1``.
        denominator: ``"min_k"`` (Kaggle, default), ``"relevant"`` or ``"hits"``.
        empty_targets: ``"zero"`` or ``"skip"``.
        validate_args: check index ranges and reject NaN scores in ``update``.
        sync_on_compute: all-reduce the state in :meth:`compute` under ``torch.distributed``.
        process_group: the group to reduce over (default: the whole world).

    Example:
        >>> metric = MeanAveragePrecisionAtK(3)
        >>> metric.update(torch.tensor([[0.9, 0.1, 0.8, 0.3]]), torch.tensor([[2, 3]]))
        >>> metric.update(torch.tensor([[0.2, 0.7, 0.1, 0.4]]), torch.tensor([[0, -1]]))
        >>> metric.compute()
        tensor(0.4583)
    """

    def __init__(
        self,
        k: int,
        *,
        denominator: Denominator = "min_k",
        empty_targets: EmptyTargets = "zero",
        validate_args: bool = True,
        sync_on_compute: bool = True,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__(
            k,
            ("map",),
            denominator=denominator,
            empty_targets=empty_targets,
            validate_args=validate_args,
            sync_on_compute=sync_on_compute,
            process_group=process_group,
        )

    def compute(self) -> Tensor:
        """The mean AP@k over the rows seen (by every process), a float32 scalar."""
        return self._means()[0]
