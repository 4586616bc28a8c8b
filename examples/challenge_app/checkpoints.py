"""Checkpoints: everything needed to continue a run, written atomically, read back with checks.

A checkpoint holds plain tensors, dicts and numbers only and is read with ``weights_only=True``; a
resume checks that it belongs to the same data (by fingerprint) and options (all but
:data:`~challenge_app.command_line.RESUMABLE`) and fits the model, and says which one it does not.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import atomic
from challenge_app.command_line import RESUMABLE, used_config
from challenge_data import DataError

__all__ = [
    "BEST_MODEL",
    "CHECKPOINT",
    "CURVE",
    "METRICS",
    "OUTPUTS",
    "SUBMISSION",
    "TrainState",
    "TrainingDiverged",
    "resume",
    "save_checkpoint",
]

CHECKPOINT, BEST_MODEL, METRICS = "checkpoint.pt", "best_model.pt", "metrics.json"
CURVE, SUBMISSION = "training_curve.png", "submission.csv"
OUTPUTS = (CHECKPOINT, BEST_MODEL, METRICS, CURVE, SUBMISSION)
"""The files of a run: an output folder holding anything else is refused (see ``atomic.py``)."""


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

    def record(
        self, model: nn.Module, loss: float, val_map: float, seconds: float, config: dict[str, Any]
    ) -> bool:
        """Add the next epoch's results and keep the best weights (early stopping after
        ``config["patience"]`` epochs without a better validation mAP@3, or at
        ``config["epochs"]``); whether the epoch is the best so far."""
        assert self.history is not None
        self.epoch += 1
        improved = val_map > self.best_map
        if improved:
            self.best_epoch, self.best_map, self.bad_epochs = self.epoch, val_map, 0
            self.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        self.history.append(
            {"epoch": self.epoch, "train_loss": loss, "val_map3": val_map, "seconds": seconds}
        )
        self.done = self.bad_epochs >= config["patience"] or self.epoch >= config["epochs"]
        return improved


class TrainingDiverged(Exception):
    """The loss or the scores stopped being finite."""

    @classmethod
    def check(cls, epoch: int, loss: float, val_map: float, lr: float) -> None:
        """Raise when the epoch's training loss or validation mAP@3 is not finite."""
        if math.isfinite(loss) and math.isfinite(val_map):
            return
        what = f"training loss is {loss}"
        if math.isfinite(loss):
            what = "validation scores are not finite"
        raise cls(f"training diverged in epoch {epoch}: the {what}; try a lower --lr than {lr:g}")


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


def start(
    resume_asked: bool,
    run: atomic.RunDirectory,
    config: dict[str, Any],
    digest: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> tuple[TrainState, Path | None]:
    """A new run's empty state, or with ``--resume`` the state of the run's last checkpoint (the
    partial run's, else the complete run's) and its path."""
    if not resume_asked:
        return TrainState(history=[]), None
    found = run.find(CHECKPOINT)
    if found is None:
        raise DataError(run.path, "no checkpoint to resume from (run once without --resume)")
    return resume(found, config, digest, model, optimizer), found
