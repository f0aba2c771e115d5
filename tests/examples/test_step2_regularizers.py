"""Step 2's head to head: every --regularizer × --target builds and trains; signs; subspace keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common import RecipeConfig, load_config
from jepa_blocks import (
    CodingRate,
    EMATarget,
    OnlineTarget,
    SIGReg,
    StopGradTarget,
    SubspaceProjection,
    SubspaceRateReduction,
    UnitNormRate,
    VICRegRegularizer,
)
from jepa_blocks.metrics import EvalConfig, FeatureSet
from parts import ModelConfig, build_model
from step1_baseline import SUBSPACE_KEYS, paired_projection, subspace_metrics
from step2_teacherless import REGULARIZERS, TARGETS, main

ROOT = Path(__file__).resolve().parents[2]
M = 3  # observed views of the tiny sequences
TINY = dict(
    encoder_dim=16, cnn_width=4, action_embed_dim=4, predictor_hidden=16, depth=1, heads=2,
    mlp_ratio=2, subspace_dim=4, subspace_invariant=2, subspace_equivariant=2, sigreg_slices=32,
)  # fmt: skip
TARGET_TYPES = {"ema": EMATarget, "stopgrad": StopGradTarget, "online": OnlineTarget}
REGULARIZER_TYPES = {
    "none": type(None),
    "coding-rate": UnitNormRate,
    "sigreg": SIGReg,
    "vicreg": VICRegRegularizer,
    "subspace": SubspaceRateReduction,
}


def _model(regularizer: str, target: str, **kw):
    config = ModelConfig(**{**TINY, "regularizer": regularizer, "target": target, **kw})
    return build_model(
        config, in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5, num_observed=M
    )


def _batch(b: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, M + 1, 1, 8, 8, generator=g), torch.randn(b, M, 5, generator=g)


def test_the_options_are_the_configs_literals():
    assert set(REGULARIZERS) == set(REGULARIZER_TYPES)
    assert set(TARGETS) == set(TARGET_TYPES)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("regularizer", REGULARIZERS)
def test_every_combination_builds_and_trains_one_step(regularizer, target):
    torch.manual_seed(0)
    model = _model(regularizer, target)
    assert isinstance(model.target, TARGET_TYPES[target])
    assert isinstance(model.regularizer, REGULARIZER_TYPES[regularizer])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    before = [p.detach().clone() for p in params]
    views, actions = _batch()
    out = model(views, actions)
    assert torch.isfinite(out.loss) and out.loss.ndim == 0
    assert (out.rate is None) is (regularizer == "none")
    assert out.target.requires_grad is (target == "online")  # no stop-gradient: online only
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    model.update()
    assert any(not torch.equal(p, q) for p, q in zip(params, before))
    assert int(model.step) == 1
    if regularizer == "sigreg":
        assert int(model.regularizer.step) == 1  # new slices at the next step
    assert torch.isfinite(model(views, actions).loss)


@pytest.mark.parametrize(
    ("regularizer", "kind", "on", "weight"),
    [
        ("coding-rate", "rate", "z_agg", "rate_weight"),
        ("sigreg", "penalty", "z_agg", "sigreg_weight"),
        ("vicreg", "penalty", "z_agg", "vicreg_weight"),
        ("subspace", "rate", "z", "subspace_weight"),
    ],
)
def test_rates_are_subtracted_and_penalties_added(regularizer, kind, on, weight):
    torch.manual_seed(0)
    model = _model(regularizer, "stopgrad", **{weight: 0.25})
    assert model.regularizer_kind == kind and model.regularize_on == on
    assert model.regularizer_weight == 0.25
    out = model(*_batch())
    sign = -1.0 if kind == "rate" else 1.0
    torch.testing.assert_close(out.loss, out.prediction_loss + sign * 0.25 * out.rate)
    if kind == "penalty":
        assert float(out.rate.detach()) > 0  # SIGReg and VICReg are >= 0: adding them costs


def test_regularizer_options_reach_the_parts():
    sig = _model("sigreg", "stopgrad", sigreg_slices=7).regularizer
    assert sig.num_slices == 7
    vic = _model(
        "vicreg", "stopgrad", vicreg_variance_weight=3.0, vicreg_covariance_weight=0.5
    ).regularizer
    assert (vic.variance_weight, vic.covariance_weight) == (3.0, 0.5)
    sub = _model("subspace", "stopgrad", subspace_split_weight=0.5, rate_eps=0.25).regularizer
    assert sub.projection.parts == {"invariant": 2, "equivariant": 2}
    assert sub.projection.subspace_dim == 4 and sub.num_observed == M
    assert (sub.split_weight, sub.projection.eps) == (0.5, 0.25)
    rate = _model("coding-rate", "stopgrad").regularizer
    assert isinstance(rate, UnitNormRate) and isinstance(rate.rate, CodingRate)
    with pytest.raises(ValueError, match="num_observed"):
        build_model(
            ModelConfig(**{**TINY, "regularizer": "subspace"}),
            in_channels=1, action_dim=5, total_steps=10, steps_per_epoch=5,
        )  # fmt: skip


def _features(n: int, d: int = 16, seed: int = 0) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    return FeatureSet(
        z=torch.randn(n, M + 1, d, generator=g),
        z_agg=torch.randn(n, d + 4, generator=g),
        labels=torch.arange(n) % 3,
        actions=torch.randn(n, M, 5, generator=g),
    )


def test_paired_projection_and_subspace_metrics_keys():
    torch.manual_seed(0)
    proj = SubspaceProjection(16, subspace_dim=4, parts={"invariant": 2, "equivariant": 1})
    pair = paired_projection(proj)
    z1, z2 = torch.randn(5, 16), torch.randn(5, 16)
    for name in ("invariant", "equivariant"):
        expected = torch.cat([proj.part(z1, name), proj.part(z2, name)], dim=1)
        torch.testing.assert_close(pair.part(torch.cat([z1, z2], dim=1), name), expected)
    config = EvalConfig(regressor="linear", classifier="ridge")
    out = subspace_metrics(proj, _features(60), _features(30, seed=1), config)
    assert tuple(out) == SUBSPACE_KEYS
    assert all(isinstance(v, float) for k, v in out.items() if not k.startswith("dim_"))
    assert (out["dim_inv"], out["dim_eq"]) == (8, 4)
    assert out["eq_inv_r2_gap"] == pytest.approx(out["eq_r2"] - out["inv_r2"])
    assert out["explained_variance_inv"] + out["explained_variance_eq"] <= 1.0 + 1e-6


def test_cli_maps_the_options_to_overrides_after_the_variant(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--variant", "ema-rate", "--regularizer", "sigreg", "--target", "online",
              "--print-config"])  # fmt: skip
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "regularizer: sigreg" in printed and "target: online" in printed
    # The options name the default output directory: another run, not a resume of the variant's.
    assert "out_dir: runs/step2-ema-rate-cpu-demo-sigreg-online\n" in printed
    config = load_config(
        RecipeConfig, step="step2", variant="ema-rate",
        overrides=["model.regularizer=vicreg", "model.target=online", "model.vicreg_weight=2"],
    )  # fmt: skip
    assert (config.model.regularizer, config.model.target) == ("vicreg", "online")
    assert config.model.vicreg_weight == 2.0


def test_subspace_smoke_run_writes_the_part_metrics(tmp_path):
    cmd = [sys.executable, str(ROOT / "examples" / "step2_teacherless.py"), "--smoke",
           "--regularizer", "subspace", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "equivariant part" in proc.stdout  # the split's table was printed
    data = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert data["config"]["model"]["regularizer"] == "subspace"
    for record in (data["metrics"], data["random_init"]):
        assert set(SUBSPACE_KEYS) <= set(record)
        assert all(isinstance(record[k], (int, float)) for k in SUBSPACE_KEYS)
