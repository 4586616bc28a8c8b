"""Does focal loss help? Train each model with each loss over several seeds, paired, and compare.

Every (model, loss, seed) cell is a full run of ``challenge.py``: same data, split, optimizer and
early stopping, only ``--model``, the loss and ``--seed`` change. A seed fixes the validation users
and the initial weights for every loss, so each loss is compared with BCE seed by seed (paired).

    python examples/ablation.py                                   # synthetic data, small grid
    python examples/ablation.py --data DIR --output OUT           # the full grid, 3 seeds
    python examples/ablation.py --data DIR --output OUT --models gru --losses bce focal-g2-a0.25
    python examples/ablation.py --data DIR --output OUT --max-runs 4   # at most 4 new runs now
    python examples/ablation.py --data DIR --output OUT --report-only  # report what is done
    python examples/ablation.py --data DIR -- --epochs 15         # after --: challenge.py options

Losses are named ``softmax``, ``bce`` and ``focal-g{gamma}-a{alpha}`` (``alpha`` a number or
``none``): the default grid is softmax, BCE and focal loss with gamma in {0.5, 1, 2} and alpha in
{none, 0.25, 0.75}, for the models mlp and gru, seeds 0, 1 and 2.

Resumable: a run whose ``metrics.json`` exists is never redone (it is checked to have been made
with the same options and data; if not, the ablation stops and says which option differs); an
interrupted run goes on from its last checkpoint, and a finished run given a larger ``--epochs``
or ``--patience`` (after ``--``) goes on from its last epoch. The runs go in order seed by seed,
so an ablation stopped early (``--max-runs``, or killed) has every setting at fewer seeds rather
than a few settings at every seed. ``--jobs N`` trains N runs at once, each in its own process.

Writes into OUT, each file atomically: ``ablation.md`` (per model: each loss's mean validation
mAP@3, its paired difference to BCE with a 95% confidence interval, epochs to the best epoch and
seconds per epoch; which runs are missing, and the command that runs them; one sentence per
model that answers the question), ``ablation.png`` and ``ablation.json`` (every run's figures).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import atomic
import challenge
from challenge_app.checkpoints import CHECKPOINT, METRICS, OUTPUTS
from challenge_app.command_line import MODELS as CHALLENGE_MODELS
from challenge_app.command_line import RESUMABLE, used_config
from challenge_data import DataError

GAMMAS = ("0.5", "1", "2")
ALPHAS = ("none", "0.25", "0.75")
LOSSES = ("softmax", "bce", *(f"focal-g{g}-a{a}" for g in GAMMAS for a in ALPHAS))
MODELS = ("mlp", "gru")
REFERENCE = "bce"
FOCAL = re.compile(r"focal-g(?P<gamma>[0-9.]+)-a(?P<alpha>none|[0-9.]+)")
SET_BY_THE_ABLATION = ("--model", "--loss", "--alpha", "--gamma", "--seed", "--data", "--output")
# Two-sided 95% quantiles of Student's t by degrees of freedom (beyond 30: the normal's 1.96).
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
       2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
       2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    model: str
    loss: str
    seed: int

    def folder(self, output: Path) -> Path:
        return output / "runs" / self.model / self.loss / f"seed{self.seed}"


def loss_options(loss: str) -> list[str]:
    """The ``challenge.py`` options of a loss name (``softmax``, ``bce``, ``focal-g2-a0.25``)."""
    if loss in ("softmax", "bce"):
        return ["--loss", loss]
    match = FOCAL.fullmatch(loss)
    if match is None:
        raise ValueError(f"expected softmax, bce or focal-g<gamma>-a<alpha|none>, got {loss!r}")
    return ["--loss", "focal", "--gamma", match["gamma"], "--alpha", match["alpha"]]


def loss_name(text: str) -> str:
    """The ``--losses`` type: a loss name as :func:`loss_options` takes it."""
    try:
        loss_options(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Options after `--` go to every challenge.py run (e.g. -- --epochs 15).",
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
    p.add_argument(
        "--models", nargs="+", choices=CHALLENGE_MODELS, default=list(MODELS), help="models"
    )
    p.add_argument(
        "--losses",
        nargs="+",
        type=loss_name,
        default=list(LOSSES),
        help="losses: softmax, bce, focal-g<gamma>-a<alpha|none>",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    p.add_argument("--max-runs", type=int, default=None, help="train at most this many runs now")
    p.add_argument("--report-only", action="store_true", help="train nothing; report what is done")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines from the runs")
    args = p.parse_args(argv)
    for name in ("models", "losses", "seeds"):
        values = getattr(args, name)
        if len(set(values)) != len(values):
            p.error(f"--{name} must be distinct, got {values}")
    if REFERENCE not in args.losses:
        p.error(f"--losses must include {REFERENCE}, the reference of the paired differences")
    if args.jobs < 1 or (args.max_runs is not None and args.max_runs < 0):
        p.error("--jobs must be >= 1 and --max-runs >= 0")
    for flag in (*SET_BY_THE_ABLATION, "--resume"):
        if any(a == flag or a.startswith(flag + "=") for a in extra):
            p.error(f"{flag} is set by the ablation itself; do not pass it after --")
    return args, extra


def grid(args: argparse.Namespace) -> list[Cell]:
    """Every cell, seed by seed, so that an ablation stopped early covers every setting."""
    return [Cell(m, loss, s) for s in args.seeds for m in args.models for loss in args.losses]


def run_argv(args: argparse.Namespace, extra: list[str], cell: Cell, resume: bool) -> list[str]:
    """The ``challenge.py`` options of ``cell``."""
    argv = ["--model", cell.model, *loss_options(cell.loss), "--seed", str(cell.seed)]
    argv += ["--output", str(cell.folder(args.output)), *extra]
    if args.data is not None:
        argv += ["--data", str(args.data)]
    if resume:
        argv.append("--resume")
    return [*argv, "--quiet"] if args.quiet or args.jobs > 1 else argv


def expected_config(args: argparse.Namespace, extra: list[str], cell: Cell) -> dict[str, Any]:
    """What ``challenge.py`` would record as the run's options (compared as it compares them)."""
    config = challenge.run_config(challenge.parse_args(run_argv(args, extra, cell, False)))
    return used_config(config)


