"""Top-k from embeddings: focalrec's exact streamed top-k against the obvious chunked one.

The scores of a factorized model, ``queries @ item_embeddings.T + bias``, are too many to hold at
catalogue size, so both sides form them one block of rows x items at a time, the same blocks
(``--chunk-size ROWS ITEMS``, by default 1,024 x 16,384: 2**24 scores, 64 MiB of float32):

- ``topk_items_from_embeddings``: each block's exact best k (ties by lower index, exclusions)
  merged into a running best k;
- the obvious way: ``torch.topk`` of each block (excluded items set to ``-inf`` in the block) and
  a ``torch.topk`` over the running candidates, with no tie rule;
- where the ``(N, C)`` scores fit in ``--materialize-limit-gib``: the full product, then
  ``topk_items``.

Every time is the median of ``--repeats`` interleaved runs (the harness' ``interleaved_times``),
reported with its ratio to the obvious way in the same process; the peak resident memory each
case adds is measured in a subprocess per case (the harness' ``peak_extra_bytes``). The default
size is the issue's, 39,732 queries x 1,000,000 items, d = 256, k = 3, which takes days on a
2-core CPU: ``--queries`` sets a smaller N (the time per query is what scales).

    python benchmarks/bench_topk.py --queries 512 --json out.json
    python benchmarks/bench_topk.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from focalrec import topk_items, topk_items_from_embeddings
from harness import (
    environment,
    interleaved_times,
    median_ratio,
    memory_in_subprocess,
    print_memory_child,
    write_json,
)

BASELINE = "chunked matmul + torch.topk"
OURS = "topk_items_from_embeddings"
FULL = "full scores + topk_items"
DEFAULT_CHUNK = (1024, 16_384)  # 2**24 scores (64 MiB of float32) per block, for both


def chunked_topk(
    queries: Tensor,
    items: Tensor,
    bias: Tensor,
    k: int,
    exclude: Tensor | None,
    chunk_size: tuple[int, int],
) -> Tensor:
    """The obvious chunked top-k: topk of each block, then topk of the running candidates."""
    n, c = queries.shape[0], items.shape[0]
    rows, width = chunk_size
    out = []
    for r0 in range(0, n, rows):
        q = queries[r0 : r0 + rows]
        best_vals = torch.full((q.shape[0], 0), float("-inf"))
        best_idx = torch.zeros((q.shape[0], 0), dtype=torch.long)
        for c0 in range(0, c, width):
            block = F.linear(q, items[c0 : c0 + width]) + bias[c0 : c0 + width]
            if exclude is not None:
                local = exclude[r0 : r0 + rows] - c0
                inside = (local >= 0) & (local < block.shape[1]) & (exclude[r0 : r0 + rows] >= 0)
                row, col = inside.nonzero(as_tuple=True)
                block[row, local[row, col]] = float("-inf")
            vals, idx = block.topk(min(k, block.shape[1]), dim=1)
            best_vals = torch.cat([best_vals, vals], dim=1)
            best_idx = torch.cat([best_idx, idx + c0], dim=1)
            best_vals, pos = best_vals.topk(min(k, best_vals.shape[1]), dim=1)
            best_idx = best_idx.gather(1, pos)
        out.append(best_idx)
    return torch.cat(out)


def make_inputs(args: argparse.Namespace) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random float32 queries, item embeddings and bias; ``--exclude-width`` items per query."""
    gen = torch.Generator().manual_seed(args.seed)
    queries = torch.randn(args.queries, args.dim, generator=gen)
    items = torch.randn(args.items, args.dim, generator=gen)
    bias = torch.randn(args.items, generator=gen)
    exclude = torch.randint(0, args.items, (args.queries, args.exclude_width), generator=gen)
    return queries, items, bias, exclude


def full_fits(args: argparse.Namespace) -> bool:
    return args.queries * args.items * 4 <= args.materialize_limit_gib * 2**30


def cases(args: argparse.Namespace, inputs: tuple[Tensor, ...]) -> dict[str, Callable[[], Tensor]]:
    """Each case's ``() -> (N, k) index list``, baselines first."""
    queries, items, bias, exclude = inputs
    k, chunk = args.k, tuple(args.chunk_size)
    out: dict[str, Callable[[], Tensor]] = {
        BASELINE: lambda: chunked_topk(queries, items, bias, k, None, chunk),
        OURS: lambda: topk_items_from_embeddings(
            queries, items, k, linear_bias=bias, chunk_size=chunk
        ),
    }
    if args.exclude_width > 0:
        out[BASELINE + ", exclude"] = lambda: chunked_topk(queries, items, bias, k, exclude, chunk)
        out[OURS + ", exclude"] = lambda: topk_items_from_embeddings(
            queries, items, k, linear_bias=bias, exclude=exclude, chunk_size=chunk
        )
    if full_fits(args):
        out[FULL] = lambda: topk_items(queries @ items.T + bias, k)
    return out


