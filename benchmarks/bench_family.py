"""The asymmetric loss (ASL), forward + backward, side by side with its peers in one process.

Compares ``focalrec.asymmetric_loss`` (index-list and dense targets) with BCE-with-logits and
timm's two ASL classes, ``AsymmetricLossMultiLabel`` and ``AsymmetricLossOptimized``, their
forward code written out below (timm is not required), on the focal benchmark's shape
(4096 x 5501 float32 logits, 3 positives per row) with the paper's hyper-parameters
(``gamma_pos = 0``, ``gamma_neg = 4``, ``clip = 0.05``). Reports the median wall time of
forward + backward over interleaved repeats and the median over repeats of each one's ratio to
BCE-with-logits in the same repeat (the figure least sensitive to a shared machine's load), each
loss value's relative difference to a float64 evaluation of the formula, and (one subprocess per
implementation) the peak resident memory that forward + backward adds, in units of the logits'
size (the logits' gradient included).

    python benchmarks/bench_family.py                 # 4096 x 5501, 2 threads
    python benchmarks/bench_family.py --quick --json out.json
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from focalrec import asymmetric_loss, show_config
from harness import (
    environment,
    interleaved_times,
    median_ratio,
    memory_in_subprocess,
    print_memory_child,
    write_json,
)

GAMMA_POS, GAMMA_NEG, CLIP, EPS = 0.0, 4.0, 0.05, 1e-8
CASES = (
    "bce_with_logits",
    "focalrec_asl_index",
    "focalrec_asl_dense",
    "timm_multilabel",
    "timm_optimized",
)

LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``fn(logits, index, dense) -> scalar loss`` (sum over all elements)."""


def timm_multilabel(x: Tensor, y: Tensor) -> Tensor:
    """timm's ``AsymmetricLossMultiLabel.forward``, as written there."""
    xs_pos = torch.sigmoid(x)
    xs_neg = 1 - xs_pos
    if CLIP is not None and CLIP > 0:
        xs_neg = (xs_neg + CLIP).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=EPS))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=EPS))
    loss = los_pos + los_neg
    if GAMMA_NEG > 0 or GAMMA_POS > 0:
        pt0 = xs_pos * y
        pt1 = xs_neg * (1 - y)
        pt = pt0 + pt1
        one_sided_gamma = GAMMA_POS * y + GAMMA_NEG * (1 - y)
        one_sided_w = torch.pow(1 - pt, one_sided_gamma)
        loss *= one_sided_w
    return -loss.sum()


def timm_optimized(x: Tensor, y: Tensor) -> Tensor:
    """timm's ``AsymmetricLossOptimized.forward`` (in-place steps), as written there."""
    targets = y
    anti_targets = 1 - y
    xs_pos = torch.sigmoid(x)
    xs_neg = 1.0 - xs_pos
    if CLIP is not None and CLIP > 0:
        xs_neg.add_(CLIP).clamp_(max=1)
    loss = targets * torch.log(xs_pos.clamp(min=EPS))
    loss.add_(anti_targets * torch.log(xs_neg.clamp(min=EPS)))
    if GAMMA_NEG > 0 or GAMMA_POS > 0:
        xs_pos = xs_pos * targets
        xs_neg = xs_neg * anti_targets
        asymmetric_w = torch.pow(
            1 - xs_pos - xs_neg, GAMMA_POS * targets + GAMMA_NEG * anti_targets
        )
        loss *= asymmetric_w
    return -loss.sum()


def reference_value(x: Tensor, dense: Tensor) -> float:
    """The loss in float64 (the paper's formula; timm's eps clamps do not act at these logits)."""
    x, t = x.double(), dense.double()
    p = torch.sigmoid(x)
    pm = (p - CLIP).clamp_min(0.0)
    pos = torch.sigmoid(-x) ** GAMMA_POS * -F.logsigmoid(x)
    neg = pm**GAMMA_NEG * -torch.log1p(-pm)
    return float((t * pos + (1 - t) * neg).sum())


def implementations(only: list[str] | None) -> dict[str, LossFn]:
    def asl(target: Tensor) -> Callable[[Tensor], Tensor]:
        return lambda x: asymmetric_loss(
            x, target, gamma_pos=GAMMA_POS, gamma_neg=GAMMA_NEG, clip=CLIP, reduction="sum"
        )

    impls: dict[str, LossFn] = {
        "bce_with_logits": lambda x, index, dense: F.binary_cross_entropy_with_logits(
            x, dense, reduction="sum"
        ),
        "focalrec_asl_index": lambda x, index, dense: asl(index)(x),
        "focalrec_asl_dense": lambda x, index, dense: asl(dense)(x),
        "timm_multilabel": lambda x, index, dense: timm_multilabel(x, dense),
        "timm_optimized": lambda x, index, dense: timm_optimized(x, dense),
    }
    names = CASES if only is None else tuple(n for n in CASES if n in only or n == CASES[0])
    return {name: impls[name] for name in names}


