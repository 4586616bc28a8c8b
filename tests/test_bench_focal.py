"""Smoke test of benchmarks/bench_focal.py at a tiny size (no timing is checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_benchmark


def test_quick_run_writes_a_consistent_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    only = [
        "focalrec_dense",
        "focalrec_bool",
        "focalrec_soft",
        "paper_formula",
        "torchvision_formula",
    ]  # fvcore, kornia: slow imports; the compiled formula: slow to compile
    args = ["--quick", "--no-memory", "--repeats", "1", "--only", *only, "--json", str(out)]
    load_benchmark("bench_focal").main(args)
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"bce_with_logits", "focalrec_index", *only}
    assert report["config"]["n"] == 64
    # Every focal implementation computes the loss of its targets on these moderate logits.
    for name, row in results.items():
        if name != "bce_with_logits":
            assert row["rel_diff_vs_float64"] < 1e-5, name
        assert row["wall_ms"] > 0
    assert results["focalrec_soft"]["targets"] == "soft"
    assert results["focalrec_soft"]["loss"] != results["focalrec_dense"]["loss"]
    assert results["bce_with_logits"]["rel_diff_vs_float64"] is None
    assert report["environment"]["focalrec_backend"] in ("native", "torch")
    assert results["bce_with_logits"]["wall_vs_bce"] == 1.0
    assert "focalrec_index" in capsys.readouterr().out
