"""Action vectors: encodings of transformation parameters and relative actions between views.

Quaternions are scalar-last ``(x, y, z, w)`` and, as in the official code, not sign-canonicalised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from jepa_blocks._validation import check_bool, check_choice, check_floating_tensor, check_positive

__all__ = [
    "affine_action",
    "angle_to_sincos",
    "canonicalize_quaternion",
    "euler_xyz_to_quaternion",
    "normalize_across_views",
    "quaternion_conjugate",
    "quaternion_multiply",
    "relative_affine_actions",
    "relative_differences",
    "relative_quaternions",
    "relative_rotation_actions",
    "sincos_to_angle",
    "wrap_angle",
]

#: ``"none"`` or ``"official"``: normalise the parameters across the views first.
ActionNorm = Literal["none", "official"]


def check_last_dim(x: Any, name: str, size: int, doc: str = "") -> Tensor:
    """Raise unless ``x`` is a floating tensor ``(..., size)``; ``doc`` names the entries."""
    check_floating_tensor(x, name, min_ndim=1)
    if x.shape[-1] != size:
        raise ValueError(f"{name} must have shape (..., {size}){doc}, got {tuple(x.shape)}")
    return x


def _check_views(params: Tensor, name: str, *, min_views: int = 2, last: int | None = None) -> None:
    check_floating_tensor(params, name, min_ndim=2, shape_doc="(..., V, P)")
    if last is not None:
        check_last_dim(params, name, last)
    if params.shape[-2] < min_views:
        raise ValueError(
            f"{name} must have at least {min_views} views on dim -2 (shape (..., V, P)), "
            f"got shape {tuple(params.shape)}"
        )


def wrap_angle(theta: Tensor) -> Tensor:
    """Wrap angles (radians) into ``[−π, π)`` by adding a multiple of ``2π``.

    Shape:
        - theta: ``(...)``; output: ``(...)``
    """
    check_floating_tensor(theta, "theta")
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


def angle_to_sincos(theta: Tensor) -> Tensor:
    """Encode angles as ``[sin θ, cos θ]``, a continuous code without the ``±π`` jump.

    Shape:
        - theta: ``(...)``; output: ``(..., 2)``
    """
    check_floating_tensor(theta, "theta")
    return torch.stack((torch.sin(theta), torch.cos(theta)), dim=-1)


def sincos_to_angle(code: Tensor) -> Tensor:
    """Invert :func:`angle_to_sincos`: ``atan2(sin, cos)`` in ``(−π, π]`` (any norm).

    Shape:
        - code: ``(..., 2)``; output: ``(...)``
    """
    check_last_dim(code, "code", 2, " [sin, cos]")
    return torch.atan2(code[..., 0], code[..., 1])


def affine_action(params: Tensor) -> Tensor:
    """Encode similarity parameters ``[θ, tx, ty, log s]`` as ``[sin θ, cos θ, tx, ty, log s]``.

    The MNIST-affine action of ``kaikun213/seq-jepa`` ``experiments/datasets_mnist_affine.py``.

    Shape:
        - params: ``(..., 4)``; output: ``(..., 5)``
    """
    check_last_dim(params, "params", 4, " [angle, tx, ty, log_scale]")
    return torch.cat((angle_to_sincos(params[..., 0]), params[..., 1:]), dim=-1)


def normalize_across_views(params: Tensor, *, eps: float = 1e-12) -> Tensor:
    """The official code's action normalisation: unit L2 norm of each parameter *across the views*.

    ``hafezgh/seq-jepa`` ``src/engine.py``; depends on the sequence length, not on the units.

    Args:
        params: Absolute parameters of the ``V`` views of each sequence.
        eps: Lower bound of the norm, as in :func:`torch.nn.functional.normalize`.

    Shape:
        - params: ``(..., V, P)``; output: ``(..., V, P)``
    """
    _check_views(params, "params", min_views=1)
    return F.normalize(params, p=2.0, dim=-2, eps=check_positive(eps, "eps"))


def relative_differences(
    params: Tensor, *, angle_dims: Sequence[int] = (), normalize: ActionNorm = "none"
) -> Tensor:
    """Relative actions ``a_i = t_{i+1} − t_i`` between consecutive views (paper §3.1).

    Args:
        params: Absolute parameters ``t`` of ``V`` views.
        angle_dims: Columns holding angles (radians), their differences wrapped into ``[−π, π)``.
        normalize: ``"none"`` or ``"official"`` (:func:`normalize_across_views` first, no wrapping).

    Shape:
        - params: ``(..., V, P)``; output: ``(..., V − 1, P)``
    """
    _check_views(params, "params")
    check_choice(normalize, "normalize", get_args(ActionNorm))
    p = params.shape[-1]
    if not isinstance(angle_dims, (tuple, list, range)) or any(
        type(d) is not int or not -p <= d < p for d in angle_dims
    ):
        raise ValueError(f"angle_dims must hold ints in [-{p}, {p}), got {angle_dims!r}")
    dims = sorted({d % p for d in angle_dims})
    if normalize == "official":
        params = normalize_across_views(params)
        dims = []
    diff = params[..., 1:, :] - params[..., :-1, :]
    if dims:
        idx = torch.tensor(dims, device=params.device)
        diff = diff.index_copy(-1, idx, wrap_angle(diff.index_select(-1, idx)))
    return diff


def relative_rotation_actions(angles: Tensor) -> Tensor:
    """Relative planar-rotation actions ``[sin Δθ, cos Δθ]``, ``Δθ = θ_{i+1} − θ_i`` (radians).

    Shape:
        - angles: ``(..., V)``; output: ``(..., V − 1, 2)``
    """
    check_floating_tensor(angles, "angles", min_ndim=1)
    if angles.shape[-1] < 2:
        raise ValueError(f"angles must hold at least 2 views on dim -1, got {tuple(angles.shape)}")
    return angle_to_sincos(wrap_angle(angles[..., 1:] - angles[..., :-1]))


def relative_affine_actions(params: Tensor) -> Tensor:
    """Relative MNIST-affine actions ``[sin Δθ, cos Δθ, Δtx, Δty, Δlog s]`` of successive views.

    Shape:
        - params: ``(..., V, 4)``; output: ``(..., V − 1, 5)``
    """
    _check_views(params, "params", last=4)
    return affine_action(relative_differences(params, angle_dims=(0,)))


def quaternion_multiply(p: Tensor, q: Tensor) -> Tensor:
    """Hamilton product ``p ⊗ q`` of scalar-last quaternions (rotation ``q`` first, then ``p``).

    Shape:
        - p: ``(..., 4)``; q: ``(..., 4)``, broadcastable with ``p``; output: ``(..., 4)``
    """
    check_last_dim(p, "p", 4, " (x, y, z, w)")
    check_last_dim(q, "q", 4, " (x, y, z, w)")
    try:
        torch.broadcast_shapes(p.shape, q.shape)
    except RuntimeError:
        raise ValueError(f"p and q must broadcast, got {p.shape} and {q.shape}") from None
    pv, pw = p[..., :3], p[..., 3:]
    qv, qw = q[..., :3], q[..., 3:]
    vec = pw * qv + qw * pv + torch.linalg.cross(pv, qv, dim=-1)
    w = pw * qw - (pv * qv).sum(-1, keepdim=True)
    return torch.cat((vec, w), dim=-1)


def quaternion_conjugate(q: Tensor) -> Tensor:
    """Conjugate ``(−x, −y, −z, w)``; the inverse rotation for unit quaternions.

    Shape:
        - q: ``(..., 4)``; output: ``(..., 4)``
    """
    check_last_dim(q, "q", 4, " (x, y, z, w)")
    return torch.cat((-q[..., :3], q[..., 3:]), dim=-1)


def canonicalize_quaternion(q: Tensor) -> Tensor:
    """Pick the representative with ``w ≥ 0`` (``q`` and ``−q`` are the same rotation).

    Shape:
        - q: ``(..., 4)``; output: ``(..., 4)``
    """
    check_last_dim(q, "q", 4, " (x, y, z, w)")
    return torch.where(q[..., 3:] < 0, -q, q)


def euler_xyz_to_quaternion(angles: Tensor) -> Tensor:
    """Unit quaternion of extrinsic x-y-z Euler angles (scipy's ``from_euler("xyz", ...)``).

    ``R = R_z(γ) R_y(β) R_x(α)``, i.e. ``q = q_z ⊗ q_y ⊗ q_x`` (3DIEBench's pose convention).

    Shape:
        - angles: ``(..., 3)`` radians ``(α, β, γ)`` about x, y, z; output: ``(..., 4)`` scalar-last
    """
    check_last_dim(angles, "angles", 3, " (x, y, z)")
    half = 0.5 * angles
    s, c = torch.sin(half), torch.cos(half)
    zeros = torch.zeros_like(s[..., 0])
    qx = torch.stack((s[..., 0], zeros, zeros, c[..., 0]), dim=-1)
    qy = torch.stack((zeros, s[..., 1], zeros, c[..., 1]), dim=-1)
    qz = torch.stack((zeros, zeros, s[..., 2], c[..., 2]), dim=-1)
    return quaternion_multiply(qz, quaternion_multiply(qy, qx))


def relative_quaternions(angles: Tensor, *, canonical: bool = False) -> Tensor:
    """Relative 3D rotations between consecutive views as quaternions ``q_i⁻¹ ⊗ q_{i+1}``.

    The official 3DIEBench action ``R.from_euler("xyz", e_i).inv() * R.from_euler("xyz", e_{i+1})``.

    Args:
        angles: Extrinsic x-y-z Euler angles of ``V`` views.
        canonical: Flip signs so that ``w ≥ 0`` (see :func:`canonicalize_quaternion`).

    Shape:
        - angles: ``(..., V, 3)``; output: ``(..., V − 1, 4)``
    """
    _check_views(angles, "angles", last=3)
    check_bool(canonical, "canonical")
    q = euler_xyz_to_quaternion(angles)
    rel = quaternion_multiply(quaternion_conjugate(q[..., :-1, :]), q[..., 1:, :])
    return canonicalize_quaternion(rel) if canonical else rel
