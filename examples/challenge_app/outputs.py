"""The outputs of a run: metrics.json, the training curve, the best model and the submission.

Each file is written atomically (``atomic.py``) into the run's partial folder, which replaces the
output folder as a whole once all of them are there.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from torch import Tensor

import atomic
from challenge_app.checkpoints import BEST_MODEL, CURVE, METRICS, SUBMISSION, TrainState
from challenge_data import ChallengeData

__all__ = ["plot_curve", "submission_csv", "summary", "write_results"]


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
    state: TrainState,
    summary: dict[str, Any],
    top3: Tensor | None,
) -> None:
    """Write best_model.pt, submission.csv (``top3``: the test users' lists, with test.csv),
    metrics.json and the curve."""
    assert state.history is not None
    assert state.best_model is not None
    best = {"model": state.best_model, "vocabulary": data.vocabulary, "epoch": state.best_epoch}
    atomic.save_torch(folder / BEST_MODEL, {**best, "config": summary["config"]})
    if top3 is not None:
        atomic.write_text(folder / SUBMISSION, submission_csv(data, top3))
    atomic.save_json(folder / METRICS, summary)
    plot_curve(folder / CURVE, state.history, summary["baselines_val_map3"], state.best_epoch)


def summary(
    config: dict[str, Any],
    data: ChallengeData,
    digest: str,
    windows: Any,
    state: TrainState,
    baselines: dict[str, float],
    world: int,
    seconds: tuple[float, float],
    synthetic: bool,
) -> dict[str, Any]:
    """The content of metrics.json: the run's options, data (file names only for the built-in
    ``synthetic`` data), epochs, best epoch, baselines and timings (``seconds``: loading and
    windows, and the whole run so far)."""
    assert state.history is not None
    return {
        "config": config,
        "data": {
            "files": [Path(f).name for f in data.files] if synthetic else data.files,
            "fingerprint": digest,
            "history_len": data.history_len,
            "num_items": data.num_items,
            "item_metadata_used": config["metadata"] and data.metadata is not None,
            "train_csv_users": len(data.train),
            "test_csv_users": len(data.test),
            "training_windows": len(windows.train_history),
            "training_rows": len(windows.row_history),  # the same windows, as rows of positions
            "validation_users": len(windows.val_history),
        },
        "world_size": world,
        "epochs": state.history,
        "best_epoch": state.best_epoch,
        "best_val_map3": state.best_map,
        "baselines_val_map3": baselines,
        "timings_s": {
            "load_and_windows": seconds[0],
            "training": sum(h["seconds"] for h in state.history),
            "training_to_best_epoch": sum(h["seconds"] for h in state.history[: state.best_epoch]),
            "total": seconds[1],
        },
    }
