"""Tests for examples/ablation.py: the grid, the paired statistics, the report, resuming."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import ablation
import synthetic
from challenge_support import TINY


def _run(best: float, best_epoch: int, seconds: list[float], epochs: int = 30) -> dict[str, Any]:
    return {
        "best_val_map3": best,
        "best_epoch": best_epoch,
        "config": {"epochs": epochs},
        "epochs": [{"epoch": i + 1, "val_map3": best, "seconds": s} for i, s in enumerate(seconds)],
        "timings_s": {
            "training": sum(seconds),
            "training_to_best_epoch": sum(seconds[:best_epoch]),
        },
    }


def _runs(bce: list[float], **others: list[float]) -> dict[str, dict[str, dict[int, Any]]]:
    by_loss = {"bce": {s: _run(v, 2, [5.0, 5.0, 5.0]) for s, v in enumerate(bce)}}
    for loss, values in others.items():
        by_loss[loss] = {s: _run(v, 3, [6.0] * 4) for s, v in enumerate(values)}
    return {"gru": by_loss}


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("softmax", ["--loss", "softmax"]),
        ("bce", ["--loss", "bce"]),
        ("focal-g2-a0.25", ["--loss", "focal", "--gamma", "2", "--alpha", "0.25"]),
        ("focal-g0.5-anone", ["--loss", "focal", "--gamma", "0.5", "--alpha", "none"]),
    ],
)
def test_loss_names_become_challenge_options(name: str, options: list[str]) -> None:
    assert ablation.loss_options(name) == options


def test_default_grid_is_eleven_losses_two_models_three_seeds_seed_by_seed() -> None:
    args, _ = ablation.parse_args([])
    cells = ablation.grid(args)
    assert len(ablation.LOSSES) == 11
    assert len(cells) == 11 * 2 * 3
    assert [c.seed for c in cells[:22]] == [0] * 22  # every setting at seed 0 first
    assert {c.loss for c in cells} == set(ablation.LOSSES)


def test_confidence_interval_is_students_t() -> None:
    mean, half = ablation.ci95([0.01, 0.03])
    assert mean == pytest.approx(0.02)
    assert half == pytest.approx(12.706 * statistics.stdev([0.01, 0.03]) / 2**0.5)
    mean, half = ablation.ci95([0.01, 0.02, 0.04])
    assert half == pytest.approx(4.303 * statistics.stdev([0.01, 0.02, 0.04]) / 3**0.5)
    assert ablation.ci95([0.5]) == (0.5, float("inf"))


def test_summary_pairs_by_seed() -> None:
    runs = _runs([0.20, 0.22, 0.21], **{"focal-g2-a0.25": [0.19, 0.20, 0.205]})
    row = ablation.summarize(runs)["gru"]["focal-g2-a0.25"]
    diffs = [-0.01, -0.02, -0.005]
    assert row["vs_bce"] == pytest.approx(statistics.fmean(diffs))
    assert row["vs_bce_ci95"] == pytest.approx(ablation.ci95(diffs)[1])
    assert row["vs_bce_seeds"] == 3
    assert row["best_epoch"] == 3.0
    assert row["epoch_s"] == pytest.approx(6.0)
    assert ablation.summarize(runs)["gru"]["bce"]["vs_bce"] is None


@pytest.mark.parametrize(
    ("focal", "expected"),
    [
        ([0.25, 0.27, 0.26], r"gru: focal loss helps: focal-x beats BCE by \+0\.0500"),
        ([0.10, 0.11, 0.12], r"gru: every focal setting tried is worse than BCE"),
        ([0.22, 0.20, 0.215], r"gru: no focal setting tried beats BCE beyond the noise"),
    ],
)
def test_the_answer_follows_the_intervals(focal: list[float], expected: str) -> None:
    runs = _runs([0.20, 0.22, 0.21], **{"focal-x": focal})
    summary = ablation.summarize(runs)["gru"]
    assert re.match(expected, ablation.answer("gru", summary))


def test_one_seed_gives_no_answer() -> None:
    summary = ablation.summarize(_runs([0.2], **{"focal-x": [0.3]}))["gru"]
    assert "not enough paired runs" in ablation.answer("gru", summary)


def test_report_lists_the_missing_runs_and_the_command() -> None:
    runs = _runs([0.20, 0.22], **{"focal-x": [0.19, 0.20]})
    data = {
        "command": "python examples/ablation.py --seeds 0 1 2",
        "planned": 6,
        "finished": 4,
        "missing": [{"model": "gru", "loss": "bce", "seed": 2}],
        "summary": ablation.summarize(runs),
    }
    text = ablation.markdown(data)
    assert "| focal-x | 2 | 0.1950 ± 0.0071 | -0.0150 ± " in text
    assert "4 of 6 planned runs are done" in text
    assert "The rest: `python examples/ablation.py --seeds 0 1 2`" in text


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--seeds", "1", "1"], r"--seeds must be distinct"),
        (["--losses", "focal-g2-a0.25"], r"--losses must include bce"),
        (["--losses", "bce", "focal-2"], r"expected softmax, bce or focal-g<gamma>-a<alpha"),
        (["--", "--loss", "bce"], r"--loss is set by the ablation itself"),
        (["--", "--alpha=0.5"], r"--alpha is set by the ablation itself"),
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
    """--momentum applies to sgd only: nothing runs, nothing is written."""
    out = tmp_path / "ablation"
    with pytest.raises(SystemExit) as exc:
        ablation.main(["--output", str(out), "--losses", "bce", "--", "--momentum", "0.5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (
        err
        == "error: argument --momentum: applies to --optimizer sgd only, not --optimizer adamw\n"
    )
    assert not out.exists()


@pytest.mark.slow
def test_runs_are_resumable_time_boxed_and_checked(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "ablation"
    synthetic.write_dataset(data, TINY)
    tiny = ["--", "--epochs", "1", "--embedding-dim", "4", "--hidden-sizes", "8"]
    grid = ["--data", str(data), "--output", str(out), "--models", "mlp"]
    grid += ["--losses", "bce", "focal-g2-a0.25", "--seeds", "0", "1", "--quiet"]
    # Time-boxed: 3 of the 4 runs, in grid order (both losses at seed 0 first).
    assert ablation.main([*grid, "--max-runs", "3", *tiny]) == 0
    report = json.loads((out / "ablation.json").read_text())
    assert report["finished"] == 3
    assert report["missing"] == [{"model": "mlp", "loss": "focal-g2-a0.25", "seed": 1}]
    assert "The rest: `python examples/ablation.py" in (out / "ablation.md").read_text()
    done = out / "runs" / "mlp" / "bce" / "seed0" / "metrics.json"
    before = done.stat().st_mtime_ns
    # The rest: a finished run is never redone.
    assert ablation.main([*grid, *tiny]) == 0
    assert done.stat().st_mtime_ns == before
    report = json.loads((out / "ablation.json").read_text())
    assert report["finished"] == 4
    assert report["summary"]["mlp"]["focal-g2-a0.25"]["vs_bce_seeds"] == 2
    # A finished run made with other options is not taken as this one.
    other = ["--", "--epochs", "1", "--embedding-dim", "5", "--hidden-sizes", "8"]
    with pytest.raises(SystemExit, match=r"was made with embedding_dim=4, not 5"):
        ablation.main([*grid, "--report-only", *other])
