"""Sigmoid focal loss, forward + backward, side by side in one process.

Compares focalrec's loss (index-list, dense float, dense bool and soft targets) with
BCE-with-logits, the paper's formula written naively, the formula torchvision publishes
(torchvision is not required), that formula under ``torch.compile`` (inductor fuses it into one
loop: the strongest competitor on the CPU), and fvcore / kornia when they are installed. Reports
the median wall time and CPU time of forward + backward over interleaved repeats, ratios against
BCE-with-logits, each loss value's relative difference to a float64 evaluation of the formula on
the same targets, and (one subprocess per implementation) the peak resident memory added by
forward + backward, in units of the logits' size. That figure includes the logits' gradient,
which every implementation produces. Soft targets are label-smoothed ones (0.05 and 0.95).

    python benchmarks/bench_focal.py                 # 4096 x 5501, 3 positives per row
    python benchmarks/bench_focal.py --quick --json out.json
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
from torch import Tensor

from focalrec import show_config, sigmoid_focal_loss
from harness import (
    environment,
    memory_in_subprocess,
    print_memory_child,
    write_json,
)

LossFn = Callable[[Tensor, "Targets"], Tensor]
"""``fn(logits, targets) -> scalar loss`` (sum over all elements)."""


@dataclass(frozen=True)
class Targets:
    """The same positives in each form: an index list, dense 0/1 floats, and label-smoothed."""

    index: Tensor
    dense: Tensor
    soft: Tensor


def paper_formula(x: Tensor, t: Tensor, alpha: float, gamma: float) -> Tensor:
    """``-alpha_t (1 - p_t)^gamma log(p_t)`` written literally from Lin et al. (2017)."""
    p = torch.sigmoid(x)
    p_t = torch.where(t == 1, p, 1 - p)
    alpha_t = torch.where(t == 1, alpha, 1 - alpha)
    return (-alpha_t * (1 - p_t) ** gamma * torch.log(p_t)).sum()


def torchvision_formula(x: Tensor, t: Tensor, alpha: float, gamma: float) -> Tensor:
    """The formula of ``torchvision.ops.sigmoid_focal_loss`` (v0.15+), as published."""
    p = torch.sigmoid(x)
    ce_loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce_loss * ((1 - p_t) ** gamma)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return (alpha_t * loss).sum()


BUILTIN = (
    "bce_with_logits",
    "focalrec_index",
    "focalrec_dense",
    "focalrec_bool",
    "focalrec_soft",
    "compiled_torchvision_formula",
    "paper_formula",
    "torchvision_formula",
)
OPTIONAL = ("fvcore", "kornia")
SOFT = ("focalrec_soft",)
"""Implementations that take the soft targets (the others take 0/1 targets)."""


def implementations(
    alpha: float, gamma: float, names: list[str] | None = None
) -> dict[str, LossFn]:
    """The implementations to compare (all by default; fvcore and kornia when importable)."""
    wanted = list(BUILTIN + OPTIONAL) if names is None else names

    def ours(form: str) -> LossFn:
        def fn(x: Tensor, t: Targets) -> Tensor:
            targets = {"index": t.index, "dense": t.dense, "bool": t.dense.bool(), "soft": t.soft}
            return sigmoid_focal_loss(x, targets[form], alpha=alpha, gamma=gamma, reduction="sum")

        return fn

    impls: dict[str, LossFn] = {
        "bce_with_logits": lambda x, t: F.binary_cross_entropy_with_logits(
            x, t.dense, reduction="sum"
        ),
        "focalrec_index": ours("index"),
        "focalrec_dense": ours("dense"),
        "focalrec_soft": ours("soft"),
        "paper_formula": lambda x, t: paper_formula(x, t.dense, alpha, gamma),
        "torchvision_formula": lambda x, t: torchvision_formula(x, t.dense, alpha, gamma),
    }
    if "focalrec_bool" in wanted:
        bool_targets: dict[int, Tensor] = {}  # converted once, outside the timing

        def bool_fn(x: Tensor, t: Targets) -> Tensor:
            dense_bool = bool_targets.setdefault(id(t), t.dense.bool())
            return sigmoid_focal_loss(x, dense_bool, alpha=alpha, gamma=gamma, reduction="sum")

        impls["focalrec_bool"] = bool_fn
    if "compiled_torchvision_formula" in wanted:
        compiled = torch.compile(torchvision_formula)  # compiled on the warm-up call
        impls["compiled_torchvision_formula"] = lambda x, t: compiled(x, t.dense, alpha, gamma)
    if "fvcore" in wanted:
        try:
            from fvcore.nn import sigmoid_focal_loss as fv_loss

            impls["fvcore"] = lambda x, t: fv_loss(
                x, t.dense, alpha=alpha, gamma=gamma, reduction="sum"
            )
        except ImportError:
            print("fvcore is not installed: skipped")
    if "kornia" in wanted:
        try:
            from kornia.losses import binary_focal_loss_with_logits

            impls["kornia"] = lambda x, t: binary_focal_loss_with_logits(
                x, t.dense, alpha=alpha, gamma=gamma, reduction="sum"
            )
        except ImportError:
            print("kornia is not installed: skipped")
    # The baseline and the reference always run.
    keep = set(wanted) | {"bce_with_logits", "focalrec_index"}
    return {name: impls[name] for name in BUILTIN + OPTIONAL if name in keep and name in impls}


def make_inputs(
    n: int, c: int, positives: int, seed: int, device: str | torch.device = "cpu"
) -> tuple[Tensor, Targets]:
    """Logits ``(n, c)`` ~ N(-4.6, 2^2) (about a 1% prior), ``positives`` items per row.

    Items are drawn with replacement (a repeat counts once, in every target form).
    """
    g = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(n, c, generator=g, device=device).mul_(2.0).sub_(4.6)
    index = torch.randint(0, c, (n, positives), generator=g, device=device)
    dense = torch.zeros(n, c, device=device).scatter_(1, index, 1.0)
    return logits, Targets(index=index, dense=dense, soft=dense * 0.9 + 0.05)


def reference_value(x: Tensor, t: Tensor, alpha: float, gamma: float) -> float:
    """The loss in float64 (torchvision's formula on float64 inputs), for the accuracy column."""
    return float(torchvision_formula(x.double(), t.double(), alpha, gamma))


def time_once(fn: LossFn, base: Tensor, targets: Targets) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and the loss value of one forward + backward."""
    x = base.clone().requires_grad_()
    wall, cpu = time.perf_counter(), time.process_time()
    loss = fn(x, targets)
    loss.backward()
    return time.perf_counter() - wall, time.process_time() - cpu, float(loss.detach())


def memory_child(args: argparse.Namespace) -> None:
    """Print the peak RSS added by one forward + backward of ``args.memory_child`` (the warm-up
    call also compiles, where a backend compiles: that is not counted)."""
    base, targets = make_inputs(args.n, args.c, args.positives, args.seed)
    fn = implementations(args.alpha, args.gamma, [args.memory_child])[args.memory_child]
    x = base.clone().requires_grad_()

    def cleanup() -> None:
        x.grad = None

    print_memory_child(lambda: fn(x, targets).backward(), cleanup)


def measure_memory(name: str, args: argparse.Namespace) -> int | None:
    argv = ["--size", str(args.n), str(args.c), "--positives", str(args.positives)]
    argv += ["--alpha", str(args.alpha), "--gamma", str(args.gamma), "--seed", str(args.seed)]
    return memory_in_subprocess(__file__, argv, name)


def run(args: argparse.Namespace) -> dict[str, Any]:
    base, targets = make_inputs(args.n, args.c, args.positives, args.seed)
    impls = implementations(args.alpha, args.gamma, args.only)
    walls: dict[str, list[float]] = {name: [] for name in impls}
    cpus: dict[str, list[float]] = {name: [] for name in impls}
    values: dict[str, float] = {}
    for name, fn in impls.items():  # warm-up (and compilation, for the compiled formula)
        values[name] = time_once(fn, base, targets)[2]
    for _ in range(args.repeats):  # interleaved, so that load changes hit every implementation
        for name, fn in impls.items():
            wall, cpu, _ = time_once(fn, base, targets)
            walls[name].append(wall)
            cpus[name].append(cpu)
    references = {
        "hard": reference_value(base, targets.dense, args.alpha, args.gamma),
        "soft": reference_value(base, targets.soft, args.alpha, args.gamma),
    }
    logits_bytes = base.numel() * base.element_size()
    results: dict[str, Any] = {}
    for name in impls:
        wall = statistics.median(walls[name])
        cpu = statistics.median(cpus[name])
        row: dict[str, Any] = {
            "wall_ms": 1e3 * wall,
            "cpu_ms": 1e3 * cpu,
            "wall_vs_bce": wall / statistics.median(walls["bce_with_logits"]),
            "cpu_vs_bce": cpu / statistics.median(cpus["bce_with_logits"]),
            "loss": values[name],
            "targets": "soft" if name in SOFT else "0/1",
            "rel_diff_vs_float64": None
            if name == "bce_with_logits"
            else abs(values[name] - references[_kind(name)]) / abs(references[_kind(name)]),
        }
        if args.memory:
            extra = measure_memory(name, args)
            row["peak_extra_mb"] = None if extra is None else extra / 2**20
            row["peak_extra_x_logits"] = None if extra is None else extra / logits_bytes
        results[name] = row
    config = show_config(print_out=False)  # which backend served, where the kernel came from
    return {
        "config": {
            "n": args.n,
            "c": args.c,
            "positives": args.positives,
            "alpha": args.alpha,
            "gamma": args.gamma,
            "repeats": args.repeats,
            "dtype": "float32",
            "logits_mb": logits_bytes / 2**20,
        },
        "environment": environment(
            focalrec_backend=config["backends"]["float32 CPU"]["backend"],
            cpu_kernel=config["cpu_kernel"]["origin"],
        ),
        "results": results,
    }


def _kind(name: str) -> str:
    return "soft" if name in SOFT else "hard"


def print_table(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(
        f"logits {cfg['n']} x {cfg['c']} float32 ({cfg['logits_mb']:.0f} MiB), "
        f"{cfg['positives']} positives per row, alpha={cfg['alpha']}, gamma={cfg['gamma']}, "
        f"median of {cfg['repeats']}, {report['environment']['threads']} threads, "
        f"focalrec backend {report['environment']['focalrec_backend']}"
    )
    header = f"{'implementation':28s} {'wall ms':>9s} {'x BCE':>7s} {'cpu ms':>9s} {'x BCE':>7s}"
    print(header + f" {'peak extra':>11s} {'rel diff':>9s}")
    for name, row in report["results"].items():
        memory = row.get("peak_extra_x_logits")
        mem = "-" if memory is None else f"{memory:.2f}x"
        diff = row["rel_diff_vs_float64"]
        print(
            f"{name:28s} {row['wall_ms']:9.1f} {row['wall_vs_bce']:7.2f} {row['cpu_ms']:9.1f} "
            f"{row['cpu_vs_bce']:7.2f} {mem:>11s} {'-' if diff is None else f'{diff:9.1e}':>9s}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("N", "C"))
    parser.add_argument("--positives", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--gamma", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a small size for smoke tests")
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument(
        "--only", nargs="+", choices=BUILTIN + OPTIONAL, default=None, help="a subset to run"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    default_size = (64, 501) if args.quick else (4096, 5501)
    args.n, args.c = args.size if args.size is not None else default_size
    if args.repeats is None:
        args.repeats = 2 if args.quick else 7
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_child is not None:
        memory_child(args)
        return
    report = run(args)
    print_table(report)
    if args.json is not None:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
