"""VICReg's variance and covariance terms (Bardes, Ponce & LeCun, ICLR 2022): **penalties** ≥ 0
to *add* to the loss, in float32 (float64 input: float64), global under ``torch.distributed``
by default (the official code gathers the batch; lightly only with ``gather_distributed=True``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from jepa_blocks._module_form import FunctionModule
from jepa_blocks._validation import check_bool, check_choice, check_positive, check_samples
from jepa_blocks.distributed import all_reduce_sum, global_sum, is_distributed
from jepa_blocks.linalg import GLOBAL_BATCH_MODES, GlobalBatch, compute_dtype

__all__ = ["VICRegRegularizer", "vicreg_covariance", "vicreg_variance"]


def _covariance(
    z: Tensor, diagonal: bool, unbiased: bool, distributed: GlobalBatch, group: Any
) -> Tensor:
    """(Global) covariance ``(..., d, d)`` or its diagonal ``(..., d)``."""
    check_samples(z)
    check_bool(unbiased, "unbiased")
    glob = check_choice(distributed, "distributed", GLOBAL_BATCH_MODES) == "auto"
    glob = glob and is_distributed(group)
    if unbiased and z.shape[-2] < 2 and not glob:
        raise ValueError(f"z needs n >= 2 samples for unbiased=True, got shape {tuple(z.shape)}")
    with torch.autocast(device_type=z.device.type, enabled=False):
        zc = z.to(compute_dtype(z.dtype, "float32"))
        stats = torch.cat([zc.sum(-2), zc.new_full((*zc.shape[:-2], 1), zc.shape[-2])], -1)
        stats = all_reduce_sum(stats, group) if glob else stats.detach()
        n = stats[..., -1:]
        zc = zc - (stats[..., :-1] / n).unsqueeze(-2)  # no gradient through μ: Σ(z_i − μ) = 0
        m = zc.square().sum(-2) if diagonal else zc.mT @ zc
        m = global_sum(m, group) if glob else m
        denom = n - 1 if unbiased else n
        return m / (denom if diagonal else denom.unsqueeze(-1))


def vicreg_variance(
    z: Tensor,
    *,
    gamma: float = 1.0,
    eps: float = 1e-4,
    unbiased: bool = True,
    distributed: GlobalBatch = "auto",
    group: Any = None,
) -> Tensor:
    r"""Variance hinge :math:`v(Z) = \frac1d\sum_j \max(0, \gamma - \sqrt{C_{jj} + \epsilon})`,
    :math:`C` the covariance of the ``N`` rows of ``z`` (defaults: the paper's and lightly's).

    Args:
        z: Features, one sample per row.
        gamma: Target standard deviation.
        eps: Added to the variance.
        unbiased: ``1/(N−1)`` (official code, lightly) or ``1/N``.
        distributed: ``"auto"`` (global statistics) or ``"none"`` (per rank).
        group: Process group.

    Shape:
        - z: ``(..., N, d)``; output: ``(...)``
    """
    check_positive(gamma, "gamma", allow_zero=True)
    check_positive(eps, "eps", allow_zero=True)
    var = _covariance(z, True, unbiased, distributed, group)
    return torch.relu(gamma - torch.sqrt(var + eps)).mean(-1)


def vicreg_covariance(
    z: Tensor, *, unbiased: bool = True, distributed: GlobalBatch = "auto", group: Any = None
) -> Tensor:
    r"""Covariance penalty :math:`c(Z) = \frac1d\sum_{i\ne j} C_{ij}^2` (arguments as in
    :func:`vicreg_variance`).

    Shape:
        - z: ``(..., N, d)``; output: ``(...)``
    """
    cov = _covariance(z, False, unbiased, distributed, group)
    off = cov.square().sum((-2, -1)) - cov.diagonal(dim1=-2, dim2=-1).square().sum(-1)
    return off / z.shape[-1]


class VICRegRegularizer(FunctionModule):
    r"""``variance_weight·v(Z) + covariance_weight·c(Z)``, a penalty to add to the loss.

    The paper's loss is :math:`\lambda s(Z, Z') + \mu[v(Z) + v(Z')] + \nu[c(Z) + c(Z')]`,
    :math:`\mu = 25, \nu = 1` (the defaults): sum this module over both branches. The official
    code and lightly average the two variance terms: ``variance_weight=12.5`` matches them.

    Args:
        variance_weight, covariance_weight: :math:`\mu, \nu \ge 0`.
        gamma, eps, unbiased, distributed: As in :func:`vicreg_variance`.

    Shape:
        - input: ``(..., N, d)``; output: ``(...)``
    """

    _options = ("variance_weight", "covariance_weight", "gamma", "eps", "unbiased", "distributed")

    def __init__(
        self,
        *,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        unbiased: bool = True,
        distributed: GlobalBatch = "auto",
    ) -> None:
        super().__init__()
        self.variance_weight, self.covariance_weight, self.gamma, self.eps = (
            check_positive(value, name, allow_zero=True)
            for name, value in zip(self._options, (variance_weight, covariance_weight, gamma, eps))
        )
        self.unbiased = check_bool(unbiased, "unbiased")
        self.distributed = check_choice(distributed, "distributed", GLOBAL_BATCH_MODES)

    def forward(self, z: Tensor) -> Tensor:
        """The weighted penalty of ``z``."""
        kw: dict[str, Any] = {"unbiased": self.unbiased, "distributed": self.distributed}
        v = vicreg_variance(z, gamma=self.gamma, eps=self.eps, **kw)
        return self.variance_weight * v + self.covariance_weight * vicreg_covariance(z, **kw)
