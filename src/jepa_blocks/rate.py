r"""Coding-rate regularizers: rate, rate reduction (MCR²), EMP-SSL TCR, SimDINO expansion.

Library-wide conventions: samples are **rows** (``z``: ``(..., n, d)``, leading dimensions
broadcast); ``eps`` is the papers' :math:`\varepsilon` (the official code's ``eps`` is
:math:`\varepsilon^2`: :func:`eps_from_code`); rates are **positive**, objectives negate them.
Every log-determinant goes through :func:`jepa_blocks.linalg.half_logdet_i_plus_gram`.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple, overload

import torch
from torch import Tensor, nn

from jepa_blocks._module_form import FunctionModule
from jepa_blocks._validation import (
    check_bool,
    check_choice,
    check_floating_tensor,
    check_int,
    check_positive,
    check_samples,
    membership_matrix,
)
from jepa_blocks.distributed import all_gather_rows, all_reduce_sum, is_distributed, world_size
from jepa_blocks.linalg import (
    DISTRIBUTED_MODES,
    FORMS,
    GLOBAL_BATCH_MODES,
    PRECISIONS,
    Distributed,
    Form,
    GlobalBatch,
    Precision,
    compute_dtype,
    half_logdet_i_plus_gram,
)
from jepa_blocks.variational import VariationalRate, variational_rate

__all__ = [
    "CodingRate",
    "RateReduction",
    "RateReductionParts",
    "SimDINOExpansion",
    "TotalCodingRate",
    "UnitNormRate",
    "VariationalRate",
    "coding_rate",
    "eps_from_code",
    "rate_reduction",
    "simdino_expansion",
    "total_coding_rate",
    "variational_rate",
]


def eps_from_code(eps_code: float) -> float:
    r"""Convert the official code's ``eps`` (:math:`\varepsilon^2`) to our ``eps``, its square root.

    Args:
        eps_code: The official code's ``eps`` (> 0; the "Coding rate" page tables them).

    Example:
        >>> round(eps_from_code(0.2), 4)  # EMP-SSL
        0.4472
    """
    return math.sqrt(check_positive(eps_code, "eps_code"))


def _resolve_strategy(distributed: Distributed, d: int, n: int, group: Any) -> str:
    check_choice(distributed, "distributed", DISTRIBUTED_MODES)
    if distributed == "none" or not is_distributed(group):
        return "none"
    if distributed == "auto":
        # Communicate the smaller object: the d×d Gram or the (W·n)×d gathered features.
        return "gram" if d <= world_size(group) * n else "gather"
    return distributed


def coding_rate(
    z: Tensor,
    *,
    eps: float = 0.5,
    scale: float | None = None,
    center: bool = False,
    precision: Precision = "float32",
    distributed: Distributed = "auto",
    form: Form = "auto",
    group: Any = None,
) -> Tensor:
    r"""Coding rate :math:`R(Z) = \tfrac12 \log\det(I_d + \alpha Z^\top Z)`, :math:`\alpha = d/(n\varepsilon^2)`.

    Yu et al. (2020), "Learning Diverse and Discriminative Representations via the Principle
    of Maximal Coding Rate Reduction", for row samples; finite input never yields NaN/inf.

    Args:
        z: Features, one sample per row (fp16/bf16 are upcast).
        eps: The papers' :math:`\varepsilon > 0` (**not** the code's ε²); unused with ``scale``.
        scale: :math:`\alpha` directly.
        center: Subtract the (global) mean over samples first (the official SSL losses do not).
        precision: Least precision of the Gram and the factorisation.
        distributed: Multi-rank: ``"gram"`` (all-reduce the ``d×d`` Gram), ``"gather"`` (the
            rows), ``"auto"`` (the cheaper) or ``"none"`` (local); global ``n``, DDP convention.
        form: The Gram to factor: ``"auto"`` (smaller), ``"dxd"`` or ``"nxn"`` (same value).
        group: Process group (default: the world).

    Returns:
        The rate :math:`R \ge 0` in the computation dtype (float32, or float64).

    Shape:
        - z: ``(..., n, d)``; output: ``(...)``

    Example:
        >>> bool(coding_rate(torch.nn.functional.normalize(torch.randn(256, 64), dim=-1)) > 0)
        True
    """
    check_samples(z)
    check_bool(center, "center")
    check_choice(precision, "precision", PRECISIONS)
    check_choice(form, "form", FORMS)
    if scale is None:
        check_positive(eps, "eps")
    else:
        check_positive(scale, "scale", allow_zero=True)
    n, d = z.shape[-2], z.shape[-1]
    strategy = _resolve_strategy(distributed, d, n, group)
    dtype = compute_dtype(z.dtype, precision)
    with torch.autocast(device_type=z.device.type, enabled=False):
        zc = z.to(dtype)
        if strategy == "gram":
            if form == "nxn":
                raise ValueError("distributed='gram' factors the d×d Gram; use form='dxd'/'auto'")
            stats = torch.cat([zc.sum(-2), zc.new_full((*zc.shape[:-2], 1), float(n))], dim=-1)
            stats = all_reduce_sum(stats, group)
            n_total = stats[..., -1:]  # (..., 1), identical on every entry
            if center:
                # no gradient through the global mean: Σ_i (z_i − μ) = 0
                zc = zc - (stats[..., :-1] / n_total)[..., None, :]
            alpha: Tensor | float = scale if scale is not None else d / (n_total[..., 0] * eps**2)
            return half_logdet_i_plus_gram(
                zc, alpha, form="dxd", precision=precision, all_reduce=True, group=group
            )
        if strategy == "gather":
            zc = all_gather_rows(zc, group)
        if center:
            zc = zc - zc.mean(dim=-2, keepdim=True).detach()
        alpha = scale if scale is not None else d / (zc.shape[-2] * eps**2)
        return half_logdet_i_plus_gram(zc, alpha, form=form, precision=precision)


class RateReductionParts(NamedTuple):
    r"""Terms of the rate reduction :math:`\Delta R = \gamma R - R^c`.

    Attributes:
        delta: :math:`\Delta R`, shape ``(...)``.
        expansion: :math:`R(Z)`, shape ``(...)``.
        compression: :math:`R^c(Z \mid \Pi) = \sum_k (n_k/n) R_k`, shape ``(...)``.
        per_class: The per-class rates :math:`R_k` (before the ``n_k/n`` weights), ``(..., K)``.
    """

    delta: Tensor
    expansion: Tensor
    compression: Tensor
    per_class: Tensor


def _safe_sqrt(x: Tensor) -> Tensor:
    """``√x`` with a zero (not infinite) gradient at ``x = 0``."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0)


