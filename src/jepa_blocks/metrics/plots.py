"""Matplotlib figures for the evaluation suite: rotation circle, spectra, rank monitor.

Built on :class:`matplotlib.figure.Figure` (no ``pyplot`` state); matplotlib (extras ``examples``
/ ``docs``) is imported when a function is called.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from jepa_blocks._validation import check_finite, check_floating_tensor, check_int
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
    reference: Tensor | None = None,
    path: PathLike | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Figure:
    r"""How rotations act on a representation, in its top-2 principal plane (two panels).

    **Left**: each row as a point of that plane, coloured by its rotation angle (cyclic colour
    map, colour bar in degrees), scaled to unit root-mean-square radius, with the unit circle.
    **Right**: the point's polar angle :math:`\varphi` against the rotation angle :math:`\theta`,
    titled with the share of the variance the plane holds and the *angle agreement*
    :math:`\max_{s = \pm 1} \bigl|\tfrac1N \sum_n e^{\mathrm i(\varphi_n - s\theta_n)}\bigr|`
    (1 when :math:`\varphi` follows :math:`\theta` up to an offset and a reflection, about
    :math:`1/\sqrt N` when unrelated).

    *Pairs* (``reference`` given): the plane is the top-2 principal plane of
    ``features − reference``; with :math:`p_1, p_2` a pair's projections (centred on the mean of
    all rows), it is drawn at :math:`(|p_2| / |p_1|)\, e^{\mathrm i(\arg p_2 - \arg p_1)}`
    (radius clipped at 2). For an equivariant representation, pair :math:`n` lands on the unit
    circle at angle :math:`\pm\theta_n`: a colour wheel, and a diagonal line on the right.

    *Rows* (no ``reference``): the rows themselves, centred and projected; a colour wheel
    appears only when the angle is absolute for every row (e.g. rotated copies of one input).
    Differences :math:`z_2 - z_1` of pairs with a random first angle fill a disc even for an
    equivariant representation (only their length, :math:`2r\,|\sin(\Delta\theta / 2)|`,
    depends on the relative angle): pass ``features=z_2, reference=z_1`` instead.

    Args:
        features: Representations, one per row (pair mode: of the second views).
        angles: Rotation angle of each row in radians (pair mode: from first view to second).
        reference: Representations of the first views of the pairs, or ``None``.
        path: Save the figure there as PNG, at ``dpi`` dots per inch.
        title: Figure title (default: one that names the mode).
        dpi: Resolution of the saved PNG.

    Shape:
        - features: ``(N, D)`` with ``D ≥ 2``; angles: ``(N,)``; reference: as ``features``
    """
    from matplotlib.figure import Figure

    if check_matrix(features, "features", min_rows=2).shape[1] < 2:
        raise ValueError(f"features must have D >= 2 columns, got {tuple(features.shape)}")
    check_finite(check_floating_tensor(angles, "angles", min_ndim=1), "angles")
    if angles.shape != features.shape[:1]:
        raise ValueError(
            f"angles must have shape ({features.shape[0]},), got {tuple(angles.shape)}"
        )
    if reference is not None and check_matrix(reference, "reference").shape != features.shape:
        raise ValueError(
            f"reference must have the shape of features {tuple(features.shape)}, got "
            f"{tuple(reference.shape)}"
        )
    tiny = torch.finfo(torch.float64).tiny
    theta = torch.remainder(angles.detach().double().cpu() + torch.pi, 2 * torch.pi) - torch.pi
    z = features.detach().double().cpu()
    if reference is None:
        x = z - z.mean(dim=0, keepdim=True)
        pcs = x @ principal_subspace(x, 2)
        share = float(pcs.square().sum() / x.square().sum().clamp_min(tiny))
        pts = pcs / pcs.square().sum(dim=1).mean().sqrt().clamp_min(tiny)
        phi = torch.atan2(pts[:, 1], pts[:, 0])
        default_title = "Top-2 principal plane of the features, coloured by rotation angle"
        axis = "PC {} (unit RMS radius)"
        share_of = "of the variance"
    else:
        z1 = reference.detach().double().cpu()
        delta = z - z1
        delta = delta - delta.mean(dim=0, keepdim=True)
        basis = principal_subspace(delta, 2)
        share = float((delta @ basis).square().sum() / delta.square().sum().clamp_min(tiny))
        mean = torch.cat([z, z1]).mean(dim=0, keepdim=True)
        p1 = torch.view_as_complex(((z1 - mean) @ basis).contiguous())
        p2 = torch.view_as_complex(((z - mean) @ basis).contiguous())
        ratio = p2 * p1.conj() / (p1.abs().square() + tiny)  # p2 / p1
        phi = torch.angle(ratio)
        radius = ratio.abs().clamp(max=2.0)
        pts = torch.stack([radius * phi.cos(), radius * phi.sin()], dim=1)
        default_title = "Relative rotation of each pair in the top-2 plane of z₂ − z₁"
        axis = "relative rotation, axis {}"
        share_of = "of the variance of z₂ − z₁"
    agreement = max(
        float(torch.polar(torch.ones_like(phi), phi - s * theta).mean().abs()) for s in (1, -1)
    )
    deg = 180.0 / torch.pi
    fig = Figure(figsize=(9.5, 4.4), layout="constrained")
    ax, ax_angle = fig.subplots(1, 2)
    sc = ax.scatter(
        pts[:, 0].numpy(),
        pts[:, 1].numpy(),
        c=(theta * deg).numpy(),
        cmap="twilight_shifted",
        vmin=-180.0,
        vmax=180.0,
        s=8,
    )
    circle = torch.linspace(0, 2 * torch.pi, 361)
    ax.plot(circle.cos().numpy(), circle.sin().numpy(), color="0.3", linestyle="--", linewidth=1)
    ax.set_xlabel(axis.format(1))
    ax.set_ylabel(axis.format(2))
    if reference is not None:  # the unit circle is the reference; clipped points at radius 2
        ax.set_xlim(-2.1, 2.1)
        ax.set_ylim(-2.1, 2.1)
        ax.set_aspect("equal", adjustable="box")
    else:
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(
        f"the plane holds {100 * share:.0f} % {share_of}\n(dashed: unit circle)", fontsize=9
    )
    ax_angle.scatter(
        (theta * deg).numpy(),
        (phi * deg).numpy(),
        c=(theta * deg).numpy(),
        cmap="twilight_shifted",
        vmin=-180.0,
        vmax=180.0,
        s=6,
    )
    ax_angle.set_xlim(-180, 180)
    ax_angle.set_ylim(-180, 180)
    ax_angle.set_xticks([-180, -90, 0, 90, 180])
    ax_angle.set_yticks([-180, -90, 0, 90, 180])
    ax_angle.set_xlabel("rotation angle θ (degrees)")
    ax_angle.set_ylabel("polar angle φ in the plane (degrees)")
    ax_angle.set_title(
        f"angle agreement {agreement:.2f}\n(1: φ = ±θ + const; near 0: unrelated)", fontsize=9
    )
    fig.colorbar(sc, ax=[ax, ax_angle], label="rotation angle θ (degrees)", shrink=0.9)
    fig.suptitle(default_title if title is None else title, fontsize=11)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.1)
    return fig


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
    ax_cum.set(ylabel="cumulative variance fraction", ylim=(0, 1.02))
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
            raise ValueError(f"ranks[{label!r}] has {len(ys)} values but steps has {len(xs)}")
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    if max_rank is not None:
        ax.axhline(float(max_rank), color="grey", linestyle="--", linewidth=1, label="max")
    ax.set(xlabel="step", ylabel="effective rank", title=title)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return _finish(fig, path, dpi)
