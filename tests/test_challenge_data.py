"""The challenge's CSV loader, windows and synthetic data (examples/challenge_data.py, ...)."""

from __future__ import annotations

import csv
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "av-challenge"  # as in conftest.py
sys.path.insert(0, str(REPO_ROOT / "examples"))

import synthetic  # noqa: E402
from challenge_data import (  # noqa: E402
    DataError,
    history_windows,
    load_challenge_data,
    read_sequences,
    sliding_windows,
    split_users,
)

HEADER = "user_sequence,user_id,challenge_sequence,challenge"
CATALOGUE_HEADER = (
    "challenge_ID,programming_language,challenge_series_ID,total_submissions,publish_date,"
    "author_ID,author_gender,author_org_ID,category_id"
)


def rows(users: dict[str, list[str]]) -> list[str]:
    """``train.csv``-style lines for ``{user: [challenge, ...]}``."""
    return [f"{u}_{i},{u},{i},{c}" for u, cs in users.items() for i, c in enumerate(cs, start=1)]


def write(path: Path, header: str, lines: list[str], newline: str = "\n") -> Path:
    path.write_text(newline.join([header, *lines]) + newline, encoding="utf-8", newline="")
    return path


TRAIN = {"7": ["CI3", "CI1", "CI2", "CI5", "CI4"], "8": ["CI1", "CI2", "CI3", "CI4", "CI6"]}
TEST = {"9": ["CI2", "CI6"], "10": ["CI1", "CI3"]}
CATALOGUE = [
    "CI1,1,SI1,10,01-02-2003,AI1,M,AOI1,5",
    "CI2,1,SI1,,02-02-2003,AI1,M,AOI1,",
    "CI3,2,,0,,AI2,F,,7",
    "CI4,2,SI2,3,31-12-2010,AI2,F,AOI2,7",
    "CI5,3,SI2,4,01-01-2011,,,AOI2,",
    "CI6,3,SI3,5,01-01-2012,AI3,M,AOI3,9",
    "CI7,1,SI3,6,01-01-2013,AI3,M,AOI3,9",
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write(tmp_path / "train.csv", HEADER, rows(TRAIN), newline="\r\n")
    write(tmp_path / "test.csv", HEADER, rows(TEST))
    write(tmp_path / "challenge_data.csv", CATALOGUE_HEADER, CATALOGUE, newline="\r\n")
    return tmp_path


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def test_load_encodes_over_all_files(data_dir: Path) -> None:
    data = load_challenge_data(data_dir)
    assert data.vocabulary == [f"CI{i}" for i in range(1, 8)]  # CI7 only in the catalogue
    assert data.history_len == 2  # the number of rows of a test.csv user
    assert data.train_users == ["7", "8"]
    decoded = [[data.vocabulary[i] for i in s] for s in data.train]
    assert decoded == list(TRAIN.values())
    assert data.test_users == ["9", "10"]
    assert [[data.vocabulary[i] for i in s] for s in data.test] == list(TEST.values())
    assert all(s.dtype == np.int64 for s in data.train + data.test)


def test_metadata_codes_and_missing_fields(data_dir: Path) -> None:
    meta = load_challenge_data(data_dir).metadata
    assert meta is not None
    assert meta.categorical.shape == (7, 6)
    assert meta.numeric.shape == (7, 2)
    series = meta.names.index("challenge_series_ID")
    assert meta.categorical[:, series].tolist() == [0, 0, -1, 1, 1, 2, 2]
    assert meta.cardinalities[series] == 3
    category = meta.names.index("category_id")
    assert meta.categorical[:, category].tolist() == [0, -1, 1, 1, -1, 2, 2]
    assert meta.numeric[0, 0] == pytest.approx(math.log1p(10))
    assert math.isnan(meta.numeric[1, 0])
    assert math.isnan(meta.numeric[2, 1])
    assert meta.numeric[0, 1] == pytest.approx(2003 + 31 / 366)


def test_rows_in_any_order_bom_blank_lines_and_header_spaces(tmp_path: Path) -> None:
    lines = rows(TRAIN)[::-1]
    lines.insert(3, "")
    path = tmp_path / "train.csv"
    path.write_text(
        "\ufeff User_Sequence ,user_id,challenge_sequence,challenge,extra\r\n"
        + "".join(f"{line},x\r\n" if line else "\r\n" for line in lines),
        encoding="utf-8",
        newline="",
    )
    seqs = read_sequences(path)
    assert seqs.users == ["8", "7"]
    assert seqs.items == [TRAIN["8"], TRAIN["7"]]


def test_history_len_without_test_csv_is_rows_minus_three(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", HEADER, rows(TRAIN))
    data = load_challenge_data(tmp_path)
    assert data.history_len == 5 - 3
    assert data.test == []
    assert data.metadata is None
    assert load_challenge_data(tmp_path, history_len=4).history_len == 4


def test_synthetic_is_deterministic_and_loadable(tmp_path: Path) -> None:
    cfg = synthetic.SyntheticConfig(num_train_users=30, num_test_users=10, seed=3)
    assert synthetic.generate(cfg) == synthetic.generate(cfg)
    assert synthetic.generate(cfg) != synthetic.generate(
        synthetic.SyntheticConfig(num_train_users=30, num_test_users=10, seed=4)
    )
    synthetic.write_dataset(tmp_path, cfg)
    assert (tmp_path / "train.csv").read_bytes().count(b"\r\n") == 30 * 13 + 1
    data = load_challenge_data(tmp_path)
    assert data.history_len == 10
    assert len(data.train) == 30
    assert len(data.test) == 10
    assert all(len(set(s.tolist())) == len(s) for s in data.train + data.test)  # no repeats
    assert data.metadata is not None
    assert data.num_items == len(data.metadata.categorical)


def test_synthetic_has_series_structure() -> None:
    """The next challenge is very often the next one of the same series (what a model learns)."""
    files = synthetic.generate(synthetic.SyntheticConfig(num_train_users=200, num_test_users=0))
    series = {r[0]: r[2] for r in files["challenge_data.csv"][1:]}
    by_user: dict[str, list[str]] = {}
    for r in files["train.csv"][1:]:
        by_user.setdefault(r[1], []).append(r[3])
    pairs = [(a, b) for s in by_user.values() for a, b in itertools.pairwise(s)]
    same = sum(series[a] == series[b] != "" for a, b in pairs) / len(pairs)
    assert same > 0.4


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the shared real challenge data is absent")
def test_real_challenge_files() -> None:
    data = load_challenge_data(SHARED_DATA)
    assert data.history_len == 7  # 10 rows per user, no test.csv
    assert len(data.train) == 20_000
    assert data.test == []
    assert data.num_items == 5606  # every challenge of challenge_data.csv
    assert all(len(s) == 10 for s in data.train)
    assert data.metadata is not None
    assert data.metadata.categorical.shape == (5606, 6)
    history, targets = history_windows(data.train[:5], data.history_len)
    assert history.tolist() == [s[:7].tolist() for s in data.train[:5]]
    assert targets.tolist() == [s[7:].tolist() for s in data.train[:5]]


# ------------------------------------------------------------------------------------------------
# Windows and split, against plain-Python references
# ------------------------------------------------------------------------------------------------


def ref_sliding(seqs: list[list[int]], L: int, H: int) -> tuple[list[list[int]], list[list[int]]]:
    hist, targ = [], []
    for s in seqs:
        for t in range(1, len(s)):
            h = s[max(0, t - L) : t]
            hist.append([-1] * (L - len(h)) + h)
            nxt = s[t : t + H]
            targ.append(nxt + [-1] * (H - len(nxt)))
    return hist, targ


@settings(max_examples=60)
@given(
    st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=9), max_size=6),
    st.integers(1, 5),
    st.integers(1, 4),
)
def test_sliding_windows_match_reference(seqs: list[list[int]], L: int, H: int) -> None:
    history, targets = sliding_windows([np.array(s, dtype=np.int64) for s in seqs], L, H)
    ref_h, ref_t = ref_sliding(seqs, L, H)
    assert history.shape == (len(ref_h), L)
    assert targets.shape == (len(ref_t), H)
    assert history.tolist() == ref_h
    assert targets.tolist() == ref_t


