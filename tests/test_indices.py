"""The index-list convention against plain-Python references."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from focalrec._indices import (
    check_index_list,
    count_unique,
    dedupe,
    dense_to_index_list,
    first_occurrence,
    index_list_to_dense,
    is_index_list,
)


@st.composite
def index_lists(draw: st.DrawFn) -> tuple[torch.Tensor, int]:
    num_classes = draw(st.integers(1, 12))
    n = draw(st.integers(0, 6))
    m = draw(st.integers(0, 8))
    rows = [[draw(st.integers(-1, num_classes - 1)) for _ in range(m)] for _ in range(n)]
    return torch.tensor(rows, dtype=torch.long).reshape(n, m), num_classes


def _ref_first(row: list[int]) -> list[bool]:
    seen: set[int] = set()
    out = []
    for v in row:
        out.append(v != -1 and v not in seen)
        seen.add(v)
    return out


@given(index_lists())
def test_first_occurrence_matches_loop(data: tuple[torch.Tensor, int]) -> None:
    x, _ = data
    expected = [_ref_first(r) for r in x.tolist()]
    assert first_occurrence(x).tolist() == expected
    assert count_unique(x).tolist() == [sum(r) for r in expected]
    assert dedupe(x).tolist() == [
        [v if keep else -1 for v, keep in zip(r, k, strict=True)]
        for r, k in zip(x.tolist(), expected, strict=True)
    ]


@given(index_lists())
def test_dense_round_trip(data: tuple[torch.Tensor, int]) -> None:
    x, c = data
    dense = index_list_to_dense(x, c)
    for row, drow in zip(x.tolist(), dense.tolist(), strict=True):
        assert drow == [j in row for j in range(c)]
    back = dense_to_index_list(dense)
    for row, brow in zip(x.tolist(), back.tolist(), strict=True):
        assert [v for v in brow if v != -1] == sorted({v for v in row if v != -1})


def test_is_index_list() -> None:
    assert is_index_list(torch.zeros(1, 1, dtype=torch.int32))
    assert not is_index_list(torch.zeros(1, 1, dtype=torch.bool))
    assert not is_index_list(torch.zeros(1, 1, dtype=torch.float16))


@pytest.mark.parametrize(
    ("x", "kwargs", "error", "match"),
    [
        ([[0, 1]], {}, TypeError, "`t` must be a torch.Tensor, got list"),
        (
            torch.zeros(2, 2),
            {},
            TypeError,
            "`t` must be an integer tensor .* got dtype torch.float32",
        ),
        (torch.zeros(2, dtype=torch.long), {}, ValueError, r"shape \(N, m\), got shape \(2,\)"),
        (torch.zeros(2, 1, dtype=torch.long), {"num_rows": 3}, ValueError, "3 rows"),
        (torch.tensor([[5]]), {"num_classes": 5}, ValueError, r"in \[5, 5\]; expected .*\[0, 5\)"),
        (torch.tensor([[-2]]), {"num_classes": 5}, ValueError, r"in \[-2, -2\]"),
    ],
)
def test_check_index_list_errors(
    x: object, kwargs: dict[str, int], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        check_index_list(x, "t", **kwargs)  # type: ignore[arg-type]


def test_check_index_list_skips_range_without_validate_args() -> None:
    check_index_list(torch.tensor([[99]]), "t", num_classes=5, validate_args=False)
