"""Top-k lists and the ranking metrics @k against plain-Python references from the definitions."""

from __future__ import annotations

import math
import random
from contextlib import nullcontext
from typing import NamedTuple

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from focalrec import (
    hit_rate_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    topk_items,
)
from focalrec._indices import count_unique, index_list_to_dense
from focalrec.ranking import METRICS, _count_distinct, ranking_metrics_at_k
from host_reads import no_host_reads, sync_free_path

INF = math.inf
NAN = math.nan
# Few distinct values, so that ties (also at the cut) are the rule rather than the exception.
SCORE_VALUES = [-INF, -1.0, -0.0, 0.0, 0.25, 0.5, 1.0, INF]
# Every one of them is exact in each dtype.
SCORE_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Dense relevance values a user may pass by mistake, besides the valid ones.
RELEVANCE_VALUES = [NAN, -INF, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0, INF]


# --------------------------------------------------------------------------------------------------
# references, one plain loop per definition


def ref_topk(scores: list[float], k: int, exclude: list[int]) -> list[int]:
    """Eligible items by (score descending, NaN first, index ascending): the first k, padded
    with -1."""
    banned = set(exclude)
    eligible = [i for i in range(len(scores)) if i not in banned]

    def key(i: int) -> tuple[int, float, int]:
        return (0, 0.0, i) if math.isnan(scores[i]) else (1, -scores[i], i)

    ranked = sorted(eligible, key=key)[:k]
    return ranked + [-1] * (k - len(ranked))


def ml_metrics_apk(actual: list[int], predicted: list[int], k: int) -> float:
    """ml_metrics' ``apk`` (the Kaggle reference), verbatim but for the names."""
    if len(predicted) > k:
        predicted = predicted[:k]
    score = 0.0
    num_hits = 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            num_hits += 1.0
            score += num_hits / (i + 1.0)
    if not actual:
        return 0.0
    return score / min(len(actual), k)


def ref_rel(ranked: list[int], relevant: set[int], k: int) -> list[bool]:
    """rel(i) for the first k ranks: relevant and not a repeat of an earlier item."""
    out = []
    for i, p in enumerate(ranked[:k]):
        out.append(p != -1 and p in relevant and p not in ranked[:i])
    return out + [False] * (k - len(out))


def ref_ap(ranked: list[int], relevant: set[int], k: int, denominator: str) -> float:
    rel = ref_rel(ranked, relevant, k)
    hits = 0
    total = 0.0
    for i, r in enumerate(rel):
        if r:
            hits += 1
            total += hits / (i + 1)
    denom = {"min_k": min(len(relevant), k), "relevant": len(relevant), "hits": hits}[denominator]
    return total / denom if denom > 0 else 0.0


def ref_precision(ranked: list[int], relevant: set[int], k: int) -> float:
    return sum(ref_rel(ranked, relevant, k)) / k


def ref_recall(ranked: list[int], relevant: set[int], k: int) -> float:
    return sum(ref_rel(ranked, relevant, k)) / len(relevant) if relevant else 0.0


def ref_hit_rate(ranked: list[int], relevant: set[int], k: int) -> float:
    return 1.0 if any(ref_rel(ranked, relevant, k)) else 0.0


def ref_mrr(ranked: list[int], relevant: set[int], k: int) -> float:
    for i, r in enumerate(ref_rel(ranked, relevant, k)):
        if r:
            return 1.0 / (i + 1)
    return 0.0


def ref_ndcg(ranked: list[int], relevant: set[int], k: int) -> float:
    dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(ref_rel(ranked, relevant, k)) if r)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / idcg if idcg > 0 else 0.0


REFERENCES = {
    "hit_rate": ref_hit_rate,
    "map": lambda ranked, relevant, k: ref_ap(ranked, relevant, k, "min_k"),
    "mrr": ref_mrr,
    "ndcg": ref_ndcg,
    "precision": ref_precision,
    "recall": ref_recall,
}
FUNCTIONS = {
    "hit_rate": hit_rate_at_k,
    "map": map_at_k,
    "mrr": mrr_at_k,
    "ndcg": ndcg_at_k,
    "precision": precision_at_k,
    "recall": recall_at_k,
}