def make_inputs(n: int, c: int, positives: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Logits ``(n, c)`` ~ N(-4.6, 2^2) (about a 1% prior) and ``positives`` items per row (as in
    ``bench_focal.py``): the logits, the index list and the dense 0/1 targets."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g).mul_(2.0).sub_(4.6)
    index = torch.randint(0, c, (n, positives), generator=g)
    dense = torch.zeros(n, c).scatter_(1, index, 1.0)
    return logits, index, dense


def _step(fn: LossFn, base: Tensor, index: Tensor, dense: Tensor) -> Callable[[], float]:
    def step() -> float:
        x = base.clone().requires_grad_()
        loss = fn(x, index, dense)
        loss.backward()
        return float(loss.detach())

    return step


def memory_child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    base, index, dense = make_inputs(args.n, args.c, args.positives, args.seed)
    fn = implementations(None)[args.memory_child]
    x = base.clone().requires_grad_()

    def step() -> None:
        fn(x, index, dense).backward()

    print_memory_child(step, lambda: setattr(x, "grad", None))


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    base, index, dense = make_inputs(args.n, args.c, args.positives, args.seed)
    impls = implementations(args.only)
    steps = {name: _step(fn, base, index, dense) for name, fn in impls.items()}
    values = {name: step() for name, step in steps.items()}
    times = interleaved_times(steps, args.repeats, warmup=False)
    reference = reference_value(base, dense)
    logits_bytes = base.numel() * base.element_size()
    results: dict[str, Any] = {}
    for name in impls:
        row: dict[str, Any] = {
            "wall_ms": 1e3 * statistics.median(times[name]),
            "vs_bce": median_ratio(times[name], times["bce_with_logits"]),
            "loss": values[name],
            "rel_diff_vs_float64": None
            if name == "bce_with_logits"
            else abs(values[name] - reference) / abs(reference),
        }
        if args.memory:
            argv = ["--size", str(args.n), str(args.c), "--positives", str(args.positives)]
            argv += ["--threads", str(args.threads)]
            extra = memory_in_subprocess(Path(__file__), argv, name)
            row["peak_extra_x_logits"] = None if extra is None else extra / logits_bytes
        results[name] = row
    for name in ("timm_multilabel", "timm_optimized"):
        for ours in ("focalrec_asl_index", "focalrec_asl_dense"):
            if name in times and ours in times:
                results[ours][f"speedup_vs_{name}"] = median_ratio(times[name], times[ours])
    config = show_config(print_out=False)
    return {
        "config": {
            "n": args.n,
            "c": args.c,
            "positives": args.positives,
            "gamma_pos": GAMMA_POS,
            "gamma_neg": GAMMA_NEG,
            "clip": CLIP,
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


def print_table(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(
        f"logits {cfg['n']} x {cfg['c']} float32 ({cfg['logits_mb']:.0f} MiB), "
        f"{cfg['positives']} positives per row, gamma_pos={cfg['gamma_pos']}, "
        f"gamma_neg={cfg['gamma_neg']}, clip={cfg['clip']}, median of {cfg['repeats']}, "
        f"{report['environment']['threads']} threads, "
        f"focalrec backend {report['environment']['focalrec_backend']}"
    )
    print(
        f"{'implementation':22s} {'wall ms':>9s} {'x BCE':>7s} {'peak extra':>11s} {'rel diff':>9s}"
    )
    for name, row in report["results"].items():
        memory = row.get("peak_extra_x_logits")
        mem = "-" if memory is None else f"{memory:.2f}x"
        diff = row["rel_diff_vs_float64"]
        print(
            f"{name:22s} {row['wall_ms']:9.1f} {row['vs_bce']:7.2f} {mem:>11s} "
            f"{'-' if diff is None else f'{diff:9.1e}':>9s}"
        )
    for name, row in report["results"].items():
        for key, value in row.items():
            if key.startswith("speedup_vs_"):
                print(f"{name} is {value:.2f}x faster than {key.removeprefix('speedup_vs_')}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", nargs=2, type=int, default=None, metavar=("N", "C"))
    parser.add_argument("--positives", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a small size for smoke tests")
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--only", nargs="+", choices=CASES, default=None, help="a subset to run")
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
