"""Recipe gates: thresholds from a config to pass/fail with reasons; the follow-up tiers."""

from __future__ import annotations

import math

import pytest

from common import GateResult, Gates, RecipeConfig, check_gate, gate_line, load_config


def tier(name: str) -> Gates:
    return Gates.from_dict({"name": name})


def test_tiers_follow_the_follow_up_repository() -> None:
    assert dict(tier("smoke").minimum) == {"linacc": 0.12, "r2": -0.3}
    assert dict(tier("quick").minimum) == {"linacc": 0.20, "r2": 0.0}
    assert dict(tier("baseline-lite").minimum) == {"linacc": 0.30, "r2": 0.1}


def test_pass_fail_and_reasons() -> None:
    metrics = {"linacc": 0.25, "r2": 0.05, "loss": 0.4}
    assert tier("smoke").check(metrics).passed
    quick = tier("quick").check(metrics)
    assert quick and quick.reasons == ()
    lite = tier("baseline-lite").check(metrics)
    assert not lite and isinstance(lite, GateResult)
    assert lite.reasons == ("linacc = 0.25 < minimum 0.3", "r2 = 0.05 < minimum 0.1")
    assert "FAIL" in str(lite) and "linacc" in str(lite)
    assert tier("baseline-lite").check({"linacc": 0.3, "r2": 0.1}).passed  # inclusive


def test_missing_non_finite_and_percentages() -> None:
    quick = tier("quick")
    res = quick.check({"linacc": 0.5})
    assert not res and res.reasons == ("r2: missing",)
    assert quick.check({"linacc": 0.5}, missing="skip").passed
    assert "not finite" in quick.check({"linacc": 0.5, "r2": math.nan}).reasons[0]
    assert "fractions" in quick.check({"linacc": 31.0, "r2": 0.2}).reasons[0]
    assert "not a number" in quick.check({"linacc": "high", "r2": 0.2}).reasons[0]


def test_maximum_thresholds_and_flat_keys() -> None:
    gates = Gates("leak", {"linacc_gap": 0.0, "r2_gap": 0.0}, {"leakage_r2": 0.3, "loss": 1.0})
    ok = {"linacc_gap": 0.1, "r2_gap": 0.2, "leakage_r2": 0.3, "loss": 0.5}
    assert gates.check(ok).passed
    bad = gates.check({**ok, "leakage_r2": 0.31, "r2_gap": -0.01})
    assert bad.reasons == ("leakage_r2 = 0.31 > maximum 0.3", "r2_gap = -0.01 < minimum 0")
    flat = Gates.from_dict({"name": "c100", "linacc_min": 0.23, "r2_min": 0.45, "loss_max": 3})
    assert dict(flat.minimum) == {"linacc": 0.23, "r2": 0.45} and dict(flat.maximum) == {"loss": 3}
    with pytest.raises(ValueError, match="unknown gate key"):
        Gates.from_dict({"linacc": 0.2})


def test_gates_validate() -> None:
    with pytest.raises(ValueError, match="finite"):
        Gates(minimum={"r2": math.inf})
    with pytest.raises(ValueError, match="above its maximum"):
        Gates(minimum={"r2": 0.5}, maximum={"r2": 0.1})
    with pytest.raises(TypeError, match="mapping"):
        Gates.from_dict([("r2", 0.1)])  # type: ignore[arg-type]


def test_config_gates_and_the_smoke_line() -> None:
    config = load_config(RecipeConfig, step="step2", smoke=True)
    gate = check_gate(config, {"linacc": 0.5, "r2": 0.0})
    assert gate is not None and gate.name == "smoke" and gate.passed
    assert "pipeline check" in gate_line(gate)
    assert check_gate(RecipeConfig(gates={"name": "quick"}), {"linacc": 0.1, "r2": 0.0}).reasons
    assert check_gate(RecipeConfig(), {}) is None
