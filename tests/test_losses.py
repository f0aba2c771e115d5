"""Tests for jepa_blocks.losses against straightforward references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from jepa_blocks.losses import (
    CosineLoss,
    MSELoss,
    SmoothL1Loss,
    SoftCrossEntropy,
    cosine_loss,
    linear_warmup,
    mse_loss,
    regularized_objective,
    smooth_l1_loss,
    soft_cross_entropy,
)

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


def _pair(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(shape, generator=g, dtype=torch.float64),
        torch.randn(shape, generator=g, dtype=torch.float64),
    )


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000))
def test_cosine_loss_matches_per_vector_formula(shape, seed):
    pred, target = _pair(shape, seed)
    flat_p, flat_t = pred.reshape(-1, shape[-1]), target.reshape(-1, shape[-1])
    cos = [
        float(p @ t) / max(float(p.norm()) * float(t.norm()), 1e-300)
        for p, t in zip(flat_p, flat_t)
    ]
    expected = 1.0 - sum(cos) / len(cos)
    assert math.isclose(float(cosine_loss(pred, target)), expected, rel_tol=1e-10, abs_tol=1e-12)
    per = cosine_loss(pred, target, reduction="none")
    assert per.shape == shape[:-1]
    torch.testing.assert_close(per.reshape(-1), 1.0 - torch.tensor(cos, dtype=torch.float64))
    torch.testing.assert_close(cosine_loss(pred, target, reduction="sum"), per.sum())


def test_cosine_loss_matches_official_expression_and_limits():
    pred, target = _pair((16, 32), 0)
    official = 1 - torch.nn.CosineSimilarity(dim=1)(pred, target).mean()
    torch.testing.assert_close(cosine_loss(pred, target), official)
    torch.testing.assert_close(
        cosine_loss(3.0 * target, target), torch.tensor(0.0, dtype=torch.float64)
    )
    torch.testing.assert_close(cosine_loss(-target, target), torch.tensor(2.0, dtype=torch.float64))
    # Invariant to the scale of the prediction.
    torch.testing.assert_close(cosine_loss(7.5 * pred, target), cosine_loss(pred, target))


def test_cosine_loss_gradcheck():
    pred, target = _pair((5, 6), 1)
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: cosine_loss(p, target), (pred,))


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 10_000), beta=st.floats(0.0, 3.0))
def test_mse_and_smooth_l1_match_torch(shape, seed, beta):
    pred, target = _pair(shape, seed)
    torch.testing.assert_close(mse_loss(pred, target), F.mse_loss(pred, target))
    torch.testing.assert_close(
        smooth_l1_loss(pred, target, beta=beta), F.smooth_l1_loss(pred, target, beta=beta)
    )
    per = mse_loss(pred, target, reduction="none")
    assert per.shape == shape[:-1]
    torch.testing.assert_close(per, ((pred - target) ** 2).mean(-1))


def test_smooth_l1_piecewise_values():
    pred = torch.tensor([[0.5, 3.0]], dtype=torch.float64)
    target = torch.zeros(1, 2, dtype=torch.float64)
    # beta = 1: 0.5**2 / 2 = 0.125 and 3 - 0.5 = 2.5 -> mean 1.3125
    assert float(smooth_l1_loss(pred, target, beta=1.0)) == pytest.approx(1.3125)
    assert float(smooth_l1_loss(pred, target, beta=0.0)) == pytest.approx(1.75)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6), d=st.integers(2, 8), seed=st.integers(0, 10_000), t=st.floats(0.05, 2.0)
)
def test_soft_cross_entropy_matches_torch_cross_entropy(n, d, seed, t):
    pred, logits = _pair((n, d), seed)
    probs = torch.softmax(logits, dim=-1)
    expected = F.cross_entropy(pred / t, probs)
    torch.testing.assert_close(soft_cross_entropy(pred, probs, temperature=t), expected)
    naive = -(probs * torch.log(torch.exp(pred / t) / torch.exp(pred / t).sum(-1, keepdim=True)))
    torch.testing.assert_close(
        soft_cross_entropy(pred, probs, temperature=t, reduction="none"), naive.sum(-1)
    )


def test_modules_equal_functions():
    pred, target = _pair((4, 3, 8), 2)
    probs = torch.softmax(target, -1)
    assert torch.equal(CosineLoss()(pred, target), cosine_loss(pred, target))
    assert torch.equal(
        MSELoss(reduction="sum")(pred, target), mse_loss(pred, target, reduction="sum")
    )
    assert torch.equal(SmoothL1Loss(beta=0.3)(pred, target), smooth_l1_loss(pred, target, beta=0.3))
    assert torch.equal(
        SoftCrossEntropy(temperature=0.2)(pred, probs),
        soft_cross_entropy(pred, probs, temperature=0.2),
    )


@pytest.mark.parametrize("fn", [cosine_loss, mse_loss, smooth_l1_loss, soft_cross_entropy])
def test_bad_inputs_raise(fn):
    with pytest.raises(ValueError, match=r"same shape .*\(4, 3\).*\(4, 5\)"):
        fn(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match="reduction"):
        fn(torch.randn(4, 3), torch.randn(4, 3), reduction="avg")
    with pytest.raises(TypeError, match=r"pred must be a torch\.Tensor"):
        fn([1.0, 2.0], torch.randn(2))


def test_bad_hyperparameters_raise():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="eps"):
        cosine_loss(x, x, eps=0.0)
    with pytest.raises(ValueError, match="beta"):
        smooth_l1_loss(x, x, beta=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        SoftCrossEntropy(temperature=0.0)
    with pytest.raises(ValueError, match="reduction"):
        CosineLoss(reduction="batchmean")  # type: ignore[arg-type]


def test_linear_warmup_values():
    assert linear_warmup(0, warmup_steps=10) == 0.0
    assert linear_warmup(5, warmup_steps=10) == 0.5
    assert linear_warmup(10, warmup_steps=10) == 1.0
    assert linear_warmup(25, warmup_steps=10) == 1.0
    assert linear_warmup(0, warmup_steps=0) == 1.0
    steps = torch.arange(0, 30)
    expected = torch.tensor([min(1.0, s / 12) for s in range(30)], dtype=torch.float32)
    torch.testing.assert_close(linear_warmup(steps, warmup_steps=12), expected)
    torch.testing.assert_close(linear_warmup(torch.tensor(3), warmup_steps=0), torch.tensor(1.0))
    with pytest.raises(ValueError, match="warmup_steps"):
        linear_warmup(1, warmup_steps=-1)
    with pytest.raises(TypeError, match="step"):
        linear_warmup(1.5, warmup_steps=3)  # type: ignore[arg-type]


def test_regularized_objective_value_and_gradient():
    pred_loss = torch.tensor(0.7, requires_grad=True)
    rate = torch.tensor(3.0, requires_grad=True)
    out = regularized_objective(pred_loss, rate, weight=0.25)
    assert float(out.detach()) == pytest.approx(0.7 - 0.75)
    out.backward()
    assert float(rate.grad) == pytest.approx(-0.25)
    assert float(pred_loss.grad) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="weight"):
        regularized_objective(pred_loss, rate, weight=-1.0)


@pytest.mark.parametrize("fn", [cosine_loss, mse_loss, smooth_l1_loss, soft_cross_entropy])
def test_low_precision_inputs_give_float32_losses(fn):
    pred, target = (x.float() for x in _pair((8, 16), 3))
    target = torch.softmax(target, -1)
    lo_p, lo_t = pred.bfloat16(), target.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(lo_p, lo_t)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, fn(lo_p.float(), lo_t.float()))


def test_modules_repr_and_stored_options():
    """The module forms show their options and pass the current attribute values on."""
    assert repr(CosineLoss()) == "CosineLoss(eps=1e-08, reduction='mean')"
    assert repr(MSELoss(reduction="none")) == "MSELoss(reduction='none')"
    assert repr(SmoothL1Loss(beta=0)) == "SmoothL1Loss(beta=0.0, reduction='mean')"
    assert repr(SoftCrossEntropy()) == "SoftCrossEntropy(temperature=0.1, reduction='mean')"
    pred, target = _pair((4, 8), 3)
    loss = SmoothL1Loss(beta=0.3)
    loss.beta, loss.reduction = 2.0, "none"
    assert torch.equal(loss(pred, target), smooth_l1_loss(pred, target, beta=2.0, reduction="none"))
    with pytest.raises(ValueError, match="reduction must be one of"):
        CosineLoss(eps=0.0, reduction="avg")  # reduction is checked first
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0"):
        CosineLoss(eps=0.0)
    with pytest.raises(ValueError, match=r"beta must be a finite number >= 0"):
        SmoothL1Loss(beta=-1.0)
    with pytest.raises(TypeError, match="temperature must be a real number"):
        SoftCrossEntropy(temperature=True)
