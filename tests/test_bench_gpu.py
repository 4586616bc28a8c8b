"""benchmarks/bench_gpu.py and benchmarks/gpu.sh, kept from rotting on machines without a GPU.

The driver's smoke mode (``--quick --device cpu``) runs every row at a tiny size on the CPU (its
timings are not GPU figures and are not checked); without a GPU the driver and the shell script
refuse with one line; the docs' renderer turns a report into tables and refuses a report that was
not measured on a GPU.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import focalrec
from conftest import REPO_ROOT, load_benchmark


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench_gpu") / "report.json"
    with focalrec.use_backend("auto"):
        driver = load_benchmark("bench_gpu")
        driver.main(
            ["--quick", "--device", "cpu", "--no-compile", "--repeats", "1", "--json", str(out)]
        )
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_smoke_run_writes_every_row(smoke_report: dict[str, Any]) -> None:
    assert smoke_report["environment"]["device"] == "cpu"
    cases = smoke_report["focal"]
    assert [(c["n"], c["c"], c["dtype"]) for c in cases] == [
        (64, 501, "float32"),
        (64, 501, "bfloat16"),
    ]
    for case in cases:
        rows = case["results"]
        assert set(rows) == {
            "clone",
            "bce_with_logits",
            "focalrec_index",
            "focalrec_dense",
            "torchvision_formula",
            "focalrec_kernel",
        }
        assert case["errors"] == {}
        assert rows["bce_with_logits"]["vs_bce"] == 1.0
        assert rows["clone"]["vs_clone_bandwidth"] == 1.0
        for name, row in rows.items():
            assert row["ms"] > 0, name
            assert row["vs_compiled"] is None  # --no-compile
            assert row["peak_extra_x_logits"] is None  # CUDA only
        # The focal rows compute the same loss (bfloat16 logits: the formula in bfloat16).
        tolerance = 1e-5 if case["dtype"] == "float32" else 2e-2
        for name in ("focalrec_dense", "torchvision_formula"):
            assert rows[name]["rel_diff_vs_focalrec"] < tolerance, name
    (maps,) = smoke_report["map_at_k"]
    assert (maps["n"], maps["c"], maps["k"]) == (97, 501, 3)
    assert maps["results"]["torch_topk"]["vs_topk"] == 1.0
    assert set(maps["results"]) == {"torch_topk", "map_at_k", "map_at_k_no_validation"}


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_refuses_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = load_benchmark("bench_gpu")
    with pytest.raises(SystemExit) as exit_info:
        driver.main([])
    message = str(exit_info.value.code)
    assert "no CUDA GPU" in message
    assert "\n" not in message
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "benchmarks" / "gpu.sh")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "needs torch with a CUDA GPU" in done.stderr


def test_docs_render_a_gpu_report_and_refuse_a_cpu_one(smoke_report: dict[str, Any]) -> None:
    render = runpy.run_path(str(REPO_ROOT / "docs" / "scripts" / "render.py"))
    provenance = {
        "bench_gpu": {
            "command": "bash benchmarks/gpu.sh",
            "seconds": 1.0,
            "commit": "0" * 12,
            "finished_utc": "today",
            "machine": {"cpu": "cpu", "logical_cpus": 1, "os": "os", "python": "3", "torch": "2"},
        }
    }
    with pytest.raises(ValueError, match="not measured on a GPU"):
        render["bench_gpu_md"]("bench_gpu", smoke_report, provenance)
    # The renderer's code path, on the smoke report dressed as a GPU run (nothing is published).
    dressed = json.loads(json.dumps(smoke_report))
    dressed["environment"].update(device="cuda", gpu="a GPU", gpu_memory_gb=1.0)
    text = render["bench_gpu_md"]("bench_gpu", dressed, provenance)
    assert "Focal loss, logits 64 x 501 bfloat16" in text
    assert "/ clone's bandwidth" in text
    assert "`torch.topk(scores, k)` alone" in text


def test_generated_section_says_gpu_figures_are_not_measured_until_a_gpu_run_exists() -> None:
    generated = REPO_ROOT / "docs" / "generated"
    text = (generated / "bench_gpu.md").read_text(encoding="utf-8")
    if (generated / "bench_gpu.json").is_file():
        assert "not measured" not in text
    else:
        assert "GPU figures are not measured yet" in text
        assert "bash benchmarks/gpu.sh" in text
    assert '--8<-- "docs/generated/bench_gpu.md"' in (
        Path(REPO_ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    )
