"""The fused layer over sampled negatives vs the full fused layer: time per training step.

One step is forward + backward of ``linear_sigmoid_focal_loss`` at batch ``N``, features ``d``
and a catalogue of ``C`` items, ``--positives`` positives per row: the **full** layer scores
every item (cost ``N C d``); the **sampled** one draws ``k`` negatives per row with
``sample_negatives`` (excluding the row's positives; the draw is part of the step) and scores
the positives and those only (cost ``N (P + k) d``), once with the dense gradient of the
``(C, d)`` weight and ``(C,)`` bias, as the full step has, and once with ``sparse_grad=True``
(sparse COO gradients holding the scored rows only). The time to allocate the dense gradients
alone (zeros of ``(C, d)`` and ``(C,)``), the floor of any step that hands the weight a dense
gradient, is reported beside them. For each ``C`` it reports the median wall time per step over
interleaved repeats and the median speed-ups (full / sampled within each repeat), and, on a
small case in float64, the largest difference between the sampled layer (dense and sparse
gradients) and the gathered unfused computation (``F.linear`` logits, the scored columns
gathered, ``sigmoid_focal_loss``).

    python benchmarks/bench_sampled.py                   # N = 512, d = 64, k = 256, C = 1e5, 1e6
    python benchmarks/bench_sampled.py --items 100000 --repeats 5 --json out.json
    python benchmarks/bench_sampled.py --quick

On Linux with glibc, a tensor of more than 32 MiB is a fresh ``mmap`` returned to the system
when freed, so every step pays the page faults of its large temporaries again; the environment
variables ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=17179869184`` keep freed
memory for reuse instead (as jemalloc or tcmalloc, which PyTorch's CPU tuning guide suggests,
do). The report records the ``MALLOC_*`` variables it ran with.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from focalrec import linear_sigmoid_focal_loss, sample_negatives, sigmoid_focal_loss
from harness import environment, interleaved_times, median_ratio, write_json


def make_step(
    n: int, d: int, c: int, positives: int, k: int, seed: int
) -> dict[str, Callable[[], None]]:
    """The full step and the sampled one (dense and sparse gradients) on one layer (features
    ~ N(0, 1), weights ~ N(0, 4 / d), bias at -4.6), each forward + backward with the gradients
    dropped afterwards, and the allocation of the dense ``(C, d)`` and ``(C,)`` gradients alone:
    the floor of any step that hands the weight a dense gradient."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).requires_grad_()
    w = torch.randn(c, d, generator=g).mul_(2.0 / d**0.5).requires_grad_()
    b = torch.full((c,), -4.6, requires_grad=True)
    target = torch.randint(0, c, (n, positives), generator=g)

    def clear() -> None:
        for t in (x, w, b):
            t.grad = None

    def full() -> None:
        linear_sigmoid_focal_loss(x, w, target, linear_bias=b).backward()
        clear()

    def sampled(sparse_grad: bool = False) -> None:
        negatives = sample_negatives(n, k, c, exclude=target, generator=g)
        linear_sigmoid_focal_loss(
            x, w, target, linear_bias=b, negatives=negatives, sparse_grad=sparse_grad
        ).backward()
        clear()

    def sampled_sparse() -> None:
        sampled(sparse_grad=True)

    def dense_gradient() -> None:  # what both steps allocate for the weight's and bias's grads
        torch.zeros(c, d)
        torch.zeros(c)

    return {
        "full": full,
        "sampled": sampled,
        "sampled_sparse": sampled_sparse,
        "dense_gradient": dense_gradient,
    }


