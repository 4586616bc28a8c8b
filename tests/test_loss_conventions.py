"""The focal-loss conventions table of docs/focal-loss.md, each row checked against the library.

Where a row compares with another library, the test runs against the installed library (kornia
is in the test extra) and is skipped where it is not installed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from focalrec import FocalLoss, sigmoid_focal_loss


def _split_target_formula(
    x: torch.Tensor, t: torch.Tensor, alpha: float, gamma: float
) -> torch.Tensor:
    """kornia's soft-target loss written independently, in float64."""
    x, t = x.double(), t.double()
    p = torch.sigmoid(x)
    positive = alpha * t * (1 - p) ** gamma * -F.logsigmoid(x)
    negative = (1 - alpha) * (1 - t) * p**gamma * -F.logsigmoid(-x)
    return positive + negative


def _torchvision_formula(
    x: torch.Tensor, t: torch.Tensor, alpha: float, gamma: float
) -> torch.Tensor:
    x, t = x.double(), t.double()
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    return (alpha * t + (1 - alpha) * (1 - t)) * (1 - p_t) ** gamma * ce


def test_soft_targets_follow_torchvision_not_kornia() -> None:
    kornia_losses = pytest.importorskip("kornia.losses")
    x = torch.linspace(-4.0, 4.0, 81).unsqueeze(0)
    t = torch.full_like(x, 0.2)
    ours = sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, reduction="none")
    theirs = kornia_losses.binary_focal_loss_with_logits(
        x, t, alpha=0.25, gamma=2.0, reduction="none"
    )
    torch.testing.assert_close(
        ours.double(), _torchvision_formula(x, t, 0.25, 2.0), rtol=1e-5, atol=1e-7
    )
    torch.testing.assert_close(
        theirs.double(), _split_target_formula(x, t, 0.25, 2.0), rtol=1e-5, atol=1e-7
    )
    assert ((theirs - ours).abs() / ours).max() > 0.5
    # For hard targets the two formulas agree.
    hard = (torch.arange(81) % 3 == 0).float().unsqueeze(0)
    torch.testing.assert_close(
        sigmoid_focal_loss(x, hard, reduction="none"),
        kornia_losses.binary_focal_loss_with_logits(
            x, hard, alpha=0.25, gamma=2.0, reduction="none"
        ),
    )


def test_mean_over_a_mask_divides_by_the_kept_entries_kornia_by_all() -> None:
    kornia_losses = pytest.importorskip("kornia.losses")
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    labels = torch.tensor([[1.0, 0.0, -100.0, -100.0]])
    keep = labels != -100
    elementwise = sigmoid_focal_loss(logits, labels.clamp(min=0), reduction="none")
    ours = sigmoid_focal_loss(logits, labels.clamp(min=0), weight=keep, reduction="mean")
    theirs = kornia_losses.binary_focal_loss_with_logits(logits, labels, reduction="mean")
    torch.testing.assert_close(ours, elementwise[keep].sum() / 2)
    torch.testing.assert_close(theirs, elementwise[keep].sum() / 4)


def test_bce_equivalence_is_more_accurate_than_float32_bce_at_negative_logits() -> None:
    x = torch.tensor([-20.0, -40.0])
    zeros = torch.zeros(2)
    exact = torch.log1p(torch.exp(x.double()))
    bce = F.binary_cross_entropy_with_logits(x, zeros, reduction="none")
    ours = sigmoid_focal_loss(x, zeros, alpha=None, gamma=0.0, reduction="none")
    assert ((bce.double() - exact).abs() / exact).min() > 0.5  # torch rounds 1 + e^x to 1
    assert ((ours.double() - exact).abs() / exact).max() < 1e-6


def test_torchscript_cannot_script_the_loss() -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - the error type is up to torch.jit
        torch.jit.script(FocalLoss())
