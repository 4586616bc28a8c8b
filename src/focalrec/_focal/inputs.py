"""The inputs of one evaluation of the loss, in the form every backend takes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FocalInputs"]


@dataclass(frozen=True)
class FocalInputs:
    """Checked inputs of the loss over a ``(R, C)`` block of logits.

    Column ``j`` of the block is item ``col_offset + j`` of the catalogue: index lists hold
    catalogue ids and ``alpha_vec`` is indexed by them, so a backend can evaluate any range of
    items (the fused output layer and the item-sharded loss do). Every term is multiplied by
    ``alpha_t``, by ``weight`` and by ``scale``.

    Attributes:
        logits: ``(R, C)`` floating logits.
        dense: ``(R, C)`` floating or bool targets in ``[0, 1]``, or None.
        index: ``(R, m)`` integer index list (catalogue ids, ``-1`` padding), or None.
        alpha: the positive-class weight, or None (no weighting, unless ``alpha_vec``).
        alpha_vec: per-item positive-class weights in the compute dtype, or None.
        gamma: the focusing parameter.
        weight: ``(R, C)`` weights in the compute dtype (any strides), or None.
        scale: a 0-d tensor in the compute dtype that multiplies every term, or None.
        col_offset: catalogue id of column 0.
    """

    logits: Tensor
    dense: Tensor | None
    index: Tensor | None
    alpha: float | None
    alpha_vec: Tensor | None
    gamma: float
    weight: Tensor | None
    scale: Tensor | None
    col_offset: int = 0

    @property
    def compute_dtype(self) -> torch.dtype:
        """float32 for half-precision logits, else the logits' dtype."""
        return torch.promote_types(self.logits.dtype, torch.float32)

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None or self.alpha_vec is not None
