"""Focal loss and mAP@k on one CUDA GPU, side by side in one process, as JSON for the docs.

Focal loss, forward + backward of the sum, for each size and dtype: focalrec with index-list and
with dense targets against ``F.binary_cross_entropy_with_logits`` (the floor), torchvision's
formula run eagerly and under ``torch.compile``, and ``logits.clone()`` (one read and one write of
the logits: the bandwidth a one-pass kernel can reach). Each row gives the median time of
interleaved repeats (CUDA events), its ratio to BCE-with-logits and to the compiled formula, the
bandwidth it achieves counting the bytes a single pass must move (the logits read, their gradient
written, dense targets read) and its fraction of the clone's, and its peak memory beyond the
inputs (``torch.cuda.max_memory_allocated``) in units of the logits' size. ``focalrec_kernel`` is
focalrec's forward alone with the gradient asked for: the one pass that computes value and
gradient (the backward then scales the gradient by the incoming one).

mAP@k: ``map_at_k`` against ``torch.topk(scores, k)`` alone on score matrices of the challenge's
size (39,732 x 5,501) and of a million-item catalogue (4,096 x 1,000,000).

    bash benchmarks/gpu.sh                                  # everything, into docs/generated/
    python benchmarks/bench_gpu.py --json out.json          # the same, JSON anywhere
    python benchmarks/bench_gpu.py --quick --device cpu     # a smoke run of the script (tests)

Without a CUDA GPU the script stops with a one-line message (exit status 1), unless
``--device cpu`` asks for the smoke run, whose figures are not GPU figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import harness
from bench_focal import make_inputs, torchvision_formula
from focalrec import map_at_k, sigmoid_focal_loss

FOCAL_SIZES = ((4096, 5501), (16384, 65536))
MAP_SIZES = ((39732, 5501, 3), (4096, 1_000_000, 10))  # rows, items, k
QUICK_FOCAL_SIZES = ((64, 501),)
QUICK_MAP_SIZES = ((97, 501, 3),)
DTYPES = ("float32", "bfloat16")

Step = Callable[[Tensor], Tensor]
"""``fn(x) -> loss``: one forward of a loss on logits ``x``."""


class Clock:
    """Times a callable on one device: CUDA events on a GPU, the wall clock on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def seconds(self, fn: Callable[[], object]) -> float:
        """Seconds one call of ``fn`` takes, its device work included."""
        self.sync()
        if not self.cuda:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / 1e3


def losses(
    index: Tensor, dense: Tensor, alpha: float, gamma: float, compile_: bool
) -> dict[str, Step]:
    """The rows of a focal case; the compiled formula only with ``compile_``."""

    def formula(x: Tensor) -> Tensor:
        return torchvision_formula(x, dense, alpha, gamma)

    steps: dict[str, Step] = {
        "bce_with_logits": lambda x: F.binary_cross_entropy_with_logits(x, dense, reduction="sum"),
        "focalrec_index": lambda x: sigmoid_focal_loss(
            x, index, alpha=alpha, gamma=gamma, reduction="sum"
        ),
        "focalrec_dense": lambda x: sigmoid_focal_loss(
            x, dense, alpha=alpha, gamma=gamma, reduction="sum"
        ),
        "torchvision_formula": formula,
    }
    if compile_:
        steps["torchvision_formula_compiled"] = torch.compile(formula, dynamic=False)
    return steps


def _peak_extra_bytes(clock: Clock, fn: Callable[[], object], device: torch.device) -> int | None:
    """Memory allocated at the peak of ``fn`` beyond what was allocated before (CUDA only)."""
    if device.type != "cuda":
        return None
    clock.sync()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    clock.sync()
    return torch.cuda.max_memory_allocated(device) - before


