"""Figures are drawn without pyplot state and saved as PNG."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from jepa_blocks.metrics import (
    covariance_spectrum,
    plot_rank_monitor,
    plot_rotation_circle,
    plot_spectrum,
)

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def test_rotation_circle_png(tmp_path: Path) -> None:
    angles = torch.linspace(0, 2 * math.pi, 200)
    feats = torch.stack((angles.cos(), angles.sin(), 0.01 * torch.randn(200)), 1)
    fig = plot_rotation_circle(feats, angles, path=tmp_path / "circle.png")
    assert (tmp_path / "circle.png").read_bytes()[:8] == PNG
    ax = fig.axes[0]
    # The plotted points are the top-2 principal components: a circle of radius ~1.
    xy = torch.tensor(ax.collections[0].get_offsets())
    assert abs(float(xy.norm(dim=1).mean()) - 1.0) < 0.05


def test_spectrum_and_rank_monitor_png(tmp_path: Path) -> None:
    z = torch.randn(100, 8) * torch.arange(1, 9)
    fig = plot_spectrum(
        {"z": covariance_spectrum(z), "dz": covariance_spectrum(z[:, :4])},
        top_k=2,
        path=tmp_path / "s.png",
    )
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) >= 2
    plot_spectrum(covariance_spectrum(z))  # a single tensor is accepted, no file
    fig = plot_rank_monitor(
        [0, 10, 20], {"z": [3.0, 5.0, 7.0], "z_agg": [2, 2, 3]}, max_rank=8, path=tmp_path / "r.png"
    )
    assert (tmp_path / "r.png").read_bytes()[:8] == PNG
    assert [line.get_label() for line in fig.axes[0].lines][:2] == ["z", "z_agg"]


def test_plots_do_not_touch_pyplot() -> None:
    plot_rank_monitor([0, 1], {"z": [1.0, 2.0]})
    assert (
        "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()
    )


def test_plot_bad_inputs() -> None:
    with pytest.raises(ValueError, match="angles"):
        plot_rotation_circle(torch.randn(10, 3), torch.randn(9))
    with pytest.raises(ValueError, match="steps"):
        plot_rank_monitor([0, 1, 2], {"z": [1.0]})
    with pytest.raises(ValueError, match="at least one"):
        plot_spectrum({})
