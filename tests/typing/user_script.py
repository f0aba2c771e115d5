"""A user's script, type-checked with ``mypy --strict`` in CI (``nox -s typecheck``).

It uses the public API the way the docs do; a wrong string option (``precision="fp64"``), a
union return without an overload, or an untyped handle is a mypy error here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jepa_blocks import (
    CodingRate,
    EMATarget,
    RateReductionParts,
    SeqJEPA,
    SIGReg,
    SmallCNN,
    StopGradTarget,
    coding_rate,
    rate_reduction,
)
from jepa_blocks.train import Callback, LoopState, TrainConfig, fit


def rates(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, RateReductionParts]:
    r: Tensor = coding_rate(z, eps=0.5, precision="float64", form="auto", distributed="none")
    delta: Tensor = rate_reduction(z, labels, num_classes=3)
    parts: RateReductionParts = rate_reduction(z, labels, num_classes=3, return_parts=True)
    return r, delta, parts


def model(steps: int) -> SeqJEPA:
    encoder = SmallCNN(in_channels=1, out_dim=32)
    target = EMATarget(encoder, total_steps=steps)
    return SeqJEPA.from_encoder(
        encoder,
        target,
        encoder_dim=32,
        action_dim=5,
        regularizer=CodingRate(eps=0.5),
        regularizer_weight=0.001,
    )


class PrintLoss(Callback):
    def after_step(self, state: LoopState, batch: object, out: object) -> dict[str, float]:
        return {"step_seen": float(state.step)}


def train(net: nn.Module, loader: list[object]) -> int:
    result = fit(net, loader, TrainConfig(epochs=1, warmup_epochs=0), callbacks=[PrintLoss()])
    return result.step


def stopgrad() -> StopGradTarget:
    return StopGradTarget()


def penalty(z: Tensor) -> Tensor:
    reg = SIGReg()
    out: Tensor = reg(z)
    return out + torch.zeros(())
