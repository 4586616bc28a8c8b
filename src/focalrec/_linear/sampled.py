r"""The fused layer over sampled negatives: each row's positives and ``k`` given item ids only.

The logits of the scored items are formed from their rows of the weight, ``(N, P + k)`` of them
(``P`` the width of the index-list target), at a cost of :math:`N (P + k) d`: per-row negatives
on CPUs by :class:`_GatheredDot`, a block of rows at a time, elsewhere by one gather and a
batched matmul, shared ones by one matmul. The focal terms
are :func:`focalrec.sigmoid_focal_loss`'s on those logits (targets 1 for the positives, 0 for
the negatives), and backward scatters the gradients into the rows of the weight and the bias that
were scored (an ``index_add`` into a dense gradient, or, with ``sparse_grad``, a sparse COO
gradient holding those rows only, as ``nn.Embedding(sparse=True)`` gives). Nothing of size
``(N, C)`` is formed and no matmul runs over the whole catalogue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from focalrec._checks import (
    check_chunk_size,
    check_linear_layer,
    check_process_group,
    check_same_device,
)
from focalrec._indices import (
    check_index_list,
    first_occurrence,
    is_index_list,
    isin_rows,
    values_readable,
)
from focalrec._linear.loop import finish_divisor
from focalrec._linear.plan import Family, autocast_dtype, check_reduction
from focalrec._shard import gather_sizes, item_layout
from focalrec.losses import (
    _check_hyper,
    _check_pos_weight,
    _check_weight,
    _sigmoid_loss,
    _stable_sum,
)

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = [
    "ACCIDENTAL_HITS",
    "AccidentalHits",
    "check_accidental_hits",
    "check_negatives",
    "check_sparse_grad",
    "sampled_loss",
]

AccidentalHits = Literal["remove", "keep"]
ACCIDENTAL_HITS: tuple[str, ...] = ("remove", "keep")
"""The accepted values of ``accidental_hits``."""


def check_accidental_hits(accidental_hits: object) -> None:
    if accidental_hits not in ACCIDENTAL_HITS:
        raise ValueError(
            f"`accidental_hits` must be one of {ACCIDENTAL_HITS}, got {accidental_hits!r}"
        )


def check_sparse_grad(sparse_grad: object, with_negatives: bool = True) -> None:
    """``sparse_grad`` is a bool, and ``True`` only in a call with ``negatives`` (over the whole
    catalogue every row of the weight gets a gradient)."""
    if not isinstance(sparse_grad, bool):
        raise TypeError(f"`sparse_grad` must be a bool, got {type(sparse_grad).__name__}")
    if sparse_grad and not with_negatives:
        raise ValueError(
            "`sparse_grad=True` needs `negatives`: over the whole catalogue every row of the "
            "weight gets a gradient, which is dense"
        )


def check_negatives(
    negatives: object, input: Tensor, num_items: int, validate_args: bool
) -> Tensor:
    """``negatives`` as an ``(N, k)`` int64 tensor (a ``(k,)`` one expanded, not copied), after
    checking its type, dtype, device, shape and (with ``validate_args``) its ids."""
    if not isinstance(negatives, Tensor):
        got = type(negatives).__name__
        raise TypeError(f"`negatives` must be a torch.Tensor or None, got {got}")
    if not is_index_list(negatives):
        raise TypeError(
            f"`negatives` must be an integer tensor of catalogue item ids, got dtype "
            f"{negatives.dtype}"
        )
    check_same_device(negatives, "negatives", input, "input")
    n = input.shape[0]
    if negatives.ndim not in (1, 2) or (negatives.ndim == 2 and negatives.shape[0] != n):
        raise ValueError(
            f"`negatives` must have shape (k,) (shared by the batch) or ({n}, k) (one row of "
            f"ids per row of `input`), got shape {tuple(negatives.shape)}"
        )
    if validate_args and negatives.numel() > 0:
        lo, hi = (int(v) for v in torch.aminmax(negatives))
        if lo < 0 or hi >= num_items:
            raise ValueError(
                f"`negatives` holds item ids in [{lo}, {hi}]; expected catalogue ids in "
                f"[0, {num_items})"
            )
    return negatives.to(torch.int64)


def sampled_loss(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    negatives: Tensor,
    linear_bias: Tensor | None,
    family: Family,
    *,
    reduction: str,
    weight: Tensor | None,
    chunk_size: tuple[int, int] | None,
    item_offset: int | None,
    num_items: int | None,
    process_group: ProcessGroup | None,
    accidental_hits: str,
    sparse_grad: bool,
    validate_args: bool,
) -> Tensor:
    """The loss of :func:`focalrec.linear_sigmoid_focal_loss` with ``negatives`` (its docstring
    states what it is)."""
    autocast = autocast_dtype(input, linear_weight, linear_bias)
    check_linear_layer(input, linear_weight, linear_bias, same_dtype=autocast is None)
    n, c = input.shape[0], linear_weight.shape[0]
    check_reduction(reduction)
    check_accidental_hits(accidental_hits)
    check_sparse_grad(sparse_grad)
    read_values = validate_args and values_readable()
    _check_hyper(family.alpha, family.gamma, reduction, c, read_values)
    _check_pos_weight(family.pos_weight, c, input, read_values)
    check_chunk_size(chunk_size)
    check_process_group(process_group)
    if not isinstance(target, Tensor):
        raise TypeError(f"`target` must be a torch.Tensor, got {type(target).__name__}")
    check_same_device(target, "target", input, "input")
    if not is_index_list(target):
        raise ValueError(
            "`target` must be an index list (N, m) of catalogue ids when `negatives` is given "
            f"(the positives are scored with the sampled items), got a dense target of dtype "
            f"{target.dtype} and shape {tuple(target.shape)}"
        )
    counts = None
    if process_group is not None and (item_offset is None or (num_items is None and read_values)):
        counts = [row[0] for row in gather_sizes([c], process_group, input.device)]
    offset, catalogue = item_layout(c, item_offset, num_items, process_group, counts)
    check_index_list(target, "target", num_rows=n, num_classes=catalogue, validate_args=read_values)
    neg = check_negatives(negatives, input, catalogue, read_values)
    if weight is not None:
        _check_weight(weight, (n, c), read_values)
    if process_group is not None:
        return _over_group()(
            input, linear_weight, linear_bias, target, neg, family, reduction, weight,
            offset, accidental_hits, sparse_grad, process_group,
        )  # fmt: skip
    total, divisor_part = _local_terms(
        input, linear_weight, linear_bias, target, neg, family, reduction, weight,
        offset, accidental_hits, sparse_grad,
    )  # fmt: skip
    divisor = finish_divisor(reduction, divisor_part)
    return total / divisor.to(total.dtype)


def _local_terms(
    x: Tensor,
    w: Tensor,
    b: Tensor | None,
    target: Tensor,
    neg: Tensor,
    family: Family,
    reduction: str,
    weight: Tensor | None,
    offset: int,
    accidental_hits: str,
    sparse_grad: bool,
) -> tuple[Tensor, Tensor]:
    """``(sum, divisor_part)``: the weighted sum of the focal terms of this range's scored
    entries (differentiable) and their count for the reduction's divisor (float64)."""
    n, c, d = x.shape[0], w.shape[0], x.shape[1]
    m = target.shape[1]
    k = neg.shape[-1]
    shared = neg.ndim == 1
    neg_rows = neg.expand(n, k)
    # Which entries are scored here: distinct positives and negatives in this range, and,
    # with accidental_hits="remove", no negative equal to one of its row's positives.
    pos_local = target.to(torch.int64) - offset
    neg_local = neg - offset
    keep_pos = first_occurrence(target) & (pos_local >= 0) & (pos_local < c)
    keep_neg = (neg_local >= 0) & (neg_local < c)
    if accidental_hits == "remove" and m > 0 and k > 0:
        if shared:
            keep_neg = keep_neg & ~isin_rows(neg_rows, target)
        else:
            keep_neg = keep_neg & ~isin_rows(neg, target)
    keep_neg = keep_neg.expand(n, k)
    sparse = sparse_grad and c > 0  # an empty range's gradients are empty, and dense
    if c == 0:  # an empty range: one zero row to gather from, still in the graph of w and b
        w = torch.cat([w, w.new_zeros(1, d)])
        b = None if b is None else torch.cat([b, b.new_zeros(1)])
    top = max(c - 1, 0)
    pos_cols = pos_local.clamp(0, top)
    neg_cols = neg_local.clamp(0, top)
    # The logits: one gather per parameter (so that backward scatters into one (C, d)
    # gradient, an index_add) and a batched matmul over each row's rows; shared negatives are
    # gathered once and scored by one matmul.
    if shared:
        picked = torch.cat([pos_cols.reshape(-1), neg_cols])
        sizes = [n * m, k]  # split, not sliced: a slice's backward fills a zero tensor
        w_pos, w_neg = _rows(w, picked, sparse).split_with_sizes(sizes)
        z_pos = torch.bmm(w_pos.view(n, m, d), x.unsqueeze(-1)).squeeze(-1)
        logits = torch.cat([z_pos, (x @ w_neg.t())], dim=1)
    else:
        scored = torch.cat([pos_cols, neg_cols], dim=1)
        picked = scored.reshape(-1)
        if x.device.type == "cpu" and _plain_autograd():
            logits = _GatheredDot.apply(x, w, scored, sparse)  # type: ignore[no-untyped-call]
        else:  # the same as operations, which every transform and torch.compile take (and
            # accelerators, whose caching allocators make one large gather cheap)
            w_rows = _rows(w, picked, sparse).view(n, m + k, d)
            logits = torch.bmm(w_rows, x.unsqueeze(-1)).squeeze(-1)
    if b is not None:
        bias = _rows(b, picked, sparse)
        if shared:
            b_pos, b_neg = bias.split_with_sizes(sizes)
            bias = torch.cat([b_pos.view(n, m), b_neg.expand(n, k)], dim=1)
        logits = logits + bias.view(n, m + k)
    cd = torch.promote_types(logits.dtype, torch.float32)
    cols = torch.cat([pos_cols, neg_cols.expand(n, k)], dim=1)
    keep = torch.cat([keep_pos, keep_neg], dim=1).to(cd)
    entry_weight = keep
    if weight is not None and c > 0:
        entry_weight = keep * weight.to(device=x.device, dtype=cd).expand(n, c).gather(1, cols)
    labels = torch.cat([keep_pos.new_ones(n, m), keep_pos.new_zeros(n, k)], dim=1).to(cd)
    if reduction == "mean":
        divisor_part = _stable_sum(entry_weight)
    elif reduction == "sum_over_positives":
        divisor_part = _stable_sum(entry_weight[:, :m])
    else:
        divisor_part = torch.zeros((), dtype=torch.float64, device=x.device)
    # Per-item alpha and pos_weight become per-entry factors of the terms' weights (the
    # entries are not the items); scalars go to the loss as they are.
    term_weight = entry_weight
    alpha, pos_weight = family.alpha, family.pos_weight
    if isinstance(alpha, Tensor):
        if c > 0:
            a = alpha.to(device=x.device, dtype=cd)[cols]
            term_weight = term_weight * (a * labels + (1 - a) * (1 - labels))
        alpha = None
    if isinstance(pos_weight, Tensor):
        if c > 0:
            pw = pos_weight.to(device=x.device, dtype=cd).expand(c)[cols]
            term_weight = term_weight * (pw * labels + (1 - labels))
        pos_weight = None
    total = _sigmoid_loss(
        logits,
        labels,
        alpha=alpha,
        gamma=family.gamma,
        gamma_neg=family.gamma_neg,
        clip=family.clip,
        pos_weight=pos_weight,
        reduction="sum",
        weight=term_weight,
        validate_args=False,
    )
    return total, divisor_part


