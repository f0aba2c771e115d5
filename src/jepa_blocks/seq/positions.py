r"""Optional positional embeddings for the aggregator's token sequence.

seq-JEPA's aggregator uses **none** (Ghaemi et al., 2025, arXiv:2505.03176; official code
``hafezgh/seq-jepa``, ``src/models.py``): the order of the observed views is known only through the
action embeddings, and the [AGG] output is invariant to permuting the observed tokens. These
modules add positions for experiments that want order information.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["PositionalEmbedding", "sinusoidal_positions"]


def sinusoidal_positions(n: int, dim: int) -> Tensor:
    r"""Fixed sinusoidal positions (Vaswani et al., 2017): :math:`\sin/\cos(p / 10000^{2i/d})`.

    Even feature indices hold the sines, odd ones the cosines.

    Args:
        n: Number of positions ``≥ 1``.
        dim: Feature dimension ``≥ 2``, even.

    Returns:
        A float32 table.

    Shape:
        - output: ``(n, dim)``
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"dim must be an even int >= 2, got {dim!r}")
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(n, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table.to(torch.float32)


class PositionalEmbedding(nn.Module):
    """Add a position vector to each token: ``x[:, i] + P[i]``.

    Args:
        max_len: Longest sequence, counting the [AGG] token at position 0 (so ``M + 1`` for ``M``
            observed views).
        dim: Token dimension.
        learnable: ``True`` (default): a learned table initialised with a truncated normal of
            std 0.02; ``False``: the fixed :func:`sinusoidal_positions` (a non-persistent buffer).

    Shape:
        - input: ``(B, N, dim)`` with ``N ≤ max_len``
        - output: ``(B, N, dim)``
    """

    table: Tensor

    def __init__(self, *, max_len: int, dim: int, learnable: bool = True) -> None:
        super().__init__()
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"max_len must be an int >= 1, got {max_len!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        self.max_len = max_len
        self.dim = dim
        self.learnable = bool(learnable)
        if self.learnable:
            self.table = nn.Parameter(torch.empty(max_len, dim))
            nn.init.trunc_normal_(self.table, std=0.02)
        else:
            self.register_buffer("table", sinusoidal_positions(max_len, dim), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` plus the first ``N`` positions."""
        if x.ndim != 3 or x.shape[-1] != self.dim or x.shape[1] > self.max_len:
            raise ValueError(
                f"tokens must have shape (B, N, {self.dim}) with N <= max_len={self.max_len}, "
                f"got {tuple(x.shape)}"
            )
        return x + self.table[: x.shape[1]].to(x.dtype)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, dim={self.dim}, learnable={self.learnable}"
