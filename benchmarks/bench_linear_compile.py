"""A training step with the fused output layer, compiled or not, side by side in one process.

A small recommender (the mean of a history's item embeddings, an MLP) feeds a
``LinearFocalLoss`` head over ``C`` items; one step is forward + backward of the loss for a
batch of ``N`` rows with index-list targets (the optimizer's update is the same in both and left
out). The step runs eagerly and as ``torch.compile(step, fullgraph=True)`` (any graph break
fails the compile), on the same parameters and batch, in interleaved repeats; the report gives
the median wall and CPU time of each, their ratios (compiled / eager; the CPU time is the
steadier on a shared machine), the first compiled call's time (the compilation), and how far
the compiled loss and gradients are from eager's.

    python benchmarks/bench_linear_compile.py                  # N = 1024, d = 64, C = 20,000
    python benchmarks/bench_linear_compile.py --threads 2 --repeats 15 --json out.json
    python benchmarks/bench_linear_compile.py --quick --backend aot_eager
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from focalrec import LinearFocalLoss
from harness import load_average, write_json


class Recommender(nn.Module):
    """History ``(N, L)`` of item ids (``-1`` padding) -> features ``(N, d)`` -> fused head."""

    def __init__(self, items: int, d: int, chunk_size: tuple[int, int] | None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(items + 1, d, padding_idx=items)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))
        self.head = LinearFocalLoss(d, items, chunk_size=chunk_size)

    def forward(self, history: Tensor, target: Tensor) -> Tensor:
        padded = torch.where(history < 0, self.embedding.num_embeddings - 1, history)
        features = self.mlp(self.embedding(padded).mean(1))
        out: Tensor = self.head(features, target)
        return out


def make_batch(n: int, items: int, length: int, positives: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    history = torch.randint(-1, items, (n, length), generator=g)
    target = torch.randint(-1, items, (n, positives), generator=g)
    return history, target


def run_step(
    fn: Callable[[Tensor, Tensor], Tensor], model: nn.Module, batch: tuple[Tensor, Tensor]
) -> tuple[tuple[float, float], Tensor, list[Tensor]]:
    """Wall and CPU seconds of one forward + backward, the loss and the parameters' gradients."""
    model.zero_grad(set_to_none=True)
    wall, cpu = time.perf_counter(), time.process_time()
    loss = fn(*batch)
    loss.backward()
    seconds = (time.perf_counter() - wall, time.process_time() - cpu)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    return seconds, loss.detach(), grads


def _rel_diff(a: Tensor, b: Tensor) -> float:
    scale = float(b.double().norm())
    diff = float((a.double() - b.double()).norm())
    return diff / scale if scale > 0 else diff


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    chunk = None if args.chunk_size is None else (args.chunk_size[0], args.chunk_size[1])
    model = Recommender(args.items, args.d, chunk)
    batch = make_batch(args.n, args.items, args.history, args.positives, args.seed + 1)
    load_start = load_average()
    compiled = torch.compile(model, backend=args.backend, fullgraph=True)
    first, loss_c, grads_c = run_step(compiled, model, batch)  # compiles
    _, loss_e, grads_e = run_step(model, model, batch)  # warm-up
    times: dict[str, list[list[float]]] = {"eager": [], "compiled": []}
    for r in range(args.repeats):
        order = ("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")
        for name in order:
            fn = model if name == "eager" else compiled
            times[name].append(list(run_step(fn, model, batch)[0]))
    medians = {
        name: [statistics.median(t[k] for t in runs) for k in range(2)]
        for name, runs in times.items()
    }
    return {
        "config": {
            "n": args.n,
            "d": args.d,
            "items": args.items,
            "history": args.history,
            "positives": args.positives,
            "chunk_size": None if chunk is None else list(chunk),
            "backend": args.backend,
            "repeats": args.repeats,
            "dtype": "float32",
        },
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "load_average": [load_start, load_average()],
        },
        "eager_s": medians["eager"][0],
        "compiled_s": medians["compiled"][0],
        "ratio": medians["compiled"][0] / medians["eager"][0],
        "eager_cpu_s": medians["eager"][1],
        "compiled_cpu_s": medians["compiled"][1],
        "cpu_ratio": medians["compiled"][1] / medians["eager"][1],
        "first_compiled_call_s": first[0],
        "times": times,
        "loss_rel_diff": _rel_diff(loss_c, loss_e),
        "grad_rel_diff_max": max(
            (_rel_diff(a, b) for a, b in zip(grads_c, grads_e, strict=True)), default=0.0
        ),
    }


def print_report(report: dict[str, Any]) -> None:
    c, e = report["config"], report["environment"]
    print(
        f"training step, N={c['n']} d={c['d']} C={c['items']} ({c['backend']}, "
        f"{e['threads']} threads, median of {c['repeats']} interleaved)"
    )
    print("             wall ms    CPU ms")
    for name in ("eager", "compiled"):
        wall, cpu = report[f"{name}_s"] * 1e3, report[f"{name}_cpu_s"] * 1e3
        print(f"  {name:9s} {wall:9.2f} {cpu:9.2f}")
    print(f"  compiled / eager: wall {report['ratio']:.3f}x, CPU {report['cpu_ratio']:.3f}x")
    print(f"  first compiled call (compilation) {report['first_compiled_call_s']:.1f} s")
    print(
        f"  compiled vs eager: loss {report['loss_rel_diff']:.1e}, "
        f"gradients up to {report['grad_rel_diff_max']:.1e} (relative norm)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="batch rows N (1024)")
    parser.add_argument("--d", type=int, default=None, help="features d (64)")
    parser.add_argument("--items", type=int, default=None, help="catalogue size C (20000)")
    parser.add_argument("--history", type=int, default=8, help="history length per row")
    parser.add_argument("--positives", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, nargs=2, default=None, metavar=("ROWS", "ITEMS"))
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (11)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes for smoke tests")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    n, d, items, repeats = (64, 8, 500, 2) if args.quick else (1024, 64, 20_000, 11)
    args.n = n if args.n is None else args.n
    args.d = d if args.d is None else args.d
    args.items = items if args.items is None else args.items
    args.repeats = repeats if args.repeats is None else args.repeats
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report = run(args)
    print_report(report)
    if args.json is not None:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
