"""Next-item recommendation on MovieLens-1M in gSASRec's layout, with a choice of losses.

Reads top to bottom: options -> data -> losses -> evaluation -> training every position -> main.

    python examples/movielens.py --data DIR --output OUT                 # full-catalogue BCE
    python examples/movielens.py --data DIR --output OUT --loss gbce     # gSASRec's sampled gBCE
    python examples/movielens.py --data DIR --output OUT --max-minutes 25 --seed 1

``DIR`` holds the folders of gSASRec's split (Petrov & Macdonald, RecSys 2023): ``train/input.txt``
(one user a line: item ids separated by spaces, oldest first), ``val/input.txt`` and
``val/output.txt`` (a validation user's history, and the item(s) that came next), and optionally
``test/input.txt`` and ``test/output.txt`` in the same layout. Item ids are non-negative integers;
the catalogue is the ids of ``train/input.txt``, and an id of val/ or test/ outside it is an error.

Model: a SASRec-style :class:`focalrec.models.SequenceTransformer` reading the last
``--max-length`` items. Training: each epoch reads every ``train/input.txt`` user once (their last
``--max-length`` + 1 items, as gSASRec does) and trains **every position at once**: one causal pass
gives a state per position (``sequence_features``), and position ``t`` learns the item at
``t + 1`` (``focalrec.models.next_item_targets``). ``--loss``:

- ``bce``, ``focal``: a sigmoid loss over the **whole catalogue** for every position, computed by
  the fused output layer (``focalrec.linear_sigmoid_focal_loss``): the positions' states are rows,
  their next items index lists, and no (positions x items) logits are formed;
- ``softmax``: full cross-entropy over the catalogue (the logits are formed);
- ``gbce``: gSASRec's sampled loss: the positive and ``--negatives`` items drawn uniformly (with
  replacement) per position, the positive's probability raised to ``beta``
  (:func:`focalrec.gbce_beta`).

Evaluation, as published: every item ranked for each validation (test) user, the items of the
user's whole input history removed from the ranking, NDCG@10, Recall@10 and Recall@1 averaged over
users (``focalrec.ndcg_at_k`` and ``focalrec.recall_at_k`` with ``exclude``). The model is
validated after every epoch; the best validation NDCG@10 is kept. Training stops after
``--epochs``, after ``--patience`` epochs without a better validation NDCG@10, or after
``--max-minutes`` of training (checked after every step; a last validation then follows).

Outputs in OUT: ``metrics.json`` (``val``, ``test`` when test/ exists, ``seconds``: the training
time, ``steps``: the optimizer steps taken, and the configuration, the best epoch and the
per-epoch history) and, when test/ exists, ``predictions.txt``: one line per ``test/input.txt``
user, in its order, the 10 recommended item ids (the files' own ids), best first, space-separated,
history items excluded. A run writes them into a hidden folder beside OUT and replaces OUT as a
whole once they are all written (``atomic.py``): an interrupted or failed run leaves OUT as it
was, and an OUT holding anything but a run's files is refused.

Errors: every option and input file is checked before anything is written; a bad one is one line
on stderr, ``error: ...``, naming the option (exit status 2) or the file, line and column (exit
status 1).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import atomic
import focalrec
from challenge_data import DataError
from challenge_data import _text as read_text
from focalrec.models import SequenceTransformer, next_item_targets
from options import OneLineParser, integer, number, path, shown

METRICS, PREDICTIONS = "metrics.json", "predictions.txt"
OUTPUTS = (METRICS, PREDICTIONS)
LOSSES = ("bce", "focal", "softmax", "gbce")
EVAL_USERS = 256
"""Users scored at once at evaluation: ``EVAL_USERS x C`` scores."""

# -------------------------------------------------------------------------------------------------
# Options
# -------------------------------------------------------------------------------------------------

FOCAL_ONLY = {"alpha": 0.25, "gamma": 2.0}
GBCE_ONLY = {"negatives": 256, "gbce_t": 0.75}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = integer(1)
    p.add_argument(
        "--data",
        type=path,
        required=True,
        metavar="DIR",
        help="train/, val/ [test/] in gSASRec's layout",
    )
    p.add_argument(
        "--output", type=path, required=True, metavar="OUT", help="replaced as a whole by a run"
    )
    p.add_argument(
        "--loss", choices=LOSSES, default="bce", help="the training loss (default: %(default)s)"
    )
    p.add_argument("--alpha", type=number(0, 1), help="--loss focal: alpha (default: 0.25)")
    p.add_argument("--gamma", type=number(0), help="--loss focal: gamma (default: 2)")
    p.add_argument(
        "--negatives", type=size, help="--loss gbce: negatives per position (default: 256)"
    )
    p.add_argument("--gbce-t", type=number(0, 1), help="--loss gbce: calibration t (default: 0.75)")
    p.add_argument("--epochs", type=size, default=200, help="most epochs (default: %(default)s)")
    p.add_argument(
        "--patience",
        type=size,
        default=10,
        help="epochs without a better val NDCG@10 (default: %(default)s)",
    )
    p.add_argument(
        "--max-minutes",
        type=number(0, low_open=True),
        help="stop training after M minutes (default: no limit)",
    )
    p.add_argument(
        "--seed",
        type=integer(0, 2**32 - 1),
        default=0,
        help="initialization, shuffling, negatives (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size", type=size, default=128, help="users a step (default: %(default)s)"
    )
    p.add_argument(
        "--lr",
        type=number(0, low_open=True),
        default=1e-2,
        help="Adam's learning rate (default: %(default)s)",
    )
    p.add_argument(
        "--embedding-dim",
        type=size,
        default=64,
        help="item embeddings and states (default: %(default)s)",
    )
    p.add_argument("--blocks", type=size, default=2, help="attention blocks (default: %(default)s)")
    p.add_argument("--heads", type=size, default=1, help="attention heads (default: %(default)s)")
    p.add_argument(
        "--dropout", type=number(0, 1, high_open=True), default=0.2, help="(default: %(default)s)"
    )
    p.add_argument(
        "--max-length", type=size, default=200, help="most recent items read (default: %(default)s)"
    )
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    args = p.parse_args(argv)
    for owner, names in (("focal", FOCAL_ONLY), ("gbce", GBCE_ONLY)):
        for name, default in names.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
            elif args.loss != owner:
                option = "--" + name.replace("_", "-")
                p.error(f"argument {option}: applies to --loss {owner} only, not {args.loss}")
    if args.embedding_dim % args.heads:
        p.error(
            f"argument --heads: must divide --embedding-dim {args.embedding_dim}, got {args.heads}"
        )
    return args


# -------------------------------------------------------------------------------------------------
# Data: gSASRec's text files
# -------------------------------------------------------------------------------------------------


@dataclass
class Split:
    """One folder's users: their whole histories and next items, in internal ids ``[0, C)``."""

    histories: list[list[int]]
    targets: list[list[int]]


