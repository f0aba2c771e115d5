"""EMATarget's misuse warnings: trained without updates, updated past its schedule."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import pytest
import torch
from torch import nn

from jepa_blocks import ActionEncoder, Aggregator, EMATarget, Predictor, SeqJEPA, transformer_blocks
from jepa_blocks.train import TrainConfig, fit


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))


def _ema_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "EMATarget" in str(w.message)]


def test_training_forwards_without_update_warn_once():
    online = _net()
    target = EMATarget(online, total_steps=100)
    x = torch.randn(6, 4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(EMATarget.WARN_AFTER_FORWARDS - 1):
            target(x)
    assert _ema_warnings(record) == []
    with pytest.warns(UserWarning, match=r"without update\(\).*model.attach"):
        target(x)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2 * EMATarget.WARN_AFTER_FORWARDS):
            target(x)
    assert _ema_warnings(record) == []  # once


def test_eval_forwards_and_updated_targets_do_not_warn():
    online = _net()
    target = EMATarget(online, total_steps=100)
    x = torch.randn(6, 4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        target.eval()
        for _ in range(2 * EMATarget.WARN_AFTER_FORWARDS):
            target(x)
        target.train()
        for _ in range(2 * EMATarget.WARN_AFTER_FORWARDS):
            target(x)
            target.update(online)
    assert _ema_warnings(record) == []


def test_update_past_total_steps_warns_once_and_holds_final_momentum():
    online = _net()
    target = EMATarget(online, total_steps=3, base_momentum=0.9, final_momentum=0.99)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        taus = [target.update(online) for _ in range(3)]
    assert _ema_warnings(record) == [] and taus[-1] < 0.99
    with pytest.warns(UserWarning, match=r"past total_steps=3 \(update 4\).*0\.99"):
        assert target.update(online) == pytest.approx(0.99)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert target.update(online) == pytest.approx(0.99)
    assert _ema_warnings(record) == []


class _Batch(NamedTuple):
    views: torch.Tensor
    actions: torch.Tensor


class _Loader:
    def __init__(self, n_batches: int) -> None:
        self.n_batches = n_batches

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(self.n_batches):
            yield _Batch(torch.randn(4, 3, 6, generator=g), torch.randn(4, 2, 2, generator=g))


def test_fit_raises_no_ema_warning(tmp_path):
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(6, 8))
    steps = 2 * 3
    model = SeqJEPA(
        encoder=enc,
        target=EMATarget(enc, total_steps=steps),
        action_encoder=ActionEncoder(action_dim=2, embed_dim=4),
        aggregator=Aggregator(dim=12, blocks=transformer_blocks(12, depth=1, heads=2)),
        predictor=Predictor(in_dim=16, hidden=16, out_dim=8),
    )
    config = TrainConfig(
        epochs=2, warmup_epochs=0, progress=False, device="cpu", out_dir=str(tmp_path)
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fit(model, _Loader(3), config)
    assert result.step == steps and int(model.target.step) == steps
    assert _ema_warnings(record) == []
