"""mAP@k side by side: focalrec against torch.topk alone, a Python apk loop and torchmetrics.

The default size is the challenge's: 39,732 users x 5,501 items, float32 scores, 3 target items
per user, k=3, with and without a 10-item exclusion list per user. Every timing is the median
(and the minimum) of ``--repeats`` runs, the candidates run back to back within each repeat, and
is reported with its ratio to ``torch.topk(scores, k)`` alone in the same process (the floor for
any exact top-k metric), also as the median of the ratios within each repeat (the steadiest
figure on a machine whose load drifts).

torchmetrics' ``RetrievalMAP`` keeps every score and loops over users in Python (about a minute
and 11 GB at full size), so it runs on the first ``--torchmetrics-rows`` users only; its time is
scaled to all users per row and labelled as such.

Run ``python benchmarks/bench_metrics.py --help`` for the options; ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from focalrec import map_at_k, topk_items
from harness import environment, interleaved_times, write_json


def apk(actual: list[int], predicted: list[int], k: int) -> float:
    """ml_metrics' ``apk``, the Kaggle reference."""
    predicted = predicted[:k]
    score = 0.0
    num_hits = 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            num_hits += 1.0
            score += num_hits / (i + 1.0)
    if not actual:
        return 0.0
    return score / min(len(actual), k)


def python_apk_loop(
    scores: torch.Tensor, targets: torch.Tensor, k: int, exclude: torch.Tensor | None
) -> float:
    """The usual Kaggle way: mask a copy, torch.topk, then apk over Python lists."""
    if exclude is not None:
        scores = scores.clone()
        scores.scatter_(1, exclude, float("-inf"))
    predicted = torch.topk(scores, k).indices.tolist()
    actual = [[t for t in row if t >= 0] for row in targets.tolist()]
    return sum(apk(a, p, k) for a, p in zip(actual, predicted, strict=True)) / len(actual)


def torchmetrics_map(scores: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    from torchmetrics.retrieval import RetrievalMAP

    n, c = scores.shape
    relevance = torch.zeros(n, c, dtype=torch.bool)
    relevance.scatter_(1, targets.clamp(min=0), targets >= 0)
    metric = RetrievalMAP(top_k=k)
    metric.update(
        scores.flatten(), relevance.flatten(), indexes=torch.arange(n).repeat_interleave(c)
    )
    return float(metric.compute())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=39_732, help="users (rows of the scores)")
    parser.add_argument("--items", type=int, default=5_501, help="items (columns)")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--targets-width", type=int, default=3, help="target items per user")
    parser.add_argument("--exclude-width", type=int, default=10, help="excluded items per user")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--torchmetrics-rows",
        type=int,
        default=2_000,
        help="users given to torchmetrics' RetrievalMAP (0 to skip it)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a small, fast smoke run")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeats, args.torchmetrics_rows = 2_000, 2, min(args.torchmetrics_rows, 200)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(args.seed)
    n, c, k = args.rows, args.items, args.k
    scores = torch.randn(n, c, generator=gen)
    targets = torch.randint(0, c, (n, args.targets_width), generator=gen)
    exclude = torch.randint(0, c, (n, args.exclude_width), generator=gen)
    # Worst case for the exclusion path: every user's best-scored items are the excluded ones.
    history_on_top = torch.topk(scores, args.exclude_width).indices

    cases: dict[str, Callable[[], object]] = {
        "torch.topk(scores, k) alone": lambda: torch.topk(scores, k),
        "map_at_k": lambda: map_at_k(scores, targets, k),
        "map_at_k, exclude (random)": lambda: map_at_k(scores, targets, k, exclude=exclude),
        "map_at_k, exclude (history on top)": lambda: map_at_k(
            scores, targets, k, exclude=history_on_top
        ),
        "topk_items": lambda: topk_items(scores, k),
        "topk_items, exclude (random)": lambda: topk_items(scores, k, exclude=exclude),
        "python apk loop": lambda: python_apk_loop(scores, targets, k, None),
        "python apk loop, exclude (random)": lambda: python_apk_loop(scores, targets, k, exclude),
    }
    times = interleaved_times(cases, args.repeats)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    floor = medians["torch.topk(scores, k) alone"]
    floor_times = times["torch.topk(scores, k) alone"]
    results = [
        {
            "case": name,
            "median_s": medians[name],
            "ratio_to_topk": medians[name] / floor,
            "min_s": min(ts),
            "min_ratio_to_topk": min(ts) / min(floor_times),
            # Each repeat times every case back to back: the ratio within a repeat is the least
            # sensitive to a machine whose load drifts between repeats.
            "median_ratio_within_repeats": statistics.median(
                t / f for t, f in zip(ts, floor_times, strict=True)
            ),
            "rows": n,
        }
        for name, ts in times.items()
    ]

    # Same numbers from both definitions (a check that the comparison is fair).
    ours = map_at_k(scores, targets, k, exclude=exclude).item()
    loop = python_apk_loop(scores, targets, k, exclude)
    checks = {"map_at_k": ours, "python apk loop": loop}

    m = min(args.torchmetrics_rows, n)
    if m > 0:
        try:
            import torchmetrics  # noqa: F401
        except ImportError:
            print("torchmetrics is not installed: skipped")
        else:
            sub_s, sub_t = scores[:m], targets[:m]
            start = time.perf_counter()
            theirs = torchmetrics_map(sub_s, sub_t, k)
            elapsed = time.perf_counter() - start
            scaled = elapsed * n / m
            results.append(
                {
                    "case": f"torchmetrics RetrievalMAP, {m} rows, scaled per row to {n}",
                    "median_s": scaled,
                    "ratio_to_topk": scaled / floor,
                    "rows": m,
                    "measured_s": elapsed,
                    "speedup_of_map_at_k": scaled / medians["map_at_k"],
                }
            )
            # torchmetrics divides by the number of hits: compare with that convention.
            checks["torchmetrics (subset)"] = theirs
            checks["map_at_k denominator='hits' (subset)"] = map_at_k(
                sub_s, sub_t, k, denominator="hits"
            ).item()

    print(
        f"{n} x {c} float32 scores, k={k}, targets {args.targets_width}/row, "
        f"exclude {args.exclude_width}/row, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    width = max(len(r["case"]) for r in results)
    print(
        f"{'case':<{width}}  {'median s':>10}  {'x topk':>8}  {'min s':>10}  {'x topk':>8}  "
        f"{'x topk within repeats':>21}"
    )
    for r in results:
        more = ""
        if "min_s" in r:
            more = (
                f"{r['min_s']:>10.4f}  {r['min_ratio_to_topk']:>8.3f}  "
                f"{r['median_ratio_within_repeats']:>21.3f}"
            )
        print(f"{r['case']:<{width}}  {r['median_s']:>10.4f}  {r['ratio_to_topk']:>8.3f}  {more}")
    for name, value in checks.items():
        print(f"mAP@{k} by {name}: {value:.6f}")

    if args.json is not None:
        payload = {
            "config": {
                key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()
            },
            "environment": environment(),
            "results": results,
            "checks": checks,
        }
        write_json(args.json, payload)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
