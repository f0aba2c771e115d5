"""SeqJEPA for any observation: vectors, token encoders with a pool, inferred encoder_dim;
regularizers as rates or penalties; the regularizer's own step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jepa_blocks import SIGReg, StopGradTarget
from jepa_blocks.seq import SeqJEPA, TokenPool

S, A, D = 6, 2, 8  # state size, action size, encoder dimension


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(S, 16), nn.ReLU(), nn.Linear(16, D))
        self.out_dim = D

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Tokens(nn.Module):
    """(N, S) → (N, 3, D) tokens, with no declared dimension (needs a dry run)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(S, 3 * D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).reshape(x.shape[0], 3, D)


def small(encoder: nn.Module, **kw) -> SeqJEPA:
    kw = {"action_dim": A, "action_embed_dim": 4, "predictor_hidden": 16, "depth": 1,
          "heads": 2, "dropout": 0.0, **kw}  # fmt: skip
    return SeqJEPA.from_encoder(encoder, StopGradTarget(), **kw)


def batch(b: int = 5, m: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, m + 1, S, generator=g), torch.randn(b, m, A, generator=g)


def test_vector_observations_and_the_declared_dim():
    torch.manual_seed(0)
    model = small(MLP())  # encoder_dim from the encoder's out_dim
    views, actions = batch()
    out = model(views, actions)
    assert out.z.shape == (5, 3, D) and out.z_agg.shape == (5, D + 4) and out.loss.ndim == 0
    out.loss.backward()
    assert model.encoder.net[0].weight.grad is not None


def test_token_encoder_with_a_pool_and_a_dry_run():
    torch.manual_seed(0)
    enc = Tokens()
    with pytest.raises(ValueError, match="cannot infer encoder_dim"):
        small(enc)
    model = small(enc, obs_shape=(S,), pool=TokenPool("mean"))
    assert model.predictor.out_dim == D and enc.training  # the dry run restored the mode
    views, actions = batch()
    out = model(views, actions)
    pooled = enc(views[:, :3].reshape(15, S)).mean(1).reshape(5, 3, D)
    torch.testing.assert_close(out.z, pooled)
    with pytest.raises(ValueError, match=r"pool=TokenPool"):
        small(enc, encoder_dim=D)(views, actions)  # tokens without a pool


def test_token_pool_kinds():
    t = torch.arange(24.0).reshape(2, 3, 4)
    torch.testing.assert_close(TokenPool("cls")(t), t[:, 0])
    torch.testing.assert_close(TokenPool("max")(t), t[:, 2])
    torch.testing.assert_close(TokenPool()(t), t.mean(1))
    with pytest.raises(ValueError, match="kind"):
        TokenPool("first")  # type: ignore[arg-type]


def test_dimension_mismatch_names_encoder_dim():
    views, actions = batch()
    with pytest.raises(ValueError, match=r"D = 8 features.*encoder_dim"):
        small(MLP(), encoder_dim=10)(views, actions)


def test_penalties_are_added_and_rates_subtracted():
    torch.manual_seed(0)
    views, actions = batch()
    penalty = small(MLP(), regularizer=lambda z: z.square().mean(), regularizer_weight=0.5,
                    regularizer_kind="penalty")  # fmt: skip
    out = penalty(views, actions)
    torch.testing.assert_close(out.loss, out.prediction_loss + 0.5 * out.rate)
    rate = small(MLP(), regularizer=lambda z: z.square().mean(), regularizer_weight=0.5)
    out = rate(views, actions)
    torch.testing.assert_close(out.loss, out.prediction_loss - 0.5 * out.rate)


def test_update_advances_the_regularizer_step():
    reg = SIGReg(num_slices=8)
    model = small(MLP(), regularizer=reg, regularizer_weight=0.1, regularizer_kind="penalty",
                  regularize_on="z")  # fmt: skip
    before = int(reg.step)
    model.update()
    assert int(reg.step) == before + 1 and int(model.step) == 1