@settings(max_examples=40)
@given(
    st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=9), max_size=6), st.integers(1, 6)
)
def test_history_windows_match_reference(seqs: list[list[int]], L: int) -> None:
    history, targets = history_windows([np.array(s, dtype=np.int64) for s in seqs], L)
    for s, h, t in zip(seqs, history.tolist(), targets.tolist(), strict=True):
        assert h == [-1] * (L - len(s[:L])) + s[:L]
        assert t == s[L : L + 3] + [-1] * (3 - len(s[L : L + 3]))


def test_split_users_is_a_deterministic_partition() -> None:
    train, val = split_users(100, 0.2, seed=1)
    assert len(val) == 20
    assert set(train).isdisjoint(val)
    assert len(train) + len(val) == 100
    again = split_users(100, 0.2, seed=1)
    assert train.tolist() == again[0].tolist()
    assert val.tolist() == again[1].tolist()
    assert val.tolist() != split_users(100, 0.2, seed=2)[1].tolist()
    with pytest.raises(ValueError, match="val_fraction must be in"):
        split_users(10, 1.5, seed=0)
    with pytest.raises(ValueError, match="holding out 1 of 1 users"):
        split_users(1, 0.5, seed=0)


# ------------------------------------------------------------------------------------------------
# Malformed input: one-line errors naming the file, line and column
# ------------------------------------------------------------------------------------------------

