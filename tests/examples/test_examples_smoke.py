"""Every example's ``--smoke`` run, as CI runs it: a subprocess writing ``metrics.json``.

The default test run covers ``step1_baseline.py`` and ``step2_teacherless.py`` with its default
variant (about 20-30 s each on 2 CPU cores); the other step-2 variants are marked ``slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
METRICS = {
    "linacc",
    "r2",
    "leakage_linacc",
    "leakage_r2",
    "linacc_gap",
    "r2_gap",
    "rank_z_agg",
    "rank_z",
}


def _run(script: str, out: Path, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, str(EXAMPLES / script), "--smoke", "--out", str(out), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "random-init" in proc.stdout  # the final table was printed
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def _check(data: dict, step: str, variant: str, out: Path) -> None:
    assert data["step"] == step and data["variant"] == variant and data["preset"] == "cpu-demo"
    assert set(data["metrics"]) >= METRICS and set(data["random_init"]) >= METRICS
    for key in METRICS:
        assert isinstance(data["metrics"][key], float)
    assert 0.0 <= data["metrics"]["linacc"] <= 1.0
    assert data["gate"]["name"] == "smoke" and isinstance(data["gate"]["passed"], bool)
    assert data["config"]["variant"] == variant and data["config"]["data"]["train_subset"] == 512
    assert data["train"]["steps"] > 0 and data["seconds"]["total"] > 0
    assert data["plots"] and all((out / p).is_file() for p in data["plots"])


def test_step1_smoke(tmp_path):
    data = _run("step1_baseline.py", tmp_path)
    _check(data, "step1", "baseline", tmp_path)
    assert data["config"]["model"]["target"] == "ema"
    assert data["config"]["model"]["regularizer"] == "none"


def test_step2_smoke_default_variant_with_override(tmp_path):
    # overrides on both sides of an option (argparse's intermixed parsing)
    args = ("train.seed=3", "--variant", "stopgrad-rate", "eval.seed=7")
    data = _run("step2_teacherless.py", tmp_path, *args)
    _check(data, "step2", "stopgrad-rate", tmp_path)
    assert data["config"]["eval"]["seed"] == 7
    assert data["config"]["model"]["target"] == "stopgrad"
    assert data["config"]["model"]["regularizer"] == "coding-rate"
    assert data["config"]["train"]["seed"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["ema-rate", "symmetric", "sharpening", "stopgrad"])
def test_step2_smoke_variants(tmp_path, variant):
    data = _run("step2_teacherless.py", tmp_path, "--variant", variant)
    _check(data, "step2", variant, tmp_path)


def test_bad_arguments_fail_fast():
    bad = subprocess.run(
        [sys.executable, str(EXAMPLES / "step2_teacherless.py"), "--smoke", "model.nope=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown config key" in bad.stderr
    bad = subprocess.run(
        [sys.executable, str(EXAMPLES / "step1_baseline.py"), "--variant", "stopgrad"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2  # step 1 has no variants
