"""The shared benchmark harness: interleaved timing, peak memory in a subprocess, provenance.

Every ``benchmarks/bench_*.py`` measures with these pieces, so that their figures mean the same
thing:

- :func:`interleaved_times`: each repeat runs every case once, back to back, after one warm-up
  call of each; a machine whose load drifts then slows every case of a repeat alike, and the
  ratio of two cases within a repeat is the least sensitive figure (:func:`median_ratio`).
- :func:`peak_extra_bytes`: the peak resident memory one call adds, measured after a warm-up
  with the peak reset just before the call (Linux); :func:`memory_in_subprocess` runs it in a
  fresh process per case, so that no case inherits another's allocations or caches.
- :func:`environment`: what the figures were measured with (versions, threads, machine).
- :func:`write_json`: the report written atomically.

A benchmark script calls only focalrec's public API.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import focalrec

__all__ = [
    "environment",
    "interleaved_times",
    "load_average",
    "median_ratio",
    "memory_in_subprocess",
    "peak_extra_bytes",
    "print_memory_child",
    "write_json",
]


def interleaved_times(
    cases: dict[str, Callable[[], object]], repeats: int, *, warmup: bool = True
) -> dict[str, list[float]]:
    """Wall seconds of every case in each of ``repeats`` rounds, the cases run back to back in
    each round (after one warm-up call of each, unless ``warmup`` is False)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    if warmup:
        for fn in cases.values():
            fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: Sequence[float], baseline: Sequence[float]) -> float:
    """The median over rounds of ``times / baseline`` within each round."""
    return statistics.median(t / b for t, b in zip(times, baseline, strict=True))


def _status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_extra_bytes(
    step: Callable[[], object],
    cleanup: Callable[[], object],
    warmup: Callable[[], object] | None = None,
) -> tuple[int, bool]:
    """The peak resident memory (bytes) that ``step()`` adds, and whether it is exact.

    Measured on a call after a warm-up (``warmup()``, else ``step()`` itself: one-time
    allocations are not the step's) and ``cleanup()`` (which drops what the warm-up left, e.g.
    gradients), with the peak reset just before the call (``/proc/self/clear_refs``, Linux);
    where that is not possible the process's earlier peak may hide part of it, and ``exact`` is
    False.
    """
    (warmup or step)()
    cleanup()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM)
        exact = True
    except OSError:
        exact = False
    before = _status_bytes("VmRSS")
    step()
    peak = _status_bytes("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if not exact:
        peak *= 1024
    return max(peak - before, 0), exact


def memory_in_subprocess(script: str | Path, argv: Sequence[str], case: str) -> int | None:
    """Run ``python script *argv --memory-child case`` and return the ``extra_bytes`` of the JSON
    line it prints last (None, with a message, when the run fails)."""
    cmd = [sys.executable, str(script), *argv, "--memory-child", case]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"  memory run of {case!r} failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return int(json.loads(done.stdout.strip().splitlines()[-1])["extra_bytes"])


def print_memory_child(
    step: Callable[[], object],
    cleanup: Callable[[], object],
    warmup: Callable[[], object] | None = None,
) -> None:
    """In a ``--memory-child`` process: print the JSON line :func:`memory_in_subprocess` reads
    (the arguments are :func:`peak_extra_bytes`')."""
    extra, exact = peak_extra_bytes(step, cleanup, warmup)
    print(json.dumps({"extra_bytes": extra, "exact": exact}))


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS does not say): a shared machine
    shows in it, so reports record it beside their timings."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def environment(**extra: object) -> dict[str, Any]:
    """What the figures were measured with: versions, torch threads, the machine; ``extra``
    adds a benchmark's own facts."""
    return {
        "focalrec": focalrec.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **extra,
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