def ref_mean(values: list[float], relevant_sets: list[set[int]], empty: str) -> float:
    kept = [v for v, r in zip(values, relevant_sets, strict=True) if empty == "zero" or r]
    return sum(kept) / len(kept) if kept else 0.0


def ref_ranked(preds: list[int], exclude: list[int]) -> list[int]:
    """A ranked list with the excluded items removed (the items below move up)."""
    banned = set(exclude)
    return [p for p in preds if p == -1 or p not in banned]


# --------------------------------------------------------------------------------------------------
# strategies


class Case(NamedTuple):
    scores: torch.Tensor
    targets: torch.Tensor
    exclude: torch.Tensor
    k: int


@st.composite
def ranking_cases(draw: st.DrawFn, max_classes: int = 40, nan: bool = False) -> Case:
    n = draw(st.integers(0, 5))
    c = draw(st.integers(1, max_classes))
    k = draw(st.integers(1, 8))
    m = draw(st.integers(0, 5))
    h = draw(st.integers(0, 12))
    # Exclusions cover nearly every item in some rows.
    near_all = draw(st.booleans())
    h = max(h, c - 1) if near_all else h
    values = [*SCORE_VALUES, NAN] if nan and draw(st.booleans()) else SCORE_VALUES
    scores = [[draw(st.sampled_from(values)) for _ in range(c)] for _ in range(n)]
    targets = [[draw(st.integers(-1, c - 1)) for _ in range(m)] for _ in range(n)]
    exclude = [[draw(st.integers(-1, c - 1)) for _ in range(h)] for _ in range(n)]
    return Case(
        torch.tensor(scores, dtype=torch.float32).reshape(n, c),
        torch.tensor(targets, dtype=torch.long).reshape(n, m),
        torch.tensor(exclude, dtype=torch.long).reshape(n, h),
        k,
    )


