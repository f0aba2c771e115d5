"""Step 4 builders and measurements: config, ToST model, optimizer, memory meter, benches, run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from jepa_blocks.seq import Aggregator
from jepa_blocks.seq.streaming_aggregator import ToSTAggregator
from jepa_blocks.train.experiment import DataConfig, FeatureSet, ModelConfig, build_data
from jepa_blocks.train.step4 import (
    AggregatorConfig,
    SavedTensorMeter,
    Step4Config,
    StreamFeatures,
    bench_aggregators,
    bench_model_steps,
    bench_streaming,
    build_aggregator,
    build_step4_model,
    build_step4_optimizer,
    extract_stream_features,
    format_aggregator_table,
    format_length_table,
    format_model_table,
    format_streaming_table,
    load_step4_config,
    measure_memory,
    run_step4,
    time_call,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "examples" / "configs"
TINY_MODEL = ModelConfig(
    encoder_dim=16, cnn_width=4, action_embed_dim=8, predictor_hidden=16, depth=2, heads=2,
    mlp_ratio=2,
)  # fmt: skip


def _tiny_config(**model: object) -> Step4Config:
    overrides = [
        "model.encoder_dim=16", "model.cnn_width=4", "model.action_embed_dim=8",
        "model.predictor_hidden=16", "model.depth=2", "model.heads=2", "model.mlp_ratio=2",
        "data.dataset=digits", "train.device=cpu",
    ]  # fmt: skip
    overrides += [f"model.{k}={v}" for k, v in model.items()]
    return load_step4_config(preset=None, overrides=overrides)


# ----------------------------------------------------------------------------- config


def test_config_builds_on_the_shared_preset():
    c = load_step4_config(preset="cpu-demo", config_dir=CONFIG_DIR)
    assert isinstance(c, Step4Config) and c.step == "step4" and c.variant == "baseline"
    assert c.name == "cpu-demo" and c.data.dataset == "mnist"
    assert c.data.num_observed == 16 and c.aggregator.kind == "tost"
    assert c.aggregator.readout == "mean" and c.model.target == "ema"
    assert c.gates["name"] == "step4"
    # pinned against the shared preset: probes at M_val = M_tr, one sequence per image
    assert c.eval.num_observed is None and c.eval.train_sequences_per_image == 1
    smoke = load_step4_config(preset="cpu-demo", config_dir=CONFIG_DIR, smoke=True)
    assert smoke.data.train_subset == 256 and smoke.threads == 1
    assert smoke.eval.num_observed is None and smoke.data.num_observed == 4
    assert max(smoke.bench.token_lengths) <= 128 and smoke.gates["name"] == "smoke"
    c = load_step4_config(
        preset="cpu-demo",
        config_dir=CONFIG_DIR,
        variant="stopgrad-rate",
        overrides=["aggregator.readout=agg", "probe_lengths=[1, 64]", "bench.enabled=false"],
    )
    assert c.variant == "stopgrad-rate" and c.model.target == "stopgrad"
    assert c.aggregator.readout == "agg" and c.probe_lengths == [1, 64] and not c.bench.enabled


def test_config_file_and_errors(tmp_path):
    f = tmp_path / "extra.yaml"
    f.write_text("aggregator:\n  decay: 0.99\nbench:\n  repeats: 5\n", encoding="utf-8")
    c = load_step4_config(preset="cpu-demo", config_dir=CONFIG_DIR, config_file=f)
    assert c.aggregator.decay == 0.99 and c.bench.repeats == 5 and c.data.num_observed == 16
    with pytest.raises(ValueError, match="unknown config key"):
        load_step4_config(preset=None, overrides=["aggregator.nope=1"])
    with pytest.raises(ValueError, match=r"aggregator\.kind"):
        load_step4_config(preset=None, overrides=["aggregator.kind=rnn"])
    with pytest.raises(ValueError, match="probe_lengths"):
        load_step4_config(preset=None, overrides=["probe_lengths=[0, 2]"])
    with pytest.raises(ValueError, match=r"bench\.model_batch"):
        load_step4_config(preset=None, overrides=["bench.model_batch=1"])
    with pytest.raises(ValueError, match=r"bench\.repeats"):
        load_step4_config(preset=None, overrides=["bench.repeats=0"])
    with pytest.raises(ValueError, match="variant"):
        load_step4_config(preset=None, variant="nope")


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


def test_build_step4_model_and_optimizer():
    config = _tiny_config()
    model = build_step4_model(
        config, in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5
    )
    assert isinstance(model.aggregator, ToSTAggregator)
    out = model(torch.randn(2, 4, 1, 8, 8), torch.randn(2, 3, 5))
    out.loss.backward()
    opt = build_step4_optimizer(model, config.train)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == config.train.weight_decay and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    temps = [p for n, p in model.named_parameters() if n.endswith("attn.temperature")]
    assert temps and all(id(p) in ids for p in temps)
    assert all(p.ndim >= 2 for p in decay["params"])
    n_opt = sum(len(g["params"]) for g in opt.param_groups)
    assert n_opt == sum(1 for p in model.parameters() if p.requires_grad)
    official = build_step4_optimizer(model, config.train.__class__(recipe="official"))
    assert isinstance(official, torch.optim.Adam)
    trans = dataclasses_replace_kind(config, "transformer")
    model = build_step4_model(trans, in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5)
    assert isinstance(model.aggregator, Aggregator)
    with pytest.raises(TypeError, match="Step4Config"):
        build_step4_model(
            object(),  # type: ignore[arg-type]
            in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5,
        )  # fmt: skip


def dataclasses_replace_kind(config: Step4Config, kind: str) -> Step4Config:
    import dataclasses

    return dataclasses.replace(config, aggregator=dataclasses.replace(config.aggregator, kind=kind))


# ----------------------------------------------------------------------------- measurements


def test_saved_tensor_meter_counts_distinct_activation_storages():
    w = nn.Parameter(torch.randn(1000))
    x = torch.randn(1000, requires_grad=True)
    with SavedTensorMeter(exclude=[w]) as meter:
        y = (x * w).sum()  # saves x and w; w is excluded
        v = x.view(10, 100)
        y2 = (v * v).sum()  # saves the view of x twice: same storage
    assert meter.bytes == 1000 * 4
    del y, y2
    lin = nn.Linear(100, 100)
    inner = nn.Sequential(nn.Linear(100, 100), nn.Tanh())
    with SavedTensorMeter(exclude=[*lin.parameters(), *inner.parameters()], scope=inner) as m2:
        h = lin(torch.randn(8, 100))
        out = inner(h.tanh()).sum()
    # outside the scope: lin's input and the tanh output; inside: the inner Linear's input (the
    # same tanh output, counted once overall) and the inner Tanh's output
    assert m2.scoped_bytes == 2 * 8 * 100 * 4
    assert m2.bytes == 3 * 8 * 100 * 4
    del out
    # the hooks are removed on exit
    inner(torch.randn(2, 100))
    assert m2.scoped_bytes == 2 * 8 * 100 * 4


def test_measure_memory_and_time_call():
    lin = nn.Linear(64, 64)
    x = torch.randn(32, 64)
    reading = measure_memory(lambda: lin(x).relu().sum(), module=lin)
    assert reading.method == "saved-tensors" and reading.scoped_bytes is None
    assert reading.bytes >= 32 * 64 * 4  # the input; the relu output too
    calls = []
    s = time_call(lambda: calls.append(1), repeats=3, warmup=2)
    assert s >= 0 and len(calls) == 5
    with pytest.raises(ValueError, match="repeats"):
        time_call(lambda: None, repeats=0)


def test_tost_activation_memory_is_linear_in_tokens():
    rows = bench_aggregators(
        TINY_MODEL, AggregatorConfig(), lengths=[64, 256, 1024], batch=1, repeats=1
    )
    mib = {(r["kind"], r["n"]): r["mib"] for r in rows}
    assert {r["memory"] for r in rows} == {"saved-tensors"}
    ratio = mib[("tost", 1024)] / mib[("tost", 256)]
    assert 3.8 < ratio < 4.2  # linear: 4× the tokens, 4× the memory
    # softmax attention saves N×N weights per head: more than linear, and more than ToST
    assert mib[("transformer", 1024)] / mib[("transformer", 256)] > 6
    assert mib[("transformer", 1024)] > mib[("tost", 1024)]
    table = format_aggregator_table(rows)
    assert "ToST MiB" in table and "| 1024" in table


def test_bench_model_steps_rows():
    rows = bench_model_steps(
        _tiny_config(), in_channels=1, image_size=(8, 8), action_dim=5, lengths=[2, 4], batch=2,
        repeats=1,
    )  # fmt: skip
    assert [(r["kind"], r["m"]) for r in rows] == [
        ("tost", 2), ("tost", 4), ("transformer", 2), ("transformer", 4)
    ]  # fmt: skip
    for r in rows:
        assert r["ms"] > 0 and 0 < r["agg_mib"] < r["mib"]
    assert "ToST step ms" in format_model_table(rows)


def test_bench_streaming_is_exact_and_constant_size():
    rows = bench_streaming(TINY_MODEL, AggregatorConfig(), lengths=[4, 64, 256], repeats=1)
    assert [r["t"] for r in rows] == [4, 64, 256]
    assert all(r["max_abs_diff"] < 1e-5 for r in rows)
    assert len({r["tost_state_kib"] for r in rows}) == 1
    ctx = [r["transformer_context_kib"] for r in rows]
    assert ctx[2] == pytest.approx(4 * ctx[1]) and ctx[1] == pytest.approx(16 * ctx[0])
    assert "ToST state KiB" in format_streaming_table(rows)
    with pytest.raises(ValueError, match=">= 2"):
        bench_streaming(TINY_MODEL, AggregatorConfig(), lengths=[1], repeats=1)


# ----------------------------------------------------------------------------- features, run


def _digits_loader(m: int):
    from jepa_blocks.data import SequenceLoader

    data = build_data(DataConfig(dataset="digits", views="affine", train_subset=24))
    loader = SequenceLoader(
        data.train, data.views, num_observed=m, batch_size=10, seed=3, shuffle=False
    )
    return data, loader


@pytest.mark.parametrize("kind", ["tost", "transformer"])
def test_extract_stream_features(kind):
    config = dataclasses_replace_kind(_tiny_config(), kind)
    model = build_step4_model(config, in_channels=1, action_dim=5, total_steps=1, steps_per_epoch=1)
    _, loader = _digits_loader(6)
    f = extract_stream_features(model, loader, [4, 1, 6], passes=2)
    assert isinstance(f, StreamFeatures) and f.lengths == (1, 4, 6)
    assert f.z.shape == (48, 2, 16) and f.z_agg.shape == (48, 3, 24)
    assert f.labels.shape == (48,) and f.actions.shape == (48, 1, 5)
    assert f.max_abs_diff < 1e-4
    assert f.max_abs_diff_f64 < 1e-12 if kind == "tost" else f.max_abs_diff_f64 == 0.0
    fs = f.at(4)
    assert isinstance(fs, FeatureSet) and fs.z_agg.shape == (48, 24)
    # the streamed aggregate equals the full-sequence aggregate of that prefix
    model.eval()
    loader.set_epoch(0)
    batch = next(iter(loader))
    with torch.no_grad():
        z = model.encode(batch.views[:, :4])
        ref = model.aggregate(z, batch.actions[:, :4])
    torch.testing.assert_close(f.z_agg[:10, 1], ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not one of"):
        f.at(5)
    with pytest.raises(ValueError, match="observed views"):
        extract_stream_features(model, loader, [8])


def test_length_table():
    table = format_length_table({1: 0.5, 4: 0.75}, {1: 0.25, 4: 0.3}, 4)
    assert "4 (= M_tr)" in table and "75.0 %" in table and "30.0 %" in table
    assert "—" in format_length_table({1: 0.5}, None, 2)


def test_run_step4_end_to_end(tmp_path):
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
    config = load_step4_config(preset=None, overrides=overrides)
    result = run_step4(config, verbose=False)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["step"] == "step4" and data["aggregator"] == "tost" and data["preset"] == "tiny"
    assert data["metrics"]["stream_max_abs_diff"] < 1e-2
    assert data["metrics"]["stream_max_abs_diff_f64"] < 1e-12
    assert set(data["metrics"]["linacc_by_length"]) == {"1", "3", "6"}
    assert set(data["random_init"]["linacc_by_length"]) == {"1", "3", "6"}
    assert {"aggregator", "model", "streaming"} == set(data["bench"])
    assert len(data["bench"]["aggregator"]) == 2 and len(data["bench"]["streaming"]) == 2
    assert data["gate"]["name"] == "step4"
    assert set(result.tables) == {"probes", "lengths", "aggregator", "model", "streaming"}
    assert data["plots"] and all((tmp_path / p).is_file() for p in data["plots"])
    assert (tmp_path / "checkpoint.pt").is_file()


def test_run_step4_trains_on_64_view_sequences(tmp_path):
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
    config = load_step4_config(preset=None, overrides=overrides)
    assert config.data.num_observed == 64
    run_step4(config, verbose=False)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["config"]["data"]["num_observed"] == 64 and data["train"]["steps"] == 4
    assert set(data["metrics"]["linacc_by_length"]) == {"1", "64"}
    assert data["metrics"]["stream_max_abs_diff_f64"] < 1e-9  # streamed == full over 64 views
