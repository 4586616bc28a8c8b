"""Smoke test of benchmarks/bench_linear_compile.py at a tiny size (no timing is checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import load_benchmark


def test_quick_run_writes_a_consistent_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("bench_linear_compile")
    out = tmp_path / "report.json"
    torch._dynamo.reset()
    bench.main(["--quick", "--backend", "aot_eager", "--repeats", "3", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["config"]["items"] == 500
    assert report["config"]["backend"] == "aot_eager"
    for name in ("eager", "compiled"):
        assert len(report["times"][name]) == 3
        assert report[f"{name}_s"] > 0
        assert report[f"{name}_cpu_s"] >= 0
    assert report["ratio"] == pytest.approx(report["compiled_s"] / report["eager_s"])
    # The compiled step computes the eager one: the loss and every parameter's gradient.
    assert report["loss_rel_diff"] < 1e-6
    assert report["grad_rel_diff_max"] < 1e-5
    assert "compiled / eager" in capsys.readouterr().out
