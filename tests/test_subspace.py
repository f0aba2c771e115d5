"""Subspace projections: orthonormality, coordinates, parts and CRATE's compression (float64)."""

from __future__ import annotations

import pytest
import torch

from jepa_blocks.subspace import SubspaceProjection, subspace_compression, subspace_coordinates

F64 = torch.float64
PARTS = {"invariant": 2, "equivariant": 3}


def _z(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64)


def ref_compression(z: torch.Tensor, bases: torch.Tensor, eps: float) -> torch.Tensor:
    """Σ_k ½ logdet(I_p + p/(N ε²) (Z U_k)ᵀ(Z U_k)) with torch.logdet, float64."""
    n, total = z.shape[0], torch.zeros((), dtype=F64)
    for u in bases:
        c = z @ u
        p = u.shape[1]
        total = total + 0.5 * torch.logdet(torch.eye(p, dtype=F64) + p / (n * eps**2) * c.T @ c)
    return total


@pytest.mark.parametrize("orthogonality", ["parametrization", "penalty"])
def test_orthonormal_bases_and_coordinates(orthogonality: str) -> None:
    torch.manual_seed(0)
    proj = SubspaceProjection(16, subspace_dim=2, parts=PARTS, orthogonality=orthogonality).double()
    w = proj.weight
    torch.testing.assert_close(w.T @ w, torch.eye(10, dtype=F64), rtol=0, atol=1e-6)  # fp32 init
    assert float(proj.orthogonality_penalty().detach()) < 1e-10
    z = _z(7, 16)
    out = proj(z)
    assert out.shape == (7, 5, 2) and proj.bases.shape == (5, 16, 2)
    for k in range(5):
        torch.testing.assert_close(out[:, k], z @ proj.bases[k])
    torch.testing.assert_close(out, subspace_coordinates(z, proj.bases))
    assert proj.subspaces("invariant") == slice(0, 2)
    assert proj.subspaces("equivariant") == slice(2, 5)
    torch.testing.assert_close(proj.part(z, "invariant"), out[:, :2].flatten(1))
    torch.testing.assert_close(proj.part(z, "equivariant"), out[:, 2:].flatten(1))


def test_parametrization_stays_orthonormal_and_penalty_restores_orthonormality() -> None:
    torch.manual_seed(1)
    z = _z(32, 12).float()
    for orthogonality in ("parametrization", "penalty"):
        proj = SubspaceProjection(12, subspace_dim=3, parts=3, orthogonality=orthogonality)
        opt = torch.optim.SGD(proj.parameters(), lr=1e-3)
        for _ in range(3):
            opt.zero_grad()
            (-proj(z).square().sum()).backward()  # pulls the bases off the Stiefel manifold
            opt.step()
        drift = float(proj.orthogonality_penalty().detach())
        if orthogonality == "parametrization":
            assert drift < 1e-8
        else:
            assert drift > 1e-2
            opt = torch.optim.SGD(proj.parameters(), lr=0.02)
            for _ in range(300):
                opt.zero_grad()
                proj.orthogonality_penalty().backward()
                opt.step()
            assert float(proj.orthogonality_penalty().detach()) < 1e-3 * drift


@pytest.mark.parametrize("eps", [0.5, 0.1])
def test_compression_equals_the_float64_reference(eps: float) -> None:
    torch.manual_seed(2)
    proj = SubspaceProjection(16, subspace_dim=3, parts=PARTS, eps=eps).double()
    z = _z(20, 16, seed=3)
    bases = proj.bases.detach()
    ref = ref_compression(z, bases, eps)
    torch.testing.assert_close(subspace_compression(z, bases, eps=eps), ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(proj.compression(z), ref, rtol=1e-12, atol=0)
    inv = proj.compression(z, part="invariant")
    torch.testing.assert_close(inv, ref_compression(z, bases[:2], eps), rtol=1e-12, atol=0)
    # fp32 path (fp32 Gram, float64 factorisation) within fp32 accuracy
    out32 = subspace_compression(z.float(), bases.float(), eps=eps)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), ref, rtol=1e-5, atol=0)


def test_batch_dims() -> None:
    z = _z(30, 8).reshape(3, 10, 8)
    q = torch.linalg.qr(_z(8, 4, seed=5)).Q.reshape(8, 2, 2).permute(1, 0, 2)
    out = subspace_compression(z, q)
    assert out.shape == (3,)
    torch.testing.assert_close(out[1], ref_compression(z[1], q, 0.5))
    assert subspace_coordinates(z, q).shape == (3, 10, 2, 2)


def test_gradcheck() -> None:
    z = _z(6, 5, seed=6).requires_grad_(True)
    bases = (0.5 * _z(10, 2, seed=7)).reshape(2, 5, 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: subspace_compression(a, b), (z, bases))
    torch.manual_seed(3)
    proj = SubspaceProjection(5, subspace_dim=2, parts={"a": 1, "b": 1}).double()
    assert torch.autograd.gradcheck(proj.compression, (z,))
    assert torch.autograd.gradcheck(lambda a: proj.part(a, "b"), (z,))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="exceed dim"):
        SubspaceProjection(8, subspace_dim=3, parts=3)
    with pytest.raises(ValueError, match="orthogonality"):
        SubspaceProjection(8, subspace_dim=2, parts=2, orthogonality="qr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="parts"):
        SubspaceProjection(8, subspace_dim=2, parts={"a": 0})
    with pytest.raises(TypeError, match="parts"):
        SubspaceProjection(8, subspace_dim=2, parts=[2])  # type: ignore[arg-type]
    proj = SubspaceProjection(16, subspace_dim=2, parts=PARTS)
    with pytest.raises(ValueError, match="part"):
        proj.part(torch.randn(3, 16), "other")
    with pytest.raises(ValueError, match="bases"):
        subspace_coordinates(torch.randn(3, 8), torch.randn(2, 7, 2))
