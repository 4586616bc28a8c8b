"""examples/movielens.py on a synthetic dataset in gSASRec's layout.

The outputs (metrics.json's keys and ranges, predictions.txt's format), the metrics against a
plain-Python computation from the predictions, every loss, gBCE's formula against gSASRec's, bad
input answered with one line and OUT left as it was, and a rerun over an existing OUT.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import focalrec
import movielens
from challenge_support import tree

ROOT = Path(__file__).resolve().parents[1]

SMALL = [
    "--max-length",
    "20",
    "--embedding-dim",
    "16",
    "--batch-size",
    "64",
    "--lr",
    "1e-2",
    "--quiet",
]
"""A model and batches small enough for a run of a few epochs in about a second."""

ITEMS = 100


def write_dataset(root: Path, *, users: int = 300, seed: int = 0, test: bool = True) -> None:
    """gSASRec's layout: users walk the items 1..ITEMS by a fixed step of theirs, mostly.

    The first 50 users are validation users: their train/ line lacks the last 3 items, val/ has
    the sequence without its last 2 and the second-to-last item; test/ (every user) has the
    sequence without its last item and the last item.
    """
    rng = random.Random(seed)
    sequences = []
    for _ in range(users):
        item, step, sequence = rng.randint(1, ITEMS), rng.choice([1, 2, 3]), []
        for _ in range(rng.randint(8, 40)):
            sequence.append(item)
            follows = rng.random() < 0.9
            item = (item - 1 + step) % ITEMS + 1 if follows else rng.randint(1, ITEMS)
        sequences.append(sequence)

    def lines(rows: list[list[int]]) -> str:
        return "".join(" ".join(map(str, r)) + "\n" for r in rows)

    for folder in ("train", "val", "test") if test else ("train", "val"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    val = sequences[:50]
    train = [s[:-3] for s in val] + [s[:-2] for s in sequences[50:]]
    (root / "train" / "input.txt").write_text(lines(train))
    (root / "val" / "input.txt").write_text(lines([s[:-2] for s in val]))
    (root / "val" / "output.txt").write_text(lines([s[-2:-1] for s in val]))
    if test:
        (root / "test" / "input.txt").write_text(lines([s[:-1] for s in sequences]))
        (root / "test" / "output.txt").write_text(lines([s[-1:] for s in sequences]))


def ids(path: Path) -> list[list[int]]:
    return [[int(x) for x in line.split()] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("movielens") / "data"
    write_dataset(root)
    return root


@pytest.fixture(scope="module")
def finished(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT of a finished run of 4 epochs with the default loss."""
    out = tmp_path_factory.mktemp("finished") / "out"
    assert movielens.main(["--data", str(data), "--output", str(out), "--epochs", "4", *SMALL]) == 0
    return out


# -------------------------------------------------------------------------------------------------
# The outputs
# -------------------------------------------------------------------------------------------------


def test_metrics_json_keys_and_ranges(finished: Path) -> None:
    metrics = json.loads((finished / "metrics.json").read_text())
    for part in ("val", "test"):
        assert set(metrics[part]) == {"ndcg@10", "recall@10", "recall@1"}
        assert all(0.0 <= v <= 1.0 for v in metrics[part].values())
        assert metrics[part]["recall@1"] <= metrics[part]["recall@10"]
    assert metrics["seconds"] > 0
    assert metrics["steps"] == 4 * math.ceil(300 / 64)
    assert metrics["best"]["val"] == metrics["val"]  # the best epoch's model, evaluated again
    assert metrics["stopped_by"] == "epochs"
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4]
    assert metrics["config"]["loss"] == "bce"
    # The walks are learnable: better than a random ranking of the ~90 eligible items.
    assert metrics["val"]["recall@10"] > 0.25


def test_predictions_are_ten_new_catalogue_items_per_test_user(data: Path, finished: Path) -> None:
    histories = ids(data / "test" / "input.txt")
    catalogue = {i for row in ids(data / "train" / "input.txt") for i in row}
    text = (finished / "predictions.txt").read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == len(histories)
    for line, history in zip(lines, histories, strict=True):
        tokens = line.split(" ")
        assert len(tokens) == 10
        items = [int(t) for t in tokens]
        assert len(set(items)) == 10
        assert set(items) <= catalogue
        assert not set(items) & set(history)


