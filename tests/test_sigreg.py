"""SIGReg (LeJEPA) against float64 references: the paper's Algorithm 1 and lightly's SIGReg."""

from __future__ import annotations

import math

import pytest
import torch

from jepa_blocks.metrics import measure_peak_memory
from jepa_blocks.sigreg import SIGReg, sigreg, sigreg_slices

F64 = torch.float64


def _z(n: int, d: int, seed: int = 0, batch: tuple[int, ...] = ()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*batch, n, d, generator=g, dtype=F64)


def ref_paper(
    z: torch.Tensor, a: torch.Tensor, knots: int = 17, t_max: float = 5.0
) -> torch.Tensor:
    """LeJEPA Algorithm 1: complex ECF on ``linspace(-t_max, t_max, knots)``, trapz, ×N, mean."""
    t = torch.linspace(-t_max, t_max, knots, dtype=F64)
    gauss = torch.exp(-0.5 * t**2)
    x_t = (z @ a).unsqueeze(-1) * t  # (..., N, M, T)
    ecf = torch.exp(1j * x_t).mean(-3)  # (..., M, T)
    err = (ecf - gauss).abs().square() * gauss
    return (torch.trapezoid(err, t, dim=-1) * z.shape[-2]).mean(-1)


def ref_lightly(
    z: torch.Tensor, a: torch.Tensor, knots: int = 17, t_max: float = 3.0
) -> torch.Tensor:
    """lightly ``SIGReg.forward`` (lightly/loss/lejepa_loss.py), re-written in float64.

    Grid ``linspace(0, t_max, knots)``; weights ``2·dt`` (``dt`` at both ends) times the window
    ``exp(-t²/2)``; per-frequency error ``(mean cos − φ)² + (mean sin)²``; ``(err @ weights)·N``
    averaged over *everything* (slices and leading dimensions).
    """
    t = torch.linspace(0, t_max, knots, dtype=F64)
    dt = t_max / (knots - 1)
    weights = torch.full((knots,), 2 * dt, dtype=F64)
    weights[[0, -1]] = dt
    phi = torch.exp(-t.square() / 2.0)
    x_t = (z @ a).unsqueeze(-1) * t
    n = z.shape[-2]
    err = (x_t.cos().sum(-3) / n - phi).square() + (x_t.sin().sum(-3) / n).square()
    return ((err @ (weights * phi)) * n).mean()


@pytest.mark.parametrize(("knots", "t_max"), [(17, 5.0), (8, 5.0), (33, 2.5)])
def test_equals_the_paper_formula(knots: int, t_max: float) -> None:
    z = _z(50, 7, batch=(3,))
    a = sigreg_slices(7, step=4, num_slices=11).double()
    out = sigreg(z, slices=a, knots=knots, t_max=t_max)
    assert out.shape == (3,) and out.dtype == F64
    torch.testing.assert_close(out, ref_paper(z, a, knots, t_max), rtol=1e-12, atol=1e-12)


