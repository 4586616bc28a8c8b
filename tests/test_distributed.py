"""Two processes on CPU (gloo): the streaming metrics give exactly the single-process result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from focalrec import MeanAveragePrecisionAtK, RankingMetricsAtK, ranking_metrics_at_k

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)

WORLD = 2


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (101, 40), generator=gen).float()  # ties at the cut
    targets = torch.randint(-1, 40, (101, 3), generator=gen)
    exclude = torch.randint(-1, 40, (101, 6), generator=gen)
    return scores, targets, exclude


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        scores, targets, exclude = _data()
        metric = RankingMetricsAtK(3, empty_targets="skip")
        single = MeanAveragePrecisionAtK(3, empty_targets="skip")
        local = MeanAveragePrecisionAtK(3, empty_targets="skip", sync_on_compute=False)
        # Uneven shards, each in two batches: rank 0 gets rows 0-29, rank 1 rows 30-100.
        rows = range(0, 30) if rank == 0 else range(30, 101)
        half = rows.start + len(rows) // 2
        for lo, hi in ((rows.start, half), (half, rows.stop)):
            metric.update(scores[lo:hi], targets[lo:hi], exclude[lo:hi])
            single.update(scores[lo:hi], targets[lo:hi], exclude[lo:hi])
            local.update(scores[lo:hi], targets[lo:hi], exclude[lo:hi])
        local_count = metric.count.clone()
        result = {name: value for name, value in metric.compute().items()}
        result["single_map"] = single.compute()
        result["unsynced_map"] = local.compute()
        # compute() reduces a copy: the local state is unchanged.
        result["local_count"] = metric.count
        assert torch.equal(metric.count, local_count)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    scores, targets, exclude = _data()
    expected = ranking_metrics_at_k(scores, targets, 3, exclude=exclude, empty_targets="skip")
    counts = []
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6)
        torch.testing.assert_close(got["single_map"], expected["map"], rtol=0, atol=1e-6)
        counts.append(int(got["local_count"]))
        # Without sync, each process reports its own shard.
        shard = slice(0, 30) if rank == 0 else slice(30, 101)
        own = ranking_metrics_at_k(
            scores[shard],
            targets[shard],
            3,
            exclude=exclude[shard],
            metrics=("map",),
            empty_targets="skip",
        )["map"]
        torch.testing.assert_close(got["unsynced_map"], own, rtol=0, atol=1e-6)
    assert counts == [int((targets[:30] >= 0).any(1).sum()), int((targets[30:] >= 0).any(1).sum())]
