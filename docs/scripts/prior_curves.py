"""Early training loss with and without prior-bias initialization of the output layer.

A linear scorer over 1,000 items with 3 positives per row (a popularity-skewed, learnable synthetic
task) is trained with ``FocalLoss(alpha=0.25, gamma=2, reduction="sum_over_positives")`` and the
write-up's optimizer (SGD, lr 0.1, momentum 0.9) from the same weights, changing only the initial
output bias. Writes the per-step training loss of every variant as JSON::

    python docs/scripts/prior_curves.py --json docs/generated/prior_curves.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from focalrec import FocalLoss, class_priors, init_prior_bias_

ALPHA, GAMMA = 0.25, 2.0


def make_data(
    num_rows: int, num_items: int, dim: int, positives: int, seed: int
) -> tuple[Tensor, Tensor]:
    """Features ``(N, dim)`` and index-list targets ``(N, positives)`` with popularity skew."""
    gen = torch.Generator().manual_seed(seed)
    users = torch.randn(num_rows, dim, generator=gen)
    items = torch.randn(num_items, dim, generator=gen)
    popularity = 1.0 / torch.arange(1, num_items + 1, dtype=torch.float32)  # Zipf, exponent 1
    scores = users @ items.T / math.sqrt(dim) * 2.0 + popularity.log()
    targets = torch.multinomial(torch.softmax(scores, dim=1), positives, generator=gen)
    return users, targets


def train(
    set_bias: Callable[[nn.Linear], None],
    users: Tensor,
    targets: Tensor,
    num_items: int,
    steps: int,
    batch: int,
    seed: int,
) -> list[float]:
    """Train from fixed initial weights; return the training loss of every step."""
    torch.manual_seed(seed)
    model = nn.Linear(users.shape[1], num_items)
    with torch.no_grad():
        set_bias(model)
    criterion = FocalLoss(alpha=ALPHA, gamma=GAMMA, reduction="sum_over_positives")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    order = torch.randperm(users.shape[0], generator=torch.Generator().manual_seed(seed))
    losses = []
    for step in range(steps):
        rows = order[(step * batch) % users.shape[0] :][:batch]
        loss = criterion(model(users[rows]), targets[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # deterministic, and fast on a shared machine

    users, targets = make_data(args.rows, args.items, args.dim, 3, args.seed)
    priors = class_priors(targets, args.items)
    uniform = 3 / args.items

    def constant(value: float) -> Callable[[nn.Linear], None]:
        return lambda layer: nn.init.constant_(layer.bias, value)

    variants: dict[str, tuple[str, Callable[[nn.Linear], None]]] = {
        "zero": ("b = 0 (every p starts at 0.5)", constant(0.0)),
        "wrong_sign": (
            "b = +log((1 - 0.01) / 0.01) = +4.595 (the printed sign: p = 0.99)",
            constant(math.log((1 - 0.01) / 0.01)),
        ),
        "prior_0.01": (
            "b = -log((1 - 0.01) / 0.01) = -4.595 (p = 0.01)",
            lambda layer: init_prior_bias_(layer, 0.01),
        ),
        "prior_uniform": (
            f"b = -log((1 - pi) / pi), pi = 3 / C = {uniform:.4g}",
            lambda layer: init_prior_bias_(layer, uniform),
        ),
        "per_class": (
            "per-class b_c = -log((1 - pi_c) / pi_c), pi_c from label counts",
            lambda layer: init_prior_bias_(layer, priors),
        ),
        "focal_per_class": (
            "per-class focal-aware b_c (alpha = 0.25, gamma = 2)",
            lambda layer: init_prior_bias_(layer, priors, alpha=ALPHA, gamma=GAMMA),
        ),
    }
    results = []
    for key, (label, set_bias) in variants.items():
        layer = nn.Linear(1, args.items)
        with torch.no_grad():
            set_bias(layer)
        losses = train(set_bias, users, targets, args.items, args.steps, args.batch, args.seed)
        results.append(
            {
                "key": key,
                "label": label,
                "initial_bias_mean": layer.bias.mean().item(),
                "loss": losses,
            }
        )
        print(f"{key:16s} loss step 0 {losses[0]:10.4f}  last {losses[-1]:8.4f}")
    out = {
        "config": {
            "rows": args.rows,
            "items": args.items,
            "dim": args.dim,
            "positives_per_row": 3,
            "steps": args.steps,
            "batch": args.batch,
            "seed": args.seed,
            "loss": f"FocalLoss(alpha={ALPHA}, gamma={GAMMA}, reduction='sum_over_positives')",
            "optimizer": "SGD(lr=0.1, momentum=0.9)",
        },
        "variants": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
