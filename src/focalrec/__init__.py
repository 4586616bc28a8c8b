"""focalrec: exact, fast sigmoid focal loss and mAP@k for sparse multi-label recommenders.

Integer tensors are index lists (item indices padded with ``-1``); floating and bool tensors are
dense. See :mod:`focalrec._indices` for the convention shared by every function.
"""

from focalrec._indices import dense_to_index_list, index_list_to_dense
from focalrec.ranking import map_at_k, topk_items

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "dense_to_index_list",
    "index_list_to_dense",
    "map_at_k",
    "topk_items",
]
