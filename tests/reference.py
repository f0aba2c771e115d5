"""Float64 references written straight from the papers' formulas (no shortcuts, no Sylvester)."""

from __future__ import annotations

import torch
from torch import Tensor


def ref_half_logdet(z: Tensor, alpha: float | Tensor) -> Tensor:
    """½ logdet(I_d + α ZᵀZ) in float64 via torch.logdet on the d×d matrix, per batch element."""
    z = z.double()
    d = z.shape[-1]
    eye = torch.eye(d, dtype=torch.float64, device=z.device)
    a = (
        torch.as_tensor(alpha, dtype=torch.float64)[..., None, None]
        if isinstance(alpha, Tensor)
        else alpha
    )
    return 0.5 * torch.logdet(eye + a * (z.mT @ z))


def ref_coding_rate(z: Tensor, eps: float, center: bool = False) -> Tensor:
    """R(Z) = ½ logdet(I + d/(n ε²) ZᵀZ) (Yu et al. 2020), rows as samples."""
    z = z.double()
    if center:
        z = z - z.mean(-2, keepdim=True)
    n, d = z.shape[-2:]
    return ref_half_logdet(z, d / (n * eps**2))


def ref_rate_reduction(z: Tensor, pi: Tensor, eps: float, gamma: float = 1.0) -> Tensor:
    """ΔR = γ R(Z) − Σ_k n_k/(2n) logdet(I + d/(n_k ε²) Zᵀ Diag(π_k) Z), a loop over classes."""
    z = z.double()
    pi = pi.double()
    n, d = z.shape
    eye = torch.eye(d, dtype=torch.float64)
    comp = torch.zeros((), dtype=torch.float64)
    for k in range(pi.shape[1]):
        nk = pi[:, k].sum()
        if nk <= 0:
            continue
        mat = eye + d / (nk * eps**2) * z.T @ torch.diag(pi[:, k]) @ z
        comp = comp + nk / (2 * n) * torch.logdet(mat)
    return gamma * ref_coding_rate(z, eps) - comp