def assert_rows(
    got: torch.Tensor, expected: list[float], relevant: list[set[int]], empty: str
) -> None:
    """Per-row values against the reference; rows skipped as empty must be NaN."""
    for g, e, rel in zip(got.tolist(), expected, relevant, strict=True):
        if empty == "skip" and not rel:
            assert math.isnan(g)
        else:
            assert g == pytest.approx(e, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# topk_items


@given(ranking_cases(nan=True), st.booleans(), st.sampled_from(SCORE_DTYPES), st.booleans())
def test_topk_items_matches_reference(
    case: Case, use_exclude: bool, dtype: torch.dtype, sync_free: bool
) -> None:
    # Ties, -inf, +-0, NaN (without validation), exclusions with repeats and padding, empty rows,
    # every dtype; on the CPU path and on the accelerator path, which must read nothing back.
    scores, _, exclude, k = case
    scores = scores.to(dtype)
    excl = exclude if use_exclude else None
    has_nan = bool(scores.isnan().any())
    before = scores.clone()
    with sync_free_path(sync_free):
        with no_host_reads() if sync_free else nullcontext():
            got = topk_items(scores, k, exclude=excl, validate_args=False)
        if has_nan:
            with pytest.raises(ValueError, match=r"`scores` must not contain NaN"):
                topk_items(scores, k, exclude=excl)
        else:
            assert torch.equal(topk_items(scores, k, exclude=excl), got)
    expected = [
        ref_topk(s, k, e if use_exclude else [])
        for s, e in zip(scores.tolist(), exclude.tolist(), strict=True)
    ]
    assert got.dtype == torch.long
    assert got.tolist() == expected
    torch.testing.assert_close(scores, before, rtol=0, atol=0, equal_nan=True)  # untouched


def test_topk_items_ties_beyond_the_candidates() -> None:
    # All items tie: the lowest indices win, whatever order torch.topk returns them in.
    scores = torch.zeros(3, 1000)
    assert topk_items(scores, 4).tolist() == [[0, 1, 2, 3]] * 3
    exclude = torch.tensor([[0, 2, -1], [1, 1, 3], [-1, -1, -1]])
    assert topk_items(scores, 4, exclude=exclude).tolist() == [
        [1, 3, 4, 5],
        [0, 2, 4, 5],
        [0, 1, 2, 3],
    ]


@pytest.mark.parametrize("width", [0, 20, 290])
def test_topk_items_large_exclusion_ties_and_padding(width: int) -> None:
    # Many rows tie at the cut beyond the candidates; 290 exclusions leave some rows short.
    gen = torch.Generator().manual_seed(width)
    scores = torch.randint(0, 4, (64, 300), generator=gen).float()
    exclude = torch.randint(-1, 300, (64, width), generator=gen)
    got = topk_items(scores, 7, exclude=exclude)
    expected = [ref_topk(s, 7, e) for s, e in zip(scores.tolist(), exclude.tolist(), strict=True)]
    assert got.tolist() == expected


@pytest.mark.parametrize("short_rows", [3, 60])
def test_topk_items_history_on_top_in_small_chunks(
    monkeypatch: pytest.MonkeyPatch, short_rows: int
) -> None:
    # The excluded items are the best-scored ones of `short_rows` rows, so those rows need the
    # wide pass (in chunks of rows when they are few, in place when most rows are short, and
    # directly for the rows after the probe when most probed rows are short); a tiny chunk size
    # makes every chunked loop run several times.
    monkeypatch.setattr("focalrec._topk.CHUNK_ELEMENTS", 7 * 200)
    # The first 16 rows decide whether the other rows go straight to the wide pass.
    monkeypatch.setattr("focalrec._topk._PROBE_ROWS", 16)
    gen = torch.Generator().manual_seed(short_rows)
    scores = torch.randint(0, 6, (64, 200), generator=gen).float()
    exclude = torch.full((64, 12), -1)
    exclude[:short_rows] = scores[:short_rows].argsort(dim=1, descending=True)[:, :12]
    got = topk_items(scores, 5, exclude=exclude)
    expected = [ref_topk(s, 5, e) for s, e in zip(scores.tolist(), exclude.tolist(), strict=True)]
    assert got.tolist() == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_topk_items_same_on_cuda_as_on_cpu() -> None:
    gen = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 4, (500, 700), generator=gen).float()
    exclude = torch.randint(-1, 700, (500, 30), generator=gen)
    targets = torch.randint(-1, 700, (500, 3), generator=gen)
    for k in (1, 3, 50):
        cpu = topk_items(scores, k, exclude=exclude)
        cuda = topk_items(scores.cuda(), k, exclude=exclude.cuda())
        assert torch.equal(cpu, cuda.cpu())
        assert map_at_k(scores, targets, k, exclude=exclude) == (
            map_at_k(scores.cuda(), targets.cuda(), k, exclude=exclude.cuda()).cpu()
        )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_topk_items_dtypes(dtype: torch.dtype) -> None:
    scores = torch.tensor([[0.5, 2.0, 2.0, -1.0, 0.5]], dtype=dtype)
    assert topk_items(scores, 4).tolist() == [[1, 2, 0, 4]]


def test_topk_items_rejects_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = torch.zeros(3, 50)
    scores[2, 17] = float("nan")
    with pytest.raises(ValueError, match=r"`scores` must not contain NaN; row 2"):
        topk_items(scores, 3)
    # Also when the NaN item is excluded: the scores themselves are wrong.
    exclude = torch.full((3, 1), 17)
    with pytest.raises(ValueError, match="NaN"):
        topk_items(scores, 3, exclude=exclude)
    # Also found by the wide pass that follows a probe of mostly short rows.
    monkeypatch.setattr("focalrec._topk._PROBE_ROWS", 1)
    history = scores.nan_to_num(nan=1.0).argsort(dim=1, descending=True)[:, :2]
    with pytest.raises(ValueError, match=r"`scores` must not contain NaN; row 2"):
        topk_items(scores, 3, exclude=history)
    # Without validation, no error: the NaN item ranks first, then the lowest indices.
    out = topk_items(scores, 3, validate_args=False)
    assert out.tolist() == [[0, 1, 2], [0, 1, 2], [17, 0, 1]]


