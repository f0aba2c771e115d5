"""Per-part diagnostics of a :class:`~jepa_blocks.subspace.SubspaceProjection`.

Keys are ``"{part}/{metric}"`` (and ``"subspace{k}/explained_variance"``), ready to log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from jepa_blocks._validation import check_type
from jepa_blocks.metrics.probes import linear_probe_accuracy, regression_r2
from jepa_blocks.metrics.rank import check_matrix, effective_rank, subspace_explained_variance
from jepa_blocks.subspace import SubspaceProjection

__all__ = ["subspace_diagnostics", "subspace_leakage"]


@torch.no_grad()
def subspace_diagnostics(projection: SubspaceProjection, z: Tensor) -> dict[str, float]:
    """``{part}/effective_rank`` (of the part's coordinates), ``{part}/explained_variance`` and
    ``subspace{k}/explained_variance`` (:func:`~jepa_blocks.metrics.subspace_explained_variance`).

    Shape:
        - z: ``(N, d)``
    """
    proj = check_type(projection, "projection", SubspaceProjection, "a SubspaceProjection")
    check_matrix(z, "z", min_rows=2)
    bases = proj.bases.detach()
    out = {}
    for name in proj.parts:
        s = proj.subspaces(name)
        out[f"{name}/effective_rank"] = effective_rank(proj.part(z, name))
        out[f"{name}/explained_variance"] = subspace_explained_variance(
            z, torch.cat(list(bases[s]), dim=1)
        )
    for k in range(proj.num_subspaces):
        out[f"subspace{k}/explained_variance"] = subspace_explained_variance(z, bases[k])
    return out


@torch.no_grad()
def subspace_leakage(
    projection: SubspaceProjection,
    train: tuple[Tensor, Tensor, Tensor],
    test: tuple[Tensor, Tensor, Tensor],
    *,
    classifier_kwargs: Mapping[str, Any] | None = None,
    regressor_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """``{part}/class_accuracy`` and ``{part}/action_r2``: test scores of probes on each part.

    Args:
        train, test: ``(z, labels, actions)`` of the training and test splits.
        classifier_kwargs: Options of :func:`~jepa_blocks.metrics.linear_probe_accuracy`.
        regressor_kwargs: Options of :func:`~jepa_blocks.metrics.regression_r2`.

    Shape:
        - z: ``(N, d)``; labels: ``(N,)``; actions: ``(N,)`` or ``(N, A)``
    """
    proj = check_type(projection, "projection", SubspaceProjection, "a SubspaceProjection")
    (z_tr, y_tr, a_tr), (z_te, y_te, a_te) = train, test
    out = {}
    for name in proj.parts:
        p_tr, p_te = proj.part(z_tr, name), proj.part(z_te, name)
        acc = linear_probe_accuracy(p_tr, y_tr, p_te, y_te, **dict(classifier_kwargs or {}))
        r2 = regression_r2(p_tr, a_tr, p_te, a_te, **dict(regressor_kwargs or {}))
        out[f"{name}/class_accuracy"], out[f"{name}/action_r2"] = acc.test, r2.test
    return out
