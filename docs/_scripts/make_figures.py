"""Draw the docs' figures from the committed benchmark results and from synthetic features.

Run from the repository root (needs matplotlib, e.g. the ``docs`` extra)::

    python docs/_scripts/make_figures.py                  # every figure
    python docs/_scripts/make_figures.py --only rotation  # only the rotation-circle figures

Reads ``benchmarks/results/logdet_cpu_amd.json`` and ``benchmarks/results/attention_cpu.json`` and
writes ``docs/_figures/logdet_speedup.png`` (landing page, benchmarks page) and
``docs/_figures/attention_scaling.png`` (benchmarks page). Draws
``docs/_figures/rotation_circle_pairs.png`` and ``docs/_figures/rotation_circle_delta.png`` (data
page) with :func:`jepa_blocks.metrics.plot_rotation_circle` on a synthetic representation on which
rotations act exactly. Commit the PNGs with the results.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["attention_figure", "logdet_figure", "main", "rotation_circle_figures"]

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
FIGURES = ROOT / "docs" / "_figures"


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def logdet_figure(data: dict[str, Any], out: Path) -> None:
    """Forward+backward time of the coding rate per shape: published forms, ours, the floor.

    Args:
        data: The content of ``logdet_cpu_amd.json``.
        out: PNG path.
    """
    rows = sorted(data["rows"], key=lambda r: r["naive_ms"])
    labels = [f"n={r['n']}, d={r['d']}" + (f", {r['h']} heads" if r["h"] > 1 else "") for r in rows]
    series = [
        ("torch.logdet (LU) of the d×d matrix, as published", "naive_ms", "#b0b0b0"),
        ("Cholesky of the d×d matrix (SimDINO)", "chol_dxd_ms", "#7fa7cf"),
        ("jepa_blocks.coding_rate (× = speed-up over the faster of the two)", "ours_ms", "#d9622b"),
        ("floor: the Gram matmul alone", "floor_ms", "#404040"),
    ]
    fig, ax = plt.subplots(figsize=(8.0, 4.6), dpi=110)
    height = 0.2
    for k, (name, key, color) in enumerate(series):
        ys = [i + (1.5 - k) * height for i in range(len(rows))]
        ax.barh(ys, [r[key] for r in rows], height=height, color=color, label=name)
    for i, r in enumerate(rows):
        ax.text(
            r["ours_ms"] * 1.15,
            i - 0.5 * height,
            f"{r['best_ab_over_ours']:.1f}×",
            va="center",
            fontsize=8,
            color="#d9622b",
        )
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("forward + backward, ms (log scale)")
    ax.set_title(
        f"Coding rate ½ logdet(I + αZᵀZ): {data['device']}, torch {data['torch']}", fontsize=9
    )
    ax.legend(fontsize=7.5, loc="lower right", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def attention_figure(data: dict[str, Any], out: Path) -> None:
    """Time per step against sequence length at a fixed token budget, per attention form.

    Args:
        data: The content of ``attention_cpu.json``.
        out: PNG path.
    """
    rows = sorted(data["rows"], key=lambda r: r["n"])
    names = {
        "sdpa": "softmax attention (PyTorch SDPA)",
        "mssa": "MSSA (CRATE)",
        "tssa": "TSSA (ToST)",
        "tssa_causal": "causal TSSA",
        "tssa_compile": "TSSA, torch.compile",
    }
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for key, name in names.items():
        if f"{key}_ms" in rows[0]:
            ax.plot([r["n"] for r in rows], [r[f"{key}_ms"] for r in rows], "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("tokens per sequence N (batch × N fixed)")
    ax.set_ylabel("forward + backward, ms")
    ax.set_title(
        f"Attention at {data['tokens_per_step']} tokens per step, D {data['dim']}: "
        f"{data['device']}, torch {data['torch']}",
        fontsize=8.5,
    )
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def rotation_circle_figures(out_dir: Path, *, n: int = 600, seed: int = 0) -> list[Path]:
    """The two modes of ``plot_rotation_circle`` on one synthetic equivariant representation.

    Each of ``n`` inputs has a random vector :math:`u \\in \\mathbb{R}^2` and 14 other
    coordinates; view :math:`k` of it is rotated by :math:`\\theta_k`, uniform in ±75° as in the
    ``cpu-demo`` preset, and its representation is :math:`[R(\\theta_k) u;\\ v + \\epsilon_k]`
    (:math:`v` scaled by 0.3, noise of standard deviation 0.05): rotation acts exactly as a
    rotation of the first plane. ``rotation_circle_pairs.png`` draws the pairs
    (``reference=z_1``), ``rotation_circle_delta.png`` the differences :math:`z_2 - z_1`.

    Args:
        out_dir: Where the PNGs go.
        n: Number of pairs.
        seed: Seed of the synthetic features.

    Returns:
        The paths written.
    """
    import math

    import torch

    from jepa_blocks.metrics import plot_rotation_circle

    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, 2, generator=g)
    other = 0.3 * torch.randn(n, 14, generator=g)
    limit = math.radians(75.0)

    def view() -> tuple[torch.Tensor, torch.Tensor]:
        theta = (2 * torch.rand(n, generator=g) - 1) * limit
        c, s = theta.cos(), theta.sin()
        plane = torch.stack([c * u[:, 0] - s * u[:, 1], s * u[:, 0] + c * u[:, 1]], dim=1)
        return torch.cat([plane, other + 0.05 * torch.randn(n, 14, generator=g)], dim=1), theta

    (z1, t1), (z2, t2) = view(), view()
    pairs, delta = out_dir / "rotation_circle_pairs.png", out_dir / "rotation_circle_delta.png"
    plot_rotation_circle(
        z2,
        t2 - t1,
        reference=z1,
        path=pairs,
        title="Pairs (reference=z₁): each pair's rotation in the top-2 plane of z₂ − z₁",
        dpi=100,
    )
    plot_rotation_circle(
        z2 - z1,
        t2 - t1,
        path=delta,
        title="Differences z₂ − z₁ of the same pairs, top-2 principal plane",
        dpi=100,
    )
    return [pairs, delta]


def main(argv: list[str] | None = None) -> None:
    """Write the figures (``--only`` a group of them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIGURES, help="output directory")
    parser.add_argument(
        "--only", choices=("all", "benchmarks", "rotation"), default="all", help="which figures"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if args.only in ("all", "benchmarks"):
        logdet_figure(_load("logdet_cpu_amd.json"), args.out / "logdet_speedup.png")
        attention_figure(_load("attention_cpu.json"), args.out / "attention_scaling.png")
        written += [args.out / "logdet_speedup.png", args.out / "attention_scaling.png"]
    if args.only in ("all", "rotation"):
        written += rotation_circle_figures(args.out)
    print("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