def focal_case(
    n: int, c: int, dtype: torch.dtype, args: argparse.Namespace, clock: Clock
) -> dict[str, Any]:
    """Every row of one focal case (size and dtype); a row that runs out of memory says so."""
    device = args.device
    base, targets = make_inputs(n, c, args.positives, args.seed, device=device)
    index, base, dense = targets.index, base.to(dtype), targets.dense.to(dtype)
    steps = losses(index, dense, args.alpha, args.gamma, args.compile)
    logits_bytes = base.numel() * base.element_size()
    # The bytes one pass must move: the logits read and their gradient written, and dense
    # targets read where the row reads them (index lists are negligible).
    moved = {name: 2 * logits_bytes for name in [*steps, "clone", "focalrec_kernel"]}
    for name in ("bce_with_logits", "focalrec_dense", "torchvision_formula"):
        moved[name] += logits_bytes
    if "torchvision_formula_compiled" in steps:
        moved["torchvision_formula_compiled"] += logits_bytes

    def forward_backward(step: Step) -> Callable[[], object]:
        def run() -> float:
            x = base.clone().requires_grad_()
            loss = step(x)
            loss.backward()
            return float(loss.detach()) if device.type == "cpu" else 0.0

        return run

    def timed(step: Step, kernel_only: bool = False) -> Callable[[], float]:
        """One timed call; the clone of the logits happens before the clock starts."""

        def run() -> float:
            x = base.clone().requires_grad_()
            if kernel_only:
                return clock.seconds(lambda: step(x))
            return clock.seconds(lambda: step(x).backward())

        return run

    calls: dict[str, Callable[[], float]] = {"clone": lambda: clock.seconds(base.clone)}
    calls.update({name: timed(step) for name, step in steps.items()})
    calls["focalrec_kernel"] = timed(steps["focalrec_index"], kernel_only=True)
    errors: dict[str, str] = {}
    values: dict[str, float] = {}
    for name in list(calls):  # warm-up (and compilation); a row that fails is dropped
        try:
            calls[name]()
            if name in steps:
                x = base.clone()
                values[name] = float(steps[name](x).float())
        except torch.cuda.OutOfMemoryError as e:
            errors[name] = f"out of memory: {str(e).splitlines()[0]}"
            del calls[name]
            torch.cuda.empty_cache()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):  # interleaved, so that drifts hit every row
        for name, call in calls.items():
            times[name].append(call())
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    bce, compiled = medians.get("bce_with_logits"), medians.get("torchvision_formula_compiled")
    reference = values.get("focalrec_index")
    rows: dict[str, Any] = {}
    for name, seconds in medians.items():
        bandwidth = moved[name] / seconds
        peak = None
        if name in steps:
            peak = _peak_extra_bytes(clock, forward_backward(steps[name]), device)
        rows[name] = {
            "ms": 1e3 * seconds,
            "vs_bce": None if bce is None else seconds / bce,
            "vs_compiled": None if compiled is None else seconds / compiled,
            "bytes_moved": moved[name],
            "bandwidth_gb_s": bandwidth / 1e9,
            "vs_clone_bandwidth": bandwidth / (moved["clone"] / medians["clone"]),
            "peak_extra_x_logits": None if peak is None else peak / logits_bytes,
            "rel_diff_vs_focalrec": None
            if reference is None or name not in values or name == "bce_with_logits"
            else abs(values[name] - reference) / abs(reference),
        }
    return {
        "n": n,
        "c": c,
        "dtype": str(dtype).removeprefix("torch."),
        "logits_mb": logits_bytes / 2**20,
        "repeats": args.repeats,
        "results": rows,
        "errors": errors,
    }


