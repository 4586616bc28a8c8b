"""The output layer and its loss, forward + backward, fused or not, side by side in one process.

Compares focalrec's fused ``linear_sigmoid_focal_loss`` (the ``(N, C)`` logits never formed)
with ``F.linear`` followed by ``sigmoid_focal_loss``, by BCE-with-logits (dense targets), and
with PyTorch's softmax answer, ``F.linear_cross_entropy`` (plain, and chunked with
``LinearCrossEntropyOptions``; one random target per row), at batch ``N``, features ``d`` and
catalogues of ``C`` items. For each ``C`` it reports the median wall and CPU time of forward +
backward over interleaved repeats, their ratios to the unfused focal loss, and (one subprocess
per implementation) the peak resident memory that forward + backward adds, which includes the
gradients of the features, the weight and the bias.

An implementation whose estimated memory does not fit (``--memory-budget-gib``, by default 90%
of the memory available at the start) is not run: its row says so and gives the estimate from
its formula (the logits and their gradient plus the three gradients: a lower bound), never a
measurement. Catalogues of ``--large-items`` or more get ``--large-repeats`` repeats and a
warm-up on a small catalogue, since one forward + backward takes minutes on a few cores.

    python benchmarks/bench_linear.py                    # N = 4096, d = 256, C = 5501, 1e5, 1e6
    python benchmarks/bench_linear.py --items 5501 100000 --repeats 3
    python benchmarks/bench_linear.py --quick --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from focalrec import linear_sigmoid_focal_loss, sigmoid_focal_loss
from focalrec.linear import DEFAULT_CHUNK_SIZE
from harness import (
    environment,
    load_average,
    memory_in_subprocess,
    print_memory_child,
    write_json,
)

IMPLEMENTATIONS = (
    "fused",
    "unfused_focal",
    "unfused_bce",
    "linear_cross_entropy",
    "linear_cross_entropy_chunked",
)
BASELINE = "unfused_focal"
HAS_LINEAR_CE = hasattr(F, "linear_cross_entropy")
HAS_CHUNKED_CE = HAS_LINEAR_CE and hasattr(nn, "LinearCrossEntropyOptions")


@dataclass
class Data:
    """The layer's inputs and the targets of each loss."""

    x: Tensor  # (N, d) features
    w: Tensor  # (C, d) weight
    b: Tensor  # (C,) bias
    index: Tensor  # (N, positives) index list, for the focal losses
    label: Tensor  # (N,) one item per row, for the softmax references
    dense: Tensor | None  # (N, C) float targets, for BCE-with-logits only


Loss = Callable[[Data], Tensor]


