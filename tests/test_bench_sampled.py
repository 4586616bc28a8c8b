"""Smoke test of benchmarks/bench_sampled.py at a tiny size (no timing is checked)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_benchmark


def test_quick_run_writes_a_consistent_report(tmp_path: Path) -> None:
    bench = load_benchmark("bench_sampled")
    out = tmp_path / "report.json"
    bench.main(["--quick", "--repeats", "1", "--threads", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert [size["c"] for size in report["sizes"]] == [2000, 20000]
    for size in report["sizes"]:
        for key in (
            "full_ms", "sampled_ms", "sampled_sparse_ms", "dense_gradient_ms", "speedup",
            "sparse_speedup",
        ):  # fmt: skip
            assert size[key] > 0
        assert set(size["times_s"]) == {"full", "sampled", "sampled_sparse", "dense_gradient"}
    check = report["check_vs_gathered"]
    assert set(check) == {
        "loss_abs_diff",
        "grad_input_abs_diff",
        "grad_weight_abs_diff",
        "grad_bias_abs_diff",
    }
    assert max(check.values()) < 1e-12
    assert report["environment"]["k"] == 16
