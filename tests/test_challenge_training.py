"""The example's training pieces: the three losses and the optimizers, against references."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import challenge


def config(**overrides: object) -> dict[str, object]:
    return {**challenge.run_config(challenge.parse_args([])), **overrides}


LOGITS = torch.tensor([[2.0, -1.0, 0.5, -3.0], [0.0, 1.0, -2.0, 4.0]], dtype=torch.float64)
TARGETS = torch.tensor([[0, 2, -1], [3, -1, -1]])
POSITIVES = [[0, 2], [3]]


def test_focal_loss_is_the_papers_formula_summed_over_positives() -> None:
    loss = challenge.make_loss(config(loss="focal", alpha=0.25, gamma=2.0))(LOGITS, TARGETS)
    total = 0.0
    for row, pos in zip(LOGITS.tolist(), POSITIVES, strict=True):
        for c, x in enumerate(row):
            p = 1 / (1 + math.exp(-x))
            if c in pos:
                total += -0.25 * (1 - p) ** 2 * math.log(p)
            else:
                total += -0.75 * p**2 * math.log(1 - p)
    assert float(loss) == pytest.approx(total / 3, rel=1e-9)


def test_bce_loss_is_bce_with_logits_summed_over_positives() -> None:
    loss = challenge.make_loss(config(loss="bce"))(LOGITS, TARGETS)
    dense = torch.zeros_like(LOGITS)
    for i, pos in enumerate(POSITIVES):
        dense[i, pos] = 1.0
    want = F.binary_cross_entropy_with_logits(LOGITS, dense, reduction="sum") / 3
    assert float(loss) == pytest.approx(float(want), rel=1e-9)


def test_softmax_loss_is_cross_entropy_averaged_over_targets() -> None:
    loss = challenge.make_loss(config(loss="softmax"))(LOGITS, TARGETS)
    terms = []
    for row, pos in zip(LOGITS.tolist(), POSITIVES, strict=True):
        log_z = math.log(sum(math.exp(x) for x in row))
        terms += [log_z - row[c] for c in pos]
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-9)
    # Gradients flow and ignore the padding.
    x = LOGITS.clone().requires_grad_()
    challenge.softmax_loss(x, TARGETS).backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()


def test_optimizers_follow_the_settings() -> None:
    model = torch.nn.Linear(3, 2)
    args = challenge.parse_args(["--optimizer", "sgd"])
    sgd = challenge.make_optimizer(vars(args), model)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 1e-4)
    adamw = challenge.make_optimizer(vars(challenge.parse_args(["--lr", "0.01"])), model)
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["lr"] == 0.01


def test_options_of_one_loss_or_optimizer_are_none_with_the_others() -> None:
    focal = challenge.parse_args(["--loss", "focal"])
    assert (focal.alpha, focal.gamma) == (challenge.DEFAULTS.alpha, challenge.DEFAULTS.gamma)
    bce = challenge.parse_args(["--loss", "bce"])
    assert (bce.alpha, bce.gamma, bce.momentum) == (None, None, None)
    assert challenge.parse_args(["--optimizer", "sgd", "--momentum", "0"]).momentum == 0.0
    assert challenge.parse_args(["--loss", "focal", "--alpha", "1", "--gamma", "0"]).alpha == 1.0


@pytest.mark.parametrize(
    "argv",
    [
        ["--loss", "bce", "--alpha", "0.25"],  # even the focal default is refused with bce
        ["--loss", "softmax", "--gamma", "2"],
        ["--optimizer", "adamw", "--momentum", "0.9"],
    ],
)
def test_options_the_run_would_ignore_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        challenge.parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"argument {argv[2]}: applies to" in err


class Diverged(torch.nn.Module):
    """A model whose scores are not finite for one user."""

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        scores = torch.zeros(len(history), 5)
        scores[0, 1] = math.inf
        return scores


def test_validation_map_is_nan_when_a_score_is_not_finite() -> None:
    history = torch.tensor([[0, 1], [2, 3]])
    windows = challenge.Windows(
        train_history=history,
        train_targets=history,
        val_history=history,
        val_targets=torch.tensor([[4, -1, -1], [4, -1, -1]]),
        test_history=history,
        train_sequences=history,
    )
    assert math.isnan(challenge.validation_map(Diverged(), windows, challenge.Processes(0, 1)))
    with pytest.raises(challenge.TrainingDiverged, match="scores are not finite"):
        challenge.predict_top3(Diverged(), history)
