"""The experiment layer of the examples: configs, variants, model/data builders, probes, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jepa_blocks import CenterSharpen, CodingRate, EMATarget, SeqJEPA, StopGradTarget
from jepa_blocks.train.config import apply_overrides
from jepa_blocks.train.experiment import (
    VARIANTS,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    FeatureSet,
    ModelConfig,
    UnitNormRate,
    build_data,
    build_model,
    evaluate,
    extract_features,
    format_table,
    load_experiment_config,
    run_experiment,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "examples" / "configs"
PRESETS = ("cpu-demo", "paper-cifar100", "cifar10-rot")


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_smoke_overrides_apply(preset):
    config = load_experiment_config(preset=preset, config_dir=CONFIG_DIR)
    assert config.name == preset
    assert config.gates and "min" in config.gates
    smoke = load_experiment_config(preset=preset, config_dir=CONFIG_DIR, smoke=True)
    assert smoke.train.epochs <= config.train.epochs
    assert smoke.data.train_subset is not None


def test_paper_preset_is_the_paper_configuration():
    c = load_experiment_config(preset="paper-cifar100", config_dir=CONFIG_DIR, variant="baseline")
    assert (c.data.dataset, c.data.views, c.data.num_observed, c.data.batch_size) == (
        "cifar100",
        "cifar-augment",
        3,
        512,
    )
    assert (c.model.encoder, c.model.encoder_dim, c.model.action_embed_dim) == (
        "resnet18",
        512,
        128,
    )
    assert (c.model.depth, c.model.heads, c.model.predictor_hidden) == (3, 4, 1024)
    assert (c.model.ema_base, c.model.ema_final, c.model.target) == (0.996, 1.0, "ema")
    assert c.model.regularizer == "none"
    t = c.train
    assert (t.epochs, t.recipe, t.lr, t.weight_decay, t.warmup_epochs) == (
        2000,
        "paper",
        4e-4,
        1e-3,
        20.0,
    )
    assert (t.warmup_start_lr, t.final_lr) == (1e-5, 1e-5)
    assert c.eval.num_observed == 5  # Table 2: M_val = 5


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_select_target_and_regularizer(variant):
    c = load_experiment_config(preset="cpu-demo", config_dir=CONFIG_DIR, variant=variant)
    assert c.variant == variant
    expected_target = "ema" if variant in ("baseline", "ema-rate") else "stopgrad"
    assert c.model.target == expected_target
    rate = variant not in ("baseline", "stopgrad")
    assert (c.model.regularizer == "coding-rate") is rate
    assert c.model.symmetric is (variant == "symmetric")
    assert c.model.sharpen is (variant == "sharpening")


def test_overrides_come_last_and_file_merges(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  rate_weight: 0.5\ntrain:\n  epochs: 2\n")
    c = load_experiment_config(
        preset="cpu-demo",
        config_dir=CONFIG_DIR,
        config_file=extra,
        variant="stopgrad-rate",
        overrides=["train.epochs=3", "model.regularizer=none"],
    )
    assert c.model.rate_weight == 0.5  # from the file
    assert c.train.epochs == 3  # the override wins over the file
    assert c.model.regularizer == "none"  # and over the variant
    assert (
        c.model.cnn_width
        == load_experiment_config(preset="cpu-demo", config_dir=CONFIG_DIR).model.cnn_width
    )  # the rest of the preset is kept


def test_config_errors():
    with pytest.raises(ValueError, match="unknown preset"):
        load_experiment_config(preset="nope", config_dir=CONFIG_DIR)
    with pytest.raises(ValueError, match="unknown variant"):
        load_experiment_config(preset="cpu-demo", config_dir=CONFIG_DIR, variant="dino")
    with pytest.raises(ValueError, match="unknown config key"):
        load_experiment_config(preset="cpu-demo", config_dir=CONFIG_DIR, overrides=["model.x=1"])
    with pytest.raises(ValueError, match="must be one of"):
        load_experiment_config(overrides=["model.target=teacher"])
    with pytest.raises(TypeError):
        load_experiment_config(overrides=["data.batch_size=big"])


# ----------------------------------------------------------------------------- builders


def _tiny_model_config(**kw) -> ModelConfig:
    base = dict(
        encoder_dim=16, cnn_width=4, action_embed_dim=4, predictor_hidden=16, depth=1, heads=2,
        mlp_ratio=2,
    )  # fmt: skip
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_build_model_per_variant(variant):
    config = apply_overrides(ExperimentConfig(model=_tiny_model_config()), VARIANTS[variant])
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
    with pytest.raises(ValueError, match="small-cnn encoder only"):
        build_model(
            ModelConfig(encoder="resnet18", encoder_dim=512, cnn_grid=7),
            in_channels=3, action_dim=9, total_steps=1, steps_per_epoch=1,
        )  # fmt: skip
    with pytest.raises(ValueError, match="must be one of"):
        load_experiment_config(overrides=["model.encoder_norm=layer"])


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


# ----------------------------------------------------------------------------- probes


def _features(n: int, seed: int, *, informative: bool) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    actions = torch.randn(n, 2, 3, generator=g)
    z = torch.randn(n, 3, 8, generator=g)
    z_agg = torch.randn(n, 12, generator=g)
    if informative:
        z[:, 1, :3] = z[:, 0, :3] + actions[:, 0]  # the action is linear in [z_1; z_2]
        z_agg[:, :4] += 6.0 * torch.nn.functional.one_hot(labels, 4)
    return FeatureSet(z, z_agg, labels, actions)


def test_evaluate_probes_on_synthetic_features():
    config = EvalConfig(regressor="linear")
    good = evaluate(
        _features(400, 0, informative=True), _features(200, 1, informative=True), config
    )
    noise = evaluate(
        _features(400, 0, informative=False), _features(200, 1, informative=False), config
    )
    assert good["linacc"] > 0.95 and noise["linacc"] < 0.5
    assert good["r2"] > 0.95 and noise["r2"] < 0.1
    assert len(good["r2_per_dim"]) == 3
    assert good["linacc_gap"] == pytest.approx(good["linacc"] - good["leakage_linacc"])
    assert good["r2_gap"] == pytest.approx(good["r2"] - good["leakage_r2"])
    assert 1.0 <= good["rank_z_agg"] <= 12.0 and good["dim_z_agg"] == 12
    assert good["rank_frac_z"] == pytest.approx(good["rank_z"] / 8)
    assert torch.get_num_threads() >= 1  # the thread setting is restored
    with pytest.raises(TypeError, match="FeatureSet"):
        evaluate((1, 2), _features(10, 1, informative=False), config)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="EvalConfig"):
        evaluate(_features(10, 0, informative=False), _features(10, 1, informative=False), {})  # type: ignore[arg-type]


def test_extract_features_shapes_and_determinism():
    from jepa_blocks.train.experiment import _loader

    data = build_data(DataConfig(dataset="digits", views="affine", train_subset=30))
    model = build_model(
        _tiny_model_config(), in_channels=1, action_dim=5, total_steps=1, steps_per_epoch=1
    )
    loader = _loader(
        data.train, data.views, num_observed=2, batch_size=16, seed=3,
        device=torch.device("cpu"), shuffle=False, drop_last=False,
    )  # fmt: skip
    a = extract_features(model, loader, passes=2, pixels=True)
    b = extract_features(model, loader, passes=2, pixels=True)
    assert a.z.shape == (60, 3, 16) and a.z_agg.shape == (60, 20)
    assert a.actions.shape == (60, 2, 5) and a.pixels.shape == (60, 64)
    torch.testing.assert_close(a.z_agg, b.z_agg)  # fixed seeds, eval mode
    assert model.training  # the mode is restored


def test_format_table():
    m = {
        "linacc": 0.9, "r2": 0.8, "leakage_linacc": 0.5, "leakage_r2": 0.1, "linacc_gap": 0.4,
        "r2_gap": 0.7, "rank_z_agg": 40.0, "rank_z": 20.0, "dim_z_agg": 160, "dim_z": 128,
    }  # fmt: skip
    table = format_table(m, None)
    assert "90.0 %" in table and "40.0 / 160 (25 %)" in table and "—" in table
    assert len(table.splitlines()) == 10
    assert "0.800" in format_table(m, m).splitlines()[3]


# ----------------------------------------------------------------------------- end to end


def test_run_experiment_end_to_end(tmp_path):
    config = load_experiment_config(
        variant="stopgrad-rate",
        overrides=[
            "name=tiny", "data.dataset=digits", "data.train_subset=96", "data.test_subset=48",
            "data.batch_size=32", "data.num_observed=2", "model.encoder_dim=16",
            "model.cnn_width=4", "model.action_embed_dim=4", "model.predictor_hidden=16",
            "model.depth=1", "model.heads=2", "train.epochs=2", "train.warmup_epochs=0.5",
            "train.lr=1e-3", "train.device=cpu", "train.progress=false", "train.log_every=1",
            "train.eval_every_epochs=1", f"train.out_dir={tmp_path}", "eval.regressor=linear",
            "eval.pixel_baseline=true", "eval.monitor_size=32",
            "gates={name: tiny, min: {linacc: 0.0}, max: {rank_frac_z_agg: 2.0}}",
        ],
    )  # fmt: skip
    result = run_experiment(config, verbose=False)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["variant"] == "stopgrad-rate" and data["preset"] == "tiny"
    assert data["config"]["model"]["target"] == "stopgrad"
    assert data["gate"]["name"] == "tiny" and data["gate"]["passed"] is True
    assert set(data["metrics"]) >= {"linacc", "r2", "leakage_linacc", "rank_z_agg", "pixel_linacc"}
    assert data["metrics"]["linacc"] == pytest.approx(result.metrics["linacc"])
    assert data["random_init"]["linacc"] == pytest.approx(result.random_init["linacc"])
    assert data["gains"]["linacc_gain"] == pytest.approx(
        result.metrics["linacc"] - result.random_init["linacc"]
    )
    assert data["train"]["steps"] == 2 * 3
    for name in data["plots"]:
        assert (tmp_path / name).stat().st_size > 0
    assert {"rank_monitor.png", "spectrum_z_agg.png", "rotation_circle.png"} <= set(data["plots"])
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "metrics.jsonl").is_file()
    assert "random-init" in result.table
