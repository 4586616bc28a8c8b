"""Optional adapters to other libraries.

Nothing here is imported by ``import focalrec``: import an adapter module explicitly, once its
library is installed (``pip install focalrec[torchmetrics]`` for
:mod:`focalrec.integrations.torchmetrics`).
"""

from __future__ import annotations

__all__: list[str] = []
