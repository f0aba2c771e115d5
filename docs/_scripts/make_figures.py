"""Draw the docs' figures from the committed benchmark results.

Run from the repository root (needs matplotlib, e.g. the ``docs`` extra)::

    python docs/_scripts/make_figures.py

Reads ``benchmarks/results/logdet_cpu_amd.json`` and ``benchmarks/results/attention_cpu.json`` and
writes ``docs/_figures/logdet_speedup.png`` (landing page, benchmarks page) and
``docs/_figures/attention_scaling.png`` (benchmarks page). Commit the PNGs with the results.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["attention_figure", "logdet_figure", "main"]

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


def main(argv: list[str] | None = None) -> None:
    """Write both figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIGURES, help="output directory")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logdet_figure(_load("logdet_cpu_amd.json"), args.out / "logdet_speedup.png")
    attention_figure(_load("attention_cpu.json"), args.out / "attention_scaling.png")
    print(f"wrote {args.out}/logdet_speedup.png and attention_scaling.png")


if __name__ == "__main__":
    main()
