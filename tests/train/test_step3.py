"""Step 3: CRATE parts for seq-JEPA, their diagnostics, plots, the side-by-side table, the run."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from einops import rearrange
from torch import nn

from jepa_blocks import SeqJEPA, StopGradTarget
from jepa_blocks.blocks import CRATEAlphaLayer, CRATELayer, CRATERecorder
from jepa_blocks.seq import Aggregator, Predictor
from jepa_blocks.seq.crate_predictor import CRATEPredictor
from jepa_blocks.train.config import apply_overrides
from jepa_blocks.train.experiment import (
    VARIANTS,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    build_data,
    load_experiment_config,
)
from jepa_blocks.train.step3 import (
    ARMS,
    DEFAULT_ARMS,
    CRATEConfig,
    build_arm_model,
    crate_aggregator,
    crate_diagnostics,
    crate_predictor,
    format_side_by_side,
    main,
    make_monitor,
    plot_head_specialization,
    plot_layer_profiles,
    plot_monitor_history,
    rotation_delta_spectrum,
    run_step3,
    weighted_specialization,
    with_parts,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "examples" / "configs"


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
    with pytest.raises(TypeError, match="crate must be a CRATEConfig"):
        crate_aggregator(20, {}, depth=1, heads=2)  # type: ignore[arg-type]


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


# ----------------------------------------------------------------------------- diagnostics


def test_monitor_logs_ranks_and_per_layer_crate_diagnostics():
    batch = _batch()
    plain = _build("none").eval()
    with torch.no_grad():
        assert set(make_monitor(batch)(plain, 0)) == {"rank_z_agg", "rank_z"}
    model = _build("both").eval()
    with torch.no_grad():
        logged = make_monitor(batch, eps=0.1)(model, 0)
    expected = {"rank_z_agg", "rank_z"} | {
        f"{s}_{what}_{i}" for s in ("agg", "pred")
        for what in ("rate", "sparsity", "spec", "head_r2") for i in range(2)
    }  # fmt: skip
    assert set(logged) == expected
    assert all(0.0 <= logged[f"{s}_spec_{i}"] <= 1.0 for s in ("agg", "pred") for i in range(2))
    assert all(isinstance(v, float) for v in logged.values())
    assert all(0.0 <= logged[f"agg_sparsity_{i}"] <= 1.0 for i in range(2))
    # The hooks are removed afterwards.
    assert not model.aggregator.blocks[0]._forward_hooks
    # Same numbers as a recorder on the aggregator.
    with CRATERecorder(model.aggregator) as rec, torch.no_grad():
        model(batch.views, batch.actions)
    torch.testing.assert_close(
        torch.tensor([logged["agg_rate_0"], logged["agg_rate_1"]]),
        rec.coding_rates(eps=0.1).mean(dim=1),
    )


def test_monitor_head_specialisation_equals_crate_diagnostics_on_the_batch():
    """The per-epoch specialisation is crate_diagnostics' on the fixed batch (same split)."""
    batch = _batch(b=16)
    model = _build("both").eval()
    with torch.no_grad():
        logged = make_monitor(batch)(model, 0)
    diag = crate_diagnostics(model, [batch], max_samples=16)
    for key in ("agg", "pred"):
        d = diag[key]
        for i in range(2):
            assert logged[f"{key}_spec_{i}"] == pytest.approx(
                weighted_specialization(d.head_r2[i], d.specialization[i]), abs=1e-5
            )
            assert logged[f"{key}_head_r2_{i}"] == pytest.approx(
                float(d.head_r2[i].max(dim=0).values.mean()), abs=1e-5
            )
    # Fewer than 4 sequences: no held-out split, no specialisation keys.
    with torch.no_grad():
        small = make_monitor(_batch(b=3))(model, 0)
    assert "agg_rate_0" in small and not any("_spec_" in k or "_head_r2_" in k for k in small)


def test_monitor_with_symmetric_model_uses_the_forward_half():
    batch = _batch()
    model = _build("both", symmetric=True).eval()
    with torch.no_grad():
        logged = make_monitor(batch)(model, 0)
    assert "pred_rate_1" in logged