@overload
def rate_reduction(
    z: Tensor,
    membership: Tensor,
    *,
    eps: float = ...,
    gamma: float = ...,
    num_classes: int | None = ...,
    precision: Precision = ...,
    return_parts: Literal[False] = ...,
    distributed: GlobalBatch = ...,
    group: Any = ...,
) -> Tensor: ...


@overload
def rate_reduction(
    z: Tensor,
    membership: Tensor,
    *,
    return_parts: Literal[True],
    eps: float = ...,
    gamma: float = ...,
    num_classes: int | None = ...,
    precision: Precision = ...,
    distributed: GlobalBatch = ...,
    group: Any = ...,
) -> RateReductionParts: ...


def rate_reduction(
    z: Tensor,
    membership: Tensor,
    *,
    eps: float = 0.5,
    gamma: float = 1.0,
    num_classes: int | None = None,
    precision: Precision = "float32",
    return_parts: bool = False,
    distributed: GlobalBatch = "auto",
    group: Any = None,
) -> Tensor | RateReductionParts:
    r"""MCR² rate reduction :math:`\Delta R = \gamma R(Z) - R^c(Z \mid \Pi)`.

    With class memberships :math:`\pi_k \in [0,1]^n`, :math:`n_k = \sum_i \pi_{ik}`:

    .. math::

        R^c(Z \mid \Pi) = \sum_{k=1}^{K} \frac{n_k}{2n}
            \log\det\Big(I + \frac{d}{n_k \varepsilon^2} Z^\top \operatorname{Diag}(\pi_k) Z\Big)

    (Yu et al. 2020, eq. 8; official ``ryanchankh/mcr2``, ``loss.py``), all :math:`K + 1`
    log-determinants in one factorisation. Empty classes contribute 0 (:math:`n_k \ge 10^{-8}`).

    Args:
        z: Features, one sample per row.
        membership: Hard labels (integer ``(..., n)`` in ``[0, K)``) or soft memberships (float
            ``(..., n, K)``, rows summing to 1; differentiable).
        eps: The papers' :math:`\varepsilon`.
        gamma: Weight :math:`\gamma` of the expansion term (mcr2's ``gam2``).
        num_classes: ``K`` for hard labels (``None``: ``membership.max() + 1``, a host sync).
        precision: ``"float32"`` or ``"float64"``.
        return_parts: Return a :class:`RateReductionParts` instead of ``ΔR`` alone.
        distributed: ``"auto"``: ``ΔR`` of the gathered global batch under a multi-rank job
            (DDP convention); ``"none"``: the local batch.
        group: Process group (default: the world).

    Shape:
        - z: ``(..., n, d)``; membership: ``(..., n)`` (labels) or ``(..., n, K)`` (soft)
        - output: ``(...)``; ``per_class``: ``(..., K)``
    """
    check_samples(z)
    check_positive(eps, "eps")
    check_positive(gamma, "gamma", allow_zero=True)
    check_choice(precision, "precision", PRECISIONS)
    check_choice(distributed, "distributed", GLOBAL_BATCH_MODES)
    if distributed == "auto" and is_distributed(group) and isinstance(membership, Tensor):
        z = all_gather_rows(z, group)
        if membership.is_floating_point():
            membership = all_gather_rows(membership, group)
        else:
            membership = all_gather_rows(membership[..., None], group)[..., 0]
    n, d = z.shape[-2], z.shape[-1]
    dtype = compute_dtype(z.dtype, precision)
    with torch.autocast(device_type=z.device.type, enabled=False):
        zc = z.to(dtype)
        pi = membership_matrix(membership, n, num_classes, zc.dtype).mT  # (..., K, n)
        batch = torch.broadcast_shapes(zc.shape[:-2], pi.shape[:-2])
        zc = zc.expand(*batch, n, d)
        pi = pi.expand(*batch, *pi.shape[-2:])
        n_k = pi.sum(-1)  # (..., K)
        weighted = _safe_sqrt(pi)[..., None] * zc[..., None, :, :]  # (..., K, n, d)
        stacked = torch.cat([zc[..., None, :, :], weighted], dim=-3)  # (..., K+1, n, d)
        scales = d / (torch.cat([n_k.new_full((*batch, 1), float(n)), n_k.clamp_min(1e-8)], -1))
        halves = half_logdet_i_plus_gram(stacked, scales / eps**2, precision=precision)
        expansion, per_class = halves[..., 0], halves[..., 1:]
        compression = (n_k / n * per_class).sum(-1)
        delta = gamma * expansion - compression
    if return_parts:
        return RateReductionParts(delta, expansion, compression, per_class)
    return delta


