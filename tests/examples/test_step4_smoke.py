"""``examples/step4_tost_streaming.py --smoke`` as CI runs it: a subprocess writing metrics.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "step4_tost_streaming.py"
PROBES = {"linacc", "r2", "leakage_linacc", "leakage_r2", "rank_z_agg", "rank_z"}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def test_step4_smoke(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    # compute and memory vs the transformer aggregator, then the probe tables
    for header in ("ToST ms", "transformer ms", "ToST state KiB", "random-init", "M_val"):
        assert header in out, header
    data = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert data["step"] == "step4" and data["aggregator"] == "tost"
    assert data["preset"] == "cpu-demo" and data["variant"] == "baseline"
    assert set(data["metrics"]) >= PROBES and set(data["random_init"]) >= PROBES
    assert data["metrics"]["stream_max_abs_diff_f64"] < 1e-9  # the recurrence is exact
    assert data["metrics"]["stream_max_abs_diff"] < 1e-2  # float32 (see extract_stream_features)
    assert set(data["metrics"]["linacc_by_length"]) == {"1", "4", "8"}
    kinds = {r["kind"] for r in data["bench"]["aggregator"]}
    assert kinds == {"tost", "transformer"}
    assert all(r["max_abs_diff"] < 1e-4 for r in data["bench"]["streaming"])
    assert data["gate"]["name"] == "smoke" and data["gate"]["passed"]
    assert data["config"]["data"]["train_subset"] == 256 and data["train"]["steps"] > 0
    assert data["plots"] and all((tmp_path / p).is_file() for p in data["plots"])
    assert "ToST state KiB" in (tmp_path / "table.md").read_text(encoding="utf-8")


def test_step4_bad_arguments_fail_fast():
    for args in (["aggregator.readout=cls"], ["nope=1"], ["--variant", "nope"]):
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--smoke", *args],
            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2, (args, proc.stderr)