def _rows(source: Tensor, index: Tensor, sparse: bool) -> Tensor:
    """``source[index]`` along dim 0, whose backward scatters into a dense gradient of
    ``source`` or, with ``sparse``, gives a sparse COO one (``F.embedding(sparse=True)``'s)."""
    if not sparse:
        return source.index_select(0, index)
    if source.ndim == 1:  # a bias (embedding takes (C, e), and a view would refuse the
        # sparse gradient)
        return torch.gather(source, 0, index, sparse_grad=True)
    return F.embedding(index, source, sparse=True)


def _plain_autograd() -> bool:
    """Whether no ``torch.compile`` tracing, ``torch.func`` transform or forward-mode AD level is
    active: where :class:`_GatheredDot` serves (dynamo cannot trace its sparse gradient, and it
    has no vmap or jvp rule)."""
    return (
        not torch.compiler.is_compiling()
        and torch._C._functorch.peek_interpreter_stack() is None
        and torch.autograd.forward_ad._current_level < 0
    )


_BLOCK_BYTES = 1 << 20
"""The gathered rows of the weight that :class:`_GatheredDot` holds at once: about 1 MiB."""


def _block_rows(w: Tensor, j: int) -> int:
    """The rows of ``x`` per block of :class:`_GatheredDot`: their ``j`` gathered rows of ``w``
    fill about ``_BLOCK_BYTES`` (at least one row)."""
    return max(1, _BLOCK_BYTES // max(1, j * w.shape[1] * w.element_size()))


class _GatheredDot(torch.autograd.Function):
    """``logits[i, j] = w[cols[i, j]] . x[i]`` for ``x`` ``(N, d)``, ``w`` ``(C, d)`` and
    ``cols`` ``(N, J)``, without holding the ``(N, J, d)`` gathered rows at once: blocks of rows
    are gathered into one buffer of about ``_BLOCK_BYTES`` and scored. On CPUs a fresh tensor of
    that size would cost more than the products themselves where the allocator maps new pages
    for it on every call (glibc does above 32 MiB). Backward gathers the blocks again for the
    gradient of ``x``; the gradient of ``w`` is ``g[i, j] x[i]`` added into its rows
    ``cols[i, j]``: into a dense zero gradient block by block, or, with ``sparse``, one sparse
    COO tensor (the rows ``cols`` flattened, uncoalesced, as ``F.embedding(sparse=True)``
    gives)."""

    @staticmethod
    def forward(x: Tensor, w: Tensor, cols: Tensor, sparse: bool) -> Tensor:
        n, j = cols.shape
        d = x.shape[1]
        step = _block_rows(w, j)
        buffer = w.new_empty(min(n, step) * j, d)
        blocks = []
        for lo in range(0, n, step):
            ids = cols[lo : lo + step].reshape(-1)
            rows = torch.index_select(w, 0, ids, out=buffer[: ids.numel()])
            size = min(step, n - lo)
            blocks.append(torch.bmm(rows.view(size, j, d), x[lo : lo + step, :, None])[..., 0])
        return torch.cat(blocks) if blocks else x.new_zeros(n, j)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, w, cols, sparse = inputs
        ctx.save_for_backward(x, w, cols)
        ctx.sparse = sparse

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, w, cols = ctx.saved_tensors
        n, j = cols.shape
        d = x.shape[1]
        step = _block_rows(w, j)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            blocks = [
                torch.bmm(
                    grad[lo : lo + step, None, :].to(w.dtype),
                    w.index_select(0, cols[lo : lo + step].reshape(-1)).view(
                        min(step, n - lo), j, d
                    ),
                )[:, 0]
                for lo in range(0, n, step)
            ]
            grad_x = torch.cat(blocks).to(x.dtype) if blocks else torch.zeros_like(x)
        if ctx.needs_input_grad[1]:
            if ctx.sparse:
                values = (grad[..., None] * x[:, None, :]).to(w.dtype).reshape(-1, d)
                # F.embedding(sparse=True)'s backward: (ids, values) as a sparse COO tensor
                grad_w = torch.ops.aten.embedding_backward(
                    values, cols.reshape(-1), w.shape[0], -1, False, True
                )
            else:
                grad_w = torch.zeros_like(w)
                for lo in range(0, n, step):
                    terms = grad[lo : lo + step, :, None] * x[lo : lo + step, None, :]
                    ids = cols[lo : lo + step].reshape(-1)
                    grad_w.index_add_(0, ids, terms.to(w.dtype).reshape(-1, d))
        return grad_x, grad_w, None, None


def _over_group_impl(
    x: Tensor,
    w: Tensor,
    b: Tensor | None,
    target: Tensor,
    neg: Tensor,
    family: Family,
    reduction: str,
    weight: Tensor | None,
    offset: int,
    accidental_hits: str,
    sparse_grad: bool,
    group: ProcessGroup,
) -> Tensor:
    """Over a process group: this range's terms, the sum and divisor all-reduced (one
    all-reduce of two numbers), the gradient of ``x`` all-reduced in backward."""
    x_all = _AllReduceGrad.apply(x, group) if x.requires_grad else x  # type: ignore[no-untyped-call]
    total, divisor_part = _local_terms(
        x_all, w, b, target, neg, family, reduction, weight, offset, accidental_hits, sparse_grad
    )
    stats = torch.stack([total.detach().to(torch.float64), divisor_part])
    dist.all_reduce(stats, group=group)
    divisor = finish_divisor(reduction, stats[1])
    others = ((stats[0] - total.detach().double()) / divisor).to(total.dtype)
    return total / divisor.to(total.dtype) + others


class _AllReduceGrad(torch.autograd.Function):
    """Identity whose backward sums the gradient over the group: every rank's terms depend on
    the same ``input``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: ProcessGroup) -> Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


_OVER_GROUP: list[Callable[..., Tensor]] = []

_OVER_GROUP_REASON = (
    "linear_sigmoid_focal_loss with negatives and a process_group runs eagerly under "
    "torch.compile: its all-reduces stay outside the graph (a graph break; fullgraph=True raises)"
)


def _over_group() -> Callable[..., Tensor]:
    """:func:`_over_group_impl`; under ``torch.compile``, the same under
    ``torch.compiler.disable`` (made by the first call over a group, eager or compiled, so that
    a compiled call's graph break says why)."""
    if not _OVER_GROUP:
        disabled = torch.compiler.disable(_over_group_impl, reason=_OVER_GROUP_REASON)  # type: ignore[no-untyped-call]
        _OVER_GROUP.append(disabled)
    return _OVER_GROUP[0] if torch.compiler.is_compiling() else _over_group_impl
