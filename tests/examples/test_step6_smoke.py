"""``examples/step6_local.py --smoke`` as CI runs it: a subprocess writing ``metrics.json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "step6_local.py"
PROBES = {"linacc", "r2", "leakage_linacc", "leakage_r2", "rank_z_agg", "rank_z"}


def test_step6_smoke(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path), "train.seed=2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "| stage" in proc.stdout and "detach only" in proc.stdout
    assert "gates 'smoke'" in proc.stdout  # the gate line
    data = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert data["step"] == "step6" and data["preset"] == "cpu-demo"
    assert data["variant"] == "stopgrad-rate"
    assert data["config"]["train"]["seed"] == 2 and data["config"]["train"]["max_steps"] == 4
    stages = data["stages"]
    assert list(stages) == ["end-to-end", "stage1", "stage2", "stage3"]
    for row in stages.values():
        assert set(row) >= PROBES
        assert 0.0 <= row["linacc"] <= 1.0
        assert isinstance(row["r2"], float) and row["rank_z_agg"] >= 1.0
        assert row["peak_saved_mib"] > 0 and row["train_seconds"] >= 0
    assert data["headline_stage"] == "stage3" and data["metrics"] == stages["stage3"]
    assert data["random_init"] is None  # eval.baseline=false in the smoke run
    assert stages["end-to-end"]["memory_ratio"] == 1.0
    assert stages["stage3"]["memory_ratio"] <= 0.5
    saved = data["memory"]["saved_mib"]
    assert saved["stage3 (detach only)"] >= 0.9 * saved["end-to-end"]
    assert data["memory"]["batch_size"] == 64 and data["train"]["steps_per_stage"] == 4
    assert data["gate"]["name"] == "smoke" and data["gate"]["passed"] is True
    assert (tmp_path / "table.md").read_text(encoding="utf-8").startswith("| stage")


def test_step6_bad_arguments_fail_fast():
    for args in (["local.nope=1"], ["local.stages=[stage4]"], ["--variant", "nope"]):
        bad = subprocess.run(
            [sys.executable, str(SCRIPT), "--smoke", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert bad.returncode == 2, (args, bad.stderr)
    assert "nope" in bad.stderr


def test_step6_help_and_print_config():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0 and "examples:" in out.stdout and "outputs" in out.stdout
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--print-config", "local.objective=rate"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0 and "objective: rate" in out.stdout