def _ndcg_recall_by_loop(
    predictions: list[list[int]], targets: list[list[int]]
) -> dict[str, float]:
    """Plain Python: NDCG@10 (binary gains, ideal of min(|R|, 10)), Recall@10 and Recall@1."""
    ndcg = recall10 = recall1 = 0.0
    for ranked, relevant in zip(predictions, targets, strict=True):
        rel = set(relevant)
        dcg = sum(1 / math.log2(i + 2) for i, item in enumerate(ranked[:10]) if item in rel)
        ideal = sum(1 / math.log2(i + 2) for i in range(min(len(rel), 10)))
        ndcg += dcg / ideal
        recall10 += len(rel & set(ranked[:10])) / len(rel)
        recall1 += len(rel & set(ranked[:1])) / len(rel)
    n = len(targets)
    return {"ndcg@10": ndcg / n, "recall@10": recall10 / n, "recall@1": recall1 / n}


def test_test_metrics_are_those_of_the_predictions(data: Path, finished: Path) -> None:
    metrics = json.loads((finished / "metrics.json").read_text())
    expected = _ndcg_recall_by_loop(
        ids(finished / "predictions.txt"), ids(data / "test" / "output.txt")
    )
    assert metrics["test"] == pytest.approx(expected, abs=1e-6)


def test_without_a_test_folder_there_is_no_test_nor_predictions(tmp_path: Path) -> None:
    write_dataset(tmp_path / "data", test=False)
    out = tmp_path / "out"
    argv = ["--data", str(tmp_path / "data"), "--output", str(out), "--epochs", "1", *SMALL]
    assert movielens.main(argv) == 0
    assert sorted(os.listdir(out)) == ["metrics.json"]
    assert "test" not in json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize(
    "options",
    [
        ["--loss", "bce"],
        ["--loss", "focal", "--gamma", "1.5", "--alpha", "0.5"],
        ["--loss", "softmax"],
        ["--loss", "gbce", "--negatives", "8", "--gbce-t", "0.5"],
        ["--loss", "gbce", "--negatives", "300"],  # more numbers than a full row: the other path
    ],
)
def test_every_loss_trains(data: Path, tmp_path: Path, options: list[str]) -> None:
    out = tmp_path / "out"
    argv = ["--data", str(data), "--output", str(out), "--epochs", "2", *SMALL, *options]
    assert movielens.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["loss"] == options[1]
    assert all(math.isfinite(e["loss"]) for e in metrics["epochs"])
    assert 0 <= metrics["test"]["ndcg@10"] <= 1


