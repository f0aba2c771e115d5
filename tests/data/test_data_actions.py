"""Action encodings and the algebra of relative actions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from jepa_blocks.data import (
    affine_action,
    angle_to_sincos,
    canonicalize_quaternion,
    euler_xyz_to_quaternion,
    normalize_across_views,
    quaternion_conjugate,
    quaternion_multiply,
    relative_affine_actions,
    relative_differences,
    relative_quaternions,
    relative_rotation_actions,
    sincos_to_angle,
    wrap_angle,
)

angles = st.floats(-50.0, 50.0, allow_nan=False)


@given(angles)
def test_wrap_angle_range_and_equivalence(theta: float) -> None:
    t = torch.tensor(theta, dtype=torch.float64)
    w = wrap_angle(t)
    assert -math.pi <= float(w) < math.pi
    # Same angle: differs from the input by a multiple of 2π.
    k = (float(t) - float(w)) / (2 * math.pi)
    assert abs(k - round(k)) < 1e-9


def test_wrap_angle_known_values() -> None:
    t = torch.tensor(
        [0.0, math.pi, -math.pi, 3 * math.pi / 2, -3 * math.pi / 2], dtype=torch.float64
    )
    expected = torch.tensor(
        [0.0, -math.pi, -math.pi, -math.pi / 2, math.pi / 2], dtype=torch.float64
    )
    torch.testing.assert_close(wrap_angle(t), expected)


@given(angles)
def test_sincos_roundtrip(theta: float) -> None:
    t = torch.tensor([theta], dtype=torch.float64)
    code = angle_to_sincos(t)
    assert code.shape == (1, 2)
    torch.testing.assert_close(code.norm(dim=-1), torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(
        wrap_angle(sincos_to_angle(code) - t),
        torch.zeros(1, dtype=torch.float64),
        atol=1e-9,
        rtol=0,
    )


def test_relative_differences_wraps_across_pi() -> None:
    # 179° → −179° is a +2° turn, not −358°.
    params = torch.tensor([[math.radians(179.0), 5.0], [math.radians(-179.0), 3.0]])
    rel = relative_differences(params, angle_dims=(0,))
    torch.testing.assert_close(rel, torch.tensor([[math.radians(2.0), -2.0]]))
    # Without angle_dims the raw difference is kept.
    torch.testing.assert_close(
        relative_differences(params), torch.tensor([[math.radians(-358.0), -2.0]])
    )


@given(st.lists(st.tuples(angles, st.floats(-3, 3), st.floats(-3, 3)), min_size=3, max_size=6))
def test_relative_differences_compose(views: list[tuple[float, float, float]]) -> None:
    """a₁₂ ⊕ a₂₃ = a₁₃: summed consecutive actions equal the action from the first to the last."""
    params = torch.tensor(views, dtype=torch.float64)
    rel = relative_differences(params, angle_dims=(0,))
    total = rel.sum(dim=0)
    direct = relative_differences(params[[0, -1]], angle_dims=(0,))[0]
    torch.testing.assert_close(
        wrap_angle(total[0] - direct[0]), torch.tensor(0.0, dtype=torch.float64), atol=1e-9, rtol=0
    )
    torch.testing.assert_close(total[1:], direct[1:], atol=1e-9, rtol=0)


def test_relative_rotation_actions_compose_as_complex_numbers() -> None:
    gen = torch.Generator().manual_seed(0)
    theta = (torch.rand(5, 4, generator=gen, dtype=torch.float64) - 0.5) * 20
    rel = relative_rotation_actions(theta)  # (5, 3, 2) = [sin, cos]
    assert rel.shape == (5, 3, 2)
    z = torch.complex(rel[..., 1], rel[..., 0])  # cos + i sin
    composed = z.prod(dim=-1)
    direct = torch.exp(1j * (theta[:, -1] - theta[:, 0]))
    torch.testing.assert_close(composed, direct)


def test_affine_action_layout_and_relative() -> None:
    params = torch.tensor([[0.3, 0.1, -0.2, 0.05], [-3.0, 0.0, 0.1, -0.1]], dtype=torch.float64)
    enc = affine_action(params)
    torch.testing.assert_close(
        enc[:, :2], torch.stack((params[:, 0].sin(), params[:, 0].cos()), -1)
    )
    torch.testing.assert_close(enc[:, 2:], params[:, 1:])
    rel = relative_affine_actions(params)
    d = params[1] - params[0]
    expected = torch.stack((d[0].sin(), d[0].cos(), d[1], d[2], d[3]))
    torch.testing.assert_close(rel[0], expected)


def test_official_normalisation_matches_code_quirk() -> None:
    """The official F.normalize(aug_params, p=2, dim=1) on (B, M+1, P): per parameter over views."""
    gen = torch.Generator().manual_seed(1)
    params = torch.rand(3, 4, 9, generator=gen) * 10
    torch.testing.assert_close(normalize_across_views(params), F.normalize(params, p=2, dim=1))
    norms = normalize_across_views(params).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(3, 9))
    # Unit-free: scaling one parameter (pixels vs fractions) changes nothing.
    scaled = params.clone()
    scaled[..., :4] *= 32
    torch.testing.assert_close(
        relative_differences(scaled, normalize="official"),
        relative_differences(params, normalize="official"),
    )


def test_euler_quaternion_matches_scipy() -> None:
    rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    rs = np.random.default_rng(0)
    eul = rs.uniform(-math.pi / 2, math.pi / 2, size=(64, 3))
    ours = euler_xyz_to_quaternion(torch.from_numpy(eul)).numpy()
    ref = rotation.from_euler("xyz", eul).as_quat()
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_relative_quaternions_match_official_scipy_formula() -> None:
    """quat(R.from_euler('xyz', e_i).inv() * R.from_euler('xyz', e_{i+1})), no sign canonicalisation."""
    rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    rs = np.random.default_rng(1)
    eul = rs.uniform(-math.pi / 2, math.pi / 2, size=(8, 5, 3))
    ours = relative_quaternions(torch.from_numpy(eul)).numpy()
    assert ours.shape == (8, 4, 4)
    for b in range(8):
        for j in range(4):
            ref = (
                rotation.from_euler("xyz", eul[b, j]).inv()
                * rotation.from_euler("xyz", eul[b, j + 1])
            ).as_quat()
            # Same rotation (q ≡ −q) and, in practice, the very same sign as scipy.
            assert abs(abs(np.dot(ours[b, j], ref)) - 1) < 1e-12
            np.testing.assert_allclose(ours[b, j], ref, atol=1e-12)


def test_relative_quaternions_compose() -> None:
    gen = torch.Generator().manual_seed(2)
    eul = (torch.rand(16, 3, 3, generator=gen, dtype=torch.float64) - 0.5) * math.pi
    rel = relative_quaternions(eul)
    composed = quaternion_multiply(rel[:, 0], rel[:, 1])
    direct = relative_quaternions(eul[:, [0, 2]])[:, 0]
    dots = (composed * direct).sum(-1).abs()
    torch.testing.assert_close(dots, torch.ones(16, dtype=torch.float64))


def test_quaternion_conjugate_is_inverse_and_canonical_sign() -> None:
    gen = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(10, 4, generator=gen, dtype=torch.float64), dim=-1)
    ident = quaternion_multiply(q, quaternion_conjugate(q))
    torch.testing.assert_close(
        ident, torch.tensor([0.0, 0, 0, 1], dtype=torch.float64).expand(10, 4)
    )
    c = canonicalize_quaternion(q)
    assert bool((c[:, 3] >= 0).all())
    torch.testing.assert_close((c * q).sum(-1).abs(), torch.ones(10, dtype=torch.float64))
    canon = relative_quaternions(
        torch.zeros(1, 2, 3, dtype=torch.float64) + torch.tensor([[[0, 0, 0], [0, 0, 3.0]]]),
        canonical=True,
    )
    assert float(canon[0, 0, 3]) >= 0


def test_bad_inputs_raise_with_names() -> None:
    with pytest.raises(ValueError, match="params"):
        relative_differences(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="normalize"):
        relative_differences(torch.zeros(2, 3), normalize="l2")
    with pytest.raises(ValueError, match="angle_dims"):
        relative_differences(torch.zeros(2, 3), angle_dims=(5,))
    with pytest.raises(ValueError, match="params"):
        affine_action(torch.zeros(3, 5))
    with pytest.raises(TypeError, match="theta"):
        wrap_angle(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(x, y, z, w\)"):
        quaternion_multiply(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="angles"):
        relative_quaternions(torch.zeros(2, 4))
