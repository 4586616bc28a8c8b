"""examples/challenge.py answers bad input with one line and leaves the previous run untouched.

Each case builds a malformed dataset, a bad option value, an unusable output folder or a damaged
checkpoint, runs the command line against an OUT holding a finished run (in-process; a subset also
as a real subprocess) and checks: a non-zero exit status, exactly one line on stderr that starts
with ``error:`` and names the option, or the file, line and column, and every file and folder in
and beside OUT (hidden ones included) byte for byte as before.
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import atomic
import challenge
import synthetic
from challenge_support import FAST, OUTPUTS, TINY, run, tree


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny dataset and a finished 1-epoch run on it."""
    root = tmp_path_factory.mktemp("errors")
    data = root / "data"
    synthetic.write_dataset(data, TINY)
    out = root / "finished" / "out"
    assert challenge.main(base_options(data, out)) == 0
    return data, out


def base_options(data: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--output", str(out), "--epochs", "1", "--quiet", *FAST]


@dataclass
class Ctx:
    """A case's setting: the good data, OUT (a copy of the finished run) and a scratch folder."""

    data: Path
    out: Path
    scratch: Path

    @property
    def base(self) -> list[str]:
        return base_options(self.data, self.out)

    def dataset(self, name: str, edit: Callable[[list[str]], list[str]] | bytes | None) -> Path:
        """A copy of the data with the file ``name`` edited (as lines), replaced or removed."""
        copy = self.scratch / "data"
        if not copy.exists():
            shutil.copytree(self.data, copy)
        path = copy / name
        if edit is None:
            path.unlink()
        elif isinstance(edit, bytes):
            path.write_bytes(edit)
        else:
            lines = path.read_bytes().decode("utf-8").split("\r\n")
            path.write_text("\r\n".join(edit(lines)), encoding="utf-8", newline="")
        return copy


Case = Callable[[Ctx], list[str]]


def options(*extra: str) -> Case:
    return lambda c: [*c.base, *extra]


def data_file(name: str, edit: Callable[[list[str]], list[str]] | bytes | None) -> Case:
    return lambda c: [*c.base, "--data", str(c.dataset(name, edit))]


def replace_line(index: int, edit: Callable[[str], str]) -> Callable[[list[str]], list[str]]:
    """An edit of the line ``index`` (0 = the header, file line ``index + 1``)."""
    return lambda lines: [edit(x) if i == index else x for i, x in enumerate(lines)]


def set_field(column: int, value: str) -> Callable[[str], str]:
    return lambda line: ",".join(value if i == column else f for i, f in enumerate(line.split(",")))


def resume_from(content: bytes | Callable[[dict], object]) -> Case:
    """--resume from OUT whose checkpoint.pt is ``content`` (bytes, or an edit of the real one)."""

    def case(c: Ctx) -> list[str]:
        path = c.out / "checkpoint.pt"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content(torch.load(path, weights_only=True)), path)
        return [*c.base, "--resume"]

    return case


def one_user(lines: list[str]) -> list[str]:
    user = lines[1].split(",")[1]
    return [x for x in lines if not x or x == lines[0] or x.split(",")[1] == user]


def train_user_in_test_csv(c: Ctx) -> list[str]:
    """test.csv whose first user takes the id of train.csv's first user."""
    train_user = (c.data / "train.csv").read_text().splitlines()[1].split(",")[1]

    def edit(lines: list[str]) -> list[str]:
        user = lines[1].split(",")[1]
        return [
            f"{train_user}_{f[2]},{train_user},{f[2]},{f[3]}" if f[1:2] == [user] else x
            for x, f in ((x, x.split(",")) for x in lines)
        ]

    return [*c.base, "--data", str(c.dataset("test.csv", edit))]


