"""The prebuilt kernel's variants against the run-time build and BCE-with-logits, in one process.

A platform wheel ships ``native.c`` compiled per CPU variant with portable flags (baseline,
``-march=x86-64-v3``, ``-march=x86-64-v4``); a source install compiles it at run time with
``-march=native``. This times the focal loss (forward + backward, ``reduction="sum"``) on each
variant this CPU runs and on the run-time build, interleaved with BCE-with-logits on the same
logits, and reports medians of wall and CPU time (all threads; steadier than wall time on a
shared machine) and their ratios to BCE and to the run-time build.

    python benchmarks/bench_kernels.py                       # 4096 x 5501, 3 positives per row
    python benchmarks/bench_kernels.py --threads 2 --json out.json
    python benchmarks/bench_kernels.py --kernels path/to/site-packages/focalrec/_focal/_kernels

By default the variants are those of the installed package (a platform wheel's), else freshly
built from this source with the wheel's build code (``prebuilt.build``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bench_focal import Targets, make_inputs, time_once
from focalrec import sigmoid_focal_loss
from focalrec._focal import native, prebuilt
from harness import write_json

FORMS = ("index", "dense", "bool", "soft")
RUN_TIME = "run-time (-march=native)"


@contextmanager
def serving(library: ctypes.CDLL) -> Iterator[None]:
    """The loss's native backend runs ``library`` inside the block."""
    saved = native._library, native._tried, native._reason
    native._library, native._tried, native._reason = library, True, None
    try:
        yield
    finally:
        native._library, native._tried, native._reason = saved


def run_time_build() -> ctypes.CDLL | str:
    """The kernel as a source install builds it (``-march=native``), bypassing shipped ones."""
    shipped = prebuilt.KERNELS
    prebuilt.KERNELS = Path(tempfile.gettempdir()) / "focalrec-no-prebuilt-kernels"
    try:
        return native._load()
    finally:
        prebuilt.KERNELS = shipped


def kernels(directory: Path | None, scratch: Path) -> dict[str, ctypes.CDLL]:
    """The variants this CPU runs, opened from ``directory`` (built into ``scratch`` if None)."""
    if directory is None:
        directory = prebuilt.KERNELS
        if not (directory / "manifest.json").is_file():
            directory = scratch
            _, problems = prebuilt.build(directory)
            for problem in problems:
                print(f"not built: {problem}")
    manifest = json.loads((directory / "manifest.json").read_text())
    found: dict[str, ctypes.CDLL] = {}
    level = None
    for variant in prebuilt.variants():
        entry = manifest["variants"].get(variant.name)
        if entry is None:
            continue
        lib = native._open(directory / entry["file"])
        if isinstance(lib, str):
            print(f"{variant.name}: {lib}")
            continue
        if level is None:
            level = prebuilt.cpu_level(lib)  # the baseline's answer
        if variant.level <= level:
            found[variant.name] = lib
    return found


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    base, targets = make_inputs(args.n, args.c, args.positives, args.seed)
    with tempfile.TemporaryDirectory(prefix="focalrec-bench-kernels-") as scratch:
        libraries: dict[str, ctypes.CDLL] = {}
        built = run_time_build()
        if isinstance(built, str):
            print(f"no run-time build: {built}")
        else:
            libraries[RUN_TIME] = built
        libraries.update(
            {f"prebuilt {k}": v for k, v in kernels(args.kernels, Path(scratch)).items()}
        )

        def ours(form: str) -> Callable[[Tensor, Targets], Tensor]:
            t = {"index": targets.index, "dense": targets.dense, "soft": targets.soft}
            t["bool"] = targets.dense.bool()

            def fn(x: Tensor, _: Targets) -> Tensor:
                return sigmoid_focal_loss(x, t[form], alpha=0.25, gamma=2.0, reduction="sum")

            return fn

        def bce(x: Tensor, t: Targets) -> Tensor:
            return F.binary_cross_entropy_with_logits(x, t.dense, reduction="sum")

        cases: dict[tuple[str, str], tuple[ctypes.CDLL | None, Callable[..., Tensor]]] = {
            ("bce_with_logits", "dense"): (None, bce)
        }
        for lib_name, lib in libraries.items():
            for form in args.forms:
                cases[(lib_name, form)] = (lib, ours(form))
        walls: dict[tuple[str, str], list[float]] = {key: [] for key in cases}
        cpus: dict[tuple[str, str], list[float]] = {key: [] for key in cases}

        def once(key: tuple[str, str]) -> tuple[float, float, float]:
            lib, fn = cases[key]
            if lib is None:
                return time_once(fn, base, targets)
            with serving(lib):
                return time_once(fn, base, targets)

        for key in cases:  # warm-up
            once(key)
        for _ in range(args.repeats):  # interleaved: load changes hit every case alike
            for key in cases:
                wall, cpu, _ = once(key)
                walls[key].append(wall)
                cpus[key].append(cpu)
    bce = ("bce_with_logits", "dense")
    results = []
    for key, times in walls.items():
        lib_name, form = key
        ref = None if lib_name == "bce_with_logits" else (RUN_TIME, form)
        ref = ref if ref in walls else None
        wall, cpu = statistics.median(times), statistics.median(cpus[key])
        results.append(
            {
                "kernel": lib_name,
                "targets": form,
                "wall_ms": 1e3 * wall,
                "cpu_ms": 1e3 * cpu,
                "vs_bce": wall / statistics.median(walls[bce]),
                "cpu_vs_bce": cpu / statistics.median(cpus[bce]),
                "vs_run_time_build": None if ref is None else wall / statistics.median(walls[ref]),
                "cpu_vs_run_time_build": None
                if ref is None
                else cpu / statistics.median(cpus[ref]),
            }
        )
    return {
        "config": {
            "n": args.n,
            "c": args.c,
            "positives": args.positives,
            "repeats": args.repeats,
            "threads": args.threads,
        },
        "environment": {
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "python": platform.python_version(),
        },
        "results": results,
    }


def print_table(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(
        f"logits {cfg['n']} x {cfg['c']} float32, {cfg['positives']} positives per row, "
        f"forward + backward, median of {cfg['repeats']}, {cfg['threads']} threads"
    )
    print(
        f"{'kernel':26s} {'targets':7s} {'wall ms':>8s} {'x BCE':>6s} {'x run-time':>10s}"
        f" {'cpu ms':>8s} {'x BCE':>6s} {'x run-time':>10s}"
    )

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for row in report["results"]:
        print(
            f"{row['kernel']:26s} {row['targets']:7s} {row['wall_ms']:8.1f} {row['vs_bce']:6.2f}"
            f" {ratio(row['vs_run_time_build']):>10s} {row['cpu_ms']:8.1f}"
            f" {row['cpu_vs_bce']:6.2f} {ratio(row['cpu_vs_run_time_build']):>10s}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("N", "C"))
    parser.add_argument("--positives", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=["index", "dense"])
    parser.add_argument("--kernels", type=Path, default=None, help="a _kernels folder to time")
    parser.add_argument("--quick", action="store_true", help="a small size for smoke tests")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    default_size = (64, 501) if args.quick else (4096, 5501)
    args.n, args.c = args.size if args.size is not None else default_size
    if args.repeats is None:
        args.repeats = 2 if args.quick else 7
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    print_table(report)
    if args.json is not None:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
