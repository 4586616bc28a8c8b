"""Command-line checks for the examples: every option value is checked as it is parsed.

A bad value is reported as one line on stderr that names the option, and the program exits with
status 2 (argparse's usage-error status) before it has read or written anything::

    $ python examples/challenge.py --lr inf
    error: argument --lr: expected a finite number > 0, got 'inf'

Numbers are written with ASCII digits (``int`` and ``float`` also accept ``١`` or ``1_000``; the
options do not), floats must be finite (``nan``, ``inf`` and overflowing ``1e400`` are refused),
and each option declares its range with :func:`integer` or :func:`number`::

    parser = OneLineParser()
    parser.add_argument("--lr", type=number(0, low_open=True))       # a finite number > 0
    parser.add_argument("--dropout", type=number(0, 1, high_open=True))  # in [0, 1)
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

__all__ = ["OneLineParser", "OptionError", "integer", "number", "path", "shown"]

_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class OptionError(ValueError):
    """An option value that the input data rule out (found after parsing); names the option."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"argument {option}: {message}")


class OneLineParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors are one line: ``error: <message>``.

    The standard parser prints its usage text before the message; a one-line error is easier to
    read in a log and to test (``--help`` still prints the usage).
    """

    def error(self, message: str) -> NoReturn:
        """Print ``error: message`` on one line and exit with status 2."""
        self.exit(2, f"error: {' '.join(message.split())}\n")


def shown(text: str, limit: int = 40) -> str:
    """``repr(text)``, shortened to about ``limit`` characters for an error message.

    Example:
        >>> shown("9" * 5000)
        "'99999999999999999999'... (5000 characters)"
    """
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit // 2]!r}... ({len(text)} characters)"


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]`` (no upper bound when ``high`` is None).

    Example:
        >>> integer(1)("12")
        12
        >>> integer(0, 2**32 - 1)("-1")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected an integer in [0, 4294967295], got '-1'
    """
    expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def parse(text: str) -> int:
        value = None
        if _INTEGER.fullmatch(text.strip()):
            try:
                value = int(text)
            except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
                value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {shown(text)}")
        return value

    return parse


def number(
    low: float,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], float]:
    """An argparse ``type``: a finite float between ``low`` and ``high`` (open or closed ends).

    Example:
        >>> number(0, low_open=True)("3e-3")
        0.003
        >>> number(0, 1)("nan")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a number in [0, 1], got 'nan'
    """
    if high is None:
        expected = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        expected = (
            f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        )

    def parse(text: str) -> float:
        value = float(text) if _NUMBER.fullmatch(text.strip()) else math.nan
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {shown(text)}")
        return value

    return parse


def path(text: str) -> Path:
    """An argparse ``type``: a non-empty path (``Path("")`` would silently mean ``.``).

    Example:
        >>> path("")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a path, got ''
    """
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got ''")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"a path cannot hold a NUL character, got {shown(text)}")
    return Path(text)
