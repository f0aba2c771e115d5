"""``torch.distributed`` collectives with the DDP convention of the library's global terms.

A *global* term (a rate of the whole batch across ranks) is computed by every rank on the
gathered or reduced batch, and each rank's rows receive the **sum over ranks** of the gradients
that the ranks' copies of the term send them (the ``GatherLayer`` convention of lightly and
solo-learn; lightly#1920, #1977): DDP's gradient averaging then yields the single-process step on
the concatenated batch. In a single process everything here is the identity.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_rows", "all_reduce_sum", "global_sum", "is_distributed", "world_size"]


def is_distributed(group: Any = None) -> bool:
    """True when ``torch.distributed`` is initialised with more than one rank in ``group``."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_size(group: Any = None) -> int:
    """Number of ranks in ``group`` (1 when not distributed)."""
    return dist.get_world_size(group) if is_distributed(group) else 1


def all_reduce_sum(x: Tensor, group: Any = None) -> Tensor:
    """Sum of ``x`` over ranks, detached (no gradient flows through the collective).

    Shape:
        - x: any; output: same as ``x``.
    """
    out = x.detach().clone()
    if is_distributed(group):
        dist.all_reduce(out, group=group)
    return out


class _GlobalSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:  # type: ignore[override]
        ctx.group = group
        return all_reduce_sum(x, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def _gather(z: Tensor, group: Any) -> Tensor:
    parts = [torch.empty_like(z) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, z.detach().contiguous(), group=group)
    return torch.cat(parts, dim=-2)


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, group: Any) -> Tensor:  # type: ignore[override]
        ctx.group, ctx.rank, ctx.n = group, dist.get_rank(group), z.shape[-2]
        return _gather(z, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad.narrow(-2, ctx.rank * ctx.n, ctx.n), None


def global_sum(x: Tensor, group: Any = None) -> Tensor:
    """Sum of ``x`` over ranks (second moments, class masses); backward: the sum over ranks of
    the incoming gradients. The identity outside a multi-rank job.

    Shape:
        - x: any; output: same as ``x``.
    """
    if not is_distributed(group):
        return x
    return _GlobalSum.apply(x, group)


def all_gather_rows(z: Tensor, group: Any = None) -> Tensor:
    """Concatenate every rank's rows along dim ``-2``; backward sums the ranks' gradients.

    All ranks must pass the same shape; integer tensors (labels) are gathered without gradient.

    Shape:
        - z: ``(..., n, d)``; output: ``(..., world_size·n, d)``, rank ``r``'s at ``[r·n, (r+1)·n)``
    """
    if not is_distributed(group):
        return z
    if not (z.is_floating_point() and z.requires_grad):
        return _gather(z, group)
    return _GatherRows.apply(z, group)
