"""Subspace projections: ``K`` mutually orthogonal bases in named parts (e.g. invariant and
equivariant), and CRATE's subspace compression as a regulariser term.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from jepa_blocks._validation import (
    check_choice,
    check_floating_tensor,
    check_int,
    check_positive,
    check_samples,
)
from jepa_blocks.linalg import Distributed, Precision
from jepa_blocks.rate import coding_rate

__all__ = ["SubspaceProjection", "subspace_compression", "subspace_coordinates"]

Orthogonality = Literal["parametrization", "penalty"]


def subspace_coordinates(z: Tensor, bases: Tensor) -> Tensor:
    """Coordinates :math:`z U_k` of ``z`` in each subspace.

    Shape:
        - z: ``(..., d)``; bases: ``(K, d, p)``; output: ``(..., K, p)``
    """
    check_floating_tensor(z, "z", min_ndim=1)
    check_floating_tensor(bases, "bases", min_ndim=3, shape_doc="(K, d, p)")
    if bases.ndim != 3 or bases.shape[1] != z.shape[-1]:
        raise ValueError(f"bases must have shape (K, {z.shape[-1]}, p), got {tuple(bases.shape)}")
    k, d, p = bases.shape
    return (z @ bases.permute(1, 0, 2).reshape(d, k * p)).unflatten(-1, (k, p))


def subspace_compression(
    z: Tensor,
    bases: Tensor,
    *,
    eps: float = 0.5,
    precision: Precision = "float32",
    distributed: Distributed = "auto",
    group: Any = None,
) -> Tensor:
    r"""CRATE's compression (Yu et al. 2023, "White-Box Transformers via Sparse Rate Reduction"):

    .. math::

        R^c(Z \mid U_{[K]}) = \sum_k \tfrac12 \log\det\Bigl(I + \frac{p}{N\varepsilon^2}
        (Z U_k)^\top (Z U_k)\Bigr) \ge 0

    each term a :func:`~jepa_blocks.coding_rate`; CRATE *minimises* it (add :math:`\lambda R^c`).

    Args:
        z: Samples as rows.
        bases: The bases :math:`U_k`.
        eps, precision, distributed, group: As in :func:`~jepa_blocks.coding_rate`.

    Shape:
        - z: ``(..., N, d)``; bases: ``(K, d, p)``; output: ``(...)``
    """
    check_samples(z)
    coords = subspace_coordinates(z, bases).movedim(-2, -3)  # (..., K, N, p)
    rates = coding_rate(coords, eps=eps, precision=precision, distributed=distributed, group=group)
    return rates.sum(-1)


class SubspaceProjection(nn.Module):
    r"""``K`` mutually orthogonal ``p``-dimensional subspaces of ``ℝ^d`` in named parts.

    Args:
        dim, subspace_dim: ``d`` and ``p``.
        parts: Subspace counts per part, e.g. ``{"invariant": 2, "equivariant": 2}`` (an int
            ``K``: one part ``"all"``); ``K·p ≤ d``.
        orthogonality: ``"parametrization"`` (:func:`torch.nn.utils.parametrizations.orthogonal`)
            or ``"penalty"`` (free, orthonormal at init; add :meth:`orthogonality_penalty`).
        eps: :math:`\varepsilon` of :meth:`compression`.

    Shape:
        - input: ``(..., d)``; output: ``(..., K, p)``
    """

    weight: Tensor

    def __init__(
        self,
        dim: int,
        *,
        subspace_dim: int,
        parts: int | Mapping[str, int],
        orthogonality: Orthogonality = "parametrization",
        eps: float = 0.5,
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim")
        self.subspace_dim = check_int(subspace_dim, "subspace_dim")
        counts = {"all": parts} if isinstance(parts, int) else parts
        if not isinstance(counts, Mapping) or not counts:
            raise TypeError(f"parts must be an int or a non-empty mapping, got {parts!r}")
        self.parts = {str(name): check_int(c, f"parts[{name!r}]") for name, c in counts.items()}
        self.num_subspaces = sum(self.parts.values())
        width = self.num_subspaces * self.subspace_dim
        if width > self.dim:
            raise ValueError(f"K·p = {width} subspace dimensions exceed dim = {self.dim}")
        self.orthogonality = check_choice(orthogonality, "orthogonality", get_args(Orthogonality))
        self.eps = check_positive(eps, "eps")
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(self.dim, width)).Q)
        if self.orthogonality == "parametrization":
            nn.utils.parametrizations.orthogonal(self, "weight")

    @property
    def bases(self) -> Tensor:
        """The bases :math:`U_k`, ``(K, d, p)``."""
        return self.weight.unflatten(1, (self.num_subspaces, self.subspace_dim)).permute(1, 0, 2)

    def subspaces(self, part: str) -> slice:
        """The subspace indices of ``part``."""
        check_choice(part, "part", tuple(self.parts))
        names = list(self.parts)
        start = sum(self.parts[n] for n in names[: names.index(part)])
        return slice(start, start + self.parts[part])

    def forward(self, z: Tensor) -> Tensor:
        """Coordinates of ``z`` in every subspace, ``(..., K, p)``."""
        return (z @ self.weight).unflatten(-1, (self.num_subspaces, self.subspace_dim))

    def part(self, z: Tensor, name: str) -> Tensor:
        """Concatenated coordinates of ``z`` in the subspaces of part ``name``, ``(..., k·p)``."""
        s, p = self.subspaces(name), self.subspace_dim
        return z @ self.weight[:, s.start * p : s.stop * p]

    def compression(self, z: Tensor, *, part: str | None = None, **kwargs: Any) -> Tensor:
        """:func:`subspace_compression` (``kwargs``: its options) over all or ``part``'s subspaces."""
        bases = self.bases
        if part is not None:
            bases = bases[self.subspaces(part)]
        return subspace_compression(z, bases, eps=self.eps, **kwargs)

    def orthogonality_penalty(self) -> Tensor:
        r""":math:`\lVert U^\top U - I\rVert_F^2` (zero up to rounding under the parametrization)."""
        w = self.weight
        return (w.mT @ w - torch.eye(w.shape[1], dtype=w.dtype, device=w.device)).square().sum()

    def extra_repr(self) -> str:
        return f"{self.dim}, subspace_dim={self.subspace_dim}, parts={self.parts}"
