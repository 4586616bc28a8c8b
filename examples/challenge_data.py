"""The challenge's CSV files: schema, loading with validation, label encoding and training windows.

The Analytics Vidhya recommendation challenge ships three files:

- ``train.csv``: ``user_sequence,user_id,challenge_sequence,challenge``, one row per challenge a
  user solved, ``challenge_sequence`` counting 1, 2, ... and ``user_sequence`` =
  ``{user_id}_{challenge_sequence}``;
- ``test.csv``: the same columns, holding only the first ``L`` challenges of other users (the
  history whose next 3 challenges are to be predicted);
- ``challenge_data.csv``: the item catalogue, ``challenge_ID,programming_language,
  challenge_series_ID,total_submissions,publish_date,author_ID,author_gender,author_org_ID,
  category_id`` (empty fields allowed, ``publish_date`` as ``dd-mm-yyyy``).

Only ``train.csv`` is required. Everything is validated before anything is trained or written: a
malformed file raises :class:`DataError`, whose one-line message names the file, the line (the
header is line 1) and the column. CRLF line endings and a UTF-8 byte-order mark are accepted, and
so are blank lines and spaces around column names.

What is refused, beyond the schema: text that is not UTF-8 (UTF-16 included), a NUL character,
a required column named twice in the header, a field that holds a line break (IDs never do; it is
almost always a quote left open that swallowed the lines after it), a field over
``csv.field_size_limit()`` characters, numbers written with other than ASCII digits (``int`` reads
``١`` as 1), and a ``test.csv`` user who is also a ``train.csv`` user (the model would be trained on
the future it is asked to predict). Fields may be quoted, so IDs may hold commas and quotes; the
example's ``submission.csv`` quotes them back the same way (the ``csv`` module's dialect).
Each file is read into memory whole (the challenge's largest file is a few megabytes).
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from options import shown

__all__ = [
    "CHALLENGE_COLUMNS",
    "HORIZON",
    "PAD",
    "SEQUENCE_COLUMNS",
    "ChallengeData",
    "DataError",
    "ItemMetadata",
    "Sequences",
    "Windows",
    "history_windows",
    "infer_history_len",
    "load_challenge_data",
    "make_windows",
    "pad_sequences",
    "position_windows",
    "read_challenges",
    "read_sequences",
    "sliding_windows",
    "split_users",
    "validation_size",
]

SEQUENCE_COLUMNS = ("user_sequence", "user_id", "challenge_sequence", "challenge")
"""Columns of ``train.csv`` and ``test.csv``."""

CHALLENGE_COLUMNS = (
    "challenge_ID",
    "programming_language",
    "challenge_series_ID",
    "total_submissions",
    "publish_date",
    "author_ID",
    "author_gender",
    "author_org_ID",
    "category_id",
)
"""Columns of ``challenge_data.csv``."""

CATEGORICAL_COLUMNS = (
    "programming_language",
    "challenge_series_ID",
    "author_ID",
    "author_gender",
    "author_org_ID",
    "category_id",
)
"""Metadata columns encoded as categories (code -1 = empty field)."""

HORIZON = 3
"""How many next challenges are predicted (and scored by mAP@3)."""

PAD = -1
"""Padding of histories and targets: focalrec's index-list convention."""


_SEQUENCE = re.compile(r"\+?0*[1-9][0-9]{0,8}")  # 1 .. 999,999,999
_SUBMISSIONS = re.compile(r"[0-9]{1,18}")
_DATE = re.compile(r"([0-9]{1,2})-([0-9]{1,2})-([0-9]{4})")  # dd-mm-yyyy


class DataError(ValueError):
    """A malformed input file; the one-line message names the file, line and column."""

    def __init__(
        self, path: Path, message: str, *, line: int | None = None, column: str | None = None
    ) -> None:
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column}"
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------------------------
# Reading one CSV file
# --------------------------------------------------------------------------------------------


