"""Smoke test of benchmarks/bench_topk.py at a tiny size (no timing is checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_benchmark


def test_quick_run_writes_a_consistent_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("bench_topk")
    out = tmp_path / "report.json"
    # Blocks of 16 x 4,096 scores over 20,000 items: 5 item chunks (the last one shorter).
    bench.main(
        [
            "--quick",
            "--no-memory",
            "--repeats",
            "1",
            "--chunk-size",
            "16",
            "4096",
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    cfg, results = report["config"], report["results"]
    assert (cfg["queries"], cfg["items"], cfg["block_rows"], cfg["block_items"]) == (
        64,
        20_000,
        16,
        4096,
    )
    assert list(results) == [
        bench.BASELINE,
        bench.OURS,
        bench.BASELINE + ", exclude",
        bench.OURS + ", exclude",
        bench.FULL,
    ]
    for name, row in results.items():
        assert row["median_s"] > 0, name
        assert row["baseline"] in results
    assert results[bench.BASELINE]["ratio_to_baseline"] == 1.0
    # Random float scores have no ties: every method gives the same lists.
    assert report["checks"] == {
        "rows identical to the obvious way's": 1.0,
        "rows identical to full materialization's": 1.0,
    }
    assert bench.OURS in capsys.readouterr().out


def test_the_obvious_way_agrees_without_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from focalrec import topk_items

    bench = load_benchmark("bench_topk")
    gen = torch.Generator().manual_seed(0)
    queries, items = torch.randn(9, 4, generator=gen), torch.randn(50, 4, generator=gen)
    bias = torch.randn(50, generator=gen)
    exclude = torch.randint(-1, 50, (9, 6), generator=gen)
    got = bench.chunked_topk(queries, items, bias, 3, exclude, chunk_size=(2, 7))
    assert torch.equal(got, topk_items(queries @ items.T + bias, 3, exclude=exclude))


def test_memory_child_reports_bytes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_benchmark("bench_topk")
    bench.main(["--quick", "--memory-child", bench.OURS])
    assert json.loads(capsys.readouterr().out)["extra_bytes"] >= 0