def test_crate_diagnostics_shapes_and_values():
    model = _build("both").train()
    batches = [_batch(b=10), _batch(b=10)]
    diag = crate_diagnostics(model, batches, eps=0.1, max_samples=15)
    assert model.training  # restored
    assert set(diag) == {"agg", "pred"}
    agg, pred = diag["agg"], diag["pred"]
    assert agg.samples == pred.samples == 15
    assert agg.rates.shape == (2,) and agg.rates_std.shape == (2,)
    assert agg.sparsity.shape == (2,) and bool(((agg.sparsity >= 0) & (agg.sparsity <= 1)).all())
    assert agg.head_r2.shape == (2, 2, 5) and pred.head_r2.shape == (2, 2, 5)
    assert agg.specialization.shape == (2, 5)
    assert agg.action == "a_1" and pred.action == "a_M"
    # R^c is bounded by K · n/2 · log(1 + p / (N eps²)) (unit-norm tokens, n = min(N, p)).
    import math

    assert agg.rate_max == pytest.approx(2 * 0.5 * 4 * math.log1p(10 / (4 * 0.01)))  # [AGG] + 3
    assert pred.rate_max == pytest.approx(2 * 0.5 * 2 * math.log1p(8 / (2 * 0.01)))
    assert bool((agg.rates <= agg.rate_max + 1e-3).all())
    assert bool((pred.rates <= pred.rate_max + 1e-3).all())
    assert bool((agg.head_r2 <= 1 + 1e-6).all())
    assert crate_diagnostics(_build("none"), batches) == {}
    with pytest.raises(ValueError, match="at least 4 sequences"):
        crate_diagnostics(model, [])
    with pytest.raises(ValueError, match="ridge must be a finite number > 0"):
        crate_diagnostics(model, batches, ridge=0.0)


def test_heldout_r2_against_least_squares():
    from jepa_blocks.train.step3 import _heldout_r2

    g = torch.Generator().manual_seed(0)
    h = torch.randn(400, 3, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, 2, generator=g, dtype=torch.float64)
    a = h[:, 1] @ w + 0.5  # head 1 explains the action exactly, with an offset
    r2 = _heldout_r2(h[:200], a[:200], h[200:], a[200:], 1e-9)
    assert r2.shape == (3, 2)
    torch.testing.assert_close(r2[1], torch.ones(2, dtype=torch.float64))
    assert float(r2[0].max()) < 0.1 and float(r2[2].max()) < 0.1


def test_crate_diagnostics_matches_the_recorder_on_one_batch():
    model = _build("aggregator").eval()
    batch = _batch(b=16)
    diag = crate_diagnostics(model, [batch], eps=0.2)["agg"]
    with CRATERecorder(model.aggregator) as rec, torch.no_grad():
        model(batch.views, batch.actions)
    torch.testing.assert_close(diag.rates, rec.coding_rates(eps=0.2).mean(dim=1))
    torch.testing.assert_close(diag.sparsity, rec.sparsities())


def test_head_specialisation_finds_the_head_that_carries_the_action():
    """Plant the action in one head's input projection: that head alone explains it."""
    torch.manual_seed(0)
    model = _build("aggregator").eval()
    layer = model.aggregator.blocks[0]
    with torch.no_grad():
        layer.attn.qkv.weight.zero_()
        # Head 0 (rows 0..9 of qkv) reads the action embedding coordinates 16..19 of the tokens.
        layer.attn.qkv.weight[0:4, 16:20] = torch.eye(4)
        model.action_encoder.eval()
    diag = crate_diagnostics(model, [_batch(b=200)])["agg"]
    r2 = diag.head_r2[0]  # (K, A)
    assert float(r2[0].mean()) > 0.1 and float(r2[1].max()) < 0.02  # head 1 sees nothing


