"""The inputs of one evaluation of the loss, in the form every backend takes."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "FIELDS",
    "SCHEMA",
    "TENSOR_FIELDS",
    "FocalInputs",
    "join",
    "schema_of",
    "split",
    "values_of",
]


@dataclass(frozen=True)
class FocalInputs:
    """Checked inputs of the loss over a ``(R, C)`` block of logits.

    Column ``j`` of the block is item ``col_offset + j`` of the catalogue: index lists hold
    catalogue ids and ``alpha_vec`` is indexed by them, so a backend can evaluate any range of
    items (the fused output layer and the item-sharded loss do). Every term is multiplied by
    ``alpha_t``, by ``weight`` and by ``scale``; positive terms by ``pos_weight`` too.

    The focal loss is the case ``gamma_neg = None`` (``gamma`` for both terms), ``clip = 0``.
    Otherwise (:attr:`asymmetric`) the loss is ASL's: positives take ``gamma``, negatives
    ``gamma_neg`` and the probability margin ``clip``, and a soft target ``t`` mixes the two terms
    linearly, ``t L+ + (1 - t) L-`` (see :mod:`focalrec._focal.terms`).

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
        gamma_neg: the focusing parameter of negative terms, or None (``gamma``).
        clip: ASL's probability margin on negatives, in ``[0, 1)``.
        pos_weight: the factor of positive terms, or None (no factor, unless ``pos_weight_vec``).
        pos_weight_vec: per-item factors of positive terms in the compute dtype, or None.
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
    gamma_neg: float | None = None
    clip: float = 0.0
    pos_weight: float | None = None
    pos_weight_vec: Tensor | None = None

    @property
    def gamma_pos(self) -> float:
        """The focusing parameter of positive terms."""
        return self.gamma

    @property
    def asymmetric(self) -> bool:
        """Whether the loss is ASL's (negatives with their own ``gamma_neg`` or a margin)."""
        return self.gamma_neg is not None or self.clip != 0.0

    @property
    def has_pos_weight(self) -> bool:
        return self.pos_weight is not None or self.pos_weight_vec is not None

    @property
    def family(self) -> bool:
        """Whether an option beyond the focal loss is set (ASL or a positive weight)."""
        return self.asymmetric or self.has_pos_weight

    @property
    def compute_dtype(self) -> torch.dtype:
        """float32 for half-precision logits, else the logits' dtype."""
        return torch.promote_types(self.logits.dtype, torch.float32)

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None or self.alpha_vec is not None


_SCHEMA_TYPES = {
    "Tensor": "Tensor",
    "Tensor | None": "Tensor?",
    "float": "float",
    "float | None": "float?",
    "int": "SymInt",
    "torch.dtype": "ScalarType",
}


def schema_of(record: type) -> str:
    """The fields of the dataclass ``record`` as the arguments of a ``torch.library`` operator
    schema, in order: an operator that takes a record takes its fields positionally."""
    return ", ".join(f"{_SCHEMA_TYPES[str(f.type)]} {f.name}" for f in fields(record))


def values_of(record: Any) -> tuple[Any, ...]:
    """The field values of the dataclass instance ``record`` in order (not copied)."""
    return tuple(getattr(record, f.name) for f in fields(record))


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(FocalInputs))
"""The record's fields in order: the leading arguments of the loss's operators, positionally."""

SCHEMA = schema_of(FocalInputs)
"""The record's fields as the arguments of a ``torch.library`` operator schema."""

TENSOR_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(FocalInputs) if "Tensor" in str(f.type)
)
"""The fields that hold tensors (or None): what autograd saves for backward."""


def split(inp: FocalInputs) -> tuple[tuple[Tensor | None, ...], dict[str, Any]]:
    """``inp`` as its tensors (in :data:`TENSOR_FIELDS` order) and its other fields."""
    tensors = tuple(getattr(inp, name) for name in TENSOR_FIELDS)
    others = {name: getattr(inp, name) for name in FIELDS if name not in TENSOR_FIELDS}
    return tensors, others


def join(tensors: tuple[Tensor | None, ...], others: dict[str, Any]) -> FocalInputs:
    """The record that :func:`split` took apart (the tensors may be saved copies of them)."""
    values: dict[str, Any] = dict(zip(TENSOR_FIELDS, tensors, strict=True))
    return FocalInputs(**values, **others)