_UTF16_32 = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _text(path: Path) -> str:
    """The text of ``path``, decoded as UTF-8 (a leading byte-order mark is skipped)."""
    if path.is_dir():
        raise DataError(path, "is a folder, not a file")
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot be read: {e.strerror or e}") from None
    for bom, encoding in _UTF16_32:  # UTF-32 first: its little-endian mark starts like UTF-16's
        if raw.startswith(bom):
            raise DataError(path, f"the file is {encoding} text; save it as UTF-8")
    start = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = start + e.start
        raise DataError(
            path,
            f"not UTF-8 text: byte 0x{raw[offset]:02x} at offset {offset} cannot be decoded; "
            "save the file as UTF-8",
            line=raw[:offset].count(b"\n") + 1,
        ) from None
    if "\0" in text:
        raise DataError(
            path,
            "holds a NUL character (UTF-16 text without a byte-order mark?); save it as UTF-8",
            line=text[: text.index("\0")].count("\n") + 1,
        )
    return text


def _csv_problem(error: csv.Error) -> str:
    message = str(error)
    if message == "unexpected end of data":
        return 'a quote (") opens a field here and never closes'
    if message.startswith("field larger than field limit"):
        return (
            f"a field is longer than {csv.field_size_limit():,} characters "
            '(a quote (") left open swallows the lines after it)'
        )
    if message.startswith("',' expected after"):
        return 'a quoted field goes on after its closing quote (write a quote inside one as "")'
    return f"malformed CSV: {message}"


def _records(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line, fields)`` for each record of the CSV ``text``; a record is one line."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(path, _csv_problem(e), line=line) from None
        if reader.line_num != line:
            raise DataError(
                path,
                f"a quoted field runs on to line {reader.line_num}: a field cannot hold a line "
                'break (is a quote (") left open?)',
                line=line,
            )
        yield line, fields