GOOD_TRAIN = rows(TRAIN)  # lines 2..11 of train.csv


def _replace(lines: list[str], index: int, line: str) -> list[str]:
    out = list(lines)
    out[index] = line
    return out


MALFORMED: list[tuple[str, str, list[str], str]] = [
    # (file, header, lines, expected message regex)
    ("train.csv", "", [], r"train\.csv: the file is empty"),
    ("train.csv", HEADER, [], r"train\.csv: the file has a header but no rows"),
    (
        "train.csv",
        "user_sequence,user_id,challenge",
        [],
        r"train\.csv, line 1, column challenge_sequence: missing column",
    ),
    (
        "train.csv",
        HEADER,
        _replace(GOOD_TRAIN, 2, "7_3,7,three,CI2"),
        r"train\.csv, line 4, column challenge_sequence: expected a positive integer, "
        r"found 'three'",
    ),
    (
        "train.csv",
        HEADER,
        _replace(GOOD_TRAIN, 2, "7_3.5,7,3.5,CI2"),
        r"train\.csv, line 4, column challenge_sequence: expected a positive integer",
    ),
    (
        "train.csv",
        HEADER,
        _replace(GOOD_TRAIN, 2, "7_0,7,0,CI2"),
        r"train\.csv, line 4, column challenge_sequence: expected a positive integer, found '0'",
    ),
    (
        "train.csv",
        HEADER,
        _replace(GOOD_TRAIN, 2, "7_3,7,3"),
        r"train\.csv, line 4: expected 4 fields, found 3",
    ),
    (
        "train.csv",
        HEADER,
        _replace(GOOD_TRAIN, 2, "7_2,7,2,CI2"),
        r"train\.csv, line 4, column challenge_sequence: user 7 has challenge_sequence 2 twice "
        r"\(first on line 3\)",
    ),
    (
        "train.csv",
        HEADER,
        _replace(GOOD_TRAIN, 2, "7_9,7,9,CI2"),
        r"train\.csv, line 2, column challenge_sequence: user 7 has no row with "
        r"challenge_sequence 3",
    ),
    (
        "train.csv",
        HEADER,
        _replace(GOOD_TRAIN, 2, "8_3,7,3,CI2"),
        r"train\.csv, line 4, column user_sequence: expected 7_3",
    ),
    (
        "train.csv",
        HEADER,
        _replace(GOOD_TRAIN, 2, "7_3,7,3,"),
        r"train\.csv, line 4, column challenge: empty challenge ID",
    ),
    (
        "train.csv",
        HEADER,
        _replace(GOOD_TRAIN, 2, "_3,,3,CI2"),
        r"train\.csv, line 4, column user_id: empty user_id",
    ),
    (
        "train.csv",
        HEADER,
        [*GOOD_TRAIN, "5_1,5,1,CI1", "5_2,5,2,CI2"],
        r"train\.csv, line 12, column user_id: user 5 has 2 rows; every training user needs at "
        r"least L\+1=3",
    ),
    (
        "test.csv",
        HEADER,
        [*rows(TEST), "11_1,11,1,CI1"],
        r"test\.csv, line 6, column user_id: user 11 has 1 rows; every test user must have",
    ),
    (
        "test.csv",
        HEADER,
        _replace(rows(TEST), 3, "10_2,10,2,CI99"),
        r"test\.csv, line 5, column challenge: challenge CI99 is not in challenge_data\.csv",
    ),
    (
        "challenge_data.csv",
        CATALOGUE_HEADER,
        CATALOGUE[:-2],
        r"train\.csv, line 11, column challenge: challenge CI6 is not in challenge_data\.csv",
    ),
    (
        "challenge_data.csv",
        CATALOGUE_HEADER,
        _replace(CATALOGUE, 1, "CI2,1,SI1,many,02-02-2003,AI1,M,AOI1,"),
        r"challenge_data\.csv, line 3, column total_submissions: expected an integer in \[0, ",
    ),
    (
        "challenge_data.csv",
        CATALOGUE_HEADER,
        _replace(CATALOGUE, 1, "CI2,1,SI1,4,2003-02-02,AI1,M,AOI1,"),
        r"challenge_data\.csv, line 3, column publish_date: expected a date dd-mm-yyyy",
    ),
    (
        "challenge_data.csv",
        CATALOGUE_HEADER,
        _replace(CATALOGUE, 1, "CI1,1,SI1,4,02-02-2003,AI1,M,AOI1,"),
        r"challenge_data\.csv, line 3, column challenge_ID: challenge CI1 appears twice",
    ),
    (
        "challenge_data.csv",
        CATALOGUE_HEADER.replace(",category_id", ""),
        [],
        r"challenge_data\.csv, line 1, column category_id: missing column",
    ),
]


