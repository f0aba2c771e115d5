"""``torch.distributed`` collectives with the DDP convention of the library's global terms.

A *global* term (a coding rate, rate reduction or SIGReg of the whole batch across ranks) is
computed by every rank on the gathered (or reduced) batch. Under
:class:`~torch.nn.parallel.DistributedDataParallel`, which **averages** parameter gradients over
the ``W`` ranks, one optimizer step then equals the single-process step on the concatenated batch
only if each rank's rows receive the **sum over ranks** of the gradients that the ranks' copies of
the term send them: the convention of lightly's and solo-learn's ``GatherLayer`` (lightly#1920,
#1977 fixed their gather to it). :func:`all_gather_rows` and :func:`global_sum` implement it:
forward, an all-gather / all-reduce; backward, an all-reduce (sum) of the incoming gradient. A
term that every rank computes identically therefore gives each rank ``W ×`` the single-process
gradient of its rows, which DDP's averaging turns into the exact full-batch gradient; per-rank
means (prediction losses) need nothing. In a single process all of this is the identity.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["all_gather_rows", "all_reduce_sum", "global_sum", "is_distributed", "world_size"]


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


class _GlobalSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:  # type: ignore[override]
        ctx.group = group
        out = x.detach().clone()
        torch.distributed.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad, group=ctx.group)
        return grad, None


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, group: Any) -> Tensor:  # type: ignore[override]
        ctx.group = group
        ctx.rank = torch.distributed.get_rank(group)
        ctx.n = z.shape[-2]
        parts = [torch.empty_like(z) for _ in range(torch.distributed.get_world_size(group))]
        torch.distributed.all_gather(parts, z.detach().contiguous(), group=group)
        return torch.cat(parts, dim=-2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad, group=ctx.group)
        return grad.narrow(-2, ctx.rank * ctx.n, ctx.n), None


def global_sum(x: Tensor, group: Any = None) -> Tensor:
    """Sum of ``x`` over ranks; backward: the sum over ranks of the incoming gradients.

    For sums over samples (second moments, class masses): every rank then holds the full-batch
    statistic, and each rank's contribution receives the gradient of every rank's copy of the
    term (see the module docstring). The identity outside a multi-rank job.

    Shape:
        - x: any; output: same as ``x``.
    """
    if not is_distributed(group):
        return x
    return _GlobalSum.apply(x, group)


def all_gather_rows(z: Tensor, group: Any = None) -> Tensor:
    """Concatenate every rank's rows along dim ``-2``; backward sums the ranks' gradients.

    Rank ``r``'s rows receive the sum over ranks of the gradient sent to rows ``[r·n, (r+1)·n)``
    of the output (the ``GatherLayer`` convention, see the module docstring). All ranks must pass
    the same shape. Integer tensors (labels) are gathered without gradient.

    Shape:
        - z: ``(..., n, d)`` on every rank
        - output: ``(..., world_size·n, d)``, rank ``r``'s rows at ``[r·n, (r+1)·n)``
    """
    if not is_distributed(group):
        return z
    if not (z.is_floating_point() and z.requires_grad):
        parts = [torch.empty_like(z) for _ in range(torch.distributed.get_world_size(group))]
        torch.distributed.all_gather(parts, z.detach().contiguous(), group=group)
        return torch.cat(parts, dim=-2)
    return _GatherRows.apply(z, group)
