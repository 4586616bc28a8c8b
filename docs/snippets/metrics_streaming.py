import torch

from focalrec import RankingMetricsAtK, ranking_metrics_at_k

gen = torch.Generator().manual_seed(0)
scores = torch.randn(1000, 300, generator=gen)
relevant = torch.randint(0, 300, (1000, 3), generator=gen)
history = torch.randint(0, 300, (1000, 10), generator=gen)

metric = RankingMetricsAtK(k=3, metrics=("map", "ndcg", "recall"))
for rows in torch.arange(1000).split(128):  # any batching gives the same result
    metric.update(scores[rows], relevant[rows], history[rows])
streamed = metric.compute()  # under torch.distributed: one all-reduce of a few numbers
at_once = ranking_metrics_at_k(
    scores, relevant, 3, metrics=("map", "ndcg", "recall"), exclude=history
)
for name in streamed:
    torch.testing.assert_close(streamed[name], at_once[name])
print({name: round(value.item(), 4) for name, value in streamed.items()})
print("state:", {name: tuple(buf.shape) for name, buf in metric.named_buffers()})
