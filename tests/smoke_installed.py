"""Smoke test of an installed focalrec, run with the installed interpreter from outside the clone.

``python /path/to/tests/smoke_installed.py`` from a temporary directory checks that the package
imported is the installed one (not the source tree), that its metadata and ``py.typed`` shipped, and
that the public API works end to end. ``.ci/run`` runs it against the freshly built wheel.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path


def main() -> None:
    """Import the installed package and exercise its public API; raise on any failure."""
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
    missing = [name for name in focalrec.__all__ if not hasattr(focalrec, name)]
    if missing:
        raise RuntimeError(f"focalrec.__all__ lists names the package lacks: {missing}")

    targets = torch.tensor([[4, 1, -1], [2, 2, 0]])
    dense = focalrec.index_list_to_dense(targets, num_classes=5)
    if dense.tolist() != [[False, True, False, False, True], [True, False, True, False, False]]:
        raise RuntimeError(f"index_list_to_dense gave {dense.tolist()}")
    if focalrec.dense_to_index_list(dense).tolist() != [[1, 4], [0, 2]]:
        raise RuntimeError("dense_to_index_list does not invert index_list_to_dense")

    python = sys.version.split()[0]
    print(f"focalrec {focalrec.__version__} from {package_dir}: OK on Python {python}")


if __name__ == "__main__":
    main()
