"""Two processes on CPU (gloo): the item-sharded top-k gives exactly the single-process list."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from focalrec import topk_items, topk_items_from_embeddings

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)

WORLD = 2
K = 5
# Uneven shards: rank 0 holds items 0-8, rank 1 items 9-22; then rank 0 holds none.
SPLITS = ((9, 14), (0, 23))


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    queries = torch.randint(-2, 3, (37, 3), generator=gen).float()
    items = torch.randint(-2, 3, (23, 3), generator=gen).float()
    bias = torch.randint(-2, 3, (23,), generator=gen).float()
    # Items 7, 8 (rank 0) and 9, 10 (rank 1) are the same item with the best bias: a tie across
    # the shard border, which the lower indices must win.
    items[7:11] = items[7]
    bias[7:11] = 10.0
    exclude = torch.randint(-1, 23, (37, 4), generator=gen)
    exclude[:5] = torch.tensor([8, 9, -1, 8])  # exclusions at the border, repeated
    return queries, items, bias, exclude


def _shard(x: torch.Tensor, rank: int, split: tuple[int, int]) -> torch.Tensor:
    return x[: split[0]] if rank == 0 else x[split[0] :]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        queries, items, bias, exclude = _data()
        group = dist.group.WORLD
        result: dict[str, object] = {}
        for s, split in enumerate(SPLITS):
            mine, my_bias = _shard(items, rank, split), _shard(bias, rank, split)
            kw = {"linear_bias": my_bias, "process_group": group}
            result[f"split{s}"] = topk_items_from_embeddings(
                queries, mine, K, exclude=exclude, chunk_size=(2, 2), **kw
            )
            result[f"split{s}_plain"] = topk_items_from_embeddings(
                queries, mine, K, process_group=group
            )
            result[f"split{s}_k_above_c"] = topk_items_from_embeddings(queries, mine, 30, **kw)
            # The shard's description given in full: the same lists as when it is inferred.
            offset = 0 if rank == 0 else split[0]
            result[f"split{s}_described"] = topk_items_from_embeddings(
                queries,
                mine,
                K,
                exclude=exclude,
                item_offset=offset,
                num_items=items.shape[0],
                **kw,
            )
        # A NaN score on one rank: every rank raises (no rank waits in the next collective).
        poisoned = _shard(items, rank, SPLITS[0]).clone()
        if rank == 1:
            poisoned[2, 0] = float("nan")
        for name, args in (
            ("nan", (queries, poisoned, K)),
            ("rows", (queries[: 30 + rank], _shard(items, rank, SPLITS[0]), K)),
        ):
            try:
                topk_items_from_embeddings(*args, process_group=group)
            except ValueError as error:
                result[f"{name}_error"] = str(error)
        # A wrong item_offset on rank 1 only: every rank raises, naming it.
        try:
            mine = _shard(items, rank, SPLITS[0])
            topk_items_from_embeddings(queries, mine, K, item_offset=rank * 3, process_group=group)
        except ValueError as error:
            result["offset_error"] = str(error)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    queries, items, bias, exclude = _data()
    expected = topk_items_from_embeddings(queries, items, K, linear_bias=bias, exclude=exclude)
    assert torch.equal(expected, topk_items(queries @ items.T + bias, K, exclude=exclude))
    assert expected[:, 0].tolist().count(7) > 0  # the tie across the border is at stake
    plain = topk_items(queries @ items.T, K)
    k_above_c = topk_items(queries @ items.T + bias, 30)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for s in range(len(SPLITS)):
            assert torch.equal(got[f"split{s}"], expected), (rank, s)
            assert torch.equal(got[f"split{s}_plain"], plain), (rank, s)
            assert torch.equal(got[f"split{s}_k_above_c"], k_above_c), (rank, s)
            assert torch.equal(got[f"split{s}_described"], expected), (rank, s)
        assert "the number of rows of `input` must be the same on every rank" in got["rows_error"]
        assert "[30, 31] by rank" in got["rows_error"]
        assert got["offset_error"].startswith(
            f"`item_offset` must be {SPLITS[0][0]} on rank 1 of `process_group`"
        )
    own = torch.load(tmp_path / "rank1.pt", weights_only=True)["nan_error"]
    other = torch.load(tmp_path / "rank0.pt", weights_only=True)["nan_error"]
    assert "must not contain NaN" in own
    assert other == "rank 1 of `process_group` rejected its inputs (its own error says why)"