@pytest.mark.parametrize("sync_free", [False, True])
def test_topk_items_nan_without_validation_ranks_above_every_number(sync_free: bool) -> None:
    # Found by fuzzing: this gave [[-1]] although every item is eligible.
    with sync_free_path(sync_free):
        assert topk_items(torch.tensor([[0.0, 0.0, NAN]]), 1, validate_args=False).tolist() == [[2]]
        scores = torch.tensor([[-INF, NAN, INF, NAN, 0.0], [NAN, NAN, NAN, NAN, NAN]])
        got = topk_items(scores, 4, validate_args=False)
        assert got.tolist() == [[1, 3, 2, 4], [0, 1, 2, 3]]
        exclude = torch.tensor([[1, -1], [0, 3]])
        got = topk_items(scores, 4, exclude=exclude, validate_args=False)
        assert got.tolist() == [[3, 2, 4, 0], [1, 2, 4, -1]]
        # NaN tied at the cut, beyond the k + 1 candidates: the lowest-index NaN items.
        wide = torch.zeros(2, 300)
        wide[:, 150:] = NAN
        assert topk_items(wide, 3, validate_args=False).tolist() == [[150, 151, 152]] * 2
        # A NaN that ranks above a tie at the cut stays on top.
        mixed = torch.tensor([[1.0, 1.0, NAN, 1.0, 0.0]])
        assert topk_items(mixed, 2, validate_args=False).tolist() == [[2, 0]]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scores": torch.zeros(2, 3), "k": 0}, ValueError, r"`k` must be a positive int.*got 0"),
        ({"scores": torch.zeros(2, 3), "k": 2.0}, TypeError, r"`k` must be a positive int.*float"),
        ({"scores": torch.zeros(2, 3), "k": True}, TypeError, r"`k` must be a positive int.*bool"),
        ({"scores": torch.zeros(2, 3, dtype=torch.long), "k": 1}, TypeError, r"`scores`.*int64"),
        ({"scores": torch.zeros(3), "k": 1}, ValueError, r"`scores`.*\(N, C\), got \(3,\)"),
        ({"scores": [[0.0]], "k": 1}, TypeError, r"`scores` must be a torch.Tensor, got list"),
        (
            {"scores": torch.zeros(2, 3), "k": 1, "exclude": torch.tensor([[3], [0]])},
            ValueError,
            r"`exclude` holds item indices in \[0, 3\]; expected indices in \[0, 3\)",
        ),
        (
            {"scores": torch.zeros(2, 3), "k": 1, "exclude": torch.tensor([[0]])},
            ValueError,
            r"`exclude` must have 2 rows",
        ),
        (
            {"scores": torch.zeros(2, 3), "k": 1, "exclude": torch.tensor([[0.0], [1.0]])},
            TypeError,
            r"`exclude` must be an integer tensor.*float32",
        ),
    ],
)
def test_topk_items_errors(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        topk_items(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# map_at_k


@settings(max_examples=60)
@given(
    ranking_cases(),
    st.sampled_from(["min_k", "relevant", "hits"]),
    st.sampled_from(["zero", "skip"]),
    st.booleans(),
)
def test_map_at_k_scores_match_reference(
    case: Case, denominator: str, empty: str, use_exclude: bool
) -> None:
    scores, targets, exclude, k = case
    excl = exclude if use_exclude else None
    relevant = [{t for t in row if t != -1} for row in targets.tolist()]
    lists = [
        ref_topk(s, k, e if use_exclude else [])
        for s, e in zip(scores.tolist(), exclude.tolist(), strict=True)
    ]
    per_row = [ref_ap(r, rel, k, denominator) for r, rel in zip(lists, relevant, strict=True)]
    kw = {"exclude": excl, "denominator": denominator, "empty_targets": empty}
    got = map_at_k(scores, targets, k, reduction="none", **kw)  # type: ignore[arg-type]
    assert_rows(got, per_row, relevant, empty)
    mean = map_at_k(scores, targets, k, **kw)  # type: ignore[arg-type]
    assert mean.item() == pytest.approx(ref_mean(per_row, relevant, empty), abs=1e-6)
    # A dense relevance matrix gives the same result as the index list.
    dense = index_list_to_dense(targets, scores.shape[1])
    assert torch.equal(map_at_k(scores, dense, k, **kw), mean)  # type: ignore[arg-type]
    assert torch.equal(map_at_k(scores, dense.float(), k, **kw), mean)  # type: ignore[arg-type]


@given(ranking_cases(max_classes=12), st.integers(0, 10), st.booleans())
def test_map_at_k_ranked_lists_match_ml_metrics_apk(case: Case, r: int, use_exclude: bool) -> None:
    scores, targets, exclude, k = case
    n, c = scores.shape
    gen = torch.Generator().manual_seed(n * 1000 + c * 10 + r)
    # Ranked lists with repeats and -1 padding anywhere.
    preds = torch.randint(-1, c, (n, r), generator=gen)
    got = map_at_k(preds, targets, k, exclude=exclude if use_exclude else None, reduction="none")
    for g, p, t, e in zip(
        got.tolist(), preds.tolist(), targets.tolist(), exclude.tolist(), strict=True
    ):
        ranked = ref_ranked(p, e if use_exclude else [])
        actual = sorted({x for x in t if x != -1})
        assert g == pytest.approx(ml_metrics_apk(actual, ranked, k), abs=1e-6)


def test_map_at_k_known_values() -> None:
    preds = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 7, 8]])
    targets = torch.tensor([[1, 3, 9], [-1, -1, -1], [8, 7, -1]])
    # Row 0: hits at ranks 1 and 3 -> (1 + 2/3) / min(3, 3); row 1: empty; row 2: ranks 1 and 3.
    got = map_at_k(preds, targets, 3, reduction="none")
    assert got.tolist() == pytest.approx([(1 + 2 / 3) / 3, 0.0, (1 + 2 / 3) / 2])
    assert map_at_k(preds, targets, 3, denominator="hits", reduction="none").tolist() == (
        pytest.approx([(1 + 2 / 3) / 2, 0.0, (1 + 2 / 3) / 2])
    )
    assert map_at_k(preds, targets, 3, empty_targets="skip").item() == pytest.approx(
        ((1 + 2 / 3) / 3 + (1 + 2 / 3) / 2) / 2
    )
    assert map_at_k(preds, targets, 3, reduction="sum").item() == pytest.approx(
        (1 + 2 / 3) / 3 + (1 + 2 / 3) / 2
    )