def _stack_views(z: Tensor | list[Tensor] | tuple[Tensor, ...], name: str) -> Tensor:
    if isinstance(z, (list, tuple)):
        if len(z) == 0:
            raise ValueError(f"{name} must contain at least one view, got an empty sequence")
        shapes = {tuple(v.shape) if isinstance(v, Tensor) else None for v in z}
        if len(shapes) != 1 or None in shapes:
            raise ValueError(f"all views in {name} must be tensors of one shape, got {shapes}")
        z = torch.stack(list(z), dim=-3)
    check_floating_tensor(z, name, min_ndim=3, shape_doc="(..., V, n, d)")
    check_samples(z, name)
    return z


def total_coding_rate(
    z: Tensor | list[Tensor] | tuple[Tensor, ...],
    *,
    eps: float = 0.2**0.5,
    precision: Precision = "float32",
    distributed: Distributed = "auto",
    group: Any = None,
) -> Tensor:
    r"""EMP-SSL total coding rate: the mean over views (patch chunks) of :math:`R(Z_v)`.

    Tong, Chen, Ma, LeCun (2023), "EMP-SSL: Towards Self-Supervised Learning in One Training
    Epoch"; official ``tsb0601/EMP-SSL`` (``loss.py::TotalCodingRate``), loss ``-TCR``.

    Args:
        z: Stacked views ``(..., V, n, d)`` or a list of ``V`` tensors ``(..., n, d)``.
        eps: :math:`\varepsilon` (EMP-SSL's ``--eps 0.2`` is ε²).
        precision: ``"float32"`` or ``"float64"``.
        distributed: As in :func:`coding_rate` (``"none"``: per rank, as the official code).
        group: Process group.

    Shape:
        - z: ``(..., V, n, d)``; output: ``(...)``
    """
    zs = _stack_views(z, "z")
    rates = coding_rate(zs, eps=eps, precision=precision, distributed=distributed, group=group)
    return rates.mean(-1)


