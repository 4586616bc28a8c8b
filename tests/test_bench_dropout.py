"""Smoke test of benchmarks/bench_dropout.py at a tiny size (no timing is checked)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_benchmark


def test_quick_run_writes_a_consistent_report(tmp_path: Path) -> None:
    bench = load_benchmark("bench_dropout")
    out = tmp_path / "report.json"
    bench.main(["--quick", "--repeats", "2", "--threads", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    assert set(report["ms_per_step"]) == {"focalrec_dropout", "torch_dropout", "no_dropout"}
    assert all(len(t) == 2 for t in report["times_s"].values())
    assert report["ratio_to_torch_dropout"] > 0
    assert report["environment"]["dropout"] == 0.2


def test_the_copies_differ_only_in_their_dropout_layers() -> None:
    import torch
    from torch import nn

    from focalrec.models import SequenceTransformer

    bench = load_benchmark("bench_dropout")
    model = SequenceTransformer(10, 4, embedding_dim=8, num_heads=2, dropout=0.3)
    copy = bench.with_dropout(model, nn.Dropout)
    kinds = {type(m) for m in copy.modules() if isinstance(m, nn.Dropout)}
    assert kinds == {nn.Dropout}
    history = torch.tensor([[1, 2, -1, 3]])
    assert torch.equal(model.eval()(history), copy.eval()(history))
