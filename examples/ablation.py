"""Does focal loss help? Train the challenge model with each loss over several seeds and compare.

Each (loss, seed) run is a full run of ``challenge.py`` (same data, split, model, optimizer and
early stopping; only ``--loss`` and ``--seed`` change), so the comparison is paired: a seed fixes
the validation users and the initial weights for every loss.

    python examples/ablation.py                               # synthetic data, a few minutes
    python examples/ablation.py --data DIR --output OUT --seeds 0 1 2
    python examples/ablation.py --data DIR -- --epochs 10     # after --: challenge.py options

Writes into OUT, each file atomically: ``ablation.md`` (the table), ``ablation.png`` (validation
curves and mean +- std mAP@3 per loss), ``ablation.json`` (every run's figures) and ``runs/`` (each
run's own outputs, see ``challenge.py``). Rerunning skips the runs whose ``metrics.json`` exists.

Every run's options are checked before the first run starts. Options after ``--`` go to every run,
so an option that only one loss uses (``--alpha``, ``--gamma``: focal only) is refused unless
``--losses focal`` is the only loss.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules beside this file

import atomic
import challenge

LOSSES = challenge.LOSSES


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Options after `--` go to every challenge.py run (e.g. -- --epochs 10).",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="challenge CSV directory; default: challenge.py's synthetic data",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=Path("runs/ablation"),
        help="directory for ablation.md, ablation.png, ablation.json and runs/",
    )
    p.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines from the runs")
    args = p.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds must be distinct, got {args.seeds}")
    for flag in ("--loss", "--seed", "--data", "--output", "--resume"):
        if any(a == flag or a.startswith(flag + "=") for a in extra):
            p.error(f"{flag} is set by the ablation itself; do not pass it after --")
    return args, extra


def run_argv(args: argparse.Namespace, extra: list[str], loss: str, seed: int) -> list[str]:
    """The ``challenge.py`` options of the run with ``loss`` and ``seed``."""
    out = args.output / "runs" / f"{loss}-seed{seed}"
    argv = ["--loss", loss, "--seed", str(seed), "--output", str(out), *extra]
    if args.data is not None:
        argv += ["--data", str(args.data)]
    if args.quiet:
        argv.append("--quiet")
    return argv


def run_one(args: argparse.Namespace, extra: list[str], loss: str, seed: int) -> dict[str, Any]:
    """Train once with ``loss`` and ``seed`` (or reuse a finished run); its metrics.json."""
    out = args.output / "runs" / f"{loss}-seed{seed}"
    metrics = out / challenge.METRICS
    if not metrics.is_file():
        argv = run_argv(args, extra, loss, seed)
        print(f"== {loss}, seed {seed}: challenge.py {' '.join(argv)}", flush=True)
        if challenge.main(argv) != 0:
            raise SystemExit(f"error: the run {out} failed (see its message above)")
    result: dict[str, Any] = json.loads(metrics.read_text())
    return result


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over seeds of each loss's figures."""

    def mean_std(values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    table = {}
    for loss, results in runs.items():
        best = [r["best_val_map3"] for r in results]
        seconds = [r["timings_s"]["training_to_best_epoch"] for r in results]
        per_epoch = [r["timings_s"]["training"] / len(r["epochs"]) for r in results]
        epochs = [float(r["best_epoch"]) for r in results]
        table[loss] = dict(
            zip(
                (
                    "map",
                    "map_std",
                    "seconds",
                    "seconds_std",
                    "epoch_s",
                    "epoch_s_std",
                    "epochs",
                    "epochs_std",
                ),
                (*mean_std(best), *mean_std(seconds), *mean_std(per_epoch), *mean_std(epochs)),
                strict=True,
            )
        )
    return table


def markdown(
    table: dict[str, dict[str, float]], runs: dict[str, list[dict[str, Any]]], command: str
) -> str:
    seeds = len(next(iter(runs.values())))
    first = next(iter(runs.values()))[0]
    baselines = first.get("baselines_val_map3", {})
    reference = "focal" if "focal" in table else next(iter(table))
    lines = [
        f"Validation mAP@3, mean +- std over {seeds} seeds (each seed: its own user split and "
        "initial weights, shared by all losses).",
        "",
        f"| loss | mAP@3 | vs {reference} (paired) | training to best epoch (s) | s / epoch "
        "| epochs to best |",
        "|---|---|---|---|---|---|",
    ]
    for loss, row in table.items():
        diffs = [
            r["best_val_map3"] - ref["best_val_map3"]
            for r, ref in zip(runs[loss], runs[reference], strict=True)
        ]
        sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        paired = "-" if loss == reference else f"{statistics.fmean(diffs):+.4f} +- {sd:.4f}"
        lines.append(
            f"| {loss} | {row['map']:.4f} +- {row['map_std']:.4f} | {paired} "
            f"| {row['seconds']:.0f} +- {row['seconds_std']:.0f} "
            f"| {row['epoch_s']:.1f} +- {row['epoch_s_std']:.1f} "
            f"| {row['epochs']:.1f} +- {row['epochs_std']:.1f} |"
        )
    if baselines:
        lines += [
            "",
            "Baselines on the seed-0 split: "
            + ", ".join(f"{name} {value:.4f}" for name, value in baselines.items())
            + ".",
        ]
    lines += ["", f"Reproduce: `{command}`", ""]
    return "\n".join(lines)


def plot(
    path: Path, table: dict[str, dict[str, float]], runs: dict[str, list[dict[str, Any]]]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_curve, ax_bar) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    colors = dict(zip(runs, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for loss, results in runs.items():
        for i, r in enumerate(results):
            ax_curve.plot(
                [e["epoch"] for e in r["epochs"]],
                [e["val_map3"] for e in r["epochs"]],
                color=colors[loss],
                alpha=0.7,
                marker=".",
                label=loss if i == 0 else None,
            )
    ax_curve.set(xlabel="epoch", ylabel="validation mAP@3", title="every run")
    ax_curve.xaxis.get_major_locator().set_params(integer=True)
    ax_curve.legend()
    names = list(table)
    bottom = max(0.0, min(table[n]["map"] - table[n]["map_std"] for n in names) - 0.02)
    ax_bar.bar(
        names,
        [table[n]["map"] for n in names],
        yerr=[table[n]["map_std"] for n in names],
        color=[colors[n] for n in names],
        capsize=6,
    )
    for i, n in enumerate(names):  # training time to the best epoch, inside each bar
        middle = (bottom + table[n]["map"]) / 2
        ax_bar.text(i, middle, f"{table[n]['seconds']:.0f} s", ha="center", color="white")
    ax_bar.set(
        ylabel="best validation mAP@3 (mean +- std)",
        title="best epoch (in each bar: seconds of training to it)",
    )
    ax_bar.set_ylim(bottom=bottom)
    atomic.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    for loss in args.losses:  # a bad option fails now, not after hours of other runs
        for seed in args.seeds:
            challenge.parse_args(run_argv(args, extra, loss, seed))
    args.output.mkdir(parents=True, exist_ok=True)
    runs = {loss: [run_one(args, extra, loss, seed) for seed in args.seeds] for loss in args.losses}
    table = summarize(runs)
    command = "python examples/ablation.py " + " ".join(
        (["--data", str(args.data)] if args.data else [])
        + ["--losses", *args.losses, "--seeds", *map(str, args.seeds)]
        + (["--", *extra] if extra else [])
    )
    text = markdown(table, runs, command)
    atomic.write_text(args.output / "ablation.md", text)
    atomic.save_json(
        args.output / "ablation.json", {"command": command, "summary": table, "runs": runs}
    )
    plot(args.output / "ablation.png", table, runs)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
