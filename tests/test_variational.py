"""ToST's variational bound of R^c and the local (sliding-window) coding rate."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from jepa_blocks.rate import coding_rate, rate_reduction
from jepa_blocks.variational import VariationalRate, variational_rate
from jepa_blocks.window_rate import LocalCodingRate
from reference import ref_half_logdet

F64 = torch.float64


#: Strategies for the arguments of :func:`_problem` (and ``eps``).
PROBLEMS = {
    "n": st.integers(2, 40),
    "d": st.integers(1, 12),
    "k": st.integers(1, 4),
    "eps": st.floats(0.1, 2.0),
    "hard": st.booleans(),
    "seed": st.integers(0, 2**16),
}


def _problem(n: int, d: int, k: int, seed: int, hard: bool = False):
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=F64), dim=-1)
    if hard:
        pi = torch.nn.functional.one_hot(torch.randint(0, k, (n,), generator=g), k).to(F64)
    else:
        pi = torch.softmax(2.0 * torch.randn(n, k, generator=g, dtype=F64), dim=-1)
    return z, pi, g


def _orthogonal(k: int, d: int, p: int, g: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(k, d, d, generator=g, dtype=F64)).Q[..., :p]


def _exact_compression(z: torch.Tensor, pi: torch.Tensor, eps: float) -> torch.Tensor:
    return rate_reduction(z, pi, eps=eps, precision="float64", return_parts=True).compression


@given(**PROBLEMS)
def test_bound_is_above_exact_compression(n, d, k, eps, hard, seed) -> None:
    z, pi, g = _problem(n, d, k, seed, hard)
    u = _orthogonal(k, d, d, g)
    exact = _exact_compression(z, pi, eps)
    bound = variational_rate(z, pi, u, eps=eps)
    assert bound >= exact - 1e-10 * (1 + exact.abs())
    # the standard basis is a valid orthonormal basis too
    assert variational_rate(z, pi, None, eps=eps) >= exact - 1e-10 * (1 + exact.abs())


@given(**PROBLEMS)
def test_bound_is_tight_when_projections_diagonalise(n, d, k, eps, hard, seed) -> None:
    z, pi, _ = _problem(n, d, k, seed, hard)
    second_moments = torch.einsum("nk,nd,ne->kde", pi, z, z)
    u = torch.linalg.eigh(second_moments).eigenvectors
    exact = _exact_compression(z, pi, eps)
    torch.testing.assert_close(variational_rate(z, pi, u, eps=eps), exact, rtol=1e-9, atol=1e-10)


@given(n=st.integers(2, 30), d=st.integers(2, 10), seed=st.integers(0, 2**16))
def test_thin_bases_bound_the_projected_rate(n, d, seed) -> None:
    """With p < d the bound holds for the rate of Z U_k (with the factor d/ε²)."""
    k, eps = 3, 0.5
    p = max(1, d // 2)
    z, pi, g = _problem(n, d, k, seed)
    u = _orthogonal(k, d, p, g)
    n_k = pi.sum(0)
    ref = sum(
        n_k[c] / n * ref_half_logdet(pi[:, c, None].sqrt() * (z @ u[c]), d / (n_k[c] * eps**2))
        for c in range(k)
    )
    assert variational_rate(z, pi, u, eps=eps) >= ref - 1e-10


def test_gradient_matches_closed_form_float64() -> None:
    """∇_Z R^{c,var} = (1/n) Σ_k U_k D_k U_kᵀ z_i π_ik (coding-rate.md §5.2, rows as samples)."""
    n, d, k, p, eps = 17, 6, 3, 4, 0.7
    z, pi, g = _problem(n, d, k, seed=3)
    u = _orthogonal(k, d, p, g)
    z.requires_grad_(True)
    (grad,) = torch.autograd.grad(variational_rate(z, pi, u, eps=eps), z)
    scale = d / eps**2
    closed = torch.zeros(n, d, dtype=F64)
    for c in range(k):
        coords = z.detach() @ u[c]  # (n, p)
        m = (pi[:, c, None] * coords**2).sum(0) / pi[:, c].sum()
        fprime = scale / (1 + scale * m)  # D_k = Diag(∇f(m_k))
        closed += pi[:, c, None] * (coords * fprime) @ u[c].T
    torch.testing.assert_close(grad, closed / n, rtol=1e-12, atol=1e-14)


def test_gradcheck_including_memberships() -> None:
    z, pi, g = _problem(7, 4, 2, seed=5)
    u = _orthogonal(2, 4, 3, g)
    assert torch.autograd.gradcheck(
        lambda a, b, c: variational_rate(a, b, c, eps=0.5),
        (z.requires_grad_(True), pi.requires_grad_(True), u.requires_grad_(True)),
    )


def test_identity_projections_hard_labels_and_batches() -> None:
    z, pi, _ = _problem(20, 5, 3, seed=1)
    eye = torch.eye(5, dtype=F64).expand(3, 5, 5)
    torch.testing.assert_close(
        variational_rate(z, pi, None, eps=0.5), variational_rate(z, pi, eye, eps=0.5)
    )
    labels = torch.arange(20) % 3
    onehot = torch.nn.functional.one_hot(labels, 3).to(F64)
    torch.testing.assert_close(
        variational_rate(z, labels, eye, eps=0.5), variational_rate(z, onehot, eye, eps=0.5)
    )
    torch.testing.assert_close(
        variational_rate(z, labels, None, eps=0.5, num_classes=3),
        variational_rate(z, onehot, None, eps=0.5),
    )
    # batch dimensions broadcast (z, membership and projections)
    zb = torch.stack([z, z.flip(0)])
    pib = torch.stack([pi, pi.flip(0)])
    out = variational_rate(zb, pib, eye, eps=0.5)
    assert out.shape == (2,)
    torch.testing.assert_close(out[1], variational_rate(z.flip(0), pi.flip(0), eye, eps=0.5))
    module = VariationalRate(eps=0.5)
    torch.testing.assert_close(module(z, pi, eye), variational_rate(z, pi, eye, eps=0.5))


def test_empty_class_contributes_zero() -> None:
    z, pi, _ = _problem(10, 4, 2, seed=2)
    padded = torch.cat([pi, torch.zeros(10, 1, dtype=F64)], -1)
    torch.testing.assert_close(
        variational_rate(z, padded, None, eps=0.5), variational_rate(z, pi, None, eps=0.5)
    )


def test_fp32_island_under_bf16_autocast() -> None:
    z, pi, g = _problem(32, 8, 2, seed=4)
    u = _orthogonal(2, 8, 8, g)
    ref = variational_rate(z.float(), pi.float(), u.float(), eps=0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = variational_rate(z.bfloat16(), pi.float(), u.float(), eps=0.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)
    assert variational_rate(z, pi, u, eps=0.5).dtype == F64
    assert variational_rate(z.float(), pi.float(), u.float(), precision="float64").dtype == F64


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"eps": 0.0}, ValueError, "eps"),
        ({"eps": "0.5"}, TypeError, "eps"),
        ({"precision": "half"}, ValueError, "precision"),
        ({"num_classes": 0}, ValueError, "num_classes"),
    ],
)
def test_bad_arguments(kwargs, exc, match) -> None:
    z, pi, _ = _problem(6, 3, 2, seed=0)
    with pytest.raises(exc, match=match):
        variational_rate(z, pi, None, **kwargs)


def test_bad_shapes() -> None:
    z, pi, g = _problem(6, 3, 2, seed=0)
    u = _orthogonal(2, 3, 3, g)
    with pytest.raises(ValueError, match="projections"):
        variational_rate(z, pi, u[:, :2], eps=0.5)
    with pytest.raises(ValueError, match="membership"):
        variational_rate(z, pi[:5], u, eps=0.5)
    with pytest.raises(ValueError, match="membership"):
        variational_rate(z, torch.softmax(torch.randn(6, 3, dtype=F64), -1), u, eps=0.5)
    with pytest.raises(ValueError, match="num_classes"):
        variational_rate(z, torch.zeros(6, dtype=torch.long), None, eps=0.5)
    with pytest.raises(TypeError, match="membership"):
        variational_rate(z, [0, 1], u, eps=0.5)
    with pytest.raises(TypeError, match="z"):
        variational_rate(torch.ones(6, 3, dtype=torch.long), pi, u, eps=0.5)
    with pytest.raises(ValueError, match="num_classes"):
        VariationalRate(num_classes=True)


# ----------------------------------------------------------------------------- local coding rate


def test_local_rate_equals_rate_over_batch_and_window() -> None:
    z = _problem(60, 6, 1, seed=7)[0]
    reg = LocalCodingRate(6, window=20, eps=0.5).double()
    history: list[torch.Tensor] = []
    for sl in (slice(0, 8), slice(8, 16), slice(16, 41), slice(41, 45), slice(45, 60)):
        batch = z[sl]
        window = torch.cat(history)[-20:] if history else z[:0]
        expected = coding_rate(torch.cat([batch, window]), eps=0.5)
        torch.testing.assert_close(reg(batch), expected, rtol=1e-12, atol=1e-12)
        history.append(batch)
        assert int(reg.filled) == min(20, sum(len(h) for h in history))
    # a 25-row batch writes only its last 20 rows
    assert int(reg.pointer) == (8 + 8 + 20 + 4 + 15) % 20


def test_local_rate_gradient_flows_into_the_current_batch_only() -> None:
    z = _problem(30, 5, 1, seed=8)[0]
    reg = LocalCodingRate(5, window=16).double()
    reg(z[:16])
    batch = z[16:].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reg(batch), batch)
    ref_batch = z[16:].clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(coding_rate(torch.cat([ref_batch, z[:16]]), eps=0.5), ref_batch)
    torch.testing.assert_close(grad, ref, rtol=1e-12, atol=1e-12)
    assert not reg.memory.requires_grad


def test_local_rate_update_modes_and_checkpoint() -> None:
    z = _problem(30, 4, 1, seed=9)[0].float()
    reg = LocalCodingRate(4, window=10)
    reg.eval()
    reg(z[:5])
    assert int(reg.filled) == 0  # eval: no update by default
    reg(z[:5], update=True)
    reg.train()
    reg(z[5:12])
    assert int(reg.filled) == 10
    reg(z[12:14], update=False)
    assert int(reg.filled) == 10 and int(reg.pointer) == 2
    restored = LocalCodingRate(4, window=10)
    restored.load_state_dict(reg.state_dict())
    assert set(reg.state_dict()) == {"memory", "filled", "pointer"}
    torch.testing.assert_close(restored(z[20:], update=False), reg(z[20:], update=False))
    reg.reset()
    assert int(reg.filled) == 0 and not reg.memory.any()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert reg(z[:3].bfloat16()).dtype == torch.float32


def test_local_rate_errors() -> None:
    with pytest.raises(ValueError, match="window"):
        LocalCodingRate(4, window=0)
    with pytest.raises(TypeError, match="dim"):
        LocalCodingRate(4.0)
    with pytest.raises(ValueError, match="eps"):
        LocalCodingRate(4, eps=-1.0)
    reg = LocalCodingRate(4)
    with pytest.raises(ValueError, match="shape"):
        reg(torch.randn(3, 5))
    with pytest.raises(ValueError, match="shape"):
        reg(torch.randn(2, 3, 4))
    with pytest.raises(TypeError, match="floating"):
        reg(torch.ones(3, 4, dtype=torch.long))
