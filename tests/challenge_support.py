"""Shared pieces of the tests of examples/challenge.py: tiny data, subprocess runs, tree digests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "examples" / "challenge.py"
if str(REPO_ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "examples"))

import synthetic  # noqa: E402

TINY = synthetic.SyntheticConfig(
    num_series=8, num_loose_items=12, num_train_users=150, num_test_users=20, seed=5
)
FAST = ["--model", "mlp", "--embedding-dim", "8", "--hidden-sizes", "32", "--batch-size", "128"]
OUTPUTS = ("metrics.json", "training_curve.png", "best_model.pt", "checkpoint.pt", "submission.csv")


def env() -> dict[str, str]:
    """The environment of a subprocess: this checkout's ``src`` first, one thread."""
    paths = [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "OMP_NUM_THREADS": "1",
    }


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python examples/challenge.py ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def tree(root: Path) -> dict[str, str]:
    """Every folder and file under ``root`` (hidden ones included): path -> SHA-256 of its bytes."""
    found = {}
    for folder, _, files in os.walk(root):
        found[os.path.relpath(folder, root) + "/"] = "folder"
        for name in files:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found
