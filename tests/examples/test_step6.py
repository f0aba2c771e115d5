"""The step-6 recipe in process: its config, its model factory, its table, a tiny run."""

from __future__ import annotations

import json

import pytest
import torch

from common import load_config
from jepa_blocks import EMATarget
from jepa_blocks.local import STAGES, LocalRateLoss, LocalSeqJEPA, LPLLoss
from parts import ModelConfig
from step6_local import DETACH_ONLY, format_stage_table, run
from step6_parts import LocalConfig, Step6Config, build_learner, build_local_model

SMALL_MODEL = dict(
    encoder_dim=16, cnn_width=4, action_embed_dim=4, predictor_hidden=16, depth=1, heads=2,
    mlp_ratio=2,
)  # fmt: skip


def test_config_has_a_local_section_and_the_step_overlay():
    config = load_config(Step6Config, step="step6", variant="stopgrad-rate")
    assert config.step == "step6" and config.local == LocalConfig()
    assert config.local.stages == list(STAGES) and config.local.objective == "lpl"
    assert config.gates["name"] == "step6" and config.gates["max"] == {"memory_ratio": 0.5}
    smoke = load_config(Step6Config, step="step6", variant="stopgrad-rate", smoke=True)
    # the old order: the preset's smoke list, then step 6's own (SMOKE_EXTRA), then the CLI
    preset_smoke = load_config(Step6Config, step="step2", smoke=True).smoke
    assert smoke.smoke == [*preset_smoke, "train.max_steps=4", "eval.baseline=false", "threads=1"]
    assert smoke.train.max_steps == 4 and smoke.eval.baseline is False and smoke.threads == 1
    assert smoke.gates["name"] == "smoke"
    over = load_config(
        Step6Config,
        step="step6",
        smoke=True,
        overrides=["local.objective=rate", "local.stages=[end-to-end,stage3]", "threads=2"],
    )
    assert over.local.objective == "rate" and over.local.stages == ["end-to-end", "stage3"]
    assert over.threads == 2


def test_config_errors():
    with pytest.raises(ValueError, match="nope"):
        load_config(Step6Config, step="step6", overrides=["local.nope=1"])
    with pytest.raises(ValueError, match="stage4"):
        load_config(Step6Config, step="step6", overrides=["local.stages=[stage4]"])
    with pytest.raises(ValueError, match="objective"):
        load_config(Step6Config, step="step6", overrides=["local.objective=hebb"])
    with pytest.raises(ValueError, match="norm"):
        load_config(Step6Config, step="step6", overrides=["local.norm=layer"])
    with pytest.raises(ValueError, match="at least one"):
        LocalConfig(stages=[])


def test_local_model_ignores_the_small_cnn_head_options():
    """Step 6 swaps in its block encoder; the discarded SmallCNN's head must not shift the RNG."""

    def build(**kw):
        torch.manual_seed(0)
        config = ModelConfig(**SMALL_MODEL, **kw)
        return build_local_model(
            config, LocalConfig(), in_channels=1, action_dim=5, total_steps=4, steps_per_epoch=2
        )

    plain, gridded = build(), build(cnn_grid=7, encoder_norm="batch")
    a, b = plain.state_dict(), gridded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_local_model_block_encoder_and_ema_target():
    torch.manual_seed(0)
    config = ModelConfig(**SMALL_MODEL, target="ema")
    local = LocalConfig(widths=[4, 8, 16], strides=[1, 2, 1])
    model = build_local_model(
        config, local, in_channels=1, action_dim=5, total_steps=4, steps_per_epoch=2
    )
    assert model.encoder.num_blocks == 3 and model.encoder.out_channels == (4, 8, 16)
    # the EMA target is rebuilt around the block encoder (a copy of it)
    assert isinstance(model.target, EMATarget) and type(model.target.encoder) is type(model.encoder)
    for k, v in model.encoder.state_dict().items():
        torch.testing.assert_close(model.target.encoder.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="encoder_dim"):
        build_local_model(
            config, LocalConfig(widths=[4, 8]), in_channels=1, action_dim=5, total_steps=4,
            steps_per_epoch=2,
        )  # fmt: skip


@pytest.mark.parametrize("norm", ["readout", "block", "none"])
def test_local_model_norm_places_the_normalisation(norm):
    torch.manual_seed(0)
    local = load_config(Step6Config, step="step6", overrides=[f"local.norm={norm}"]).local
    model = build_local_model(
        ModelConfig(**SMALL_MODEL), local, in_channels=1, action_dim=5, total_steps=4,
        steps_per_epoch=2,
    )  # fmt: skip
    kinds = {type(m).__name__ for m in model.encoder.modules()}
    assert ("BatchNorm2d" in kinds) == (norm == "block")
    assert ("BatchNorm1d" in kinds) == (norm == "readout")