def check_vs_gathered(seed: int) -> dict[str, float]:
    """Largest absolute difference (float64) of the sampled layer's loss and three gradients
    (dense and sparse, made dense) from the gathered unfused computation, on ``N = 16, d = 8,
    C = 300, k = 32`` with two positives per row (``accidental_hits="keep"``: every drawn column
    is scored, so the gathered computation needs no mask)."""
    n, d, c, k = 16, 8, 300, 32
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_()
    w = torch.randn(c, d, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(c, generator=g, dtype=torch.float64).requires_grad_()
    target = torch.stack([torch.randperm(c, generator=g)[:2] for _ in range(n)])
    negatives = sample_negatives(n, k, c, generator=g)
    cols = torch.cat([target, negatives], dim=1)
    labels = torch.cat([torch.ones(n, 2), torch.zeros(n, k)], dim=1).double()
    unfused = sigmoid_focal_loss(F.linear(x, w, b).gather(1, cols), labels)
    want = [unfused, *torch.autograd.grad(unfused, (x, w, b))]
    names = ("loss", "grad_input", "grad_weight", "grad_bias")
    diffs: dict[str, float] = {}
    for sparse_grad in (False, True):
        sampled = linear_sigmoid_focal_loss(
            x, w, target, linear_bias=b, negatives=negatives, accidental_hits="keep",
            sparse_grad=sparse_grad,
        )  # fmt: skip
        got = [sampled, *torch.autograd.grad(sampled, (x, w, b))]
        for name, a, e in zip(names, got, want, strict=True):
            diff = float((a.to_dense() - e).detach().abs().max())
            key = f"{name}_abs_diff"
            diffs[key] = max(diffs.get(key, 0.0), diff)
    return diffs


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes: list[dict[str, Any]] = []
    print(
        f"N = {args.n}, d = {args.d}, k = {args.k}, positives = {args.positives}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    for c in args.items:
        steps = make_step(args.n, args.d, c, args.positives, args.k, args.seed)
        times = interleaved_times(steps, args.repeats)
        full_ms = statistics.median(times["full"]) * 1e3
        sampled_ms = statistics.median(times["sampled"]) * 1e3
        sparse_ms = statistics.median(times["sampled_sparse"]) * 1e3
        dense_ms = statistics.median(times["dense_gradient"]) * 1e3
        speedup = median_ratio(times["full"], times["sampled"])
        sparse_speedup = median_ratio(times["full"], times["sampled_sparse"])
        sizes.append(
            {
                "c": c,
                "full_ms": full_ms,
                "sampled_ms": sampled_ms,
                "speedup": speedup,
                "sampled_sparse_ms": sparse_ms,
                "sparse_speedup": sparse_speedup,
                "dense_gradient_ms": dense_ms,
                "times_s": times,
            }
        )
        print(
            f"C = {c:>9,}: full {full_ms:10.1f} ms/step; sampled {sampled_ms:8.1f} ms/step "
            f"({speedup:6.1f}x), with sparse_grad=True {sparse_ms:8.1f} ms/step "
            f"({sparse_speedup:6.1f}x); allocating the dense gradients alone {dense_ms:6.1f} ms "
            f"(median of {args.repeats} interleaved repeats)"
        )
    check = check_vs_gathered(args.seed)
    diffs = ", ".join(f"{name} {value:.1e}" for name, value in check.items())
    print(f"sampled (dense and sparse gradients) vs gathered unfused, float64 max diff: {diffs}")
    report = {
        "environment": environment(
            n=args.n,
            d=args.d,
            k=args.k,
            positives=args.positives,
            # glibc's settings of when freed memory goes back to the system (see the docs)
            malloc={k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")},
        ),
        "repeats": args.repeats,
        "sizes": sizes,
        "check_vs_gathered": check,
    }
    if args.json is not None:
        write_json(args.json, report)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=512, help="batch rows N")
    parser.add_argument("--d", type=int, default=64, help="features d")
    parser.add_argument("--k", type=int, default=256, help="sampled negatives per row")
    parser.add_argument("--positives", type=int, default=1, help="positives per row")
    parser.add_argument(
        "--items", type=int, nargs="+", default=[100_000, 1_000_000], help="catalogue sizes C"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes for smoke tests")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.d, args.k, args.items = 32, 8, 16, [2000, 20000]
    return args


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
