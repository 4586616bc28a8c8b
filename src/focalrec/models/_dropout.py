r"""Dropout whose CPU mask costs a quarter of the random draws of :class:`torch.nn.Dropout`.

On a CPU, :func:`torch.nn.functional.dropout` draws one random number per element, and those
draws dominate a training step of the sequence models (more than half of a
:class:`~focalrec.models.SequenceTransformer` step on 2 cores). :class:`Dropout` keeps
:class:`torch.nn.Dropout`'s meaning and draws one 64-bit random integer per 4 elements: each
element keeps its value, scaled by :math:`1/(1-p')`, when its 16 bits :math:`u` (uniform over
:math:`\{0, \dots, 2^{16}-1\}`) satisfy :math:`u \ge d`, with :math:`d = \mathrm{round}(2^{16} p)`
and :math:`p' = d / 2^{16}` the probability actually used (within :math:`2^{-17}` of ``p``). The
output is then unbiased, :math:`\mathbb{E}[\mathrm{out}] = x`, like :class:`torch.nn.Dropout`'s.
Elsewhere (CUDA, ``p`` of 0 or 1, evaluation mode) it is :class:`torch.nn.Dropout`. The draws come
from the default CPU generator, so :func:`torch.manual_seed` makes them repeatable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Dropout"]

_LEVELS = 1 << 16


def keep_mask(shape: torch.Size, dropped: int) -> Tensor:
    """A boolean mask of ``shape``, each element ``False`` with probability ``dropped / 2**16``."""
    count = 1
    for size in shape:
        count *= size
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(1 << 63), (1 << 63) - 1)
    lanes = words.view(torch.int16)[:count].view(shape)  # 16 uniform bits, read as a signed int
    return lanes >= dropped - _LEVELS // 2


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` with a cheaper mask on the CPU (see the module).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> drop = Dropout(0.25)
        >>> out = drop(torch.ones(4, 10_000))
        >>> round(float((out == 0).float().mean()), 2), round(float(out.mean()), 1)
        (0.25, 1.0)
        >>> torch.equal(drop.eval()(torch.ones(3)), torch.ones(3))
        True
    """

    def forward(self, input: Tensor) -> Tensor:
        if (
            not self.training
            or self.inplace
            or input.device.type != "cpu"
            or not 0.0 < self.p < 1.0
            or not input.is_floating_point()
        ):
            return F.dropout(input, self.p, self.training, self.inplace)
        dropped = round(self.p * _LEVELS)
        if not 0 < dropped < _LEVELS:  # p within 2^-17 of 0 or 1
            return F.dropout(input, self.p, self.training, self.inplace)
        scale = _LEVELS / (_LEVELS - dropped)  # 1 / (1 - p')
        return input * keep_mask(input.shape, dropped).to(input.dtype).mul_(scale)
