"""Bad-input table of jepa_blocks.losses (see tests/bad_inputs.py), and the robust cosine."""

from __future__ import annotations

import math

import pytest
import torch

from bad_inputs import Case, run_case
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

LOSSES = {
    "cosine_loss": cosine_loss,
    "mse_loss": mse_loss,
    "smooth_l1_loss": smooth_l1_loss,
    "soft_cross_entropy": soft_cross_entropy,
}
X = torch.randn(4, 3)
P = torch.softmax(torch.randn(4, 3), -1)


def _rows(name, fn):
    t = P if name == "soft_cross_entropy" else X
    return [
        Case(f"{name}-pred-list", lambda: fn([1.0, 2.0], t), TypeError, r"pred must be a torch\.Tensor"),
        Case(f"{name}-pred-int", lambda: fn(torch.ones(4, 3, dtype=torch.long), t), TypeError, "pred must have a floating dtype"),
        Case(f"{name}-target-bool", lambda: fn(X, t > 0), TypeError, "target must have a floating dtype"),
        Case(f"{name}-target-complex", lambda: fn(X, t.to(torch.complex64)), TypeError, "target must be real"),
        Case(f"{name}-scalar", lambda: fn(torch.tensor(1.0), torch.tensor(1.0)), ValueError, r"pred must have at least 1 dimensions"),
        Case(f"{name}-shape-mismatch", lambda: fn(X, torch.randn(4, 5)), ValueError, r"same shape .*\(4, 3\).*\(4, 5\)"),
        Case(f"{name}-d-zero", lambda: fn(torch.randn(4, 0), torch.randn(4, 0)), ValueError, "d >= 1"),
        Case(f"{name}-empty-mean", lambda: fn(torch.randn(0, 3), torch.randn(0, 3)), ValueError, "reduction='mean' needs at least one vector"),
        Case(f"{name}-empty-sum", lambda: fn(torch.randn(0, 3), torch.randn(0, 3), reduction="sum"), None, check=lambda v: float(v) == 0.0),
        Case(f"{name}-reduction-typo", lambda: fn(X, t, reduction="avg"), ValueError, "reduction must be one of"),
        Case(f"{name}-reduction-none-type", lambda: fn(X, t, reduction=None), ValueError, "reduction must be one of"),
    ]  # fmt: skip


def _cos64(p: torch.Tensor, t: torch.Tensor, eps: float) -> float:
    p, t = p.double(), t.double()
    den = p.norm(dim=-1).clamp_min(eps) * t.norm(dim=-1).clamp_min(eps)
    return float(1 - ((p * t).sum(-1) / den).mean())


G = torch.Generator().manual_seed(0)
A, B = torch.randn(4, 16, generator=G), torch.randn(4, 16, generator=G)

