"""Helpers shared by the ToST block tests and the streaming ToST aggregator tests."""

from __future__ import annotations

import torch
from torch import nn

F64 = torch.float64


def randomise(
    module: nn.Module, seed: int = 0, *, scale: float = 0.4, perturb: bool = False
) -> nn.Module:
    """Non-trivial parameters: temperatures uniform in [0.5, 2], everything else random.

    Every other parameter is set to ``scale · N(0, 1)``, or, with ``perturb``, shifted by it
    (positional biases and LayerScales included).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("temperature"):
                p.copy_(0.5 + 1.5 * torch.rand(p.shape, generator=g, dtype=p.dtype))
            elif perturb:
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def randn(*shape: int, seed: int = 1, dtype: torch.dtype = F64) -> torch.Tensor:
    """Standard normal tensor of ``shape`` from its own seeded generator."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
