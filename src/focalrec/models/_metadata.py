"""Item metadata for the sequence recommenders: one embedded vector per item from its features."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from focalrec._indices import PAD

__all__ = ["ItemMetadata", "check_item_table"]


def check_item_table(x: Tensor | None, name: str, num_items: int, *, floating: bool) -> None:
    """Check an optional per-item metadata table: a ``(C, columns)`` tensor of the right kind."""
    if x is None:
        return
    kind = "a floating tensor (C, G)" if floating else "an integer tensor (C, F) of categorical ids"
    if not isinstance(x, Tensor) or x.is_floating_point() != floating:
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"`{name}` must be {kind}, got {got}")
    if x.ndim != 2 or x.shape[0] != num_items:
        raise ValueError(
            f"`{name}` must have shape ({num_items}, {'G' if floating else 'F'}), one row per "
            f"item, got shape {tuple(x.shape)}"
        )
    if not floating and x.numel() > 0 and int(x.min()) < PAD:
        raise ValueError(
            f"`{name}` must hold ids >= 0 or -1 for unknown, got minimum {int(x.min())}"
        )


class ItemMetadata(nn.Module):
    """Embeds each item's metadata into one vector per item, ``(C, dim)``.

    Categorical column ``f`` holds ids in ``[0, K_f)`` or ``-1`` when unknown; an unknown value
    embeds as zeros. Numeric columns are standardized over the items; a non-finite value (unknown)
    becomes 0, the mean.
    """

    categorical: Tensor
    numeric: Tensor

    def __init__(
        self,
        categorical: Tensor | None,
        numeric: Tensor | None,
        num_items: int,
        dim: int,
        feature_dim: int,
    ) -> None:
        super().__init__()
        cat = torch.empty(num_items, 0, dtype=torch.long) if categorical is None else categorical
        num = torch.empty(num_items, 0) if numeric is None else numeric
        # Shift by one so that the unknown value -1 lands on the zero padding row 0.
        self.register_buffer("categorical", cat.long() + 1)
        cardinalities = (cat.amax(dim=0) + 2).tolist() if cat.numel() > 0 else []
        self.tables = nn.ModuleList(
            nn.Embedding(int(k), feature_dim, padding_idx=0) for k in cardinalities
        )
        num = num.detach().to(torch.float32)
        finite = torch.isfinite(num)
        count = finite.sum(dim=0).clamp_min(1)
        mean = torch.where(finite, num, 0.0).sum(dim=0) / count
        var = torch.where(finite, (num - mean) ** 2, 0.0).sum(dim=0) / count
        standardized = (num - mean) / var.sqrt().clamp_min(1e-12)
        self.register_buffer("numeric", torch.where(finite, standardized, 0.0))
        self.project = nn.Linear(len(cardinalities) * feature_dim + num.shape[1], dim)

    def forward(self) -> Tensor:
        parts = [table(self.categorical[:, f]) for f, table in enumerate(self.tables)]
        out: Tensor = self.project(torch.cat([*parts, self.numeric], dim=1))
        return out
