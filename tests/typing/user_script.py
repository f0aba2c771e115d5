"""A user's script, type-checked with ``mypy --strict`` in CI (``nox -s typecheck``).

It uses the public API the way the docs do; a wrong string option (``precision="fp64"``), a
union return without an overload, or an untyped handle is a mypy error here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import assert_type

from jepa_blocks import (
    MSSA,
    TSSA,
    CodingRate,
    CRATELayer,
    EMATarget,
    RateReductionParts,
    SeqJEPA,
    SIGReg,
    SmallCNN,
    StopGradTarget,
    ToSTBlock,
    coding_rate,
    crate_blocks,
    load_mnist,
    rate_reduction,
    sigreg,
    tost_blocks,
    total_coding_rate,
    transformer_blocks,
    vicreg_variance,
)
from jepa_blocks.linalg import Distributed, Precision
from jepa_blocks.losses import linear_warmup, mse_loss
from jepa_blocks.metrics import EvalConfig, fit_linear_classifier, fit_regressor
from jepa_blocks.train import Callback, LoopState, TrainConfig, fit


def rates(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, RateReductionParts]:
    r: Tensor = coding_rate(z, eps=0.5, precision="float64", form="auto", distributed="none")
    delta: Tensor = rate_reduction(z, labels, num_classes=3)
    parts: RateReductionParts = rate_reduction(z, labels, num_classes=3, return_parts=True)
    return r, delta, parts


def options(z: Tensor, precision: Precision, distributed: Distributed) -> Tensor:
    """String options are ``Literal`` types: a variable typed with the alias passes through."""
    r = coding_rate(z, precision=precision, distributed=distributed, form="nxn")
    r = r + total_coding_rate(z[None], precision="float64", distributed="gather")
    r = r + rate_reduction(z, torch.zeros(len(z), dtype=torch.long), distributed="none")
    r = r + sigreg(z, step=0, grid="half", distributed="auto")
    r = r + vicreg_variance(z, distributed="none") + mse_loss(z, z, reduction="sum")
    CodingRate(precision="float64", form="dxd", distributed="gram")
    return r


def blocks(dim: int) -> list[nn.Module]:
    """One ``heads`` default (4) and ``dim`` first, positional or keyword, everywhere."""
    return [
        MSSA(dim),
        TSSA(dim),
        CRATELayer(dim),
        ToSTBlock(dim, heads=2),
        *crate_blocks(dim, depth=1),
        *tost_blocks(dim, depth=1, causal=True, beyond_max_len="zero"),
        *transformer_blocks(dim=dim, depth=1, activation="gelu"),
    ]


def probes(x: Tensor, y: Tensor) -> tuple[nn.Module, nn.Module, EvalConfig]:
    clf = fit_linear_classifier(x, y, solver="ridge")
    reg = fit_regressor(x, y.float(), kind="linear", solver="lstsq")
    return clf, reg, EvalConfig(classifier="adam", regressor="linear")


def warmup(step: int, steps: Tensor) -> float:
    assert_type(linear_warmup(steps, warmup_steps=10), Tensor)
    return linear_warmup(step, warmup_steps=10)


def data() -> int:
    return len(load_mnist(split="test").images)


def model(steps: int) -> SeqJEPA[EMATarget]:
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


def handles(net: SeqJEPA[EMATarget], optimizer: torch.optim.Optimizer) -> int:
    handle: RemovableHandle = net.attach(optimizer)
    handle.remove()
    assert_type(net.target, EMATarget)
    assert_type(net.target.step, Tensor)
    assert_type(net.target.total_steps, Tensor)
    return int(net.target.step)


def any_target(net: SeqJEPA) -> float | None:
    """A bare ``SeqJEPA`` has a ``Target``."""
    return net.target.update(net.encoder)


def train(net: nn.Module, loader: list[object]) -> int:
    result = fit(net, loader, TrainConfig(epochs=1, warmup_epochs=0), callbacks=[PrintLoss()])
    return result.step


def stopgrad() -> StopGradTarget:
    return StopGradTarget()


def penalty(z: Tensor) -> Tensor:
    reg = SIGReg()
    out: Tensor = reg(z)
    return out + torch.zeros(())