def test_step_draws_the_slices_and_defaults_are_the_papers() -> None:
    z = _z(64, 9)
    a = sigreg_slices(9, step=12).double()  # 256 slices, as in Algorithm 1
    assert a.shape == (9, 256)
    torch.testing.assert_close(sigreg(z, step=12), ref_paper(z, a), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_equals_lightly_on_the_same_slices(batch: tuple[int, ...]) -> None:
    z = _z(40, 6, seed=1, batch=batch)
    a = sigreg_slices(6, step=0, num_slices=1024).double()  # lightly's num_vectors default
    ours = sigreg(z, slices=a, grid="half", t_max=3.0, knots=17)
    torch.testing.assert_close(ours.mean(), ref_lightly(z, a), rtol=1e-12, atol=1e-12)


def test_gaussian_input_is_near_its_expected_value_and_collapse_is_large() -> None:
    # For N(0, 1) slices E|ecf − φ|² = (1 − φ(t)²)/N, so E[T] = Σ_knots w(t)(1 − e^{−t²}), about
    # 1.06 whatever N: T/N ~ 1/N. A collapsed batch keeps |ecf − φ| = O(1), so T = O(N).
    t = torch.linspace(-5, 5, 17, dtype=F64)
    expected = float(torch.trapezoid((1 - torch.exp(-(t**2))) * torch.exp(-(t**2) / 2), t))
    assert expected == pytest.approx(math.sqrt(2 * math.pi) * (1 - 3**-0.5), rel=0.01)
    n, d = 1024, 64
    gauss = [float(sigreg(_z(n, d, seed=s), step=s)) for s in range(16)]
    assert sum(gauss) / len(gauss) == pytest.approx(expected, abs=0.2)
    assert max(gauss) / n < 3e-3
    same_rows = _z(1, d).expand(n, d)
    g = torch.Generator().manual_seed(3)
    rank_one = torch.randn(n, 1, generator=g, dtype=F64) * torch.nn.functional.normalize(
        torch.randn(1, d, generator=g, dtype=F64), dim=-1
    )
    for collapsed in (same_rows, rank_one, torch.zeros(n, d, dtype=F64)):
        assert float(sigreg(collapsed, step=0)) > 0.05 * n


@pytest.mark.parametrize(
    ("grid", "knots", "batch"), [("symmetric", 17, ()), ("half", 17, (2,)), ("symmetric", 8, ())]
)
def test_gradcheck(grid: str, knots: int, batch: tuple[int, ...]) -> None:
    # the custom backward recomputes cos/sin by angle addition; knots=8 has t_0 = Δ/2
    z = _z(6, 4, seed=2, batch=batch).requires_grad_(True)
    a = sigreg_slices(4, step=1, num_slices=5).double()
    fn = lambda x: sigreg(x, slices=a, grid=grid, knots=knots, t_max=3.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (z,))


def test_saved_memory_is_linear_in_n_times_slices() -> None:
    z = torch.randn(512, 16, requires_grad=True)
    mem = measure_peak_memory(lambda: sigreg(z, step=0), exclude=[z])
    assert mem.saved_bytes <= 512 * 256 * 4 * 1.1  # the projections only, not (N, M, knots)


def test_slices_are_deterministic_per_step() -> None:
    a, b, c = (sigreg_slices(16, step=s, num_slices=32) for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    torch.testing.assert_close(a.norm(dim=0), torch.ones(32))
    z = _z(32, 16).float()
    assert torch.equal(sigreg(z, step=7), sigreg(z, step=7))


def test_module_counter_drives_the_slices_and_is_checkpointed() -> None:
    z = _z(32, 8).float()
    m = SIGReg(num_slices=64)
    assert torch.equal(m(z), sigreg(z, step=0, num_slices=64))
    m.update()
    m.update()
    assert int(m.step) == 2
    assert torch.equal(m(z), sigreg(z, step=2, num_slices=64))
    assert torch.equal(m(z, step=5), sigreg(z, step=5, num_slices=64))
    fresh = SIGReg(num_slices=64)
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh(z), m(z))


def test_fp32_island_under_autocast() -> None:
    z = _z(64, 16).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sigreg(z, step=0)
    assert out.dtype == torch.float32
    assert torch.equal(out, sigreg(z.float(), step=0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "step"),
        ({"slices": torch.randn(3, 4)}, "slices"),
        ({"step": 0, "knots": 1}, "knots"),
        ({"step": 0, "t_max": 0.0}, "t_max"),
        ({"step": 0, "grid": "full"}, "grid"),
        ({"step": 0, "distributed": "gram"}, "distributed"),
        ({"step": -1}, "step"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sigreg(torch.randn(8, 5), **kwargs)


def test_module_validates() -> None:
    with pytest.raises(ValueError, match="num_slices"):
        SIGReg(num_slices=0)
    with pytest.raises(ValueError, match="grid"):
        SIGReg(grid="full")  # type: ignore[arg-type]
