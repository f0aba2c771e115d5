"""Matplotlib figures for the evaluation suite: rotation circle, spectra, rank monitor.

Figures are built with :class:`matplotlib.figure.Figure` directly (no ``pyplot`` state, no backend
switch) and saved as PNG when a ``path`` is given. matplotlib (extras ``examples`` / ``docs``) is
imported when a function is called.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from jepa_blocks._validation import check_floating_tensor, check_int
from jepa_blocks.losses import check_finite
from jepa_blocks.metrics.rank import check_matrix, check_spectrum, principal_subspace

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_rank_monitor", "plot_rotation_circle", "plot_spectrum"]

PathLike = str | os.PathLike[str]


def _finish(fig: Figure, path: PathLike | None, dpi: int) -> Figure:
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi, format="png")
    return fig


def plot_rotation_circle(
    features: Tensor,
    angles: Tensor,
    *,
    path: PathLike | None = None,
    title: str = "Rotation in the top-2 principal plane",
    dpi: int = 120,
) -> Figure:
    """Scatter the features' top-2 principal components, coloured by rotation angle.

    An equivariant representation of planar rotations traces a circle whose polar angle follows
    the rotation angle (cyclic colour map).

    Args:
        features: Representations, e.g. encoder outputs of rotated views or ``Δz``.
        angles: Rotation angle of each row, radians.
        path: Save the figure there as PNG, at ``dpi`` dots per inch.
        title: Axes title.

    Shape:
        - features: ``(N, D)`` with ``D ≥ 2``; angles: ``(N,)``
    """
    from matplotlib.figure import Figure

    if check_matrix(features, "features", min_rows=2).shape[1] < 2:
        raise ValueError(f"features must have D >= 2 columns, got {tuple(features.shape)}")
    check_finite(check_floating_tensor(angles, "angles", min_ndim=1), "angles")
    if angles.shape != features.shape[:1]:
        raise ValueError(
            f"angles must have shape ({features.shape[0]},), got {tuple(angles.shape)}"
        )
    x = features.detach().double()
    x = x - x.mean(dim=0, keepdim=True)
    pcs = (x @ principal_subspace(x, 2).double()).cpu().numpy()
    theta = torch.remainder(angles.detach().double(), 2 * torch.pi).cpu().numpy()
    fig = Figure(figsize=(4.5, 4.0))
    ax = fig.add_subplot()
    sc = ax.scatter(pcs[:, 0], pcs[:, 1], c=theta, cmap="hsv", vmin=0.0, vmax=2 * torch.pi, s=8)
    fig.colorbar(sc, ax=ax, label="angle (rad)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title)
    return _finish(fig, path, dpi)


def plot_spectrum(
    spectra: Tensor | Mapping[str, Tensor],
    *,
    top_k: int | None = None,
    path: PathLike | None = None,
    title: str = "Covariance spectrum",
    dpi: int = 120,
) -> Figure:
    """Eigenvalue spectra (log scale) and their cumulative explained variance.

    For instance of :func:`~jepa_blocks.metrics.covariance_spectrum` or
    :func:`~jepa_blocks.metrics.delta_spectrum`.

    Args:
        spectra: One spectrum ``(D,)`` or ``{label: spectrum}``.
        top_k: Mark the top-``k`` boundary on both panels.
        path: Save the figure there as PNG, at ``dpi`` dots per inch.
        title: Figure title.
    """
    from matplotlib.figure import Figure

    if not isinstance(spectra, (Tensor, Mapping)):
        raise TypeError(f"spectra must be a tensor or a mapping, got {type(spectra).__name__}")
    items = {"spectrum": spectra} if isinstance(spectra, Tensor) else dict(spectra)
    if top_k is not None:
        check_int(top_k, "top_k")
    if not items:
        raise ValueError("spectra must hold at least one spectrum")
    fig = Figure(figsize=(8.0, 3.5))
    ax_log, ax_cum = fig.subplots(1, 2)
    for label, s in items.items():
        check_spectrum(s, f"spectra[{label!r}]")
        v = s.detach().double().sort(descending=True).values.clamp_min(0)
        idx = torch.arange(1, v.numel() + 1).numpy()
        total = float(v.sum())
        floor = float(v[v > 0].min()) if bool((v > 0).any()) else 1.0
        ax_log.semilogy(idx, v.clamp_min(floor * 1e-3).cpu().numpy(), label=label)
        cum = (v.cumsum(0) / total).cpu().numpy() if total > 0 else v.cpu().numpy() * 0
        ax_cum.plot(idx, cum, label=label)
    for ax in (ax_log, ax_cum):
        ax.set_xlabel("component")
        if top_k is not None:
            ax.axvline(top_k + 0.5, color="grey", linestyle="--", linewidth=1)
    ax_log.set_ylabel("eigenvalue")
    ax_cum.set_ylabel("cumulative variance fraction")
    ax_cum.set_ylim(0, 1.02)
    ax_cum.legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    return _finish(fig, path, dpi)


def plot_rank_monitor(
    steps: Sequence[float],
    ranks: Mapping[str, Sequence[float]],
    *,
    max_rank: float | None = None,
    path: PathLike | None = None,
    title: str = "Effective rank (RankMe)",
    dpi: int = 120,
) -> Figure:
    """Effective rank of several representations over training.

    Args:
        steps: Training steps or epochs of the measurements.
        ranks: ``{label: ranks}`` with one value per step (e.g. ``"z"``, ``"z_agg"``).
        max_rank: Draw the largest possible rank (the embedding dimension) as a reference line.
        path: Save the figure there as PNG, at ``dpi`` dots per inch.
        title: Axes title.
    """
    from matplotlib.figure import Figure

    xs = [float(s) for s in steps]
    if not isinstance(ranks, Mapping) or not ranks:
        raise ValueError(f"ranks must be a mapping {{label: ranks}} with a series, got {ranks!r}")
    fig = Figure(figsize=(5.0, 3.5))
    ax = fig.add_subplot()
    for label, series in ranks.items():
        ys = [float(r) for r in series]
        if len(ys) != len(xs):
            raise ValueError(
                f"ranks[{label!r}] has {len(ys)} values but steps has {len(xs)}; they must match"
            )
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    if max_rank is not None:
        ax.axhline(float(max_rank), color="grey", linestyle="--", linewidth=1, label="max")
    ax.set_xlabel("step")
    ax.set_ylabel("effective rank")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    ax.set_title(title)
    return _finish(fig, path, dpi)