@pytest.mark.parametrize(("name", "header", "lines", "message"), MALFORMED)
def test_malformed_input_names_file_line_and_column(
    data_dir: Path, name: str, header: str, lines: list[str], message: str
) -> None:
    path = data_dir / name
    if header:
        write(path, header, lines)
    else:
        path.write_bytes(b"")
    with pytest.raises(DataError, match=message) as info:
        load_challenge_data(data_dir)
    assert "\n" not in str(info.value)


ENCODED: list[tuple[str, bytes, str]] = [
    # (file, its bytes, expected message regex): what is not clean UTF-8 CSV
    (
        "train.csv",
        (HEADER + "\n" + "\n".join(GOOD_TRAIN[:3]) + "\xe9\n").encode("latin-1"),
        r"train\.csv, line 4: not UTF-8 text: byte 0xe9 at offset \d+ cannot be decoded",
    ),
    (
        "train.csv",
        HEADER.encode("utf-16"),
        r"train\.csv: the file is UTF-16 text; save it as UTF-8",
    ),
    ("train.csv", HEADER.encode("utf-32"), r"train\.csv: the file is UTF-32 text"),
    ("train.csv", HEADER.encode("utf-16-le"), r"train\.csv, line 1: holds a NUL character"),
    (
        "train.csv",
        f"{HEADER}\n7_1,7,1,CI{'9' * 140_000}\n".encode(),
        r"train\.csv, line 2: a field is longer than 131,072 characters",
    ),
    (
        "train.csv",
        (
            HEADER
            + "\n"
            + "\n".join(GOOD_TRAIN[:2])
            + '\n7_3,7,3,"CI2\n'
            + "\n".join(GOOD_TRAIN[3:])
        ).encode(),
        r"train\.csv, line 4: a quote \(\"\) opens a field here and never closes",
    ),
    (
        "train.csv",
        f'{HEADER}\n7_1,7,1,"CI1\n7_2,7,2,CI2"\n'.encode(),
        r"train\.csv, line 2: a quoted field runs on to line 3: a field cannot hold a line break",
    ),
    (
        "train.csv",
        f'{HEADER}\n7_1,7,1,"CI1"x\n'.encode(),
        r"train\.csv, line 2: a quoted field goes on after its closing quote",
    ),
    (
        "train.csv",
        f"{HEADER},User_Id \n".encode(),
        r"train\.csv, line 1, column user_id: the header names this column 2 times",
    ),
    (
        "train.csv",
        f"{HEADER}\n7_1,7,\u0661,CI1\n".encode(),
        r"train\.csv, line 2, column challenge_sequence: expected a positive integer, "
        r"found '\u0661' \(ASCII digits",
    ),
    (
        "train.csv",
        f"{HEADER}\n7_1234567890,7,1234567890,CI1\n".encode(),
        r"train\.csv, line 2, column challenge_sequence: .* \(ASCII digits, below 10\^9\)",
    ),
    *[
        (
            "challenge_data.csv",
            f"{CATALOGUE_HEADER}\nCI1,1,SI1,{value},01-02-2003,AI1,M,AOI1,5\n".encode(),
            r"challenge_data\.csv, line 2, column total_submissions: expected an integer in "
            r"\[0, 10\^18\) in ASCII digits or nothing, found ('²'|'9+'\.\.\. \(\d+ characters\))",
        )
        for value in ("²", "9" * 400, "9" * 5000)
    ],
    (
        "challenge_data.csv",
        f"{CATALOGUE_HEADER}\nCI1,1,SI1,4,\u0660\u0661-\u0660\u0662-2003,AI1,M,AOI1,5\n".encode(),
        r"challenge_data\.csv, line 2, column publish_date: expected a date dd-mm-yyyy",
    ),
]


