"""``examples/step6_local.py --smoke`` as CI runs it: a subprocess writing ``metrics.json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "step6_local.py"


def test_step6_smoke(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path), "train.seed=2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "| stage" in proc.stdout and "detach only" in proc.stdout
    data = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert data["step"] == "step6" and data["preset"] == "cpu-demo"
    assert data["config"]["train"]["seed"] == 2
    rows = data["rows"]
    assert list(rows) == ["end-to-end", "stage1", "stage2", "stage3"]
    for row in rows.values():
        assert 0.0 <= row["linacc"] <= 1.0
        assert isinstance(row["r2"], float) and row["rank_z_agg"] >= 1.0
        assert row["peak_saved_mib"] > 0 and row["train_seconds"] >= 0
    assert rows["end-to-end"]["memory_ratio"] == 1.0
    assert rows["stage3"]["memory_ratio"] <= 0.5
    assert data["memory_mib"]["stage3 (detach only)"] >= 0.9 * data["memory_mib"]["end-to-end"]


def test_step6_bad_override_fails_fast():
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "local.nope=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "nope" in bad.stderr
