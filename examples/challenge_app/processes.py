"""Processes: one, or several under torchrun (``DistributedDataParallel`` over gloo, on the CPU).

Only the main process prints and writes; :func:`fail` turns an error into one line on stderr.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

import atomic

__all__ = ["Log", "Processes", "begin", "end", "fail", "resumed", "say", "start_processes"]


@dataclass(frozen=True)
class Processes:
    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, *values: float) -> list[float]:
        """Sum ``values`` over all processes (float64, one all-reduce)."""
        t = torch.tensor(values, dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(t)
        return t.tolist()


def start_processes() -> Processes:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
        return Processes(dist.get_rank(), dist.get_world_size())
    return Processes(0, 1)


def say(procs: Processes, quiet: bool, message: str) -> None:
    if procs.main and not quiet:
        print(message, flush=True)


def fail(procs: Processes, error: Exception | str, status: int = 1) -> int:
    """Report ``error`` as one line on stderr (from the main process); the exit status."""
    if procs.main:
        print(f"error: {error}", file=sys.stderr)
    return status


@dataclass(frozen=True)
class Log:
    """``log(message)``: one progress line on stdout, from the main process, unless quiet."""

    procs: Processes
    quiet: bool

    def __call__(self, message: str) -> None:
        say(self.procs, self.quiet, message)


def resumed(
    run: atomic.RunDirectory,
    procs: Processes,
    log: Log,
    found: Path | None,
    epochs: int,
    done: bool,
) -> tuple[bool, bool]:
    """After ``--resume`` from the checkpoint ``found`` (None: a new run), ``epochs`` done:
    whether the run continues its partial folder, and whether it is complete already (then
    ``--epochs`` and ``--patience`` did not grow, and the complete run is left as it was)."""
    if found is None:
        return False, False
    continuing = found.parent == run.partial
    log(f"resumed from {found} after epoch {epochs}")
    if done and not continuing:
        if procs.main:
            run.recover()
        return False, True
    return continuing, False


def begin(run: atomic.RunDirectory, procs: Processes, keep_partial: bool) -> None:
    """Start writing the run's partial folder (the main process), once every process has checked
    the output folder."""
    if procs.world > 1:
        dist.barrier()
    if procs.main:
        run.begin(keep_partial=keep_partial)
    if procs.world > 1:
        dist.barrier()


def end(procs: Processes) -> None:
    """Wait for every process, then leave the process group."""
    if procs.world > 1:
        dist.barrier()
        dist.destroy_process_group()
