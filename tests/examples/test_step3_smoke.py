"""``examples/step3_crate.py --smoke`` as CI runs it: a subprocess writing ``metrics.json``.

Four arms (step 1, step 2, step 3 with a CRATE aggregator, step 3 with a CRATE predictor), three
training steps each, probes on 256 test images; about 15-30 s on 2 CPU cores.
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
HEADLINE = {"linacc", "r2", "leakage_linacc", "leakage_r2", "rank_z_agg", "rank_z"}


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
    assert "headline arm step3-agg: gates 'smoke'" in proc.stdout

    report = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert report["step"] == "step3" and report["variant"] == "stopgrad-rate"
    assert report["preset"] == "cpu-demo" and report["headline"] == "step3-agg"
    assert set(report["metrics"]) >= HEADLINE and report["random_init"] is None
    assert report["metrics"] == report["arms"]["step3-agg"]["metrics"]
    assert report["gate"]["name"] == "smoke" and isinstance(report["gate"]["passed"], bool)
    assert report["config"]["arms"] == ["step1", "step2", "step3-agg", "step3-pred"]
    arms = report["arms"]
    assert [arms[a]["step"] for a in arms] == ["step1", "step2", "step3", "step3"]
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
    table = (tmp_path / "table.md").read_text(encoding="utf-8").strip()
    assert table.splitlines()[0] == header


def test_step3_bad_arguments_fail_fast():
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "crate.nope=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown config key" in bad.stderr


def test_step3_help_is_the_docstring():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0
    assert "examples:\n    python examples/step3_crate.py" in out.stdout
    assert "--arms ARMS" in out.stdout and "step3-both   A and B together" in out.stdout