def make_data(n: int, d: int, c: int, positives: int, seed: int, dense: bool = False) -> Data:
    """Features ~ N(0, 1) and weights ~ N(0, 4 / d), so the logits are ~ N(-4.6, 2^2) with the
    bias at -4.6 (about a 1% prior); ``positives`` items per row, drawn with replacement."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(c, d, generator=g).mul_(2.0 / d**0.5)
    b = torch.full((c,), -4.6)
    index = torch.randint(0, max(c, 1), (n, positives), generator=g)
    label = torch.randint(0, max(c, 1), (n,), generator=g)
    targets = torch.zeros(n, c).scatter_(1, index, 1.0) if dense else None
    for t in (x, w, b):
        t.requires_grad_()
    return Data(x, w, b, index, label, targets)


def implementations(args: argparse.Namespace) -> dict[str, Loss]:
    """Every implementation this torch has, each ``fn(data) -> loss`` (mean reduction)."""
    alpha, gamma, chunk = args.alpha, args.gamma, tuple(args.chunk_size)
    impls: dict[str, Loss] = {
        "fused": lambda t: linear_sigmoid_focal_loss(
            t.x, t.w, t.index, linear_bias=t.b, alpha=alpha, gamma=gamma, chunk_size=chunk
        ),
        "unfused_focal": lambda t: sigmoid_focal_loss(
            F.linear(t.x, t.w, t.b), t.index, alpha=alpha, gamma=gamma
        ),
        "unfused_bce": lambda t: F.binary_cross_entropy_with_logits(
            F.linear(t.x, t.w, t.b), _dense(t)
        ),
    }
    if HAS_LINEAR_CE:
        impls["linear_cross_entropy"] = lambda t: F.linear_cross_entropy(
            t.x, t.w, t.label, linear_bias=t.b
        )
    if HAS_CHUNKED_CE:
        options = nn.LinearCrossEntropyOptions()
        impls["linear_cross_entropy_chunked"] = lambda t: F.linear_cross_entropy(
            t.x, t.w, t.label, linear_bias=t.b, options=options
        )
    wanted = set(args.only or IMPLEMENTATIONS) | {"fused", BASELINE}
    return {name: fn for name, fn in impls.items() if name in wanted}


def _dense(data: Data) -> Tensor:
    if data.dense is None:
        raise ValueError("BCE-with-logits needs the dense targets (make_data(dense=True))")
    return data.dense


def estimated_extra_bytes(name: str, n: int, d: int, c: int, chunk: tuple[int, int]) -> int:
    """Memory that forward + backward adds, from the formula (float32).

    Fused: one chunk of logits and the three gradients. Otherwise the logits and their
    gradient and the three gradients, a lower bound (temporaries come on top; the chunked
    softmax's chunk is not counted).
    """
    grads = n * d + c * d + c
    if name == "fused":
        return 4 * (min(n, chunk[0]) * min(c, chunk[1]) + grads)
    if name == "linear_cross_entropy_chunked":
        return 4 * grads
    return 4 * (2 * n * c + grads)


def input_bytes(name: str, n: int, d: int, c: int, positives: int) -> int:
    """The inputs an implementation needs: features, weight, bias, targets."""
    size = 4 * (n * d + c * d + c) + 8 * n * (positives + 1)
    return size + (4 * n * c if name == "unfused_bce" else 0)


def memory_available() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _zero_grads(data: Data) -> None:
    for t in (data.x, data.w, data.b):
        t.grad = None


def time_once(fn: Loss, data: Data) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and the loss value of one forward + backward."""
    _zero_grads(data)
    wall, cpu = time.perf_counter(), time.process_time()
    loss = fn(data)
    loss.backward()
    return time.perf_counter() - wall, time.process_time() - cpu, float(loss.detach())


def _rel_diff(a: Tensor | None, b: Tensor | None) -> float | None:
    if a is None or b is None:
        return None
    scale = float(b.norm())
    return float((a - b).norm()) / scale if scale > 0 else float((a - b).norm())


def memory_child(args: argparse.Namespace) -> None:
    """Print the peak RSS that one forward + backward of ``args.memory_child`` adds."""
    c = args.items[0]
    name = args.memory_child
    fn = implementations(args)[name]
    data = make_data(args.n, args.d, c, args.positives, args.seed, dense=name == "unfused_bce")
    warmup = None
    if c >= args.large_items:  # a warm-up on a small catalogue: the same code, in seconds
        small = make_data(args.n, args.d, 4096, args.positives, args.seed, name == "unfused_bce")
        warmup = lambda: fn(small).backward()  # noqa: E731
    print_memory_child(lambda: fn(data).backward(), lambda: _zero_grads(data), warmup)


def measure_memory(name: str, c: int, args: argparse.Namespace) -> int | None:
    argv = ["--items", str(c), "--n", str(args.n), "--d", str(args.d)]
    argv += ["--positives", str(args.positives), "--alpha", str(args.alpha)]
    argv += ["--gamma", str(args.gamma), "--seed", str(args.seed)]
    argv += ["--chunk-size", *map(str, args.chunk_size), "--large-items", str(args.large_items)]
    argv += ["--threads", str(torch.get_num_threads())]
    return memory_in_subprocess(__file__, argv, name)


def run_size(c: int, args: argparse.Namespace, budget: int | None) -> dict[str, Any]:
    """Time (and measure) every implementation at ``C = c``."""
    n, d, chunk = args.n, args.d, tuple(args.chunk_size)
    large = c >= args.large_items
    repeats = args.large_repeats if large else args.repeats
    impls = implementations(args)
    fits = {
        name: budget is None
        or estimated_extra_bytes(name, n, d, c, chunk) + input_bytes(name, n, d, c, args.positives)
        <= budget
        for name in impls
    }
    chosen = set(args.large_only or impls) if large else set(impls)
    running = {name: fn for name, fn in impls.items() if fits[name] and name in chosen}
    print(f"C = {c:,}: {', '.join(running)} ({repeats} repeats)", flush=True)
    load_before = load_average()
    data = make_data(n, d, c, args.positives, args.seed, dense="unfused_bce" in running)
    for name, fn in running.items():  # warm-up
        if large:
            small = make_data(n, d, 4096, args.positives, args.seed, name == "unfused_bce")
            fn(small).backward()
        else:
            fn(data).backward()
    walls: dict[str, list[float]] = {name: [] for name in running}
    cpus: dict[str, list[float]] = {name: [] for name in running}
    values: dict[str, float] = {}
    kept: dict[str, tuple[Tensor | None, ...]] = {}
    for _ in range(repeats):  # interleaved, so that load changes hit every implementation
        for name, fn in running.items():
            wall, cpu, value = time_once(fn, data)
            walls[name].append(wall)
            cpus[name].append(cpu)
            values[name] = value
            if name in ("fused", BASELINE) and name not in kept:
                kept[name] = (data.x.grad, data.w.grad, data.b.grad)
            print(f"  {name}: {wall:.2f} s", flush=True)
    _zero_grads(data)
    results: dict[str, Any] = {}
    base_wall = statistics.median(walls[BASELINE]) if BASELINE in walls else None
    base_cpu = statistics.median(cpus[BASELINE]) if BASELINE in cpus else None
    for name in impls:
        estimate = estimated_extra_bytes(name, n, d, c, chunk)
        if name not in running:
            results[name] = {
                "status": "not run",
                "reason": "left out (--large-only)"
                if fits[name]
                else "its estimated memory exceeds the budget",
                "estimated_peak_extra_mb": estimate / 2**20,
            }
            continue
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        row: dict[str, Any] = {
            "status": "measured",
            "wall_ms": 1e3 * wall,
            "cpu_ms": 1e3 * cpu,
            "wall_vs_unfused": None if base_wall is None else wall / base_wall,
            "cpu_vs_unfused": None if base_cpu is None else cpu / base_cpu,
            "loss": values[name],
            "estimated_peak_extra_mb": estimate / 2**20,
        }
        if args.memory:
            extra = measure_memory(name, c, args)
            row["peak_extra_mb"] = None if extra is None else extra / 2**20
        results[name] = row
    baseline = results.get(BASELINE, {})
    base_mem = baseline.get("peak_extra_mb")
    base_is_estimate = base_mem is None
    if base_is_estimate:
        base_mem = baseline.get("estimated_peak_extra_mb")
    for row in results.values():
        mem = row.get("peak_extra_mb")
        row["peak_extra_vs_unfused"] = None if mem is None or not base_mem else mem / base_mem
    check: dict[str, Any] = {}
    if "fused" in kept and BASELINE in kept:
        check = {
            "loss_rel_diff": abs(values["fused"] - values[BASELINE]) / abs(values[BASELINE]),
            **{
                f"grad_{part}_rel_diff": _rel_diff(a, b)
                for part, a, b in zip(
                    ("input", "weight", "bias"), kept["fused"], kept[BASELINE], strict=True
                )
            },
        }
    return {
        "c": c,
        "repeats": repeats,
        "warmup": "a catalogue of 4096 items" if large else "full size",
        "logits_mb": 4 * n * c / 2**20,
        "load_average": [load_before, load_average()],
        "unfused_memory_is_estimate": base_is_estimate,
        "results": results,
        "check_vs_unfused": check,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    available = memory_available()
    budget = None
    if args.memory_budget_gib is not None:
        budget = int(args.memory_budget_gib * 2**30)
    elif available is not None:
        budget = int(0.9 * available)
    load_start = load_average()
    sizes = [run_size(c, args, budget) for c in args.items]
    return {
        "config": {
            "n": args.n,
            "d": args.d,
            "items": args.items,
            "positives": args.positives,
            "alpha": args.alpha,
            "gamma": args.gamma,
            "reduction": "mean",
            "dtype": "float32",
            "chunk_size": list(args.chunk_size),
            "repeats": args.repeats,
            "large_repeats": args.large_repeats,
            "large_only": args.large_only,
            "large_items": args.large_items,
            "memory_budget_mb": None if budget is None else budget / 2**20,
        },
        "environment": environment(
            memory_available_mb=None if available is None else available / 2**20,
            load_average=[load_start, load_average()],
        ),
        "sizes": sizes,
    }


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def print_table(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(
        f"N = {cfg['n']}, d = {cfg['d']}, float32, {cfg['positives']} positives per row, "
        f"chunk {cfg['chunk_size'][0]} x {cfg['chunk_size'][1]}, "
        f"{report['environment']['threads']} threads"
    )
    for size in report["sizes"]:
        print(
            f"\nC = {size['c']:,} (logits {size['logits_mb']:.0f} MiB), median of "
            f"{size['repeats']}, load average {size['load_average']}"
        )
        print(
            f"{'implementation':30s} {'wall s':>9s} {'x unf.':>7s} {'x cpu':>7s} {'peak MiB':>10s}"
        )
        for name, row in size["results"].items():
            if row["status"] != "measured":
                est = row["estimated_peak_extra_mb"]
                print(f"{name:30s} not run; estimated peak extra >= {est:,.0f} MiB")
                continue
            print(
                f"{name:30s} {row['wall_ms'] / 1e3:9.2f} {_fmt(row['wall_vs_unfused'], '7.2f')} "
                f"{_fmt(row['cpu_vs_unfused'], '7.2f')} {_fmt(row.get('peak_extra_mb'), '10,.0f')}"
            )
        if size["check_vs_unfused"]:
            print("fused vs unfused:", {k: f"{v:.1e}" for k, v in size["check_vs_unfused"].items()})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="batch rows N (4096)")
    parser.add_argument("--d", type=int, default=None, help="features d (256)")
    parser.add_argument("--items", type=int, nargs="+", default=None, help="catalogue sizes C")
    parser.add_argument("--positives", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--chunk-size", type=int, nargs=2, default=None, metavar=("ROWS", "ITEMS"))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--large-repeats", type=int, default=2)
    parser.add_argument("--large-items", type=int, default=500_000)
    parser.add_argument(
        "--large-only",
        nargs="+",
        choices=IMPLEMENTATIONS,
        default=None,
        help="at catalogues of --large-items or more, run only these (default: all that fit)",
    )
    parser.add_argument("--memory-budget-gib", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes for smoke tests")
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--only", nargs="+", choices=IMPLEMENTATIONS, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n, d, items, repeats, chunk = 4096, 256, [5501, 100_000, 1_000_000], 5, DEFAULT_CHUNK_SIZE
    if args.quick:
        n, d, items, repeats, chunk = 64, 16, [501, 3001], 2, (32, 256)
    args.n = n if args.n is None else args.n
    args.d = d if args.d is None else args.d
    args.items = items if args.items is None else args.items
    args.repeats = repeats if args.repeats is None else args.repeats
    args.chunk_size = list(chunk if args.chunk_size is None else args.chunk_size)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        memory_child(args)
        return
    report = run(args)
    print_table(report)
    if args.json is not None:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
