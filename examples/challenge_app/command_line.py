"""The command line of ``examples/challenge.py``: its options, their checks and defaults.

Usage:

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
With ``--training positions`` (the default for the GRU and the transformer) the same windows are
grouped into rows that the model reads once: a user's first ``L`` challenges, every position
scored on its next 3 from the state after it (its history starts at the user's first challenge,
as a validation user's does), and a row of its own for each later window.

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
import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import synthetic
from challenge_data import ChallengeData, DataError, load_challenge_data, validation_size
from options import OneLineParser, OptionError, integer, number, path

__all__ = [
    "DEFAULTS",
    "LOSSES",
    "MODELS",
    "MODEL_DEFAULTS",
    "OPTIMIZER_DEFAULTS",
    "RESUMABLE",
    "TRAINING",
    "check_options",
    "load_data",
    "make_optimizer",
    "model_option_errors",
    "parse_args",
    "run_config",
    "used_config",
]

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
    training: str = "positions"  # positions | windows (the mlp reads windows only)
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
    lr_decay: float  # the learning rate of epoch e is --lr * lr_decay ** (e - 1)
    hidden_sizes: tuple[int, ...] | None = None  # mlp: widths of the hidden layers
    hidden_size: int | None = None  # gru: size of the state
    layers: int | None = None  # gru: stacked GRUs; transformer: attention blocks
    heads: int | None = None  # transformer: attention heads


@dataclass(frozen=True)
class OptimizerDefaults:
    """Per-optimizer values of --weight-decay, --batch-size, --momentum (and SGD's --lr)."""

    weight_decay: float
    batch_size: int  # windows per step
    position_batch_size: int  # rows per step with --training positions (~3 windows a row)
    lr: float | None = None  # None: the model's (MODEL_DEFAULTS)
    momentum: float | None = None  # SGD only


DEFAULTS = Defaults()
MODEL_DEFAULTS = {
    # The write-up's model: the last L item embeddings concatenated, one hidden layer.
    "mlp": ModelDefaults(embedding_dim=50, dropout=0.0, lr=3e-3, lr_decay=1.0, hidden_sizes=(256,)),
    # Trained on every position (--training positions): an epoch costs about half of one on
    # windows, spent on a wider state and more epochs at a decaying rate (docs/example.md).
    "gru": ModelDefaults(
        embedding_dim=128, dropout=0.2, lr=3e-3, lr_decay=0.8, hidden_size=384, layers=1
    ),
    "transformer": ModelDefaults(
        embedding_dim=64, dropout=0.1, lr=3e-3, lr_decay=1.0, layers=2, heads=2
    ),
}
OPTIMIZER_DEFAULTS = {
    "adamw": OptimizerDefaults(weight_decay=1e-4, batch_size=512, position_batch_size=128),
    # The write-up's settings, kept as the faithful baseline: `--optimizer sgd`.
    "sgd": OptimizerDefaults(
        weight_decay=1e-4, batch_size=256, position_batch_size=256, lr=0.1, momentum=0.9
    ),
}
# =================================================================================================

LOSSES = ("focal", "bce", "softmax")
TRAINING = ("positions", "windows")
PER_POSITION_MODELS = ("gru", "transformer")  # the models with per-position states
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


def parse_args(argv: list[str] | None = None, description: str = "") -> argparse.Namespace:
    """The options of ``argv``, every value checked; ``--help`` shows the first paragraph of
    ``description`` and this module's usage notes."""
    title = description.strip().split("\n\n", 1)[0]  # the script's first paragraph
    description = f"{title}\n\n{(__doc__ or '').split(chr(10) * 2, 1)[1]}"
    d = DEFAULTS
    p = OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        "--training",
        choices=TRAINING,
        help="what one training example is: 'positions', a user's challenges read once by "
        "--model gru or transformer, every position scored on its next 3 from its state; or "
        "'windows', each (last L, next 3) window read on its own. The same examples either way "
        f"(default: {d.training}; --model mlp: windows, the only one it reads)",
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
    g.add_argument(
        "--lr-decay",
        type=number(0, 1, low_open=True),
        help="the learning rate of epoch e is --lr times this to the power e - 1; "
        f"{_per_model('lr_decay')}",
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
        help="global batch, split over processes: windows, or rows with --training positions; "
        f"{_per_optimizer('batch_size')}; rows: {_per_optimizer('position_batch_size')[8:]}",
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
    if args.training is None:
        args.training = d.training if args.model in PER_POSITION_MODELS else "windows"
    elif args.training == "positions" and args.model not in PER_POSITION_MODELS:
        p.error(
            f"argument --training: positions applies to --model "
            f"{' and '.join(PER_POSITION_MODELS)} only, not --model {args.model}"
        )
    if args.weight_decay is None:
        args.weight_decay = opt.weight_decay
    if args.batch_size is None:
        positions = args.training == "positions"
        args.batch_size = opt.position_batch_size if positions else opt.batch_size
    for name in ("lr", "lr_decay", "embedding_dim", "dropout"):
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
# What a run is: its options as plain values, and its data by content
# -------------------------------------------------------------------------------------------------


def used_config(config: dict[str, Any]) -> dict[str, Any]:
    """What a run uses of ``config``: the data by fingerprint, not by path; the options its loss
    and optimizer ignore as None (so do older checkpoints' values); ``--prior`` as a number."""
    used = {k: v for k, v in config.items() if k != "data"}
    used.setdefault("model", "mlp")  # checkpoints from before --model trained the MLP
    used.setdefault("fused_head", False)  # and those from before --fused-head did not fuse
    used.setdefault("training", "windows")  # and those from before --training read windows
    used.setdefault("lr_decay", 1.0)  # and those from before --lr-decay kept the rate
    for name, (chooser, choices) in USED_ONLY_BY.items():
        if used.get(chooser) not in choices:
            used[name] = None
    if isinstance(used.get("prior"), str) and used["prior"] != "frequency":
        used["prior"] = float(used["prior"])
    return used


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


@contextlib.contextmanager
def model_option_errors(config: dict[str, Any], num_items: int) -> Iterator[None]:
    """Turn a model's refusal of its sizes into an option error naming the option."""
    try:
        yield
    except ValueError as e:  # e.g. an embedding size the attention heads do not divide
        raise OptionError(f"--model {config['model']}", str(e)) from None
    except (RuntimeError, MemoryError) as e:
        if "allocat" not in str(e) and "overflow" not in str(e):
            raise
        raise OptionError(
            "--embedding-dim",
            f"{config['embedding_dim']} for --model {config['model']} with "
            f"{num_items} items: the model's weights do not fit in memory",
        ) from None


def make_optimizer(config: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``--optimizer`` with its options."""
    lr, decay = config["lr"], config["weight_decay"]
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=config["momentum"], weight_decay=decay
        )
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
