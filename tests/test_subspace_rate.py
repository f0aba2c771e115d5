"""Rate reduction over an invariant / equivariant subspace split: float64 reference, symmetries,
the split's meaning, the module, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from jepa_blocks import (
    NonFiniteError,
    SubspaceProjection,
    SubspaceRateReduction,
    subspace_rate_reduction,
)
from reference import ref_coding_rate

F64 = torch.float64
M, D, P = 3, 12, 3  # views per sequence, feature dim, subspace dim


def _bases(k_inv: int = 2, k_eq: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=F64)).Q[:, : (k_inv + k_eq) * P]
    bases = q.T.reshape(k_inv + k_eq, P, D).mT  # (K, D, P), mutually orthonormal
    return bases[:k_inv], bases[k_inv:]


def _z(b: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b * M, D, generator=g, dtype=F64)


def ref_compression(z: torch.Tensor, bases: torch.Tensor, eps: float) -> torch.Tensor:
    """Σ_k R(Z U_k): each subspace's coding rate of the coordinates (p = the subspace dim)."""
    return sum(ref_coding_rate(z @ u, eps) for u in bases)


def ref_subspace_rate_reduction(
    z: torch.Tensor, u_inv: torch.Tensor, u_eq: torch.Tensor, m: int, eps: float, beta: float
) -> torch.Tensor:
    """The docstring's ΔR, written out term by term with explicit loops over the sequences."""
    z = z / z.norm(dim=-1, keepdim=True)
    u_all = torch.cat((u_inv, u_eq))
    seqs = [z[i : i + m] for i in range(0, len(z), m)]
    means = torch.stack([s.mean(0) for s in seqs])
    within = torch.cat([s - s.mean(0) for s in seqs])
    rate = ref_coding_rate(z, eps) - ref_compression(z, u_all, eps)
    split = (
        ref_compression(means, u_inv, eps)
        - ref_compression(within, u_inv, eps)
        + ref_compression(within, u_eq, eps)
        - ref_compression(means, u_eq, eps)
    )
    return rate + beta * split


@pytest.mark.parametrize("eps,beta", [(0.5, 1.0), (0.2, 0.3), (1.0, 0.0)])
def test_equals_the_float64_reference(eps: float, beta: float) -> None:
    z, (u_inv, u_eq) = _z(), _bases()
    got = subspace_rate_reduction(z, u_inv, u_eq, num_observed=M, eps=eps, split_weight=beta)
    ref = ref_subspace_rate_reduction(z, u_inv, u_eq, M, eps, beta)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_without_groups_it_is_crate_rate_reduction() -> None:
    z, (u_inv, u_eq) = _z(), _bases(1, 3)
    got = subspace_rate_reduction(z, u_inv, u_eq, normalize=False)
    ref = ref_coding_rate(z, 0.5) - ref_compression(z, torch.cat((u_inv, u_eq)), 0.5)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), b=st.integers(2, 6), beta=st.floats(0.0, 3.0))
def test_invariant_to_the_order_of_sequences_and_of_views(seed: int, b: int, beta: float) -> None:
    z, (u_inv, u_eq) = _z(b, seed), _bases(seed=seed)
    g = torch.Generator().manual_seed(seed)
    views = torch.stack([torch.randperm(M, generator=g) for _ in range(b)])  # per sequence
    order = (torch.randperm(b, generator=g)[:, None] * M + views).flatten()
    kw = {"num_observed": M, "split_weight": beta}
    a = subspace_rate_reduction(z, u_inv, u_eq, **kw)
    c = subspace_rate_reduction(z[order], u_inv, u_eq, **kw)
    torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)


def test_the_split_rewards_what_changes_between_views_in_the_equivariant_part() -> None:
    u_inv, u_eq = _bases()
    g = torch.Generator().manual_seed(0)
    identity = torch.randn(64, 1, 2 * P, generator=g, dtype=F64).expand(64, M, 2 * P)
    pose = torch.randn(64, M, 2 * P, generator=g, dtype=F64)  # changes from view to view
    flat_inv, flat_eq = (u.permute(1, 0, 2).flatten(1) for u in (u_inv, u_eq))  # (D, 2P)
    as_meant = (identity @ flat_inv.T + pose @ flat_eq.T).flatten(0, 1)
    swapped = (identity @ flat_eq.T + pose @ flat_inv.T).flatten(0, 1)
    kw = {"num_observed": M, "split_weight": 1.0}
    assert subspace_rate_reduction(as_meant, u_inv, u_eq, **kw) > subspace_rate_reduction(
        swapped, u_inv, u_eq, **kw
    )
    kw["split_weight"] = 0.0  # without β the two parts play the same role
    torch.testing.assert_close(
        subspace_rate_reduction(as_meant, u_inv, u_eq, **kw),
        subspace_rate_reduction(swapped, u_inv, u_eq, **kw),
        rtol=1e-10,
        atol=1e-10,
    )


def test_module_uses_its_projection_and_trains_it() -> None:
    torch.manual_seed(0)
    parts = {"equivariant": 1, "invariant": 3}  # any order: found by name; covers D
    proj = SubspaceProjection(D, subspace_dim=P, parts=parts, eps=0.3)
    reg = SubspaceRateReduction(proj, num_observed=M)
    z = _z().float().requires_grad_()
    bases = proj.bases
    want = subspace_rate_reduction(z, bases[1:], bases[:1], num_observed=M, eps=0.3)
    out = reg(z)
    torch.testing.assert_close(out, want)
    out.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert all(p.grad is not None for p in reg.parameters())
    assert "num_observed=3" in repr(reg)


def test_bad_input_names_the_argument() -> None:
    z, (u_inv, u_eq) = _z(), _bases()
    with pytest.raises(ValueError, match="num_observed = M = 4"):
        subspace_rate_reduction(z, u_inv, u_eq, num_observed=4)
    with pytest.raises(ValueError, match="num_observed"):
        subspace_rate_reduction(z, u_inv, u_eq, num_observed=1)
    with pytest.raises(ValueError, match="split_weight"):
        subspace_rate_reduction(z, u_inv, u_eq, split_weight=-1.0)
    with pytest.raises(ValueError, match="same d and p"):
        subspace_rate_reduction(z, u_inv, u_eq[:, :, :2])
    with pytest.raises(ValueError, match=r"shape \(N, d\)"):
        subspace_rate_reduction(z[None], u_inv, u_eq)
    with pytest.raises(TypeError, match="normalize"):
        subspace_rate_reduction(z, u_inv, u_eq, normalize="yes")  # type: ignore[arg-type]
    bad = z.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        subspace_rate_reduction(bad, u_inv, u_eq, num_observed=M)
    with pytest.raises(TypeError, match="parts 'invariant' and 'equivariant'"):
        SubspaceRateReduction(SubspaceProjection(D, subspace_dim=P, parts=2))
    with pytest.warns(UserWarning, match="covers 6 of dim=12"):
        SubspaceRateReduction(
            SubspaceProjection(D, subspace_dim=P, parts={"invariant": 1, "equivariant": 1})
        )
    proj = SubspaceProjection(D, subspace_dim=P, parts={"invariant": 2, "equivariant": 2})
    with pytest.raises(ValueError, match="precision"):
        SubspaceRateReduction(proj, precision="fp64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_observed"):
        SubspaceRateReduction(proj, num_observed=1)
