"""Bad-input table of jepa_blocks.targets (see tests/bad_inputs.py), and rejected calls leave the
EMA copy and the DINO centre bit-identical."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from bad_inputs import Case, run_case
from jepa_blocks._validation import NonFiniteError
from jepa_blocks.targets import (
    CenterSharpen,
    EMATarget,
    StopGradTarget,
    center_sharpen,
    cosine_momentum,
    ema_update_,
    epoch_cosine_momentum,
    updated_center,
)


def net(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).to(dtype)


def ema(**kw) -> EMATarget:
    return EMATarget(net(), total_steps=kw.pop("total_steps", 10), **kw)


def trained_center() -> CenterSharpen:
    cs = CenterSharpen(3)
    cs(torch.randn(5, 3))
    return cs


Z, C = torch.randn(5, 3), torch.zeros(3)

CASES: list[Case] = [
    # schedules
    Case("cosine_momentum-step-negative", lambda: cosine_momentum(-1, 10), ValueError, "step must be an int >= 0"),
    Case("cosine_momentum-step-float", lambda: cosine_momentum(1.5, 10), TypeError, "step must be an int"),
    Case("cosine_momentum-total-zero", lambda: cosine_momentum(0, 0), ValueError, "total_steps must be an int >= 1"),
    Case("cosine_momentum-base-above-1", lambda: cosine_momentum(0, 10, base=1.5), ValueError, r"base must be in \[0, 1\]"),
    Case("cosine_momentum-final-nan", lambda: cosine_momentum(0, 10, final=math.nan), ValueError, r"final must be in \[0, 1\]"),
    Case("cosine_momentum-base-str", lambda: cosine_momentum(0, 10, base="0.9"), TypeError, "base must be a real number"),
    Case("cosine_momentum-step-past-end", lambda: cosine_momentum(50, 10), None, check=lambda v: v == 1.0),
    Case("epoch_cosine_momentum-epochs-zero", lambda: epoch_cosine_momentum(0, steps_per_epoch=2, total_epochs=0), ValueError, "total_epochs must be an int >= 1"),
    Case("epoch_cosine_momentum-epochs-float", lambda: epoch_cosine_momentum(0, steps_per_epoch=2, total_epochs=2.0), TypeError, "total_epochs must be an int"),
    Case("epoch_cosine_momentum-spe-bool", lambda: epoch_cosine_momentum(0, steps_per_epoch=True, total_epochs=2), TypeError, "steps_per_epoch must be an int"),
    # ema_update_
    Case("ema_update_-momentum-negative", lambda: ema_update_([torch.zeros(2)], [torch.ones(2)], -0.1), ValueError, r"momentum must be in \[0, 1\]"),
    Case("ema_update_-count", lambda: ema_update_([torch.zeros(2)], [], 0.5), ValueError, "same number of tensors"),
    Case("ema_update_-shape", lambda: ema_update_([torch.zeros(2)], [torch.zeros(3)], 0.5), ValueError, r"same shape and dtype, got \(2,\)"),
    Case("ema_update_-dtype", lambda: ema_update_([torch.zeros(2)], [torch.zeros(2, dtype=torch.float64)], 0.5), ValueError, "torch.float32 and .*torch.float64"),
    Case("ema_update_-integer", lambda: ema_update_([torch.zeros(2, dtype=torch.long)], [torch.ones(2, dtype=torch.long)], 0.5), TypeError, "must be floating-point"),
    Case("ema_update_-not-tensors", lambda: ema_update_([torch.zeros(2)], [[0.0, 1.0]], 0.5), TypeError, "must be tensors"),
    # EMATarget
    Case("EMATarget-encoder-function", lambda: EMATarget(lambda x: x, total_steps=10), TypeError, r"encoder must be an nn\.Module"),
    Case("EMATarget-total-zero", lambda: ema(total_steps=0), ValueError, "total_steps must be an int >= 1"),
    Case("EMATarget-base-above-1", lambda: ema(base_momentum=1.2), ValueError, r"base_momentum must be in \[0, 1\]"),
    Case("EMATarget-final-negative", lambda: ema(final_momentum=-0.5), ValueError, r"final_momentum must be in \[0, 1\]"),
    Case("EMATarget-spe-not-divisor", lambda: ema(total_steps=10, steps_per_epoch=3), ValueError, "multiple of steps_per_epoch"),
    Case("EMATarget-buffers-typo", lambda: ema(buffers="average"), ValueError, "buffers must be one of"),
    Case("EMATarget-update-dtype", lambda: ema().update(net(torch.float64)), ValueError, r"parameters\[0\] must have the same shape and dtype.*float32.*float64"),
    Case("EMATarget-update-architecture", lambda: ema().update(nn.Linear(3, 4)), ValueError, "same number of parameters"),
    Case("EMATarget-update-buffers-copy", lambda: ema(buffers="copy").update(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))), ValueError, "same number of buffers"),
    Case("EMATarget-update-string", lambda: ema().update("encoder"), TypeError, r"online must be an nn\.Module"),
    Case("EMATarget-update-step-float", lambda: ema().update(net(), step=0.0), TypeError, "step must be an int"),
    Case("StopGradTarget-online-not-callable", lambda: StopGradTarget()(Z, "encoder"), TypeError, "online must be the online encoder"),
    # DINO centring
    Case("center_sharpen-temperature-zero", lambda: center_sharpen(Z, C, temperature=0.0), ValueError, "temperature must be a finite number > 0"),
    Case("center_sharpen-z-list", lambda: center_sharpen([1.0, 2.0], C), TypeError, r"z must be a torch\.Tensor"),
    Case("center_sharpen-z-int", lambda: center_sharpen(torch.ones(5, 3, dtype=torch.long), C), TypeError, "z must have a floating dtype"),
    Case("center_sharpen-center-shape", lambda: center_sharpen(Z, torch.zeros(4)), ValueError, r"center must have shape \(d,\)"),
    Case("updated_center-empty-batch", lambda: updated_center(C, torch.randn(0, 3)), ValueError, r"n >= 1"),
    Case("updated_center-momentum-above-1", lambda: updated_center(C, Z, momentum=2.0), ValueError, r"momentum must be in \[0, 1\]"),
    Case("updated_center-center-int", lambda: updated_center(torch.zeros(3, dtype=torch.long), Z), TypeError, "center must have a floating dtype"),
    Case("updated_center-z-1d", lambda: updated_center(C, torch.randn(3)), ValueError, "z must have at least 2 dimensions"),
    Case("CenterSharpen-dim-zero", lambda: CenterSharpen(0), ValueError, "dim must be an int >= 1"),
    Case("CenterSharpen-dim-float", lambda: CenterSharpen(3.0), TypeError, "dim must be an int"),
    Case("CenterSharpen-momentum-str", lambda: CenterSharpen(3, momentum="0.9"), TypeError, "momentum must be a real number"),
    Case("CenterSharpen-temperature-negative", lambda: CenterSharpen(3, temperature=-1.0), ValueError, "temperature must be a finite number > 0"),
    Case("CenterSharpen-empty-batch", lambda: CenterSharpen(3)(torch.randn(0, 3)), ValueError, r"n >= 1"),
    Case("CenterSharpen-wrong-dim", lambda: CenterSharpen(3)(torch.randn(5, 4)), ValueError, r"z must have shape \(\.\.\., n, 3\)"),
    Case("CenterSharpen-nan-batch", lambda: CenterSharpen(3)(torch.full((5, 3), math.nan)), NonFiniteError, "z must be finite"),
    Case("CenterSharpen-empty-eval", lambda: CenterSharpen(3).eval()(torch.randn(0, 3)), None, check=lambda v: v.shape == (0, 3)),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_same(before: dict[str, torch.Tensor], module: nn.Module) -> None:
    after = module.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


@pytest.mark.parametrize("buffers", ["own", "copy", "ema"])
def test_rejected_ema_update_changes_nothing(buffers):
    """A mismatched online encoder (dtype, buffers) raises before any parameter or the counter
    moves: the target copy stays bit-identical."""
    target = EMATarget(net(), total_steps=10, buffers=buffers)
    online = net()
    with torch.no_grad():
        online[0].weight.add_(1.0)
    target.update(online)
    before = _state(target)
    bad = copy.deepcopy(online).double()
    with pytest.raises(ValueError, match="dtype"):
        target.update(bad)
    if buffers != "own":
        odd = copy.deepcopy(online)
        odd[1].running_mean = torch.zeros(5)  # a buffer of another shape (parameters fine)
        with pytest.raises(ValueError, match=r"buffers\[0\]"):
            target.update(odd)
    _assert_same(before, target)
    assert target.momentum == target.momentum_at(1)


def test_rejected_center_sharpen_batches_leave_the_centre_unchanged():
    cs = trained_center()
    before = _state(cs)
    for bad in (torch.randn(0, 3), torch.full((4, 3), math.inf), torch.randn(4, 5)):
        with pytest.raises(ValueError):
            cs(bad)
    _assert_same(before, cs)
    assert torch.isfinite(cs.center).all()
