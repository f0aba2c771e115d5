"""VICReg variance / covariance penalties against float64 re-implementations of lightly's code."""

from __future__ import annotations

import pytest
import torch

from jepa_blocks.vicreg import VICRegRegularizer, vicreg_covariance, vicreg_variance

F64 = torch.float64


def _z(
    n: int, d: int, seed: int = 0, batch: tuple[int, ...] = (), scale: float = 0.7
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, n, d, generator=g, dtype=F64)
    return scale * x @ torch.randn(d, d, generator=g, dtype=F64) / d**0.5 + 3.0


def lightly_variance(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """lightly ``variance_loss`` (lightly/loss/vicreg_loss.py): unbiased ``var`` over dim 0."""
    std = torch.sqrt(x.var(dim=0) + eps)
    return torch.relu(1.0 - std).mean()


def lightly_covariance(x: torch.Tensor) -> torch.Tensor:
    """lightly ``covariance_loss``: centred, ``/(n − 1)``, off-diagonal squares summed, ``/d``."""
    x = x - x.mean(dim=0)
    n, d = x.shape
    cov = x.T @ x / (n - 1)
    return cov[~torch.eye(d, dtype=torch.bool)].pow(2).sum() / d


def test_equal_to_lightly() -> None:
    z = _z(40, 9)
    torch.testing.assert_close(vicreg_variance(z), lightly_variance(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vicreg_covariance(z), lightly_covariance(z), rtol=1e-12, atol=1e-12)


def test_module_reproduces_lightly_vicreg_loss_without_the_invariance_term() -> None:
    # VICRegLoss: mu·½(v_a + v_b) + nu·(c_a + c_b), mu = 25, nu = 1.
    za, zb = _z(32, 6, seed=1), _z(32, 6, seed=2)
    lightly = 25 * 0.5 * (lightly_variance(za) + lightly_variance(zb)) + (
        lightly_covariance(za) + lightly_covariance(zb)
    )
    reg = VICRegRegularizer(variance_weight=12.5)
    torch.testing.assert_close(reg(za) + reg(zb), lightly, rtol=1e-12, atol=1e-12)
    paper = VICRegRegularizer()  # the paper's μ[v(Z) + v(Z')] + ν[c(Z) + c(Z')]
    expected = 25 * (vicreg_variance(za) + vicreg_variance(zb)) + vicreg_covariance(za)
    torch.testing.assert_close(paper(za) + paper(zb), expected + vicreg_covariance(zb))


def test_biased_option_and_gamma() -> None:
    z = _z(20, 5, seed=3)
    var = z.var(dim=0, unbiased=False)
    ref = torch.relu(2.0 - torch.sqrt(var + 1e-3)).mean()
    torch.testing.assert_close(vicreg_variance(z, gamma=2.0, eps=1e-3, unbiased=False), ref)
    zc = z - z.mean(0)
    cov = zc.T @ zc / 20
    ref_c = (cov.square().sum() - cov.diagonal().square().sum()) / 5
    torch.testing.assert_close(vicreg_covariance(z, unbiased=False), ref_c)


def test_batch_dims_penalties_and_collapse() -> None:
    z = _z(16, 4, batch=(3, 2))
    v, c = vicreg_variance(z), vicreg_covariance(z)
    assert v.shape == c.shape == (3, 2)
    torch.testing.assert_close(v[1, 0], lightly_variance(z[1, 0]))
    torch.testing.assert_close(c[2, 1], lightly_covariance(z[2, 1]))
    assert bool((v >= 0).all() and (c >= 0).all())
    collapsed = torch.ones(16, 4, dtype=F64)
    assert float(vicreg_variance(collapsed)) == pytest.approx(1 - 1e-2)
    assert float(vicreg_covariance(collapsed)) == 0.0


def test_gradcheck() -> None:
    z = _z(7, 4, seed=4).requires_grad_(True)
    assert torch.autograd.gradcheck(vicreg_variance, (z,))
    assert torch.autograd.gradcheck(vicreg_covariance, (z,))
    assert torch.autograd.gradcheck(VICRegRegularizer(), (z,))


def test_fp32_island_under_autocast() -> None:
    z = _z(64, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v, c = vicreg_variance(z), vicreg_covariance(z)
    assert v.dtype == c.dtype == torch.float32
    assert torch.equal(c, vicreg_covariance(z.float()))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n >= 2"):
        vicreg_variance(torch.randn(1, 4))
    with pytest.raises(ValueError, match="distributed"):
        vicreg_covariance(torch.randn(4, 4), distributed="gather")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gamma"):
        vicreg_variance(torch.randn(4, 4), gamma=-1.0)
    with pytest.raises(ValueError, match="variance_weight"):
        VICRegRegularizer(variance_weight=-1.0)
    with pytest.raises(TypeError, match="unbiased"):
        VICRegRegularizer(unbiased=1)  # type: ignore[arg-type]
