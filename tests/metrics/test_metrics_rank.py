"""Effective rank (RankMe), covariance spectra and subspace variance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from jepa_blocks.metrics import (
    covariance_spectrum,
    delta_spectrum,
    effective_rank,
    principal_subspace,
    subspace_explained_variance,
    topk_variance_fraction,
)


def test_effective_rank_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    s = np.linalg.svd(z.numpy(), compute_uv=False)
    p = s / s.sum() + 1e-7
    assert math.isclose(effective_rank(z), math.exp(-(p * np.log(p)).sum()), rel_tol=1e-12)


@pytest.mark.parametrize("d", [4, 16, 64])
def test_effective_rank_of_isotropic_gaussian_is_about_d(d: int) -> None:
    z = torch.randn(20_000, d, generator=torch.Generator().manual_seed(d))
    r = effective_rank(z)
    assert d * 0.97 < r <= d + 1e-3


@given(st.integers(1, 12), st.integers(0, 1000))
def test_effective_rank_of_rank_k_data_is_about_k(k: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(32, k, generator=gen, dtype=torch.float64))
    z = torch.randn(4000, k, generator=gen, dtype=torch.float64) @ basis.T
    r = effective_rank(z)
    assert k * 0.9 < r <= k + 1e-3


def test_effective_rank_collapse_and_zero() -> None:
    assert effective_rank(torch.ones(100, 8)) == pytest.approx(1.0, abs=1e-4)
    assert effective_rank(torch.zeros(10, 8)) == 1.0


def test_covariance_spectrum_matches_numpy() -> None:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(300, 5, generator=gen, dtype=torch.float64) * torch.tensor(
        [3.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64
    )
    ours = covariance_spectrum(z).numpy()
    ref = np.sort(np.linalg.eigvalsh(np.cov(z.numpy(), rowvar=False)))[::-1]
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
    assert bool((np.diff(ours) <= 0).all())


def test_delta_spectrum_and_topk_fraction() -> None:
    gen = torch.Generator().manual_seed(2)
    n, d = 2000, 16
    z1 = torch.randn(n, d, generator=gen)
    # The action moves z only within a 2-d plane (plus tiny noise).
    plane, _ = torch.linalg.qr(torch.randn(d, 2, generator=gen))
    z2 = z1 + torch.randn(n, 2, generator=gen) @ plane.T + 1e-3 * torch.randn(n, d, generator=gen)
    spec = delta_spectrum(z1, z2)
    assert topk_variance_fraction(spec, 2) > 0.999
    assert topk_variance_fraction(spec, 1) < 0.7
    assert topk_variance_fraction(spec, d) == pytest.approx(1.0)
    assert topk_variance_fraction(torch.tensor([1.0, 3.0, 0.0, 0.0]), 1) == pytest.approx(0.75)


def test_subspace_explained_variance() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(500, 6, generator=gen, dtype=torch.float64) * torch.tensor(
        [5.0, 3, 1, 1, 0.5, 0.1], dtype=torch.float64
    )
    for k in (1, 2, 4):
        basis = principal_subspace(x, k)
        assert basis.shape == (6, k)
        torch.testing.assert_close(basis.T @ basis, torch.eye(k, dtype=torch.float64))
        assert subspace_explained_variance(x, basis) == pytest.approx(
            topk_variance_fraction(covariance_spectrum(x), k), rel=1e-10
        )
    # Any basis of the same span (not orthonormal) gives the same fraction.
    b = principal_subspace(x, 2)
    mixed = b @ torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    assert subspace_explained_variance(x, mixed) == pytest.approx(subspace_explained_variance(x, b))
    # Coordinate axes: the variance of the first coordinate over the total.
    e0 = torch.eye(6, dtype=torch.float64)[:, :1]
    xc = x - x.mean(0)
    assert subspace_explained_variance(x, e0) == pytest.approx(
        float(xc[:, 0].square().sum() / xc.square().sum())
    )


def test_rank_bad_inputs() -> None:
    with pytest.raises(ValueError, match="z must have"):
        effective_rank(torch.zeros(5))
    with pytest.raises(ValueError, match="same shape"):
        delta_spectrum(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="k must be"):
        topk_variance_fraction(torch.ones(3), 0)
    with pytest.raises(ValueError, match="basis"):
        subspace_explained_variance(torch.randn(5, 3), torch.randn(4, 1))
    with pytest.raises(ValueError, match="non-negative"):
        topk_variance_fraction(torch.tensor([1.0, -1.0]), 1)
