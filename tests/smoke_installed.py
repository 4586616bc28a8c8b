"""Smoke test of an installed focalrec, run with the installed interpreter from outside the clone.

``python /path/to/tests/smoke_installed.py`` from a temporary directory checks that the package
imported is the installed one (not the source tree), that its metadata and ``py.typed`` shipped, and
that the public API works end to end. ``.ci/run`` runs it against the freshly built wheel.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from importlib import metadata
from pathlib import Path


def main() -> None:
    """Import the installed package and exercise its public API; raise on any failure."""
    # The fresh environment has torch and focalrec only; torch warns that numpy is missing.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    import torch

    import focalrec

    package_dir = Path(focalrec.__file__).resolve().parent
    source_dir = Path(__file__).resolve().parents[1] / "src"
    if source_dir in package_dir.parents:
        raise RuntimeError(f"imported focalrec from the source tree: {package_dir}")
    if metadata.version("focalrec") != focalrec.__version__:
        raise RuntimeError(
            f"installed metadata version {metadata.version('focalrec')!r} differs from "
            f"focalrec.__version__ {focalrec.__version__!r}"
        )
    if not (package_dir / "py.typed").is_file():
        raise RuntimeError(f"py.typed is missing from the installed package at {package_dir}")
    for module in ("focalrec.models", "focalrec.integrations.torchmetrics"):
        importlib.import_module(module)  # the subpackages and modules beside __init__ shipped
    missing = [name for name in focalrec.__all__ if not hasattr(focalrec, name)]
    if missing:
        raise RuntimeError(f"focalrec.__all__ lists names the package lacks: {missing}")

    targets = torch.tensor([[4, 1, -1], [2, 2, 0]])
    dense = focalrec.index_list_to_dense(targets, num_classes=5)
    if dense.tolist() != [[False, True, False, False, True], [True, False, True, False, False]]:
        raise RuntimeError(f"index_list_to_dense gave {dense.tolist()}")
    if focalrec.dense_to_index_list(dense).tolist() != [[1, 4], [0, 2]]:
        raise RuntimeError("dense_to_index_list does not invert index_list_to_dense")

    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [0.0, 1.5, -0.5, 4.0]], requires_grad=True)
    sparse = torch.tensor([[0, 2], [3, -1]])
    loss_sparse = focalrec.sigmoid_focal_loss(logits, sparse, reduction="sum")
    loss_dense = focalrec.FocalLoss(reduction="sum")(
        logits, focalrec.index_list_to_dense(sparse, 4)
    )
    torch.testing.assert_close(loss_sparse, loss_dense)
    loss_sparse.backward()
    if logits.grad is None or not bool(torch.isfinite(logits.grad).all()):
        raise RuntimeError("the focal loss gave no finite gradient")
    if abs(focalrec.prior_bias(0.01) - (-4.59512)) > 1e-4:
        raise RuntimeError(f"prior_bias(0.01) gave {focalrec.prior_bias(0.01)}")

    scores = torch.tensor([[0.9, 0.1, 0.8, 0.3], [0.2, 0.7, 0.1, 0.4]])
    relevant = torch.tensor([[2, 3], [0, -1]])
    if focalrec.topk_items(scores, 3).tolist() != [[0, 2, 3], [1, 3, 0]]:
        raise RuntimeError(f"topk_items gave {focalrec.topk_items(scores, 3).tolist()}")
    # AP@3 by hand: row 0 hits at ranks 2 and 3, (1/2 + 2/3) / 2; row 1 at rank 3, (1/3) / 1.
    expected = ((1 / 2 + 2 / 3) / 2 + 1 / 3) / 2
    torch.testing.assert_close(
        focalrec.map_at_k(scores, relevant, 3).item(), expected, rtol=0, atol=1e-6
    )
    metric = focalrec.MeanAveragePrecisionAtK(3)
    metric.update(scores[:1], relevant[:1])
    metric.update(scores[1:], relevant[1:])
    torch.testing.assert_close(metric.compute().item(), expected, rtol=0, atol=1e-6)

    python = sys.version.split()[0]
    print(f"focalrec {focalrec.__version__} from {package_dir}: OK on Python {python}")


if __name__ == "__main__":
    main()
