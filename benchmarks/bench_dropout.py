"""A SequenceTransformer training step on the CPU: focalrec's dropout vs ``torch.nn.Dropout``.

One step is what ``examples/movielens.py`` does: a batch of ``N`` histories of ``L`` items, one
causal pass giving a state per position (``sequence_features``), the full-catalogue BCE of every
position through the fused output layer, backward, Adam. The same model is timed twice per
repeat, interleaved: as built (its dropout layers draw 16 random bits per element, one 64-bit
draw per 4 elements) and with every dropout layer replaced by ``torch.nn.Dropout`` of the same
probability (one random number per element). It reports the median time per step of each and
the median ratio within a repeat, and the dropout layers' share of the step (the same step with
the dropout probability set to 0).

    python benchmarks/bench_dropout.py                       # N = 128, L = 200, D = 64, C = 3416
    python benchmarks/bench_dropout.py --repeats 9 --json out.json
    python benchmarks/bench_dropout.py --quick
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from focalrec import linear_sigmoid_focal_loss
from focalrec.models import SequenceTransformer, next_item_targets
from harness import environment, interleaved_times, median_ratio, write_json


def with_dropout(model: nn.Module, make: Callable[[float], nn.Module]) -> nn.Module:
    """A copy of ``model`` whose dropout layers are ``make(p)`` (attention dropout unchanged)."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Dropout):
                setattr(module, name, make(child.p))
    return model


def make_steps(args: argparse.Namespace) -> dict[str, Callable[[], None]]:
    torch.manual_seed(args.seed)
    n, length, c = args.n, args.length, args.items
    sequences = torch.randint(0, c, (n, length + 1))
    history, target, mask = next_item_targets(sequences)
    model = SequenceTransformer(
        c, length, embedding_dim=args.d, num_blocks=2, num_heads=1, dropout=args.dropout
    )
    models = {
        "focalrec_dropout": model,
        "torch_dropout": with_dropout(model, nn.Dropout),
        "no_dropout": with_dropout(model, lambda p: nn.Dropout(0.0)),
    }

    def step_of(m: nn.Module) -> Callable[[], None]:
        optimizer = torch.optim.Adam(m.parameters(), lr=1e-3)

        def step() -> None:
            states = m.sequence_features(history)[mask]  # type: ignore[operator]
            loss = linear_sigmoid_focal_loss(
                states, m.output_weight(), target[mask], linear_bias=m.output.bias, gamma=0.0
            )  # type: ignore[operator]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    return {name: step_of(m.train()) for name, m in models.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    times = interleaved_times(make_steps(args), args.repeats)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    ratio = median_ratio(times["focalrec_dropout"], times["torch_dropout"])
    share = 1.0 - median_ratio(times["no_dropout"], times["torch_dropout"])
    print(
        f"N = {args.n}, L = {args.length}, D = {args.d}, C = {args.items}, dropout {args.dropout}, "
        f"{torch.get_num_threads()} thread(s), median of {args.repeats} interleaved repeats:\n"
        f"  torch.nn.Dropout    {ms['torch_dropout']:8.1f} ms/step "
        f"(its dropout layers: {share:.0%} of the step)\n"
        f"  focalrec's Dropout  {ms['focalrec_dropout']:8.1f} ms/step = {ratio:.2f}x\n"
        f"  no dropout          {ms['no_dropout']:8.1f} ms/step"
    )
    report = {
        "environment": environment(
            n=args.n, length=args.length, d=args.d, items=args.items, dropout=args.dropout
        ),
        "repeats": args.repeats,
        "ms_per_step": ms,
        "ratio_to_torch_dropout": ratio,
        "torch_dropout_share": share,
        "times_s": times,
    }
    if args.json is not None:
        write_json(args.json, report)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=128, help="histories per step N")
    parser.add_argument("--length", type=int, default=200, help="items per history L")
    parser.add_argument("--d", type=int, default=64, help="embedding size D")
    parser.add_argument("--items", type=int, default=3416, help="catalogue size C")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes for smoke tests")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.length, args.d, args.items = 4, 12, 8, 50
    return args


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
