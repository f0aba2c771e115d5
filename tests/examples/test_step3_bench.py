"""``benchmarks/bench_crate_arms.py``: step-3 arms timed and measured per step; plus the subset
option of ``benchmarks/bench_attention.py`` (moved here with the step-3 benchmark tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import step3_parts
from common import load_config
from jepa_blocks.blocks import CRATELayer
from step3_parts import Step3Config

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    yield _load("bench_crate_arms")
    sys.modules.pop("bench_crate_arms", None)


@pytest.fixture(scope="module")
def attention():
    yield _load("bench_attention")
    sys.modules.pop("bench_attention", None)


def _tiny_config(*extra: str) -> Step3Config:
    return load_config(
        Step3Config,
        step="step3",
        preset=None,
        variant="stopgrad-rate",
        overrides=[
            "name=tiny", "data.dataset=digits", "data.num_observed=2", "data.batch_size=6",
            "model.encoder_dim=16", "model.cnn_width=4", "model.action_embed_dim=4",
            "model.predictor_hidden=16", "model.depth=1", "model.heads=2", *extra,
        ],
    )  # fmt: skip


def test_arm_steps_measures_every_part_of_every_arm(bench):
    result = bench.arm_steps(_tiny_config("crate.pred_heads=2"), repeats=1, warmup=0, device="cpu")
    assert list(result["arms"]) == list(bench.ARM_NAMES)
    assert result["batch"] == 6 and result["num_observed"] == 2 and result["image"] == [1, 8, 8]
    assert result["width"] == 20 and result["memory_metric"] == "saved-tensors"
    assert result["crate"]["pred_heads"] == 2
    arms = result["arms"]
    for name, row in arms.items():
        for key in ("step", "agg", "pred"):
            assert row[f"{key}_ms"] > 0 and row[f"{key}_mib"] > 0, (name, key)
        # The parts' shares of the whole step are parts of it.
        assert 0 < row["step_agg_mib"] < row["step_mib"], name
        assert 0 < row["step_pred_mib"] < row["step_mib"], name
    assert [arms[n]["integration"] for n in arms] == ["none", "aggregator", "predictor"]
    # Only the swapped part changes: same MLP predictor in A, same transformer aggregator in B.
    assert arms["step3-agg"]["agg_params"] != arms["step2"]["agg_params"]
    assert arms["step3-agg"]["pred_params"] == arms["step2"]["pred_params"]
    assert arms["step3-pred"]["agg_params"] == arms["step2"]["agg_params"]
    assert arms["step3-pred"]["pred_params"] != arms["step2"]["pred_params"]
    assert arms["step3-agg"]["agg_mib"] != arms["step2"]["agg_mib"]
    assert arms["step3-pred"]["agg_mib"] == arms["step2"]["agg_mib"]
    json.dumps(result)  # JSON-ready

    text = bench.arms_markdown(result)
    assert "| measurement | step2 | step3-agg | step3-pred |" in text
    for _, label, _ in bench.ARM_ROWS:
        assert f"| {label} |" in text
    assert "×)" in text and "preset tiny" in text


def test_arm_steps_builds_the_example_parts(bench, monkeypatch):
    """The arms are the models of examples/step3_crate.py (build_arm_model, same seed)."""
    built = {}
    original = step3_parts.build_arm_model

    def spy(config, crate, **kw):
        model = original(config, crate, **kw)
        built[kw["integration"]] = model
        return model

    monkeypatch.setattr(bench, "build_arm_model", spy)
    bench.arm_steps(
        _tiny_config(), arms=["step2", "step3-both"], batch=2, repeats=1, warmup=0, device="cpu"
    )
    assert set(built) == {"none", "both"}
    assert isinstance(built["both"].aggregator.blocks[0], CRATELayer)
    assert type(built["both"].predictor).__name__ == "CRATEPredictor"


def test_arm_steps_checks_its_arguments(bench):
    config = _tiny_config()
    with pytest.raises(ValueError, match="not a step-2/step-3 arm"):
        bench.arm_steps(config, arms=["step1"], repeats=1)
    with pytest.raises(ValueError, match="unknown arm"):
        bench.arm_steps(config, arms=["step7"], repeats=1)
    with pytest.raises(ValueError, match="at least one arm"):
        bench.arm_steps(config, arms=[], repeats=1)
    with pytest.raises(ValueError, match="batch must be >= 2"):
        bench.arm_steps(config, batch=1, repeats=1)
    with pytest.raises(ValueError, match="repeats >= 1"):
        bench.arm_steps(config, repeats=0)


def test_command_line_writes_json_and_markdown(bench, tmp_path, capsys):
    out_json, out_md = tmp_path / "a.json", tmp_path / "a.md"
    bench.main(
        [
            "--preset", "cpu-demo", "--batch", "2", "--repeats", "1", "--warmup", "0",
            "--arms", "step2,step3-agg", "--device", "cpu", "--json", str(out_json),
            "--markdown", str(out_md), "crate.agg_depth=1",
        ]
    )  # fmt: skip
    data = json.loads(out_json.read_text(encoding="utf-8"))
    assert data["preset"] == "cpu-demo" and data["variant"] == "stopgrad-rate"
    assert list(data["arms"]) == ["step2", "step3-agg"] and data["width"] == 160
    assert data["crate"]["agg_depth"] == 1
    assert out_md.read_text(encoding="utf-8") in capsys.readouterr().out


def test_attention_methods_subset_keeps_the_sdpa_baseline(attention):
    methods, notes = attention.make_methods(
        16, 2, compile_tssa=False, causal=True, only=["tssa_me"]
    )
    assert list(methods) == ["sdpa", "tssa_me"]
    assert "mssa" not in notes
    with pytest.raises(ValueError, match="unknown methods"):
        attention.make_methods(16, 2, compile_tssa=False, causal=False, only=["flash"])
    result = attention.run(
        attention.torch.device("cpu"), dim=16, heads=2, ns=[8, 16], budget=32,
        dtype=attention.torch.float32, repeats=1, warmup=0, compile_tssa=False, causal=False,
        only=["tssa"],
    )  # fmt: skip
    assert result["methods"] == ["sdpa", "tssa"]
    assert [r["batch"] for r in result["rows"]] == [4, 2]
    assert all(r["tssa_speedup"] > 0 for r in result["rows"])
