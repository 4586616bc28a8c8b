"""examples/challenge.py end to end: outputs, submission, errors, resume after kill -9, DDP."""

from __future__ import annotations

import csv
import json
import math
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import challenge
import synthetic
from challenge_data import load_challenge_data
from challenge_support import FAST, OUTPUTS, SCRIPT, TINY, env, run, tree


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-data")
    synthetic.write_dataset(path, TINY)
    return path


def epochs(data: Path, out: Path, count: int) -> list[str]:
    """Options of a tiny run of exactly ``count`` epochs (no early stop)."""
    run_options = ["--data", str(data), "--output", str(out), "--epochs", str(count)]
    return [*run_options, "--patience", "10", *FAST]


def four_epochs(data: Path, out: Path) -> list[str]:
    return epochs(data, out, 4)


@pytest.fixture(scope="module")
def finished_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of 4 epochs (no early stop), in a subprocess."""
    out = tmp_path_factory.mktemp("run") / "out"
    result = run([*four_epochs(tiny_data, out), "--quiet"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # --quiet: no per-epoch lines
    return out


def test_end_to_end_outputs(finished_run: Path) -> None:
    assert sorted(p.name for p in finished_run.iterdir()) == sorted(OUTPUTS)  # no temp files
    assert [p.name for p in finished_run.parent.iterdir()] == ["out"]  # no partial run left
    metrics = json.loads((finished_run / "metrics.json").read_text())
    epochs = metrics["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    assert all(e["train_loss"] > 0 and 0 <= e["val_map3"] <= 1 for e in epochs)
    best = max(epochs, key=lambda e: e["val_map3"])
    assert metrics["best_epoch"] == best["epoch"]
    assert metrics["best_val_map3"] == best["val_map3"]
    assert metrics["config"]["loss"] == challenge.DEFAULTS.loss
    assert metrics["config"]["history_len"] == 10
    assert metrics["world_size"] == 1
    assert set(metrics["baselines_val_map3"]) == {"popularity", "transition"}
    assert metrics["timings_s"]["total"] > 0
    assert (finished_run / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = torch.load(finished_run / "checkpoint.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 4


def test_submission_rows_are_the_best_models_top3(tiny_data: Path, finished_run: Path) -> None:
    data = load_challenge_data(tiny_data)
    with (tiny_data / "test.csv").open(newline="") as f:
        test_rows = list(csv.DictReader(f))
    history = {}
    for r in test_rows:
        history.setdefault(r["user_id"], set()).add(r["challenge"])
    catalogue = set(data.vocabulary)

    # Recompute the top 3 from the saved best model (loaded with weights_only=True).
    best = torch.load(finished_run / "best_model.pt", weights_only=True)
    assert best["vocabulary"] == data.vocabulary
    windows = challenge.make_windows(data, best["config"]["val_fraction"], best["config"]["seed"])
    model = challenge.build_model(best["config"], data, windows)
    model.load_state_dict(best["model"])
    expected = challenge.predict_top3(model, windows.test_history).tolist()

    with (finished_run / "submission.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["user_sequence", "challenge"]
    rows = rows[1:]
    assert len(rows) == 3 * len(data.test_users)
    for i, user in enumerate(data.test_users):  # test.csv order, 3 rows each in rank order
        mine = rows[3 * i : 3 * i + 3]
        assert [r[0] for r in mine] == [f"{user}_11", f"{user}_12", f"{user}_13"]
        items = [r[1] for r in mine]
        assert len(set(items)) == 3
        assert set(items) <= catalogue
        assert not set(items) & history[user]
        assert items == [data.vocabulary[j] for j in expected[i]]


def test_resume_after_kill_9_replays_the_uninterrupted_run(
    tiny_data: Path, finished_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = four_epochs(tiny_data, out)
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = out.parent / ".out.partial"  # the run in progress, beside OUT (see atomic.py)
    deadline = time.monotonic() + 120
    while not (partial / "checkpoint.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
    assert proc.wait() != 0  # killed, not finished
    assert not out.exists()  # no run is complete yet: no OUT
    epochs_done = torch.load(partial / "checkpoint.pt", weights_only=True)["state"]["epoch"]
    assert 1 <= epochs_done < 4

    resumed = run([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert_the_four_epoch_run(out, finished_run)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def assert_the_four_epoch_run(out: Path, reference: Path) -> None:
    """``out`` holds a complete 4-epoch run, the same as the uninterrupted ``reference`` run."""
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    got = json.loads((out / "metrics.json").read_text())
    want = json.loads((reference / "metrics.json").read_text())
    assert [e["epoch"] for e in got["epochs"]] == [1, 2, 3, 4]
    assert got["config"]["epochs"] == 4
    for g, w in zip(got["epochs"], want["epochs"], strict=True):
        assert g["train_loss"] == pytest.approx(w["train_loss"], rel=1e-5)
        assert g["val_map3"] == pytest.approx(w["val_map3"], abs=1e-9)
    assert got["best_epoch"] == want["best_epoch"]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["state"]["epoch"] == 4
    best = torch.load(out / "best_model.pt", weights_only=True)
    assert best["epoch"] == got["best_epoch"]
    assert best["config"]["epochs"] == 4
    assert (out / "submission.csv").read_text() == (reference / "submission.csv").read_text()


def test_kill_9_during_resume_leaves_one_whole_run_or_the_other(
    tiny_data: Path, finished_run: Path, tmp_path: Path
) -> None:
    """``--resume --epochs 4`` on a finished 2-epoch run, killed at seeded random moments: OUT is
    always the 2-epoch run byte for byte, or the whole 4-epoch run, never a mixture of the two.
    A kill that leaves a partial run is followed by a resume of it (killed again, or finishing).

    A kill comes a random time (up to two epochs' worth) after a random line of the run's output,
    so kills fall in every phase: checks, training, writing the results, swapping OUT."""
    runs, saved = tmp_path / "runs", tmp_path / "two-epochs"
    out = runs / "out"
    assert challenge.main([*epochs(tiny_data, out, 2), "--quiet"]) == 0
    epoch_seconds = json.loads((out / "metrics.json").read_text())["epochs"][-1]["seconds"]
    shutil.copytree(out, saved)
    two_epochs = tree(out)
    resume = [*epochs(tiny_data, out, 4), "--resume"]

    rng = random.Random(0)
    seen = []
    for _ in range(5):
        if tree(out) != two_epochs:  # the last resume finished: start again from 2 epochs
            shutil.rmtree(runs)
            shutil.copytree(saved, out)
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *resume],
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        for _ in range(rng.randrange(1, 8)):  # data, windows, resumed, 2 baselines, 2 epochs
            proc.stdout.readline()
        try:
            proc.wait(timeout=rng.uniform(0, 2 * epoch_seconds))
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.communicate()
        if out.is_dir() and tree(out) == two_epochs:
            seen.append("2 epochs")
        elif not out.exists():  # killed between the swap's two renames: the next run finishes it
            assert_the_four_epoch_run(runs / ".out.new", finished_run)
            seen.append("4 epochs, being swapped in")
        else:
            assert_the_four_epoch_run(out, finished_run)
            seen.append("4 epochs")
    print("after each kill, OUT held:", seen)

    finished = run([*resume, "--quiet"])
    assert finished.returncode == 0, finished.stderr
    assert_the_four_epoch_run(out, finished_run)
    assert sorted(p.name for p in runs.iterdir()) == ["out"]  # no partial, new or old run left


def test_two_process_ddp_run(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(SCRIPT),
            "--data",
            str(tiny_data),
            "--output",
            str(out),
            "--epochs",
            "2",
            *FAST,
        ],
        env=env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best epoch") == 1  # only rank 0 reports and writes
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert all(0 <= e["val_map3"] <= 1 for e in metrics["epochs"])
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    lines = (out / "submission.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 * TINY.num_test_users


def test_validation_map_is_the_same_sharded_over_processes(tiny_data: Path) -> None:
    """Two ranks' sums, added as the all-reduce does, give the single-process mAP@3."""
    data = load_challenge_data(tiny_data)
    windows = challenge.make_windows(data, 0.1, 0)
    config = challenge.run_config(challenge.parse_args([*FAST]))
    model = challenge.build_model(config, data, windows)
    whole = challenge.validation_map(model, windows, challenge.Processes(0, 1))
    import focalrec

    halves = []
    for rank in (0, 1):
        h = windows.val_history[rank::2]
        top = challenge.predict_top3(model, h)
        halves.append(focalrec.map_at_k(top, windows.val_targets[rank::2], 3, reduction="sum"))
    assert whole == pytest.approx(float(sum(halves)) / len(windows.val_history))


# ------------------------------------------------------------------------------------------------
# In-process: the built-in dataset, --help and user errors (one line on stderr, exit 1, no output)
# ------------------------------------------------------------------------------------------------


def test_default_data_is_the_builtin_synthetic_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(synthetic, "SyntheticConfig", lambda: TINY)  # a smaller built-in dataset
    out = tmp_path / "out"
    assert challenge.main(["--output", str(out), "--epochs", "1", *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["data"] == "synthetic"
    assert metrics["data"]["test_csv_users"] == TINY.num_test_users
    assert (out / "submission.csv").exists()


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        challenge.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--data", "--output", "--loss", "--optimizer", "--resume", "--seed"):
        assert option in text


def test_sgd_gets_the_writeup_settings() -> None:
    args = challenge.parse_args(["--optimizer", "sgd"])
    assert (args.lr, args.momentum, args.weight_decay, args.batch_size) == (0.1, 0.9, 1e-4, 256)
    assert challenge.parse_args(["--optimizer", "sgd", "--lr", "0.05"]).lr == 0.05


def assert_user_error(
    argv: list[str], message: str, out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert challenge.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert message in err
    assert not out.exists()


def test_malformed_file_is_a_one_line_error_without_output(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.csv", "challenge_data.csv"):
        (data / name).write_bytes((tiny_data / name).read_bytes())
    lines = (tiny_data / "test.csv").read_text().splitlines()
    user, pos, _ = lines[5].split(",")[1:]
    lines[5] = f"{user}_{pos},{user},{pos},CI1"
    (data / "test.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert_user_error(
        ["--data", str(data), "--output", str(out)],
        "test.csv, line 6, column challenge: challenge CI1 is not in challenge_data.csv",
        out,
        capsys,
    )


def test_missing_data_dir_and_missing_checkpoint(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert_user_error(
        ["--data", str(tmp_path / "nope"), "--output", str(out)],
        "nope: not a directory",
        out,
        capsys,
    )
    assert_user_error(
        ["--data", str(tiny_data), "--output", str(out), "--resume"],
        "out: no checkpoint to resume from",
        out,
        capsys,
    )


def test_resume_refuses_other_settings(
    tiny_data: Path, finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()}
    argv = ["--data", str(tiny_data), "--output", str(finished_run), "--resume", *FAST]
    assert challenge.main([*argv, "--lr", "0.5"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    trained_lr = challenge.MODEL_DEFAULTS["mlp"].lr  # FAST trains the MLP with AdamW
    assert f"trained with lr={trained_lr}, not 0.5" in err
    assert {p.name: p.stat().st_mtime_ns for p in finished_run.iterdir()} == before


def test_fresh_run_leaves_no_file_of_an_earlier_run(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "no-test-csv"
    data.mkdir()
    for name in ("train.csv", "challenge_data.csv"):
        (data / name).write_bytes((tiny_data / name).read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    (out / "submission.csv").write_text("user_sequence,challenge\nstale,CI1\n")
    assert challenge.main(["--data", str(data), "--output", str(out), "--epochs", "1", *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(set(OUTPUTS) - {"submission.csv"})
    assert json.loads((out / "metrics.json").read_text())["data"]["test_csv_users"] == 0


@pytest.mark.parametrize(
    "options",
    [
        ["--loss", "softmax", "--optimizer", "sgd", "--metadata"],
        ["--loss", "bce", "--no-metadata", "--prior", "0.01", "--hidden-sizes"],
    ],
)
def test_other_losses_and_settings_train(
    tiny_data: Path, tmp_path: Path, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["--data", str(tiny_data), "--output", str(out), "--epochs", "2", *FAST, *options]
    assert challenge.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["loss"] == options[1]
    assert all(math.isfinite(e["train_loss"]) for e in metrics["epochs"])
    assert metrics["data"]["item_metadata_used"] == ("--metadata" in options)


@pytest.mark.parametrize(
    ("options", "recorded"),
    [
        (["--model", "gru", "--embedding-dim", "8", "--hidden-size", "16"], {"layers": 1}),
        (
            ["--model", "transformer", "--embedding-dim", "8", "--heads", "2", "--layers", "1"],
            {"hidden_size": None, "hidden_sizes": None},
        ),
        (["--model", "mlp", "--embedding-dim", "8", "--hidden-sizes"], {"hidden_sizes": []}),
    ],
)
def test_every_model_trains_with_its_own_defaults(
    tiny_data: Path, tmp_path: Path, options: list[str], recorded: dict[str, object]
) -> None:
    out = tmp_path / "out"
    argv = ["--data", str(tiny_data), "--output", str(out), "--epochs", "1", "--quiet", *options]
    assert challenge.main(argv) == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    model = options[1]
    assert config["model"] == model
    assert config["lr"] == challenge.MODEL_DEFAULTS[model].lr
    assert config["dropout"] == challenge.MODEL_DEFAULTS[model].dropout
    for name, value in recorded.items():
        assert config[name] == value
    best = torch.load(out / "best_model.pt", weights_only=True)["model"]
    assert ("gru.weight_ih_l0" in best) == (model == "gru")


@pytest.mark.parametrize("loss", [["--loss", "bce"], ["--loss", "focal", "--gamma", "1"]])
@pytest.mark.parametrize("model", ["mlp", "gru"])
def test_fused_head_trains_the_same_run(
    tiny_data: Path, tmp_path: Path, loss: list[str], model: str
) -> None:
    histories = []
    for fused in ([], ["--fused-head"]):
        out = tmp_path / f"out{len(fused)}"
        argv = ["--data", str(tiny_data), "--output", str(out), "--epochs", "3", "--quiet"]
        assert challenge.main([*argv, "--model", model, "--embedding-dim", "8", *loss, *fused]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["config"]["fused_head"] == bool(fused)
        histories.append(metrics["epochs"])
    unfused, fused_run = histories
    for a, b in zip(unfused, fused_run, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_map3"] == pytest.approx(a["val_map3"], abs=1e-6)


def test_fused_head_refuses_softmax(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data", str(tiny_data), "--output", str(tmp_path / "out"), "--loss", "softmax"]
    with pytest.raises(SystemExit) as e:
        challenge.main([*argv, "--fused-head"])
    assert e.value.code == 2
    assert "argument --fused-head: applies to --loss bce and focal only, not --loss softmax" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--model", "gru", "--hidden-sizes", "8"],
            "argument --hidden-sizes: applies to --model mlp only, not --model gru",
        ),
        (
            ["--model", "mlp", "--hidden-size", "8"],
            "argument --hidden-size: applies to --model gru only, not --model mlp",
        ),
        (
            ["--model", "mlp", "--layers", "2"],
            "argument --layers: applies to --model gru and transformer only, not --model mlp",
        ),
        (
            ["--model", "gru", "--heads", "2"],
            "argument --heads: applies to --model transformer only, not --model gru",
        ),
        (
            ["--model", "gru", "--metadata"],
            "argument --metadata: applies to --model mlp only, not --model gru",
        ),
        (["--model", "rnn"], "argument --model: invalid choice: 'rnn'"),
        (
            ["--loss", "focal", "--alpha", "nan"],
            "argument --alpha: expected a number in [0, 1] or 'none'",
        ),
    ],
)
def test_options_of_another_model_are_refused(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        challenge.parse_args(options)
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")


def test_a_model_the_options_cannot_build_is_one_line(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["--data", str(tiny_data), "--output", str(out), "--model", "transformer"]
    argv += ["--embedding-dim", "10", "--heads", "3"]
    assert challenge.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --model transformer: ")
    assert err.count("\n") == 1
    assert not out.exists()


def test_focal_loss_without_alpha(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--data", str(tiny_data), "--output", str(out), "--epochs", "1", "--quiet", *FAST]
    assert challenge.main([*argv, "--loss", "focal", "--alpha", "none", "--gamma", "1"]) == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert (config["alpha"], config["gamma"]) == (None, 1.0)
