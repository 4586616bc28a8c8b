"""Smoke test of benchmarks/bench_linear.py at a tiny size (no timing is checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_benchmark


def test_quick_run_writes_a_consistent_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("bench_linear")
    out = tmp_path / "report.json"
    bench.main(["--quick", "--no-memory", "--repeats", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert [size["c"] for size in report["sizes"]] == [501, 3001]
    for size in report["sizes"]:
        results = size["results"]
        assert set(results) == set(bench.implementations(bench.parse_args(["--quick"])))
        assert results["unfused_focal"]["wall_vs_unfused"] == 1.0
        for row in results.values():
            assert row["status"] == "measured"
            assert row["wall_ms"] > 0
        # The fused loss computes the unfused one: value and the three gradients.
        check = size["check_vs_unfused"]
        assert set(check) == {
            "loss_rel_diff",
            "grad_input_rel_diff",
            "grad_weight_rel_diff",
            "grad_bias_rel_diff",
        }
        assert max(check.values()) < 1e-5
        assert results["fused"]["loss"] == pytest.approx(results["unfused_focal"]["loss"])
    assert "linear_cross_entropy" in capsys.readouterr().out


def test_what_does_not_fit_is_not_run_and_says_so(tmp_path: Path) -> None:
    bench = load_benchmark("bench_linear")
    out = tmp_path / "report.json"
    # 1 MiB: the fused loss fits (a 32 x 256 chunk and the gradients), logits-sized losses do not.
    argv = ["--quick", "--no-memory", "--repeats", "1", "--items", "3001"]
    bench.main(
        [*argv, "--only", "unfused_bce", "--memory-budget-gib", str(2**-10), "--json", str(out)]
    )
    (size,) = json.loads(out.read_text())["sizes"]
    results = size["results"]
    assert results["fused"]["status"] == "measured"
    assert size["unfused_memory_is_estimate"]
    for name in ("unfused_focal", "unfused_bce"):
        assert results[name] == {
            "status": "not run",
            "reason": "its estimated memory exceeds the budget",
            "estimated_peak_extra_mb": pytest.approx(
                bench.estimated_extra_bytes(name, 64, 16, 3001, (32, 256)) / 2**20
            ),
            "peak_extra_vs_unfused": None,
        }
    assert results["fused"]["wall_vs_unfused"] is None
    assert size["check_vs_unfused"] == {}