def _rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, {column: value})`` for each data row of ``path``, after checking the header.

    Column names are matched ignoring case and surrounding spaces; extra columns are ignored, but a
    required column may appear only once.
    """
    records = _records(path, _text(path))
    _, header = next(records, (1, []))
    if not any(h.strip() for h in header):
        raise DataError(path, f"the file is empty; expected a header {','.join(columns)}")
    names = [h.strip().lower() for h in header]
    position = {}
    for column in columns:
        count = names.count(column.lower())
        if count == 0:
            raise DataError(
                path,
                f"missing column; expected {','.join(columns)}, "
                f"found {shown(','.join(header), 200)}",
                line=1,
                column=column,
            )
        if count > 1:
            raise DataError(
                path, f"the header names this column {count} times", line=1, column=column
            )
        position[column] = names.index(column.lower())
    for line, fields in records:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        if len(fields) != len(header):
            raise DataError(path, f"expected {len(header)} fields, found {len(fields)}", line=line)
        yield line, {c: fields[i].strip() for c, i in position.items()}


@dataclass(frozen=True)
class Sequences:
    """The ordered challenges of each user of one sequence file (``train.csv`` or ``test.csv``).

    Attributes:
        path: The file read.
        users: User ids (as written in the file), in order of first appearance.
        items: For each user, the challenge IDs in ``challenge_sequence`` order.
        lines: For each user, the file line of each of those challenges (for error messages).
    """

    path: Path
    users: list[str]
    items: list[list[str]]
    lines: list[list[int]]

    def lengths(self) -> list[int]:
        """Number of rows of each user."""
        return [len(x) for x in self.items]


def read_sequences(path: Path) -> Sequences:
    """Read and validate a ``train.csv``/``test.csv`` file.

    Checks: the file exists and has a header with every column of :data:`SEQUENCE_COLUMNS`, each
    row has as many fields as the header, ``user_id`` and ``challenge`` are not empty,
    ``challenge_sequence`` is an integer >= 1, ``user_sequence`` is
    ``{user_id}_{challenge_sequence}``, and each user's sequence numbers are exactly 1, 2, ..., n
    (rows may come in any order).

    Raises:
        DataError: naming the file, line and column of the first problem found.
    """
    by_user: dict[str, dict[int, tuple[str, int]]] = {}
    for line, row in _rows(path, SEQUENCE_COLUMNS):
        user = row["user_id"]
        if not user:
            raise DataError(path, "empty user_id", line=line, column="user_id")
        raw = row["challenge_sequence"]
        if not _SEQUENCE.fullmatch(raw):
            raise DataError(
                path,
                f"expected a positive integer, found {shown(raw)} (ASCII digits, below 10^9)",
                line=line,
                column="challenge_sequence",
            )
        position = int(raw)
        if row["user_sequence"] != f"{user}_{position}":
            raise DataError(
                path,
                f"expected {user}_{position} (user_id _ challenge_sequence), "
                f"found {shown(row['user_sequence'])}",
                line=line,
                column="user_sequence",
            )
        if not row["challenge"]:
            raise DataError(path, "empty challenge ID", line=line, column="challenge")
        seen = by_user.setdefault(user, {})
        if position in seen:
            raise DataError(
                path,
                f"user {user} has challenge_sequence {position} twice "
                f"(first on line {seen[position][1]})",
                line=line,
                column="challenge_sequence",
            )
        seen[position] = (row["challenge"], line)
    if not by_user:
        raise DataError(path, "the file has a header but no rows")
    users, items, lines = [], [], []
    for user, seen in by_user.items():
        n = len(seen)
        if max(seen) != n:
            missing = min(set(range(1, n + 1)) - set(seen))
            first = min(line for _, line in seen.values())
            raise DataError(
                path,
                f"user {user} has no row with challenge_sequence {missing} "
                f"but has one with {max(seen)}; expected 1..{n}",
                line=first,
                column="challenge_sequence",
            )
        users.append(user)
        items.append([seen[i][0] for i in range(1, n + 1)])
        lines.append([seen[i][1] for i in range(1, n + 1)])
    return Sequences(path, users, items, lines)


@dataclass(frozen=True)
class Challenges:
    """The rows of ``challenge_data.csv``: ``columns[name][i]`` belongs to challenge ``ids[i]``."""

    path: Path
    ids: list[str]
    columns: dict[str, list[str]]


def read_challenges(path: Path) -> Challenges:
    """Read and validate ``challenge_data.csv``.

    Checks: every column of :data:`CHALLENGE_COLUMNS`, a non-empty unique ``challenge_ID``,
    ``total_submissions`` empty or an integer >= 0, ``publish_date`` empty or ``dd-mm-yyyy``.

    Raises:
        DataError: naming the file, line and column of the first problem found.
    """
    ids: list[str] = []
    columns: dict[str, list[str]] = {c: [] for c in CHALLENGE_COLUMNS[1:]}
    first_line: dict[str, int] = {}
    for line, row in _rows(path, CHALLENGE_COLUMNS):
        cid = row["challenge_ID"]
        if not cid:
            raise DataError(path, "empty challenge ID", line=line, column="challenge_ID")
        if cid in first_line:
            raise DataError(
                path,
                f"challenge {cid} appears twice (first on line {first_line[cid]})",
                line=line,
                column="challenge_ID",
            )
        first_line[cid] = line
        if row["total_submissions"] and not _SUBMISSIONS.fullmatch(row["total_submissions"]):
            raise DataError(
                path,
                "expected an integer in [0, 10^18) in ASCII digits or nothing, "
                f"found {shown(row['total_submissions'])}",
                line=line,
                column="total_submissions",
            )
        if row["publish_date"] and _parse_date(row["publish_date"]) is None:
            raise DataError(
                path,
                f"expected a date dd-mm-yyyy or nothing, found {shown(row['publish_date'])}",
                line=line,
                column="publish_date",
            )
        ids.append(cid)
        for c in columns:
            columns[c].append(row[c])
    if not ids:
        raise DataError(path, "the file has a header but no rows")
    return Challenges(path, ids, columns)


def _parse_date(text: str) -> date | None:
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    day, month, year = (int(part) for part in match.groups())
    try:
        return date(year, month, day)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# The whole dataset: history length, vocabulary, metadata
# --------------------------------------------------------------------------------------------


def infer_history_len(train: Sequences, test: Sequences | None, history_len: int | None) -> int:
    """The history length ``L``: the models see the last ``L`` challenges of a user.

    - With ``test.csv``: the number of rows of its users (all must have the same number, 10 in the
      original challenge); an explicit ``history_len`` must agree with it.
    - Without it: ``history_len`` if given, else the most common number of rows of a training
      user minus :data:`HORIZON` (7 for the shared real data, whose users have 10 rows).

    Every training user needs at least ``L + 1`` rows (a full history and a next challenge).

    Raises:
        DataError: a test user with fewer rows than the others, a training user with too few rows,
            or an ``L`` that cannot be inferred.
    """
    if test is not None:
        lengths = test.lengths()
        expected = max(lengths)
        if history_len is not None and history_len != expected:
            expected = history_len
        for user, n, lines in zip(test.users, lengths, test.lines, strict=True):
            if n != expected:
                raise DataError(
                    test.path,
                    f"user {user} has {n} rows; every test user must have the history length "
                    f"L={expected} rows (the most rows of a test user, or --history-len)",
                    line=lines[0],
                    column="user_id",
                )
        length = expected
    elif history_len is not None:
        length = history_len
    else:
        counts = Counter(train.lengths())
        common = max(counts, key=lambda n: (counts[n], n))
        length = common - HORIZON
        if length < 1:
            raise DataError(
                train.path,
                f"most users have {common} rows: too few to infer the history length "
                f"(rows - {HORIZON}); give --history-len",
            )
    if length < 1:
        raise ValueError(f"--history-len must be >= 1, got {length}")
    for user, n, lines in zip(train.users, train.lengths(), train.lines, strict=True):
        if n < length + 1:
            raise DataError(
                train.path,
                f"user {user} has {n} rows; every training user needs at least L+1={length + 1} "
                f"(L={length} history challenges and a next one)",
                line=lines[0],
                column="user_id",
            )
    return length


@dataclass(frozen=True)
class ItemMetadata:
    """Item features from ``challenge_data.csv``, one row per encoded item.

    Attributes:
        names: Names of the categorical columns, then of the numeric ones.
        categorical: ``(C, F)`` int64 codes: column ``f`` holds codes in
            ``[0, cardinalities[f])`` (distinct values in sorted order), -1 where it is empty.
        cardinalities: Number of distinct values of each categorical column.
        numeric: ``(C, G)`` float32 raw features, ``log1p(total_submissions)`` and the publish date
            as a fractional year; NaN where the field is empty.
    """

    names: list[str]
    categorical: np.ndarray
    cardinalities: list[int]
    numeric: np.ndarray


def _encode_metadata(challenges: Challenges, vocabulary: list[str]) -> ItemMetadata:
    row_of = {cid: i for i, cid in enumerate(challenges.ids)}
    rows = np.array([row_of[cid] for cid in vocabulary], dtype=np.int64)
    categorical, cardinalities = [], []
    for column in CATEGORICAL_COLUMNS:
        values = challenges.columns[column]
        codes = {v: i for i, v in enumerate(sorted({v for v in values if v}))}
        categorical.append(np.array([codes.get(v, PAD) for v in values], dtype=np.int64)[rows])
        cardinalities.append(len(codes))
    submissions = [
        math.log1p(int(v)) if v else math.nan for v in challenges.columns["total_submissions"]
    ]
    years = [
        d.year + (d.timetuple().tm_yday - 1) / 366 if (d := _parse_date(v)) else math.nan
        for v in challenges.columns["publish_date"]
    ]
    numeric = np.stack([np.array(submissions), np.array(years)], axis=1)[rows]
    return ItemMetadata(
        names=[*CATEGORICAL_COLUMNS, "log1p_total_submissions", "publish_year"],
        categorical=np.stack(categorical, axis=1),
        cardinalities=cardinalities,
        numeric=numeric.astype(np.float32),
    )


@dataclass(frozen=True)
class ChallengeData:
    """A validated, label-encoded challenge dataset.

    Attributes:
        vocabulary: Original challenge IDs, sorted; item ``i`` of every tensor is ``vocabulary[i]``.
            Covers every challenge of every file given (a catalogue item nobody solved included).
        history_len: ``L``, the number of past challenges the models see.
        train_users: User ids of ``train.csv``.
        train: Encoded challenge sequences of those users, int64 arrays in solving order.
        test_users: User ids of ``test.csv`` (empty without it).
        test: Encoded histories of the test users.
        metadata: Item features from ``challenge_data.csv``, or ``None`` without it.
        files: The files read.
    """

    vocabulary: list[str]
    history_len: int
    train_users: list[str]
    train: list[np.ndarray]
    test_users: list[str] = field(default_factory=list)
    test: list[np.ndarray] = field(default_factory=list)
    metadata: ItemMetadata | None = None
    files: list[str] = field(default_factory=list)

    @property
    def num_items(self) -> int:
        """The number of items ``C`` (the model's number of outputs)."""
        return len(self.vocabulary)

    def describe(self) -> str:
        """One line: the users of each file, the challenges and the history length."""
        return (
            f"{len(self.train)} train.csv users, {len(self.test)} test.csv users, "
            f"{self.num_items} challenges, L={self.history_len}"
        )


def load_challenge_data(data_dir: Path, *, history_len: int | None = None) -> ChallengeData:
    """Read, validate and label-encode the challenge's files in ``data_dir``.

    ``train.csv`` is required; ``test.csv`` and ``challenge_data.csv`` are used when present.
    Every challenge of ``test.csv`` must appear in ``train.csv`` or ``challenge_data.csv`` (the
    model knows nothing else about it); with ``challenge_data.csv``, every challenge of the
    sequence files must be in it. See :func:`infer_history_len` for ``L``.

    Raises:
        DataError: naming the file, line and column of the first problem found.
    """
    train = read_sequences(data_dir / "train.csv")
    test_path = data_dir / "test.csv"
    test = read_sequences(test_path) if test_path.exists() else None
    catalogue_path = data_dir / "challenge_data.csv"
    challenges = read_challenges(catalogue_path) if catalogue_path.exists() else None
    if test is not None:
        _check_disjoint(train, test)
    length = infer_history_len(train, test, history_len)

    known = {item for items in train.items for item in items}
    if challenges is not None:
        catalogue = set(challenges.ids)
        for seqs in [train] if test is None else [train, test]:
            for item, line in _unknown(seqs, catalogue):
                raise DataError(
                    seqs.path,
                    f"challenge {item} is not in {catalogue_path.name}",
                    line=line,
                    column="challenge",
                )
        known |= catalogue
    if test is not None:
        for item, line in _unknown(test, known):
            raise DataError(
                test.path,
                f"challenge {item} never appears in train.csv"
                + ("" if challenges is None else f" nor in {catalogue_path.name}")
                + ": nothing is known about it",
                line=line,
                column="challenge",
            )
    vocabulary = sorted(known)
    code = {item: i for i, item in enumerate(vocabulary)}

    def encode(seqs: Sequences | None) -> list[np.ndarray]:
        if seqs is None:
            return []
        return [np.array([code[x] for x in items], dtype=np.int64) for items in seqs.items]

    return ChallengeData(
        vocabulary=vocabulary,
        history_len=length,
        train_users=train.users,
        train=encode(train),
        test_users=[] if test is None else test.users,
        test=encode(test),
        metadata=None if challenges is None else _encode_metadata(challenges, vocabulary),
        files=[str(p) for p in (train.path, test_path, catalogue_path) if p.exists()],
    )


def _check_disjoint(train: Sequences, test: Sequences) -> None:
    """Refuse a ``test.csv`` user who is also a ``train.csv`` user (whose future is trained on)."""
    first_line = {user: lines[0] for user, lines in zip(train.users, train.lines, strict=True)}
    for user, lines in zip(test.users, test.lines, strict=True):
        if user in first_line:
            raise DataError(
                test.path,
                f"user {user} is also a {train.path.name} user (line {first_line[user]}); test "
                "users must be other users: their next challenges would be trained on",
                line=lines[0],
                column="user_id",
            )


def _unknown(seqs: Sequences, known: set[str]) -> Iterator[tuple[str, int]]:
    for items, lines in zip(seqs.items, seqs.lines, strict=True):
        for item, line in zip(items, lines, strict=True):
            if item not in known:
                yield item, line


# --------------------------------------------------------------------------------------------
# Splits and windows (index lists padded with -1)
# --------------------------------------------------------------------------------------------


def validation_size(num_users: int, val_fraction: float) -> int:
    """How many of ``num_users`` users :func:`split_users` holds out: ``round(N * fraction)``, >= 1.

    Raises:
        ValueError: ``val_fraction`` outside ``(0, 1)``, or a split that leaves no training user.

    Example:
        >>> validation_size(150, 0.1), validation_size(3, 0.1)
        (15, 1)
        >>> validation_size(150, 0.999)
        Traceback (most recent call last):
        ...
        ValueError: holding out 150 of 150 users for validation leaves none to train on
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    num_val = max(1, round(num_users * val_fraction))
    if num_val >= num_users:
        raise ValueError(
            f"holding out {num_val} of {num_users} users for validation leaves none to train on"
        )
    return num_val


def split_users(num_users: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random user-level split: sorted indices of the training and of the validation users.

    Example:
        >>> train, val = split_users(10, 0.2, seed=0)
        >>> len(train), len(val), sorted([*train, *val]) == list(range(10))
        (8, 2, True)
    """
    num_val = validation_size(num_users, val_fraction)
    order = np.random.default_rng(seed).permutation(num_users)
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def _padded(seqs: Sequence[np.ndarray], left: int, right: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences as rows of a matrix with ``left`` and ``right`` columns of padding, and lengths."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    width = int(lengths.max()) if len(seqs) else 0
    out = np.full((len(seqs), left + width + right), PAD, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, left : left + len(s)] = s
    return out, lengths


def pad_sequences(seqs: Sequence[np.ndarray]) -> np.ndarray:
    """Sequences as the rows of one int64 matrix ``(N, longest)``, right-padded with -1.

    Example:
        >>> pad_sequences([np.array([3, 1]), np.array([2])]).tolist()
        [[3, 1], [2, -1]]
    """
    return _padded(seqs, 0, 0)[0]


def sliding_windows(
    seqs: Sequence[np.ndarray], history_len: int, horizon: int = HORIZON
) -> tuple[np.ndarray, np.ndarray]:
    """Every (history, next items) window of every sequence.

    For a sequence ``s`` of length ``n`` and each cut ``t = 1 .. n-1``: the history is
    ``s[max(0, t-L):t]`` left-padded with -1 to length ``L``, the targets are ``s[t:t+horizon]``
    right-padded with -1.

    Returns:
        ``(history, targets)``: int64 arrays ``(N, L)`` and ``(N, horizon)``.

    Example:
        >>> h, t = sliding_windows([np.array([5, 6, 7])], history_len=2, horizon=2)
        >>> h.tolist(), t.tolist()
        ([[-1, 5], [5, 6]], [[6, 7], [7, -1]])
    """
    padded, lengths = _padded(seqs, history_len, horizon)
    if padded.shape[1] < history_len + horizon + 1:
        return (np.empty((0, history_len), np.int64), np.empty((0, horizon), np.int64))
    # windows[i, t] = padded[i, t : t + L + horizon]: history then targets for the cut at t.
    windows = np.lib.stride_tricks.sliding_window_view(padded, history_len + horizon, axis=1)
    cuts = np.arange(windows.shape[1])
    keep = (cuts[None, :] >= 1) & (cuts[None, :] < lengths[:, None])
    chosen = windows[keep]
    return chosen[:, :history_len].copy(), chosen[:, history_len:].copy()


def history_windows(
    seqs: Sequence[np.ndarray], history_len: int, horizon: int = HORIZON
) -> tuple[np.ndarray, np.ndarray]:
    """The challenge's own window for each sequence: the first ``L`` items, then the next ones.

    Returns:
        ``(history, targets)``: the first ``L`` items (left-padded with -1 when shorter) and the
        following ``horizon`` items (right-padded with -1), int64 arrays ``(N, L)`` and
        ``(N, horizon)``. For test users (exactly ``L`` items) the targets are all -1.

    Example:
        >>> h, t = history_windows([np.array([5, 6, 7, 8])], history_len=2)
        >>> h.tolist(), t.tolist()
        ([[5, 6]], [[7, 8, -1]])
    """
    history = np.full((len(seqs), history_len), PAD, dtype=np.int64)
    targets = np.full((len(seqs), horizon), PAD, dtype=np.int64)
    for i, s in enumerate(seqs):
        head, tail = s[:history_len], s[history_len : history_len + horizon]
        history[i, history_len - len(head) :] = head
        targets[i, : len(tail)] = tail
    return history, targets


def position_windows(
    seqs: Sequence[np.ndarray], history_len: int, horizon: int = HORIZON
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The windows of :func:`sliding_windows`, grouped so that a causal model reads them in few
    passes: one row per pass, every window of the row scored from one state.

    A sequence ``s`` of length ``n`` gives a row holding its first ``min(n - 1, L)`` items
    (left-padded with -1 to length ``L``): the state after item ``j`` has the history
    ``s[: j + 1]``, the window of the cut ``j + 1``, whose targets are ``s[j + 1 : j + 1 +
    horizon]`` (from the whole sequence, right-padded with -1). The cuts ``t > L``, whose
    histories ``s[t - L : t]`` start after the sequence does, get a row each, ``s[t - L : t]``
    with only its last position in ``mask``. So the rows hold exactly the windows of
    :func:`sliding_windows`, each once, with the same history and targets; a validation or test
    user (scored on their first ``L`` items) starts at their first item, as these rows do.

    Returns:
        ``(history, targets, mask)``: int64 ``(R, L)``, int64 ``(R, L, horizon)`` (the next items
        after each position, -1 where the position is not in ``mask``) and bool ``(R, L)``.

    Example:
        >>> h, t, m = position_windows([np.array([5, 6, 7, 8])], history_len=2, horizon=2)
        >>> h.tolist(), m.tolist()
        ([[5, 6], [6, 7]], [[True, True], [False, True]])
        >>> t.tolist()
        [[[6, 7], [7, 8]], [[-1, -1], [8, -1]]]
    """
    L = history_len
    rows = []  # (sequence, where its row starts, how many items the row holds, first position)
    for i, s in enumerate(seqs):
        n = len(s)
        if n >= 2:
            rows.append((i, 0, min(n - 1, L), 0))
        rows.extend((i, cut - L, L, L - 1) for cut in range(L + 1, n))
    history = np.full((len(rows), L), PAD, dtype=np.int64)
    targets = np.full((len(rows), L, horizon), PAD, dtype=np.int64)
    mask = np.zeros((len(rows), L), dtype=bool)
    for r, (i, begin, count, first) in enumerate(rows):
        ahead = np.concatenate([seqs[i][begin + 1 :], np.full(horizon, PAD)])
        after = np.lib.stride_tricks.sliding_window_view(ahead, horizon)  # after[j]: next items
        history[r, L - count :] = seqs[i][begin : begin + count]
        targets[r, L - count + first :] = after[first:count]
        mask[r, L - count + first :] = True
    return history, targets, mask


@dataclass(frozen=True)
class Windows:
    """Index lists (padded with -1) for training, validation and test."""

    train_history: Tensor  # (N, L) the last L challenges before each cut, left-padded
    train_targets: Tensor  # (N, 3) the next 3 challenges
    val_history: Tensor  # (V, L) validation users' first L challenges
    val_targets: Tensor  # (V, 3) their next 3
    test_history: Tensor  # (T, L) test users' histories
    train_sequences: Tensor  # (U, longest) every sequence the windows come from, right-padded
    # The same training windows as rows that a causal model reads in one pass (position_windows):
    row_history: Tensor = field(default_factory=lambda: torch.empty(0, 0, dtype=torch.long))
    row_targets: Tensor = field(default_factory=lambda: torch.empty(0, 0, 3, dtype=torch.long))
    row_mask: Tensor = field(default_factory=lambda: torch.empty(0, 0, dtype=torch.bool))

    def training_examples(self, training: str) -> tuple[Tensor, ...]:
        """What one training example is: ``(history, targets)`` windows for ``"windows"``,
        ``(history, targets, mask)`` rows of positions for ``"positions"``."""
        if training == "positions":
            return self.row_history, self.row_targets, self.row_mask
        return self.train_history, self.train_targets


def make_windows(data: ChallengeData, val_fraction: float, seed: int) -> Windows:
    """Training windows: every (last L, next 3) of the training users, plus the windows inside the
    first L challenges of validation and test users (known at prediction time), also grouped as
    rows of positions (:func:`position_windows`). Validation users are scored on their first L
    challenges -> next 3, as test users are."""
    L = data.history_len
    train_idx, val_idx = split_users(len(data.train), val_fraction, seed)
    train_users = [data.train[i] for i in train_idx]
    val_users = [data.train[i] for i in val_idx]
    known = [s[:L] for s in val_users] + data.test  # histories known at prediction time
    parts = [sliding_windows(train_users, L), sliding_windows(known, L)]
    rows = position_windows(train_users + known, L)
    val_history, val_targets = history_windows(val_users, L)
    test_history, _ = history_windows(data.test, L)
    return Windows(
        train_history=torch.from_numpy(np.concatenate([h for h, _ in parts])),
        train_targets=torch.from_numpy(np.concatenate([t for _, t in parts])),
        val_history=torch.from_numpy(val_history),
        val_targets=torch.from_numpy(val_targets),
        test_history=torch.from_numpy(test_history),
        train_sequences=torch.from_numpy(pad_sequences(train_users + known)),
        row_history=torch.from_numpy(rows[0]),
        row_targets=torch.from_numpy(rows[1]),
        row_mask=torch.from_numpy(rows[2]),
    )
