"""docs/scripts/movielens_runs.py: runs of examples/movielens.py per loss and seed, resumed, and
their summary (means, intervals, equal steps) against the runs' own metrics."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO_ROOT
from test_movielens import write_dataset


def _load() -> ModuleType:
    path = REPO_ROOT / "docs" / "scripts" / "movielens_runs.py"
    spec = importlib.util.spec_from_file_location("movielens_runs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_runs_resume_and_the_summary_is_the_runs(tmp_path: Path) -> None:
    runs = _load()
    data, work, out = tmp_path / "data", tmp_path / "work", tmp_path / "summary.json"
    write_dataset(data, users=120, test=False)
    argv = [
        "--data", str(data), "--work", str(work), "--losses", "bce", "gbce", "--seeds", "0", "1",
        "--max-minutes", "0.005", "--jobs", "2", "--json", str(out),
    ]  # fmt: skip
    summary = runs.main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))
    stamps = {p: p.stat().st_mtime_ns for p in work.glob("*/metrics.json")}
    assert len(stamps) == 4
    runs.main(argv)  # every run is done: nothing runs again
    assert {p: p.stat().st_mtime_ns for p in work.glob("*/metrics.json")} == stamps
    for loss in ("bce", "gbce"):
        metrics = [json.loads((work / f"{loss}-s{s}" / "metrics.json").read_text()) for s in (0, 1)]
        best = [m["best"]["val"]["ndcg@10"] for m in metrics]
        row = summary["losses"][loss]
        assert [r["ndcg@10"] for r in row["runs"]] == best
        assert row["ndcg@10"]["mean"] == pytest.approx(statistics.fmean(best))
        half = 12.706 * statistics.stdev(best) / math.sqrt(2)  # t(0.975, 1 degree of freedom)
        assert row["ndcg@10"]["half_width"] == pytest.approx(half)
        assert [r["steps_to_best"] for r in row["runs"]] == [m["best"]["steps"] for m in metrics]
    for r in summary["equal_steps"]:
        metrics = {
            loss: json.loads((work / f"{loss}-s{r['seed']}" / "metrics.json").read_text())
            for loss in ("bce", "gbce")
        }
        for loss, m in metrics.items():
            epoch = m["epochs"][r["epoch"] - 1]
            assert r[loss] == epoch["val"]["ndcg@10"]
            assert r["steps"][loss] == epoch["steps"]


def test_one_seed_has_no_interval() -> None:
    runs = _load()
    assert runs.interval([0.5]) == {"mean": 0.5, "half_width": None}
    got = runs.interval([1.0, 2.0, 3.0])
    assert got["mean"] == 2.0
    assert got["half_width"] == pytest.approx(4.303 * 1.0 / math.sqrt(3))
