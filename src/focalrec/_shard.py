"""Item shards: one description of a catalogue split into item ranges across processes.

Every function that can hold part of the catalogue (the fused loss, :class:`LinearFocalLoss`,
top-k from embeddings) takes the same argument set, with the same meaning:

- ``item_offset``: the catalogue id of the first item this process holds (row 0 of its
  ``linear_weight``);
- ``num_items``: the size of the whole catalogue (index lists hold ids below it);
- ``process_group``: the processes that hold the other ranges, each a contiguous range, in rank
  order.

Left out (``None``), ``item_offset`` and ``num_items`` are those of the ranges as the processes
hold them: without a group, ``0`` and the number of items held here; with a group, found by one
all-gather of every rank's number of items (uneven or empty ranges allowed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from focalrec._checks import check_int

__all__ = ["check_offsets", "gather_sizes", "item_layout"]


def gather_sizes(
    sizes: Sequence[int], group: dist.ProcessGroup, device: torch.device
) -> list[list[int]]:
    """Every rank's ``sizes`` (the same number of ints on each), in rank order: one all-gather."""
    mine = torch.tensor(list(sizes), dtype=torch.int64, device=device)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, mine, group=group)
    return [[int(v) for v in row] for row in torch.stack(gathered).tolist()]


def item_layout(
    num_local: int,
    item_offset: int | None,
    num_items: int | None,
    group: dist.ProcessGroup | None,
    counts: Sequence[int] | None = None,
) -> tuple[int, int]:
    """``(item_offset, num_items)`` of this process: the given values, else inferred from the
    ranks' item ``counts`` (gathered by the caller, in rank order; needed with a group when a
    value is left out). Checks that the range ``[item_offset, item_offset + num_local)`` lies
    in the catalogue."""
    if item_offset is not None:
        check_int(item_offset, "item_offset", minimum=0)
    if num_items is not None:
        check_int(num_items, "num_items", minimum=0)
    if group is None or counts is None:
        offset = 0 if item_offset is None else item_offset
        total = offset + num_local if num_items is None else num_items
    else:
        offset = sum(counts[: dist.get_rank(group)]) if item_offset is None else item_offset
        total = sum(counts) if num_items is None else num_items
    if total < offset + num_local:
        raise ValueError(
            f"`num_items` must be an int >= item_offset + C = {offset + num_local}, got {total}"
        )
    return offset, total


def check_offsets(counts: Sequence[int], offsets: Sequence[int | None]) -> None:
    """Every rank's given ``item_offset`` (None: left out) against the ranges the ranks hold in
    rank order; raised alike on every rank, which all see the same gathered table."""
    for rank, given in enumerate(offsets):
        expected = sum(counts[:rank])
        if given is not None and given != expected:
            raise ValueError(
                f"`item_offset` must be {expected} on rank {rank} of `process_group` (the items "
                f"of the lower ranks, {list(counts[:rank])}), got {given}"
            )
