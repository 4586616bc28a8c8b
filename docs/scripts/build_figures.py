"""Regenerate every number and figure of the documentation site, in one command.

Runs the repository's own scripts (the benchmarks, the worked example, the docs' experiments),
each writing JSON (or captured text) into ``docs/generated/``, records how and where each was made
in ``docs/generated/provenance.json``, then renders the Markdown tables and PNG figures the pages
include (``docs/scripts/render.py``)::

    python docs/scripts/build_figures.py                # everything (tens of minutes on 2 cores)
    python docs/scripts/build_figures.py --only prior_curves bench_focal
    python docs/scripts/build_figures.py --list

Resumable steps (the loss ablation) keep their work in ``--work`` (default ``.figures-work/``), so
a stopped build goes on where it stopped.

The scripts import the ``focalrec`` of this checkout (``src/`` first on ``PYTHONPATH``). The
worked example's artifacts need the real challenge data (``--data``, by default
``../shared/data/av-challenge`` beside the clone); without it they are skipped and say so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "docs" / "generated"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "av-challenge"
DEFAULT_ML_DATA = ROOT.parent / "shared" / "data" / "ml-1m"


@dataclass(frozen=True)
class Step:
    """One artifact: the command that makes it and the file under ``docs/generated/`` it fills."""

    name: str
    argv: tuple[str, ...]
    output: str
    needs_data: bool = False
    needs_ml_data: bool = False
    needs_gpu: bool = False
    capture_stdout: bool = False
    copy_from: str | None = None  # a file the command writes (under {tmp} unless it names {work})
    timeout_s: int = 3600
    env: dict[str, str] = field(default_factory=dict)


STEPS: tuple[Step, ...] = (
    Step(
        "training_loop",
        ("docs/snippets/training_loop.py",),
        "training_loop.txt",
        capture_stdout=True,
    ),
    Step(
        "prior_bias",
        ("docs/snippets/prior_bias.py",),
        "prior_bias.txt",
        capture_stdout=True,
    ),
    Step(
        "metrics_conventions",
        ("docs/snippets/metrics_conventions.py",),
        "metrics_conventions.txt",
        capture_stdout=True,
    ),
    Step(
        "loss_conventions",
        ("docs/snippets/loss_conventions.py",),
        "loss_conventions.txt",
        capture_stdout=True,
    ),
    Step(
        "metrics_streaming",
        ("docs/snippets/metrics_streaming.py",),
        "metrics_streaming.txt",
        capture_stdout=True,
    ),
    Step(
        "metrics_torchmetrics",
        ("docs/snippets/metrics_torchmetrics.py",),
        "metrics_torchmetrics.txt",
        capture_stdout=True,
    ),
    Step(
        "prior_curves",
        ("docs/scripts/prior_curves.py", "--json", "{out}"),
        "prior_curves.json",
    ),
    Step(
        "bench_focal",
        ("benchmarks/bench_focal.py", "--json", "{out}"),
        "bench_focal.json",
        env={"OMP_NUM_THREADS": "1"},
    ),
    Step(
        # At a million items only the fused loss: the unfused losses do not fit in memory, and
        # the chunked linear_cross_entropy did not finish one call in 50 minutes on a loaded core.
        "bench_linear",
        (
            "benchmarks/bench_linear.py",
            "--threads",
            "1",
            "--repeats",
            "3",
            "--large-repeats",
            "1",
            "--large-only",
            "fused",
            "--json",
            "{out}",
        ),
        "bench_linear.json",
        timeout_s=6 * 3600,
    ),
    Step(
        # The fused layer in a compiled training step against the same step run eagerly.
        "bench_linear_compile",
        (
            "benchmarks/bench_linear_compile.py",
            "--threads",
            "1",
            "--repeats",
            "15",
            "--json",
            "{out}",
        ),
        "bench_linear_compile.json",
    ),
    Step(
        # A SequenceTransformer training step with focalrec's dropout against nn.Dropout's.
        "bench_dropout",
        ("benchmarks/bench_dropout.py", "--json", "{out}"),
        "bench_dropout.json",
    ),
    Step(
        # ASL against BCE-with-logits and timm's two ASL classes, 4096 x 5501, 2 threads.
        "bench_family",
        ("benchmarks/bench_family.py", "--json", "{out}"),
        "bench_family.json",
    ),
    Step(
        # The sampled fused layer (k = 256) against the full one, N = 512, d = 64.
        "bench_sampled",
        ("benchmarks/bench_sampled.py", "--threads", "1", "--repeats", "3", "--json", "{out}"),
        "bench_sampled.json",
    ),
    Step(
        # The same with glibc keeping freed memory for reuse (no page faults per step).
        "bench_sampled_reuse",
        ("benchmarks/bench_sampled.py", "--threads", "1", "--repeats", "3", "--json", "{out}"),
        "bench_sampled_reuse.json",
        env={"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "17179869184"},
    ),
    Step(
        "bench_metrics",
        ("benchmarks/bench_metrics.py", "--threads", "1", "--json", "{out}"),
        "bench_metrics.json",
    ),
    Step(
        "bench_gpu",
        ("benchmarks/bench_gpu.py", "--json", "{out}"),
        "bench_gpu.json",
        needs_gpu=True,
        timeout_s=1200,
    ),
    Step(
        # 512 queries over the full catalogue: the 39,732 take 78 times as long.
        "bench_topk",
        ("benchmarks/bench_topk.py", "--queries", "512", "--json", "{out}"),
        "bench_topk.json",
    ),
    Step(
        "challenge_synthetic",
        ("examples/challenge.py", "--output", "{tmp}/run", "--quiet"),
        "challenge_synthetic.json",
        copy_from="run/metrics.json",
        env={"OMP_NUM_THREADS": "1"},
    ),
    Step(
        # The default run, to its early-stopping best (about 10 minutes on 2 quiet cores since it
        # trains every position), on every core: the page states its seconds per epoch and in all.
        "challenge",
        ("examples/challenge.py", "--data", "{data}", "--output", "{tmp}/run", "--quiet"),
        "challenge.json",
        needs_data=True,
        copy_from="run/metrics.json",
    ),
    Step(
        # A subset of examples/ablation.py's default grid, each run capped at 4 epochs: the whole
        # grid (2 models x 11 losses x 3 seeds, each to its early-stopping best) is about 13
        # CPU-hours here. BCE and softmax are the references; focal loss with gamma 0.5 and no
        # alpha is the mildest setting, gamma 2 with alpha 0.25 the write-up's. Resumable: runs
        # finished in WORK/ablation are kept; the page gives the command for the rest.
        "ablation",
        (
            "examples/ablation.py",
            "--data",
            "{data}",
            "--output",
            "{work}/ablation",
            "--quiet",
            "--jobs",
            "2",
            "--models",
            "gru",
            "mlp",
            "--losses",
            "bce",
            "softmax",
            "focal-g0.5-anone",
            "focal-g2-a0.25",
            "--",
            "--epochs",
            "4",
        ),
        "ablation.json",
        needs_data=True,
        copy_from="{work}/ablation/ablation.json",
        timeout_s=6 * 3600,
        env={"OMP_NUM_THREADS": "1"},
    ),
    Step(
        # The default run with --max-minutes 25, on every core: the page states its steps and
        # seconds to the best epoch.
        "movielens_default",
        (
            "examples/movielens.py",
            "--data",
            "{ml_data}",
            "--output",
            "{tmp}/run",
            "--max-minutes",
            "25",
            "--quiet",
        ),
        "movielens_default.json",
        needs_ml_data=True,
        copy_from="run/metrics.json",
    ),
    Step(
        # Every loss of examples/movielens.py, 3 seeds, 10 minutes of training each, two runs at
        # a time on one thread each (about 70 minutes on 2 cores). Resumable: the runs finished
        # in WORK/movielens are kept.
        "movielens",
        (
            "docs/scripts/movielens_runs.py",
            "--data",
            "{ml_data}",
            "--work",
            "{work}/movielens",
            "--max-minutes",
            "10",
            "--jobs",
            "2",
            "--threads",
            "1",
            "--json",
            "{out}",
        ),
        "movielens.json",
        needs_ml_data=True,
        timeout_s=4 * 3600,
    ),
    Step(
        "focal_comparison",
        ("docs/scripts/focal_comparison.py", "--json", "{out}"),
        "focal_comparison.json",
    ),
)


def machine() -> dict[str, object]:
    """The machine a measurement ran on, as the pages state it."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "load_average_1min": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def git_commit() -> str:
    """The checkout's commit, with ``+dirty`` when tracked files other than the generated ones
    (``docs/generated/``, which a build rewrites step by step) differ from it."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/generated")
    return commit + ("+dirty" if changed else "")


def run_step(step: Step, data: Path, work: Path, ml_data: Path) -> dict[str, object] | None:
    """Run one step; return its provenance record, or ``None`` when it was skipped."""
    if step.needs_data and not (data / "train.csv").is_file():
        print(f"[{step.name}] skipped: no challenge data at {data} (pass --data DIR)")
        return None
    if step.needs_ml_data and not (ml_data / "train" / "input.txt").is_file():
        print(f"[{step.name}] skipped: no MovieLens-1M split at {ml_data} (pass --ml-data DIR)")
        return None
    if step.needs_gpu and not _has_cuda():
        print(f"[{step.name}] skipped: no CUDA GPU here (benchmarks/gpu.sh on a GPU makes it)")
        return None
    target = GENERATED / step.output
    commit = git_commit()  # the code that runs, before anything is written
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / step.output
        argv = [
            a.format(
                out=out,
                tmp=tmp,
                work=work,
                data=_shown_path(data),
                ml_data=_shown_path(ml_data),
                python=sys.executable,
            )
            for a in step.argv
        ]
        command = [sys.executable, *argv]
        env = {**os.environ, **step.env, "MPLBACKEND": "Agg"}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
        )
        print(f"[{step.name}] {' '.join(command)}", flush=True)
        start = time.perf_counter()
        result = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            check=True,
            timeout=step.timeout_s,
            stdout=subprocess.PIPE if step.capture_stdout else None,
            text=True,
        )
        seconds = time.perf_counter() - start
        if step.capture_stdout:
            out.write_text(result.stdout, encoding="utf-8")
        elif step.copy_from is not None:
            shutil.copyfile(Path(tmp) / step.copy_from.format(work=work), out)
        GENERATED.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), target)
    shown = [
        a.format(
            out=f"docs/generated/{step.output}",
            tmp="OUT",
            work="WORK",
            data=_shown_path(data),
            ml_data=_shown_path(ml_data),
            python="python",
        )
        for a in step.argv
    ]
    env_shown = "".join(f"{k}={v} " for k, v in sorted(step.env.items()))
    return {
        "command": env_shown + "python " + " ".join(shown),
        "finished_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(seconds, 1),
        "commit": commit,
        "machine": machine(),
    }


def record_provenance(name: str, record: dict[str, object]) -> None:
    """Store one step's record in provenance.json, re-reading the file so others' records stay."""
    path = GENERATED / "provenance.json"
    provenance = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    provenance[name] = record
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(provenance, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _shown_path(path: Path) -> str:
    try:
        return os.path.relpath(path, ROOT)
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these steps")
    parser.add_argument("--list", action="store_true", help="list the steps and exit")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="challenge data folder")
    parser.add_argument(
        "--ml-data", type=Path, default=DEFAULT_ML_DATA, help="MovieLens-1M split (gSASRec's)"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=ROOT / ".figures-work",
        help="folder kept between calls for resumable steps (the ablation's runs)",
    )
    parser.add_argument("--no-render", action="store_true", help="skip rendering tables/figures")
    args = parser.parse_args()
    if args.list:
        for step in STEPS:
            print(f"{step.name:20s} python {' '.join(step.argv)}")
        return
    names = {s.name for s in STEPS}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        parser.error(f"--only: unknown step(s) {unknown}; choose from {sorted(names)}")
    for step in STEPS:
        if args.only and step.name not in args.only:
            continue
        record = run_step(step, args.data.resolve(), args.work.resolve(), args.ml_data.resolve())
        if record is not None:
            record_provenance(step.name, record)
    if not args.no_render:
        subprocess.run([sys.executable, str(ROOT / "docs" / "scripts" / "render.py")], check=True)


if __name__ == "__main__":
    main()
