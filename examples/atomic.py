"""Atomic output: a reader sees a whole old file or a whole new one, a whole old run or a new one.

**Files.** :func:`write_atomic` (and :func:`write_bytes`, :func:`write_text`, :func:`save_json`,
:func:`save_torch`) writes into a temporary file ``.{name}.{random}.tmp`` in the destination's
folder (the same filesystem), flushes it to disk, then renames it over the destination with
:func:`os.replace`, which is atomic on POSIX and Windows. A crash (``kill -9`` included) leaves at
most that temporary file; :func:`remove_temporaries` deletes such leftovers, and nothing else.

**Runs.** A program whose outputs belong together (a model, its metrics, its predictions) must not
leave a mixture of two runs when it is stopped half-way. :class:`RunDirectory` replaces a whole
output folder ``OUT`` only once the new run's files are all on disk. It uses three sibling folders
of ``OUT``, in ``OUT``'s parent (the same filesystem, so that renaming a folder is atomic):

- ``.OUT.partial``: the run in progress, written file by file (each atomically), for instance a
  checkpoint after every epoch, so that an interrupted run can be resumed from it;
- ``.OUT.new``: a complete run, the partial folder renamed once its last file is on disk;
- ``.OUT.old``: the previous ``OUT``, moved aside during the swap, then deleted.

The protocol:

1. :meth:`RunDirectory.begin` (before anything else is written) first recovers from a crash: if
   ``.OUT.new`` exists, it finishes that commit (steps 4 and 5); then it deletes ``.OUT.old``.
2. The run writes its files into ``.OUT.partial``.
3. :meth:`RunDirectory.commit` flushes ``.OUT.partial`` and renames it to ``.OUT.new``: the commit
   point. ``OUT`` still holds the previous run.
4. It renames ``OUT`` to ``.OUT.old``, then ``.OUT.new`` to ``OUT``, and flushes the parent.
5. It deletes ``.OUT.old``.

Wherever a crash stops this, ``OUT`` holds one complete run (the previous one up to the first
rename of step 4, the new one after the second) and never a mixture of two. Between the two renames
of step 4, two consecutive system calls, ``OUT`` is absent and the new run waits complete in
``.OUT.new``: the next :meth:`RunDirectory.begin` puts it in place. A crash before step 3 leaves the
previous ``OUT`` untouched and the partial run beside it, which a resumed run continues.

Only folders that hold nothing but the run's own file names (and their temporary files) are ever
renamed or deleted: an ``OUT`` holding anything else is refused with :class:`RunDirectoryError`
before anything is written, and so are the current folder and the folders above it.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "RunDirectory",
    "RunDirectoryError",
    "remove_temporaries",
    "save_json",
    "save_torch",
    "write_atomic",
    "write_bytes",
    "write_text",
]


# -------------------------------------------------------------------------------------------------
# Files
# -------------------------------------------------------------------------------------------------


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(f)`` on a temporary binary file, then move it to ``path`` in one step."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    write_atomic(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def save_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN and infinity are refused)."""
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (load it with ``weights_only=True``).

    The object is serialized in memory first, so that a failed write (a full disk) reaches the
    caller as the plain :class:`OSError` of the file write.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def _temporary_pattern(names: Collection[str]) -> re.Pattern[str]:
    """The names :func:`write_atomic` gives the temporary files of ``names``."""
    alternatives = "|".join(re.escape(n) for n in sorted(names))
    return re.compile(rf"\.(?:{alternatives})\.[a-z0-9_]+\.tmp")


def remove_temporaries(folder: Path, names: Collection[str]) -> list[Path]:
    """Delete the temporary files that an interrupted :func:`write_atomic` of ``names`` left.

    Only files named as :func:`write_atomic` names them (``.{name}.{random}.tmp`` for a name of
    ``names``) are deleted. Returns the deleted paths.
    """
    pattern = _temporary_pattern(names)
    removed = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if pattern.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are durable on their own
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a folder
        pass
    finally:
        os.close(fd)


# -------------------------------------------------------------------------------------------------
# Runs
# -------------------------------------------------------------------------------------------------


