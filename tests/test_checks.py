"""One rule for bad arguments, across the public API: the same mistake, the same exception.

``TypeError`` for a wrong type, dtype or device, ``ValueError`` for a wrong value or shape, and a
message that names the argument in backticks. Each table makes one mistake against every public
function that can receive it. A second device is the ``meta`` device, which every machine has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import focalrec as fr

N, C, D = 2, 5, 3
SCORES = torch.randn(N, C)
TARGET = torch.tensor([[1, -1], [0, 4]])
FEATURES, WEIGHT = torch.randn(N, D), torch.randn(C, D)
META = torch.device("meta")

Call = Callable[..., Any]


def _update(metric: Any) -> Call:
    return lambda **kw: metric.update(**kw)


# Each function with its valid arguments as keywords; a case replaces one of them.
CALLS: dict[str, tuple[Call, dict[str, Any]]] = {
    "sigmoid_focal_loss": (fr.sigmoid_focal_loss, {"input": SCORES, "target": TARGET}),
    "FocalLoss": (fr.FocalLoss(), {"input": SCORES, "target": TARGET}),
    "asymmetric_loss": (fr.asymmetric_loss, {"input": SCORES, "target": TARGET}),
    "AsymmetricLoss": (fr.AsymmetricLoss(), {"input": SCORES, "target": TARGET}),
    "linear_sigmoid_focal_loss": (
        fr.linear_sigmoid_focal_loss,
        {"input": FEATURES, "linear_weight": WEIGHT, "target": TARGET},
    ),
    "linear_asymmetric_loss": (
        fr.linear_asymmetric_loss,
        {"input": FEATURES, "linear_weight": WEIGHT, "target": TARGET},
    ),
    "LinearFocalLoss": (fr.LinearFocalLoss(D, C), {"input": FEATURES, "target": TARGET}),
    "topk_items": (fr.topk_items, {"scores": SCORES, "k": 2}),
    "topk_items_from_embeddings": (
        fr.topk_items_from_embeddings,
        {"input": FEATURES, "linear_weight": WEIGHT, "k": 2},
    ),
    "class_priors": (fr.class_priors, {"target": TARGET, "num_classes": C}),
    **{
        name: (getattr(fr, name), {"preds": SCORES, "target": TARGET, "k": 2})
        for name in (
            "map_at_k",
            "precision_at_k",
            "recall_at_k",
            "ndcg_at_k",
            "hit_rate_at_k",
            "mrr_at_k",
            "ranking_metrics_at_k",
        )
    },
    "MeanAveragePrecisionAtK.update": (
        _update(fr.MeanAveragePrecisionAtK(2)),
        {"preds": SCORES, "target": TARGET},
    ),
    "RankingMetricsAtK.update": (
        _update(fr.RankingMetricsAtK(2)),
        {"preds": SCORES, "target": TARGET},
    ),
}

TENSOR_ARGUMENTS = [
    (name, arg)
    for name, (_, kwargs) in CALLS.items()
    for arg, value in kwargs.items()
    if isinstance(value, torch.Tensor)
]
# The arguments that must be on the device of the first tensor (class_priors has one tensor).
DEVICE_ARGUMENTS = [
    (name, arg)
    for name, arg in TENSOR_ARGUMENTS
    if arg not in ("input", "preds", "scores") and name != "class_priors"
] + [
    (name, "exclude")
    for name, (_, kwargs) in CALLS.items()
    if ("preds" in kwargs and "k" in kwargs) or name.startswith("topk")
]
CHUNKED = ["linear_sigmoid_focal_loss", "linear_asymmetric_loss", "topk_items_from_embeddings"]
GROUPED = ["linear_sigmoid_focal_loss", "linear_asymmetric_loss", "topk_items_from_embeddings"]
WITH_K = [name for name, (_, kwargs) in CALLS.items() if "k" in kwargs]


def _call(name: str, **changes: Any) -> None:
    fn, kwargs = CALLS[name]
    fn(**{**kwargs, **changes})


def test_every_case_is_valid_as_written() -> None:
    for name in CALLS:
        _call(name)


@pytest.mark.parametrize(("name", "arg"), TENSOR_ARGUMENTS)
def test_a_list_for_a_tensor_is_a_type_error(name: str, arg: str) -> None:
    with pytest.raises(TypeError, match=rf"`{arg}` must be a torch.Tensor, got list"):
        _call(name, **{arg: [[1.0]]})


@pytest.mark.parametrize(("name", "arg"), DEVICE_ARGUMENTS)
def test_a_tensor_on_another_device_is_a_type_error(name: str, arg: str) -> None:
    value = CALLS[name][1].get(arg, TARGET)
    with pytest.raises(
        TypeError, match=rf"`{arg}` must be on the device of `\w+` \(cpu\), got meta"
    ):
        _call(name, **{arg: value.to(META)})


@pytest.mark.parametrize("name", CHUNKED)
def test_chunk_size_is_a_rows_items_pair_everywhere(name: str) -> None:
    _call(name, chunk_size=(1, 2))
    with pytest.raises(TypeError, match=r"`chunk_size` must be a pair \(rows, items\)"):
        _call(name, chunk_size=64)
    with pytest.raises(ValueError, match=r"`chunk_size\[1\] \(items\)` must be an int >= 1"):
        _call(name, chunk_size=(4, 0))
    with pytest.raises(TypeError, match=r"`chunk_size\[0\] \(rows\)` must be an int, got float"):
        _call(name, chunk_size=(4.0, 2))


def test_chunk_size_of_the_module_is_checked_when_made() -> None:
    with pytest.raises(TypeError, match=r"`chunk_size` must be a pair \(rows, items\)"):
        fr.LinearFocalLoss(D, C, chunk_size=64)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", GROUPED)
def test_a_process_group_that_is_not_one_is_a_type_error(name: str) -> None:
    with pytest.raises(TypeError, match=r"`process_group` must be a torch.distributed"):
        _call(name, process_group="world")


@pytest.mark.parametrize("name", WITH_K)
def test_k_is_a_positive_int_everywhere(name: str) -> None:
    with pytest.raises(TypeError, match=r"`k` must be a positive int, got float 2.0"):
        _call(name, k=2.0)
    with pytest.raises(ValueError, match=r"`k` must be a positive int \(k >= 1\), got 0"):
        _call(name, k=0)


POS_WEIGHTED = [
    "sigmoid_focal_loss",
    "asymmetric_loss",
    "linear_sigmoid_focal_loss",
    "linear_asymmetric_loss",
]


@pytest.mark.parametrize("name", POS_WEIGHTED)
def test_pos_weight_means_the_same_everywhere(name: str) -> None:
    with pytest.raises(ValueError, match=r"`pos_weight`.*shape"):
        _call(name, pos_weight=torch.ones(C + 1))
    with pytest.raises(TypeError, match=r"`pos_weight`.*floating"):
        _call(name, pos_weight=torch.ones(C, dtype=torch.long))
    with pytest.raises(TypeError, match="`pos_weight`"):
        _call(name, pos_weight="2")
    with pytest.raises(ValueError, match="`pos_weight`"):
        _call(name, pos_weight=-1.0)
    with pytest.raises(TypeError, match=r"`pos_weight`.*device"):
        _call(name, pos_weight=torch.ones(C, device=META))


@pytest.mark.parametrize(
    "name", ["sigmoid_focal_loss", "linear_sigmoid_focal_loss", "linear_asymmetric_loss"]
)
def test_integer_input_is_a_type_error(name: str) -> None:
    with pytest.raises(TypeError, match=r"`input` must be a floating-point tensor, got dtype"):
        _call(name, input=CALLS[name][1]["input"].long())