CASES: list[Case] = [
    *(row for name, fn in LOSSES.items() for row in _rows(name, fn)),
    # cosine_loss: hyperparameters and huge / tiny norms (float64 reference)
    Case("cosine_loss-eps-zero", lambda: cosine_loss(X, X, eps=0.0), ValueError, "eps must be a finite number > 0"),
    Case("cosine_loss-eps-nan", lambda: cosine_loss(X, X, eps=math.nan), ValueError, "eps must be a finite number > 0"),
    Case("cosine_loss-eps-str", lambda: cosine_loss(X, X, eps="1e-8"), TypeError, "eps must be a real number"),
    Case("cosine_loss-norm-1e20", lambda: cosine_loss(A * 1e20, B * 1e20), None, check=lambda v: abs(float(v) - _cos64(A, B, 1e-8)) < 1e-6),
    Case("cosine_loss-norm-1e37", lambda: cosine_loss(A * 1e37, B * 1e37), None, check=lambda v: abs(float(v) - _cos64(A, B, 1e-8)) < 1e-6),
    Case("cosine_loss-norm-1e-30", lambda: cosine_loss(A * 1e-30, B * 1e-30, eps=1e-44), None, check=lambda v: abs(float(v) - _cos64(A, B, 1e-44)) < 1e-6),
    Case("cosine_loss-norm-1e-40-subnormal", lambda: cosine_loss(A * 1e-40, B * 1e-40, eps=1e-45), None, check=lambda v: abs(float(v) - _cos64(A * 1e-40, B * 1e-40, 1e-45)) < 1e-4),
    Case("cosine_loss-huge-vs-tiny", lambda: cosine_loss(A * 1e25, B * 1e-25, eps=1e-44), None, check=lambda v: abs(float(v) - _cos64(A, B, 1e-44)) < 1e-6),
    Case("cosine_loss-zero-vectors", lambda: cosine_loss(torch.zeros(2, 3), torch.ones(2, 3)), None, check=lambda v: float(v) == 1.0),
    Case("mse_loss-float64-pred-float32-target", lambda: mse_loss(X.double(), X), None, check=lambda v: float(v) == 0.0),
    Case("smooth_l1_loss-beta-negative", lambda: smooth_l1_loss(X, X, beta=-1.0), ValueError, "beta must be a finite number >= 0"),
    Case("smooth_l1_loss-beta-inf", lambda: smooth_l1_loss(X, X, beta=math.inf), ValueError, "beta must be a finite number"),
    Case("soft_cross_entropy-temperature-zero", lambda: soft_cross_entropy(X, P, temperature=0.0), ValueError, "temperature must be a finite number > 0"),
    Case("soft_cross_entropy-temperature-bool", lambda: soft_cross_entropy(X, P, temperature=True), TypeError, "temperature must be a real number"),
    Case("soft_cross_entropy-target-not-probabilities", lambda: soft_cross_entropy(X, X), ValueError, "target must hold probabilities"),
    Case("soft_cross_entropy-target-sums-to-2", lambda: soft_cross_entropy(X, 2 * P), ValueError, "target must hold probabilities"),
    # linear_warmup / regularized_objective
    Case("linear_warmup-step-float", lambda: linear_warmup(1.5, warmup_steps=3), TypeError, "step must be an int or a tensor"),
    Case("linear_warmup-step-bool", lambda: linear_warmup(True, warmup_steps=3), TypeError, "step must be an int or a tensor"),
    Case("linear_warmup-step-bool-tensor", lambda: linear_warmup(torch.tensor(True), warmup_steps=3), TypeError, "step must be an integer or float tensor"),
    Case("linear_warmup-warmup-negative", lambda: linear_warmup(1, warmup_steps=-1), ValueError, "warmup_steps must be an int >= 0"),
    Case("linear_warmup-warmup-float", lambda: linear_warmup(1, warmup_steps=2.5), TypeError, "warmup_steps must be an int"),
    Case("linear_warmup-step-negative", lambda: linear_warmup(-5, warmup_steps=10), None, check=lambda v: v == 0.0),
    Case("regularized_objective-weight-negative", lambda: regularized_objective(X.sum(), X.sum(), weight=-1.0), ValueError, "weight must be a finite number >= 0"),
    Case("regularized_objective-weight-nan", lambda: regularized_objective(X.sum(), X.sum(), weight=math.nan), ValueError, "weight must be a finite number"),
    Case("regularized_objective-rate-float", lambda: regularized_objective(X.sum(), 3.0, weight=1.0), TypeError, "rate must be a torch.Tensor"),
    Case("regularized_objective-loss-int", lambda: regularized_objective(torch.tensor(1), X.sum(), weight=1.0), TypeError, "prediction_loss must have a floating dtype"),
    # module forms
    Case("CosineLoss-eps-negative", lambda: CosineLoss(eps=-1.0), ValueError, "eps must be a finite number > 0"),
    Case("CosineLoss-reduction-typo", lambda: CosineLoss(reduction="batchmean"), ValueError, "reduction must be one of"),
    Case("MSELoss-reduction-bool", lambda: MSELoss(reduction=True), ValueError, "reduction must be one of"),
    Case("SmoothL1Loss-beta-str", lambda: SmoothL1Loss(beta="1"), TypeError, "beta must be a real number"),
    Case("SoftCrossEntropy-temperature-inf", lambda: SoftCrossEntropy(temperature=math.inf), ValueError, "temperature must be a finite number > 0"),
    Case("CosineLoss-call-shape-mismatch", lambda: CosineLoss()(X, torch.randn(3, 4)), ValueError, "same shape"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def test_cosine_robust_path_keeps_ordinary_values_bit_exact_and_gradients_finite():
    """Ordinary vectors take torch's own cosine (bit-identical); huge ones a finite gradient."""
    official = (1 - torch.nn.functional.cosine_similarity(A, B, dim=-1)).mean()
    assert torch.equal(cosine_loss(A, B), official)
    for scale, eps in ((1e25, 1e-8), (1e-35, 1e-45)):
        x = (A * scale).requires_grad_()
        cosine_loss(x, B, eps=eps).backward()
        assert torch.isfinite(x.grad).all()
        ref = (A.double() * scale).requires_grad_()
        p, t = ref, B.double()
        (1 - ((p * t).sum(-1) / (p.norm(dim=-1) * t.norm(dim=-1))).mean()).backward()
        torch.testing.assert_close(x.grad.double(), ref.grad, rtol=1e-4, atol=0)
