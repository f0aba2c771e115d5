"""Per-part subspace diagnostics on synthetic data: one part carries the class, the other the action."""

from __future__ import annotations

import pytest
import torch

from jepa_blocks.metrics import effective_rank
from jepa_blocks.metrics.subspace import subspace_diagnostics, subspace_leakage
from jepa_blocks.subspace import SubspaceProjection


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class on coordinates 0–1 (4 centres on a circle), action on 2–3, noise on 4–7."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    angle = labels.double() * torch.pi / 2
    actions = torch.randn(n, 2, generator=g, dtype=torch.float64)
    z = torch.randn(n, 8, generator=g, dtype=torch.float64)
    z[:, :2] = 3 * torch.stack([angle.cos(), angle.sin()], 1) + 0.3 * z[:, :2]
    z[:, 2:4] = actions + 0.1 * z[:, 2:4]
    return z, labels, actions


def _axis_projection() -> SubspaceProjection:
    proj = SubspaceProjection(
        8, subspace_dim=2, parts={"invariant": 1, "equivariant": 1}, orthogonality="penalty"
    ).double()
    with torch.no_grad():
        proj.weight.copy_(torch.eye(8, dtype=torch.float64)[:, :4])
    return proj


def test_leakage_is_measured_per_part() -> None:
    proj = _axis_projection()
    out = subspace_leakage(proj, _data(400, 0), _data(400, 1))
    assert set(out) == {
        "invariant/class_accuracy", "invariant/action_r2",
        "equivariant/class_accuracy", "equivariant/action_r2",
    }  # fmt: skip
    assert out["invariant/class_accuracy"] > 0.95
    assert out["invariant/action_r2"] < 0.1  # no action leaks into the invariant part
    assert out["equivariant/class_accuracy"] < 0.45  # chance is 0.25
    assert out["equivariant/action_r2"] > 0.95


def test_diagnostics_match_the_rank_helpers() -> None:
    proj = _axis_projection()
    z, _, _ = _data(300, 2)
    out = subspace_diagnostics(proj, z)
    zc = z - z.mean(0)
    total = zc.square().sum()
    for name, cols, k in (("invariant", slice(0, 2), 0), ("equivariant", slice(2, 4), 1)):
        ev = float(zc[:, cols].square().sum() / total)
        assert out[f"{name}/explained_variance"] == pytest.approx(ev, rel=1e-10)
        assert out[f"subspace{k}/explained_variance"] == pytest.approx(ev, rel=1e-10)
        assert out[f"{name}/effective_rank"] == pytest.approx(effective_rank(z[:, cols]))


def test_orthogonal_subspaces_add_up() -> None:
    torch.manual_seed(0)
    proj = SubspaceProjection(12, subspace_dim=2, parts={"a": 2, "b": 3})
    z = torch.randn(200, 12)
    out = subspace_diagnostics(proj, z)
    for name, ks in (("a", range(2)), ("b", range(2, 5))):
        parts = sum(out[f"subspace{k}/explained_variance"] for k in ks)
        assert out[f"{name}/explained_variance"] == pytest.approx(parts, rel=1e-5)
        assert 1 <= out[f"{name}/effective_rank"] <= 2 * len(ks)
    assert out["a/explained_variance"] + out["b/explained_variance"] <= 1


def test_bad_projection() -> None:
    with pytest.raises(TypeError, match="projection"):
        subspace_diagnostics(torch.nn.Linear(8, 4), torch.randn(10, 8))  # type: ignore[arg-type]
