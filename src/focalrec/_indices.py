"""The index-list convention shared by every public function of focalrec.

Recommenders have a few positives among thousands of items, so focalrec speaks one compact language
for them: an **index list** is an integer tensor of shape ``(N, m)`` whose row ``i`` holds item
indices in ``[0, C)`` for sample ``i``, padded with ``-1``. Within a row, a repeated index counts
once (at its first position, where order matters). As in :func:`torch.nn.functional.cross_entropy`,
*integer tensors are indices, floating and bool tensors are dense*.

This module is the one place that validates and normalizes index lists; the loss and the metrics
go through it.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "CHUNK_ELEMENTS",
    "INLINE_ELEMENTS",
    "PAD",
    "check_index_list",
    "count_unique",
    "dedupe",
    "dense_to_index_list",
    "first_occurrence",
    "index_list_to_dense",
    "is_index_list",
    "isin_rows",
    "row_blocks",
    "values_readable",
]

PAD = -1
"""The padding value of index lists."""

CHUNK_ELEMENTS = 1 << 24
"""Where rows of an ``(N, C)`` tensor must be copied, they are copied in blocks of about this many
elements, so that no ``(N, C)`` temporary is made."""

INLINE_ELEMENTS = 32768
"""torch runs a CPU op on at most this many elements in the calling thread (ATen's grain size).

The steps on ``(N, k)``-sized tensors run in row blocks of that size on CPU: each is too small to
gain from threads, and on a busy machine every trip through the thread pool costs milliseconds.
"""

_BROADCAST_VALUES = 32
"""Row-wise membership compares all pairs up to this many values per row, else binary-searches."""


def values_readable() -> bool:
    """Whether argument checks may read tensor values (a device-to-host sync).

    False while ``torch.compile`` traces (a read would break the graph) and inside ``torch.func``
    transforms (a batched tensor has no single value): there the checks that read values are
    skipped, as with ``validate_args=False``, and shapes and dtypes are still checked.

    Example:
        >>> values_readable()
        True
    """
    return not (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active())


def is_index_list(x: Tensor) -> bool:
    """Whether ``x`` follows the index-list convention (an integer dtype) rather than the dense one.

    Example:
        >>> is_index_list(torch.tensor([[3, -1]])), is_index_list(torch.tensor([[0.0, 1.0]]))
        (True, False)
    """
    return not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)


def check_index_list(
    x: object,
    name: str,
    *,
    num_rows: int | None = None,
    num_classes: int | None = None,
    validate_args: bool = True,
) -> None:
    """Raise a ``TypeError``/``ValueError`` naming ``name`` unless ``x`` is a valid index list.

    The dtype, the number of dimensions and the number of rows are always checked; the range check
    ``-1 <= x < num_classes`` reads the values (a device-to-host sync) and runs only when
    ``validate_args`` is true and :func:`values_readable`.

    Example:
        >>> check_index_list(torch.tensor([[0, 7]]), "target", num_classes=5)
        Traceback (most recent call last):
        ...
        ValueError: `target` holds item indices in [0, 7]; expected indices in [0, 5) or -1 ...
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if not is_index_list(x):
        raise TypeError(
            f"`{name}` must be an integer tensor of item indices padded with -1, "
            f"got dtype {x.dtype}"
        )
    if x.ndim != 2:
        raise ValueError(
            f"`{name}` must be an index list of shape (N, m), got shape {tuple(x.shape)}"
        )
    if num_rows is not None and x.shape[0] != num_rows:
        raise ValueError(
            f"`{name}` must have {num_rows} rows (one per sample), got shape {tuple(x.shape)}"
        )
    if validate_args and num_classes is not None and x.numel() > 0 and values_readable():
        lo, hi = (int(v) for v in torch.aminmax(x))
        if lo < PAD or hi >= num_classes:
            raise ValueError(
                f"`{name}` holds item indices in [{lo}, {hi}]; "
                f"expected indices in [0, {num_classes}) or -1 for padding"
            )


def first_occurrence(x: Tensor) -> Tensor:
    """Bool mask of the entries of an index list that are not padding and not repeats.

    ``mask[i, j]`` is true iff ``x[i, j] != -1`` and ``x[i, j]`` does not occur in ``x[i, :j]``.
    Costs one stable sort of each row, ``O(m log m)``, whatever the number of items.

    Example:
        >>> first_occurrence(torch.tensor([[4, 2, 4, -1, 2, 0]]))
        tensor([[ True,  True, False, False, False,  True]])
    """
    if x.shape[-1] <= 1:
        return x != PAD
    sorted_x, perm = x.sort(dim=-1, stable=True)
    repeat_sorted = torch.zeros_like(sorted_x, dtype=torch.bool)
    repeat_sorted[..., 1:] = sorted_x[..., 1:] == sorted_x[..., :-1]
    repeat = repeat_sorted.scatter(-1, perm, repeat_sorted)  # out of place: vmap has a rule
    return (x != PAD) & ~repeat


def dedupe(x: Tensor) -> Tensor:
    """Replace repeated indices by ``-1``, keeping each index at its first position.

    Example:
        >>> dedupe(torch.tensor([[4, 2, 4, -1, 2, 0]]))
        tensor([[ 4,  2, -1, -1, -1,  0]])
    """
    return x.masked_fill(~first_occurrence(x), PAD)


def count_unique(x: Tensor) -> Tensor:
    """Number of distinct valid indices in each row of an index list, an ``int64`` tensor ``(N,)``.

    Example:
        >>> count_unique(torch.tensor([[4, 2, 4, -1], [-1, -1, -1, -1]]))
        tensor([2, 0])
    """
    return first_occurrence(x).sum(dim=-1)


def index_list_to_dense(x: Tensor, num_classes: int, *, dtype: torch.dtype = torch.bool) -> Tensor:
    """Dense ``(N, num_classes)`` indicator of an index list (repeats and padding ignored).

    Builds an ``(N, C)`` tensor, so the library itself uses it only where a dense input was given
    anyway; it is public for users and tests.

    Example:
        >>> index_list_to_dense(torch.tensor([[2, 0, -1], [1, 1, -1]]), 4)
        tensor([[ True, False,  True, False],
                [False,  True, False, False]])
    """
    n = x.shape[0]
    out = torch.zeros(n, num_classes + 1, dtype=dtype, device=x.device)
    # Padding goes to an extra column that is dropped afterwards.
    idx = torch.where(x == PAD, num_classes, x).long()
    out.scatter_(1, idx, torch.ones_like(idx, dtype=dtype))
    return out[:, :num_classes].contiguous()


def dense_to_index_list(dense: Tensor) -> Tensor:
    """Index list of the nonzero entries of each row of ``dense``, ascending, padded with ``-1``.

    The width ``m`` is the largest number of nonzero entries in a row (at least 1); finding it
    reads one value from the device.

    Example:
        >>> dense_to_index_list(torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
        tensor([[ 1,  2],
                [-1, -1]])
    """
    mask = dense != 0
    width = max(int(mask.sum(dim=1).max()) if mask.numel() > 0 else 0, 1)
    # Stable sort of "is zero" puts the nonzero columns first, in ascending order.
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :width]
    keep = mask.gather(1, order) if order.numel() > 0 else mask[:, :0]
    return torch.where(keep, order, torch.full_like(order, PAD))


