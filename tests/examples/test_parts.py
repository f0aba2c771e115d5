"""The recipes' string → part factories: build_model per variant, build_data, make_loader."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from common import RecipeConfig, load_config, variant_names
from jepa_blocks import CenterSharpen, CodingRate, EMATarget, SeqJEPA, StopGradTarget, UnitNormRate
from parts import DataConfig, ModelConfig, build_data, build_model

TINY = (
    "encoder_dim",
    "cnn_width",
    "action_embed_dim",
    "predictor_hidden",
    "depth",
    "heads",
    "mlp_ratio",
)


def _tiny_model_config(**kw) -> ModelConfig:
    base = dict(
        encoder_dim=16, cnn_width=4, action_embed_dim=4, predictor_hidden=16, depth=1, heads=2,
        mlp_ratio=2,
    )  # fmt: skip
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("variant", variant_names())
def test_build_model_per_variant(variant):
    tiny = [f"model.{k}={v}" for k, v in dataclasses.asdict(_tiny_model_config()).items()]
    tiny = [o for o in tiny if o.split("=")[0].split(".")[1] in TINY]
    config = load_config(RecipeConfig, step="step2", preset=None, variant=variant, overrides=tiny)
    model = build_model(
        config.model, in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5
    )
    assert isinstance(model, SeqJEPA)
    target_cls = EMATarget if config.model.target == "ema" else StopGradTarget
    assert isinstance(model.target, target_cls)
    reg = model.regularizer
    reg = reg.rate if isinstance(reg, UnitNormRate) else reg  # rate of L2-normalised samples
    assert isinstance(reg, CodingRate) is (config.model.regularizer != "none")
    assert model.symmetric is config.model.symmetric
    assert isinstance(model.target_transform, CenterSharpen) is config.model.sharpen
    out = model(torch.randn(6, 3, 1, 8, 8), torch.randn(6, 2, 5))
    assert out.z_agg.shape == (6, 20) and out.z.shape == (6, 2, 16)
    assert torch.isfinite(out.loss)


def test_build_model_passes_the_encoder_and_predictor_norm_options():
    from jepa_blocks import SmallCNN

    model = build_model(
        _tiny_model_config(cnn_grid=3, encoder_norm="batch"),
        in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5,
    )  # fmt: skip
    assert isinstance(model.encoder, SmallCNN)
    assert model.encoder.grid == 3 and model.encoder.out_norm == "batch"
    out = model(torch.randn(6, 3, 1, 8, 8), torch.randn(6, 2, 5))
    assert out.z.shape == (6, 2, 16) and torch.isfinite(out.loss)
    default = build_model(
        _tiny_model_config(), in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5
    )
    assert default.encoder.grid == 1 and default.encoder.out_norm == "none"
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in default.predictor.modules())
    no_bn = build_model(
        _tiny_model_config(predictor_norm="none"),
        in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5,
    )  # fmt: skip
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in no_bn.predictor.modules())
    official = build_model(
        _tiny_model_config(last_token_action="zeros", predictor_action="separate"),
        in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5,
    )  # fmt: skip
    assert official.last_token_action == "zeros" and default.last_token_action == "action"
    with pytest.raises(ValueError, match="small-cnn encoder only"):
        build_model(
            ModelConfig(encoder="resnet18", encoder_dim=512, cnn_grid=7),
            in_channels=3, action_dim=9, total_steps=1, steps_per_epoch=1,
        )  # fmt: skip
    with pytest.raises(ValueError, match="must be one of"):
        load_config(RecipeConfig, step="step2", preset=None, overrides=["model.encoder_norm=layer"])


def test_build_model_errors_and_epoch_schedule():
    with pytest.raises(ValueError, match="512"):
        build_model(
            ModelConfig(encoder="resnet18", encoder_dim=128),
            in_channels=3, action_dim=9, total_steps=1, steps_per_epoch=1,
        )  # fmt: skip
    with pytest.raises(ValueError, match="action_dim"):
        build_model(ModelConfig(), in_channels=1, action_dim=0, total_steps=1, steps_per_epoch=1)
    with pytest.raises(TypeError, match="ModelConfig"):
        build_model({}, in_channels=1, action_dim=5, total_steps=1, steps_per_epoch=1)  # type: ignore[arg-type]
    model = build_model(
        _tiny_model_config(ema_schedule="epoch"),
        in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5,
    )  # fmt: skip
    assert model.target.steps_per_epoch == 5


@pytest.mark.parametrize(
    ("views", "action_dim"), [("affine", 5), ("rotation", 2), ("rotation90", 2)]
)
def test_build_data_digits(views, action_dim):
    data = build_data(DataConfig(dataset="digits", views=views, train_subset=50, test_subset=20))
    assert len(data.train) == 50 and len(data.test) == 20
    assert data.views.action_dim == action_dim
    assert data.train.images.shape[1:] == (1, 8, 8)
    with pytest.raises(TypeError, match="DataConfig"):
        build_data({})  # type: ignore[arg-type]
