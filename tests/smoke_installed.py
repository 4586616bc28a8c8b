"""Smoke test of an installed focalrec, run with the installed interpreter from outside the clone.

``python /path/to/tests/smoke_installed.py`` from a temporary directory checks that the package
imported is the installed one (not the source tree), that its metadata and ``py.typed`` shipped, and
that the public API works end to end. ``.ci/run`` and the release workflow run it against the
freshly built wheel with ``--require-prebuilt``: the wheel must carry the compiled kernel, and in a
process that can reach no C compiler (``CC=/bin/false``, a ``PATH`` of the interpreter's folder
only) and has an empty kernel cache, the loss must run on that prebuilt kernel, compile nothing,
and match the torch backend.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

# Run in the child process that sees no compiler: prints what served and the two backends' values.
_NO_COMPILER_CHILD = """
import json, os, sys, warnings
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch
import focalrec
from focalrec._focal import native
g = torch.Generator().manual_seed(0)
x = torch.randn(64, 300, generator=g) * 3
index = torch.randint(-1, 300, (64, 4), generator=g)
soft = torch.rand(64, 300, generator=g)
out = {}
for name in ("native", "torch"):
    for kind, target in (("index", index), ("soft", soft)):
        xs = x.clone().requires_grad_()
        with focalrec.use_backend(name):
            loss = focalrec.sigmoid_focal_loss(xs, target, alpha=0.25, gamma=2.0, reduction="sum")
        loss.backward()
        out[f"{name} {kind}"] = [loss.item(), xs.grad.flatten().tolist()]
out["origin"] = native.origin()
out["reason"] = native.unavailable()
json.dump(out, sys.stdout)
"""


def check_prebuilt_kernel(package_dir: Path, required: bool) -> str | None:
    """The prebuilt kernel serves float32 CPU with no compiler reachable and an empty cache.

    Returns what served (``native.origin()``), or None where the installation ships no prebuilt
    kernel and ``required`` is false.
    """
    import torch

    if not (package_dir / "_focal" / "_kernels" / "manifest.json").is_file():
        if required:
            raise RuntimeError(f"the installed package ships no prebuilt kernel: {package_dir}")
        return None
    with tempfile.TemporaryDirectory(prefix="focalrec-smoke-") as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("FOCALREC_BACKEND", "FOCALREC_KERNEL_VARIANT", "PYTHONPATH")
        }
        env["CC"] = "/bin/false"
        env["FOCALREC_CACHE_DIR"] = str(cache)
        if sys.platform != "win32":  # Windows finds system DLLs through PATH; it builds nothing
            env["PATH"] = str(Path(sys.executable).parent)
        done = subprocess.run(
            [sys.executable, "-c", _NO_COMPILER_CHILD],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the loss without a compiler failed:\n{done.stderr}")
        out = json.loads(done.stdout)
        built = sorted(p.name for p in cache.rglob("*"))
    origin = out["origin"]
    if not isinstance(origin, str) or not origin.startswith("prebuilt "):
        raise RuntimeError(f"the prebuilt kernel did not serve: {origin!r} ({out['reason']})")
    if built:
        raise RuntimeError(f"something was compiled into the empty cache: {built}")
    for kind in ("index", "soft"):
        native_loss, native_grad = out[f"native {kind}"]
        torch_loss, torch_grad = out[f"torch {kind}"]
        torch.testing.assert_close(native_loss, torch_loss, rtol=1e-5, atol=0)
        torch.testing.assert_close(
            torch.tensor(native_grad), torch.tensor(torch_grad), rtol=1e-5, atol=1e-7
        )
    return origin


def main(argv: list[str] | None = None) -> None:
    """Import the installed package and exercise its public API; raise on any failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--require-prebuilt",
        action="store_true",
        help="fail unless the installation ships a prebuilt kernel (a platform wheel)",
    )
    args = parser.parse_args(argv)
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

    kernel = check_prebuilt_kernel(package_dir, args.require_prebuilt)
    served = "no prebuilt kernel" if kernel is None else f"{kernel}, with no compiler"
    python = sys.version.split()[0]
    print(f"focalrec {focalrec.__version__} from {package_dir}: OK on Python {python} ({served})")


if __name__ == "__main__":
    main()