class Evil:
    """Pickles into a call that would create a file when loaded without weights_only=True."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def truncated(c: Ctx) -> list[str]:
    data = (c.out / "checkpoint.pt").read_bytes()
    (c.out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    return [*c.base, "--resume"]


def best_model_as_checkpoint(c: Ctx) -> list[str]:
    shutil.copy(c.out / "best_model.pt", c.out / "checkpoint.pt")
    return [*c.base, "--resume"]


def evil_checkpoint(c: Ctx) -> list[str]:
    torch.save(Evil(c.scratch / "code-ran"), c.out / "checkpoint.pt")
    return [*c.base, "--resume"]


def wider_weights(ckpt: dict) -> dict:
    ckpt["model"] = {
        k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if v.ndim else v
        for k, v in ckpt["model"].items()
    }
    return ckpt


def latin1_byte(c: Ctx) -> list[str]:
    lines = (c.data / "train.csv").read_bytes().split(b"\r\n")
    lines[3] += b"\xe9"  # "é" in Latin-1, not UTF-8
    return [*c.base, "--data", str(c.dataset("train.csv", b"\r\n".join(lines)))]


def no_run_yet(c: Ctx) -> list[str]:
    shutil.rmtree(c.out)
    return [*c.base, "--resume"]


def parent_is_a_file(c: Ctx) -> list[str]:
    (c.out.parent / "a-file").write_text("x")
    return [*c.base, "--output", str(c.out.parent / "a-file" / "out")]


def out_is_a_file(c: Ctx) -> list[str]:
    (c.out.parent / "a-file").write_text("x")
    return [*c.base, "--output", str(c.out.parent / "a-file")]


def foreign_file(c: Ctx) -> list[str]:
    (c.out / "notes.txt").write_text("mine")
    return c.base


def foreign_partial(c: Ctx) -> list[str]:
    partial = c.out.parent / ".out.partial"
    partial.mkdir()
    (partial / "notes.txt").write_text("mine")
    return c.base


def current_folder(c: Ctx) -> list[str]:
    os.chdir(c.out)  # the test restores the current folder
    return [*c.base, "--output", "."]


def huge_model(c: Ctx) -> list[str]:
    """Weights of 2**31 - 1 floats per item: an allocation that Linux refuses at once (unless
    told to overcommit always); elsewhere it might be granted, then fill the memory."""
    policy = Path("/proc/sys/vm/overcommit_memory")
    if not policy.is_file() or policy.read_text().strip() == "1":
        pytest.skip("only where a huge allocation is refused at once (Linux, heuristic overcommit)")
    return [*c.base, "--embedding-dim", str(2**31 - 1)]


UTF16 = "\ufeffuser_sequence,user_id,challenge_sequence,challenge\r\n1_1,1,1,CI1\r\n"
CASES: list[tuple[str, Case, str, int]] = [
    # (id, case, the message it must print (a substring), exit status)
    # ---- option values: exit status 2 ----
    (
        "embedding-dim 0",
        options("--embedding-dim", "0"),
        "argument --embedding-dim: expected an integer in [1, 2147483647], got '0'",
        2,
    ),
    ("hidden-sizes 0", options("--hidden-sizes", "32", "0"), "argument --hidden-sizes:", 2),
    (
        "focal alpha 2",
        options("--loss", "focal", "--alpha", "2"),
        "argument --alpha: expected a number in [0, 1] or 'none', got '2'",
        2,
    ),
    ("focal alpha nan", options("--loss", "focal", "--alpha", "nan"), "argument --alpha:", 2),
    (
        "focal gamma -1",
        options("--loss", "focal", "--gamma", "-1"),
        "argument --gamma: expected a finite number >= 0, got '-1'",
        2,
    ),
    ("focal gamma nan", options("--loss", "focal", "--gamma", "nan"), "argument --gamma:", 2),
    ("focal gamma inf", options("--loss", "focal", "--gamma", "inf"), "argument --gamma:", 2),
    ("weight-decay -1", options("--weight-decay", "-1"), "argument --weight-decay:", 2),
    ("weight-decay nan", options("--weight-decay", "nan"), "argument --weight-decay:", 2),
    (
        "sgd momentum -1",
        options("--optimizer", "sgd", "--momentum", "-1"),
        "argument --momentum: expected a number in [0, 1), got '-1'",
        2,
    ),
    ("sgd momentum nan", options("--optimizer", "sgd", "--momentum", "nan"), "--momentum:", 2),
    ("sgd momentum 1", options("--optimizer", "sgd", "--momentum", "1"), "--momentum:", 2),
    (
        "seed 2**64",
        options("--seed", "18446744073709551616"),
        "argument --seed: expected an integer in [0, 4294967295], got '18446744073709551616'",
        2,
    ),
    ("seed -1", options("--seed", "-1"), "argument --seed: expected an integer in [0, ", 2),
    ("lr inf", options("--lr", "inf"), "argument --lr: expected a finite number > 0, got 'inf'", 2),
    ("lr 1e400", options("--lr", "1e400"), "argument --lr: expected a finite number > 0", 2),
    ("lr nan", options("--lr", "nan"), "argument --lr:", 2),
    ("lr 0", options("--lr", "0"), "argument --lr:", 2),
    ("dropout nan", options("--dropout", "nan"), "argument --dropout:", 2),
    ("dropout 1", options("--dropout", "1"), "argument --dropout:", 2),
    ("val-fraction nan", options("--val-fraction", "nan"), "argument --val-fraction:", 2),
    ("val-fraction 1", options("--val-fraction", "1"), "argument --val-fraction:", 2),
    ("prior nan", options("--prior", "nan"), "argument --prior: expected 'frequency' or", 2),
    ("prior often", options("--prior", "often"), "argument --prior:", 2),
    ("epochs 0", options("--epochs", "0"), "argument --epochs:", 2),
    ("patience 0", options("--patience", "0"), "argument --patience:", 2),
    ("batch-size 0", options("--batch-size", "0"), "argument --batch-size:", 2),
    ("history-len 0", options("--history-len", "0"), "argument --history-len:", 2),
    ("epochs 5000 digits", options("--epochs", "9" * 5000), "(5000 characters)", 2),
    ("epochs arabic-indic digit", options("--epochs", "\u0661"), "argument --epochs:", 2),
    ("loss hinge", options("--loss", "hinge"), "argument --loss: invalid choice: 'hinge'", 2),
    ("unknown option", options("--learning-rate", "1"), "unrecognized arguments", 2),
    (
        "momentum with adamw",
        options("--momentum", "0.5"),
        "argument --momentum: applies to --optimizer sgd only, not --optimizer adamw",
        2,
    ),
    (
        "alpha 7 with bce",
        options("--loss", "bce", "--alpha", "7"),
        "argument --alpha: expected a number in [0, 1] or 'none', got '7'",
        2,
    ),
    (
        "alpha with bce",
        options("--loss", "bce", "--alpha", "0.5"),
        "argument --alpha: applies to --loss focal only, not --loss bce",
        2,
    ),
    ("gamma with softmax", options("--loss", "softmax", "--gamma", "1"), "--gamma: applies", 2),
    ("output empty", options("--output", ""), "argument --output: expected a path, got ''", 2),
    ("data empty", options("--data", ""), "argument --data: expected a path, got ''", 2),
    (
        "metadata without challenge_data.csv",
        lambda c: [*data_file("challenge_data.csv", None)(c), "--metadata"],
        "argument --metadata: ",
        2,
    ),
    (
        "val-fraction 0.999",
        options("--val-fraction", "0.999"),
        "argument --val-fraction: 0.999 of the 150 train.csv users leaves none to train on",
        2,
    ),
    ("model too large", huge_model, "argument --embedding-dim: 2147483647 for --model mlp with", 2),
    # ---- training that diverges: exit status 1 ----
    (
        "lr 1e30",
        options("--lr", "1e30"),
        "training diverged in epoch 1: the training loss is nan; try a lower --lr than 1e+30",
        1,
    ),
    (
        "sgd lr 1e30",
        options("--optimizer", "sgd", "--lr", "1e30"),
        "training diverged in epoch 1:",
        1,
    ),
    # ---- input files: exit status 1, naming the file, line and column ----
    ("no data folder", options("--data", "/nonexistent/folder"), "not a directory", 1),
    ("no train.csv", data_file("train.csv", None), "train.csv: file not found", 1),
    ("empty train.csv", data_file("train.csv", b""), "train.csv: the file is empty", 1),
    (
        "latin-1 byte",
        latin1_byte,
        "train.csv, line 4: not UTF-8 text: byte 0xe9",
        1,
    ),
    (
        "utf-16",
        data_file("train.csv", UTF16.encode("utf-16")),
        "train.csv: the file is UTF-16 text; save it as UTF-8",
        1,
    ),
    (
        "utf-16 without byte-order mark",
        data_file("train.csv", UTF16[1:].encode("utf-16-le")),
        "train.csv, line 1: holds a NUL character",
        1,
    ),
    (
        "field over 131072 characters",
        data_file("challenge_data.csv", replace_line(2, lambda x: x + "x" * 140_000)),
        "challenge_data.csv, line 3: a field is longer than 131,072 characters",
        1,
    ),
    (
        "unterminated quote",
        data_file("train.csv", replace_line(5, lambda x: x.replace(",CI", ',"CI'))),
        'train.csv, line 6: a quote (") opens a field here and never closes',
        1,
    ),
    (
        "quote closed lines later",
        data_file(
            "train.csv",
            lambda lines: [
                x.replace(",CI", ',"CI') if i == 5 else x + '"' if i == 7 else x
                for i, x in enumerate(lines)
            ],
        ),
        "train.csv, line 6: a quoted field runs on to line 8",
        1,
    ),
    (
        "total_submissions superscript two",
        data_file("challenge_data.csv", replace_line(3, set_field(3, "²"))),
        "challenge_data.csv, line 4, column total_submissions: expected an integer",
        1,
    ),
    (
        "total_submissions 400 digits",
        data_file("challenge_data.csv", replace_line(3, set_field(3, "9" * 400))),
        "challenge_data.csv, line 4, column total_submissions: expected an integer",
        1,
    ),
    (
        "total_submissions 5000 digits",
        data_file("challenge_data.csv", replace_line(3, set_field(3, "9" * 5000))),
        "challenge_data.csv, line 4, column total_submissions: expected an integer",
        1,
    ),
    (
        "publish_date arabic digits",
        data_file(
            "challenge_data.csv",
            replace_line(3, set_field(4, "\u0660\u0661-\u0660\u0662-\u0662\u0660\u0660\u0663")),
        ),
        "challenge_data.csv, line 4, column publish_date: expected a date dd-mm-yyyy",
        1,
    ),
    (
        "challenge_sequence arabic digit",
        data_file("train.csv", replace_line(1, set_field(2, "\u0661"))),
        "train.csv, line 2, column challenge_sequence: expected a positive integer",
        1,
    ),
    (
        "duplicated header column",
        data_file("train.csv", replace_line(0, lambda x: x + ",user_id")),
        "train.csv, line 1, column user_id: the header names this column 2 times",
        1,
    ),
    ("a single train.csv user", data_file("train.csv", one_user), "train.csv: 1 user:", 1),
    (
        "test users who are train users",
        train_user_in_test_csv,
        "test.csv, line 2, column user_id: user",
        1,
    ),
    # ---- the output folder: exit status 2 (--output) ----
    ("output parent is a file", parent_is_a_file, "a-file: is a file, not a folder", 2),
    ("output is a file", out_is_a_file, "a-file: exists and is not a folder", 2),
    ("output holds other files", foreign_file, "holds notes.txt, which no run writes", 2),
    ("partial run holds other files", foreign_partial, ".out.partial: holds notes.txt", 2),
    ("output is the current folder", current_folder, "is the current folder", 2),
    # ---- --resume: exit status 1, naming the checkpoint ----
    ("resume without a run", no_run_yet, "out: no checkpoint to resume from", 1),
    ("checkpoint empty", resume_from(b""), "checkpoint.pt: the file is empty", 1),
    ("checkpoint truncated", truncated, "checkpoint.pt: cannot be read as a checkpoint", 1),
    ("checkpoint text", resume_from(b"epoch 3\n"), "checkpoint.pt: cannot be read", 1),
    ("checkpoint code", evil_checkpoint, "checkpoint.pt: cannot be read as a checkpoint", 1),
    ("checkpoint list", resume_from(lambda _: [1, 2]), "it holds a list, not a dict", 1),
    ("checkpoint without keys", resume_from(lambda _: {"a": 1}), "its 'config' is missing", 1),
    ("best_model.pt as checkpoint", best_model_as_checkpoint, "it is a best_model.pt", 1),
    (
        "checkpoint weights of the wrong shape",
        resume_from(wider_weights),
        "not a checkpoint of this model: embedding.weight has shape",
        1,
    ),
    (
        "checkpoint optimizer of another model",
        resume_from(lambda ck: {**ck, "optimizer": {"state": {}, "param_groups": []}}),
        "its optimizer or random state does not fit this run",
        1,
    ),
    (
        "checkpoint state of the wrong type",
        resume_from(lambda ck: {**ck, "state": {**ck["state"], "best_map": "high"}}),
        "its state's best_map is a str",
        1,
    ),
    (
        "resume with another lr",
        lambda c: [*c.base, "--resume", "--lr", "0.5"],
        "the checkpoint was trained with lr=0.003, not 0.5",
        1,
    ),
    (
        "resume on other data",
        lambda c: [*data_file("train.csv", lambda x: [*x[:-2], ""])(c), "--resume"],
        "the checkpoint was trained on different data files",
        1,
    ),
]


def call(argv: list[str]) -> int:
    """``challenge.main(argv)``'s exit status, argparse's exits included."""
    try:
        return challenge.main(argv)
    except SystemExit as e:
        return int(str(e.code))


def prepare(case: Case, finished: tuple[Path, Path], tmp_path: Path) -> tuple[list[str], Path]:
    """Copy the finished run to ``tmp_path/runs/out``; the case's argv and the folder to watch."""
    data, finished_out = finished
    out = tmp_path / "runs" / "out"
    shutil.copytree(finished_out, out)
    (tmp_path / "scratch").mkdir()
    return case(Ctx(data, out, tmp_path / "scratch")), tmp_path / "runs"


