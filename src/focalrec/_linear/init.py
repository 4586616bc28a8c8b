"""An item layer split by item ranges: each rank's range, initialized as ``nn.Linear`` would
initialize the whole layer."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from focalrec.priors import init_prior_bias_

__all__ = ["init_item_layer_", "item_range", "uniform_rows_"]

_INIT_BLOCK_ELEMENTS = 1 << 22  # values drawn at once when a rank initializes its item range


def uniform_rows_(out: Tensor, start: int, total: int, bound: float) -> None:
    """Fill ``out`` (CPU) with rows ``[start, start + len(out))`` of a ``(total, *out.shape[1:])``
    ``uniform_(-bound, bound)`` draw, block by block, drawing (and dropping) the other rows too
    so the generator ends where the whole draw leaves it."""
    width = math.prod(out.shape[1:])
    step = max(1, _INIT_BLOCK_ELEMENTS // max(width, 1))
    end = start + out.shape[0]
    for lo in range(0, total, step):
        hi = min(total, lo + step)
        block = torch.empty((hi - lo, *out.shape[1:]), dtype=out.dtype).uniform_(-bound, bound)
        a, b = max(lo, start), min(hi, end)
        if a < b:
            out[a - start : b - start].copy_(block[a - lo : b - lo])


def item_range(num_items: int, process_group: dist.ProcessGroup | None) -> tuple[int, int]:
    """``(offset, count)`` of this rank's contiguous range of ``num_items`` items: rank ``r`` of
    ``R`` holds ``num_items // R`` items, one more for the first ``num_items % R`` ranks."""
    rank, ranks = (0, 1)
    if process_group is not None:
        rank, ranks = dist.get_rank(process_group), dist.get_world_size(process_group)
    sizes = [num_items // ranks + (r < num_items % ranks) for r in range(ranks)]
    return sum(sizes[:rank]), sizes[rank]


def init_item_layer_(
    weight: Tensor, bias: Tensor | None, offset: int, num_items: int, prior: float | Tensor | None
) -> None:
    """``nn.Linear``'s initialization of rows ``[offset, offset + len(weight))`` of a layer of
    ``num_items`` rows, then the bias at the logit of ``prior`` (this range's values).

    A rank of an item split gets the rows that ``nn.Linear(in_features, num_items)`` on the CPU
    would draw for its range, and leaves the generator where that draw does: the same seed gives
    the split layer the unsplit one's weights, whatever the number of ranks.
    """
    fan_in = weight.shape[1]
    if weight.shape[0] == num_items:
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        if bias is not None:
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(bias, -bound, bound)
    else:
        # nn.Linear: kaiming_uniform_(a=sqrt(5)) for the weight, then U(+-1/sqrt(fan_in)).
        gain = nn.init.calculate_gain("leaky_relu", math.sqrt(5))
        bound = math.sqrt(3.0) * gain / math.sqrt(fan_in) if fan_in > 0 else 0.0
        params = [(weight, bound)]
        if bias is not None:
            params.append((bias, 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0))
        with torch.no_grad():
            for param, b in params:
                if param.numel() == 0 and fan_in == 0:
                    continue  # nn.init leaves a layer without inputs as it is
                rows = torch.empty(param.shape, dtype=param.dtype)
                uniform_rows_(rows, offset, num_items, b)
                param.copy_(rows)
    if bias is not None and prior is not None:
        init_prior_bias_(bias, prior)
