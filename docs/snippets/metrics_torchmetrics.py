import torch
from torchmetrics import MetricCollection

from focalrec.integrations.torchmetrics import TorchmetricsRankingMetric

metrics = MetricCollection(
    {
        "map@3": TorchmetricsRankingMetric("map", k=3),
        "ndcg@3": TorchmetricsRankingMetric("ndcg", k=3),
        "recall@10": TorchmetricsRankingMetric("recall", k=10),
    }
)
scores = torch.tensor([[0.9, 0.1, 0.8, 0.3, 0.2], [0.2, 0.7, 0.1, 0.4, 0.0]])
relevant = torch.tensor([[2, 3], [0, -1]])
metrics.update(scores, relevant)
print({name: round(value.item(), 4) for name, value in metrics.compute().items()})
