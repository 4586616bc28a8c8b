"""examples/atomic.py: atomic files, and an output folder replaced as a whole, crash or no crash.

The crash tests stop the protocol at every one of its file-system operations in turn, as
``kill -9`` would (nothing after the crash runs, not even clean-up code), then check what a reader
of OUT sees, and what the next run's recovery leaves.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import atomic
from atomic import RunDirectory, RunDirectoryError

NAMES = ("a.txt", "b.txt", "c.txt")
NO_SYMLINKS = pytest.mark.skipif(
    os.name == "nt", reason="symbolic links need privileges on Windows"
)


def write_run(folder: Path, label: str) -> None:
    for name in NAMES:
        atomic.write_text(folder / name, f"{label} {name}")


def whole(label: str) -> dict[str, str]:
    return {name: f"{label} {name}" for name in NAMES}


def contents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def new_run(out: Path, label: str) -> None:
    """One whole run: begin, write every file, commit."""
    run = RunDirectory(out, NAMES)
    write_run(run.begin(keep_partial=False), label)
    run.commit()


class Killed(BaseException):
    """The process is gone: no later file-system operation happens."""


MUTATIONS = ("replace", "rename", "unlink", "rmdir", "mkdir", "fsync")


@contextmanager
def killed_at(operation: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Count the file-system changes (os.replace, os.unlink, ...); from the ``operation``-th on,
    each raises :class:`Killed` instead of happening. Yields the names of those that happened."""
    done: list[str] = []
    with monkeypatch.context() as patch:
        for name in MUTATIONS:
            real = getattr(os, name)

            def fake(
                *args: object, _real: object = real, _name: str = name, **kw: object
            ) -> object:
                if len(done) >= operation:
                    raise Killed
                done.append(_name)
                return _real(*args, **kw)  # type: ignore[operator]

            patch.setattr(os, name, fake)
        yield done


@pytest.mark.parametrize("previous", ["old", None])
def test_a_kill_at_any_step_leaves_one_whole_run(
    previous: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def start(name: str) -> Path:
        out = tmp_path / name / "out"
        if previous:
            new_run(out, previous)
        return out

    out = start("count")
    with killed_at(10**9, monkeypatch) as done:
        new_run(out, "new")
    steps = len(done)
    assert steps > 10
    for step in range(steps + 1):
        out = start(str(step))
        expectation = pytest.raises(Killed) if step < steps else contextlib.nullcontext()
        with killed_at(step, monkeypatch), expectation:
            new_run(out, "new")
        # What a reader sees right after the kill: the whole previous run, or the whole new one.
        seen = contents(out) if out.exists() else None
        waiting = out.parent / ".out.new"
        if seen is None and waiting.exists():  # between the swap's two renames
            assert contents(waiting) == whole("new")
        elif seen is None:
            assert previous is None  # no run was ever complete
        else:
            assert seen in ([whole(previous)] if previous else []) + [whole("new")], step
        new_complete = seen == whole("new") or waiting.exists()
        # The next run recovers first: OUT is the new run if it was complete, else the previous.
        run = RunDirectory(out, NAMES)
        partial = run.begin(keep_partial=False)
        if new_complete:
            assert contents(out) == whole("new"), step
        elif previous:
            assert contents(out) == whole(previous), step
        else:
            assert not out.exists()
        assert list(partial.iterdir()) == []
        run.discard()
        assert sorted(p.name for p in out.parent.iterdir()) == (["out"] if out.exists() else [])


def test_a_run_in_progress_is_invisible_until_commit(tmp_path: Path) -> None:
    out = tmp_path / "out"
    new_run(out, "old")
    run = RunDirectory(out, NAMES)
    partial = run.begin(keep_partial=False)
    atomic.write_text(partial / "a.txt", "new a.txt")
    assert contents(out) == whole("old")
    assert run.find("a.txt") == partial / "a.txt"  # the newest copy, for --resume
    assert run.find("b.txt") == out / "b.txt"
    write_run(partial, "new")
    run.commit()
    assert contents(out) == whole("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_resumed_partial_run_is_kept_and_cleaned(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = RunDirectory(out, NAMES)
    partial = run.begin(keep_partial=False)
    atomic.write_text(partial / "a.txt", "epoch 1")
    leftover = partial / ".b.txt.abcd_123.tmp"  # a write killed half-way
    leftover.write_text("half")
    assert run.begin(keep_partial=True) == partial
    assert contents(partial) == {"a.txt": "epoch 1"}
    run.begin(keep_partial=False)
    assert contents(partial) == {}


def test_remove_temporaries_removes_only_the_pattern(tmp_path: Path) -> None:
    ours = [".a.txt.k3j_x9q2.tmp", ".b.txt.abcdefgh.tmp"]
    others = [
        "a.txt",
        ".a.txt.tmp",
        ".a.txt.x.tmp.keep",
        ".other.x1.tmp",
        "notes.tmp",
        ".A.TXT.x.tmp",
    ]
    for name in ours + others:
        (tmp_path / name).write_text("x")
    (tmp_path / ".c.txt.folder.tmp").mkdir()  # not a file: kept
    removed = atomic.remove_temporaries(tmp_path, NAMES)
    assert sorted(p.name for p in removed) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*others, ".c.txt.folder.tmp"])


