"""examples/options.py: option types with ranges, one-line errors; the examples' doctests."""

from __future__ import annotations

import argparse
import doctest
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import atomic
import challenge_data
import options
import synthetic
from options import OneLineParser, integer, number


@settings(max_examples=200)
@given(st.integers(-(2**70), 2**70), st.integers(-10, 10), st.integers(0, 20) | st.none())
def test_integer_accepts_exactly_the_range(value: int, low: int, width: int | None) -> None:
    high = None if width is None else low + width
    parse = integer(low, high)
    inside = value >= low and (high is None or value <= high)
    if inside:
        assert parse(str(value)) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="expected an integer"):
            parse(str(value))


@settings(max_examples=200)
@given(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([(0.0, None), (0.0, 1.0), (-1.0, 1.0)]),
    st.booleans(),
    st.booleans(),
)
def test_number_accepts_exactly_finite_values_in_the_range(
    value: float, bounds: tuple[float, float | None], low_open: bool, high_open: bool
) -> None:
    low, high = bounds
    parse = number(low, high, low_open=low_open, high_open=high_open)
    inside = math.isfinite(value) and (value > low if low_open else value >= low)
    if high is not None:
        inside = inside and (value < high if high_open else value <= high)
    if inside:
        assert parse(repr(value)) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="expected a"):
            parse(repr(value))


@pytest.mark.parametrize(
    "text", ["\u0661", "1_000", "\uff11", "0x10", "", " ", "1e3", "²", "9" * 5000]
)
def test_integer_wants_ascii_digits(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        integer(0)(text)
    assert len(str(info.value)) < 100  # a 5000-digit value is shortened


@pytest.mark.parametrize("text", ["\u0661.5", "1_0.5", "nan", "-inf", "1e400", "0x1p3", "", "."])
def test_number_wants_ascii_finite_numbers(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        number(-1e300)(text)


@pytest.mark.parametrize(("text", "value"), [("+3", 3), (" 7 ", 7), ("007", 7)])
def test_integer_spellings(text: str, value: int) -> None:
    assert integer(0)(text) == value


@pytest.mark.parametrize(("text", "value"), [("3e-3", 3e-3), (".5", 0.5), ("5.", 5.0), ("-0", 0.0)])
def test_number_spellings(text: str, value: float) -> None:
    assert number(-1, 10)(text) == value


def test_path_refuses_empty_and_nul() -> None:
    assert options.path("out") == Path("out")
    for text in ("", "a\0b"):
        with pytest.raises(argparse.ArgumentTypeError):
            options.path(text)


def test_parser_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = OneLineParser(prog="demo")
    parser.add_argument("--lr", type=number(0, low_open=True))
    parser.add_argument("--loss", choices=["a", "b"])
    for argv in (["--lr", "nan"], ["--loss", "c"], ["--nope"], ["--lr"]):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ")
        assert err.count("\n") == 1


@pytest.mark.parametrize(
    "module", [atomic, challenge_data, options, synthetic], ids=lambda m: m.__name__
)
def test_example_doctests(module: ModuleType) -> None:
    """The helper modules' ``Example:`` blocks (pytest's --doctest-modules covers src/ only)."""
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
