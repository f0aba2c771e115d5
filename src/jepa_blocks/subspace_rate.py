"""Rate reduction over an invariant / equivariant subspace split of sequence features."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from jepa_blocks._module_form import FunctionModule
from jepa_blocks._validation import (
    check_choice,
    check_floating_tensor,
    check_int,
    check_positive,
    check_samples,
    check_type,
)
from jepa_blocks.linalg import DISTRIBUTED_MODES, PRECISIONS, Distributed, Precision
from jepa_blocks.rate import coding_rate
from jepa_blocks.subspace import SubspaceProjection, subspace_compression

__all__ = ["SubspaceRateReduction", "subspace_rate_reduction"]


def subspace_rate_reduction(
    z: Tensor,
    invariant_bases: Tensor,
    equivariant_bases: Tensor,
    *,
    num_observed: int | None = None,
    split_weight: float = 1.0,
    normalize: bool = True,
    eps: float = 0.5,
    precision: Precision = "float32",
    distributed: Distributed = "auto",
    group: Any = None,
) -> Tensor:
    r"""Rate reduction of ``z`` over invariant and equivariant subspaces (a rate: maximise it).

    With ``Z`` the rows of ``z`` (L2-normalised if ``normalize``), ``U`` all bases,
    :math:`\bar Z` the means of consecutive groups of ``num_observed`` rows (one group per
    sequence, rows sequence-major) and ``W`` the rows minus their group's mean:

    .. math::

        \Delta R = R(Z) - R^c(Z \mid U)
          + \beta\,\big[R^c(\bar Z \mid U_\text{inv}) - R^c(W \mid U_\text{inv})
          + R^c(W \mid U_\text{eq}) - R^c(\bar Z \mid U_\text{eq})\big]

    CRATE's rate reduction (Yu et al. 2023) plus, in brackets, MCR² with the sequences as
    classes in the invariant subspaces and the reverse in the equivariant ones, so that the
    latter carry what changes between views (``num_observed=None`` drops the bracket).

    Args:
        z: Features, sequence-major when ``num_observed`` is given.
        invariant_bases, equivariant_bases: :math:`U_\text{inv}`, :math:`U_\text{eq}`.
        num_observed: Rows per sequence ``M`` (≥ 2), or ``None``.
        split_weight: :math:`\beta \ge 0`.
        normalize: L2-normalise the rows first (so the rate cannot grow by scaling).
        eps: :math:`\varepsilon` of every rate.
        precision, distributed, group: As in :func:`~jepa_blocks.coding_rate` (under DDP every
            rate is of the global batch; the sequences must not straddle ranks).

    Shape:
        - z: ``(N, d)`` with ``N = B·M``; bases: ``(K, d, p)``; output: ``()``
    """
    check_samples(z)
    if z.ndim != 2:
        raise ValueError(f"z must have shape (N, d), got {tuple(z.shape)}")
    if num_observed is not None:
        check_int(num_observed, "num_observed", minimum=2)
        if z.shape[0] % num_observed:
            raise ValueError(
                f"z must be (B·M, d) with num_observed = M = {num_observed} rows per sequence, "
                f"got {z.shape[0]} rows"
            )
    check_positive(split_weight, "split_weight", allow_zero=True)
    check_type(normalize, "normalize", bool, "a bool")
    opts: dict[str, Any] = dict(eps=eps, precision=precision, distributed=distributed, group=group)
    if normalize:
        z = F.normalize(z, dim=-1)
    for name, b in (("invariant_bases", invariant_bases), ("equivariant_bases", equivariant_bases)):
        check_floating_tensor(b, name, min_ndim=3, shape_doc="(K, d, p)")
    if invariant_bases.shape[1:] != equivariant_bases.shape[1:]:
        raise ValueError(
            "invariant_bases and equivariant_bases must be (K, d, p) with the same d and p, got "
            f"{tuple(invariant_bases.shape)} and {tuple(equivariant_bases.shape)}"
        )
    bases = torch.cat((invariant_bases, equivariant_bases), dim=0)
    rate = coding_rate(z, **opts) - subspace_compression(z, bases, **opts)
    if num_observed is None:
        return rate
    groups = rearrange(z, "(b m) d -> b m d", m=num_observed)
    means = groups.mean(1)
    within = rearrange(groups - means[:, None], "b m d -> (b m) d")
    split = (
        subspace_compression(means, invariant_bases, **opts)
        - subspace_compression(within, invariant_bases, **opts)
        + subspace_compression(within, equivariant_bases, **opts)
        - subspace_compression(means, equivariant_bases, **opts)
    )
    return rate + split_weight * split


class SubspaceRateReduction(FunctionModule):
    r""":func:`subspace_rate_reduction` over the parts of a learned :class:`SubspaceProjection`.

    A **rate**: as a :class:`~jepa_blocks.SeqJEPA` regularizer, subtract it
    (``regularizer_kind="rate"``) on the encoder output (``regularize_on="z"``: its rows are
    the ``B·M`` observed views, sequence-major). The projection is trained with the model;
    probe its parts with :func:`jepa_blocks.metrics.subspace_leakage`. Let the parts cover
    ``z`` (``K·p = d``): otherwise the compression is minimised by moving ``z`` into the
    uncovered complement, emptying both parts (measured in step 2, :doc:`/regularizers`).

    Args:
        projection: Bases with parts ``"invariant"`` and ``"equivariant"`` (its ``eps`` is the
            ε of every rate).
        num_observed, normalize, split_weight, precision, distributed: As in
            :func:`subspace_rate_reduction`.

    Shape:
        - input: ``(B·M, d)``; output: ``()``
    """

    _options = ("num_observed", "split_weight", "normalize", "precision", "distributed")

    def __init__(
        self,
        projection: SubspaceProjection,
        *,
        num_observed: int | None = None,
        normalize: bool = True,
        split_weight: float = 1.0,
        precision: Precision = "float32",
        distributed: Distributed = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(projection, SubspaceProjection) or set(projection.parts) != {
            "invariant",
            "equivariant",
        }:
            raise TypeError(
                "projection must be a SubspaceProjection with parts 'invariant' and "
                f"'equivariant', got {projection!r}"
            )
        self.projection = projection
        covered = projection.num_subspaces * projection.subspace_dim
        if covered < projection.dim:
            warnings.warn(
                f"projection covers {covered} of dim={projection.dim} dimensions: the compression "
                "can be minimised by moving z into the uncovered complement (both parts empty)",
                UserWarning,
                stacklevel=2,
            )
        if num_observed is not None:
            check_int(num_observed, "num_observed", minimum=2)
        self.num_observed = num_observed
        self.split_weight = check_positive(split_weight, "split_weight", allow_zero=True)
        self.normalize = check_type(normalize, "normalize", bool, "a bool")
        check_choice(precision, "precision", PRECISIONS)
        check_choice(distributed, "distributed", DISTRIBUTED_MODES)
        self.precision: Precision = precision
        self.distributed: Distributed = distributed

    def forward(self, z: Tensor) -> Tensor:
        r""":math:`\Delta R` of ``z``."""
        proj = self.projection
        bases = proj.bases
        return subspace_rate_reduction(
            z,
            bases[proj.subspaces("invariant")],
            bases[proj.subspaces("equivariant")],
            eps=proj.eps,
            **self._kwargs(),
        )
