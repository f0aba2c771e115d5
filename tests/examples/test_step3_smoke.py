"""``examples/step3_crate.py --smoke`` as CI runs it: a subprocess writing ``step3.json``.

Four arms (step 1, step 2, step 3 with a CRATE aggregator, step 3 with a CRATE predictor), three
training steps each, probes on 256 test images; about 35-60 s on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "step3_crate.py"
ROWS = (
    "linacc(z_agg), test",
    "R² of a_1 from [z_1; z_2]",
    "leakage: linacc(z_1)",
    "leakage: R² of a_1 from z_agg",
    "linacc gap (z_agg − z_1)",
    "R² gap ([z_1;z_2] − z_agg)",
    "effective rank z_agg",
    "effective rank z",
    "rotation Δz: top-2 variance",
    "ISTA sparsity, aggregator",
    "ISTA sparsity, predictor",
    "R^c by layer / max, aggregator",
    "head specialisation, pred (a_M)",
)


def test_step3_smoke(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| metric"))
    assert [c.strip() for c in header.split("|")[2:-1]] == [
        "step1", "step2", "step3-agg", "step3-pred",
    ]  # fmt: skip
    for row in ROWS:
        assert f"| {row}" in proc.stdout, row

    report = json.loads((tmp_path / "step3.json").read_text(encoding="utf-8"))
    assert report["preset"] == "cpu-demo"
    arms = report["arms"]
    assert [arms[a]["variant"] for a in arms] == ["baseline"] + ["stopgrad-rate"] * 3
    assert [arms[a]["integration"] for a in arms] == ["none", "none", "aggregator", "predictor"]
    for name, arm in arms.items():
        m = arm["metrics"]
        assert 0.0 <= m["linacc"] <= 1.0 and 0.0 <= m["rot_delta_top2"] <= 1.0, name
        assert (
            arm["config"]["data"]["test_subset"] == 256 and arm["config"]["train"]["max_steps"] == 3
        )
        assert (tmp_path / name / "metrics.csv").is_file()
    assert len(arms["step3-agg"]["metrics"]["agg_rates"]) == 2  # cpu-demo aggregator depth
    assert 0.0 <= arms["step3-pred"]["metrics"]["pred_sparsity"] <= 1.0
    assert report["plots"] and all((tmp_path / p).is_file() for p in report["plots"])
    assert (tmp_path / "table.md").read_text(encoding="utf-8").strip() == report["table"]


def test_step3_bad_arguments_fail_fast():
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "crate.nope=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown config key" in bad.stderr
