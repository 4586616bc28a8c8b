"""Smoke test of benchmarks/bench_family.py at a tiny size (no timing is checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_benchmark


def test_quick_run_writes_a_consistent_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("bench_family")
    out = tmp_path / "report.json"
    bench.main(["--quick", "--no-memory", "--threads", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == set(bench.CASES)
    assert results["bce_with_logits"]["vs_bce"] == 1.0
    # every ASL agrees with the float64 formula (timm's eps clamps do not act at these logits)
    for name in bench.CASES[1:]:
        assert results[name]["rel_diff_vs_float64"] < 1e-5, name
    assert "focalrec_asl_index is" in capsys.readouterr().out


def test_the_timm_formulas_agree_with_each_other_in_value_and_gradient() -> None:
    import torch

    bench = load_benchmark("bench_family")
    x, _, dense = bench.make_inputs(8, 50, 3, seed=1)
    grads = []
    values = []
    for fn in (bench.timm_multilabel, bench.timm_optimized):
        xs = x.double().requires_grad_()
        loss = fn(xs, dense.double())
        loss.backward()
        values.append(loss.detach())
        grads.append(xs.grad)
    torch.testing.assert_close(values[0], values[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-15)
    assert abs(float(values[0]) - bench.reference_value(x, dense)) < 1e-9 * abs(float(values[0]))