def row_blocks(n: int, width: int, device: torch.device) -> list[slice]:
    """Row blocks for steps on tensors of ``width`` elements per row (at least one block).

    On CPU the blocks hold at most :data:`INLINE_ELEMENTS` elements, which torch runs in the
    calling thread; elsewhere they only bound temporaries to about :data:`CHUNK_ELEMENTS`.

    Example:
        >>> row_blocks(5, 16384, torch.device("cpu"))
        [slice(0, 2, None), slice(2, 4, None), slice(4, 6, None)]
    """
    limit = INLINE_ELEMENTS if device.type == "cpu" else CHUNK_ELEMENTS
    step = max(1, limit // max(width, 1))
    return [slice(start, start + step) for start in range(0, n, step)] or [slice(0, 0)]


def isin_rows(values: Tensor, sets: Tensor) -> Tensor:
    """``out[i, j] = values[i, j] in sets[i]`` for integer tensors ``(N, a)`` and ``(N, b)``.

    A few values per row (the usual case: top-k candidates against targets or a history) are
    compared with every set member in one broadcast (in row blocks on CPU, see
    :func:`row_blocks`); many values per row binary-search the sorted sets instead. Padding is
    not special: ``-1`` is in a set that holds ``-1``. Reads no value back from the device.

    Example:
        >>> isin_rows(torch.tensor([[3, 1, -1], [2, 2, 0]]), torch.tensor([[1, -1], [0, 5]]))
        tensor([[False,  True,  True],
                [False, False,  True]])
    """
    a, b = values.shape[1], sets.shape[1]
    if a == 0 or b == 0:
        return torch.zeros(values.shape, dtype=torch.bool, device=values.device)
    if a <= _BROADCAST_VALUES:
        return torch.cat(
            [
                (values[rows].unsqueeze(2) == sets[rows].unsqueeze(1)).any(dim=2)
                for rows in row_blocks(values.shape[0], a * b, values.device)
            ]
        )
    sorted_sets = sets.to(values.dtype).sort(dim=1).values
    values = values.contiguous()
    pos = torch.searchsorted(sorted_sets, values).clamp_(max=b - 1)
    return sorted_sets.gather(1, pos) == values
