"""The first call of the loss in a fresh process, against a warm call: time and resident memory.

A user's short script, a test process or a data-loader worker pays whatever the first call
costs beyond a warm one. Each repeat starts a fresh Python process (the compiled kernel already
built and cached by a warm-up process, so no build is timed) that imports torch and focalrec,
then times the first ``sigmoid_focal_loss(x, t).backward()`` on small float32 CPU logits with
index-list targets, and the median of later identical calls. It reports the resident memory
(``VmRSS`` on Linux, else the peak) added by the first call and by the warm calls, the peak
extra memory of the first call and of a warm one as multiples of the logits (Linux: the peak
is reset just before the call), and whether the first call imported ``torch._dynamo``. Medians
over the repeats; the machine's load shows in the spread, so compare runs on the same machine
in one sitting.

    python benchmarks/bench_first_call.py                       # 4 x 5 logits, 7 processes
    python benchmarks/bench_first_call.py --rows 4096 --cols 5501 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

CHILD = """
import json, os, resource, sys, time

def rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024

def status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)

def peak_extra_mib(fn):
    # The peak resident memory fn() adds (Linux: the peak reset before it), else None.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status_mib("VmRSS")
    except OSError:
        return None, fn()
    out = fn()
    return status_mib("VmHWM") - before, out

start = time.perf_counter()
import torch
import focalrec
imported = time.perf_counter() - start
rows, cols, warm_calls = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
x = torch.randn(rows, cols, generator=g).requires_grad_()
t = torch.randint(-1, cols, (rows, 3), generator=g)

def call():
    start = time.perf_counter()
    focalrec.sigmoid_focal_loss(x, t).backward()
    x.grad = None
    return time.perf_counter() - start

before = rss_mib()
first_peak, first = peak_extra_mib(call)
after_first = rss_mib()
warm = [call() for _ in range(warm_calls)]
after_warm = rss_mib()
warm_peak, _ = peak_extra_mib(call)
logits_mib = rows * cols * 4 / 2**20
backend = focalrec.show_config(print_out=False)["backends"]["float32 CPU"]["backend"]
print(json.dumps({
    "import_s": imported,
    "first_s": first,
    "warm_s": sorted(warm)[len(warm) // 2],
    "first_rss_mib": after_first - before,
    "warm_rss_mib": after_warm - after_first,
    "first_peak_x_logits": None if first_peak is None else first_peak / logits_mib,
    "warm_peak_x_logits": None if warm_peak is None else warm_peak / logits_mib,
    "dynamo_imported": "torch._dynamo" in sys.modules,
    "backend": backend,
}))
"""


def run_child(rows: int, cols: int, warm_calls: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(rows), str(cols), str(warm_calls)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _median_or_none(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4, help="rows of the logits (default 4)")
    parser.add_argument("--cols", type=int, default=5, help="columns of the logits (default 5)")
    parser.add_argument("--repeats", type=int, default=7, help="fresh processes (default 7)")
    parser.add_argument("--warm-calls", type=int, default=5, help="warm calls per process")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if min(args.rows, args.cols, args.repeats, args.warm_calls) < 1:
        parser.error("--rows, --cols, --repeats and --warm-calls must be >= 1")

    run_child(args.rows, args.cols, 1)  # warm-up: builds and caches the kernel if needed
    runs = [run_child(args.rows, args.cols, args.warm_calls) for _ in range(args.repeats)]

    def median(key: str) -> float:
        return statistics.median(float(r[key]) for r in runs)

    first, warm = median("first_s"), median("warm_s")
    summary: dict[str, Any] = {
        "shape": [args.rows, args.cols],
        "repeats": args.repeats,
        "backend": runs[0]["backend"],
        "first_call_s": first,
        "warm_call_s": warm,
        "first_over_warm": first / warm if warm > 0 else None,
        "first_call_extra_s": first - warm,
        "first_call_rss_mib": median("first_rss_mib"),
        "warm_calls_rss_mib": median("warm_rss_mib"),
        "import_s": median("import_s"),
        "first_call_peak_x_logits": _median_or_none(runs, "first_peak_x_logits"),
        "warm_call_peak_x_logits": _median_or_none(runs, "warm_peak_x_logits"),
        "dynamo_imported": sum(bool(r["dynamo_imported"]) for r in runs),
        "runs": runs,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads_env": os.environ.get("OMP_NUM_THREADS"),
            "memory": "VmRSS" if Path("/proc/self/status").exists() else "peak (ru_maxrss)",
        },
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
