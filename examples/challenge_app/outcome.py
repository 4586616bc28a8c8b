"""The exit status of a run: each expected error becomes one line on stderr and a status.

Before anything is written (:meth:`Outcome.checking`): a bad option or output folder exits with
status 2, a bad input file or checkpoint with 1. While the run writes (:meth:`Outcome.writing`):
a diverged training deletes its partial run (a resume would replay it); a failed write (a full
disk, a read-only folder) keeps the partial run when it holds a checkpoint to resume from; both
exit with status 1, and the output folder is as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import atomic
from challenge_app.checkpoints import CHECKPOINT, TrainingDiverged
from challenge_app.processes import Processes, fail
from challenge_data import DataError
from options import OptionError

__all__ = ["Outcome"]


class Outcome:
    """The exit status of one run of the example (0 until an error is reported)."""

    def __init__(self, procs: Processes) -> None:
        self.procs = procs
        self.status = 0

    @contextlib.contextmanager
    def checking(self) -> Iterator[None]:
        """Report the errors of the checks that run before anything is written."""
        try:
            yield
        except OptionError as e:
            self.status = fail(self.procs, e, status=2)
        except atomic.RunDirectoryError as e:
            self.status = fail(self.procs, f"argument --output: {e}", status=2)
        except DataError as e:
            self.status = fail(self.procs, e)

    @contextlib.contextmanager
    def writing(self, run: atomic.RunDirectory) -> Iterator[None]:
        """Report the errors of training and writing into ``run``, leaving its folder as it was."""
        try:
            yield
        except TrainingDiverged as e:  # resuming would replay the same epochs: nothing to keep
            if self.procs.main:
                with contextlib.suppress(OSError):
                    run.discard()
            self.status = fail(self.procs, e)
        except atomic.RunDirectoryError as e:
            self.status = fail(self.procs, e)
        except OSError as e:  # a full disk, a folder made read-only: OUT is as it was
            if self.procs.main and not (run.partial / CHECKPOINT).is_file():
                with contextlib.suppress(OSError):
                    run.discard()  # nothing in it to resume from
            waiting = f"; the new run waits complete in {run.new}" if run.new.exists() else ""
            where = e.filename or run.path
            self.status = fail(self.procs, f"{where}: cannot write: {e.strerror or e}{waiting}")
