"""Coding rate, rate reduction, TCR and SimDINO expansion against float64 references."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from jepa_blocks import (
    CodingRate,
    RateReduction,
    SimDINOExpansion,
    TotalCodingRate,
    coding_rate,
    eps_from_code,
    rate_reduction,
    simdino_expansion,
    total_coding_rate,
)
from jepa_blocks.linalg import half_logdet_i_plus_gram
from logdet_bound import derived_bound
from reference import ref_coding_rate, ref_half_logdet, ref_rate_reduction

shapes = st.tuples(
    st.integers(1, 3),  # batch
    st.integers(1, 48),  # n
    st.integers(1, 48),  # d
)


def _rand(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(
        torch.randn(shape, generator=g, dtype=torch.float64), dim=-1
    ).to(dtype)


# ----------------------------------------------------------------------------- value vs reference


@given(shape=shapes, seed=st.integers(0, 2**16), eps=st.floats(0.05, 2.0))
def test_fp32_matches_float64_reference(shape, seed, eps):
    z = _rand(shape, seed)
    got = coding_rate(z, eps=eps)
    ref = ref_coding_rate(z, eps)
    assert got.dtype == torch.float32
    assert got.shape == shape[:1]
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,d", [(16, 128), (200, 24), (64, 64), (1, 7), (9, 1)])
def test_both_regimes_and_edges(n, d):
    z = _rand((2, n, d), n * 1000 + d)
    torch.testing.assert_close(
        coding_rate(z).double(), ref_coding_rate(z, 0.5), rtol=1e-5, atol=1e-6
    )


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_nxn_and_dxd_forms_agree(shape, seed):
    z = _rand(shape, seed, torch.float64)
    a = coding_rate(z, form="nxn")
    b = coding_rate(z, form="dxd")
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_invariant_to_feature_rotation_and_sample_permutation(shape, seed):
    z = _rand(shape, seed, torch.float64)
    g = torch.Generator().manual_seed(seed + 1)
    q, _ = torch.linalg.qr(torch.randn(shape[2], shape[2], generator=g, dtype=torch.float64))
    perm = torch.randperm(shape[1], generator=g)
    base = coding_rate(z)
    torch.testing.assert_close(coding_rate(z @ q), base, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(coding_rate(z[..., perm, :]), base, rtol=1e-9, atol=1e-9)


def test_zero_features_have_zero_rate():
    for shape in [(1, 4), (10, 3), (3, 50), (2, 5, 5)]:
        z = torch.zeros(shape, requires_grad=True)
        r = coding_rate(z)
        assert torch.all(r == 0)
        (g,) = torch.autograd.grad(r.sum(), z)
        assert torch.all(g == 0)


@given(seed=st.integers(0, 2**16), e1=st.floats(0.05, 3.0), e2=st.floats(0.05, 3.0))
def test_monotone_decreasing_in_eps(seed, e1, e2):
    z = _rand((12, 20), seed, torch.float64)
    lo, hi = sorted((e1, e2))
    if hi - lo < 1e-6:
        return
    assert coding_rate(z, eps=lo) > coding_rate(z, eps=hi)


def test_scale_overrides_eps():
    z = _rand((30, 10), 3, torch.float64)
    torch.testing.assert_close(coding_rate(z, scale=2.5, eps=123.0), ref_half_logdet(z, 2.5))
    assert coding_rate(z, scale=0.0) == 0


def test_center_matches_reference():
    z = _rand((40, 12), 4, torch.float64) + 3.0
    torch.testing.assert_close(coding_rate(z, center=True), ref_coding_rate(z, 0.5, center=True))
    z.requires_grad_(True)
    (g,) = torch.autograd.grad(coding_rate(z, center=True), z)
    (gr,) = torch.autograd.grad(ref_coding_rate(z, 0.5, center=True), z)
    torch.testing.assert_close(g, gr)


def test_batch_dims_broadcast():
    z = _rand((2, 3, 10, 6), 5, torch.float64)
    r = coding_rate(z)
    assert r.shape == (2, 3)
    torch.testing.assert_close(r[1, 2], coding_rate(z[1, 2]))


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("form", ["nxn", "dxd"])
@pytest.mark.parametrize("n,d", [(5, 9), (9, 5), (6, 6)])
def test_gradcheck_custom_backward(form, n, d):
    z = _rand((2, n, d), n + 10 * d, torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: half_logdet_i_plus_gram(x, 0.7, form=form), (z,))
    assert torch.autograd.gradcheck(lambda x: coding_rate(x, eps=0.3, form=form), (z,))


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_gradient_equals_autograd_through_reference(shape, seed):
    z = _rand(shape, seed, torch.float64).requires_grad_(True)
    w = torch.randn(shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    (g,) = torch.autograd.grad((coding_rate(z) * w).sum(), z)
    (gr,) = torch.autograd.grad((ref_coding_rate(z, 0.5) * w).sum(), z)
    torch.testing.assert_close(g, gr, rtol=1e-9, atol=1e-10)


def test_fp32_gradient_close_to_float64():
    z64 = _rand((64, 300), 7, torch.float64)
    z = z64.float().requires_grad_(True)
    (g,) = torch.autograd.grad(coding_rate(z), z)
    z64.requires_grad_(True)
    (gr,) = torch.autograd.grad(ref_coding_rate(z64, 0.5), z64)
    torch.testing.assert_close(g.double(), gr, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_give_fp32_answer_and_grad(dtype):
    z = _rand((128, 96), 11, dtype).requires_grad_(True)
    zf = z.detach().float().requires_grad_(True)
    r = coding_rate(z)
    rf = coding_rate(zf)
    assert r.dtype == torch.float32
    torch.testing.assert_close(r, rf, rtol=1e-3, atol=0)
    (g,) = torch.autograd.grad(r, z)
    (gf,) = torch.autograd.grad(rf, zf)
    assert g.dtype == dtype
    # The gradient is the fp32 gradient rounded once to the input dtype.
    torch.testing.assert_close(g, gf.to(dtype), rtol=0, atol=0)


def test_cpu_bf16_autocast_gives_fp32_answer():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 64, generator=g)
    lin = torch.nn.Linear(64, 128)
    ref_z = lin(x)
    ref = coding_rate(ref_z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = lin(x)
        assert z.dtype == torch.bfloat16
        r = coding_rate(z)
    assert r.dtype == torch.float32
    # Same bf16 features, upcast by hand, give exactly the in-autocast value.
    torch.testing.assert_close(r, coding_rate(z.float()), rtol=1e-6, atol=0)
    # And the value is within bf16 feature-rounding of the fp32 one.
    torch.testing.assert_close(r, ref, rtol=1e-2, atol=0)
    # Gradient w.r.t. the layer parameters is finite and close to the fp32 one.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (gw,) = torch.autograd.grad(coding_rate(lin(x)), lin.weight)
    (gw32,) = torch.autograd.grad(coding_rate(lin(x)), lin.weight)
    assert torch.isfinite(gw).all()
    assert torch.nn.functional.cosine_similarity(gw.flatten(), gw32.flatten(), dim=0) > 0.99


def test_precision_float64_option():
    z = _rand((20, 30), 1)
    r = coding_rate(z, precision="float64")
    assert r.dtype == torch.float64
    torch.testing.assert_close(r, ref_coding_rate(z, 0.5), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("norm", [1e4, 1e-6, 1.0])
@pytest.mark.parametrize("n,d", [(32, 64), (64, 32), (1, 16), (16, 1)])
def test_never_nan_for_finite_input(norm, n, d):
    g = torch.Generator().manual_seed(n * d)
    row = torch.randn(1, d, generator=g)
    for z in (
        row.repeat(n, 1) * norm,  # duplicate rows
        torch.randn(n, d, generator=g) * norm,
        torch.cat([row.repeat(n - n // 2, 1), torch.zeros(n // 2, d)]) * norm,
    ):
        z = z.requires_grad_(True)
        r = coding_rate(z)
        (gr,) = torch.autograd.grad(r, z)
        assert torch.isfinite(r) and r >= 0
        assert torch.isfinite(gr).all()
        # The derived bound for this input (docs: "Coding rate", Accuracy; tests/logdet_bound.py),
        # not a fixed tolerance: e.g. duplicate rows of norm 1 have cond(A) ≈ 1.7e4.
        bound = derived_bound(z.detach(), d / (n * 0.25))
        assert bool(bound.valid)
        assert abs(float(r.detach().double() - bound.reference)) <= float(
            bound.fp32 + bound.reference_error
        )


def test_fallback_gradient_accurate():
    z = (torch.randn(1, 64).repeat(32, 1) * 1e4).requires_grad_(True)
    (g,) = torch.autograd.grad(coding_rate(z), z)
    z64 = z.detach().double().requires_grad_(True)
    (g64,) = torch.autograd.grad(coding_rate(z64), z64)
    # A = I + αG has condition number ~1e9 here: compare relative to the gradient's scale.
    torch.testing.assert_close(g.double(), g64, rtol=1e-4, atol=1e-3 * float(g64.abs().max()))


def test_fallback_off_exposes_raw_cholesky():
    z = torch.randn(1, 64).repeat(32, 1) * 1e4
    raw = half_logdet_i_plus_gram(z, 64 / (32 * 0.25), fallback=False)
    safe = half_logdet_i_plus_gram(z, 64 / (32 * 0.25))
    assert torch.isfinite(safe)
    assert not torch.isfinite(raw) or torch.isclose(raw, safe, rtol=1e-4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_input_raises(bad):
    z = _rand((10, 5), 0)
    z[3, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        coding_rate(z)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: coding_rate([[1.0, 2.0]]), TypeError, "z must be a torch.Tensor"),
        (lambda: coding_rate(torch.ones(3, 4, dtype=torch.long)), TypeError, "floating dtype"),
        (lambda: coding_rate(torch.ones(5)), ValueError, r"at least 2 dimensions.*\(5,\)"),
        (lambda: coding_rate(torch.ones(0, 4)), ValueError, r"non-empty.*\(0, 4\)"),
        (lambda: coding_rate(torch.ones(3, 0)), ValueError, r"non-empty.*\(3, 0\)"),
        (lambda: coding_rate(torch.ones(3, 4), eps=0.0), ValueError, "eps must be a finite"),
        (lambda: coding_rate(torch.ones(3, 4), eps=-1), ValueError, "eps must be a finite"),
        (lambda: coding_rate(torch.ones(3, 4), eps=float("nan")), ValueError, "eps"),
        (lambda: coding_rate(torch.ones(3, 4), scale=-2.0), ValueError, "scale"),
        (lambda: coding_rate(torch.ones(3, 4), precision="fp16"), ValueError, "precision"),
        (lambda: coding_rate(torch.ones(3, 4), form="qr"), ValueError, "form"),
        (lambda: coding_rate(torch.ones(3, 4), distributed="ring"), ValueError, "distributed"),
        (
            lambda: rate_reduction(torch.ones(6, 4), torch.zeros(5, dtype=torch.long)),
            ValueError,
            r"membership.*n=6.*\(5,\)",
        ),
        (
            lambda: rate_reduction(torch.ones(6, 4), torch.ones(5, 2)),
            ValueError,
            r"membership.*n=6.*\(5, 2\)",
        ),
        (lambda: rate_reduction(torch.ones(6, 4), [0] * 6), TypeError, "membership"),
        (lambda: CodingRate(eps=0), ValueError, "eps"),
        (lambda: RateReduction(num_classes=0), ValueError, "num_classes"),
        (lambda: total_coding_rate([]), ValueError, "at least one view"),
        (lambda: total_coding_rate(torch.ones(4, 3)), ValueError, r"\(\.\.\., V, n, d\)"),
        (lambda: eps_from_code(-0.2), ValueError, "eps_code"),
    ],
)
def test_bad_input_table(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------------------- rate reduction


@given(seed=st.integers(0, 2**16), n=st.integers(2, 40), d=st.integers(1, 30), k=st.integers(1, 5))
def test_rate_reduction_hard_labels_matches_loop_reference(seed, n, d, k):
    z = _rand((n, d), seed, torch.float64)
    labels = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    pi = torch.nn.functional.one_hot(labels, k).double()
    got = rate_reduction(z, labels, eps=0.4, num_classes=k, gamma=1.3)
    torch.testing.assert_close(got, ref_rate_reduction(z, pi, 0.4, 1.3), rtol=1e-9, atol=1e-9)


def test_rate_reduction_soft_membership_and_parts():
    z = _rand((50, 20), 2, torch.float64)
    logits = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    pi = logits.softmax(-1).requires_grad_(True)
    parts = rate_reduction(z, pi, return_parts=True)
    torch.testing.assert_close(parts.delta, ref_rate_reduction(z, pi.detach(), 0.5))
    torch.testing.assert_close(parts.expansion, ref_coding_rate(z, 0.5))
    torch.testing.assert_close(parts.delta, parts.expansion - parts.compression)
    assert parts.per_class.shape == (4,)
    (g,) = torch.autograd.grad(parts.delta, pi)
    assert torch.isfinite(g).all()


def test_rate_reduction_single_class_is_zero_and_empty_classes_ignored():
    z = _rand((30, 8), 3, torch.float64)
    assert abs(float(rate_reduction(z, torch.zeros(30, dtype=torch.long)))) < 1e-12
    labels = torch.randint(0, 2, (30,), generator=torch.Generator().manual_seed(0))
    a = rate_reduction(z, labels, num_classes=2)
    b = rate_reduction(z, labels, num_classes=5)  # classes 2..4 empty
    torch.testing.assert_close(a, b)
    pi = torch.nn.functional.one_hot(labels, 3).double().requires_grad_(True)  # class 2 empty
    (g,) = torch.autograd.grad(rate_reduction(z, pi), pi)
    assert torch.isfinite(g).all()


def test_rate_reduction_nonnegative_for_hard_labels():
    # ΔR ≥ 0 for a partition (concavity of log det; Yu et al. 2020, Lemma A.4).
    for seed in range(5):
        z = _rand((60, 16), seed, torch.float64)
        labels = torch.randint(0, 4, (60,), generator=torch.Generator().manual_seed(seed))
        assert rate_reduction(z, labels, num_classes=4) >= -1e-10


def test_rate_reduction_batched_matches_unbatched():
    z = _rand((3, 25, 10), 9, torch.float64)
    labels = torch.randint(0, 3, (3, 25), generator=torch.Generator().manual_seed(1))
    out = rate_reduction(z, labels, num_classes=3)
    for b in range(3):
        torch.testing.assert_close(out[b], rate_reduction(z[b], labels[b], num_classes=3))


# ----------------------------------------------------------------------------- TCR / SimDINO


def test_total_coding_rate_is_mean_over_views():
    views = [_rand((20, 64), s, torch.float64) for s in range(4)]
    eps = eps_from_code(0.2)
    expected = torch.stack([ref_coding_rate(v, eps) for v in views]).mean()
    torch.testing.assert_close(total_coding_rate(views), expected)
    torch.testing.assert_close(total_coding_rate(torch.stack(views)), expected)
    torch.testing.assert_close(TotalCodingRate()(views), expected)


def test_simdino_expansion_single_process_formula():
    views = torch.stack([_rand((32, 16), s, torch.float64) for s in range(2)])
    m, p = 32, 16
    eps = eps_from_code(0.5)
    gamma = (p + m) / (p * m)
    expected = gamma * torch.stack([ref_half_logdet(v, p / (m * 0.5)) for v in views]).mean()
    torch.testing.assert_close(simdino_expansion(views), expected)
    torch.testing.assert_close(SimDINOExpansion()(list(views)), expected)
    torch.testing.assert_close(simdino_expansion(views, balance=False), expected / gamma)
    assert math.isclose(eps, 0.5**0.5)


def test_eps_from_code_table():
    assert math.isclose(eps_from_code(0.2), 0.2**0.5)
    z = _rand((40, 30), 5, torch.float64)
    # Official code: ½ logdet(I + d/(n·eps_code)·ZᵀZ).
    official = ref_half_logdet(z, 30 / (40 * 0.2))
    torch.testing.assert_close(coding_rate(z, eps=eps_from_code(0.2)), official)


# ----------------------------------------------------------------------------- modules, compile


def test_modules_match_functions_and_repr():
    z = _rand((2, 10, 6), 0)
    m = CodingRate(eps=0.3, center=True)
    torch.testing.assert_close(m(z), coding_rate(z, eps=0.3, center=True))
    assert "eps=0.3" in repr(m)
    labels = torch.randint(0, 2, (2, 10), generator=torch.Generator().manual_seed(0))
    rr = RateReduction(eps=0.3, num_classes=2, return_parts=True)
    assert rr(z, labels).delta.shape == (2,)
    with pytest.raises(TypeError):
        CodingRate(0.5)  # type: ignore[misc]  # keyword-only


def test_modules_pass_every_option_and_show_theirs():
    z = _rand((2, 3, 10, 6), 1)
    m = CodingRate(eps=0.3, scale=0.7, center=True, precision="float64", form="nxn")
    torch.testing.assert_close(
        m(z), coding_rate(z, eps=0.3, scale=0.7, center=True, precision="float64", form="nxn")
    )
    assert repr(m) == (
        "CodingRate(eps=0.3, scale=0.7, center=True, precision='float64', distributed='auto', "
        "form='nxn')"
    )
    labels = torch.randint(0, 2, (2, 3, 10), generator=torch.Generator().manual_seed(0))
    rr = RateReduction(eps=0.4, gamma=0.5, num_classes=2, precision="float64")
    expected = rate_reduction(z, labels, eps=0.4, gamma=0.5, num_classes=2, precision="float64")
    torch.testing.assert_close(rr(z, labels), expected)
    assert repr(rr) == "RateReduction(eps=0.4, gamma=0.5, num_classes=2)"
    tcr = TotalCodingRate(eps=0.6, precision="float64")
    torch.testing.assert_close(tcr(z), total_coding_rate(z, eps=0.6, precision="float64"))
    assert repr(tcr) == "TotalCodingRate(eps=0.6, precision='float64', distributed='auto')"
    sd = SimDINOExpansion(eps=0.6, distributed="none", official_local_scale=True, balance=False)
    expected = simdino_expansion(
        z, eps=0.6, distributed="none", official_local_scale=True, balance=False
    )
    torch.testing.assert_close(sd(z), expected)
    assert repr(sd) == "SimDINOExpansion(eps=0.6, distributed='none', balance=False)"


def test_torch_compile_fullgraph_matches_eager():
    compiled = torch.compile(coding_rate, fullgraph=True)
    z = _rand((3, 24, 16), 0).requires_grad_(True)
    r = compiled(z)
    torch.testing.assert_close(r, coding_rate(z))
    (g,) = torch.autograd.grad(r.sum(), z)
    (ge,) = torch.autograd.grad(coding_rate(z).sum(), z)
    torch.testing.assert_close(g, ge)
    # The in-graph fallback (torch.cond) handles an fp32 factorisation failure.
    bad = (torch.randn(1, 64).repeat(32, 1) * 1e4).requires_grad_(True)
    rb = compiled(bad)
    assert torch.isfinite(rb)
    torch.testing.assert_close(rb, coding_rate(bad))
    (gb,) = torch.autograd.grad(rb, bad)
    (gbe,) = torch.autograd.grad(coding_rate(bad), bad)
    torch.testing.assert_close(gb, gbe, rtol=1e-4, atol=1e-3 * float(gbe.abs().max()))
