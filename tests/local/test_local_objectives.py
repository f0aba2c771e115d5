"""Block-local objectives against float64 values computed by hand (explicit loops)."""

from __future__ import annotations

import math

import pytest
import torch

from jepa_blocks.local import (
    LocalRateLoss,
    LPLLoss,
    decorrelation_loss,
    local_rate_loss,
    lpl_loss,
    variance_loss,
)


def _z(b: int = 5, t: int = 3, d: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, d, generator=g, dtype=torch.float64)


def _hand_variance(z: torch.Tensor, eps: float) -> float:
    b, t, d = z.shape
    total = 0.0
    for v in range(t):
        for i in range(d):
            col = [float(z[s, v, i]) for s in range(b)]
            mu = sum(col) / b
            var = sum((x - mu) ** 2 for x in col) / (b - 1)
            total += -math.log(var + eps)
    return total / (t * d)


def _hand_decorrelation(z: torch.Tensor) -> float:
    b, t, d = z.shape
    total = 0.0
    for v in range(t):
        mu = [sum(float(z[s, v, i]) for s in range(b)) / b for i in range(d)]
        acc = 0.0
        for i in range(d):
            for j in range(d):
                if i == j:
                    continue
                c = sum(
                    (float(z[s, v, i]) - mu[i]) * (float(z[s, v, j]) - mu[j]) for s in range(b)
                ) / (b - 1)
                acc += c * c
        total += acc / (d * (d - 1))
    return total / t


def _hand_pull(pred: torch.Tensor, target: torch.Tensor) -> float:
    b, p, d = pred.shape
    acc = sum(
        (float(pred[s, q, i]) - float(target[s, q, i])) ** 2
        for s in range(b)
        for q in range(p)
        for i in range(d)
    )
    return acc / (b * p * d)


def test_variance_and_decorrelation_match_hand_values():
    z = _z()
    assert float(variance_loss(z, eps=1e-4)) == pytest.approx(_hand_variance(z, 1e-4), rel=1e-12)
    assert float(decorrelation_loss(z)) == pytest.approx(_hand_decorrelation(z), rel=1e-12)


def test_lpl_default_pairs_and_published_weights():
    z = _z(b=6, t=3, d=4, seed=1)
    parts = lpl_loss(z, return_parts=True)
    pull = _hand_pull(z[:, :-1], z[:, 1:])
    push = _hand_variance(z, 1e-4)
    dec = _hand_decorrelation(z)
    assert float(parts.prediction) == pytest.approx(pull, rel=1e-12)
    assert float(parts.variance) == pytest.approx(push, rel=1e-12)
    assert float(parts.decorrelation) == pytest.approx(dec, rel=1e-12)
    # Published weights: pull 1, push 1, decorrelation 10.
    assert float(parts.loss) == pytest.approx(pull + push + 10 * dec, rel=1e-12)
    assert float(lpl_loss(z)) == pytest.approx(float(parts.loss), rel=1e-15)
    assert float(LPLLoss()(z)) == pytest.approx(float(parts.loss), rel=1e-15)
    w = lpl_loss(z, pull_weight=2.0, push_weight=0.5, decorrelation_weight=3.0, eps=1e-2)
    expected = 2 * pull + 0.5 * _hand_variance(z, 1e-2) + 3 * dec
    assert float(w) == pytest.approx(expected, rel=1e-12)


def test_lpl_explicit_pairs_and_stop_gradient_on_targets():
    z = _z(b=4, t=2, d=3, seed=2).requires_grad_(True)
    pred = _z(b=4, t=2, d=3, seed=3).requires_grad_(True)
    target = _z(b=4, t=2, d=3, seed=4).requires_grad_(True)
    parts = lpl_loss(z, pred=pred, target=target, return_parts=True)
    expected = _hand_pull(pred.detach(), target.detach())
    assert float(parts.prediction.detach()) == pytest.approx(expected, rel=1e-12)
    parts.prediction.backward()
    assert target.grad is None  # the target is detached
    assert pred.grad is not None
    # Default pairs: the last view is only a target, so the pull term sends it no gradient.
    y = _z(b=4, t=3, d=3, seed=5).requires_grad_(True)
    lpl_loss(y, push_weight=0.0, decorrelation_weight=0.0).backward()
    assert torch.all(y.grad[:, -1] == 0) and torch.any(y.grad[:, 0] != 0)


