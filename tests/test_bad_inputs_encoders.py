"""Bad-input table of :mod:`jepa_blocks.encoders` and the BatchNorm state under a rejected batch."""

from __future__ import annotations

import pytest
import torch

from bad_inputs import Case, run_case
from jepa_blocks._validation import NonFiniteError
from jepa_blocks.encoders import SmallCNN, resnet18_encoder


def _nan_images(n: int = 2, c: int = 1) -> torch.Tensor:
    x = torch.rand(n, c, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    return x


CASES: list[Case] = [
    Case("SmallCNN-in_channels-zero", lambda: SmallCNN(in_channels=0), match="in_channels"),
    Case("SmallCNN-out_dim-float", lambda: SmallCNN(out_dim=8.0), match="out_dim"),
    Case("SmallCNN-width-bool", lambda: SmallCNN(width=True), match="width"),
    Case("SmallCNN-grid-zero", lambda: SmallCNN(grid=0), match="grid"),
    Case("SmallCNN-out_norm", lambda: SmallCNN(out_norm="layer"), match="out_norm"),
    Case("SmallCNN-x-channels", lambda: SmallCNN()(torch.rand(2, 3, 8, 8)), match="images"),
    Case("SmallCNN-x-3d", lambda: SmallCNN()(torch.rand(1, 8, 8)), match="images"),
    Case(
        "SmallCNN-x-uint8",
        lambda: SmallCNN()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)),
        match="x",
    ),
    Case("SmallCNN-x-list", lambda: SmallCNN()([[0.0]]), match="x"),
    Case(
        "SmallCNN-x-nan-train",
        lambda: SmallCNN().train()(_nan_images()),
        raises=NonFiniteError,
        match="x",
    ),
    Case(
        "SmallCNN-x-inf-train-grid",
        lambda: SmallCNN(grid=2, out_norm="batch").train()(torch.full((2, 1, 8, 8), float("inf"))),
        raises=NonFiniteError,
        match="x",
    ),
    Case(
        "SmallCNN-eval-one-image",
        lambda: SmallCNN(out_dim=4, width=2, out_norm="batch").eval()(torch.rand(1, 1, 8, 8)),
        raises=None,
        check=lambda y: y.shape == (1, 4),
    ),
    Case("resnet18-in_channels-zero", lambda: resnet18_encoder(in_channels=0), match="in_channels"),
    Case("resnet18-cifar_stem-str", lambda: resnet18_encoder(cifar_stem="no"), match="cifar_stem"),
    Case(
        "resnet18-zero_init_residual-int",
        lambda: resnet18_encoder(zero_init_residual=1),
        match="zero_init_residual",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case) -> None:
    run_case(case)


@pytest.mark.parametrize("out_norm", ["none", "batch"])
def test_rejected_batch_leaves_batchnorm_statistics_bit_identical(out_norm: str) -> None:
    enc = SmallCNN(in_channels=1, out_dim=4, width=2, grid=2, out_norm=out_norm).train()
    enc(torch.rand(4, 1, 8, 8))
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(NonFiniteError, match="x"):
        enc(_nan_images(4))
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
