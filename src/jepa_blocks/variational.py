r"""ToST's variational bound of :math:`R^c`: a factorisation-free compression rate.

Wu et al. (ICLR 2025), "Token Statistics Transformer: Linear-Time Attention via Variational Rate
Reduction", arXiv:2412.17810 (official ``RobinWu218/ToST``; TSSA is one gradient step on it).
Conventions as in :mod:`jepa_blocks.rate`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from jepa_blocks._module_form import FunctionModule
from jepa_blocks._validation import (
    check_choice,
    check_floating_tensor,
    check_positive,
    check_samples,
    membership_matrix,
)
from jepa_blocks.distributed import global_sum, is_distributed, world_size
from jepa_blocks.linalg import GLOBAL_BATCH_MODES, PRECISIONS, GlobalBatch, Precision, compute_dtype

__all__ = ["VariationalRate", "variational_rate"]

#: Floor of the class mass :math:`n_k` (as :func:`jepa_blocks.rate.rate_reduction`).
MASS_FLOOR = 1e-8


def _check_num_classes(num_classes: object) -> None:
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")


def variational_rate(
    z: Tensor,
    membership: Tensor,
    projections: Tensor | None,
    *,
    eps: float = 0.5,
    num_classes: int | None = None,
    precision: Precision = "float32",
    distributed: GlobalBatch = "auto",
    group: Any = None,
) -> Tensor:
    r"""ToST's variational (diagonal) upper bound of the compression term :math:`R^c`.

    With :math:`n_k = \sum_i \pi_{ik}` and bases :math:`U_k \in \mathbb{R}^{d \times p}`:

    .. math::

        R^{c,\mathrm{var}}(Z, \Pi \mid U_{[K]}) = \frac12 \sum_{k=1}^{K} \frac{n_k}{n}
            \sum_{j=1}^{p} \log\Big(1 + \frac{d}{\varepsilon^2}
            \frac{\big(U_k^\top Z^\top \operatorname{Diag}(\pi_k) Z U_k\big)_{jj}}{n_k}\Big)

    With square orthonormal :math:`U_k` it bounds :math:`R^c(Z \mid \Pi)` of
    :func:`~jepa_blocks.rate_reduction` from above (equal when each :math:`U_k` diagonalises the
    class moment). Orthonormality is assumed, not checked. Cost :math:`O(K n p)`.

    Args:
        z: Features, one sample per row.
        membership: Soft memberships (float ``(..., n, K)``, rows summing to 1; differentiable)
            or hard labels (integer ``(..., n)`` in ``[0, K)``).
        projections: The bases :math:`U_k` (orthonormal columns), or ``None`` for :math:`U_k = I`.
        eps, precision, group: As in :func:`~jepa_blocks.coding_rate`.
        num_classes: ``K`` for hard labels when ``projections`` is ``None``.
        distributed: ``"auto"``: the bound of the global batch under a multi-rank job (DDP
            convention); ``"none"``: local.

    Returns:
        :math:`R^{c,\mathrm{var}} \ge 0` in the computation dtype (float32, or float64).

    Shape:
        - z: ``(..., n, d)``; membership: ``(..., n, K)`` or ``(..., n)``
        - projections: ``(..., K, d, p)``; output: ``(...)``

    Example:
        >>> from jepa_blocks.variational import variational_rate
        >>> z = torch.nn.functional.normalize(torch.randn(64, 8), dim=-1)
        >>> pi = torch.softmax(torch.randn(64, 3), dim=-1)
        >>> u = torch.linalg.qr(torch.randn(3, 8, 8)).Q
        >>> bool(variational_rate(z, pi, u, eps=0.5) > 0)
        True
    """
    check_samples(z)
    eps = check_positive(eps, "eps")
    check_choice(precision, "precision", PRECISIONS)
    check_choice(distributed, "distributed", GLOBAL_BATCH_MODES)
    _check_num_classes(num_classes)
    n, d = z.shape[-2], z.shape[-1]
    k = num_classes
    if projections is not None:
        check_floating_tensor(projections, "projections", min_ndim=3, shape_doc="(..., K, d, p)")
        if projections.shape[-2] != d:
            raise ValueError(
                f"projections must have shape (..., K, d={d}, p) to match z.shape="
                f"{tuple(z.shape)}, got {tuple(projections.shape)}"
            )
        if k is not None and projections.shape[-3] != k:
            raise ValueError(
                f"projections hold K={projections.shape[-3]} bases but num_classes={k}"
            )
        k = projections.shape[-3]
    dtype = compute_dtype(z.dtype, precision)
    with torch.autocast(device_type=z.device.type, enabled=False):
        zc = z.to(dtype)
        pi = membership_matrix(membership, n, k, dtype, infer=False)  # (..., n, K)
        if projections is None:
            moments = torch.einsum("...nk,...nd->...kd", pi, zc.square())
        else:
            coords = torch.einsum("...nd,...kdp->...knp", zc, projections.to(dtype))
            moments = torch.einsum("...nk,...knp->...kp", pi, coords.square())
        n_k = pi.sum(-2)  # (..., K)
        if distributed == "auto" and is_distributed(group):
            moments, n_k = global_sum(moments, group), global_sum(n_k, group)
            n = n * world_size(group)
        diag = moments / n_k.clamp_min(MASS_FLOOR)[..., None]
        per_class = 0.5 * torch.log1p(diag * (d / eps**2)).sum(-1)
        return (n_k / n * per_class).sum(-1)


class VariationalRate(FunctionModule):
    r"""Module form of :func:`variational_rate` (ToST's diagonal bound of :math:`R^c`).

    Args:
        num_classes, eps, precision, distributed: As in :func:`variational_rate`.

    Shape:
        - As in :func:`variational_rate` (``projections`` may be ``None``)
    """

    _options = ("eps", "num_classes", "precision", "distributed")
    _shown = ("eps", "num_classes", "precision")

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        eps: float = 0.5,
        precision: Precision = "float32",
        distributed: GlobalBatch = "auto",
    ) -> None:
        super().__init__()
        self.eps = check_positive(eps, "eps")
        self.distributed = check_choice(distributed, "distributed", GLOBAL_BATCH_MODES)
        _check_num_classes(num_classes)
        self.num_classes = num_classes
        self.precision = check_choice(precision, "precision", PRECISIONS)

    def forward(self, z: Tensor, membership: Tensor, projections: Tensor | None = None) -> Tensor:
        """Return the bound for ``z``, ``membership`` and the bases ``projections``."""
        return variational_rate(z, membership, projections, **self._kwargs())