@pytest.mark.parametrize(("name", "content", "message"), ENCODED)
def test_malformed_text_names_file_and_line(
    data_dir: Path, name: str, content: bytes, message: str
) -> None:
    (data_dir / name).write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_challenge_data(data_dir)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 400  # long values are shortened


def test_ids_may_be_quoted_and_hold_commas_and_quotes(tmp_path: Path) -> None:
    odd = 'CI,1 "x"'
    train = {u: [odd if c == "CI1" else c for c in cs] for u, cs in TRAIN.items()}
    with (tmp_path / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows(
            [
                HEADER.split(","),
                *(
                    [f"{u}_{i}", u, str(i), c]
                    for u, cs in train.items()
                    for i, c in enumerate(cs, start=1)
                ),
            ]
        )
    assert '"CI,1 ""x"""' in (tmp_path / "train.csv").read_text()
    data = load_challenge_data(tmp_path)
    assert [[data.vocabulary[i] for i in s] for s in data.train] == list(train.values())


def test_test_users_must_not_be_train_users(data_dir: Path) -> None:
    write(data_dir / "test.csv", HEADER, rows({"9": ["CI2", "CI6"], "8": ["CI1", "CI3"]}))
    with pytest.raises(
        DataError,
        match=r"test\.csv, line 4, column user_id: user 8 is also a train\.csv user \(line 7\)",
    ):
        load_challenge_data(data_dir)


def test_missing_train_csv(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train\.csv: file not found"):
        load_challenge_data(tmp_path)


def test_test_item_never_seen_without_catalogue(data_dir: Path) -> None:
    (data_dir / "challenge_data.csv").unlink()
    write(data_dir / "test.csv", HEADER, _replace(rows(TEST), 1, "9_2,9,2,CI7"))
    with pytest.raises(
        DataError,
        match=r"test\.csv, line 3, column challenge: challenge CI7 never appears in "
        r"train\.csv: nothing is known about it",
    ):
        load_challenge_data(data_dir)


def test_history_len_conflicting_with_test_csv(data_dir: Path) -> None:
    with pytest.raises(DataError, match=r"test\.csv, line 2, column user_id: user 9 has 2 rows"):
        load_challenge_data(data_dir, history_len=3)


def test_too_few_rows_to_infer_history_len(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", HEADER, rows({"1": ["a", "b", "c"]}))
    with pytest.raises(DataError, match=r"train\.csv: most users have 3 rows: too few"):
        load_challenge_data(tmp_path)
