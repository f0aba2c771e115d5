"""Rotation Δz spectrum of an encoder and the effective rank of a covariance spectrum."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange
from torch import nn

from jepa_blocks.data import load_digits
from jepa_blocks.metrics.rank import (
    covariance_spectrum,
    effective_rank,
    rotation_delta_spectrum,
    spectrum_effective_rank,
    topk_variance_fraction,
)


class _PlanarEncoder(nn.Module):
    """Δz of any pair lies in a fixed 2-D subspace of R^6."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Linear(64, 2)
        self.embed = torch.randn(2, 6, generator=g)

    def encode(self, views: torch.Tensor) -> torch.Tensor:
        b = views.shape[0]
        z = self.proj(rearrange(views, "b m c h w -> (b m) (c h w)")) @ self.embed
        return rearrange(z, "(b m) d -> b m d", b=b)


def test_rotation_delta_spectrum_of_a_planar_code():
    images = load_digits("test").subset(torch.arange(60))
    encoder = _PlanarEncoder().train()
    spectrum = rotation_delta_spectrum(encoder, images, angle_deg=60, batch_size=25)
    assert encoder.training  # restored
    assert spectrum.shape == (6,) and bool((spectrum[:-1] >= spectrum[1:]).all())
    assert topk_variance_fraction(spectrum, 2) == pytest.approx(1.0, abs=1e-5)
    assert 1.0 <= spectrum_effective_rank(spectrum) <= 2.0 + 1e-6
    discrete = rotation_delta_spectrum(encoder, images, discrete=True)
    assert discrete.shape == (6,)
    with pytest.raises(ValueError, match="angle_deg"):
        rotation_delta_spectrum(encoder, images, angle_deg=0.0)


def test_spectrum_effective_rank():
    flat = torch.ones(8)
    assert topk_variance_fraction(flat, 2) == pytest.approx(0.25)
    assert spectrum_effective_rank(flat) == pytest.approx(8)
    assert spectrum_effective_rank(torch.tensor([4.0, 4.0, 0.0, -1e-12])) == pytest.approx(2)
    assert spectrum_effective_rank(torch.zeros(3)) == 0.0
    # RankMe of the centred samples without its ε.
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert spectrum_effective_rank(covariance_spectrum(x)) == pytest.approx(
        effective_rank(x, center=True, eps=0.0), rel=1e-10
    )
    with pytest.raises(ValueError, match="spectrum must have shape"):
        spectrum_effective_rank(torch.ones(2, 2))
