"""Rank and spectrum diagnostics of representations, in float64 on the features' device.

:func:`effective_rank` is RankMe (Garrido, Balestriero, Najman, LeCun, ICML 2023); the subspace
metrics follow ``kaikun213/seq-jepa`` (``experiments/eval/subspace_metrics.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from jepa_blocks._validation import (
    check_bool,
    check_finite,
    check_floating_tensor,
    check_int,
    check_positive,
)

__all__ = [
    "covariance_spectrum",
    "delta_spectrum",
    "effective_rank",
    "principal_subspace",
    "rotation_delta_spectrum",
    "spectrum_effective_rank",
    "subspace_explained_variance",
    "topk_variance_fraction",
]


def check_matrix(z: Tensor, name: str, *, min_rows: int = 1) -> Tensor:
    check_floating_tensor(z, name, min_ndim=2, shape_doc="(N, D)")
    if z.ndim != 2 or z.shape[0] < min_rows or z.shape[1] < 1:
        raise ValueError(
            f"{name} must have shape (N, D) with N >= {min_rows} and D >= 1, got {tuple(z.shape)}"
        )
    return check_finite(z, name)


def check_spectrum(spectrum: Tensor, name: str = "spectrum") -> None:
    check_floating_tensor(spectrum, name, min_ndim=1)
    if spectrum.ndim != 1 or spectrum.numel() < 1:
        raise ValueError(f"{name} must have shape (D,) with D >= 1, got {tuple(spectrum.shape)}")
    check_finite(spectrum, name)


def _float64(z: Tensor, center: bool) -> Tensor:
    """``z`` detached in float64, minus its mean row when ``center``."""
    x = z.detach().double()
    return x - x.mean(dim=0, keepdim=True) if check_bool(center, "center") else x


def effective_rank(z: Tensor, *, eps: float = 1e-7, center: bool = False) -> float:
    """RankMe effective rank ``exp(−Σ_k p_k log p_k)``, ``p_k = σ_k / Σ_j σ_j + ε``.

    ``σ`` are the singular values of ``z``; the value lies in ``[1, min(N, D)]`` (up to ``ε``).

    Args:
        z: Embeddings, one row per sample.
        eps: The ``ε`` of RankMe (1e-7 in the paper).
        center: Subtract the mean embedding first (RankMe does not: the rank of the covariance).

    Shape:
        - z: ``(N, D)``
    """
    check_matrix(z, "z")
    check_positive(eps, "eps", allow_zero=True)
    s = torch.linalg.svdvals(_float64(z, center))
    total = s.sum()
    if float(total) == 0.0:
        return 1.0
    p = s / total + eps
    return math.exp(float(-(p * torch.log(p)).sum()))


def covariance_spectrum(z: Tensor, *, center: bool = True) -> Tensor:
    """Eigenvalues (float64, ≥ 0, descending) of the sample covariance ``ZᵀZ/(N − 1)`` (centred).

    Args:
        z: Samples, one per row (at least 2).
        center: Subtract the mean (``False`` gives the second-moment matrix ``ZᵀZ/N``).

    Shape:
        - z: ``(N, D)``; output: ``(D,)``
    """
    check_matrix(z, "z", min_rows=2)
    x = _float64(z, center)
    cov = x.T @ x / (x.shape[0] - 1 if center else x.shape[0])
    return torch.linalg.eigvalsh(cov).flip(0).clamp_min(0.0)


def delta_spectrum(z1: Tensor, z2: Tensor, *, center: bool = True) -> Tensor:
    """Covariance spectrum of ``Δz = z₂ − z₁``, the representation change caused by an action.

    Shape:
        - z1, z2: ``(N, D)``; output: ``(D,)``
    """
    check_matrix(z1, "z1", min_rows=2)
    check_matrix(z2, "z2", min_rows=2)
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    return covariance_spectrum(z2 - z1, center=center)


def topk_variance_fraction(spectrum: Tensor, k: int) -> float:
    """Fraction of the total variance in the ``k`` largest eigenvalues of ``spectrum``.

    Shape:
        - spectrum: ``(D,)``, non-negative (any order)
    """
    check_spectrum(spectrum)
    check_int(k, "k")
    if bool((spectrum < 0).any()):
        raise ValueError("spectrum must be non-negative (variances)")
    s = spectrum.double().sort(descending=True).values
    total = s.sum()
    return float(s[:k].sum() / total) if float(total) > 0 else 0.0


def principal_subspace(x: Tensor, k: int, *, center: bool = True) -> Tensor:
    """Orthonormal basis of the top-``k`` principal directions of ``x`` (as columns).

    Shape:
        - x: ``(N, D)``; output: ``(D, k)``
    """
    check_matrix(x, "x", min_rows=2)
    d = x.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d:
        raise ValueError(f"k must be an int in [1, {d}], got {k!r}")
    xd = _float64(x, center)
    _, vecs = torch.linalg.eigh(xd.T @ xd)
    return vecs.flip(1)[:, :k].to(x.dtype)


def subspace_explained_variance(x: Tensor, basis: Tensor, *, center: bool = True) -> float:
    """Fraction of the variance of ``x`` that lies in the span of ``basis``'s columns.

    ``‖X_c Q‖²_F / ‖X_c‖²_F`` with ``Q`` an orthonormal basis of ``span(basis)`` (QR) and ``X_c``
    the centred samples.

    Shape:
        - x: ``(N, D)``; basis: ``(D, k)``
    """
    check_matrix(x, "x", min_rows=2)
    check_floating_tensor(basis, "basis", min_ndim=2, shape_doc="(D, k)")
    if basis.ndim != 2 or basis.shape[0] != x.shape[1] or basis.shape[1] < 1:
        raise ValueError(
            f"basis must have shape ({x.shape[1]}, k) with k >= 1, got {tuple(basis.shape)}"
        )
    xd = _float64(x, center)
    check_finite(basis, "basis")
    q, _ = torch.linalg.qr(basis.detach().double().to(xd.device))
    total = xd.square().sum()
    return float((xd @ q).square().sum() / total) if float(total) > 0 else 0.0


def spectrum_effective_rank(spectrum: Tensor) -> float:
    r"""Effective rank :math:`\exp H(p)` in ``[1, D]`` of the samples behind a covariance spectrum.

    :math:`p_k = \sigma_k / \sum_j \sigma_j` with :math:`\sigma_k = \sqrt{\lambda_k}`: RankMe
    (:func:`effective_rank`, ``center=True``) without its :math:`\varepsilon`; 0.0 if all zero.

    Args:
        spectrum: Covariance eigenvalues (negative round-off is clamped to 0).

    Shape:
        - spectrum: ``(D,)``
    """
    check_spectrum(spectrum)
    sv = spectrum.double().clamp_min(0).sqrt()
    p = sv / sv.sum() if float(sv.sum()) > 0 else sv
    nz = p[p > 0]
    return float(torch.exp(-(nz * nz.log()).sum())) if nz.numel() else 0.0


@torch.no_grad()
def rotation_delta_spectrum(
    model: nn.Module,
    source: Any,
    *,
    angle_deg: float = 75.0,
    discrete: bool = False,
    batch_size: int = 500,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Tensor:
    r"""Covariance spectrum (float64, descending) of :math:`\Delta z` on pure-rotation pairs.

    Each image of ``source`` gives two views rotated by independent angles within :math:`\pm`
    ``angle_deg``, encoded by ``model.encode`` in eval mode.

    Args:
        model: ``encode(views)`` maps ``(B, 2, C, H, W)`` to ``(B, 2, D)`` (e.g. a SeqJEPA).
        source: Labelled images (:class:`~jepa_blocks.data.LabelledImages`).
        angle_deg, discrete: Angle range in degrees; quarter turns instead (``discrete=True``).
        batch_size, seed, device: Images per forward pass; seed of the angles; where to run.

    Shape:
        - output: ``(D,)``
    """
    from jepa_blocks.data import SequenceLoader, rotation_views
    from jepa_blocks.metrics.evaluation import eval_mode

    check_positive(angle_deg, "angle_deg")
    if not callable(getattr(model, "encode", None)):
        raise TypeError(f"model must have an encode(views) method, got {type(model).__name__}")
    check_bool(discrete, "discrete")
    angle = math.radians(angle_deg)
    views = rotation_views(discrete=discrete, angle_range=(-angle, angle))
    loader = SequenceLoader(
        source,
        views,
        num_observed=1,
        batch_size=batch_size,
        device=device,
        shuffle=False,
        seed=seed,
    )
    with eval_mode(model):
        zs = [model.encode(b.views).float().cpu() for b in loader]  # type: ignore[operator]
    z = torch.cat(zs)
    return delta_spectrum(z[:, 0], z[:, 1])