def test_lpl_gradient_is_the_papers_learning_rule():
    """∂L/∂z of ``lpl_loss(pull_weight=½)`` is the paper's rule (Eq. 7 as corrected in the erratum).

    Halvagal & Zenke (2023), erratum (``fmi-basel/latent-predictive-learning``, PR #9): per sample
    b and unit i, ΔW ∝ −∂L/∂z with ∂L/∂z_i^b = (1/MB)[(z_i^b − z_i^b(t−Δt)) − λ1 α/σ_i²
    (z_i^b − z̄_i) + λ2 β Σ_{k≠i} (z_k^b − z̄_k) C_ik], where α = 2B/(B−1) and β = 4B/((B−1)(M−1))
    follow from L_Hebb = −(1/M) Σ_i log(σ_i² + ε) and the corrected L_decorr = Σ_{i≠k} C_ik² /
    (M² − M) (its gradient is the erratum's 4/((B−1)(M²−M)) Σ_k (z_k − z̄_k) C_ik).
    """
    b, m, lam1, lam2, eps = 6, 4, 1.0, 10.0, 1e-4
    z = _z(b, 1, m, seed=7).requires_grad_(True)  # z(t)
    past = _z(b, 1, m, seed=8)  # z(t − Δt)
    loss = lpl_loss(z, pred=z, target=past, pull_weight=0.5, push_weight=lam1,
                    decorrelation_weight=lam2, eps=eps)  # fmt: skip
    (grad,) = torch.autograd.grad(loss, z)
    x = [[float(z.detach()[s, 0, i]) for i in range(m)] for s in range(b)]
    mu = [sum(x[s][i] for s in range(b)) / b for i in range(m)]
    cov = [
        [sum((x[s][i] - mu[i]) * (x[s][k] - mu[k]) for s in range(b)) / (b - 1) for k in range(m)]
        for i in range(m)
    ]
    alpha, beta = 2 * b / (b - 1), 4 * b / ((b - 1) * (m - 1))
    for s in range(b):
        for i in range(m):
            rule = (
                (x[s][i] - float(past[s, 0, i]))
                - lam1 * alpha / (cov[i][i] + eps) * (x[s][i] - mu[i])
                + lam2 * beta * sum((x[s][k] - mu[k]) * cov[i][k] for k in range(m) if k != i)
            ) / (m * b)
            assert float(grad[s, 0, i]) == pytest.approx(rule, rel=1e-10, abs=1e-14)


def test_lpl_without_stop_gradient_is_the_official_code_form():
    """``stop_gradient=False``: the official step, ``mse_loss(z1, z2)`` with gradient to both views,
    ``½(hebb(z1) + hebb(z2))``, ``10 · ½(decorr(z1) + decorr(z2))``."""
    z = _z(b=6, t=2, d=4, seed=9).requires_grad_(True)
    zd = z.detach()
    expected = _hand_pull(zd[:, :1], zd[:, 1:]) + _hand_variance(zd, 1e-4)
    expected += 10 * _hand_decorrelation(zd)
    assert float(lpl_loss(zd, stop_gradient=False)) == pytest.approx(expected, rel=1e-12)
    assert float(LPLLoss(stop_gradient=False)(zd)) == pytest.approx(expected, rel=1e-12)
    pull = lpl_loss(z, stop_gradient=False, push_weight=0.0, decorrelation_weight=0.0)
    (grad,) = torch.autograd.grad(pull, z)
    diff = 2 * (zd[:, 0] - zd[:, 1]) / (6 * 4)  # ∂ mean((z1 − z2)²) / ∂z1
    torch.testing.assert_close(grad[:, 0], diff, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad[:, 1], -diff, rtol=1e-12, atol=0)
    with pytest.raises(TypeError, match="stop_gradient"):
        LPLLoss(stop_gradient=0)  # type: ignore[arg-type]


def test_lpl_single_view_has_zero_prediction_term():
    z = _z(b=5, t=1, d=3)
    parts = lpl_loss(z, return_parts=True)
    assert float(parts.prediction) == 0.0
    assert float(parts.loss) == pytest.approx(
        _hand_variance(z, 1e-4) + 10 * _hand_decorrelation(z), rel=1e-12
    )


