"""The step 4 recipe: its config, the ToST model and optimizer, and the run end to end."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from common import load_config
from jepa_blocks.seq import Aggregator
from jepa_blocks.seq.streaming_aggregator import ToSTAggregator
from jepa_blocks.train import build_optimizer
from parts import ModelConfig
from step4_parts import (
    AggregatorConfig,
    Step4Config,
    build_aggregator,
    build_step4_model,
    format_length_table,
)
from step4_tost_streaming import run

TINY = [
    "model.encoder_dim=16", "model.cnn_width=4", "model.action_embed_dim=8",
    "model.predictor_hidden=16", "model.depth=2", "model.heads=2", "model.mlp_ratio=2",
    "data.dataset=digits", "train.device=cpu",
]  # fmt: skip
TINY_MODEL = ModelConfig(
    encoder_dim=16, cnn_width=4, action_embed_dim=8, predictor_hidden=16, depth=2, heads=2,
    mlp_ratio=2,
)  # fmt: skip


def _config(**kw: object) -> Step4Config:
    return load_config(Step4Config, step="step4", **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- config


def test_config_builds_on_the_shared_preset():
    c = _config(preset="cpu-demo", variant="baseline")
    assert isinstance(c, Step4Config) and c.step == "step4" and c.variant == "baseline"
    assert c.name == "cpu-demo" and c.data.dataset == "mnist"
    assert c.data.num_observed == 16 and c.data.batch_size == 64 and c.train.epochs == 3
    assert c.aggregator.kind == "tost" and c.aggregator.readout == "mean"
    assert c.model.target == "ema" and c.gates["name"] == "step4"
    # pinned against the shared preset: probes at M_val = M_tr, one sequence per image
    assert c.eval.num_observed is None and c.eval.train_sequences_per_image == 1
    assert c.eval.batch_size == 50 and not c.eval.pixel_baseline
    smoke = _config(preset="cpu-demo", variant="baseline", smoke=True)
    assert smoke.data.train_subset == 256 and smoke.threads == 1
    assert smoke.eval.num_observed is None and smoke.data.num_observed == 4
    assert smoke.probe_lengths == [1, 4, 8] and smoke.bench.repeats == 1
    assert max(smoke.bench.token_lengths) <= 128 and smoke.gates["name"] == "smoke"
    c = _config(
        preset="cpu-demo",
        variant="stopgrad-rate",
        overrides=["aggregator.readout=agg", "probe_lengths=[1, 64]", "bench.enabled=false"],
    )
    assert c.variant == "stopgrad-rate" and c.model.target == "stopgrad"
    assert c.aggregator.readout == "agg" and c.probe_lengths == [1, 64] and not c.bench.enabled


def test_config_file_and_errors(tmp_path):
    f = tmp_path / "extra.yaml"
    f.write_text("aggregator:\n  decay: 0.99\nbench:\n  repeats: 5\n", encoding="utf-8")
    c = _config(preset="cpu-demo", config_file=f)
    assert c.aggregator.decay == 0.99 and c.bench.repeats == 5 and c.data.num_observed == 16
    with pytest.raises(ValueError, match="unknown config key"):
        _config(preset=None, overrides=["aggregator.nope=1"])
    with pytest.raises(ValueError, match=r"aggregator\.kind"):
        _config(preset=None, overrides=["aggregator.kind=rnn"])
    with pytest.raises(ValueError, match="probe_lengths"):
        _config(preset=None, overrides=["probe_lengths=[0, 2]"])
    with pytest.raises(ValueError, match=r"bench\.model_batch"):
        _config(preset=None, overrides=["bench.model_batch=1"])
    with pytest.raises(ValueError, match=r"bench\.repeats"):
        _config(preset=None, overrides=["bench.repeats=0"])
    with pytest.raises(ValueError, match=r"bench\.token_lengths"):
        _config(preset=None, overrides=["bench.token_lengths=[]"])
    with pytest.raises(ValueError, match="variant"):
        _config(preset=None, variant="nope")


# ----------------------------------------------------------------------------- model


def test_build_aggregator_kinds():
    tost = build_aggregator(TINY_MODEL, AggregatorConfig(readout="agg", decay=0.9))
    assert isinstance(tost, ToSTAggregator) and tost.dim == 24 and len(tost.blocks) == 2
    assert tost.readout == "agg" and tost.decay == 0.9
    trans = build_aggregator(TINY_MODEL, AggregatorConfig(kind="transformer"))
    assert isinstance(trans, Aggregator) and len(trans.blocks) == 2
    x = torch.randn(3, 5, 24)
    assert tost(x).shape == trans(x).shape == (3, 24)
    with pytest.raises(TypeError, match="ModelConfig"):
        build_aggregator({}, AggregatorConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AggregatorConfig"):
        build_aggregator(TINY_MODEL, {})  # type: ignore[arg-type]


def test_build_step4_model_and_the_default_optimizer():
    config = _config(preset=None, overrides=TINY)
    model = build_step4_model(
        config.model, config.aggregator, in_channels=1, action_dim=5, total_steps=10,
        steps_per_epoch=5,
    )  # fmt: skip
    assert isinstance(model.aggregator, ToSTAggregator)
    out = model(torch.randn(2, 4, 1, 8, 8), torch.randn(2, 3, 5))
    out.loss.backward()
    # fit's default optimizer (the "paper" recipe) honours ToST's no_weight_decay()
    train = config.train
    opt = build_optimizer(model, recipe=train.recipe, lr=train.lr, weight_decay=train.weight_decay)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == train.weight_decay and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    temps = [p for n, p in model.named_parameters() if n.endswith("attn.temperature")]
    assert temps and all(id(p) in ids for p in temps)
    assert all(p.ndim >= 2 for p in decay["params"])
    n_opt = sum(len(g["params"]) for g in opt.param_groups)
    assert n_opt == sum(1 for p in model.parameters() if p.requires_grad)
    assert isinstance(build_optimizer(model, recipe="official"), torch.optim.Adam)
    trans = dataclasses.replace(config.aggregator, kind="transformer")
    model = build_step4_model(
        config.model, trans, in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5
    )
    assert isinstance(model.aggregator, Aggregator)


def test_length_table():
    table = format_length_table({1: 0.5, 4: 0.75}, {1: 0.25, 4: 0.3}, 4)
    assert "4 (= M_tr)" in table and "75.0 %" in table and "30.0 %" in table
    assert "—" in format_length_table({1: 0.5}, None, 2)


# ----------------------------------------------------------------------------- the run


def test_run_end_to_end(tmp_path):
    overrides = [
        "name=tiny", "data.dataset=digits", "data.train_subset=64", "data.test_subset=32",
        "data.batch_size=32", "data.num_observed=3", "model.encoder_dim=16", "model.cnn_width=4",
        "model.action_embed_dim=8", "model.predictor_hidden=16", "model.depth=1",
        "model.heads=2", "train.epochs=1", "train.warmup_epochs=0.5", "train.device=cpu",
        "train.progress=false", "train.log_every=1", f"train.out_dir={tmp_path}",
        "eval.regressor=linear", "eval.monitor_size=16", "eval.batch_size=32",
        "probe_lengths=[1, 6]", "bench.token_lengths=[8]", "bench.token_batch=1",
        "bench.model_lengths=[2]", "bench.model_batch=2", "bench.stream_lengths=[2, 8]",
        "bench.repeats=1",
    ]  # fmt: skip
    result = run(_config(preset=None, variant="baseline", overrides=overrides), verbose=False)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["step"] == "step4" and data["aggregator"] == "tost" and data["preset"] == "tiny"
    assert data["variant"] == "baseline"
    assert data["metrics"]["stream_max_abs_diff"] < 1e-2
    assert data["metrics"]["stream_max_abs_diff_f64"] < 1e-12
    assert set(data["metrics"]["linacc_by_length"]) == {"1", "3", "6"}
    assert set(data["random_init"]["linacc_by_length"]) == {"1", "3", "6"}
    assert {"aggregator", "model", "streaming"} == set(data["bench"])
    assert len(data["bench"]["aggregator"]) == 2 and len(data["bench"]["streaming"]) == 2
    assert data["gate"]["name"] == "step4"
    assert data["train"]["steps"] == 2 and data["seconds"]["bench"] > 0
    for header in ("ToST ms", "ToST step ms", "ToST state KiB", "random-init", "M_val"):
        assert header in result["table"], header
    assert (tmp_path / "table.md").read_text().strip() == result["table"]
    assert data["plots"] and all((tmp_path / p).is_file() for p in data["plots"])
    assert (tmp_path / "checkpoint.pt").is_file()


def test_run_trains_on_64_view_sequences(tmp_path):
    """Issue 6's longest training sequences: M_tr = 64, streamed probes at M_val = 64."""
    overrides = [
        "name=tiny64", "data.dataset=digits", "data.train_subset=32", "data.test_subset=16",
        "data.batch_size=8", "data.num_observed=64", "model.encoder_dim=16", "model.cnn_width=4",
        "model.action_embed_dim=8", "model.predictor_hidden=16", "model.depth=1",
        "model.heads=2", "train.epochs=1", "train.warmup_epochs=0", "train.device=cpu",
        "train.progress=false", f"train.out_dir={tmp_path}", "eval.regressor=linear",
        "eval.classifier=ridge", "eval.monitor_size=8", "eval.batch_size=16",
        "eval.baseline=false", "eval.plots=false", "probe_lengths=[1, 64]",
        "bench.enabled=false",
    ]  # fmt: skip
    config = _config(preset=None, overrides=overrides)
    assert config.data.num_observed == 64
    result = run(config, verbose=False)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["config"]["data"]["num_observed"] == 64 and data["train"]["steps"] == 4
    assert set(data["metrics"]["linacc_by_length"]) == {"1", "64"}
    assert data["metrics"]["stream_max_abs_diff_f64"] < 1e-9  # streamed == full over 64 views
    assert data["random_init"] is None and data["plots"] == []
    assert data["bench"] == {"aggregator": [], "model": [], "streaming": []}
    assert "ToST ms" not in result["table"]