class _PlanarEncoder(nn.Module):
    """Δz of any pair lies in a fixed 2-D subspace of R^6."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Linear(64, 2)
        self.embed = torch.randn(2, 6, generator=g)

    def encode(self, views: torch.Tensor) -> torch.Tensor:
        b = views.shape[0]
        z = self.proj(rearrange(views, "b m c h w -> (b m) (c h w)")) @ self.embed
        return rearrange(z, "(b m) d -> b m d", b=b)


def test_rotation_delta_spectrum_of_a_planar_code():
    from jepa_blocks.train.step3 import _rotation_metrics

    data = build_data(DataConfig(dataset="digits", views="affine", train_subset=10, test_subset=60))
    spectrum = rotation_delta_spectrum(_PlanarEncoder(), data.test, angle_deg=60, batch_size=25)
    assert spectrum.shape == (6,) and bool((spectrum[:-1] >= spectrum[1:]).all())
    metrics = _rotation_metrics(spectrum)
    assert metrics["rot_delta_top2"] == pytest.approx(1.0, abs=1e-5)
    assert 1.0 <= metrics["rot_delta_rank"] <= 2.0 + 1e-6
    flat = _rotation_metrics(torch.ones(8))
    assert flat["rot_delta_top2"] == pytest.approx(0.25) and flat[
        "rot_delta_rank"
    ] == pytest.approx(8)
    discrete = rotation_delta_spectrum(_PlanarEncoder(), data.test, discrete=True)
    assert discrete.shape == (6,)


# ----------------------------------------------------------------------------- report


def test_format_side_by_side():
    step1 = {"linacc": 0.9, "r2": 0.5, "rank_z_agg": 10.0, "dim_z_agg": 20, "rot_delta_top2": 0.3}
    step3 = {
        **step1, "linacc": 0.8, "agg_sparsity": 0.5, "agg_rates": [3.0, 2.5], "agg_rate_max": 4.0,
        "agg_specialization": 0.25, "r2": float("nan"),
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
    assert body["effective rank z_agg"] == ["10.0 / 20", "10.0 / 20"]
    assert body["rotation Δz: top-2 variance"] == ["30.0 %", "30.0 %"]
    assert body["ISTA sparsity, aggregator"] == ["—", "50.0 %"]
    assert body["R^c by layer / max, aggregator"] == ["—", "3.0 → 2.5 / 4.0"]
    assert "ISTA sparsity, predictor" not in body  # rows nobody has are left out
    with pytest.raises(ValueError, match="at least one arm"):
        format_side_by_side({})


def test_weighted_specialization():
    from jepa_blocks.blocks import specialization_score
    from jepa_blocks.train.step3 import weighted_specialization

    # Coordinate 0: one head explains it well; coordinate 1: noise that happens to be "specialised".
    r2 = torch.tensor([[0.8, 0.02], [0.0, -0.01], [0.0, 0.0]])
    scores = specialization_score(r2)
    assert scores.tolist() == pytest.approx([1.0, 1.0])
    assert weighted_specialization(r2, scores) == pytest.approx(1.0)
    r2 = torch.tensor([[0.4, 0.02], [0.4, 0.0], [0.4, 0.0]])
    scores = specialization_score(r2)
    w = weighted_specialization(r2, scores)
    assert w == pytest.approx((0.4 * float(scores[0]) + 0.02 * 1.0) / 0.42)
    assert w < 0.1 < float(scores.mean())
    assert weighted_specialization(torch.zeros(3, 2), torch.ones(2)) == 0.0


def test_table_rows_adds_random_init_values():
    from jepa_blocks.train.step3 import ArmResult, table_rows

    arm = ArmResult(
        "step1", ExperimentConfig(), {"linacc": 0.5}, {"linacc": 0.25, "r2": 0.1, "x": 1.0},
        [], {}, 1,
    )  # fmt: skip
    assert table_rows(arm) == {"linacc": 0.5, "init/linacc": 0.25, "init/r2": 0.1}
    assert table_rows(dataclasses.replace(arm, random_init=None)) == {"linacc": 0.5}
    assert "at init: linacc(z_agg)" in format_side_by_side({"step1": table_rows(arm)})


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
)  # fmt: skip


def _tiny_configs(arms, *extra):
    configs = {}
    for name in arms:
        arm = ARMS[name]
        variant = arm.variant or "stopgrad-rate"
        configs[name] = load_experiment_config(
            variant=variant, overrides=[*_TINY, f"step={arm.step}", *extra]
        )
    return configs


def test_run_step3_end_to_end(tmp_path):
    configs = _tiny_configs(["step1", "step3-both"], "eval.baseline=true")
    crate = CRATEConfig(pred_heads=2, diag_samples=30)
    result = run_step3(configs, crate, out_dir=tmp_path, verbose=False)
    report = json.loads((tmp_path / "step3.json").read_text())
    assert list(report["arms"]) == ["step1", "step3-both"]
    assert report["arms"]["step1"]["variant"] == "baseline"
    assert report["arms"]["step3-both"]["integration"] == "both"
    assert report["arms"]["step3-both"]["config"]["model"]["target"] == "stopgrad"
    m1, m3 = (report["arms"][n]["metrics"] for n in ("step1", "step3-both"))
    assert "agg_rates" not in m1 and 0.0 <= m1["rot_delta_top2"] <= 1.0
    assert len(m1["rot_delta_spectrum"]) == 16
    assert len(m3["agg_rates"]) == 2 and len(m3["pred_rates"]) == 2
    assert 0.0 <= m3["agg_sparsity"] <= 1.0 and 0.0 <= m3["pred_specialization"] <= 1.0
    assert report["arms"]["step3-both"]["random_init"]["agg_rates"]
    assert (tmp_path / "table.md").read_text().strip() == result.table
    assert "step3-both" in result.table.splitlines()[0]
    init_row = next(r for r in result.table.splitlines() if "at init: linacc" in r)
    assert f"{100 * result.arms['step1'].random_init['linacc']:.1f} %" in init_row
    for name in report["plots"]:
        assert (tmp_path / name).stat().st_size > 0
    assert {"crate_layer_rates.png", "crate_layer_sparsity.png", "rotation_delta_spectrum.png",
            "head_specialization_step3-both_agg.png", "crate_history_step3-both.png"} <= set(
        report["plots"]
    )  # fmt: skip
    # The loop recorded the CRATE diagnostics after every epoch (metrics.jsonl / metrics.csv).
    evals = [r for r in result.arms["step3-both"].history if "eval/agg_rate_0" in r]
    assert [r["epoch"] for r in evals] == [1, 2]
    with open(tmp_path / "step3-both" / "metrics.csv", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert {"eval/agg_rate_1", "eval/pred_sparsity_0", "eval/rank_z_agg"} <= set(header)
    assert {"eval/agg_spec_1", "eval/pred_head_r2_0"} <= set(header)  # monitor_size 16 >= 4
    assert (tmp_path / "step1" / "checkpoint.pt").is_file()


def test_run_step3_checks_its_arguments():
    configs = _tiny_configs(["step1", "step2"])
    bad = dict(configs)
    bad["step2"] = apply_overrides(configs["step2"], ["data.train_subset=32"])
    with pytest.raises(ValueError, match="same data config"):
        run_step3(bad, CRATEConfig(), verbose=False)
    with pytest.raises(ValueError, match="unknown arm"):
        run_step3({"step9": configs["step1"]}, CRATEConfig(), verbose=False)
    with pytest.raises(TypeError, match="crate must be a CRATEConfig"):
        run_step3(configs, {}, verbose=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one arm"):
        run_step3({}, CRATEConfig(), verbose=False)
    weird = dataclasses.replace(configs["step1"], variant="nope")
    with pytest.raises(ValueError, match="not a known variant"):
        run_step3({"step1": weird}, CRATEConfig(), verbose=False)


def test_arms_and_defaults():
    assert DEFAULT_ARMS == ("step1", "step2", "step3-agg", "step3-pred")
    assert ARMS["step1"].variant == "baseline" and ARMS["step3-agg"].integration == "aggregator"
    assert all(a.variant is None or a.variant in VARIANTS for a in ARMS.values())
    assert isinstance(ExperimentConfig(), ExperimentConfig)


def test_main_rejects_bad_arguments(capsys):
    for argv, msg in (
        (["--arms", "step1,step7"], "unknown arm"),
        (["crate.nope=1"], "unknown config key"),
        (["model.nope=1"], "unknown config key"),
        (["crate.layer=vit"], "crate"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv, config_dir=CONFIG_DIR)
        assert e.value.code == 2
        assert msg in capsys.readouterr().err