def memory_child(args: argparse.Namespace) -> None:
    """Print the peak RSS that one run of ``args.memory_child`` adds to its inputs."""
    run = cases(args, make_inputs(args))[args.memory_child]
    print_memory_child(run, lambda: None)


def measure_memory(name: str, argv: list[str]) -> int | None:
    return memory_in_subprocess(__file__, argv, name)


def same_rows(a: Tensor, b: Tensor) -> float:
    """The fraction of rows of two index lists that are identical."""
    return float((a == b).all(dim=1).double().mean()) if a.shape[0] > 0 else 1.0


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    inputs = make_inputs(args)
    last: dict[str, Tensor] = {}

    def keeping(name: str, fn: Callable[[], Tensor]) -> Callable[[], None]:
        def call() -> None:
            last[name] = fn()

        return call

    timed = {name: keeping(name, fn) for name, fn in cases(args, inputs).items()}
    times = interleaved_times(timed, args.repeats)  # type: ignore[arg-type]
    rows, block_items = args.chunk_size
    results: dict[str, Any] = {}
    for name, ts in times.items():
        base = BASELINE + (", exclude" if name.endswith(", exclude") else "")
        median = statistics.median(ts)
        row: dict[str, Any] = {
            "median_s": median,
            "min_s": min(ts),
            "ms_per_query": 1e3 * median / max(args.queries, 1),
            "baseline": base,
            # Each repeat runs every case back to back: the ratio within a repeat is the least
            # sensitive to a machine whose load drifts between repeats.
            "ratio_to_baseline": median_ratio(ts, times[base]),
        }
        if args.memory:
            extra = measure_memory(name, argv)
            row["peak_extra_mib"] = None if extra is None else extra / 2**20
        results[name] = row
    checks = {"rows identical to the obvious way's": same_rows(last[OURS], last[BASELINE])}
    if FULL in last:
        checks["rows identical to full materialization's"] = same_rows(last[OURS], last[FULL])
    return {
        "config": {
            "queries": args.queries,
            "items": args.items,
            "dim": args.dim,
            "k": args.k,
            "exclude_width": args.exclude_width,
            "chunk_size": args.chunk_size,
            "block_rows": rows,
            "block_items": block_items,
            "block_mib": rows * block_items * 4 / 2**20,
            "scores_gib": args.queries * args.items * 4 / 2**30,
            "materialize_limit_gib": args.materialize_limit_gib,
            "repeats": args.repeats,
            "seed": args.seed,
        },
        "environment": environment(),
        "results": results,
        "checks": checks,
    }


def print_table(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(
        f"{cfg['queries']:,} queries x {cfg['items']:,} items, d={cfg['dim']}, k={cfg['k']}, "
        f"blocks of {cfg['block_rows']} x {cfg['block_items']} scores, "
        f"{report['environment']['threads']} threads, median of {cfg['repeats']}"
    )
    width = max(len(name) for name in report["results"])
    print(f"{'case':<{width}}  {'median s':>9}  {'ms/query':>9}  {'x obvious':>9}  {'peak MiB':>9}")
    for name, r in report["results"].items():
        peak = r.get("peak_extra_mib")
        print(
            f"{name:<{width}}  {r['median_s']:9.3f}  {r['ms_per_query']:9.3f}  "
            f"{r['ratio_to_baseline']:9.3f}  {'-' if peak is None else f'{peak:9.1f}':>9}"
        )
    for name, value in report["checks"].items():
        print(f"{name}: {value:.4f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=39_732, help="N, rows of the queries")
    parser.add_argument("--items", type=int, default=1_000_000, help="C, the catalogue")
    parser.add_argument("--dim", type=int, default=256, help="d, the embedding size")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--exclude-width", type=int, default=10, help="0: no exclusion cases")
    parser.add_argument(
        "--chunk-size",
        type=int,
        nargs=2,
        metavar=("ROWS", "ITEMS"),
        default=list(DEFAULT_CHUNK),
        help="rows and items of a block of scores, for both implementations",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--materialize-limit-gib",
        type=float,
        default=4.0,
        help="run the full-scores case when the (N, C) float32 scores take at most this",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument("--quick", action="store_true", help="a small size for smoke tests")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.items, args.dim, args.repeats = 64, 20_000, 32, 2
    return args


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        memory_child(args)
        return
    # The memory children get the same sizes, not the outputs.
    child_argv = [a for a in argv if a != "--quick"]
    child_argv += ["--queries", str(args.queries), "--items", str(args.items)]
    child_argv += ["--dim", str(args.dim), "--repeats", str(args.repeats)]
    child_argv = _without(child_argv, "--json")
    report = run(args, child_argv)
    print_table(report)
    if args.json is not None:
        write_json(args.json, report)
        print(f"wrote {args.json}")


def _without(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option`` and its value."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


if __name__ == "__main__":
    main()