def finished(
    args: argparse.Namespace, extra: list[str], cell: Cell, fingerprint: str
) -> dict[str, Any] | None:
    """The run's metrics.json if it is done; SystemExit if it was made differently.

    A run made with a smaller ``--epochs`` or ``--patience`` is not done: :func:`train` resumes
    it with the larger values (``challenge.py --resume``), which goes on from its last epoch.
    """
    path = cell.folder(args.output) / METRICS
    if not path.is_file():
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    made, wanted = used_config(result["config"]), expected_config(args, extra, cell)
    made.pop("history_len", None)
    grown = False
    for key in sorted(set(made) | set(wanted)):
        if key in RESUMABLE and made.get(key, 0) < wanted.get(key, 0):
            grown = True
        elif made.get(key) != wanted.get(key):
            raise SystemExit(
                f"error: {path} was made with {key}={made.get(key)!r}, not {wanted.get(key)!r}: "
                "remove that run or choose another --output"
            )
    if result["data"]["fingerprint"] != fingerprint:
        raise SystemExit(f"error: {path} was made from other data files than {args.data}")
    return None if grown else result


def train(args: argparse.Namespace, extra: list[str], cell: Cell) -> None:
    """Train ``cell`` in its own process (resuming its partial run if there is one)."""
    folder = cell.folder(args.output)
    partial = atomic.RunDirectory(folder, OUTPUTS).find(CHECKPOINT)
    argv = run_argv(args, extra, cell, resume=partial is not None)
    env = dict(os.environ)
    if args.jobs > 1:  # the cores are shared between the runs
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
    sys.stdout.write(f"== {cell.model}, {cell.loss}, seed {cell.seed}\n")  # one write: threads
    sys.stdout.flush()
    script = str(Path(__file__).resolve().parent / "challenge.py")
    done = subprocess.run([sys.executable, script, *argv], env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: the run {folder} failed (see its message above)")


# -------------------------------------------------------------------------------------------------
# Report: paired differences to BCE with 95% confidence intervals
# -------------------------------------------------------------------------------------------------


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% confidence interval (Student's t; inf for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.inf
    df = len(values) - 1
    t = T95[df - 1] if df <= len(T95) else 1.96
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def summarize(runs: dict[str, dict[str, dict[int, dict[str, Any]]]]) -> dict[str, Any]:
    """Per model and loss: mean best mAP@3, the paired difference to BCE, epochs, seconds."""
    table: dict[str, Any] = {}
    for model, by_loss in runs.items():
        reference = by_loss.get(REFERENCE, {})
        rows = {}
        for loss, by_seed in by_loss.items():
            if not by_seed:
                continue
            results = list(by_seed.values())
            best = [r["best_val_map3"] for r in results]
            paired = [
                r["best_val_map3"] - reference[s]["best_val_map3"]
                for s, r in by_seed.items()
                if s in reference
            ]
            diff: float | None = None
            half: float | None = None
            if paired and loss != REFERENCE:
                diff, half = ci95(paired)
                half = half if math.isfinite(half) else None  # one seed: no interval
            rows[loss] = {
                "seeds": sorted(by_seed),
                "map": statistics.fmean(best),
                "map_std": statistics.stdev(best) if len(best) > 1 else 0.0,
                "vs_bce": diff,
                "vs_bce_ci95": half,
                "vs_bce_seeds": len(paired),
                "best_epoch": statistics.fmean(float(r["best_epoch"]) for r in results),
                "epochs_run": statistics.fmean(float(len(r["epochs"])) for r in results),
                "epoch_s": statistics.fmean(
                    r["timings_s"]["training"] / len(r["epochs"]) for r in results
                ),
                "hit_epoch_cap": sum(r["best_epoch"] == r["config"]["epochs"] for r in results),
            }
        table[model] = rows
    return table


def answer(model: str, rows: dict[str, Any]) -> str:
    """One sentence: does a focal setting beat BCE on ``model``, and how sure is that?"""
    focal = {
        k: v for k, v in rows.items() if k.startswith("focal") and v["vs_bce_ci95"] is not None
    }
    if not focal:
        return f"{model}: not enough paired runs yet (2 seeds of BCE and a focal setting)."
    best = max(focal, key=lambda k: focal[k]["vs_bce"])
    d, h, n = focal[best]["vs_bce"], focal[best]["vs_bce_ci95"], focal[best]["vs_bce_seeds"]
    interval = f"{d:+.4f} mAP@3 (95% CI {d - h:+.4f} to {d + h:+.4f}, {n} seeds)"
    if d - h > 0:
        return f"{model}: focal loss helps: {best} beats BCE by {interval}."
    if all(v["vs_bce"] + v["vs_bce_ci95"] < 0 for v in focal.values()):
        return (
            f"{model}: every focal setting tried is worse than BCE; the closest, {best}, "
            f"differs by {interval}."
        )
    return (
        f"{model}: no focal setting tried beats BCE beyond the noise between seeds; the best, "
        f"{best}, differs by {interval}."
    )


def markdown(data: dict[str, Any]) -> str:
    """The report of ``ablation.json``'s content: a table and an answer per model."""
    lines: list[str] = []
    for model, rows in data["summary"].items():
        lines += [
            f"**{model}**",
            "",
            "| loss | seeds | best validation mAP@3 | vs BCE, paired (95% CI) "
            "| best epoch | s / epoch |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for loss, r in rows.items():
            paired = ""
            if r["vs_bce"] is not None:
                half = r["vs_bce_ci95"]
                paired = f"{r['vs_bce']:+.4f}" + ("" if half is None else f" ± {half:.4f}")
            lines.append(
                f"| {loss} | {len(r['seeds'])} | {r['map']:.4f} ± {r['map_std']:.4f} | {paired} "
                f"| {r['best_epoch']:.1f} | {r['epoch_s']:.0f} |"
            )
        lines += ["", answer(model, rows), ""]
    capped = sum(r["hit_epoch_cap"] for rows in data["summary"].values() for r in rows.values())
    lines.append(
        f"{data['finished']} of {data['planned']} planned runs are done"
        + (f"; {capped} reached their best at the last epoch allowed" if capped else "")
        + "."
    )
    if data["missing"]:
        lines.append(f"The rest: `{data['command']}`")
    return "\n".join(lines) + "\n"


def plot(path: Path, data: dict[str, Any]) -> None:
    """Each loss's paired difference to BCE with its 95% interval, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = data["summary"]
    fig, axes = plt.subplots(
        1, len(summary), figsize=(5 * len(summary), 4), squeeze=False, constrained_layout=True
    )
    for ax, (model, rows) in zip(axes[0], summary.items(), strict=True):
        names = [k for k, r in rows.items() if r["vs_bce"] is not None]
        means = [rows[k]["vs_bce"] for k in names]
        halves = [rows[k]["vs_bce_ci95"] or 0.0 for k in names]
        ax.errorbar(means, range(len(names)), xerr=halves, fmt="o", capsize=4)
        ax.axvline(0.0, color="gray", linewidth=1)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set(xlabel="validation mAP@3 minus BCE's (paired, 95% CI)", title=model)
        ax.grid(True, axis="x", alpha=0.3)
    png = _png(fig)
    plt.close(fig)
    atomic.write_bytes(path, png)


def _png(fig: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    cells = grid(args)
    for cell in cells:  # a bad option fails now, not after hours of other runs
        challenge.parse_args(run_argv(args, extra, cell, False))
    data_args = challenge.parse_args(run_argv(args, extra, cells[0], False))
    try:
        fingerprint = challenge.load_data(data_args)[1]
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    todo = [c for c in cells if finished(args, extra, c, fingerprint) is None]
    if not args.report_only:
        args.output.mkdir(parents=True, exist_ok=True)
        now = todo if args.max_runs is None else todo[: args.max_runs]
        with ThreadPoolExecutor(args.jobs) as pool:
            for job in [pool.submit(train, args, extra, cell) for cell in now]:
                job.result()
    runs: dict[str, dict[str, dict[int, dict[str, Any]]]] = {
        m: {loss: {} for loss in args.losses} for m in args.models
    }
    missing = []
    for cell in cells:
        result = finished(args, extra, cell, fingerprint)
        if result is None:
            missing.append(cell)
        else:
            runs[cell.model][cell.loss][cell.seed] = result
    command = "python examples/ablation.py " + " ".join(
        (["--data", str(args.data)] if args.data else [])
        + ["--output", str(args.output), "--models", *args.models, "--losses", *args.losses]
        + ["--seeds", *map(str, args.seeds)]
        + (["--", *extra] if extra else [])
    )
    data = {
        "command": command,
        "planned": len(cells),
        "finished": len(cells) - len(missing),
        "missing": [vars(c) for c in missing],
        "summary": summarize(runs),
        "runs": {m: {k: list(v.values()) for k, v in by.items()} for m, by in runs.items()},
    }
    if data["finished"] == 0:
        print("no run is finished yet: nothing to report")
        return 0
    text = markdown(data)
    args.output.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.output / "ablation.md", text)
    atomic.save_json(args.output / "ablation.json", data)
    plot(args.output / "ablation.png", data)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
