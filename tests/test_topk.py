"""Top-k from embeddings against the materialized scores; the accelerator path reads nothing back.

Integer-valued embeddings make every summation order exact, so a product over any block of items
equals the full product bit for bit: the streamed list must then equal ``topk_items`` of the full
scores exactly, and the plain-Python reference of ``test_ranking``.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import NamedTuple

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from focalrec import (
    MeanAveragePrecisionAtK,
    map_at_k,
    ranking_metrics_at_k,
    topk_items,
    topk_items_from_embeddings,
)
from host_reads import HostReadError, no_host_reads, sync_free_path
from test_ranking import ref_topk

NAN = math.nan
# Integers this small are exact in every dtype, and so are their dot products (d <= 4).
EMBEDDING_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


class Factors(NamedTuple):
    queries: torch.Tensor
    items: torch.Tensor
    bias: torch.Tensor | None
    exclude: torch.Tensor | None
    k: int


def full_scores(f: Factors) -> torch.Tensor:
    """The materialized scores, in float64 (exact here)."""
    scores = f.queries.double() @ f.items.double().T
    return scores if f.bias is None else scores + f.bias.double()


@st.composite
def factor_cases(draw: st.DrawFn) -> Factors:
    n = draw(st.integers(0, 6))
    c = draw(st.integers(0, 30))
    d = draw(st.integers(1, 4))
    k = draw(st.integers(1, 8))
    ints = st.integers(-2, 2)  # few distinct scores: ties everywhere, across every chunk border
    queries = torch.tensor([[draw(ints) for _ in range(d)] for _ in range(n)]).reshape(n, d)
    items = torch.tensor([[draw(ints) for _ in range(d)] for _ in range(c)]).reshape(c, d)
    bias = torch.tensor([draw(ints) for _ in range(c)]) if draw(st.booleans()) else None
    exclude = None
    if c > 0 and draw(st.booleans()):
        h = draw(st.integers(0, c + 2))  # repeats, padding, up to every item
        rows = [[draw(st.integers(-1, c - 1)) for _ in range(h)] for _ in range(n)]
        exclude = torch.tensor(rows, dtype=torch.long).reshape(n, h)
    dtype = draw(st.sampled_from(EMBEDDING_DTYPES))
    return Factors(
        queries.to(dtype), items.to(dtype), None if bias is None else bias.to(dtype), exclude, k
    )


@settings(max_examples=150)
@given(
    factor_cases(),
    st.one_of(st.none(), st.tuples(st.integers(1, 9), st.integers(1, 12))),
    st.booleans(),
)
def test_streamed_list_equals_the_materialized_one(
    f: Factors, chunk_size: tuple[int, int] | None, sync_free: bool
) -> None:
    with sync_free_path(sync_free), no_host_reads() if sync_free else nullcontext():
        got = topk_items_from_embeddings(
            f.queries,
            f.items,
            f.k,
            linear_bias=f.bias,
            exclude=f.exclude,
            chunk_size=chunk_size,
            validate_args=not sync_free,
        )
    scores = full_scores(f)
    exclude = f.exclude if f.exclude is not None else torch.empty(scores.shape[0], 0).long()
    expected = [ref_topk(s, f.k, e) for s, e in zip(scores.tolist(), exclude.tolist(), strict=True)]
    assert got.dtype == torch.long
    assert got.tolist() == expected
    # The statement, literally: topk_items of the materialized product (float32 here).
    reference = f.queries.float() @ f.items.float().T
    if f.bias is not None:
        reference = reference + f.bias.float()
    assert torch.equal(got, topk_items(reference, f.k, exclude=f.exclude))


def test_ties_across_chunk_borders_go_to_the_lower_index() -> None:
    # Every item scores the same: the lowest indices win, whatever the chunking.
    queries = torch.ones(3, 2)
    items = torch.ones(10, 2)
    for chunk_size in ((1, 1), (1, 3), (2, 4), (3, 7), (1, 10), (8, 64)):
        got = topk_items_from_embeddings(queries, items, 4, chunk_size=chunk_size)
        assert got.tolist() == [[0, 1, 2, 3]] * 3, chunk_size
    # The best value sits at the end of one chunk and the start of the next (chunks of 3 items:
    # 0-2, 3-5, 6-8, 9): items 2, 3, 8 and 9 tie on top.
    bias = torch.tensor([0.0, 0.0, 5.0, 5.0, 1.0, 1.0, 1.0, 1.0, 5.0, 5.0])
    got = topk_items_from_embeddings(queries, items, 5, linear_bias=bias, chunk_size=(2, 3))
    assert got.tolist() == [[2, 3, 8, 9, 4]] * 3


def test_exclusions_at_chunk_borders() -> None:
    queries = torch.ones(2, 1)
    items = torch.ones(9, 1)
    # Chunks of 3 items; the excluded items are the first and last of chunks, and padding.
    exclude = torch.tensor([[2, 3, -1, 5, 6], [0, 8, 8, -1, -1]])
    got = topk_items_from_embeddings(queries, items, 4, exclude=exclude, chunk_size=(1, 3))
    assert got.tolist() == [[0, 1, 4, 7], [1, 2, 3, 4]]
    # Everything excluded but one item: the list is padded.
    exclude = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7], [8, 7, 6, 5, 4, 3, 2, 1]])
    got = topk_items_from_embeddings(queries, items, 3, exclude=exclude, chunk_size=(2, 3))
    assert got.tolist() == [[8, -1, -1], [0, -1, -1]]


def test_k_above_the_number_of_items_and_empty_inputs() -> None:
    queries = torch.tensor([[1.0], [-1.0]])
    items = torch.tensor([[1.0], [3.0], [2.0]])
    got = topk_items_from_embeddings(queries, items, 5, chunk_size=(1, 2))
    assert got.tolist() == [[1, 2, 0, -1, -1], [0, 2, 1, -1, -1]]
    assert topk_items_from_embeddings(torch.zeros(0, 4), torch.zeros(7, 4), 3).shape == (0, 3)
    none = topk_items_from_embeddings(torch.zeros(2, 4), torch.zeros(0, 4), 3)
    assert none.tolist() == [[-1, -1, -1]] * 2
    bias = torch.zeros(0)
    assert topk_items_from_embeddings(
        torch.zeros(0, 4), torch.zeros(0, 4), 1, linear_bias=bias
    ).shape == (0, 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_multiplied_in_float32(dtype: torch.dtype) -> None:
    # 2048 + 1 rounds to 2048 in float16 and bfloat16 (a tie: item 0 first); in float32 it is
    # exact, and item 1 is first.
    queries = torch.tensor([[1.0, 1.0]], dtype=dtype)
    items = torch.tensor([[2048.0, 0.0], [2048.0, 1.0]], dtype=dtype)
    half = queries @ items.T
    assert half[0, 0] == half[0, 1]
    assert topk_items_from_embeddings(queries, items, 2).tolist() == [[1, 0]]
    assert topk_items(queries.float() @ items.float().T, 2).tolist() == [[1, 0]]


def test_many_row_blocks_and_float64_random_scores() -> None:
    # Blocks of 4 rows x 4,096 items (50 row blocks x 3 chunks, the last one shorter); then
    # 24 x 4,096, then one block (the default shape at this size). The chunking must not change
    # the list (float64 random scores: no ties, and no two scores within rounding of each other).
    gen = torch.Generator().manual_seed(0)
    queries = torch.randn(200, 8, generator=gen, dtype=torch.float64)
    items = torch.randn(10_000, 8, generator=gen, dtype=torch.float64)
    bias = torch.randn(10_000, generator=gen, dtype=torch.float64)
    exclude = torch.randint(-1, 10_000, (200, 5), generator=gen)
    expected = topk_items(queries @ items.T + bias, 7, exclude=exclude)
    for chunk_size in ((4, 4096), (24, 4096), None):
        got = topk_items_from_embeddings(
            queries, items, 7, linear_bias=bias, exclude=exclude, chunk_size=chunk_size
        )
        assert torch.equal(got, expected), chunk_size


def test_output_is_a_ranked_list_for_the_metrics() -> None:
    gen = torch.Generator().manual_seed(1)
    queries = torch.randint(-3, 4, (40, 6), generator=gen).float()
    items = torch.randint(-3, 4, (50, 6), generator=gen).float()
    targets = torch.randint(-1, 50, (40, 3), generator=gen)
    exclude = torch.randint(-1, 50, (40, 4), generator=gen)
    ranked = topk_items_from_embeddings(queries, items, 5, exclude=exclude, chunk_size=(3, 7))
    scores = queries @ items.T
    assert torch.equal(map_at_k(ranked, targets, 5), map_at_k(scores, targets, 5, exclude=exclude))
    from_list = ranking_metrics_at_k(ranked, targets, 5)
    from_scores = ranking_metrics_at_k(scores, targets, 5, exclude=exclude)
    for name, value in from_scores.items():
        assert torch.equal(from_list[name], value), name


def test_nan_scores_rejected_or_ranked_first() -> None:
    queries = torch.ones(5, 2)
    queries[3] = math.inf
    items = torch.ones(6, 2)
    items[0, 1] = -1.0  # row 3: inf - inf
    bias = torch.zeros(6)
    bias[2] = -math.inf  # row 3: inf - inf again; other rows: -inf
    # Row blocks of 1 row: the error names the row of the whole batch.
    with pytest.raises(
        ValueError,
        match=r"the scores `input @ linear_weight.T \+ linear_bias` must not contain NaN; "
        r"row 3 holds a NaN score",
    ):
        topk_items_from_embeddings(queries, items, 2, linear_bias=bias, chunk_size=(1, 3))
    got = topk_items_from_embeddings(
        queries, items, 3, linear_bias=bias, chunk_size=(1, 3), validate_args=False
    )
    assert torch.equal(got, topk_items(queries @ items.T + bias, 3, validate_args=False))
    assert got.tolist() == [[1, 3, 4]] * 3 + [[0, 2, 1]] + [[1, 3, 4]]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input": [[1.0]]}, TypeError, r"`input` must be a torch.Tensor, got list"),
        (
            {"input": torch.ones(2, 3, dtype=torch.long)},
            TypeError,
            r"`input` must be a floating-point tensor, got dtype torch.int64",
        ),
        (
            {"input": torch.ones(3)},
            ValueError,
            r"`input` must have shape \(N, d\), got shape \(3,\)",
        ),
        (
            {"linear_weight": torch.ones(5, 2)},
            ValueError,
            r"`linear_weight` must have shape \(C, 3\) for `input` of shape \(2, 3\), "
            r"got shape \(5, 2\)",
        ),
        (
            {"linear_weight": torch.ones(5, 3, dtype=torch.float16)},
            TypeError,
            r"`linear_weight` must have the dtype of `input` \(torch.float32\), got torch.float16",
        ),
        (
            {"linear_bias": torch.ones(4)},
            ValueError,
            r"`linear_bias` must have shape \(5,\) \(one value per row of `linear_weight`\), "
            r"got shape \(4,\)",
        ),
        (
            {"linear_bias": torch.ones(5, dtype=torch.float64)},
            TypeError,
            r"`linear_bias` must have the dtype of `input` \(torch.float32\), got torch.float64",
        ),
        ({"linear_bias": [0.0] * 5}, TypeError, r"`linear_bias` must be a torch.Tensor, got list"),
        ({"k": 0}, ValueError, r"`k` must be a positive int \(k >= 1\), got 0"),
        (
            {"chunk_size": (0, 4)},
            ValueError,
            r"`chunk_size\[0\] \(rows\)` must be an int >= 1, got 0",
        ),
        (
            {"chunk_size": 64},
            TypeError,
            r"`chunk_size` must be a pair \(rows, items\) of ints or None, got int 64",
        ),
        (
            {"chunk_size": (2, 2.5)},
            TypeError,
            r"`chunk_size\[1\] \(items\)` must be an int, got float 2.5",
        ),
        (
            {"exclude": torch.tensor([[5], [0]])},
            ValueError,
            r"`exclude` holds item indices in \[0, 5\]; expected indices in \[0, 5\)",
        ),
        ({"exclude": torch.tensor([[0]])}, ValueError, r"`exclude` must have 2 rows"),
        (
            {"exclude": torch.zeros(2, 1)},
            TypeError,
            r"`exclude` must be an integer tensor.*float32",
        ),
        (
            {"process_group": "world"},
            TypeError,
            r"`process_group` must be a torch.distributed.ProcessGroup .* or None, got str",
        ),
    ],
)
def test_errors_name_the_argument(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    args: dict[str, object] = {"input": torch.ones(2, 3), "linear_weight": torch.ones(5, 3)}
    args["k"] = 2
    args.update(kwargs)
    with pytest.raises(error, match=match):
        topk_items_from_embeddings(**args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# no read back to the host on the accelerator path


def _hostile_batch() -> tuple[torch.Tensor, ...]:
    """Scores with ties at the cut beyond the candidates, NaN, -inf, exclusions with repeats."""
    gen = torch.Generator().manual_seed(2)
    scores = torch.randint(0, 3, (64, 300), generator=gen).float()
    scores[5, 7] = NAN
    scores[6] = -math.inf
    targets = torch.randint(-1, 300, (64, 3), generator=gen)
    exclude = torch.randint(-1, 300, (64, 12), generator=gen)
    return scores, targets, exclude


def test_accelerator_path_reads_nothing_back() -> None:
    scores, targets, exclude = _hostile_batch()
    dense = torch.zeros(scores.shape).scatter_(1, targets.clamp(min=0), 1.0)
    ranked = torch.randint(-1, 300, (64, 8), generator=torch.Generator().manual_seed(3))
    items = torch.randint(-2, 3, (300, 4), generator=torch.Generator().manual_seed(4)).float()
    kw = {"validate_args": False}

    def run() -> list[torch.Tensor]:
        metric = MeanAveragePrecisionAtK(5, validate_args=False)
        metric.update(scores, targets, exclude)
        out = [
            topk_items(scores, 5, **kw),
            topk_items(scores, 5, exclude=exclude, **kw),
            map_at_k(scores, targets, 5, exclude=exclude, **kw),
            map_at_k(scores, dense, 5, **kw),
            map_at_k(ranked, targets, 5, exclude=exclude, **kw),
            map_at_k(scores, targets, 5, empty_targets="skip", **kw),
            metric.compute(),
            topk_items_from_embeddings(
                scores[:, :4], items, 5, exclude=exclude, chunk_size=(7, 13), **kw
            ),
        ]
        out.extend(ranking_metrics_at_k(scores, targets, 5, exclude=exclude, **kw).values())
        return out

    with sync_free_path(), no_host_reads():
        got = run()
    expected = run()  # the CPU path
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0, equal_nan=True)


def test_the_guard_catches_reads() -> None:
    # The guard is not vacuous: the CPU path reads (ties at the cut), and so does validation.
    scores, targets, _ = _hostile_batch()
    with no_host_reads(), pytest.raises(HostReadError):
        topk_items(scores, 5, validate_args=False)
    with sync_free_path(), no_host_reads(), pytest.raises(HostReadError):
        map_at_k(scores.nan_to_num(), targets, 5)
    with no_host_reads(), pytest.raises(HostReadError, match="boolean mask"):
        _ = scores[scores > 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_makes_no_host_synchronization() -> None:
    scores, targets, exclude = (t.cuda() for t in _hostile_batch())
    items = torch.randint(-2, 3, (300, 4), generator=torch.Generator().manual_seed(4)).cuda()
    items = items.float()
    metric = MeanAveragePrecisionAtK(5, validate_args=False).cuda()

    def run() -> None:
        topk_items(scores, 5, exclude=exclude, validate_args=False)
        map_at_k(scores, targets, 5, exclude=exclude, validate_args=False)
        ranking_metrics_at_k(scores, targets, 5, exclude=exclude, validate_args=False)
        metric.update(scores, targets, exclude)
        topk_items_from_embeddings(scores[:, :4], items, 5, exclude=exclude, validate_args=False)

    run()  # warm-up: lazy initialization may synchronize once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
