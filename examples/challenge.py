"""Predict the next 3 programming challenges a user solves (Analytics Vidhya challenge, mAP@3).

Reads top to bottom: check -> load -> encode -> windows -> train -> evaluate -> submit.

    python examples/challenge.py                       # built-in synthetic data, about a minute
    python examples/challenge.py --data DIR --output OUT
    python examples/challenge.py --data DIR --output OUT --resume     # after an interruption
    torchrun --nproc_per_node=2 examples/challenge.py --data DIR      # DistributedDataParallel
    python examples/challenge.py --fused-head      # the output layer computed inside the loss

``DIR`` holds the challenge's ``train.csv`` (required), ``test.csv`` and ``challenge_data.csv``
(optional); see ``challenge_data.py`` for the schema and the checks. A model sees the last ``L``
challenges of a user (``L`` = the number of rows of a ``test.csv`` user, 10 in the original
challenge; without ``test.csv``, the most common number of rows of a ``train.csv`` user minus 3)
and scores every challenge; the 3 best ones the user has not solved yet are the prediction.

Data: users of ``train.csv`` are split into training and validation users. Training windows are
every (last ``L`` challenges, next 3) window of the training users, plus the windows *inside* the
first ``L`` challenges of the validation and test users (what is known about them at prediction
time). Each validation user is scored on their first ``L`` challenges -> next 3, as test users are.

Outputs in OUT: ``metrics.json`` (configuration, per-epoch loss and validation mAP@3, baselines,
timings), ``training_curve.png``, ``best_model.pt`` (the best epoch's weights and the vocabulary),
``checkpoint.pt`` (the last epoch, for ``--resume``) and, with ``test.csv``, ``submission.csv``.
They are one run's: a run writes its files into a hidden folder beside OUT
(``runs/.challenge.partial`` for ``runs/challenge``; a checkpoint after every epoch) and replaces
OUT as a whole only once they are all written (see ``atomic.py``). So an interrupted or failed run
leaves OUT as it was; ``--resume`` continues the partial run, or a complete run in OUT whose
``--epochs`` or ``--patience`` has grown. OUT may hold only files of a run: a folder with anything
else in it, or the current folder, is refused rather than replaced.

Errors: every option, input file and checkpoint is checked before anything is written. A bad one is
one line on stderr, ``error: ...``, naming the option (exit status 2) or the file, line and column
(exit status 1), and nothing on disk changes. ``--alpha`` and ``--gamma`` apply to ``--loss focal``
only and ``--momentum`` to ``--optimizer sgd`` only: given with another loss or optimizer they are
refused, not ignored. A training whose loss or scores stop being finite stops with one line naming
the epoch (its partial run is deleted: a resume would replay it). A write that fails (a full disk)
stops with one line; ``--resume`` then goes on from the last checkpoint written.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules beside this file

import atomic
import baselines
import focalrec
import synthetic
from challenge_data import (
    ChallengeData,
    DataError,
    history_windows,
    load_challenge_data,
    pad_sequences,
    sliding_windows,
    split_users,
    validation_size,
)
from focalrec.models import SequenceGRU, SequenceMLP, SequenceRecommender, SequenceTransformer
from options import OneLineParser, OptionError, integer, number, path

# =================================================================================================
# DEFAULTS -- the best settings we know for the real data. Every command-line default comes from
# this block; a user who passes only --data gets them.
# =================================================================================================


@dataclass(frozen=True)
class Defaults:
    """Default values of the command-line options (the model's own options: MODEL_DEFAULTS)."""

    model: str = "gru"  # mlp | gru | transformer (gru: the best on the real data)
    loss: str = "bce"  # focal | bce | softmax (bce: see ablation.py and the docs' loss ablation)
    alpha: float = 0.25  # focal loss alpha (weight of the positives); --loss focal only
    gamma: float = 2.0  # focal loss gamma; --loss focal only
    optimizer: str = "adamw"  # adamw | sgd
    epochs: int = 30
    patience: int = 2  # epochs without a better validation mAP@3 before stopping
    metadata: bool = False  # use challenge_data.csv's item features (--model mlp only)
    prior: str = "frequency"  # output-bias prior: "frequency" (per item) or a float such as 0.01
    val_fraction: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class ModelDefaults:
    """Per-model values of the model options and of AdamW's --lr, when not given."""

    embedding_dim: int
    dropout: float
    lr: float  # with --optimizer adamw; --optimizer sgd keeps the write-up's 0.1
    hidden_sizes: tuple[int, ...] | None = None  # mlp: widths of the hidden layers
    hidden_size: int | None = None  # gru: size of the state
    layers: int | None = None  # gru: stacked GRUs; transformer: attention blocks
    heads: int | None = None  # transformer: attention heads


@dataclass(frozen=True)
class OptimizerDefaults:
    """Per-optimizer values of --weight-decay, --batch-size, --momentum (and SGD's --lr)."""

    weight_decay: float
    batch_size: int
    lr: float | None = None  # None: the model's (MODEL_DEFAULTS)
    momentum: float | None = None  # SGD only


DEFAULTS = Defaults()
MODEL_DEFAULTS = {
    # The write-up's model: the last L item embeddings concatenated, one hidden layer.
    "mlp": ModelDefaults(embedding_dim=50, dropout=0.0, lr=3e-3, hidden_sizes=(256,)),
    "gru": ModelDefaults(embedding_dim=128, dropout=0.2, lr=2e-3, hidden_size=256, layers=1),
    "transformer": ModelDefaults(embedding_dim=64, dropout=0.1, lr=3e-3, layers=2, heads=2),
}
OPTIMIZER_DEFAULTS = {
    "adamw": OptimizerDefaults(weight_decay=1e-4, batch_size=512),
    # The write-up's settings, kept as the faithful baseline: `--optimizer sgd`.
    "sgd": OptimizerDefaults(weight_decay=1e-4, batch_size=256, lr=0.1, momentum=0.9),
}
# =================================================================================================

LOSSES = ("focal", "bce", "softmax")
K = 3  # mAP@3, the challenge's metric
CHUNK = 4096  # rows scored at once in evaluation
CHECKPOINT, BEST_MODEL, METRICS = "checkpoint.pt", "best_model.pt", "metrics.json"
CURVE, SUBMISSION = "training_curve.png", "submission.csv"
OUTPUTS = (CHECKPOINT, BEST_MODEL, METRICS, CURVE, SUBMISSION)
RESUMABLE = ("epochs", "patience")  # options that --resume may change
MODELS = tuple(MODEL_DEFAULTS)
# Options that only some losses, optimizers or models use: option -> (the choosing option, the
# choices that use it).
USED_ONLY_BY = {
    "alpha": ("loss", ("focal",)),
    "gamma": ("loss", ("focal",)),
    "momentum": ("optimizer", ("sgd",)),
    "hidden_sizes": ("model", ("mlp",)),
    "metadata": ("model", ("mlp",)),
    "hidden_size": ("model", ("gru",)),
    "layers": ("model", ("gru", "transformer")),
    "heads": ("model", ("transformer",)),
}
SIZE = integer(1, 2**31 - 1)  # layer widths and counts


# -------------------------------------------------------------------------------------------------
# Command line: every value is checked as it is parsed (options.py)
# -------------------------------------------------------------------------------------------------


def _per_optimizer(name: str) -> str:
    values = ", ".join(f"{o}: {getattr(v, name)}" for o, v in OPTIMIZER_DEFAULTS.items())
    return f"default per optimizer ({values})"


def _per_model(name: str) -> str:
    values = ", ".join(
        f"{m}: {getattr(v, name)}"
        for m, v in MODEL_DEFAULTS.items()
        if getattr(v, name) is not None
    )
    return f"default per model ({values})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = DEFAULTS
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data and outputs")
    g.add_argument(
        "--data",
        type=path,
        metavar="DIR",
        help="directory with train.csv [test.csv] [challenge_data.csv] "
        "(default: a built-in deterministic synthetic dataset)",
    )
    g.add_argument(
        "--output",
        type=path,
        metavar="OUT",
        default=Path("runs/challenge"),
        help="directory for the outputs, replaced as a whole by each run (default: %(default)s)",
    )
    g.add_argument(
        "--history-len",
        type=SIZE,
        metavar="L",
        help="challenges a model sees (default: inferred, see above)",
    )
    g.add_argument(
        "--val-fraction",
        type=number(0, 1, low_open=True, high_open=True),
        default=d.val_fraction,
        help="fraction of train.csv users held out for validation (default: %(default)s)",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run of OUT, or its complete run with more --epochs",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        choices=MODELS,
        default=d.model,
        help="the write-up's MLP over the last L items, a GRU, or causal self-attention "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--embedding-dim",
        type=SIZE,
        help=f"size of each item embedding; {_per_model('embedding_dim')}",
    )
    g.add_argument(
        "--hidden-sizes",
        type=SIZE,
        nargs="*",
        help=f"--model mlp: widths of the hidden layers, none for a linear model; "
        f"{_per_model('hidden_sizes')}",
    )
    g.add_argument(
        "--hidden-size",
        type=SIZE,
        help=f"--model gru: size of its state; {_per_model('hidden_size')}",
    )
    g.add_argument(
        "--layers",
        type=SIZE,
        help=f"--model gru: stacked GRUs, transformer: attention blocks; {_per_model('layers')}",
    )
    g.add_argument(
        "--heads", type=SIZE, help=f"--model transformer: attention heads; {_per_model('heads')}"
    )
    g.add_argument(
        "--dropout",
        type=number(0, 1, high_open=True),
        help=f"dropout probability; {_per_model('dropout')}",
    )
    g.add_argument(
        "--metadata",
        action=argparse.BooleanOptionalAction,
        help=f"--model mlp: use challenge_data.csv's item features (default: {d.metadata})",
    )
    g.add_argument(
        "--prior",
        type=prior,
        default=d.prior,
        help="positive rate the output bias starts from: 'frequency' (each item's "
        "rate among the training targets) or a number in (0, 1) (default: %(default)s)",
    )
    g = p.add_argument_group("training")
    g.add_argument(
        "--loss",
        choices=LOSSES,
        default=d.loss,
        help="sigmoid focal loss, binary cross-entropy or softmax cross-entropy "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--alpha",
        type=alpha,
        help=f"focal loss alpha in [0, 1], or 'none' for no weighting; --loss focal only "
        f"(default: {d.alpha})",
    )
    g.add_argument(
        "--gamma",
        type=number(0),
        help=f"focal loss gamma, --loss focal only (default: {d.gamma})",
    )
    g.add_argument(
        "--fused-head",
        action="store_true",
        help="compute the output layer inside the loss (focalrec.linear_sigmoid_focal_loss): "
        "the same loss and gradients without the (batch, items) logits; --loss bce and focal "
        "only",
    )
    g.add_argument(
        "--optimizer",
        choices=sorted(OPTIMIZER_DEFAULTS),
        default=d.optimizer,
        help="sgd with its defaults is the write-up's optimizer (default: %(default)s)",
    )
    g.add_argument(
        "--lr",
        type=number(0, low_open=True),
        help=f"learning rate; --optimizer adamw: {_per_model('lr')}, "
        f"--optimizer sgd: {OPTIMIZER_DEFAULTS['sgd'].lr}",
    )
    g.add_argument("--weight-decay", type=number(0), help=_per_optimizer("weight_decay"))
    g.add_argument(
        "--momentum",
        type=number(0, 1, high_open=True),
        help=f"--optimizer sgd only (default: {OPTIMIZER_DEFAULTS['sgd'].momentum})",
    )
    g.add_argument(
        "--batch-size",
        type=SIZE,
        help=f"global batch, split over processes; {_per_optimizer('batch_size')}",
    )
    g.add_argument(
        "--epochs",
        type=SIZE,
        default=d.epochs,
        help="at most this many epochs (default: %(default)s)",
    )
    g.add_argument(
        "--patience",
        type=SIZE,
        default=d.patience,
        help="stop after this many epochs without a better validation mAP@3 (default: %(default)s)",
    )
    g.add_argument(
        "--seed",
        type=integer(0, 2**32 - 1),
        default=d.seed,
        help="seed of the split, the initialization and the shuffling (default: %(default)s)",
    )
    args = p.parse_args(argv)
    opt, model = OPTIMIZER_DEFAULTS[args.optimizer], MODEL_DEFAULTS[args.model]
    for name in ("weight_decay", "batch_size"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(opt, name))
    for name in ("lr", "embedding_dim", "dropout"):
        if getattr(args, name) is None:
            value = getattr(opt, name, None) if name == "lr" else None
            setattr(args, name, getattr(model, name) if value is None else value)
    defaults = {
        "alpha": d.alpha,
        "gamma": d.gamma,
        "momentum": OPTIMIZER_DEFAULTS["sgd"].momentum,
        "metadata": d.metadata,
        **{
            name: getattr(model, name)
            for name in ("hidden_sizes", "hidden_size", "layers", "heads")
        },
    }
    for name, (chooser, choices) in USED_ONLY_BY.items():
        if getattr(args, chooser) in choices:
            if getattr(args, name) is None:
                value = defaults[name]
                setattr(args, name, list(value) if isinstance(value, tuple) else value)
        elif getattr(args, name) is not None:  # refused rather than silently ignored
            chosen = getattr(args, chooser)
            flag = name.replace("_", "-")
            p.error(
                f"argument --{flag}: applies to --{chooser} {' and '.join(choices)} only, "
                f"not --{chooser} {chosen}"
            )
    if args.fused_head and args.loss == "softmax":
        p.error("argument --fused-head: applies to --loss bce and focal only, not --loss softmax")
    if args.alpha == "none":
        args.alpha = None
    return args


def alpha(text: str) -> str | float:
    """The ``--alpha`` type: a number in [0, 1], or ``'none'`` (no weighting)."""
    if text == "none":
        return text
    try:
        return number(0, 1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 1] or 'none', got {text!r}"
        ) from None