@dataclass
class Data:
    """The files' users in internal ids; ``items[i]`` is the files' id of item ``i``."""

    items: list[int]
    train: list[list[int]]
    val: Split
    test: Split | None


def read_lines(path: Path) -> list[tuple[int, list[int]]]:
    """``(line, ids)`` for every line of ``path``: item ids (integers >= 0) separated by spaces."""
    rows = []
    for number_, line in enumerate(read_text(path).splitlines(), start=1):
        ids = []
        for token in re.finditer(r"\S+", line):
            text = token.group()
            if not (text.isascii() and text.isdigit() and len(text) <= 18):
                raise DataError(
                    path,
                    f"expected an item id (an integer in [0, 10^18)), got {shown(text)}",
                    line=number_,
                    column=str(token.start() + 1),
                )
            ids.append(int(text))
        if not ids:
            raise DataError(path, "no item ids on this line", line=number_)
        rows.append((number_, ids))
    if not rows:
        raise DataError(path, "no users (the file is empty)")
    return rows


def read_split(folder: Path, vocabulary: dict[int, int]) -> Split:
    """``folder/input.txt`` and ``folder/output.txt``, line by line, in internal ids."""
    inputs, outputs = read_lines(folder / "input.txt"), read_lines(folder / "output.txt")
    if len(inputs) != len(outputs):
        raise DataError(
            folder / "output.txt",
            f"{len(outputs)} lines for the {len(inputs)} users of input.txt (one line each)",
        )
    split = Split([], [])
    for file, rows, into in (
        ("input.txt", inputs, split.histories),
        ("output.txt", outputs, split.targets),
    ):
        for line, ids in rows:
            unknown = [item for item in ids if item not in vocabulary]
            if unknown:
                raise DataError(
                    folder / file,
                    f"item id {unknown[0]} does not occur in train/input.txt (the catalogue)",
                    line=line,
                )
            into.append([vocabulary[i] for i in ids])
    return split


def load_data(root: Path) -> Data:
    if not root.is_dir():
        raise DataError(root, "not a folder (expected one holding train/, val/ and maybe test/)")
    train = read_lines(root / "train" / "input.txt")
    if all(len(ids) < 2 for _, ids in train):
        raise DataError(root / "train" / "input.txt", "no user has 2 items or more: no next item")
    items = sorted({i for _, ids in train for i in ids})
    vocabulary = {item: index for index, item in enumerate(items)}
    test = read_split(root / "test", vocabulary) if (root / "test").exists() else None
    return Data(
        items,
        [[vocabulary[i] for i in ids] for _, ids in train],
        read_split(root / "val", vocabulary),
        test,
    )


