"""The optional torchmetrics adapter; the conventions against torchmetrics' retrieval metrics."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import pytest
import torch

from focalrec import ranking_metrics_at_k
from focalrec.ranking import METRICS


@pytest.fixture
def tm() -> ModuleType:
    return pytest.importorskip("torchmetrics")


def test_importing_focalrec_does_not_import_torchmetrics() -> None:
    code = (
        "import sys, focalrec; "
        "assert 'torchmetrics' not in sys.modules, 'torchmetrics'; "
        "assert 'focalrec.integrations.torchmetrics' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_torchmetrics_the_import_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    import focalrec.integrations.torchmetrics as adapter

    real_find_spec = importlib.util.find_spec

    def hide_torchmetrics(name: str, *args: object) -> object:
        return None if name == "torchmetrics" else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", hide_torchmetrics)
    if "TorchmetricsRankingMetric" in vars(adapter):  # torchmetrics is installed here
        monkeypatch.delattr(adapter, "TorchmetricsRankingMetric")
    try:
        importlib.reload(adapter)
        with pytest.raises(ImportError, match=r"needs torchmetrics.*focalrec\[torchmetrics\]"):
            from focalrec.integrations.torchmetrics import TorchmetricsRankingMetric  # noqa: F401
        with pytest.raises(AttributeError, match="no attribute 'other'"):
            _ = adapter.other
    finally:
        monkeypatch.undo()
        importlib.reload(adapter)


def _data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # Positive scores without ties: torchmetrics treats items scored <= 0 as irrelevant and
    # breaks ties in an unspecified order.
    scores = torch.rand(60, 25, generator=gen) + 0.01
    relevance = torch.rand(60, 25, generator=gen) < 0.1
    relevance[:4] = False  # rows without a relevant item
    exclude = torch.randint(-1, 25, (60, 3), generator=gen)
    return scores, relevance, exclude


@pytest.mark.parametrize("empty", ["zero", "skip"])
def test_conventions_match_torchmetrics_retrieval(tm: ModuleType, empty: str) -> None:
    from torchmetrics import retrieval

    classes = {
        "hit_rate": retrieval.RetrievalHitRate,
        "map": retrieval.RetrievalMAP,
        "mrr": retrieval.RetrievalMRR,
        "ndcg": retrieval.RetrievalNormalizedDCG,
        "precision": retrieval.RetrievalPrecision,
        "recall": retrieval.RetrievalRecall,
    }
    scores, relevance, _ = _data(0)
    k = 5
    indexes = torch.arange(scores.shape[0]).repeat_interleave(scores.shape[1])
    ours = ranking_metrics_at_k(
        scores,
        relevance,
        k,
        denominator="hits",
        empty_targets=empty,  # type: ignore[arg-type]
    )
    for name, cls in classes.items():
        theirs = cls(top_k=k, empty_target_action={"zero": "neg", "skip": "skip"}[empty])
        theirs.update(scores.flatten(), relevance.flatten(), indexes=indexes)
        torch.testing.assert_close(ours[name], theirs.compute(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_adapter_matches_the_functional_metric(tm: ModuleType, metric: str) -> None:
    from focalrec.integrations.torchmetrics import TorchmetricsRankingMetric

    scores, relevance, exclude = _data(1)
    adapter = TorchmetricsRankingMetric(metric, 3, empty_targets="skip")
    batch_values = [
        adapter(scores[lo : lo + 20], relevance[lo : lo + 20], exclude[lo : lo + 20])
        for lo in range(0, 60, 20)
    ]
    expected = ranking_metrics_at_k(
        scores, relevance, 3, exclude=exclude, metrics=(metric,), empty_targets="skip"
    )[metric]
    torch.testing.assert_close(adapter.compute(), expected, rtol=0, atol=1e-6)
    # forward returns the value of its batch alone.
    first = ranking_metrics_at_k(
        scores[:20],
        relevance[:20],
        3,
        exclude=exclude[:20],
        metrics=(metric,),
        empty_targets="skip",
    )[metric]
    torch.testing.assert_close(batch_values[0], first, rtol=0, atol=1e-6)
    adapter.reset()
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert adapter.compute().item() == 0.0


def test_adapter_in_a_metric_collection(tm: ModuleType) -> None:
    from focalrec.integrations.torchmetrics import TorchmetricsRankingMetric

    collection = tm.MetricCollection(
        {
            "map@3": TorchmetricsRankingMetric("map", 3),
            "ndcg@3": TorchmetricsRankingMetric("ndcg", 3),
        }
    )
    scores, relevance, _ = _data(2)
    collection.update(scores, relevance)
    expected = ranking_metrics_at_k(scores, relevance, 3, metrics=("map", "ndcg"))
    got = collection.compute()
    torch.testing.assert_close(got["map@3"], expected["map"], rtol=0, atol=1e-6)
    torch.testing.assert_close(got["ndcg@3"], expected["ndcg"], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("auc", 3), {}, r"`metric` must be one of 'hit_rate', .*got 'auc'"),
        (("map", 0), {}, r"`k` must be a positive int \(k >= 1\), got 0"),
        (("map", 3), {"denominator": "x"}, r"`denominator` must be one of"),
        (("map", 3), {"empty_targets": "neg"}, r"`empty_targets` must be one of"),
    ],
)
def test_adapter_errors(
    tm: ModuleType, args: tuple[object, ...], kwargs: dict[str, object], match: str
) -> None:
    from focalrec.integrations.torchmetrics import TorchmetricsRankingMetric

    with pytest.raises(ValueError, match=match):
        TorchmetricsRankingMetric(*args, **kwargs)