def prior(text: str) -> str | float:
    """The ``--prior`` type: ``'frequency'`` or a number in (0, 1)."""
    if text == "frequency":
        return text
    try:
        return number(0, 1, low_open=True, high_open=True)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'frequency' or a number in (0, 1), got {text!r}"
        ) from None


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The options that define a run, as plain values (stored in metrics.json and checkpoints).

    An option the chosen loss or optimizer does not use is ``None``.
    """
    skip = {"data", "output", "resume", "quiet"}
    config = {k: v for k, v in vars(args).items() if k not in skip}
    config["data"] = "synthetic" if args.data is None else str(args.data)
    return config


def check_options(args: argparse.Namespace, data: ChallengeData, world: int) -> None:
    """The checks of options that depend on the data or on the number of processes."""
    if args.metadata and data.metadata is None:
        raise OptionError(
            "--metadata", f"{args.data} has no challenge_data.csv to take the item features from"
        )
    if len(data.train) < 2:
        raise DataError(
            Path(data.files[0]),
            f"{len(data.train)} user: at least 2 are needed (training and validation users)",
        )
    try:
        validation_size(len(data.train), args.val_fraction)
    except ValueError:
        raise OptionError(
            "--val-fraction",
            f"{args.val_fraction} of the {len(data.train)} train.csv users leaves none to train on",
        ) from None
    if args.batch_size < world:
        raise OptionError("--batch-size", f"{args.batch_size} is less than {world} processes")


# -------------------------------------------------------------------------------------------------
# Processes: one, or several under torchrun (DistributedDataParallel over gloo, on the CPU)
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processes:
    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, *values: float) -> list[float]:
        """Sum ``values`` over all processes (float64, one all-reduce)."""
        t = torch.tensor(values, dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(t)
        return t.tolist()


def start_processes() -> Processes:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
        return Processes(dist.get_rank(), dist.get_world_size())
    return Processes(0, 1)


def say(procs: Processes, quiet: bool, message: str) -> None:
    if procs.main and not quiet:
        print(message, flush=True)


# -------------------------------------------------------------------------------------------------
# Load -> encode -> windows
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """Index lists (padded with -1) for training, validation and test."""

    train_history: Tensor  # (N, L) the last L challenges before each cut, left-padded
    train_targets: Tensor  # (N, 3) the next 3 challenges
    val_history: Tensor  # (V, L) validation users' first L challenges
    val_targets: Tensor  # (V, 3) their next 3
    test_history: Tensor  # (T, L) test users' histories
    train_sequences: Tensor  # (U, longest) every sequence the windows come from, right-padded


def load_data(args: argparse.Namespace) -> tuple[ChallengeData, str]:
    """Read and validate the CSV files (or generate the synthetic ones); also a fingerprint."""
    if args.data is None:
        with tempfile.TemporaryDirectory() as tmp:
            synthetic.write_dataset(Path(tmp))
            data = load_challenge_data(Path(tmp), history_len=args.history_len)
            digest = fingerprint(data.files)
        return data, digest
    if not args.data.is_dir():
        raise DataError(args.data, "not a directory (expected one holding train.csv)")
    data = load_challenge_data(args.data, history_len=args.history_len)
    return data, fingerprint(data.files)


def fingerprint(files: list[str]) -> str:
    h = hashlib.sha256()
    for name in files:
        h.update(Path(name).name.encode())
        h.update(Path(name).read_bytes())
    return h.hexdigest()[:16]


def make_windows(data: ChallengeData, val_fraction: float, seed: int) -> Windows:
    L = data.history_len
    train_idx, val_idx = split_users(len(data.train), val_fraction, seed)
    train_users = [data.train[i] for i in train_idx]
    val_users = [data.train[i] for i in val_idx]
    known = [s[:L] for s in val_users] + data.test  # histories known at prediction time
    parts = [sliding_windows(train_users, L), sliding_windows(known, L)]
    val_history, val_targets = history_windows(val_users, L)
    test_history, _ = history_windows(data.test, L)
    return Windows(
        train_history=torch.from_numpy(np.concatenate([h for h, _ in parts])),
        train_targets=torch.from_numpy(np.concatenate([t for _, t in parts])),
        val_history=torch.from_numpy(val_history),
        val_targets=torch.from_numpy(val_targets),
        test_history=torch.from_numpy(test_history),
        train_sequences=torch.from_numpy(pad_sequences(train_users + known)),
    )


# -------------------------------------------------------------------------------------------------
# Model, loss, optimizer
# -------------------------------------------------------------------------------------------------


def build_model(
    config: dict[str, Any], data: ChallengeData, windows: Windows
) -> SequenceRecommender:
    torch.manual_seed(config["seed"])
    prior: float | Tensor
    if config["prior"] == "frequency":  # each item's smoothed rate among the training targets
        prior = focalrec.class_priors(windows.train_targets, data.num_items)
    else:
        prior = float(config["prior"])
    common = {
        "embedding_dim": config["embedding_dim"],
        "dropout": config["dropout"],
        "prior": prior,
    }
    try:
        if config["model"] == "gru":
            return SequenceGRU(
                data.num_items,
                data.history_len,
                hidden_size=config["hidden_size"],
                num_layers=config["layers"],
                **common,
            )
        if config["model"] == "transformer":
            return SequenceTransformer(
                data.num_items,
                data.history_len,
                num_blocks=config["layers"],
                num_heads=config["heads"],
                **common,
            )
        meta = data.metadata if config["metadata"] else None
        return SequenceMLP(
            data.num_items,
            data.history_len,
            hidden_sizes=config["hidden_sizes"],
            item_features=None if meta is None else torch.from_numpy(meta.categorical),
            item_numeric=None if meta is None else torch.from_numpy(meta.numeric),
            **common,
        )
    except ValueError as e:  # e.g. an embedding size the attention heads do not divide
        raise OptionError(f"--model {config['model']}", str(e)) from None
    except (RuntimeError, MemoryError) as e:
        if "allocat" not in str(e) and "overflow" not in str(e):
            raise
        raise OptionError(
            "--embedding-dim",
            f"{config['embedding_dim']} for --model {config['model']} with "
            f"{data.num_items} items: the model's weights do not fit in memory",
        ) from None


def softmax_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of a softmax over all items, averaged over the (non-padding) targets."""
    valid = targets >= 0
    log_p = F.log_softmax(logits, dim=1).gather(1, targets.clamp_min(0))
    return -(log_p * valid).sum() / valid.sum().clamp_min(1)


