"""EWC and SI penalties against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jepa_blocks.streaming import EWC, SI


class Scalar(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([value]))
        self.frozen = nn.Parameter(torch.tensor([5.0]), requires_grad=False)


def _linear() -> nn.Linear:
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
        lin.bias.copy_(torch.tensor([0.5]))
    return lin


def _set_grads(lin: nn.Linear, w: list[float], b: float) -> None:
    lin.weight.grad = torch.tensor([w])
    lin.bias.grad = torch.tensor([b])


def test_ewc_penalty_and_gradient_by_hand():
    lin = _linear()
    ewc = EWC(lin, weight=2.0)
    assert float(ewc.penalty().detach()) == 0.0 and not ewc.penalty().requires_grad
    _set_grads(lin, [1.0, 0.0], 2.0)
    ewc.observe()
    _set_grads(lin, [3.0, 4.0], 0.0)
    ewc.observe()
    ewc.consolidate()  # F_w = [(1+9)/2, (0+16)/2] = [5, 8], F_b = (4+0)/2 = 2; anchor = θ
    assert torch.allclose(ewc.importance["weight"], torch.tensor([[5.0, 8.0]]))
    assert torch.allclose(ewc.importance["bias"], torch.tensor([2.0]))
    assert float(ewc.penalty().detach()) == 0.0  # at the anchor
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2.0, 2.0]]))
        lin.bias.copy_(torch.tensor([0.0]))
    # ½·λ·Σ F (θ−θ*)² = ½·2·(5·1² + 8·0² + 2·0.5²) = 5.5
    lin.zero_grad()
    pen = ewc.penalty()
    assert float(pen.detach()) == pytest.approx(5.5)
    pen.backward()  # ∂/∂θ = λ F (θ − θ*)
    assert torch.allclose(lin.weight.grad, torch.tensor([[10.0, 0.0]]))
    assert torch.allclose(lin.bias.grad, torch.tensor([-2.0]))


def test_online_ewc_decays_the_old_fisher():
    lin = _linear()
    ewc = EWC(lin, weight=1.0, decay=0.5)
    _set_grads(lin, [2.0, 0.0], 0.0)
    ewc.observe()
    ewc.consolidate()  # F_w = [4, 0]
    _set_grads(lin, [0.0, 2.0], 1.0)
    ewc.observe()
    ewc.consolidate()  # F = 0.5·[4, 0] + [0, 4] = [2, 4]; F_b = 0.5·0 + 1
    assert torch.allclose(ewc.importance["weight"], torch.tensor([[2.0, 4.0]]))
    assert torch.allclose(ewc.importance["bias"], torch.tensor([1.0]))
    assert ewc.consolidations == 2


def test_si_path_integral_by_hand():
    m = Scalar(1.0)
    si = SI(m, weight=3.0, damping=0.5)
    assert list(si.params) == ["theta"]  # frozen parameters are not regularised
    for grad, new in ((2.0, 0.5), (1.0, 0.0)):  # two "optimizer steps"
        m.theta.grad = torch.tensor([grad])
        si.observe()
        with torch.no_grad():
            m.theta.copy_(torch.tensor([new]))
        si.after_step()
    # ω = −2·(0.5−1) − 1·(0−0.5) = 1.5
    assert float(si.omega["theta"]) == pytest.approx(1.5)
    si.consolidate()  # Ω = ω / (Δ² + ξ) = 1.5 / ((0−1)² + 0.5) = 1; anchor 0
    assert float(si.importance["theta"]) == pytest.approx(1.0)
    assert float(si.omega["theta"]) == 0.0
    with torch.no_grad():
        m.theta.copy_(torch.tensor([2.0]))
    assert float(si.penalty().detach()) == pytest.approx(3.0 * 1.0 * 2.0**2)  # c·Ω·(θ−θ*)² = 12


def test_si_clamps_negative_path_integrals():
    m = Scalar(0.0)
    si = SI(m, weight=1.0, damping=1.0)
    m.theta.grad = torch.tensor([-1.0])  # the step goes uphill: ω = −(−1)·(−1) = −1
    si.observe()
    with torch.no_grad():
        m.theta.copy_(torch.tensor([-1.0]))
    si.after_step()
    si.consolidate()
    assert float(si.importance["theta"]) == 0.0


@pytest.mark.parametrize("cls", [EWC, SI])
def test_state_dict_round_trip(cls):
    lin = _linear()
    reg = cls(lin, weight=1.5)
    _set_grads(lin, [1.0, -1.0], 0.5)
    reg.observe()
    with torch.no_grad():
        lin.weight.add_(0.1)
    reg.after_step()
    reg.consolidate()
    with torch.no_grad():
        lin.weight.add_(0.3)
    other = cls(_linear(), weight=0.0)
    other.load_state_dict(reg.state_dict())
    other.params = reg.params  # same parameters
    assert float(other.penalty().detach()) == pytest.approx(float(reg.penalty().detach()))
    assert float(reg.penalty().detach()) > 0
    assert reg.to("cpu") is reg and float(reg.penalty().detach()) > 0
    with pytest.raises(ValueError, match="cannot load"):
        (SI if cls is EWC else EWC)(lin, weight=1.0).load_state_dict(reg.state_dict())


def test_validation():
    with pytest.raises(TypeError, match="module"):
        EWC("encoder", weight=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight"):
        EWC(_linear(), weight=-1.0)
    with pytest.raises(ValueError, match="decay"):
        EWC(_linear(), weight=1.0, decay=1.5)
    with pytest.raises(ValueError, match="damping"):
        SI(_linear(), weight=1.0, damping=0.0)
    with pytest.raises(ValueError, match="no parameters"):
        SI(nn.Linear(2, 2).requires_grad_(False), weight=1.0)
