"""The output layer split by item ranges over the processes of torch.distributed.

torchrun --nproc-per-node 2 docs/snippets/sharded_training.py
"""

import os
import tempfile

import torch
import torch.distributed as dist
from torch import nn

from focalrec import LinearFocalLoss


def main() -> None:
    torch.manual_seed(0)  # the same trunk, the same batches and the same init on every rank
    num_items, dim = 100_000, 64
    trunk = nn.Sequential(nn.Linear(32, dim), nn.ReLU())  # replicated
    head = LinearFocalLoss(
        dim,
        num_items,
        prior=3 / num_items,
        reduction="sum_over_positives",
        process_group=dist.group.WORLD,
    )
    rank = dist.get_rank()
    print(f"rank {rank}: items [{head.item_offset}, {head.item_offset + head.num_items_local})")
    optimizer = torch.optim.Adam([*trunk.parameters(), *head.parameters()], lr=1e-3)
    for step in range(3):
        inputs = torch.randn(256, 32)
        targets = torch.randint(0, num_items, (256, 3))  # catalogue ids, the same on every rank
        loss = head(trunk(inputs), targets)  # the loss over the whole catalogue, on every rank
        optimizer.zero_grad()
        loss.backward()  # the trunk's gradient: summed over the ranks (one all-reduce)
        optimizer.step()
        if rank == 0:
            print(f"step {step}: loss {loss.item():.6f}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        if "RANK" in os.environ:  # started by torchrun
            dist.init_process_group("gloo")
        else:  # started by hand: a group of one process
            dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=0, world_size=1)
        try:
            main()
        finally:
            dist.destroy_process_group()