def test_write_atomic_leaves_no_temporary_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("before")

    def fail(f: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic.write_atomic(target, fail)
    assert contents(tmp_path) == {"a.txt": "before"}


def test_save_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        atomic.save_json(tmp_path / "m.json", {"loss": float("nan")})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda out: (out.mkdir(), (out / "notes.txt").write_text("mine")), "holds notes.txt"),
        (lambda out: out.mkdir() or (out / "sub").mkdir(), "holds sub, which no run writes"),
        (lambda out: out.write_text("a file"), "exists and is not a folder"),
        (lambda out: out.parent.joinpath("a").write_text("x"), None),
        pytest.param(
            lambda out: (out.parent / ".out.partial").symlink_to(out.parent),
            ".out.partial: is a symbolic link",
            marks=NO_SYMLINKS,
        ),
        (
            lambda out: (
                (out.parent / ".out.old").mkdir(),
                (out.parent / ".out.old" / "x").touch(),
            ),
            ".out.old: holds x",
        ),
    ],
)
def test_folders_that_are_not_a_runs_are_refused(
    setup: object, message: str | None, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    setup(out)  # type: ignore[operator]
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    if message is None:  # a sibling file is no business of the run's
        RunDirectory(out, NAMES)
        return
    with pytest.raises(RunDirectoryError, match=message):
        RunDirectory(out, NAMES)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_the_current_folder_and_above_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(RunDirectoryError, match="is the current folder"):
        RunDirectory(Path("."), NAMES)
    with pytest.raises(RunDirectoryError, match="is a folder above the current one"):
        RunDirectory(Path(".."), NAMES)
    with pytest.raises(RunDirectoryError, match="is a folder above the current one"):
        RunDirectory(Path("/"), NAMES)
    RunDirectory(Path("out"), NAMES)  # a folder inside the current one is fine


def test_a_parent_that_is_a_file_or_read_only_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirectoryError, match="file: is a file, not a folder"):
        RunDirectory(tmp_path / "file" / "deeper" / "out", NAMES)
    monkeypatch.setattr(atomic.os, "access", lambda path, mode: False)
    with pytest.raises(RunDirectoryError, match="cannot write in this folder"):
        RunDirectory(tmp_path / "missing" / "out", NAMES)  # the nearest folder that exists


@NO_SYMLINKS
def test_a_link_to_a_folder_stands_for_that_folder(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    new_run(tmp_path / "link" / "out", "first")
    new_run(tmp_path / "link" / "out", "second")
    assert contents(tmp_path / "real" / "out") == whole("second")
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["out"]


def test_removal_checks_again_file_by_file(tmp_path: Path) -> None:
    """A file that appears in a folder after the check is not deleted with it."""
    out = tmp_path / "out"
    run = RunDirectory(out, NAMES)
    partial = run.begin(keep_partial=False)
    (partial / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match=r"holds notes\.txt"):
        run.discard()
    assert (partial / "notes.txt").read_text() == "mine"
