"""Gates: thresholds from dataclass / dict / YAML to pass-fail with reasons; presets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from jepa_blocks.train import (
    GATE_PRESETS,
    GateResult,
    Gates,
    check_gates,
    get_gates,
    register_gates,
)


def test_presets_follow_the_follow_up_tiers() -> None:
    assert set(GATE_PRESETS) >= {"smoke", "quick", "baseline-lite"}
    assert dict(get_gates("smoke").minimum) == {"linacc": 0.12, "r2": -0.3}
    assert dict(get_gates("quick").minimum) == {"linacc": 0.20, "r2": 0.0}
    assert dict(get_gates("baseline-lite").minimum) == {"linacc": 0.30, "r2": 0.1}


def test_pass_fail_and_reasons() -> None:
    metrics = {"linacc": 0.25, "r2": 0.05, "loss": 0.4}
    assert check_gates(metrics, "smoke").passed
    quick = check_gates(metrics, "quick")
    assert quick and quick.reasons == ()
    lite = check_gates(metrics, "baseline-lite")
    assert not lite and isinstance(lite, GateResult)
    assert lite.reasons == ("linacc = 0.25 < minimum 0.3", "r2 = 0.05 < minimum 0.1")
    assert "FAIL" in str(lite) and "linacc" in str(lite)
    # Boundaries are inclusive.
    assert check_gates({"linacc": 0.3, "r2": 0.1}, "baseline-lite").passed


def test_missing_non_finite_and_percentages() -> None:
    res = check_gates({"linacc": 0.5}, "quick")
    assert not res and res.reasons == ("r2: missing",)
    assert check_gates({"linacc": 0.5}, "quick", missing="skip").passed
    res = check_gates({"linacc": 0.5, "r2": math.nan}, "quick")
    assert not res and "not finite" in res.reasons[0]
    res = check_gates({"linacc": 31.0, "r2": 0.2}, "quick")
    assert not res and "fractions" in res.reasons[0]
    res = check_gates({"linacc": "high", "r2": 0.2}, "quick")
    assert "not a number" in res.reasons[0]


def test_maximum_thresholds_and_gaps() -> None:
    gates = Gates(
        name="leak",
        minimum={"linacc_gap": 0.0, "r2_gap": 0.0},
        maximum={"leakage_r2": 0.3, "loss": 1.0},
    )
    ok = {"linacc_gap": 0.1, "r2_gap": 0.2, "leakage_r2": 0.3, "loss": 0.5}
    assert gates.check(ok).passed
    bad = gates.check({**ok, "leakage_r2": 0.31, "r2_gap": -0.01})
    assert bad.reasons == ("leakage_r2 = 0.31 > maximum 0.3", "r2_gap = -0.01 < minimum 0")


def test_dict_and_yaml_roundtrip(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    gates = Gates(name="mine", minimum={"linacc": 0.4}, maximum={"loss": 2.0}, description="x")
    path = tmp_path / "gates.yaml"
    text = gates.to_yaml(path)
    assert "linacc: 0.4" in text
    assert Gates.from_yaml(path) == gates
    assert Gates.from_yaml(text) == gates
    assert Gates.from_dict(gates.to_dict()) == gates
    # The follow-up repository's flat config keys.
    flat = Gates.from_dict(
        {"linacc_min": 0.23, "r2_min": 0.45, "loss_max": 3}, name="cifar100-local"
    )
    assert dict(flat.minimum) == {"linacc": 0.23, "r2": 0.45} and dict(flat.maximum) == {
        "loss": 3.0
    }
    with pytest.raises(ValueError, match="unknown gate key"):
        Gates.from_dict({"linacc": 0.2})
    with pytest.raises(ValueError, match="mapping"):
        Gates.from_yaml("- 1\n- 2\n")


def test_register_and_derive() -> None:
    derived = get_gates("quick").with_thresholds(name="quick-strict", minimum={"r2": 0.05})
    assert dict(derived.minimum) == {"linacc": 0.2, "r2": 0.05}
    register_gates(derived)
    try:
        assert check_gates({"linacc": 0.3, "r2": 0.01}, "quick-strict").reasons == (
            "r2 = 0.01 < minimum 0.05",
        )
        with pytest.raises(ValueError, match="already exists"):
            register_gates(derived)
        register_gates(derived.with_thresholds(minimum={"r2": 0.0}), overwrite=True)
        assert check_gates({"linacc": 0.3, "r2": 0.01}, "quick-strict").passed
    finally:
        from jepa_blocks.train import gates as gates_module

        gates_module._PRESETS.pop("quick-strict", None)
    with pytest.raises(ValueError, match="unknown gate preset"):
        get_gates("quick-strict")


def test_gates_validate() -> None:
    with pytest.raises(ValueError, match="finite"):
        Gates(minimum={"r2": math.inf})
    with pytest.raises(ValueError, match="above its maximum"):
        Gates(minimum={"r2": 0.5}, maximum={"r2": 0.1})
    with pytest.raises(TypeError, match="metrics"):
        check_gates([("r2", 0.1)], "quick")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing"):
        check_gates({}, "quick", missing="ignore")
    with pytest.raises(TypeError):
        GATE_PRESETS["x"] = Gates()  # type: ignore[index]
