"""``examples/step5_streaming_continual.py --smoke`` as CI runs it: a subprocess (< 60 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "step5_streaming_continual.py"


def test_step5_smoke(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Replay ablation" in proc.stdout and "| protocol" in proc.stdout
    data = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert data["step"] == "step5" and data["preset"] == "smoke"
    labels = [(r["protocol"], r["label"]) for r in data["runs"]]
    expected = ["none"] + [f"{k}-{s}" for k in ("fifo", "reservoir", "minred") for s in (32, 96)]
    assert labels == [("A", "none")] + [("B", m) for m in expected]  # the ablation runs on B
    for run in data["runs"]:
        assert 0.0 <= run["linacc"] <= 1.0 and isinstance(run["r2"], float)
        assert run["evaluations"][-1]["fraction"] == 1.0
        if run["protocol"] == "B":
            assert len(run["accuracy_matrix"]) == 2 and len(run["forgetting_per_task"]) == 1
            assert isinstance(run["forgetting"], float) and run["forgetting"] == run["forgetting_z"]
            assert len(run["accuracy_matrix_z_agg"]) == 2
        if run["method"] != "none":
            assert 0 < run["buffer_final_size"] <= run["size"]
    assert data["plots"] and all((tmp_path / p).is_file() for p in data["plots"])


def test_step5_bad_override_fails_fast(capsys):
    from jepa_blocks.streaming.experiment import main

    with pytest.raises(SystemExit) as exc:
        main(["--smoke", "stream.nope=1"])
    assert exc.value.code == 2 and "unknown config key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["buffers=[lifo]"])