def simdino_expansion(
    z: Tensor | list[Tensor] | tuple[Tensor, ...],
    *,
    eps: float = 0.5**0.5,
    distributed: Distributed = "auto",
    official_local_scale: bool = False,
    balance: bool = True,
    precision: Precision = "float32",
    group: Any = None,
) -> Tensor:
    r"""SimDINO expansion term: γ-balanced mean over views of the uncentred coding rate.

    Wu et al. (2025), "Simplifying DINO via Coding Rate Regularization"; official
    ``RobinWu218/SimDINO`` (``MCRLoss.calc_expansion``): :math:`\gamma\frac1V\sum_v R(W_v)` over
    :math:`N` ranks of :math:`m` samples, :math:`\gamma = (p + Nm)/(pNm)`. The official default
    ``reduce_cov = 0`` (SimDINO#43) is ``distributed="none", official_local_scale=True``.

    Args:
        z: L2-normalised features, stacked ``(..., V, m, d)`` or a list of ``V`` tensors.
        eps: :math:`\varepsilon` (v1's ``eps 0.5`` is ε²).
        distributed: ``"auto"``/``"gram"``/``"gather"``: global rate; ``"none"``: local Gram.
        official_local_scale: With a local Gram on ``N > 1`` ranks, scale by ``p/(N m ε²)``.
        balance: Multiply by :math:`\gamma`, as the official code does.
        precision: ``"float32"`` or ``"float64"``.
        group: Process group.

    Shape:
        - z: ``(..., V, m, d)``; output: ``(...)``
    """
    zs = _stack_views(z, "z")
    m, p = zs.shape[-2], zs.shape[-1]
    n_ranks = world_size(group)
    scale = None
    if official_local_scale and _resolve_strategy(distributed, p, m, group) == "none":
        scale = p / (n_ranks * m * check_positive(eps, "eps") ** 2)
    rates = coding_rate(
        zs, eps=eps, scale=scale, precision=precision, distributed=distributed, group=group
    )
    return rates.mean(-1) * ((p + n_ranks * m) / (p * n_ranks * m) if balance else 1.0)


class CodingRate(FunctionModule):
    r"""Module form of :func:`coding_rate`: :math:`\tfrac12\log\det(I + \frac{d}{n\varepsilon^2} Z^\top Z)`.

    Args:
        eps, scale, center, precision, distributed, form: As in :func:`coding_rate`.

    Shape:
        - input: ``(..., n, d)``; output: ``(...)``
    """

    _options = ("eps", "scale", "center", "precision", "distributed", "form")

    def __init__(
        self,
        *,
        eps: float = 0.5,
        center: bool = False,
        scale: float | None = None,
        precision: Precision = "float32",
        form: Form = "auto",
        distributed: Distributed = "auto",
    ) -> None:
        super().__init__()
        self.eps = check_positive(eps, "eps")
        self.scale = None if scale is None else check_positive(scale, "scale", allow_zero=True)
        self.center = check_bool(center, "center")
        self.precision = check_choice(precision, "precision", PRECISIONS)
        self.distributed = check_choice(distributed, "distributed", DISTRIBUTED_MODES)
        self.form = check_choice(form, "form", FORMS)

    def forward(self, z: Tensor) -> Tensor:
        """Return the coding rate of ``z`` (see :func:`coding_rate`)."""
        return coding_rate(z, **self._kwargs())


