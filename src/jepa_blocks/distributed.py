"""``torch.distributed`` helpers with the gradient semantics the coding-rate losses need.

The autograd-aware collectives in ``torch.distributed.nn`` sum gradients over ranks in their
backward pass. When every rank evaluates the *same* global loss (a coding rate of the global
batch), that sum multiplies each rank's gradient by the world size — the "gradient off by
world_size" bug class (pytorch#58005; lightly#1920, #1977). The helpers here instead keep each
rank's own rows differentiable and treat the other ranks' contributions as constants, so each
rank receives exactly the single-process gradient with respect to its rows.

Under DDP, which *averages* parameter gradients over ranks, a loss term computed on the global
batch therefore contributes ``1/world_size`` of its single-process parameter gradient; terms
that are per-rank means (prediction losses) are unaffected. Multiply a global term by
:func:`world_size` if the full-batch parameter gradient is wanted exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["all_gather_rows", "all_reduce_sum", "is_distributed", "world_size"]


def is_distributed(group: Any = None) -> bool:
    """True when ``torch.distributed`` is initialised with more than one rank in ``group``."""
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size(group) > 1
    )


def world_size(group: Any = None) -> int:
    """Number of ranks in ``group`` (1 when not distributed)."""
    return torch.distributed.get_world_size(group) if is_distributed(group) else 1


def all_reduce_sum(x: Tensor, group: Any = None) -> Tensor:
    """Sum of ``x`` over ranks, detached (no gradient flows through the collective).

    Shape:
        - x: any; output: same as ``x``.
    """
    out = x.detach().clone()
    if is_distributed(group):
        torch.distributed.all_reduce(out, group=group)
    return out


def all_gather_rows(z: Tensor, group: Any = None) -> Tensor:
    """Concatenate every rank's rows along dim ``-2``, keeping the local rows differentiable.

    Rows from other ranks are constants; the gradient with respect to ``z`` is exactly the
    single-process gradient with respect to these rows. All ranks must pass the same shape.

    Shape:
        - z: ``(..., n, d)`` on every rank
        - output: ``(..., world_size·n, d)``, rank ``r``'s rows at ``[r·n, (r+1)·n)``
    """
    if not is_distributed(group):
        return z
    parts = [torch.empty_like(z) for _ in range(torch.distributed.get_world_size(group))]
    torch.distributed.all_gather(parts, z.detach().contiguous(), group=group)
    parts[torch.distributed.get_rank(group)] = z
    return torch.cat(parts, dim=-2)
