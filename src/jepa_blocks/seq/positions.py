r"""Optional positional embeddings for the aggregator's token sequence.

seq-JEPA's aggregator uses **none** (Ghaemi et al., 2025, arXiv:2505.03176; official code
``hafezgh/seq-jepa``, ``src/models.py``): order is known only through the action embeddings. These
modules add positions for experiments that want order information.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from jepa_blocks._validation import check_bool, check_floating_tensor, check_int

__all__ = ["PositionalEmbedding", "sinusoidal_positions"]


def sinusoidal_positions(n: int, dim: int) -> Tensor:
    r"""Fixed sinusoidal positions (Vaswani et al., 2017): :math:`\sin/\cos(p / 10000^{2i/d})`.

    A float32 table: even feature indices hold the sines, odd ones the cosines.

    Args:
        n: Number of positions ``≥ 1``.
        dim: Feature dimension ``≥ 2``, even.

    Shape:
        - output: ``(n, dim)``
    """
    check_int(n, "n")
    if check_int(dim, "dim", minimum=2) % 2:
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
        max_len: Longest sequence, counting the [AGG] token (``M + 1`` for ``M`` observed views).
        dim: Token dimension.
        learnable: A learned table (truncated normal, std 0.02); ``False``: the fixed
            :func:`sinusoidal_positions` (a non-persistent buffer).

    Shape:
        - input: ``(B, N, dim)`` with ``N ≤ max_len``; output: ``(B, N, dim)``
    """

    table: Tensor

    def __init__(self, *, max_len: int, dim: int, learnable: bool = True) -> None:
        super().__init__()
        self.max_len = check_int(max_len, "max_len")
        self.dim = check_int(dim, "dim")
        self.learnable = check_bool(learnable, "learnable")
        if self.learnable:
            self.table = nn.Parameter(torch.empty(max_len, dim))
            nn.init.trunc_normal_(self.table, std=0.02)
        else:
            self.register_buffer("table", sinusoidal_positions(max_len, dim), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` plus the first ``N`` positions."""
        check_floating_tensor(x, "tokens", min_ndim=3)
        if x.ndim != 3 or x.shape[-1] != self.dim or x.shape[1] > self.max_len:
            raise ValueError(
                f"tokens must have shape (B, N, {self.dim}) with N <= max_len={self.max_len}, "
                f"got {tuple(x.shape)}"
            )
        return x + self.table[: x.shape[1]].to(x.dtype)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, dim={self.dim}, learnable={self.learnable}"