class TrainingLoss(nn.Module):
    """The training loss of ``model`` on ``(history, targets)``, as one module (what
    ``DistributedDataParallel`` wraps): the loss of the model's logits, or with ``--fused-head``
    the same loss of its features and output layer, fused, never forming the logits."""

    def __init__(self, model: SequenceRecommender, config: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.loss = make_loss(config)
        self.fused = bool(config.get("fused_head"))
        focal = config["loss"] == "focal"
        self.alpha = config["alpha"] if focal else None  # bce: gamma 0 without alpha
        self.gamma = config["gamma"] if focal else 0.0

    def forward(self, history: Tensor, targets: Tensor) -> Tensor:
        if not self.fused:
            return self.loss(self.model(history), targets)
        return focalrec.linear_sigmoid_focal_loss(
            self.model.features(history),
            self.model.output_weight(),
            targets,
            linear_bias=self.model.output.bias,
            alpha=self.alpha,
            gamma=self.gamma,
            reduction="sum_over_positives",
            validate_args=False,
        )


def make_loss(config: dict[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    """The training loss of ``(logits (N, C), targets (N, 3) index list)``.

    The targets were checked when the data was loaded, so the loss does not check them again
    (``validate_args=False``); logits that stop being finite show as a NaN training loss, which
    :func:`train` reports as divergence.
    """
    if config["loss"] == "focal":
        return focalrec.FocalLoss(
            alpha=config["alpha"],
            gamma=config["gamma"],
            reduction="sum_over_positives",
            validate_args=False,
        )
    if config["loss"] == "bce":  # gamma=0 without alpha is BCE-with-logits, on sparse targets
        return focalrec.FocalLoss(
            alpha=None, gamma=0.0, reduction="sum_over_positives", validate_args=False
        )
    return softmax_loss


def make_optimizer(config: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config["lr"],
            momentum=config["momentum"],
            weight_decay=config["weight_decay"],
        )
    return torch.optim.AdamW(
        model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"]
    )


# -------------------------------------------------------------------------------------------------
# Train and evaluate
# -------------------------------------------------------------------------------------------------


def train_one_epoch(
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    windows: Windows,
    config: dict[str, Any],
    epoch: int,
    procs: Processes,
    quiet: bool,
) -> float:
    """One pass over the training windows; returns the mean training loss over all processes.

    The shuffling and dropout randomness of an epoch derive from (seed, epoch, rank) only, so a
    resumed run replays exactly the epochs an uninterrupted run would have done. Each global batch
    is split evenly over the processes.
    """
    n = len(windows.train_history)
    order = torch.randperm(
        n, generator=torch.Generator().manual_seed(config["seed"] * 1009 + epoch)
    )
    torch.manual_seed(config["seed"] * 1_000_003 + epoch * 101 + procs.rank)
    batch = config["batch_size"]
    starts = [s for s in range(0, n, batch) if min(batch, n - s) >= procs.world]
    loss_fn.train()
    total, count = 0.0, 0
    bar = tqdm(
        starts,
        desc=f"epoch {epoch}",
        leave=False,
        disable=quiet or not procs.main or not sys.stderr.isatty(),
        file=sys.stderr,
    )
    for s in bar:
        rows = order[s : s + batch][procs.rank :: procs.world]
        loss = loss_fn(windows.train_history[rows], windows.train_targets[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        value = loss.item()
        total += value * len(rows)
        count += len(rows)
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
    loss_sum, rows_seen = procs.all_sum(total, count)
    return loss_sum / max(rows_seen, 1)


@torch.no_grad()
def validation_map(model: nn.Module, windows: Windows, procs: Processes) -> float:
    """mAP@3 of the validation users, their own history excluded, over all processes.

    Each process scores its share of the users; the streaming metric all-reduces its state.
    NaN when a score is not finite (a diverged model), on every process alike.
    """
    model.eval()
    metric = focalrec.MeanAveragePrecisionAtK(K)
    history = windows.val_history[procs.rank :: procs.world]
    targets = windows.val_targets[procs.rank :: procs.world]
    not_finite = 0
    for s in range(0, len(history), CHUNK):
        h = history[s : s + CHUNK]
        scores = model(h)
        if not bool(torch.isfinite(scores).all()):
            not_finite += 1
            continue
        metric.update(scores, targets[s : s + CHUNK], exclude=h)
    if procs.all_sum(not_finite)[0] > 0:
        return math.nan
    return float(metric.compute())


def evaluate_baselines(windows: Windows, num_items: int) -> dict[str, float]:
    """Validation mAP@3 of the popularity and item-transition baselines (``baselines.py``)."""
    seqs, history = windows.train_sequences, windows.val_history
    scores = {
        "popularity": baselines.popularity_scores(seqs, num_items, len(history)),
        "transition": baselines.transition_scores(seqs, history, num_items),
    }
    return {
        name: float(
            focalrec.map_at_k(focalrec.topk_items(s, K, exclude=history), windows.val_targets, K)
        )
        for name, s in scores.items()
    }


@torch.no_grad()
def predict_top3(model: nn.Module, history: Tensor) -> Tensor:
    """The 3 best items of each row that are not in its history, ``(N, 3)`` in rank order."""
    model.eval()
    chunks = []
    for s in range(0, len(history), CHUNK):
        scores = model(history[s : s + CHUNK])
        if not bool(torch.isfinite(scores).all()):
            raise TrainingDiverged("the model's scores are not finite: training diverged")
        chunks.append(focalrec.topk_items(scores, K, exclude=history[s : s + CHUNK]))
    return torch.cat(chunks) if chunks else torch.empty(0, K, dtype=torch.long)


# -------------------------------------------------------------------------------------------------
# Checkpoints: plain tensors, dicts and numbers, written atomically, read with weights_only=True
# -------------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Everything needed to continue a run: weights, optimizer, history and early stopping."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, float]] | None = None
    best_epoch: int = 0
    best_map: float = -1.0
    best_model: dict[str, Tensor] | None = None
    bad_epochs: int = 0  # epochs since the best one
    done: bool = False


class TrainingDiverged(Exception):
    """The loss or the scores stopped being finite."""


def save_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    config: dict[str, Any],
    digest: str,
) -> None:
    atomic.save_torch(
        folder / CHECKPOINT,
        {
            "config": config,
            "data_fingerprint": digest,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "state": asdict(state),
            "rng": torch.get_rng_state(),
        },
    )


CHECKPOINT_TYPES = {
    "config": dict,
    "data_fingerprint": str,
    "model": dict,
    "optimizer": dict,
    "state": dict,
    "rng": Tensor,
}


def used_config(config: dict[str, Any]) -> dict[str, Any]:
    """What a run uses of ``config``: the data by fingerprint, not by path; the options its loss
    and optimizer ignore as None (so do older checkpoints' values); ``--prior`` as a number."""
    used = {k: v for k, v in config.items() if k != "data"}
    used.setdefault("model", "mlp")  # checkpoints from before --model trained the MLP
    used.setdefault("fused_head", False)  # and those from before --fused-head did not fuse
    for name, (chooser, choices) in USED_ONLY_BY.items():
        if used.get(chooser) not in choices:
            used[name] = None
    if isinstance(used.get("prior"), str) and used["prior"] != "frequency":
        used["prior"] = float(used["prior"])
    return used


def resume(
    path: Path,
    config: dict[str, Any],
    digest: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> TrainState:
    """Restore ``model`` and ``optimizer`` from the checkpoint ``path``; its training state.

    The checkpoint must belong to this data (by fingerprint) and these options (all but
    :data:`RESUMABLE`), and hold every tensor with this model's shapes.

    Raises:
        DataError: naming the checkpoint and what is wrong with it.
    """
    try:
        content = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot be read: {e.strerror or e}") from None
    if not content:
        raise DataError(path, "the file is empty, not a checkpoint")
    try:
        ckpt = torch.load(io.BytesIO(content), weights_only=True)
    except Exception:  # torch's many errors suggest weights_only=False, which would run the file
        raise DataError(
            path, "cannot be read as a checkpoint: truncated, damaged or not written by torch.save"
        ) from None
    problem = _checkpoint_problem(ckpt)
    if problem is not None:
        raise DataError(path, f"not a checkpoint of this example: {problem}")
    if ckpt["data_fingerprint"] != digest:
        raise DataError(path, "the checkpoint was trained on different data files")
    trained, now = used_config(ckpt["config"]), used_config(config)
    for key in sorted(set(trained) | set(now)):
        if key not in RESUMABLE and trained.get(key) != now.get(key):
            raise DataError(
                path,
                f"the checkpoint was trained with {key}={trained.get(key)!r}, not "
                f"{now.get(key)!r}; only {', '.join(RESUMABLE)} may change on --resume",
            )
    state = TrainState(**ckpt["state"])
    for weights in (ckpt["model"], state.best_model):
        mismatch = _shape_mismatch(weights, model.state_dict())
        if mismatch is not None:
            raise DataError(path, f"not a checkpoint of this model: {mismatch}")
    model.load_state_dict(ckpt["model"])
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError):
        raise DataError(path, "its optimizer or random state does not fit this run") from None
    # --epochs and --patience may have grown since: the run goes on if they allow it.
    state.done = state.bad_epochs >= config["patience"] or state.epoch >= config["epochs"]
    return state


STATE_TYPES: dict[str, type | tuple[type, ...]] = {
    "epoch": int,
    "history": list,
    "best_epoch": int,
    "best_map": float,
    "best_model": (dict, type(None)),
    "bad_epochs": int,
    "done": bool,
}
HISTORY_KEYS = {"epoch", "train_loss", "val_map3", "seconds"}


def _checkpoint_problem(ckpt: object) -> str | None:
    """What makes ``ckpt`` other than a checkpoint :func:`save_checkpoint` wrote, or None."""
    if not isinstance(ckpt, dict):
        return f"it holds a {type(ckpt).__name__}, not a dict"
    if "vocabulary" in ckpt and "optimizer" not in ckpt:
        return f"it is a {BEST_MODEL} (the best weights only): resume from {CHECKPOINT}"
    for key, kind in CHECKPOINT_TYPES.items():
        if not isinstance(ckpt.get(key), kind):
            return f"its {key!r} is missing or not a {kind.__name__}"
    state = ckpt["state"]
    if set(state) != set(STATE_TYPES):
        return f"its state has the keys {sorted(state)}, not {sorted(STATE_TYPES)}"
    for key, kinds in STATE_TYPES.items():
        if not isinstance(state[key], kinds):
            return f"its state's {key} is a {type(state[key]).__name__}"
    history = state["history"]
    if not all(isinstance(h, dict) and set(h) == HISTORY_KEYS for h in history):
        return f"its state's history is not a list of {sorted(HISTORY_KEYS)}"
    if len(history) != state["epoch"] or (state["epoch"] > 0) != (state["best_model"] is not None):
        return f"its state is inconsistent (epoch {state['epoch']}, {len(history)} epochs recorded)"
    return None


def _shape_mismatch(weights: dict[str, Any] | None, expected: dict[str, Tensor]) -> str | None:
    if weights is None:
        return None
    if set(weights) != set(expected):
        missing = sorted(set(expected) - set(weights)) or sorted(set(weights) - set(expected))
        return f"its weights differ in name ({missing[0]})"
    for name, tensor in expected.items():
        got = weights[name]
        if not isinstance(got, Tensor) or got.shape != tensor.shape:
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            return f"{name} has shape {shape}, this model's is {tuple(tensor.shape)}"
    return None


def train(
    model: SequenceRecommender,
    optimizer: torch.optim.Optimizer,
    windows: Windows,
    config: dict[str, Any],
    procs: Processes,
    state: TrainState,
    save: Callable[[TrainState], None],
    quiet: bool,
) -> TrainState:
    """Train from ``state`` on, with early stopping on validation mAP@3; ``save`` every epoch.

    Raises:
        TrainingDiverged: when the epoch's training loss or validation scores are not finite.
    """
    loss_fn: nn.Module = TrainingLoss(model, config)
    if procs.world > 1:
        loss_fn = DistributedDataParallel(loss_fn)
    assert state.history is not None
    while not state.done and state.epoch < config["epochs"]:
        epoch = state.epoch + 1
        start = time.perf_counter()
        loss = train_one_epoch(loss_fn, optimizer, windows, config, epoch, procs, quiet)
        val_map = validation_map(model, windows, procs)
        if not (math.isfinite(loss) and math.isfinite(val_map)):  # alike on every process
            what = f"training loss is {loss}"
            if math.isfinite(loss):
                what = "validation scores are not finite"
            raise TrainingDiverged(
                f"training diverged in epoch {epoch}: the {what}; "
                f"try a lower --lr than {config['lr']:g}"
            )
        seconds = time.perf_counter() - start
        improved = val_map > state.best_map
        if improved:
            state.best_epoch, state.best_map, state.bad_epochs = epoch, val_map, 0
            state.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            state.bad_epochs += 1
        state.epoch = epoch
        state.history.append(
            {"epoch": epoch, "train_loss": loss, "val_map3": val_map, "seconds": seconds}
        )
        state.done = state.bad_epochs >= config["patience"] or epoch >= config["epochs"]
        if procs.main:
            save(state)
        say(
            procs,
            quiet,
            f"epoch {epoch:3d}  loss {loss:.5f}  val mAP@3 {val_map:.4f}"
            f"{'  best' if improved else ''}  ({seconds:.1f} s)",
        )
    return state


# -------------------------------------------------------------------------------------------------
# Outputs
# -------------------------------------------------------------------------------------------------


def submission_csv(data: ChallengeData, top3: Tensor) -> str:
    """``user_sequence,challenge`` rows: ``{user}_{L+1}`` .. ``{user}_{L+3}`` in rank order.

    Written by the ``csv`` module, so an ID holding a comma or a quote is quoted as the input
    files quote it.
    """
    L = data.history_len
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["user_sequence", "challenge"])
    for user, items in zip(data.test_users, top3.tolist(), strict=True):
        writer.writerows([f"{user}_{L + 1 + r}", data.vocabulary[i]] for r, i in enumerate(items))
    return text.getvalue()


def plot_curve(
    path: Path, history: list[dict[str, float]], baseline_maps: dict[str, float], best_epoch: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_map.plot(epochs, [h["val_map3"] for h in history], marker="o", label="model")
    for (name, value), style in zip(baseline_maps.items(), ("--", ":", "-."), strict=False):
        ax_map.axhline(value, linestyle=style, color="gray", label=f"{name} baseline")
    ax_map.axvline(best_epoch, color="green", alpha=0.3, label=f"best epoch {best_epoch}")
    ax_map.set(xlabel="epoch", ylabel="validation mAP@3", title="validation mAP@3")
    ax_map.legend()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic.write_bytes(path, png.getvalue())


def write_results(
    folder: Path,
    data: ChallengeData,
    windows: Windows,
    model: nn.Module,
    state: TrainState,
    summary: dict[str, Any],
) -> None:
    """Write best_model.pt, submission.csv (with test.csv), metrics.json and the curve."""
    assert state.history is not None
    assert state.best_model is not None
    best = {"model": state.best_model, "vocabulary": data.vocabulary, "epoch": state.best_epoch}
    atomic.save_torch(folder / BEST_MODEL, {**best, "config": summary["config"]})
    if data.test:
        model.load_state_dict(state.best_model)
        atomic.write_text(
            folder / SUBMISSION, submission_csv(data, predict_top3(model, windows.test_history))
        )
    atomic.save_json(folder / METRICS, summary)
    plot_curve(folder / CURVE, state.history, summary["baselines_val_map3"], state.best_epoch)


def fail(procs: Processes, error: Exception | str, status: int = 1) -> int:
    """Report ``error`` as one line on stderr (from the main process); the exit status."""
    if procs.main:
        print(f"error: {error}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # a bad option value: one line on stderr, exit status 2
    procs = start_processes()
    config = run_config(args)
    quiet = args.quiet
    t0 = time.perf_counter()

    # Check -> load -> encode -> windows: every file, option and checkpoint is checked before
    # anything is written.
    try:
        data, digest = load_data(args)
        config["history_len"] = data.history_len
        check_options(args, data, procs.world)
        windows = make_windows(data, config["val_fraction"], config["seed"])
        run = atomic.RunDirectory(args.output, OUTPUTS)
        model = build_model(config, data, windows)
        optimizer = make_optimizer(config, model)
        state, resumed_from = TrainState(history=[]), None
        if args.resume:
            resumed_from = run.find(CHECKPOINT)
            if resumed_from is None:
                raise DataError(
                    run.path, "no checkpoint to resume from (run once without --resume)"
                )
            state = resume(resumed_from, config, digest, model, optimizer)
    except OptionError as e:
        return fail(procs, e, status=2)
    except atomic.RunDirectoryError as e:
        return fail(procs, f"argument --output: {e}", status=2)
    except DataError as e:
        return fail(procs, e)
    say(
        procs,
        quiet,
        f"data: {config['data']}: {len(data.train)} train.csv users, "
        f"{len(data.test)} test.csv users, {data.num_items} challenges, L={data.history_len}",
    )
    say(
        procs,
        quiet,
        f"windows: {len(windows.train_history)} training, "
        f"{len(windows.val_history)} validation users, {len(windows.test_history)} test users",
    )
    load_seconds = time.perf_counter() - t0
    continuing = resumed_from is not None and resumed_from.parent == run.partial
    if resumed_from is not None:
        say(procs, quiet, f"resumed from {resumed_from} after epoch {state.epoch}")
        if state.done and not continuing:
            if procs.main:
                run.recover()
            say(procs, quiet, f"the run in {args.output} is complete: nothing to do")
            return 0

    # Baselines on the same split.
    baseline_maps = evaluate_baselines(windows, data.num_items)
    for name, value in baseline_maps.items():
        say(procs, quiet, f"{name} baseline: val mAP@3 {value:.4f}")

    # Train, keeping the best epoch; every file goes into the partial run, which then becomes OUT.
    try:
        if procs.world > 1:
            dist.barrier()  # every process has checked the output folder
        if procs.main:
            run.begin(keep_partial=continuing)
        if procs.world > 1:
            dist.barrier()

        def save(state: TrainState) -> None:
            save_checkpoint(run.partial, model, optimizer, state, config, digest)

        state = train(model, optimizer, windows, config, procs, state, save, quiet)
        assert state.history is not None

        # Evaluate the best epoch and submit.
        if procs.main:
            train_seconds = sum(h["seconds"] for h in state.history)
            best_seconds = sum(h["seconds"] for h in state.history[: state.best_epoch])
            summary = {
                "config": config,
                "data": {
                    "files": data.files if args.data else [Path(f).name for f in data.files],
                    "fingerprint": digest,
                    "history_len": data.history_len,
                    "num_items": data.num_items,
                    "item_metadata_used": config["metadata"] and data.metadata is not None,
                    "train_csv_users": len(data.train),
                    "test_csv_users": len(data.test),
                    "training_windows": len(windows.train_history),
                    "validation_users": len(windows.val_history),
                },
                "world_size": procs.world,
                "epochs": state.history,
                "best_epoch": state.best_epoch,
                "best_val_map3": state.best_map,
                "baselines_val_map3": baseline_maps,
                "timings_s": {
                    "load_and_windows": load_seconds,
                    "training": train_seconds,
                    "training_to_best_epoch": best_seconds,
                    "total": time.perf_counter() - t0,
                },
            }
            write_results(run.partial, data, windows, model, state, summary)
            run.commit()  # the new run replaces OUT as a whole
            say(
                procs,
                quiet,
                f"best epoch {state.best_epoch}: val mAP@3 {state.best_map:.4f} "
                f"({best_seconds:.0f} s of training); outputs in {args.output}",
            )
    except TrainingDiverged as e:  # resuming would replay the same epochs: nothing to keep
        if procs.main:
            with contextlib.suppress(OSError):
                run.discard()
        return fail(procs, e)
    except atomic.RunDirectoryError as e:
        return fail(procs, e)
    except OSError as e:  # a full disk, a folder made read-only: OUT is as it was
        if procs.main and not (run.partial / CHECKPOINT).is_file():
            with contextlib.suppress(OSError):
                run.discard()  # nothing in it to resume from
        waiting = f"; the new run waits complete in {run.new}" if run.new.exists() else ""
        return fail(procs, f"{e.filename or run.path}: cannot write: {e.strerror or e}{waiting}")
    if procs.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