class RunDirectoryError(Exception):
    """An output folder that cannot hold a run; the one-line message names the path."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")


class RunDirectory:
    """An output folder that a new run replaces as a whole, once the run is complete.

    See the module's docstring for the protocol. Creating one only checks the folders (it writes
    nothing): ``OUT`` and its sibling folders must be absent or hold only files named in ``names``
    (and their temporary files), and the nearest existing folder above ``OUT`` must be writable.

    Args:
        path: The output folder ``OUT``; a symbolic link to a folder stands for that folder.
        names: The file names a run may write into it.

    Raises:
        RunDirectoryError: naming the offending path.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     run = RunDirectory(Path(tmp) / "out", ["a.txt"])
        ...     write_text(run.begin(keep_partial=False) / "a.txt", "first run")
        ...     run.commit()
        ...     write_text(run.begin(keep_partial=False) / "a.txt", "second run")
        ...     before = (run.path / "a.txt").read_text()  # the first run until commit()
        ...     run.commit()
        ...     before, (run.path / "a.txt").read_text(), sorted(os.listdir(tmp))
        ('first run', 'second run', ['out'])
    """

    def __init__(self, path: Path, names: Collection[str]) -> None:
        self.path = Path(os.path.realpath(path))
        self.names = frozenset(names)
        parent, name = self.path.parent, self.path.name
        self.partial = parent / f".{name}.partial"
        self.new = parent / f".{name}.new"
        self.old = parent / f".{name}.old"
        self._temporary = _temporary_pattern(self.names)
        self._check()

    def _check(self) -> None:
        cwd = Path.cwd().resolve()
        if self.path == cwd or self.path in cwd.parents:
            where = "the current folder" if self.path == cwd else "a folder above the current one"
            raise RunDirectoryError(
                self.path, f"is {where}; a run replaces its whole output folder, give it its own"
            )
        for folder in (self.path, self.partial, self.new, self.old):
            self._check_folder(folder)
        ancestor = self.path.parent
        while not ancestor.exists():
            if ancestor.is_symlink():
                raise RunDirectoryError(ancestor, "is a broken symbolic link")
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise RunDirectoryError(
                ancestor, "is a file, not a folder: cannot create a folder in it"
            )
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise RunDirectoryError(ancestor, "cannot write in this folder (permission denied)")

    def _check_folder(self, folder: Path) -> None:
        if folder != self.path and folder.is_symlink():
            raise RunDirectoryError(folder, "is a symbolic link, not a folder of this run")
        if not folder.exists():
            return
        if not folder.is_dir():
            raise RunDirectoryError(folder, "exists and is not a folder")
        foreign = sorted(e.name for e in folder.iterdir() if not self._is_own(e))
        if foreign:
            listed = ", ".join(foreign[:3]) + (
                f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            )
            raise RunDirectoryError(
                folder,
                f"holds {listed}, which no run writes; a run replaces the whole folder, so give "
                "an empty or new folder (or one holding only an earlier run)",
            )

    def _is_own(self, entry: Path) -> bool:
        if entry.is_symlink() or not entry.is_file():
            return False
        return entry.name in self.names or bool(self._temporary.fullmatch(entry.name))

    def find(self, name: str) -> Path | None:
        """The newest copy of the file ``name``: the partial run's, else the complete run's."""
        for folder in (self.partial, self.new, self.path):
            if (folder / name).is_file():
                return folder / name
        return None

    def begin(self, *, keep_partial: bool) -> Path:
        """Recover from a crash, then return the partial run's folder, ready for writing.

        With ``keep_partial`` an existing partial run is kept (a resumed run goes on writing it;
        the temporary files of a killed write are deleted); otherwise it starts empty.
        """
        self.recover()
        self._check_folder(self.partial)
        if not keep_partial and self.partial.exists():
            self._remove(self.partial)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(exist_ok=True)
        remove_temporaries(self.partial, self.names)
        remove_temporaries(self.path, self.names)  # from a writer that wrote into OUT directly
        return self.partial

    def discard(self) -> None:
        """Delete the partial run (a run that cannot be resumed to another end)."""
        self._remove(self.partial)

    def recover(self) -> None:
        """Finish a commit that a crash interrupted, and delete the previous run's leftovers."""
        if self.new.is_dir():
            self._install()
        if self.old.exists():
            self._remove(self.old)

    def commit(self) -> None:
        """Make the partial run ``OUT``, in place of the previous run (steps 3 to 5)."""
        _fsync_dir(self.partial)
        os.replace(self.partial, self.new)  # the commit point
        _fsync_dir(self.path.parent)
        self._install()

    def _install(self) -> None:
        if self.old.exists():
            self._remove(self.old)
        if self.path.exists():
            os.replace(self.path, self.old)
        os.replace(self.new, self.path)
        _fsync_dir(self.path.parent)
        self._remove(self.old)

    def _remove(self, folder: Path) -> None:
        """Delete ``folder`` if it holds only this run's files (checked again, file by file)."""
        if not folder.exists():
            return
        self._check_folder(folder)
        for entry in folder.iterdir():
            if self._is_own(entry):
                entry.unlink()
        folder.rmdir()
