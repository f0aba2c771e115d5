"""Head projections, LayerScale and token checks shared by CRATE (MSSA) and ToST (TSSA) blocks."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from jepa_blocks._validation import check_bool, check_floating_tensor, check_int, check_positive
from jepa_blocks._validation import check_finite as check_finite


class HeadProjection(nn.Module):
    r"""Base of MSSA and TSSA: one map ``qkv`` to :math:`K` heads and the map back to tokens.

    ``qkv.weight`` is :math:`[U_1, \dots, U_K]^\top`, ``(K·p, dim)``; the output map is a learned
    ``to_out`` or, tied, ``qkv.weight`` itself with an optional bias ``out_bias``.
    """

    to_out: nn.Linear | None
    # ``out_bias`` (``nn.Parameter | None``) is not annotated here: autodoc would give the
    # ``out_bias`` argument of MSSA/TSSA that type (mypy infers it from the assignment).

    def __init__(
        self, dim: int, heads: int, dim_head: int | None, *, qkv_bias: bool, tie_out: bool
    ) -> None:
        super().__init__()
        check_int(dim, "dim")
        check_int(heads, "heads")
        if dim_head is None and dim % heads:
            raise ValueError(f"dim must be divisible by heads, got dim={dim}, heads={heads}")
        self.dim_head = dim // heads if dim_head is None else check_int(dim_head, "dim_head")
        self.dim = dim
        self.heads = heads
        self.tie_out = check_bool(tie_out, "tie_out")
        self.qkv = nn.Linear(dim, heads * self.dim_head, bias=check_bool(qkv_bias, "qkv_bias"))

    def _add_output_map(self, out_bias: bool | None) -> None:
        """Register ``to_out`` and ``out_bias``; ``out_bias=None`` means ``not tie_out``."""
        bias = check_bool(not self.tie_out if out_bias is None else out_bias, "out_bias")
        inner = self.heads * self.dim_head
        self.to_out = None if self.tie_out else nn.Linear(inner, self.dim, bias=bias)
        self.out_bias = nn.Parameter(torch.zeros(self.dim)) if self.tie_out and bias else None

    def subspaces(self) -> Tensor:
        """The bases :math:`U_k` as a ``(K, dim, dim_head)`` view of ``qkv.weight``."""
        return rearrange(self.qkv.weight, "(k p) d -> k d p", k=self.heads)

    def _split(self, x: Tensor) -> Tensor:
        """Tokens ``(..., N, dim)`` → heads ``(..., K, N, p)``."""
        return rearrange(self.qkv(x), "... n (k p) -> ... k n p", k=self.heads)

    def _merge(self, y: Tensor) -> Tensor:
        """Heads ``(..., K, N, p)`` → tokens: ``to_out``, or the tied map ``qkv.weight.T``."""
        merged = rearrange(y, "... k n p -> ... n (k p)")
        if self.to_out is not None:
            return self.to_out(merged)
        return F.linear(merged, self.qkv.weight.t(), self.out_bias)


def check_tokens(x: Any, dim: int, name: str = "x", *, ndim: int | None = None) -> Tensor:
    """Check floating tokens ``(..., N, dim)``, or exactly ``(B, N, dim)`` / ``(B, dim)``."""
    shape = {None: "(..., N, ", 3: "(B, N, ", 2: "(B, "}[ndim] + f"{dim})"
    check_floating_tensor(x, name, min_ndim=ndim or 2, shape_doc=shape)
    if x.shape[-1] != dim or ndim not in (None, x.ndim):
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    return x


def check_padding(mask: Any, x: Tensor, name: str) -> Tensor | None:
    """Check an optional boolean padding mask of shape ``x.shape[:-1]`` (``True`` = ignore)."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}")
    if tuple(mask.shape) != tuple(x.shape[:-1]):
        raise ValueError(
            f"{name} must have shape {tuple(x.shape[:-1])} (True = ignore), got {tuple(mask.shape)}"
        )
    return mask


def layer_scales(
    dim: int, init: float | None, name: str
) -> tuple[nn.Parameter | None, nn.Parameter | None]:
    """LayerScale vectors ``(γ₁, γ₂)`` filled with ``init`` (checked ``> 0``); ``None``: none."""
    if init is None:
        return None, None
    value = check_positive(init, name)
    return nn.Parameter(torch.full((dim,), value)), nn.Parameter(torch.full((dim,), value))


def scaled(gamma: Tensor | None, x: Tensor) -> Tensor:
    """``gamma * x``, or ``x`` without LayerScale."""
    return x if gamma is None else gamma * x
