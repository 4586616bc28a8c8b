"""Run ``examples/movielens.py`` for several losses and seeds and summarize them.

Each run is ``python examples/movielens.py --data DIR --output WORK/<loss>-s<seed> --loss LOSS
--seed SEED --max-minutes M --quiet``, ``--jobs`` of them at a time with ``--threads`` torch
threads each (on a 2-core machine: 2 jobs of 1 thread, two runs side by side). A run whose
``metrics.json`` already holds the same configuration is not run again, so an interrupted
invocation resumes where it stopped. The summary (``--json``) gives, per loss, every run's best
validation NDCG@10, Recall@10 and Recall@1 and the steps and seconds to its best epoch, their
mean and a 95% Student-t interval over the seeds, and, per seed, the validation NDCG@10 of each
loss at equal steps (the epochs are the same number of steps for every loss).

    python docs/scripts/movielens_runs.py --data ../shared/data/ml-1m --work WORK --json out.json
    python docs/scripts/movielens_runs.py --data DIR --work WORK --losses bce gbce --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "movielens.py"
METRICS = ("ndcg@10", "recall@10", "recall@1")

# Two-sided 95% Student-t quantiles by degrees of freedom (1..10).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def interval(values: list[float]) -> dict[str, float | None]:
    """Mean and the half-width of its 95% Student-t interval (None for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "half_width": None}
    t = T95.get(len(values) - 1, 1.96)
    return {"mean": mean, "half_width": t * statistics.stdev(values) / math.sqrt(len(values))}


def run_one(args: argparse.Namespace, loss: str, seed: int) -> dict[str, Any]:
    """One run of the example (skipped when its outputs hold this configuration already)."""
    out = args.work / f"{loss}-s{seed}"
    metrics = out / "metrics.json"
    if metrics.is_file():
        done = json.loads(metrics.read_text())
        config = done.get("config", {})
        if (config.get("loss"), config.get("seed"), config.get("max_minutes")) == (
            loss,
            seed,
            args.max_minutes,
        ):
            return done
    command = [
        sys.executable, str(EXAMPLE), "--data", str(args.data), "--output", str(out),
        "--loss", loss, "--seed", str(seed), "--max-minutes", str(args.max_minutes), "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    print(f"[{loss} seed {seed}] {' '.join(command[1:])}", flush=True)
    subprocess.run(command, env=env, check=True)
    print(f"[{loss} seed {seed}] done in {time.perf_counter() - start:.0f} s", flush=True)
    result: dict[str, Any] = json.loads(metrics.read_text())
    return result


def summarize(
    runs: dict[tuple[str, int], dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    losses: dict[str, Any] = {}
    for loss in args.losses:
        mine = [runs[(loss, seed)] for seed in args.seeds]
        rows = [
            {
                "seed": seed,
                **{m: run["best"]["val"][m] for m in METRICS},
                "best_epoch": run["best"]["epoch"],
                "steps_to_best": run["best"]["steps"],
                "seconds_to_best": run["best"]["seconds"],
                "steps": run["steps"],
                "seconds": run["seconds"],
            }
            for seed, run in zip(args.seeds, mine, strict=True)
        ]
        losses[loss] = {
            "runs": rows,
            **{m: interval([r[m] for r in rows]) for m in METRICS},
            "steps_to_best": interval([float(r["steps_to_best"]) for r in rows]),
            "seconds_to_best": interval([r["seconds_to_best"] for r in rows]),
            "steps": interval([float(r["steps"]) for r in rows]),
        }
    # At equal steps: every loss's validation NDCG@10 after each epoch both runs completed.
    equal_steps = []
    for seed in args.seeds:
        histories = {loss: runs[(loss, seed)]["epochs"] for loss in args.losses}
        common = min(len(h) for h in histories.values())
        for i in range(common):
            steps = {loss: h[i]["steps"] for loss, h in histories.items()}
            row = {"seed": seed, "epoch": i + 1, "steps": steps}
            row |= {loss: h[i]["val"]["ndcg@10"] for loss, h in histories.items()}
            equal_steps.append(row)
    return {"losses": losses, "equal_steps": equal_steps}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="gSASRec's split (train/, val/)")
    p.add_argument("--work", type=Path, required=True, help="one folder per run, kept")
    p.add_argument("--losses", nargs="+", default=["bce", "focal", "softmax", "gbce"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-minutes", type=float, default=10.0, help="each run's training time")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--json", type=Path, default=None, help="write the summary here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    # Seed-major order: the losses of one seed run side by side, under the same load.
    order = [(loss, seed) for seed in args.seeds for loss in args.losses]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda key: run_one(args, *key), order))
    runs = dict(zip(order, results, strict=True))
    summary = {
        "config": {
            "data": Path(args.data).name,
            "max_minutes": args.max_minutes,
            "jobs": args.jobs,
            "threads": args.threads,
            "seeds": args.seeds,
            "losses": args.losses,
            "cpu_count": os.cpu_count(),
        },
        **summarize(runs, args),
    }
    if args.json is not None:
        tmp = args.json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        tmp.replace(args.json)
    for loss, row in summary["losses"].items():
        n = row["ndcg@10"]
        width = "" if n["half_width"] is None else f" +- {n['half_width']:.4f}"
        print(f"{loss:8s} val NDCG@10 {n['mean']:.4f}{width}")
    return summary


if __name__ == "__main__":
    main()