def assert_one_line(err: str, message: str) -> None:
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    assert err.endswith("\n"), err
    assert message in err, err


@pytest.mark.parametrize(
    ("case", "message", "status"),
    [pytest.param(case, message, status, id=name) for name, case, message, status in CASES],
)
def test_bad_input_is_one_line_and_leaves_the_previous_run(
    case: Case,
    message: str,
    status: int,
    finished: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    argv, watched = prepare(case, finished, tmp_path)
    before = tree(watched)
    assert call(argv) == status
    assert_one_line(capsys.readouterr().err, message)
    assert tree(watched) == before
    assert not (tmp_path / "scratch" / "code-ran").exists()  # the pickled call was not run


SUBPROCESS = ["seed -1", "latin-1 byte", "checkpoint text"]  # an option, a file, a checkpoint


@pytest.mark.parametrize("name", SUBPROCESS)
def test_bad_input_in_a_real_process(
    name: str, finished: tuple[Path, Path], tmp_path: Path
) -> None:
    """The same, through ``python examples/challenge.py``: one line and no traceback."""
    _, case, message, status = next(c for c in CASES if c[0] == name)
    argv, watched = prepare(case, finished, tmp_path)
    before = tree(watched)
    result = run(argv)
    assert result.returncode == status
    assert_one_line(result.stderr, message)
    assert tree(watched) == before


# ------------------------------------------------------------------------------------------------
# Failures while writing, leftovers, and harmless differences on --resume
# ------------------------------------------------------------------------------------------------


def full_disk(fail_on: str) -> Callable[[Path, bytes], None]:
    """``atomic.write_bytes`` on a disk that fills up when the file ``fail_on`` is written."""
    write_bytes = atomic.write_bytes

    def write(path: Path, data: bytes) -> None:
        if path.name == fail_on:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write_bytes(path, data)

    return write


def test_a_full_disk_leaves_the_previous_run(
    finished: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv, watched = prepare(options(), finished, tmp_path)
    before = tree(watched)
    monkeypatch.setattr(atomic, "write_bytes", full_disk("checkpoint.pt"))
    assert call(argv) == 1
    assert_one_line(capsys.readouterr().err, "checkpoint.pt: cannot write: No space left on device")
    assert tree(watched) == before  # and no partial run: it held nothing to resume from


def test_a_full_disk_after_training_can_be_resumed(
    finished: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv, watched = prepare(options("--epochs", "2", "--seed", "1"), finished, tmp_path)
    out = watched / "out"
    before = tree(out)
    with monkeypatch.context() as patch:
        patch.setattr(atomic, "write_bytes", full_disk("metrics.json"))
        assert call(argv) == 1
    assert_one_line(capsys.readouterr().err, "metrics.json: cannot write: No space left on device")
    assert tree(out) == before
    partial = watched / ".out.partial"
    assert torch.load(partial / "checkpoint.pt", weights_only=True)["state"]["epoch"] == 2

    assert call([*argv, "--resume"]) == 0  # space freed: the run is written and replaces OUT
    assert sorted(p.name for p in watched.iterdir()) == ["out"]
    config = torch.load(out / "best_model.pt", weights_only=True)["config"]
    assert (config["epochs"], config["seed"]) == (2, 1)


def test_an_output_folder_that_cannot_be_moved_keeps_its_run(
    finished: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OUT made immutable (chattr +i) after the checks: the swap fails, OUT keeps the previous
    run, and the complete new run waits beside it until the next run puts it in place."""
    argv, watched = prepare(options("--seed", "1"), finished, tmp_path)
    out = watched / "out"
    before = tree(out)
    replace = os.replace

    def immutable(src: object, dst: object) -> None:
        if Path(src) == out.resolve():
            raise OSError(errno.EPERM, os.strerror(errno.EPERM), str(src))
        replace(src, dst)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(atomic.os, "replace", immutable)
        assert call(argv) == 1
    assert_one_line(
        capsys.readouterr().err, "out: cannot write: Operation not permitted; the new run"
    )
    assert tree(out) == before
    assert (
        torch.load(watched / ".out.new" / "best_model.pt", weights_only=True)["config"]["seed"] == 1
    )

    assert call([*argv, "--resume"]) == 0  # movable again: the waiting run is put in place
    assert sorted(p.name for p in watched.iterdir()) == ["out"]
    assert torch.load(out / "best_model.pt", weights_only=True)["config"]["seed"] == 1


@pytest.mark.parametrize("how", ["permissions", "as the check sees it"])
def test_a_read_only_folder_is_refused_before_training(
    how: str,
    finished: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused by the check before training: by permissions where they bind (not for root, nor
    on Windows, where a folder's read-only flag does not stop writes), else as the check sees it."""
    argv, watched = prepare(options(), finished, tmp_path)
    before = tree(watched)
    if how == "permissions":
        if os.name == "nt" or os.geteuid() == 0:
            pytest.skip("permissions do not stop this user from writing")
        watched.chmod(0o555)
    else:
        real = Path(os.path.realpath(watched))
        monkeypatch.setattr(atomic.os, "access", lambda path, mode: Path(path) != real)
    try:
        assert call(argv) == 2
    finally:
        watched.chmod(0o755)
    assert_one_line(
        capsys.readouterr().err, "runs: cannot write in this folder (permission denied)"
    )
    assert tree(watched) == before


def test_leftover_temporary_files_are_removed(
    finished: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A write killed half-way leaves ``.checkpoint.pt.XXXXXXXX.tmp``: the next run deletes it,
    and only such files."""
    argv, watched = prepare(options("--epochs", "2"), finished, tmp_path)
    out, partial = watched / "out", watched / ".out.partial"
    partial.mkdir()
    shutil.copy(out / "checkpoint.pt", partial / "checkpoint.pt")  # an interrupted run's
    leftovers = [partial / ".checkpoint.pt.k3j_x9q2.tmp", out / ".best_model.pt.abcd1234.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    assert call([*argv, "--resume"]) == 0
    assert not any(path.exists() for path in leftovers)
    assert sorted(p.name for p in watched.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)


@pytest.mark.parametrize(
    "options_now",
    [
        ["--data", "{data}/../{data_name}"],  # the same files, spelled differently
        ["--prior", "frequency", "--quiet"],
        ["--optimizer", "adamw", "--weight-decay", "1e-4", "--embedding-dim", "08"],
    ],
)
def test_resume_accepts_what_does_not_change_the_run(
    options_now: list[str],
    finished: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, _ = finished
    argv, watched = prepare(options(), finished, tmp_path)
    extra = [o.format(data=data, data_name=data.name) for o in options_now]
    before = tree(watched)
    assert call([*argv, *extra, "--resume"]) == 0, capsys.readouterr().err
    assert tree(watched) == before  # complete already: nothing to do, nothing written


def test_resume_compares_what_the_run_uses() -> None:
    """--alpha and --gamma under bce, --momentum under adamw, and --prior spelled as a string in
    older checkpoints do not count; everything else does."""
    now = challenge.run_config(challenge.parse_args([]))
    older = {**now, "alpha": 0.25, "gamma": 2.0, "momentum": 0.0, "data": "elsewhere"}
    assert challenge.used_config(older) == challenge.used_config(now)
    prior = challenge.run_config(challenge.parse_args(["--prior", "0.01"]))
    assert challenge.used_config({**prior, "prior": "0.010"}) == challenge.used_config(prior)
    focal = challenge.run_config(challenge.parse_args(["--loss", "focal"]))
    assert challenge.used_config({**focal, "alpha": 0.5}) != challenge.used_config(focal)


def test_submission_round_trips_ids_that_need_quoting(tmp_path: Path) -> None:
    """IDs holding commas and quotes are quoted in submission.csv as in the input files."""
    data = tmp_path / "data"
    synthetic.write_dataset(data, TINY)
    test_user = (data / "test.csv").read_text().splitlines()[1].split(",")[1]
    odd_user = f'{test_user}, "the first"'

    def odd(item: str) -> str:
        return f'{item[:2]},{item[2:]} "q"'

    for name, item_column in (("train.csv", 3), ("test.csv", 3), ("challenge_data.csv", 0)):
        with (data / name).open(newline="") as f:
            rows = list(csv.reader(f))
        for row in rows[1:]:
            row[item_column] = odd(row[item_column])
            if name == "test.csv" and row[1] == test_user:
                row[0], row[1] = f"{odd_user}_{row[2]}", odd_user
        with (data / name).open("w", newline="") as f:
            csv.writer(f).writerows(rows)
    out = tmp_path / "out"
    argv = ["--data", str(data), "--output", str(out), "--epochs", "1", "--quiet", *FAST]
    assert challenge.main(argv) == 0
    with (out / "submission.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["user_sequence", "challenge"]
    assert all(len(row) == 2 for row in rows)
    assert len(rows) == 1 + 3 * TINY.num_test_users
    assert [r[0] for r in rows[1:4]] == [f"{odd_user}_{k}" for k in (11, 12, 13)]
    vocabulary = torch.load(out / "best_model.pt", weights_only=True)["vocabulary"]
    assert all(r[1] in vocabulary and r[1].endswith(' "q"') for r in rows[1:])
