"""Predict the next 3 programming challenges a user solves (Analytics Vidhya challenge, mAP@3).

Reads top to bottom: data -> windows -> model -> loss -> training loop -> validation mAP@3 ->
submission. Every step is a call into focalrec or a short function here; the command line (its
options and checks, resume, atomic output, torchrun) lives in ``challenge_app/`` beside this file.

    python examples/challenge.py                       # built-in synthetic data, about a minute
    python examples/challenge.py --data DIR --output OUT
    python examples/challenge.py --help                # every option, the outputs, the errors
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import atomic
import baselines
import focalrec
from challenge_app.checkpoints import OUTPUTS, TrainingDiverged, TrainState, save_checkpoint, start
from challenge_app.command_line import (
    DEFAULTS,  # noqa: F401  (importable from here, as the options' other defaults)
    MODEL_DEFAULTS,  # noqa: F401
    check_options,
    load_data,
    make_optimizer,
    model_option_errors,
    run_config,
    used_config,  # noqa: F401
)
from challenge_app.command_line import parse_args as _parse_args
from challenge_app.outcome import Outcome
from challenge_app.outputs import summary, write_results
from challenge_app.processes import Log, Processes, begin, end, resumed, start_processes
from challenge_data import ChallengeData, Windows, make_windows
from focalrec.models import SequenceGRU, SequenceMLP, SequenceRecommender, SequenceTransformer

K = 3  # mAP@3, the challenge's metric
CHUNK = 4096  # rows scored at once in evaluation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``challenge_app.command_line``), every value checked as it is parsed."""
    return _parse_args(argv, description=__doc__ or "")


# --- model, loss, optimizer ---------------------------------------------------------------------


def build_model(
    config: dict[str, Any], data: ChallengeData, windows: Windows
) -> SequenceRecommender:
    """The chosen model (``--model``), its output bias set from ``--prior``."""
    torch.manual_seed(config["seed"])
    prior = config["prior"]  # a rate in (0, 1) for every item, or "frequency":
    if prior == "frequency":  # each item's smoothed rate among the training targets
        prior = focalrec.class_priors(windows.train_targets, data.num_items)
    common = dict(embedding_dim=config["embedding_dim"], dropout=config["dropout"], prior=prior)
    n, L, meta = data.num_items, data.history_len, data.metadata if config["metadata"] else None
    with model_option_errors(config, n):  # e.g. heads that do not divide the embedding size
        if config["model"] == "gru":
            h, layers = config["hidden_size"], config["layers"]
            return SequenceGRU(n, L, hidden_size=h, num_layers=layers, **common)
        if config["model"] == "transformer":
            blocks, heads = config["layers"], config["heads"]
            return SequenceTransformer(n, L, num_blocks=blocks, num_heads=heads, **common)
        return SequenceMLP(
            n,
            L,
            hidden_sizes=config["hidden_sizes"],
            item_features=None if meta is None else torch.from_numpy(meta.categorical),
            item_numeric=None if meta is None else torch.from_numpy(meta.numeric),
            **common,
        )


def softmax_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of a softmax over all items, averaged over the (non-padding) targets."""
    valid = targets >= 0
    log_p = F.log_softmax(logits, dim=1).gather(1, targets.clamp_min(0))
    return -(log_p * valid).sum() / valid.sum().clamp_min(1)


def make_loss(config: dict[str, Any]) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss of ``(logits (N, C), targets (N, 3) index list)``: focal, BCE (focal with
    ``gamma = 0`` and no alpha) or softmax. The targets were checked when the data was loaded
    (``validate_args=False``); logits that stop being finite show as a NaN training loss."""
    if config["loss"] == "softmax":
        return softmax_loss
    focal = config["loss"] == "focal"
    return focalrec.FocalLoss(
        alpha=config["alpha"] if focal else None,
        gamma=config["gamma"] if focal else 0.0,
        reduction="sum_over_positives",
        validate_args=False,
    )