def left_pad(sequences: list[list[int]], width: int) -> Tensor:
    """The last ``width`` items of each sequence, left-padded with -1: ``(N, width)`` int64."""
    out = torch.full((len(sequences), width), -1, dtype=torch.long)
    for row, items in enumerate(sequences):
        tail = items[max(len(items) - width, 0) :]
        if tail:
            out[row, width - len(tail) :] = torch.tensor(tail)
    return out


# -------------------------------------------------------------------------------------------------
# Losses over every position: rows (M, D) of states, the next item of each (M, 1)
# -------------------------------------------------------------------------------------------------


def gbce_loss(scores: Tensor, beta: float) -> Tensor:
    r"""gBCE of rows of scores ``(M, 1 + k)``, the positive's first: the mean over the entries of

    .. math::
        -\beta \log \sigma(s^+) - \sum_{j \le k} \log\big(1 - \sigma(s^-_j)\big)
        = \beta\, \mathrm{softplus}(-s^+) + \sum_{j \le k} \mathrm{softplus}(s^-_j)

    divided by ``M (1 + k)``, as gSASRec averages it: BCE with the positive term weighted by
    ``beta`` (``pos_weight``), column 0 the positive of every row.
    """
    positive = torch.zeros(len(scores), 1, dtype=torch.long, device=scores.device)
    return focalrec.sigmoid_focal_loss(scores, positive, alpha=None, gamma=0.0, pos_weight=beta)


def position_loss(
    args: argparse.Namespace,
    model: SequenceTransformer,
    rows: Tensor,
    target: Tensor,
    generator: torch.Generator,
) -> Tensor:
    """The ``--loss`` of the states ``rows`` ``(M, D)`` given their next items ``(M, 1)``."""
    weight, bias = model.output_weight(), model.output.bias
    if args.loss in ("bce", "focal"):  # the whole catalogue, through the fused layer
        focal = args.loss == "focal"
        return focalrec.linear_sigmoid_focal_loss(
            rows,
            weight,
            target,
            linear_bias=bias,
            alpha=args.alpha if focal else None,
            gamma=args.gamma if focal else 0.0,
            reduction="sum_over_positives",
        )
    if args.loss == "softmax":
        return F.cross_entropy(F.linear(rows, weight, bias), target[:, 0])
    negatives = torch.randint(0, model.num_items, (len(rows), args.negatives), generator=generator)
    sample = torch.cat([target, negatives], dim=1)  # (M, 1 + k): the positive first
    if sample.shape[1] * weight.shape[1] < weight.shape[0]:  # gather the sampled items' weights
        scores = torch.einsum("md,mkd->mk", rows, weight[sample]) + bias[sample]
    else:  # fewer numbers: every item's score, then the sampled ones
        scores = F.linear(rows, weight, bias).gather(1, sample)
    return gbce_loss(scores, focalrec.gbce_beta(args.negatives, model.num_items, args.gbce_t))


# -------------------------------------------------------------------------------------------------
# Evaluation: full ranking, the history excluded
# -------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: SequenceTransformer, split: Split) -> tuple[dict[str, float], Tensor]:
    """NDCG@10, Recall@10 and Recall@1 averaged over the users, and their top 10 ``(U, 10)``."""
    model.eval()
    sums = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@1": 0.0}
    top = []
    for s in range(0, len(split.histories), EVAL_USERS):
        histories = split.histories[s : s + EVAL_USERS]
        scores = model(left_pad(histories, model.history_length))
        if not bool(torch.isfinite(scores).all()):
            raise TrainingDiverged("the model's scores are not finite")
        exclude = left_pad(histories, max(len(h) for h in histories))  # the whole history
        targets = left_pad(
            split.targets[s : s + EVAL_USERS], max(map(len, split.targets[s : s + EVAL_USERS]))
        )
        sums["ndcg@10"] += float(
            focalrec.ndcg_at_k(scores, targets, 10, exclude=exclude, reduction="sum")
        )
        sums["recall@10"] += float(
            focalrec.recall_at_k(scores, targets, 10, exclude=exclude, reduction="sum")
        )
        sums["recall@1"] += float(
            focalrec.recall_at_k(scores, targets, 1, exclude=exclude, reduction="sum")
        )
        top.append(focalrec.topk_items(scores, 10, exclude=exclude))
    return {k: v / len(split.histories) for k, v in sums.items()}, torch.cat(top)


def predictions_text(items: list[int], top: Tensor) -> str:
    """One line per user: the recommended items in the files' ids, best first."""
    return "".join(" ".join(str(items[i]) for i in row if i >= 0) + "\n" for row in top.tolist())