def map_case(n: int, c: int, k: int, args: argparse.Namespace, clock: Clock) -> dict[str, Any]:
    """``map_at_k`` against ``torch.topk`` alone on an ``(n, c)`` float32 score matrix."""
    device = args.device
    g = torch.Generator(device=device).manual_seed(args.seed)
    try:
        scores = torch.randn(n, c, generator=g, device=device)
    except torch.cuda.OutOfMemoryError as e:
        return {"n": n, "c": c, "k": k, "error": f"out of memory: {str(e).splitlines()[0]}"}
    targets = torch.randint(0, c, (n, args.positives), generator=g, device=device)
    calls: dict[str, Callable[[], object]] = {
        "torch_topk": lambda: torch.topk(scores, k),
        "map_at_k": lambda: map_at_k(scores, targets, k),
        "map_at_k_no_validation": lambda: map_at_k(scores, targets, k, validate_args=False),
    }
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            times[name].append(clock.seconds(call))
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    results = {
        name: {"ms": 1e3 * s, "vs_topk": s / medians["torch_topk"]} for name, s in medians.items()
    }
    return {"n": n, "c": c, "k": k, "repeats": args.repeats, "results": results}


def environment(device: torch.device) -> dict[str, Any]:
    try:
        import triton

        triton_version: str | None = triton.__version__
    except ImportError:
        triton_version = None
    env = harness.environment(triton=triton_version, device=device.type)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gb=props.total_memory / 1e9,
            cuda=torch.version.cuda,
            hip=torch.version.hip,
        )
    return env


def run(args: argparse.Namespace) -> dict[str, Any]:
    clock = Clock(args.device)
    start = time.perf_counter()
    focal = []
    for n, c in args.focal_sizes:
        for dtype in args.dtypes:
            print(f"focal loss {n} x {c} {dtype}", flush=True)
            focal.append(focal_case(n, c, getattr(torch, dtype), args, clock))
    maps = []
    for n, c, k in args.map_sizes:
        print(f"map_at_k {n} x {c}, k={k}", flush=True)
        maps.append(map_case(n, c, k, args, clock))
    return {
        "config": {
            "positives": args.positives,
            "alpha": args.alpha,
            "gamma": args.gamma,
            "repeats": args.repeats,
            "compile": args.compile,
            "seed": args.seed,
        },
        "environment": environment(args.device),
        "focal": focal,
        "map_at_k": maps,
        "seconds": time.perf_counter() - start,
    }


def print_report(report: dict[str, Any]) -> None:
    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for case in report["focal"]:
        print(f"\nfocal loss, forward + backward: {case['n']} x {case['c']} {case['dtype']}")
        print(f"{'row':30s} {'ms':>9s} {'x BCE':>7s} {'x compiled':>10s} {'GB/s':>8s} "
              f"{'x clone':>8s} {'peak':>7s}")  # fmt: skip
        for name, r in case["results"].items():
            print(
                f"{name:30s} {r['ms']:9.3f} {fmt(r['vs_bce'], '7.2f')} "
                f"{fmt(r['vs_compiled'], '10.2f')} {r['bandwidth_gb_s']:8.1f} "
                f"{r['vs_clone_bandwidth']:8.2f} {fmt(r['peak_extra_x_logits'], '6.2f'):>6s}x"
            )
        for name, error in case["errors"].items():
            print(f"{name:30s} {error}")
    for case in report["map_at_k"]:
        print(f"\nmap_at_k: {case['n']} x {case['c']}, k={case['k']}")
        if "error" in case:
            print(f"  {case['error']}")
            continue
        for name, r in case["results"].items():
            print(f"{name:30s} {r['ms']:9.3f} ms {r['vs_topk']:7.2f}x topk")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a smoke run")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--positives", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip torch.compile's row"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    args.focal_sizes = QUICK_FOCAL_SIZES if args.quick else FOCAL_SIZES
    args.map_sizes = QUICK_MAP_SIZES if args.quick else MAP_SIZES
    if args.repeats is None:
        args.repeats = 2 if args.quick else 10
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu.py: no CUDA GPU here (torch.cuda.is_available() is False)")
    report = run(args)
    print_report(report)
    if args.json is not None:
        harness.write_json(args.json, report)


if __name__ == "__main__":
    main()
