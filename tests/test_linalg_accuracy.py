"""The float32 path of ``half_logdet_i_plus_gram`` meets its derived error bound (any CPU).

Every tolerance here is the bound of ``tests/logdet_bound.py`` (docs: "Coding rate", Accuracy)
evaluated for the input at hand, never a fixed number.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from jepa_blocks import coding_rate
from jepa_blocks.linalg import half_logdet_i_plus_gram
from logdet_bound import U32, derived_bound, gradient_bound, stage_bound


def _structured(kind: str, b: int, n: int, d: int, seed: int, log_norm: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "gauss":
        z = torch.randn(b, n, d, generator=g)
    elif kind == "rank1":  # duplicate rows: cond(A) = 1 + α·n·‖row‖², all other eigenvalues 1
        z = torch.randn(b, 1, d, generator=g).expand(b, n, d)
    elif kind == "lowrank":
        r = max(1, min(n, d) // 3)
        z = torch.randn(b, n, r, generator=g) @ torch.randn(b, r, d, generator=g)
    else:  # "halfzero": duplicate rows and zero rows
        z = torch.randn(b, 1, d, generator=g).expand(b, n, d).clone()
        z[:, n // 2 :] = 0
    return (z * 10.0**log_norm).float().contiguous()


def _check_fp32(z: torch.Tensor, alpha: float, form: str = "auto") -> None:
    got = half_logdet_i_plus_gram(z, alpha, form=form).double()
    assert torch.isfinite(got).all()
    b = derived_bound(z, alpha, form)
    err = (got - b.reference).abs()
    allowed = b.fp32 + b.reference_error
    assert bool((err <= allowed)[b.valid].all()), (err, allowed, b.cond)
    # Stage bound: given the rounded fp32 Gram, the rest of the computation is float64, so the
    # raw (no-fallback) result is ½ logdet(I + αĜ) up to the final rounding: tight, and it is
    # what an fp32 Cholesky of I + αĜ (error ~ k·u₃₂·κ) would violate.
    raw = half_logdet_i_plus_gram(z, alpha, form=form, fallback=False).double()
    r_g, tight = stage_bound(z, alpha, form)
    finite = torch.isfinite(tight)
    assert bool(((raw - r_g).abs() <= tight)[finite].all()), (raw, r_g, tight)


def test_amd_duplicate_rows_case_meets_bound():
    """test_never_nan_for_finite_input[32-64-1.0]: fp32 Cholesky gave 1.8e-4 relative on AMD."""
    g = torch.Generator().manual_seed(32 * 64)
    z = torch.randn(1, 64, generator=g).repeat(32, 1)
    alpha = 64 / (32 * 0.25)
    _check_fp32(z, alpha)
    got = coding_rate(z).double()
    r_g, tight = stage_bound(z, alpha)
    # The stage bound is essentially the final fp32 rounding: about 2·u₃₂·|R|.
    assert float(tight) < 3 * U32 * float(r_g.abs()) + 1e-12
    assert abs(float(got - r_g)) <= float(tight)
    b = derived_bound(z, alpha)
    assert float(b.cond) > 1e4
    assert bool(b.valid) and not bool(b.forced_fallback)
    assert float(b.cholesky_path) <= float(b.kappa_form)


@pytest.mark.parametrize("form", ["auto", "dxd", "nxn"])
@pytest.mark.parametrize("kind", ["gauss", "rank1", "lowrank", "halfzero"])
@pytest.mark.parametrize("log_norm", [-6.0, 0.0, 1.5, 4.0])
def test_structured_inputs_meet_bound(kind, log_norm, form):
    z = _structured(kind, 2, 24, 40, 7, log_norm)
    _check_fp32(z, 40 / (24 * 0.25), form)
    _check_fp32(z.mT.contiguous(), 24 / (40 * 0.25), form)


@given(
    b=st.integers(1, 3),
    n=st.integers(1, 40),
    d=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["gauss", "rank1", "lowrank", "halfzero"]),
    log_norm=st.floats(-4.0, 3.5),
    eps=st.floats(0.05, 2.0),
)
def test_bound_property(b, n, d, seed, kind, log_norm, eps):
    z = _structured(kind, b, n, d, seed, log_norm)
    _check_fp32(z, d / (n * eps**2))


@given(
    n=st.integers(1, 30),
    d=st.integers(1, 30),
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["gauss", "rank1", "lowrank"]),
    log_norm=st.floats(-3.0, 2.0),
)
def test_float64_precision_meets_its_bound(n, d, seed, kind, log_norm):
    z = _structured(kind, 1, n, d, seed, log_norm)
    alpha = d / (n * 0.25)
    got = half_logdet_i_plus_gram(z, alpha, precision="float64")
    assert got.dtype == torch.float64
    b = derived_bound(z, alpha)
    assert bool(((got - b.reference).abs() <= b.float64 + b.reference_error).all())


@given(
    n=st.integers(1, 30),
    d=st.integers(1, 30),
    seed=st.integers(0, 2**16),
    log_norm=st.floats(-2.0, 1.5),
)
def test_kappa_form_dominates_the_per_input_bound(n, d, seed, log_norm):
    z = _structured("lowrank", 1, n, d, seed, log_norm)
    b = derived_bound(z, d / (n * 0.25))
    if bool(b.valid) and not bool(b.forced_fallback):
        assert float(b.cholesky_path) <= float(b.kappa_form) * (1 + 1e-9)


# ----------------------------------------------------------------------------- backward


@pytest.mark.parametrize("form", ["nxn", "dxd"])
@pytest.mark.parametrize("n,d", [(4, 11), (11, 4), (3, 3), (7, 13)])
def test_gradcheck_float64(form, n, d):
    g = torch.Generator().manual_seed(n * 31 + d)
    z = torch.randn(2, n, d, generator=g, dtype=torch.float64).requires_grad_(True)
    scale = torch.tensor([0.3, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: half_logdet_i_plus_gram(x, scale, form=form), (z,))


@pytest.mark.parametrize("form", ["auto", "dxd", "nxn"])
@pytest.mark.parametrize("n,d", [(256, 32), (16, 128), (40, 40), (64, 8), (9, 30)])
@pytest.mark.parametrize("kind", ["gauss", "lowrank", "rank1"])
def test_fp32_gradient_meets_bound(form, n, d, kind):
    # 2k ≤ m: float64 A⁻¹ rounded to float32 and one float32 GEMM; else float32 cholesky_solve.
    z = torch.nn.functional.normalize(_structured(kind, 3, n, d, n + d, 0.0).double(), dim=-1)
    z = z.float().requires_grad_(True)
    alpha = d / (n * 0.25)
    (g32,) = torch.autograd.grad(half_logdet_i_plus_gram(z, alpha, form=form).sum(), z)
    assert g32.dtype == torch.float32
    g, bound = gradient_bound(z.detach(), alpha, form)
    err = (g32.double() - g).flatten(-2).norm(dim=-1)
    assert bool(torch.isfinite(bound).all())
    assert bool((err <= bound).all()), (err, bound)


def test_torch_compile_fullgraph_inverse_branch():
    compiled = torch.compile(half_logdet_i_plus_gram, fullgraph=True)
    g = torch.Generator().manual_seed(3)
    z = torch.nn.functional.normalize(torch.randn(4, 64, 8, generator=g), dim=-1)
    z.requires_grad_(True)
    r = compiled(z, 2.0)
    torch.testing.assert_close(r, half_logdet_i_plus_gram(z, 2.0))
    (gc,) = torch.autograd.grad(r.sum(), z)
    (ge,) = torch.autograd.grad(half_logdet_i_plus_gram(z, 2.0).sum(), z)
    torch.testing.assert_close(gc, ge)