# -------------------------------------------------------------------------------------------------
# Training
# -------------------------------------------------------------------------------------------------


class TrainingDiverged(RuntimeError):
    """The loss or the scores stopped being finite."""


def train(
    args: argparse.Namespace, data: Data, say: Any
) -> tuple[SequenceTransformer, dict[str, Any]]:
    """Train every position of every user; the model at its best validation epoch, and a record."""
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    num_items = len(data.items)
    # Every user's last max_length + 1 items: position t of the first max_length predicts t + 1.
    history, target, mask = next_item_targets(left_pad(data.train, args.max_length + 1))
    model = SequenceTransformer(
        num_items,
        args.max_length,
        embedding_dim=args.embedding_dim,
        num_blocks=args.blocks,
        num_heads=args.heads,
        dropout=args.dropout,
        # The output bias starts at each item's rate as a next item: popularity from step 0.
        prior=focalrec.class_priors(target[mask], num_items),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    limit = math.inf if args.max_minutes is None else 60 * args.max_minutes
    start = time.perf_counter()
    steps, epochs, since_best, stopped_by = 0, [], 0, "epochs"
    best: dict[str, Any] = {}
    best_state = copy.deepcopy(model.state_dict())
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(history), generator=generator)
        total, seen = 0.0, 0
        for s in range(0, len(order), args.batch_size):
            # --8<-- [start:every-position]
            users = order[s : s + args.batch_size]
            keep = mask[users]  # the positions that have a next item
            if not bool(keep.any()):  # users of a single item: nothing to learn here
                continue
            states = model.sequence_features(history[users])  # (B, L, D): a state per position
            loss = position_loss(args, model, states[keep], target[users][keep], generator)
            # --8<-- [end:every-position]
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(f"the training loss is not finite at step {steps + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            steps, total, seen = steps + 1, total + loss.item() * len(users), seen + len(users)
            if time.perf_counter() - start > limit:
                stopped_by = "max_minutes"
                break
        val, _ = evaluate(model, data.val)
        seconds = time.perf_counter() - start
        loss_mean = total / seen
        epochs.append(
            {"epoch": epoch, "loss": loss_mean, "steps": steps, "seconds": seconds, "val": val}
        )
        say(
            f"epoch {epoch}: loss {loss_mean:.4f}, val NDCG@10 {val['ndcg@10']:.4f} "
            f"({seconds:.0f} s, {steps} steps)"
        )
        if not best or val["ndcg@10"] > best["val"]["ndcg@10"]:
            best, best_state, since_best = epochs[-1], copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
            if since_best >= args.patience:
                stopped_by = "patience"
        if stopped_by != "epochs":
            break
    model.load_state_dict(best_state)
    record = {
        "seconds": time.perf_counter() - start,
        "steps": steps,
        "best": best,
        "stopped_by": stopped_by,
        "epochs": epochs,
    }
    return model, record


# -------------------------------------------------------------------------------------------------
# Main
# -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # a bad option value: one line on stderr, exit status 2

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    try:
        data = load_data(args.data)
        run = atomic.RunDirectory(args.output, OUTPUTS)
    except atomic.RunDirectoryError as e:
        return fail(f"argument --output: {e}", status=2)
    except DataError as e:
        return fail(e)
    say(
        f"data: {len(data.train)} training users, {len(data.val.histories)} validation users, "
        f"{len(data.test.histories) if data.test else 0} test users, {len(data.items)} items"
    )
    try:
        model, record = train(args, data, say)
        val, _ = evaluate(model, data.val)
        summary: dict[str, Any] = {"val": val}
        if data.test is not None:
            summary["test"], top = evaluate(model, data.test)
        summary |= {"seconds": record["seconds"], "steps": record["steps"]}
        summary |= {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            **record,
        }
        folder = run.begin(keep_partial=False)
        if data.test is not None:
            atomic.write_text(folder / PREDICTIONS, predictions_text(data.items, top))
        atomic.save_json(folder / METRICS, summary)
        run.commit()  # the new run replaces OUT as a whole
    except TrainingDiverged as e:
        return fail(e)
    except atomic.RunDirectoryError as e:
        return fail(e)
    except OSError as e:  # a full disk, a folder made read-only: OUT is as it was
        with contextlib.suppress(OSError):
            run.discard()
        return fail(f"{e.filename or run.path}: cannot write: {e.strerror or e}")
    best = record["best"]
    say(f"best epoch {best['epoch']}: val NDCG@10 {val['ndcg@10']:.4f}; outputs in {args.output}")
    return 0


def fail(error: Exception | str, status: int = 1) -> int:
    """Report ``error`` as one line on stderr; the exit status."""
    print(f"error: {error}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
