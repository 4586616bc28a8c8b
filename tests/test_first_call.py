"""The first call in a fresh process costs what a warm call does: no compiler machinery.

Calling a ``torch.library`` operator in eager mode imports ``torch._dynamo`` (about a second and
over 100 MB in a fresh process); plain eager calls of the loss run its implementation directly.
These are behavioural checks in fresh processes, not timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import REPO_ROOT

FIRST_CALLS = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import focalrec

    seen = {}
    x = torch.randn(4, 5, requires_grad=True)
    t = torch.tensor([[0, 2], [1, -1], [4, 3], [-1, -1]])
    loss = focalrec.sigmoid_focal_loss(x, t)
    seen["forward"] = "torch._dynamo" in sys.modules
    loss.backward()
    seen["backward"] = "torch._dynamo" in sys.modules
    focalrec.FocalLoss(reduction="none")(x.double(), torch.rand(4, 5).double()).sum().backward()
    (g,) = torch.autograd.grad(focalrec.sigmoid_focal_loss(x, t), x, create_graph=True)
    g.sum().backward()
    seen["float64, dense, second derivative"] = "torch._dynamo" in sys.modules
    os.environ["FOCALREC_BACKEND"] = "torch"
    focalrec.sigmoid_focal_loss(x, t).backward()
    seen["torch backend"] = "torch._dynamo" in sys.modules
    print(json.dumps(seen))
    """
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FOCALREC_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_eager_calls_do_not_import_dynamo() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FIRST_CALLS],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == dict.fromkeys(seen, False), seen
    assert len(seen) == 4


def test_first_call_benchmark_reports(tmp_path: Path) -> None:
    out = tmp_path / "first_call.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "bench_first_call.py"),
            "--repeats",
            "1",
            "--warm-calls",
            "1",
            "--json",
            str(out),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["shape"] == [4, 5]
    assert summary["dynamo_imported"] == 0
    assert summary["first_call_s"] > 0
    assert summary["warm_call_s"] > 0
    assert len(summary["runs"]) == 1