class RateReduction(FunctionModule):
    r"""Module form of :func:`rate_reduction`: :math:`\Delta R = \gamma R(Z) - R^c(Z \mid \Pi)`.

    Args:
        eps, gamma, num_classes, precision, return_parts, distributed: See :func:`rate_reduction`.

    Shape:
        - z: ``(..., n, d)``; membership: ``(..., n)`` or ``(..., n, K)``; output: ``(...)``
    """

    _options = ("eps", "gamma", "num_classes", "precision", "return_parts", "distributed")
    _shown = ("eps", "gamma", "num_classes")

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        eps: float = 0.5,
        gamma: float = 1.0,
        return_parts: bool = False,
        precision: Precision = "float32",
        distributed: GlobalBatch = "auto",
    ) -> None:
        super().__init__()
        self.eps = check_positive(eps, "eps")
        self.gamma = check_positive(gamma, "gamma", allow_zero=True)
        self.distributed = check_choice(distributed, "distributed", GLOBAL_BATCH_MODES)
        self.num_classes = None if num_classes is None else check_int(num_classes, "num_classes")
        self.precision = check_choice(precision, "precision", PRECISIONS)
        self.return_parts = check_bool(return_parts, "return_parts")

    def forward(self, z: Tensor, membership: Tensor) -> Tensor | RateReductionParts:
        """Return ``ΔR`` (or its parts) for ``z`` and ``membership``."""
        return rate_reduction(z, membership, **self._kwargs())


class TotalCodingRate(FunctionModule):
    r"""Module form of :func:`total_coding_rate` (EMP-SSL).

    Args:
        eps, precision, distributed: As in :func:`total_coding_rate`.

    Shape:
        - input: ``(..., V, n, d)`` or a list of ``V`` tensors ``(..., n, d)``; output: ``(...)``
    """

    _options = ("eps", "precision", "distributed")

    def __init__(
        self,
        *,
        eps: float = 0.2**0.5,
        precision: Precision = "float32",
        distributed: Distributed = "auto",
    ) -> None:
        super().__init__()
        self.eps = check_positive(eps, "eps")
        self.precision = check_choice(precision, "precision", PRECISIONS)
        self.distributed = check_choice(distributed, "distributed", DISTRIBUTED_MODES)

    def forward(self, z: Tensor | list[Tensor]) -> Tensor:
        """Return the mean coding rate over views."""
        return total_coding_rate(z, **self._kwargs())


class SimDINOExpansion(FunctionModule):
    r"""Module form of :func:`simdino_expansion`.

    Args:
        eps, distributed, official_local_scale, balance, precision: As in :func:`simdino_expansion`.

    Shape:
        - input: ``(..., V, m, d)`` or a list of ``V`` tensors ``(..., m, d)``; output: ``(...)``
    """

    _options = ("eps", "distributed", "official_local_scale", "balance", "precision")
    _shown = ("eps", "distributed", "balance")

    def __init__(
        self,
        *,
        eps: float = 0.5**0.5,
        distributed: Distributed = "auto",
        official_local_scale: bool = False,
        balance: bool = True,
        precision: Precision = "float32",
    ) -> None:
        super().__init__()
        self.eps = check_positive(eps, "eps")
        self.distributed = check_choice(distributed, "distributed", DISTRIBUTED_MODES)
        self.official_local_scale = check_bool(official_local_scale, "official_local_scale")
        self.balance = check_bool(balance, "balance")
        self.precision = check_choice(precision, "precision", PRECISIONS)

    def forward(self, z: Tensor | list[Tensor]) -> Tensor:
        """Return the SimDINO expansion term."""
        return simdino_expansion(z, **self._kwargs())


class UnitNormRate(nn.Module):
    r"""Apply a rate to L2-normalised samples: :math:`R(z / \lVert z\rVert)`, as MCR², EMP-SSL.

    On raw features the rate can be raised by scaling them up instead of spreading them.

    Args:
        rate: The rate, ``(..., n, d) → (...)``, e.g. :class:`CodingRate`.

    Shape:
        - input: ``(..., n, d)``; output: what ``rate`` returns, e.g. ``(...)``
    """

    def __init__(self, rate: nn.Module) -> None:
        super().__init__()
        if not callable(rate):
            raise TypeError(f"rate must be callable, got {type(rate).__name__}")
        self.rate = rate

    def forward(self, z: Tensor) -> Tensor:
        """Return ``rate(normalize(z))``."""
        return self.rate(torch.nn.functional.normalize(z, dim=-1))
