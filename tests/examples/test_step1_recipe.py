"""The step 1/2 recipe end to end on a tiny configuration (digits, two epochs)."""

from __future__ import annotations

import json

import pytest

from common import RecipeConfig, load_config
from step1_baseline import run


def test_step2_recipe_end_to_end(tmp_path):
    config = load_config(
        RecipeConfig,
        step="step2",
        preset=None,
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
    result = run(config, verbose=False)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["variant"] == "stopgrad-rate" and data["preset"] == "tiny"
    assert data["config"]["model"]["target"] == "stopgrad"
    assert data["gate"]["name"] == "tiny" and data["gate"]["passed"] is True
    assert set(data["metrics"]) >= {"linacc", "r2", "leakage_linacc", "rank_z_agg", "pixel_linacc"}
    assert data["metrics"]["linacc"] == pytest.approx(result["metrics"]["linacc"])
    assert data["random_init"]["linacc"] == pytest.approx(result["random_init"]["linacc"])
    assert data["gains"]["linacc_gain"] == pytest.approx(
        result["metrics"]["linacc"] - result["random_init"]["linacc"]
    )
    assert data["train"]["steps"] == 2 * 3
    for name in data["plots"]:
        assert (tmp_path / name).stat().st_size > 0
    assert {"rank_monitor.png", "spectrum_z_agg.png", "rotation_circle.png"} <= set(data["plots"])
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "metrics.jsonl").is_file()
    assert "random-init" in result["table"]
    assert (tmp_path / "table.md").read_text().strip() == result["table"]