def test_no_items_at_all() -> None:
    assert map_at_k(torch.full((2, 3), -1), torch.zeros(2, 0, dtype=torch.bool), 2).item() == 0.0
    assert topk_items(torch.zeros(2, 0), 2).tolist() == [[-1, -1], [-1, -1]]
    assert topk_items(torch.zeros(0, 5), 2).shape == (0, 2)


def test_map_at_k_does_not_modify_inputs() -> None:
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(20, 30, generator=gen)
    targets = torch.randint(-1, 30, (20, 3), generator=gen)
    exclude = torch.randint(-1, 30, (20, 10), generator=gen)
    copies = [t.clone() for t in (scores, targets, exclude)]
    map_at_k(scores, targets, 3, exclude=exclude)
    for t, c in zip((scores, targets, exclude), copies, strict=True):
        assert torch.equal(t, c)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((torch.zeros(2, 4), torch.zeros(2, 1, dtype=torch.long), 0), {}, ValueError, "`k`"),
        (
            (torch.zeros(2, 4), torch.zeros(3, 1, dtype=torch.long), 1),
            {},
            ValueError,
            r"`target` must have 2 rows.*\(3, 1\)",
        ),
        (
            (torch.zeros(2, 4), torch.zeros(2, 5), 1),
            {},
            ValueError,
            r"`target` as a relevance matrix must have the shape of `preds` \(2, 4\), "
            r"got \(2, 5\)",
        ),
        (
            (torch.zeros(2, 4), torch.tensor([[4], [0]]), 1),
            {},
            ValueError,
            r"`target` holds item indices in \[0, 4\]; expected indices in \[0, 4\)",
        ),
        (
            (torch.tensor([[0, 5]]), torch.zeros(1, 4, dtype=torch.bool), 1),
            {},
            ValueError,
            r"`preds` holds item indices in \[0, 5\]; expected indices in \[0, 4\)",
        ),
        (
            (torch.tensor([[0, -2]]), torch.tensor([[1]]), 1),
            {},
            ValueError,
            r"`preds` holds item index -2; expected indices >= 0 or -1",
        ),
        (
            (torch.tensor([[0, 1]]), torch.tensor([[1]]), 1),
            {"exclude": torch.tensor([[-3]])},
            ValueError,
            r"`exclude` holds item index -3",
        ),
        ((torch.zeros(4), torch.zeros(4), 1), {}, ValueError, r"`preds` must be a score matrix"),
        (
            (torch.zeros(1, 2), [[1]], 1),
            {},
            TypeError,
            r"`target` must be a torch.Tensor, got list",
        ),
        (
            (torch.zeros(2, 4), torch.zeros(2, 4, 1), 1),
            {},
            ValueError,
            r"`target` must be a relevance matrix \(N, C\) or an index list \(N, m\), "
            r"got shape \(2, 4, 1\)",
        ),
        (
            (torch.tensor([[0]]), torch.zeros(2, 4, dtype=torch.bool), 1),
            {},
            ValueError,
            r"`target` must have 1 rows \(one per row of `preds`\), got shape \(2, 4\)",
        ),
        (
            (torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.complex64), 1),
            {},
            TypeError,
            r"`target` must be bool, floating or integer, got dtype torch.complex64",
        ),
        (("x", torch.zeros(1, 1), 1), {}, TypeError, r"`preds` must be a torch.Tensor, got str"),
        (
            (torch.zeros(1, 2), torch.zeros(1, 2), 1),
            {"denominator": "kaggle"},
            ValueError,
            r"`denominator` must be one of 'min_k', 'relevant', 'hits', got 'kaggle'",
        ),
        (
            (torch.zeros(1, 2), torch.zeros(1, 2), 1),
            {"empty_targets": "neg"},
            ValueError,
            r"`empty_targets` must be one of 'zero', 'skip', got 'neg'",
        ),
        (
            (torch.zeros(1, 2), torch.zeros(1, 2), 1),
            {"reduction": "max"},
            ValueError,
            r"`reduction` must be one of 'mean', 'sum', 'none', got 'max'",
        ),
    ],
)
def test_map_at_k_errors(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        map_at_k(*args, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# the family


@settings(max_examples=60)
@given(
    ranking_cases(nan=True),
    st.sampled_from(["zero", "skip"]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_family_matches_reference(
    case: Case, empty: str, use_exclude: bool, ranked_input: bool, sync_free: bool
) -> None:
    # NaN scores run without validation; the accelerator path without validation and must read
    # nothing back to the host.
    scores, targets, exclude, k = case
    excl = exclude if use_exclude else None
    relevant = [{t for t in row if t != -1} for row in targets.tolist()]
    if ranked_input:
        # Ranked lists with repeats and padding: the first columns of a full ranking, shuffled.
        gen = torch.Generator().manual_seed(scores.numel() + k)
        preds = torch.randint(-1, scores.shape[1], (scores.shape[0], k + 2), generator=gen)
        lists = [
            ref_ranked(p, e if use_exclude else [])
            for p, e in zip(preds.tolist(), exclude.tolist(), strict=True)
        ]
    else:
        preds = scores
        lists = [
            ref_topk(s, k, e if use_exclude else [])
            for s, e in zip(scores.tolist(), exclude.tolist(), strict=True)
        ]
    validate = not (sync_free or bool(scores.isnan().any()))
    kw = {"exclude": excl, "empty_targets": empty, "validate_args": validate}
    with sync_free_path(sync_free), no_host_reads() if sync_free else nullcontext():
        together = ranking_metrics_at_k(preds, targets, k, reduction="none", **kw)  # type: ignore[arg-type]
        one_by_one = {
            name: FUNCTIONS[name](preds, targets, k, reduction="none", **kw)  # type: ignore[operator]
            for name in METRICS
        }
        means = {name: FUNCTIONS[name](preds, targets, k, **kw) for name in METRICS}  # type: ignore[operator]
    assert list(together) == list(METRICS)
    for name in METRICS:
        expected = [REFERENCES[name](r, rel, k) for r, rel in zip(lists, relevant, strict=True)]
        got = one_by_one[name]
        torch.testing.assert_close(got, together[name], rtol=0, atol=0, equal_nan=True)
        assert_rows(got, expected, relevant, empty)
        assert means[name].item() == pytest.approx(ref_mean(expected, relevant, empty), abs=1e-6)


@settings(max_examples=60)
@given(ranking_cases(), st.data())
def test_dense_relevance_is_where_values_are_positive(case: Case, data: st.DataObject) -> None:
    # Hostile relevance matrices: NaN, +-inf, negative values and -0.0 beside valid ones.
    scores, _, exclude, k = case
    n, c = scores.shape
    values = [[data.draw(st.sampled_from(RELEVANCE_VALUES)) for _ in range(c)] for _ in range(n)]
    dense = torch.tensor(values, dtype=torch.float32).reshape(n, c)
    relevant = [{j for j, v in enumerate(row) if v > 0} for row in values]
    invalid = any(not math.isfinite(v) or v < 0 for row in values for v in row)
    lists = [ref_topk(s, k, e) for s, e in zip(scores.tolist(), exclude.tolist(), strict=True)]
    for name in METRICS:
        got = FUNCTIONS[name](  # type: ignore[operator]
            scores, dense, k, exclude=exclude, reduction="none", validate_args=False
        )
        expected = [REFERENCES[name](r, rel, k) for r, rel in zip(lists, relevant, strict=True)]
        assert_rows(got, expected, relevant, "zero")
        if invalid:
            with pytest.raises(ValueError, match=r"`target` as a relevance matrix must hold fin"):
                FUNCTIONS[name](scores, dense, k, exclude=exclude)  # type: ignore[operator]
        else:
            checked = FUNCTIONS[name](scores, dense, k, exclude=exclude, reduction="none")  # type: ignore[operator]
            assert torch.equal(checked, got)


@pytest.mark.parametrize(
    ("value", "shown"), [(NAN, "nan"), (-0.5, "-0.5"), (INF, "inf"), (-INF, "-inf")]
)
def test_dense_relevance_rejects_invalid_values(value: float, shown: str) -> None:
    # Found by fuzzing: a NaN or negative relevance counted as relevant without a word.
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.4]])
    targets = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, value]])
    with pytest.raises(
        ValueError,
        match=rf"`target` as a relevance matrix must hold finite values >= 0 \(an item is "
        rf"relevant where its value is > 0\), got {shown} in row 1, column 2",
    ):
        map_at_k(scores, targets, 1)
    # Without validation such a value is not relevant (only > 0 is): here +inf is.
    got = precision_at_k(scores, targets, 2, reduction="none", validate_args=False)
    assert got.tolist() == [0.0, 1.0 if value == INF else 0.5]