@pytest.mark.parametrize(("objective", "cls"), [("lpl", LPLLoss), ("rate", LocalRateLoss)])
def test_build_learner_objective_and_heads(objective, cls):
    config = load_config(
        Step6Config,
        step="step6",
        preset=None,
        overrides=[
            *(f"model.{k}={v}" for k, v in SMALL_MODEL.items()),
            "model.target=stopgrad",
            f"local.objective={objective}",
            "local.head_dim=8",
            "local.rate_weight=0.1",
        ],
    )
    learner = build_learner(
        config, in_channels=1, action_dim=5, total_steps=4, steps_per_epoch=2,
        device=torch.device("cpu"),
    )  # fmt: skip
    assert isinstance(learner, LocalSeqJEPA) and learner.stage == "end-to-end"
    assert isinstance(learner.objective, cls)
    assert [h.dim for h in learner.heads] == [8, 8, 8, 8]
    if objective == "rate":
        assert learner.objective.rate_weight == 0.1


def test_format_stage_table_shows_the_distance_to_end_to_end():
    e2e = {"linacc": 0.5, "r2": 0.6, "peak_saved_mib": 100.0, "memory_ratio": 1.0}
    s3 = {"linacc": 0.4, "r2": 0.5, "linacc_vs_e2e": -0.1, "r2_vs_e2e": -0.1}
    s3.update(peak_saved_mib=38.0, memory_ratio=0.38, train_seconds=12.0)
    table = format_stage_table({"end-to-end": e2e, "stage3": s3}, {"linacc": 0.3})
    lines = table.splitlines()
    assert lines[0].startswith("| stage") and "Δ linacc" in lines[0] and "Δ R²" in lines[0]
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["random-init", "end-to-end", "stage3"]
    assert "-10.0 pt" in lines[-1] and "-0.100" in lines[-1] and "0.38×" in lines[-1]
    assert "—" in lines[2]  # random-init has no memory


def test_step6_recipe_end_to_end(tmp_path):
    config = load_config(
        Step6Config,
        step="step6",
        preset=None,
        variant="stopgrad-rate",
        overrides=[
            "name=tiny", "data.dataset=digits", "data.train_subset=64", "data.test_subset=32",
            "data.batch_size=16", "data.num_observed=2", "model.encoder_dim=16",
            "model.cnn_width=4", "model.action_embed_dim=4", "model.predictor_hidden=16",
            "model.depth=2", "model.heads=2", "train.epochs=1", "train.max_steps=2",
            "train.device=cpu", "train.progress=false", "train.log_every=1",
            f"train.out_dir={tmp_path}", "eval.regressor=linear", "eval.pixel_baseline=false",
            "eval.baseline=true", "local.head_dim=8", "local.memory_batch_size=8",
            "gates={name: tiny, min: {linacc: 0.0}, max: {memory_ratio: 2.0}}",
        ],
    )  # fmt: skip
    result = run(config, verbose=False)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["step"] == "step6" and data["preset"] == "tiny"
    assert list(data["stages"]) == list(STAGES)
    assert data["headline_stage"] == "stage3" and data["metrics"] == data["stages"]["stage3"]
    for row in data["stages"].values():
        assert {"linacc", "r2", "leakage_linacc", "rank_z_agg", "rank_z"} <= set(row)
        assert row["peak_saved_mib"] > 0 and row["linacc_vs_e2e"] is not None
    assert data["stages"]["end-to-end"]["memory_ratio"] == 1.0
    assert data["stages"]["end-to-end"]["linacc_vs_e2e"] == 0.0
    assert set(data["random_init"]) >= {"linacc", "r2", "linacc_vs_e2e"}
    assert "memory_ratio" not in data["random_init"]
    memory = data["memory"]
    assert set(memory["saved_mib"]) == {*STAGES, DETACH_ONLY}
    assert memory["batch_size"] == 8 and memory["views"] == 3
    assert data["train"]["steps_per_stage"] == 2
    assert set(data["train"]["final_loss"]) == set(STAGES)
    assert data["gate"]["name"] == "tiny" and data["gate"]["passed"] is True
    assert data["config"]["local"]["head_dim"] == 8
    assert (tmp_path / "table.md").read_text().strip() == result["table"]
    assert "detach only" in result["table"] and "headline" in result["table"]
    assert not (tmp_path / "checkpoint.pt").exists()  # stages train in memory


def test_stage2_takes_its_encoder_from_the_chosen_stage(tmp_path):
    base = [
        "name=tiny", "data.dataset=digits", "data.train_subset=32", "data.test_subset=32",
        "data.batch_size=16", "data.num_observed=2", "model.encoder_dim=16",
        "model.cnn_width=4", "model.action_embed_dim=4", "model.predictor_hidden=16",
        "model.depth=1", "model.heads=2", "train.epochs=1", "train.device=cpu",
        "train.progress=false", "eval.regressor=linear", "eval.pixel_baseline=false",
        "eval.baseline=false", "local.stages=[stage1,stage2]",
    ]  # fmt: skip

    def z(source: str) -> list[float]:
        config = load_config(
            Step6Config, step="step6", preset=None,
            overrides=[*base, f"local.stage2_encoder={source}"],
        )  # fmt: skip
        stages = run(config, verbose=False)["stages"]
        return [stages["stage1"]["rank_z"], stages["stage2"]["rank_z"]]

    from_stage1, from_init = z("stage1"), z("init")
    assert from_stage1[1] == from_stage1[0]  # the frozen encoder is stage 1's
    assert from_init[1] != from_stage1[1]
