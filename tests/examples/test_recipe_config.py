"""Recipe configs: presets, step overlays, variant files, --config files, smoke, overrides."""

from __future__ import annotations

import pytest

from common import (
    RecipeConfig,
    format_probe_table,
    gate_metrics,
    load_config,
    markdown_table,
    variant_names,
)

PRESETS = ("cpu-demo", "paper-cifar100", "cifar10-rot")


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_smoke_overrides_apply(preset):
    config = load_config(RecipeConfig, step="step2", preset=preset)
    assert config.name == preset
    assert config.gates and "min" in config.gates
    smoke = load_config(RecipeConfig, step="step2", preset=preset, smoke=True)
    assert smoke.train.epochs <= config.train.epochs
    assert smoke.data.train_subset is not None


def test_paper_preset_is_the_paper_configuration():
    c = load_config(RecipeConfig, step="step1", preset="paper-cifar100", variant="baseline")
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
    assert c.model.last_token_action == "zeros"  # the official CIFAR (augmentation) path
    assert c.data.action_norm == "official"
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


@pytest.mark.parametrize("variant", variant_names())
def test_variants_select_target_and_regularizer(variant):
    c = load_config(RecipeConfig, step="step2", preset="cpu-demo", variant=variant)
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
    c = load_config(
        RecipeConfig,
        step="step2",
        preset="cpu-demo",
        config_file=extra,
        variant="stopgrad-rate",
        overrides=["train.epochs=3", "model.regularizer=none"],
    )
    assert c.model.rate_weight == 0.5  # from the file
    assert c.train.epochs == 3  # the override wins over the file
    assert c.model.regularizer == "none"  # and over the variant
    assert (
        c.model.cnn_width
        == load_config(RecipeConfig, step="step2", preset="cpu-demo").model.cnn_width
    )  # the rest of the preset is kept


def test_config_errors():
    with pytest.raises(ValueError, match="unknown preset"):
        load_config(RecipeConfig, step="step2", preset="nope")
    with pytest.raises(ValueError, match="unknown variant"):
        load_config(RecipeConfig, step="step2", preset="cpu-demo", variant="dino")
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(RecipeConfig, step="step2", preset="cpu-demo", overrides=["model.x=1"])
    with pytest.raises(ValueError, match="must be one of"):
        load_config(RecipeConfig, step="step2", preset=None, overrides=["model.target=teacher"])
    with pytest.raises(TypeError):
        load_config(RecipeConfig, step="step2", preset=None, overrides=["data.batch_size=big"])


def test_every_variant_file_is_a_model_override():
    names = variant_names()
    assert {"baseline", "ema-rate", "stopgrad-rate", "symmetric", "sharpening", "stopgrad"} <= set(
        names
    )


def test_format_probe_table():
    m = {
        "linacc": 0.9, "r2": 0.8, "leakage_linacc": 0.5, "leakage_r2": 0.1, "linacc_gap": 0.4,
        "r2_gap": 0.7, "rank_z_agg": 40.0, "rank_z": 20.0, "dim_z_agg": 160, "dim_z": 128,
    }  # fmt: skip
    table = format_probe_table(m, None)
    assert "90.0 %" in table and "40.0 / 160 (25 %)" in table and "—" in table
    assert len(table.splitlines()) == 10
    assert "0.800" in format_probe_table(m, m).splitlines()[3]


def test_markdown_table_and_gate_metrics():
    t = markdown_table(("a", "b"), [("x", "1"), ("yy", "22")])
    assert t.splitlines() == ["| a  |  b |", "| -- | -: |", "| x  |  1 |", "| yy | 22 |"]
    flat = gate_metrics(
        {"linacc": 0.5, "r2": 0.25, "r2_per_dim": [1.0]}, {"linacc": 0.2, "r2": 0.5}
    )
    assert flat["linacc_gain"] == pytest.approx(0.3) and flat["r2_gain"] == pytest.approx(-0.25)
    assert "r2_per_dim" not in flat
