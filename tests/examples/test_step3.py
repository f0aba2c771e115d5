"""Step 3 recipe (``examples/step3_crate.py`` and ``step3_parts.py``): config and arms, CRATE
parts, the side-by-side table, plots, a whole run and the command line."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

import step3_crate
from common import load_config
from jepa_blocks import SeqJEPA, StopGradTarget
from jepa_blocks.blocks import CRATEAlphaLayer, CRATELayer
from jepa_blocks.seq import Aggregator, CRATEPredictor, Predictor
from parts import ModelConfig
from step2_teacherless import VARIANTS
from step3_parts import (
    Arm,
    CRATEConfig,
    Step3Config,
    arm_config,
    arm_names,
    build_arm_model,
    crate_aggregator,
    crate_predictor,
    format_side_by_side,
    load_arm,
    plot_head_specialization,
    plot_layer_profiles,
    plot_monitor_history,
    table_rows,
    with_parts,
)


def _model_config(**kw) -> ModelConfig:
    base = dict(
        encoder_dim=16, cnn_width=4, action_embed_dim=4, predictor_hidden=16, depth=2, heads=2,
        mlp_ratio=2, target="stopgrad", regularizer="coding-rate",
    )  # fmt: skip
    base.update(kw)
    return ModelConfig(**base)


def _build(integration: str, crate: CRATEConfig | None = None, **kw) -> SeqJEPA:
    torch.manual_seed(0)
    return build_arm_model(
        _model_config(**kw), crate or CRATEConfig(pred_heads=2), integration=integration,
        in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5,
    )  # fmt: skip


def _batch(b: int = 12, m: int = 3, size: int = 8) -> SimpleNamespace:
    g = torch.Generator().manual_seed(1)
    return SimpleNamespace(
        views=torch.randn(b, m + 1, 1, size, size, generator=g),
        actions=torch.randn(b, m, 5, generator=g),
    )


# ----------------------------------------------------------------------------- config and arms


def test_arms_are_yaml_files_and_the_default_list():
    assert set(arm_names()) == {"step1", "step2", "step3-agg", "step3-pred", "step3-both"}
    assert load_arm("step1") == Arm(
        description=load_arm("step1").description, step="step1", variant="baseline",
        integration="none",
    )  # fmt: skip
    assert load_arm("step3-agg").integration == "aggregator" and load_arm("step2").variant is None
    assert all(load_arm(a).variant in (None, *VARIANTS, "baseline") for a in arm_names())
    config = load_config(Step3Config, step="step3", preset="cpu-demo", variant="stopgrad-rate")
    assert config.arms == ["step1", "step2", "step3-agg", "step3-pred"]
    assert config.step == "step3" and config.crate == CRATEConfig()
    smoke = load_config(Step3Config, step="step3", preset="cpu-demo", smoke=True)
    assert smoke.train.max_steps == 3 and smoke.eval.classifier == "ridge"
    assert not smoke.eval.baseline and smoke.data.test_subset == 256
    with pytest.raises(ValueError, match="unknown arm"):
        load_arm("step7")


def test_config_checks_its_arms():
    over = ["arms=[step2,step3-both]", "crate.layer=crate-alpha"]
    config = load_config(Step3Config, step="step3", preset=None, overrides=over)
    assert config.arms == ["step2", "step3-both"] and config.crate.layer == "crate-alpha"
    with pytest.raises(ValueError, match="unknown arm"):
        load_config(Step3Config, step="step3", preset=None, overrides=["arms=[step1,step7]"])
    with pytest.raises(ValueError, match="must not repeat"):
        load_config(Step3Config, step="step3", preset=None, overrides=["arms=[step1,step1]"])
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(Step3Config, step="step3", preset=None, overrides=["crate.nope=1"])
    with pytest.raises(ValueError, match=r"crate\.layer must be one of"):
        load_config(Step3Config, step="step3", preset=None, overrides=["crate.layer=vit"])


def test_arm_config_takes_the_arm_step_and_variant():
    config = load_config(
        Step3Config, step="step3", preset="cpu-demo", variant="symmetric",
        overrides=["train.epochs=2"],
    )  # fmt: skip
    step1 = arm_config(config, load_arm("step1"))
    assert step1.step == "step1" and step1.variant == "baseline"
    assert step1.model.target == "ema" and step1.model.regularizer == "none"
    assert not step1.model.symmetric
    for name in ("step2", "step3-agg"):
        cfg = arm_config(config, load_arm(name))
        assert cfg.variant == "symmetric" and cfg.model.symmetric and cfg.model.target == "stopgrad"
    assert arm_config(config, load_arm("step2")).step == "step2"
    assert arm_config(config, load_arm("step3-pred")).step == "step3"
    # Every arm shares the data, the loop and the evaluation of the run.
    for name in arm_names():
        cfg = arm_config(config, load_arm(name))
        assert cfg.data == config.data and cfg.train == config.train and cfg.eval == config.eval


# ----------------------------------------------------------------------------- parts


def test_crate_aggregator_is_an_aggregator_over_crate_layers():
    agg = crate_aggregator(20, CRATEConfig(eta=0.05, lambd=0.2, tie_out=True), depth=3, heads=4)
    assert isinstance(agg, Aggregator) and len(agg.blocks) == 3
    layer = agg.blocks[0]
    assert isinstance(layer, CRATELayer) and layer.attn.heads == 4 and layer.attn.tie_out
    assert layer.ista.eta == 0.05 and layer.ista.lambd == 0.2
    assert agg(torch.randn(2, 5, 20)).shape == (2, 20)
    mask = torch.tensor([[False] * 5, [False, False, False, True, True]])
    assert agg(torch.randn(2, 5, 20), padding_mask=mask).shape == (2, 20)
    alpha = crate_aggregator(20, CRATEConfig(layer="crate-alpha"), depth=1, heads=2)
    assert isinstance(alpha.blocks[0], CRATEAlphaLayer)
    with pytest.raises(ValueError, match=r"crate\.layer must be one of"):
        crate_aggregator(20, CRATEConfig(layer="vit"), depth=1, heads=2)  # type: ignore[arg-type]


def test_crate_predictor_from_config():
    p = crate_predictor(
        in_dim=24, out_dim=16, action_embed_dim=4,
        crate=CRATEConfig(pred_dim=8, pred_depth=3, pred_heads=2, pred_readout="concat"),
    )  # fmt: skip
    assert isinstance(p, CRATEPredictor) and p.dim == 8 and len(p.blocks) == 3
    assert p.readout == "concat" and p(torch.randn(3, 24)).shape == (3, 16)


def test_with_parts_shares_everything_else():
    model = _build("none", symmetric=True, rate_warmup_epochs=1.0)
    agg = crate_aggregator(20, CRATEConfig(), depth=1, heads=2)
    new = with_parts(model, aggregator=agg)
    assert new.aggregator is agg and new.predictor is model.predictor
    assert new.encoder is model.encoder and new.target is model.target
    assert new.action_encoder is model.action_encoder and new.regularizer is model.regularizer
    for attr in ("regularize_on", "regularizer_weight", "regularizer_warmup_steps", "symmetric",
                 "condition_tokens", "condition_predictor", "last_token_action",
                 "predictor_action"):  # fmt: skip
        assert getattr(new, attr) == getattr(model, attr), attr
    with pytest.raises(ValueError, match=r"predictor\.in_dim"):
        with_parts(model, predictor=Predictor(in_dim=7, out_dim=16))
    with pytest.raises(TypeError, match="model must be a SeqJEPA"):
        with_parts(nn.Linear(2, 2))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "integration, agg_crate, pred_crate",
    [("none", False, False), ("aggregator", True, False), ("predictor", False, True),
     ("both", True, True)],
)  # fmt: skip
def test_build_arm_model(integration, agg_crate, pred_crate):
    model = _build(integration)
    # The encoder is initialised first, so every arm starts from the same encoder.
    reference = _build("none").encoder.state_dict()
    for k, v in model.encoder.state_dict().items():
        torch.testing.assert_close(v, reference[k])
    assert isinstance(model, SeqJEPA) and isinstance(model.target, StopGradTarget)
    assert any(isinstance(m, CRATELayer) for m in model.aggregator.modules()) == agg_crate
    assert isinstance(model.predictor, CRATEPredictor) == pred_crate
    if agg_crate:
        assert len(model.aggregator.blocks) == 2  # model.depth by default
    out = model(_batch().views, _batch().actions)
    assert torch.isfinite(out.loss) and out.rate is not None
    out.loss.backward()


def test_build_arm_model_depth_heads_and_errors():
    model = _build("aggregator", CRATEConfig(agg_depth=1, agg_heads=4))
    assert len(model.aggregator.blocks) == 1 and model.aggregator.blocks[0].attn.heads == 4
    with pytest.raises(ValueError, match="integration must be one of"):
        _build("encoder")


# ----------------------------------------------------------------------------- report


def test_format_side_by_side():
    step1 = {"linacc": 0.9, "r2": 0.5, "rank_z_agg": 10.0, "dim_z_agg": 20, "rot_delta_top2": 0.3}
    step3 = {
        **step1, "linacc": 0.8, "agg_sparsity": 0.5, "agg_rates": [3.0, 2.5], "agg_rate_max": 4.0,
        "agg_specialization": 0.25, "r2": float("nan"), "rot_delta_rank": 3.14,
    }  # fmt: skip
    table = format_side_by_side({"step1": step1, "step3-agg": step3})
    lines = table.splitlines()
    assert lines[0].split("|")[2].strip() == "step1" and "step3-agg" in lines[0]
    assert set(lines[1].replace("|", "").replace(" ", "")) <= {"-", ":"}
    assert len({len(line) for line in lines}) == 1  # aligned
    body = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines
    }
    assert body["linacc(z_agg), test"] == ["90.0 %", "80.0 %"]
    assert body["R² of a_1 from [z_1; z_2]"] == ["0.500", "nan"]
    assert body["effective rank z_agg"] == ["10.0 / 20 (50 %)", "10.0 / 20 (50 %)"]
    assert body["rotation Δz: top-2 variance"] == ["30.0 %", "30.0 %"]
    assert body["rotation Δz: effective rank"] == ["—", "3.1"]
    assert body["ISTA sparsity, aggregator"] == ["—", "50.0 %"]
    assert body["R^c by layer / max, aggregator"] == ["—", "3.0 → 2.5 / 4.0"]
    assert "ISTA sparsity, predictor" not in body  # rows nobody has are left out
    with pytest.raises(ValueError, match="at least one arm"):
        format_side_by_side({})


def test_table_rows_adds_random_init_values():
    rows = table_rows({"linacc": 0.5}, {"linacc": 0.25, "r2": 0.1, "x": 1.0})
    assert rows == {"linacc": 0.5, "init/linacc": 0.25, "init/r2": 0.1}
    assert table_rows({"linacc": 0.5}, None) == {"linacc": 0.5}
    assert "at init: linacc(z_agg)" in format_side_by_side({"step1": rows})


def test_plots(tmp_path):
    fig = plot_layer_profiles(
        {"a": [3.0, 2.0, 1.0], "a init": [3.0, 3.0, 3.0]}, ylabel="R^c", path=tmp_path / "p.png"
    )
    assert len(fig.axes[0].lines) == 2 and (tmp_path / "p.png").stat().st_size > 0
    fig = plot_head_specialization(
        torch.rand(4, 5), action_names=list("abcde"), path=tmp_path / "h.png"
    )
    assert (tmp_path / "h.png").stat().st_size > 0
    history = [
        {"step": 1, "loss": 1.0},
        {"step": 2, "epoch": 1, "eval/rank_z": 3.0, "eval/agg_rate_0": 5.0,
         "eval/agg_sparsity_0": 0.4},
        {"step": 4, "epoch": 2, "eval/rank_z": 3.0, "eval/agg_rate_0": 4.0,
         "eval/agg_sparsity_0": 0.5},
    ]  # fmt: skip
    fig = plot_monitor_history(history, path=tmp_path / "m.png")
    assert fig is not None and (tmp_path / "m.png").stat().st_size > 0
    assert len(fig.axes) == 2
    spec = [dict(r, **{"eval/agg_spec_0": 0.1, "eval/agg_head_r2_0": 0.5}) for r in history[1:]]
    fig = plot_monitor_history(history[:1] + spec, path=tmp_path / "m3.png")
    assert fig is not None and len(fig.axes) == 3
    assert [len(ax.lines) for ax in fig.axes] == [1, 1, 2]
    assert plot_monitor_history(history[:1]) is None
    with pytest.raises(ValueError, match="at least one curve"):
        plot_layer_profiles({}, ylabel="x")
    with pytest.raises(ValueError, match="head_r2 must be a"):
        plot_head_specialization(torch.rand(4))
    with pytest.raises(ValueError, match="action_names must have 5"):
        plot_head_specialization(torch.rand(4, 5), action_names=["a"])


# ----------------------------------------------------------------------------- runs


_TINY = (
    "name=tiny", "data.dataset=digits", "data.train_subset=64", "data.test_subset=40",
    "data.batch_size=32", "data.num_observed=2", "model.encoder_dim=16", "model.cnn_width=4",
    "model.action_embed_dim=4", "model.predictor_hidden=16", "model.depth=2", "model.heads=2",
    "train.epochs=2", "train.warmup_epochs=0", "train.device=cpu", "train.progress=false",
    "train.log_every=1", "train.eval_every_epochs=1", "eval.regressor=linear",
    "eval.monitor_size=16", "eval.batch_size=32", "eval.pixel_baseline=false",
    "crate.pred_heads=2", "crate.diag_samples=30",
)  # fmt: skip


def _tiny_config(*extra: str, out_dir=None) -> Step3Config:
    over = [*_TINY, *extra] + ([f"train.out_dir={out_dir}"] if out_dir is not None else [])
    return load_config(
        Step3Config, step="step3", preset=None, variant="stopgrad-rate", overrides=over
    )


def test_run_end_to_end(tmp_path):
    config = _tiny_config("arms=[step1,step3-both]", "eval.baseline=true", out_dir=tmp_path)
    result = step3_crate.run(config, verbose=False)
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["step"] == "step3" and report["preset"] == "tiny"
    assert list(report["arms"]) == ["step1", "step3-both"]
    assert report["headline"] == "step3-both"
    assert report["metrics"] == report["arms"]["step3-both"]["metrics"]
    assert report["random_init"] == report["arms"]["step3-both"]["random_init"]
    assert report["arms"]["step1"]["variant"] == "baseline"
    assert report["arms"]["step1"]["config"]["model"]["target"] == "ema"
    assert report["arms"]["step3-both"]["integration"] == "both"
    assert report["arms"]["step3-both"]["config"]["model"]["target"] == "stopgrad"
    assert report["arms"]["step3-both"]["config"]["step"] == "step3"
    m1, m3 = (report["arms"][n]["metrics"] for n in ("step1", "step3-both"))
    assert "agg_rates" not in m1 and 0.0 <= m1["rot_delta_top2"] <= 1.0
    assert len(m1["rot_delta_spectrum"]) == 16
    assert len(m3["agg_rates"]) == 2 and len(m3["pred_rates"]) == 2
    assert 0.0 <= m3["agg_sparsity"] <= 1.0 and 0.0 <= m3["pred_specialization"] <= 1.0
    assert report["arms"]["step3-both"]["random_init"]["agg_rates"]
    assert report["arms"]["step1"]["parameters"] > 0
    assert (tmp_path / "table.md").read_text().strip() == result["table"]
    assert "step3-both" in result["table"].splitlines()[0]
    init_row = next(r for r in result["table"].splitlines() if "at init: linacc" in r)
    assert f"{100 * report['arms']['step1']['random_init']['linacc']:.1f} %" in init_row
    for name in report["plots"]:
        assert (tmp_path / name).stat().st_size > 0
    assert {"crate_layer_rates.png", "crate_layer_sparsity.png", "rotation_delta_spectrum.png",
            "head_specialization_step3-both_agg.png", "crate_history_step3-both.png"} <= set(
        report["plots"]
    )  # fmt: skip
    # The loop recorded the CRATE diagnostics after every epoch (metrics.jsonl / metrics.csv).
    evals = [r for r in result["results"]["step3-both"].history if "eval/agg_rate_0" in r]
    assert [r["epoch"] for r in evals] == [1, 2]
    with open(tmp_path / "step3-both" / "metrics.csv", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert {"eval/agg_rate_1", "eval/pred_sparsity_0", "eval/rank_z_agg"} <= set(header)
    assert {"eval/agg_spec_1", "eval/pred_head_r2_0"} <= set(header)  # monitor_size 16 >= 4
    assert (tmp_path / "step1" / "checkpoint.pt").is_file()


def test_run_without_a_step3_arm_reports_the_last_arm(tmp_path):
    config = _tiny_config(
        "arms=[step2]", "eval.baseline=false", "train.epochs=1", "eval.plots=false"
    )
    result = step3_crate.run(config, verbose=False)
    assert result["headline"] == "step2" and result["random_init"] is None
    assert "agg_sparsity" not in result["metrics"] and "rot_delta_top2" in result["metrics"]
    with pytest.raises(ValueError, match="at least one arm"):
        step3_crate.run(_tiny_config("arms=[]"), verbose=False)


def test_main_rejects_bad_arguments(capsys):
    for argv, msg in (
        (["--arms", "step1,step7"], "unknown arm"),
        (["arms=[step1,step7]"], "unknown arm"),
        (["crate.nope=1"], "unknown config key"),
        (["model.nope=1"], "unknown config key"),
        (["crate.layer=vit"], "crate"),
        (["--variant", "baseline"], "invalid choice"),
    ):
        with pytest.raises(SystemExit) as e:
            step3_crate.main(argv)
        assert e.value.code == 2
        assert msg in capsys.readouterr().err


def test_print_config_and_the_arms_option(capsys):
    with pytest.raises(SystemExit) as e:
        step3_crate.main(["--print-config", "--arms", "step2,step3-both", "crate.tie_out=true"])
    assert e.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["arms"] == ["step2", "step3-both"] and printed["crate"]["tie_out"] is True
    assert printed["step"] == "step3" and printed["variant"] == "stopgrad-rate"
    assert printed["train"]["out_dir"] == "runs/step3-stopgrad-rate-cpu-demo"
    # key=value wins over --arms (it comes later).
    with pytest.raises(SystemExit):
        step3_crate.main(["--print-config", "--arms", "step2", "arms=[step1]"])
    assert yaml.safe_load(capsys.readouterr().out)["arms"] == ["step1"]
