"""Tests for examples/ablation.py: the aggregation over seeds and the written table."""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import ablation


def _run(best: float, best_epoch: int, seconds: list[float]) -> dict[str, Any]:
    return {
        "best_val_map3": best,
        "best_epoch": best_epoch,
        "epochs": [{"epoch": i + 1, "val_map3": best, "seconds": s} for i, s in enumerate(seconds)],
        "timings_s": {
            "training": sum(seconds),
            "training_to_best_epoch": sum(seconds[:best_epoch]),
        },
        "baselines_val_map3": {"transition": 0.1},
    }


RUNS = {
    "focal": [_run(0.20, 2, [10.0, 10.0, 10.0]), _run(0.22, 1, [12.0, 12.0])],
    "bce": [_run(0.18, 3, [5.0, 5.0, 5.0]), _run(0.21, 2, [6.0, 6.0, 6.0])],
}


def test_summary_is_mean_and_sample_std_over_seeds() -> None:
    table = ablation.summarize(RUNS)
    assert table["focal"]["map"] == pytest.approx(0.21)
    assert table["focal"]["map_std"] == pytest.approx(statistics.stdev([0.20, 0.22]))
    assert table["focal"]["seconds"] == pytest.approx((20.0 + 12.0) / 2)
    assert table["focal"]["epoch_s"] == pytest.approx((10.0 + 12.0) / 2)
    assert table["bce"]["epochs"] == pytest.approx(2.5)
    assert table["bce"]["seconds"] == pytest.approx((15.0 + 12.0) / 2)


def test_table_reports_paired_differences_and_the_command() -> None:
    text = ablation.markdown(ablation.summarize(RUNS), RUNS, "python examples/ablation.py")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line[:2] == "| "}
    assert "0.2100 +- 0.0141" in rows["focal"]
    # bce - focal per seed: -0.02 and -0.01.
    assert "-0.0150 +- 0.0071" in rows["bce"]
    assert "transition 0.1000" in text
    assert "Reproduce: `python examples/ablation.py`" in text


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--seeds", "1", "1"], r"--seeds must be distinct"),
        (["--", "--loss", "bce"], r"--loss is set by the ablation itself"),
        (["--", "--seed=3"], r"--seed is set by the ablation itself"),
    ],
)
def test_bad_options_exit_with_a_message(
    argv: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        ablation.parse_args(argv)
    assert exc.value.code == 2
    assert len(re.findall(match, capsys.readouterr().err)) == 1


def test_every_runs_options_are_checked_before_the_first_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--alpha applies to focal only: with bce among the losses, nothing runs."""
    out = tmp_path / "ablation"
    argv = ["--output", str(out), "--losses", "focal", "bce", "--", "--alpha", "0.5"]
    with pytest.raises(SystemExit) as exc:
        ablation.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: argument --alpha: applies to --loss focal only, not --loss bce\n"
    assert not out.exists()