def test_family_bounds_and_orderings() -> None:
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(200, 50, generator=gen)
    targets = torch.randint(-1, 50, (200, 4), generator=gen)
    out = ranking_metrics_at_k(scores, targets, 5, reduction="none")
    for value in out.values():
        assert bool(((value >= 0) & (value <= 1)).all())
    # Each metric is 0 on a row without a hit, and at most 1: so it never exceeds the hit rate.
    for name in ("map", "mrr", "precision", "ndcg", "recall"):
        assert bool((out[name] <= out["hit_rate"] + 1e-7).all())


@pytest.mark.parametrize(
    ("metrics", "error", "match"),
    [
        ("map", TypeError, r"`metrics` must be a tuple of metric names.*got 'map'"),
        (("map", "auc"), ValueError, r"`metrics` must be a non-empty tuple.*got \('map', 'auc'\)"),
        ((), ValueError, r"`metrics` must be a non-empty tuple.*got \(\)"),
    ],
)
def test_ranking_metrics_at_k_errors(metrics: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ranking_metrics_at_k(torch.zeros(1, 2), torch.zeros(1, 2), 1, metrics=metrics)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.int16])
def test_index_lists_of_any_integer_dtype(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(30, 40, generator=gen)
    targets = torch.randint(-1, 40, (30, 3), generator=gen)
    exclude = torch.randint(-1, 40, (30, 5), generator=gen)
    ranked = torch.randint(-1, 40, (30, 6), generator=gen)
    for preds in (scores, ranked):
        expected = map_at_k(preds, targets, 4, exclude=exclude)
        got = map_at_k(
            preds if preds.is_floating_point() else preds.to(dtype),
            targets.to(dtype),
            4,
            exclude=exclude.to(dtype),
        )
        assert torch.equal(got, expected)
    assert torch.equal(
        topk_items(scores, 4, exclude=exclude.to(dtype)), topk_items(scores, 4, exclude=exclude)
    )


def test_validate_args_false_gives_the_same_result_on_valid_inputs() -> None:
    gen = torch.Generator().manual_seed(6)
    scores = torch.randint(0, 3, (50, 30), generator=gen).float()
    targets = torch.randint(-1, 30, (50, 3), generator=gen)
    exclude = torch.randint(-1, 30, (50, 8), generator=gen)
    for name, fn in FUNCTIONS.items():
        checked = fn(scores, targets, 5, exclude=exclude, reduction="none")  # type: ignore[operator]
        unchecked = fn(  # type: ignore[operator]
            scores, targets, 5, exclude=exclude, reduction="none", validate_args=False
        )
        assert torch.equal(checked, unchecked), name


@given(st.integers(0, 6), st.integers(0, 12), st.integers(1, 10), st.randoms(use_true_random=False))
def test_count_distinct_matches_count_unique(n: int, m: int, c: int, rnd: random.Random) -> None:
    x = torch.tensor([[rnd.randint(-1, c - 1) for _ in range(m)] for _ in range(n)]).reshape(n, m)
    assert _count_distinct(x).tolist() == count_unique(x).tolist()


def test_row_blocks_give_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(8)
    scores = torch.randint(0, 5, (37, 20), generator=gen).float()
    targets = torch.randint(-1, 20, (37, 3), generator=gen)
    ranked = torch.randint(-1, 20, (37, 6), generator=gen)
    dense = index_list_to_dense(targets, 20)
    cases = [(p, t) for p in (scores, ranked) for t in (targets, dense)]
    whole = [ranking_metrics_at_k(p, t, 4, reduction="none") for p, t in cases]
    monkeypatch.setattr("focalrec._indices.INLINE_ELEMENTS", 5)  # blocks of 1 to 5 rows
    for (p, t), expected in zip(cases, whole, strict=True):
        got = ranking_metrics_at_k(p, t, 4, reduction="none")
        for name in METRICS:
            assert torch.equal(got[name], expected[name]), name
