"""examples/challenge.py trained on every position (``--training positions``): the rows hold the
windows exactly, the loss is the windows' loss, a resumed or two-process run works as before."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import challenge
import synthetic
from challenge_data import load_challenge_data, position_windows, sliding_windows
from challenge_support import OUTPUTS, SCRIPT, TINY, env

GRU = ["--model", "gru", "--embedding-dim", "8", "--hidden-size", "16", "--batch-size", "64"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-data")
    synthetic.write_dataset(path, TINY)
    return path


def reference_windows(
    seqs: list[list[int]], history_len: int, horizon: int
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every (history, next items) window, from the definition: cut t = 1 .. n - 1, history the
    last L items before t, targets the next ``horizon`` items, both padded with -1."""
    found = []
    for s in seqs:
        for t in range(1, len(s)):
            history = s[max(0, t - history_len) : t]
            targets = s[t : t + horizon]
            found.append(
                (
                    tuple([-1] * (history_len - len(history)) + history),
                    tuple(targets + [-1] * (horizon - len(targets))),
                )
            )
    return sorted(found)


def row_windows(
    history: np.ndarray, targets: np.ndarray, mask: np.ndarray
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The windows that the rows stand for: each position in ``mask`` with its history (the row
    up to the position, left-padded) and its targets."""
    found = []
    length = history.shape[1]
    for row, target, keep in zip(history.tolist(), targets.tolist(), mask.tolist(), strict=True):
        for j in range(length):
            if keep[j]:
                window = [-1] * (length - 1 - j) + row[: j + 1]
                found.append((tuple(window), tuple(target[j])))
    return sorted(found)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 6), min_size=0, max_size=12), max_size=6),
    st.integers(1, 5),
    st.integers(1, 4),
)
def test_rows_hold_exactly_the_windows(seqs: list[list[int]], length: int, horizon: int) -> None:
    arrays = [np.array(s, dtype=np.int64) for s in seqs]
    history, targets, mask = position_windows(arrays, length, horizon)
    assert history.shape == mask.shape == (len(history), length)
    assert targets.shape == (len(history), length, horizon)
    assert (targets[~mask] == -1).all()  # a position outside the mask has no target
    assert (history[mask] >= 0).all()  # and every position in it holds an item
    for row in history.tolist():  # left-padded: the items, then nothing but items
        assert row == [-1] * row.count(-1) + [x for x in row if x != -1]
    want = reference_windows(seqs, length, horizon)
    assert row_windows(history, targets, mask) == want
    h, t = sliding_windows(arrays, length, horizon)
    assert sorted(zip(map(tuple, h.tolist()), map(tuple, t.tolist()), strict=True)) == want


def test_rows_start_where_a_validation_user_starts() -> None:
    """A user's first row holds their first L items, so each of its positions has the history
    that starts at the user's first item, as a validation user's has."""
    history, targets, mask = position_windows([np.arange(10, 20)], history_len=7, horizon=3)
    assert history.tolist()[0] == list(range(10, 17))
    assert targets[0, 6].tolist() == [17, 18, 19]  # the next 3 from the whole sequence
    assert mask.sum(1).tolist() == [7, 1, 1]  # the cuts 8 and 9: a row each, the last position


@pytest.mark.parametrize("model", ["gru", "transformer"])
@pytest.mark.parametrize(
    ("loss", "fused"),
    [
        ({"loss": "bce"}, False),
        ({"loss": "bce"}, True),
        ({"loss": "focal", "alpha": 0.25, "gamma": 2.0}, False),
        ({"loss": "focal", "alpha": 0.25, "gamma": 2.0}, True),
        ({"loss": "softmax"}, False),  # --fused-head is for the sigmoid losses
    ],
)
def test_positions_loss_is_the_windows_loss(
    tiny_data: Path, model: str, loss: dict[str, object], fused: bool
) -> None:
    """On the whole training set at once (dropout off), the rows of positions give the windows'
    loss and gradient: the same examples, each state computed once per row instead of once per
    window."""
    data = load_challenge_data(tiny_data)
    windows = challenge.make_windows(data, 0.1, 0)
    argv = ["--model", model, "--embedding-dim", "8", "--dropout", "0"]
    argv += ["--hidden-size", "16"] if model == "gru" else ["--heads", "2", "--layers", "1"]
    config = {**challenge.run_config(challenge.parse_args(argv)), **loss, "fused_head": fused}
    net = challenge.build_model(config, data, windows).double()
    loss_fn = challenge.TrainingLoss(net, config)
    results = []
    for training in ("windows", "positions"):
        net.zero_grad()
        value = loss_fn(*windows.training_examples(training))
        value.backward()
        grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
        results.append((value.detach(), grads))
    (by_window, window_grads), (by_position, position_grads) = results
    assert by_position.item() == pytest.approx(by_window.item(), rel=1e-9)
    assert len(window_grads) == len(position_grads)
    for a, b in zip(window_grads, position_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-7, atol=1e-10)


def test_default_training_per_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert challenge.parse_args([]).training == challenge.DEFAULTS.training == "positions"
    assert challenge.parse_args(["--model", "transformer"]).training == "positions"
    assert challenge.parse_args(["--model", "mlp"]).training == "windows"
    assert challenge.parse_args(["--training", "windows"]).training == "windows"
    with pytest.raises(SystemExit) as info:
        challenge.parse_args(["--model", "mlp", "--training", "positions"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: argument --training: positions applies to --model gru")


def test_checkpoints_from_before_the_option_trained_windows() -> None:
    now = challenge.run_config(challenge.parse_args(["--training", "windows"]))
    older = {k: v for k, v in now.items() if k != "training"}
    assert challenge.used_config(older) == challenge.used_config(now)
    default = challenge.run_config(challenge.parse_args([]))
    assert challenge.used_config(older) != challenge.used_config(default)


def test_resume_replays_the_uninterrupted_positions_run(tiny_data: Path, tmp_path: Path) -> None:
    """Two epochs, then ``--resume --epochs 4``: the same epochs, best model and submission as
    four epochs in one go."""
    runs = {}
    for name, steps in (("whole", [4]), ("resumed", [2, 4])):
        out = tmp_path / name
        for count in steps:
            argv = ["--data", str(tiny_data), "--output", str(out), "--epochs", str(count)]
            argv += [
                "--patience",
                "10",
                "--quiet",
                *GRU,
                *(["--resume"] if count > steps[0] else []),
            ]
            assert challenge.main(argv) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["config"]["training"] == "positions"
        runs[name] = (metrics, (out / "submission.csv").read_text())
    (whole, whole_csv), (resumed, resumed_csv) = runs["whole"], runs["resumed"]
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3, 4]
    for a, b in zip(whole["epochs"], resumed["epochs"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
        assert b["val_map3"] == pytest.approx(a["val_map3"], abs=1e-9)
    assert resumed["best_epoch"] == whole["best_epoch"]
    assert resumed_csv == whole_csv


def test_resume_refuses_the_other_training(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--data", str(tiny_data), "--output", str(out), "--epochs", "1", "--quiet", *GRU]
    assert challenge.main(argv) == 0
    assert challenge.main([*argv, "--epochs", "2", "--resume", "--training", "windows"]) == 1


def test_two_process_positions_run(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += [str(SCRIPT), "--data", str(tiny_data), "--output", str(out), "--epochs", "2", *GRU]
    result = subprocess.run(
        command, env=env(), capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best epoch") == 1  # only rank 0 reports and writes
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["config"]["training"]) == (2, "positions")
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert all(0 <= e["val_map3"] <= 1 for e in metrics["epochs"])
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)


def test_learning_rate_decays_per_epoch(tiny_data: Path, tmp_path: Path) -> None:
    """``--lr-decay``: epoch e trains at lr * decay ** (e - 1), and so does a resumed run."""
    out = tmp_path / "out"
    argv = ["--data", str(tiny_data), "--output", str(out), "--quiet", "--patience", "10", *GRU]
    argv += ["--lr", "0.004", "--lr-decay", "0.5"]
    for count, resume in ((1, []), (3, ["--resume"])):
        assert challenge.main([*argv, "--epochs", str(count), *resume]) == 0
        ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
        assert ckpt["config"]["lr_decay"] == 0.5
        rates = [group["lr"] for group in ckpt["optimizer"]["param_groups"]]
        assert rates == [pytest.approx(0.004 * 0.5 ** (count - 1), rel=1e-12)] * len(rates)