def test_local_rate_loss_matches_hand_values():
    z = _z(b=6, t=3, d=4, seed=6)
    eps, lam = 0.5, 0.1
    parts = local_rate_loss(z, rate_weight=lam, eps=eps, return_parts=True)
    b, t, d = z.shape
    cos = []
    for s in range(b):
        for q in range(t - 1):
            u, v = z[s, q], z[s, q + 1]
            cos.append(1.0 - float(u @ v) / (float(u.norm()) * float(v.norm())))
    pull = sum(cos) / len(cos)
    rates = []
    for q in range(t):
        zn = z[:, q] / z[:, q].norm(dim=-1, keepdim=True)
        m = torch.eye(d, dtype=torch.float64) + d / (b * eps**2) * zn.T @ zn
        rates.append(0.5 * float(torch.logdet(m)))
    rate = sum(rates) / t
    assert float(parts.prediction) == pytest.approx(pull, rel=1e-10)
    assert float(parts.rate) == pytest.approx(rate, rel=1e-10)
    assert float(parts.loss) == pytest.approx(pull - lam * rate, rel=1e-10)
    module = LocalRateLoss(rate_weight=lam, eps=eps)
    assert float(module(z)) == pytest.approx(float(parts.loss), rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"pull_weight": -1.0}, ValueError, "pull_weight"),
        ({"decorrelation_weight": float("nan")}, ValueError, "decorrelation_weight"),
        ({"eps": 0.0}, ValueError, "eps"),
        ({"push_weight": "1"}, TypeError, "push_weight"),
    ],
)
def test_lpl_rejects_bad_hyperparameters(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lpl_loss(_z(), **kwargs)
    with pytest.raises(exc, match=match):
        LPLLoss(**kwargs)


def test_objectives_reject_bad_inputs():
    with pytest.raises(ValueError, match="B >= 2"):
        lpl_loss(torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match=r"\(B, T, d\)"):
        lpl_loss(torch.randn(4, 3))
    with pytest.raises(TypeError, match="floating"):
        lpl_loss(torch.ones(4, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="both pred and target"):
        lpl_loss(torch.randn(4, 3, 2), pred=torch.randn(4, 2, 2))
    with pytest.raises(ValueError, match="same shape"):
        local_rate_loss(
            torch.randn(4, 3, 2), pred=torch.randn(4, 2, 2), target=torch.randn(4, 1, 2)
        )
    with pytest.raises(ValueError, match="rate_weight"):
        LocalRateLoss(rate_weight=-0.1)
    with pytest.raises(TypeError, match="normalize"):
        LocalRateLoss(normalize=1)  # type: ignore[arg-type]


def test_half_precision_inputs_give_float32_losses():
    z = torch.randn(8, 3, 4, dtype=torch.bfloat16)
    assert lpl_loss(z).dtype == torch.float32
    assert local_rate_loss(z).dtype == torch.float32


def test_modules_pass_their_weights_and_show_them():
    z, pred, target = _z(6, 4, 3), _z(6, 2, 3, seed=1), _z(6, 2, 3, seed=2)
    lpl = LPLLoss(pull_weight=0.5, push_weight=2.0, decorrelation_weight=3.0, eps=1e-3)
    expected = lpl_loss(z, pred=pred, target=target, pull_weight=0.5, push_weight=2.0,
                        decorrelation_weight=3.0, eps=1e-3, return_parts=True)  # fmt: skip
    assert lpl(z, pred=pred, target=target, return_parts=True) == expected
    assert repr(lpl) == (
        "LPLLoss(pull_weight=0.5, push_weight=2.0, decorrelation_weight=3.0, eps=0.001, "
        "stop_gradient=True)"
    )
    rate = LocalRateLoss(pull_weight=0.5, rate_weight=0.1, eps=0.4, normalize=False)
    expected_rate = local_rate_loss(z, pull_weight=0.5, rate_weight=0.1, eps=0.4, normalize=False)
    assert torch.equal(rate(z), expected_rate)
    assert repr(rate) == "LocalRateLoss(pull_weight=0.5, rate_weight=0.1, eps=0.4, normalize=False)"