class TrainingLoss(nn.Module):
    """The loss of ``model`` as one module (what ``DistributedDataParallel`` wraps) on windows
    ``(N, L), (N, 3)`` or, ``--training positions``, rows ``(N, L), (N, L, 3)`` and ``mask``: the
    state after each position in ``mask`` (one causal pass) scored on its next 3 items. With
    ``--fused-head``, computed by ``focalrec.linear_sigmoid_focal_loss`` without the logits."""

    def __init__(self, model: SequenceRecommender, config: dict[str, Any]) -> None:
        super().__init__()
        self.model, self.loss, self.fused = model, make_loss(config), bool(config.get("fused_head"))

    def forward(self, history: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:  # a window per example
            features = self.model.features(history)
        else:  # every position of a row at once: (examples, D) and their (examples, 3) targets
            features, targets = self.model.sequence_features(history)[mask], targets[mask]
        if not self.fused:
            return self.loss(self.model.output(features), targets)
        assert isinstance(self.loss, focalrec.FocalLoss)
        return focalrec.linear_sigmoid_focal_loss(
            features,
            self.model.output_weight(),
            targets,
            linear_bias=self.model.output.bias,
            alpha=self.loss.alpha,
            gamma=self.loss.gamma,
            reduction="sum_over_positives",
            validate_args=False,
        )


# --- training loop, validation mAP@3, predictions -----------------------------------------------


def train_one_epoch(
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    windows: Windows,
    config: dict[str, Any],
    epoch: int,
    procs: Processes,
    quiet: bool,
) -> float:
    """One pass over the training examples (``--training``); the mean training loss over all
    processes. Shuffling and dropout derive from (seed, epoch, rank) only, so a resumed run replays
    exactly the epochs an uninterrupted run would have done; each global batch is split."""
    examples = windows.training_examples(config["training"])
    n, batch = len(examples[0]), config["batch_size"]
    gen = torch.Generator().manual_seed(config["seed"] * 1009 + epoch)
    order = torch.randperm(n, generator=gen)
    torch.manual_seed(config["seed"] * 1_000_003 + epoch * 101 + procs.rank)
    starts = [s for s in range(0, n, batch) if min(batch, n - s) >= procs.world]
    hide = quiet or not procs.main or not sys.stderr.isatty()
    loss_fn.train()
    total, count = 0.0, 0
    for s in (bar := tqdm(starts, desc=f"epoch {epoch}", leave=False, disable=hide)):
        rows = order[s : s + batch][procs.rank :: procs.world]
        loss = loss_fn(*(e[rows] for e in examples))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value, size = loss.item(), len(rows) if len(examples) == 2 else int(examples[2][rows].sum())
        total, count = total + value * size, count + size
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
    loss_sum, rows_seen = procs.all_sum(total, count)
    return loss_sum / max(rows_seen, 1)


@torch.no_grad()
def validation_map(model: nn.Module, windows: Windows, procs: Processes) -> float:
    """mAP@3 of the validation users, their own history excluded, over all processes (each scores
    its share; the streaming metric all-reduces its state). NaN when a score is not finite."""
    model.eval()
    metric = focalrec.MeanAveragePrecisionAtK(K)
    history = windows.val_history[procs.rank :: procs.world]
    targets = windows.val_targets[procs.rank :: procs.world]
    not_finite = 0
    for s in range(0, len(history), CHUNK):
        scores = model(history[s : s + CHUNK])
        if not bool(torch.isfinite(scores).all()):
            not_finite += 1
            continue
        metric.update(scores, targets[s : s + CHUNK], exclude=history[s : s + CHUNK])
    return math.nan if procs.all_sum(not_finite)[0] > 0 else float(metric.compute())


@torch.no_grad()
def predict_top3(model: nn.Module, history: Tensor) -> Tensor:
    """The 3 best items of each row that are not in its history, ``(N, 3)`` in rank order."""
    model.eval()
    chunks = [torch.empty(0, K, dtype=torch.long)]
    for s in range(0, len(history), CHUNK):
        scores = model(history[s : s + CHUNK])
        if not bool(torch.isfinite(scores).all()):
            raise TrainingDiverged("the model's scores are not finite: training diverged")
        chunks.append(focalrec.topk_items(scores, K, exclude=history[s : s + CHUNK]))
    return torch.cat(chunks)


def train(
    model: SequenceRecommender,
    optimizer: torch.optim.Optimizer,
    windows: Windows,
    config: dict[str, Any],
    procs: Processes,
    state: TrainState,
    save: Callable[[TrainState], None],
    log: Log,
) -> TrainState:
    """Train from ``state`` on, early stopping on validation mAP@3; ``save`` after every epoch."""
    loss_fn: nn.Module = TrainingLoss(model, config)
    if procs.world > 1:
        loss_fn = DistributedDataParallel(loss_fn)
    while not state.done and state.epoch < config["epochs"]:
        epoch, start_time = state.epoch + 1, time.perf_counter()
        for group in optimizer.param_groups:  # --lr-decay: from the epoch alone, as resume needs
            group["lr"] = config["lr"] * config["lr_decay"] ** (epoch - 1)
        loss = train_one_epoch(loss_fn, optimizer, windows, config, epoch, procs, log.quiet)
        val_map = validation_map(model, windows, procs)
        TrainingDiverged.check(epoch, loss, val_map, config["lr"])  # alike on every process
        seconds = time.perf_counter() - start_time
        best = state.record(model, loss, val_map, seconds, config)
        if procs.main:
            save(state)
        mark = "  best" if best else ""
        log(f"epoch {epoch:3d}  loss {loss:.5f}  val mAP@3 {val_map:.4f}{mark}  ({seconds:.1f} s)")
    return state


# --- the run: data -> windows -> model -> training -> outputs -----------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # a bad option value: one line on stderr, exit status 2
    procs = start_processes()  # one process, or several under torchrun
    config, outcome, t0 = run_config(args), Outcome(procs), time.perf_counter()
    log = Log(procs, args.quiet)
    with outcome.checking():  # every file, option and checkpoint is checked before any write
        data, digest = load_data(args)
        config["history_len"] = data.history_len
        check_options(args, data, procs.world)
        windows = make_windows(data, config["val_fraction"], config["seed"])
        run = atomic.RunDirectory(args.output, OUTPUTS)
        model = build_model(config, data, windows)
        optimizer = make_optimizer(config, model)
        state, resumed_from = start(args.resume, run, config, digest, model, optimizer)
    if outcome.status:
        return outcome.status
    log(f"data: {config['data']}: {data.describe()}")
    log(
        f"windows: {len(windows.train_history)} training ({len(windows.row_history)} rows of "
        f"positions), {len(windows.val_history)} validation, {len(windows.test_history)} test users"
    )
    load_seconds = time.perf_counter() - t0
    continuing, complete = resumed(run, procs, log, resumed_from, state.epoch, state.done)
    if complete:  # and --epochs / --patience did not grow
        log(f"the run in {args.output} is complete: nothing to do")
        return 0
    val = windows.train_sequences, windows.val_history, windows.val_targets, data.num_items, K
    baseline_maps = baselines.validation_maps(*val)
    for name, value in baseline_maps.items():
        log(f"{name} baseline: val mAP@3 {value:.4f}")

    with outcome.writing(run):  # every file goes into the partial run, which then becomes OUT
        begin(run, procs, keep_partial=continuing)

        def save(state: TrainState) -> None:
            save_checkpoint(run.partial, model, optimizer, state, config, digest)

        state = train(model, optimizer, windows, config, procs, state, save, log)
        if procs.main:  # the best epoch's model predicts the test users
            assert state.best_model is not None
            model.load_state_dict(state.best_model)
            top3 = predict_top3(model, windows.test_history) if data.test else None
            seconds = load_seconds, time.perf_counter() - t0
            info = (config, data, digest, windows, state, baseline_maps, procs.world, seconds)
            results = summary(*info, synthetic=args.data is None)
            write_results(run.partial, data, state, results, top3)
            run.commit()  # the new run replaces OUT as a whole
            trained = results["timings_s"]["training_to_best_epoch"]
            log(
                f"best epoch {state.best_epoch}: val mAP@3 {state.best_map:.4f} "
                f"({trained:.0f} s of training); outputs in {args.output}"
            )
    if outcome.status:
        return outcome.status
    end(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