def test_a_seed_determines_the_run(data: Path, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        argv = ["--data", str(data), "--output", str(out), "--epochs", "1", "--seed", "3", *SMALL]
        assert movielens.main(argv) == 0
        runs.append(((out / "predictions.txt").read_text(), _metrics(out)["val"]))
    assert runs[0] == runs[1]


def _metrics(out: Path) -> dict[str, object]:
    result: dict[str, object] = json.loads((out / "metrics.json").read_text())
    return result


def test_max_minutes_stops_training_and_keeps_the_best_epoch(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--data", str(data), "--output", str(out), "--max-minutes", "1e-6", *SMALL]
    assert movielens.main(argv) == 0
    metrics = _metrics(out)
    assert metrics["stopped_by"] == "max_minutes"
    assert metrics["steps"] == 1
    assert (out / "predictions.txt").is_file()


def test_patience_stops_training(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--data", str(data), "--output", str(out), "--patience", "1", "--lr", "1e-9"]
    assert movielens.main([*SMALL, *argv, "--epochs", "50"]) == 0
    metrics = _metrics(out)
    assert metrics["stopped_by"] == "patience"
    epochs = metrics["epochs"]
    assert isinstance(epochs, list)
    assert len(epochs) < 50


# -------------------------------------------------------------------------------------------------
# gBCE
# -------------------------------------------------------------------------------------------------


def _gsasrec_transform(logits: torch.Tensor, beta: float) -> torch.Tensor:
    """gSASRec's float64 transform of the positive logits (column 0), as its README gives it."""
    positive, negative = logits[:, 0:1].double(), logits[:, 1:].double()
    eps = 1e-10
    probs = torch.clamp(torch.sigmoid(positive), eps, 1 - eps)
    adjusted = torch.clamp(probs.pow(-beta), 1 + eps, torch.finfo(torch.float64).max)
    to_log = torch.clamp(torch.div(1.0, adjusted - 1), eps, torch.finfo(torch.float64).max)
    return torch.cat([to_log.log(), negative], -1)


@pytest.mark.parametrize("t", [0.0, 0.5, 0.75, 1.0])
def test_gbce_loss_is_bce_of_gsasrecs_float64_transform(t: float) -> None:
    # gSASRec trains on BCE of the transformed positive logit: -log sigmoid(transform(s+)) is
    # -beta log sigmoid(s+). Logits in a range where its clamps do not act.
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(64, 1 + 16, generator=g, dtype=torch.float64) * 4
    beta = focalrec.gbce_beta(16, 1000, t)
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1
    expected = F.binary_cross_entropy_with_logits(_gsasrec_transform(scores, beta), labels)
    torch.testing.assert_close(movielens.gbce_loss(scores, beta), expected, rtol=1e-9, atol=0)


def test_gbce_loss_matches_a_loop() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    beta = 0.3
    total = 0.0
    for row in scores.tolist():
        total += -beta * math.log(1 / (1 + math.exp(-row[0])))
        total += sum(-math.log(1 - 1 / (1 + math.exp(-s))) for s in row[1:])
    expected = total / scores.numel()
    assert movielens.gbce_loss(scores, beta).item() == pytest.approx(expected, rel=1e-12)


# -------------------------------------------------------------------------------------------------
# Bad input: one line, OUT as it was
# -------------------------------------------------------------------------------------------------


def _edit(data: Path, tmp_path: Path, file: str, text: str | None) -> Path:
    """A copy of the dataset with ``file`` replaced by ``text`` (removed for None)."""
    copy = tmp_path / "data"
    for name in ("train/input.txt", "val/input.txt", "val/output.txt"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((data / name).read_bytes())
    if text is None:
        (copy / file).unlink()
    else:
        (copy / file).write_text(text)
    return copy


def _val_line_with(data: Path, item: str) -> str:
    lines = (data / "val" / "input.txt").read_text().splitlines()
    lines[1] = lines[1] + " " + item
    return "\n".join(lines) + "\n"


BAD_DATA = [
    ("missing folder", None, None, r"error: .*nowhere: not a folder"),
    ("missing file", "val/output.txt", None, r"error: .*output.txt: file not found"),
    ("a word", "train/input.txt", "1 2 x3\n", r"train/input.txt, line 1, column 5: expected an"),
    ("negative id", "train/input.txt", "1\t-2\n", r"line 1, column 3: expected an item id"),
    ("a float", "train/input.txt", "1 2\n3 4.0\n", r"line 2, column 3: .*got '4.0'$"),
    ("huge id", "train/input.txt", "1 " + "9" * 5000, r"line 1, column 3: .*\(5000 characters\)$"),
    ("empty line", "train/input.txt", "1 2\n\n3\n", r"line 2: no item ids on this line"),
    ("empty file", "val/input.txt", "", r"val/input.txt: no users \(the file is empty\)"),
    ("unknown id", "val/input.txt", "UNKNOWN", r"val/input.txt, line 2: item id 999 does not"),
    ("line counts", "val/output.txt", "5\n", r"val/output.txt: 1 lines for the 50 users"),
    ("no next item", "train/input.txt", "1\n2\n", r"train/input.txt: no user has 2 items or more"),
]


@pytest.mark.parametrize(
    ("case", "file", "text", "message"), BAD_DATA, ids=[c[0] for c in BAD_DATA]
)
def test_bad_data_is_one_line_and_leaves_out_as_it_was(
    data: Path,
    finished: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    file: str | None,
    text: str | None,
    message: str,
) -> None:
    if case == "missing folder":
        bad = tmp_path / "nowhere"
    else:
        assert file is not None
        text = _val_line_with(data, "999") if text == "UNKNOWN" else text
        bad = _edit(data, tmp_path, file, text)
    before = tree(finished.parent)
    capsys.readouterr()
    status = movielens.main(["--data", str(bad), "--output", str(finished), *SMALL])
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1, err
    assert re.search(message, err), err
    assert tree(finished.parent) == before


BAD_OPTIONS = [
    (["--max-minutes", "-1"], "argument --max-minutes: expected a finite number > 0, got '-1'"),
    (["--max-minutes", "nan"], "argument --max-minutes: expected a finite number > 0"),
    (["--negatives", "8"], "argument --negatives: applies to --loss gbce only, not bce"),
    (["--gamma", "1"], "argument --gamma: applies to --loss focal only, not bce"),
    (["--loss", "hinge"], "argument --loss: invalid choice: 'hinge'"),
    (["--heads", "3"], "argument --heads: must divide --embedding-dim 16, got 3"),
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_bad_options_are_one_line_with_status_2(
    data: Path,
    finished: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    before = tree(finished.parent)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        movielens.main(["--data", str(data), "--output", str(finished), *SMALL, *options])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {message}"), err
    assert tree(finished.parent) == before


def test_an_output_holding_other_files_is_refused(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = tree(tmp_path)
    status = movielens.main(["--data", str(data), "--output", str(out), *SMALL])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1, err
    assert err.startswith("error: argument --output: ")
    assert "notes.txt" in err
    assert tree(tmp_path) == before


def test_a_rerun_replaces_out_as_a_whole(data: Path, tmp_path: Path) -> None:
    # A run over a finished OUT replaces it with its own files and leaves nothing beside it;
    # a run without test/ leaves no predictions.txt of the previous run behind.
    out = tmp_path / "runs" / "out"
    argv = ["--data", str(data), "--output", str(out), "--epochs", "1", *SMALL]
    assert movielens.main([*argv, "--seed", "1"]) == 0
    first = tree(out)
    assert movielens.main([*argv, "--seed", "2"]) == 0
    assert sorted(os.listdir(out.parent)) == ["out"]
    assert sorted(os.listdir(out)) == ["metrics.json", "predictions.txt"]
    assert tree(out)["metrics.json"] != first["metrics.json"]
    assert _metrics(out)["config"]["seed"] == 2  # type: ignore[index]

    write_dataset(tmp_path / "no-test", test=False)
    argv = ["--data", str(tmp_path / "no-test"), "--output", str(out), "--epochs", "1", *SMALL]
    assert movielens.main(argv) == 0
    assert sorted(os.listdir(out)) == ["metrics.json"]
    assert sorted(os.listdir(out.parent)) == ["out"]


@pytest.mark.slow  # two fresh Python processes importing torch: over 10 s on a shared machine
def test_the_command_line_in_a_real_process(data: Path, tmp_path: Path) -> None:
    # The script as a user runs it: outputs on success, one line and no traceback on bad input.
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    script = str(ROOT / "examples" / "movielens.py")
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            script,
            "--data",
            str(data),
            "--output",
            str(out),
            "--epochs",
            "1",
            *SMALL,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(out)) == ["metrics.json", "predictions.txt"]
    bad = subprocess.run(
        [sys.executable, script, "--data", str(tmp_path / "nowhere"), "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith("error: ")
    assert "Traceback" not in bad.stderr


def test_a_full_disk_leaves_out_as_it_was(
    data: Path,
    finished: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # metrics.json is written last, after predictions.txt: the half-written run is discarded.
    write_bytes = movielens.atomic.write_bytes

    def full(path: Path, data: bytes) -> None:
        if path.name == "metrics.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write_bytes(path, data)

    monkeypatch.setattr(movielens.atomic, "write_bytes", full)
    before = tree(finished.parent)
    capsys.readouterr()
    argv = ["--data", str(data), "--output", str(finished), "--epochs", "1", *SMALL]
    assert movielens.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.match(r"error: .*metrics\.json: cannot write: No space left on device$", err), err
    assert tree(finished.parent) == before


def test_a_diverged_training_is_one_line_and_leaves_out_as_it_was(
    data: Path,
    finished: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(movielens, "position_loss", lambda *_: torch.tensor(math.nan))
    before = tree(finished.parent)
    capsys.readouterr()
    argv = ["--data", str(data), "--output", str(finished), *SMALL]
    assert movielens.main(argv) == 1
    err = capsys.readouterr().err
    assert err == "error: the training loss is not finite at step 1\n"
    assert tree(finished.parent) == before


def test_an_interrupted_run_beside_out_is_cleared_by_the_next(data: Path, tmp_path: Path) -> None:
    # A run killed before its commit leaves .out.partial (and maybe a temporary file); the next
    # run starts afresh and leaves only OUT.
    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    (partial / "predictions.txt").write_text("1 2 3\n")
    (partial / ".metrics.json.k3j_x9q2.tmp").write_text("{")
    argv = ["--data", str(data), "--output", str(out), "--epochs", "1", *SMALL]
    assert movielens.main(argv) == 0
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert len((out / "predictions.txt").read_text().splitlines()) == 300
