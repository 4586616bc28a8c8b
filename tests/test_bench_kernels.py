"""Smoke test of benchmarks/bench_kernels.py at a tiny size (no timing is checked)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import load_benchmark
from focalrec._focal import native, prebuilt


@pytest.mark.skipif(
    sys.platform == "win32" or prebuilt._unix_compiler() is None,
    reason="the benchmark builds the variants and the run-time kernel with GCC or clang",
)
def test_quick_run_times_every_runnable_variant_and_the_run_time_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("bench_kernels")
    out = tmp_path / "report.json"
    served_before = native.load()
    bench.main(["--quick", "--repeats", "1", "--threads", "1", "--json", str(out)])
    assert native.load() is served_before  # the loss's own kernel is left as it was
    report = json.loads(out.read_text())
    assert report["config"]["threads"] == 1
    rows = {(r["kernel"], r["targets"]): r for r in report["results"]}
    kernels = {kernel for kernel, _ in rows} - {"bce_with_logits"}
    assert "run-time (-march=native)" in kernels
    assert "prebuilt baseline" in kernels
    for form in ("index", "dense"):
        assert rows[("run-time (-march=native)", form)]["vs_run_time_build"] == 1.0
        assert rows[("run-time (-march=native)", form)]["cpu_vs_run_time_build"] == 1.0
    for (kernel, _), row in rows.items():
        assert row["wall_ms"] > 0, kernel
    assert rows[("bce_with_logits", "dense")]["vs_run_time_build"] is None
    assert "x run-time" in capsys.readouterr().out
