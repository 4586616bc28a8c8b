"""Blocks of rows spread over Python threads, in a pool kept for the life of the process.

The pool is shared by every calling thread and never shut down while it may be in use: when a
call needs more workers than it has, a larger pool replaces it, and the replaced one's threads
exit once the last call that holds it is done (a ``ThreadPoolExecutor`` stops its threads when
it is garbage-collected). A call that needs fewer workers submits fewer jobs to the same pool.
After a fork the child makes its own pool (the parent's threads do not exist there).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["run_blocks"]

_lock = threading.Lock()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


def _executor(workers: int) -> ThreadPoolExecutor:
    """A pool of at least ``workers`` threads: grown (replaced) when too small, new after a fork."""
    global _pool
    with _lock:
        pid = os.getpid()
        if _pool is None or _pool[0] != pid or _pool[1] < workers:
            size = workers if _pool is None or _pool[0] != pid else max(workers, _pool[1])
            # No shutdown of the old pool: another thread may be about to submit to it.
            _pool = (pid, size, ThreadPoolExecutor(size, thread_name_prefix="focalrec"))
        return _pool[2]


def run_blocks(fn: Callable[[int, int], object], num_blocks: int, min_blocks: int = 2) -> None:
    """Call ``fn(first, last)`` on contiguous ranges of block numbers covering ``num_blocks``.

    The ranges go to ``torch.get_num_threads()`` threads (each gets at least ``min_blocks``
    blocks; one range runs in the calling thread). ``fn`` must release the GIL for the work to
    proceed in parallel, as torch ops and the compiled kernel do. Safe to call from several
    threads at once.
    """
    workers = min(torch.get_num_threads(), num_blocks // max(min_blocks, 1))
    if workers <= 1:
        fn(0, num_blocks)
        return
    bounds = [num_blocks * i // workers for i in range(workers + 1)]
    pool = _executor(workers - 1)
    jobs = [pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, workers)]
    try:
        fn(bounds[0], bounds[1])
    finally:
        for job in jobs:
            job.result()
