"""Step 5's recipe: the preset, the CLI examples, the ablation rows, the report and ``--smoke``.

``examples/step5_streaming_continual.py --smoke`` runs as CI runs it (a subprocess, about 15 s on
2 CPU cores); a tiny in-process run checks the records; the rest is config and table logic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common import load_config
from step5_protocols import (
    ABLATION_COLUMNS,
    Step5Config,
    ablation_methods,
    format_ablation_table,
)
from step5_streaming_continual import PRESET, main, run

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "step5_streaming_continual.py"


def _config(*overrides: str, smoke: bool = False) -> Step5Config:
    return load_config(Step5Config, step="step5", preset=PRESET, smoke=smoke, overrides=overrides)


def test_preset_is_the_cpu_demo_experiment():
    c = _config()
    assert (c.step, c.name, c.variant, c.threads) == ("step5", "cpu-demo", "", 1)
    assert (c.data.dataset, c.data.views, c.data.angle_deg, c.data.num_observed) == (
        "mnist",
        "affine",
        30.0,
        2,
    )
    assert c.data.batch_size == 64 and c.data.train_subset is None
    m = c.model
    assert (m.encoder_dim, m.cnn_width, m.action_embed_dim, m.predictor_hidden) == (64, 16, 16, 256)
    assert (m.depth, m.heads, m.ema_base, m.ema_final) == (2, 2, 0.99, 1.0)
    t = c.train
    assert (t.recipe, t.schedule, t.lr, t.weight_decay, t.warmup_steps) == (
        "paper",
        "constant",
        2e-3,
        1e-3,
        10,
    )
    assert (t.seed, t.log_every, t.grad_clip) == (0, 10, None)
    s = c.stream
    assert (s.repeats, s.replay_ratio, s.store) == (4, 1.0, "indices")
    assert s.checkpoints == (0.25, 0.5, 0.75, 1.0)
    assert c.protocols == ["A", "B"] and c.ablate == ["B"] and c.num_splits == 5
    assert c.buffers == ["none", "fifo", "reservoir", "minred"] and c.buffer_sizes == [256, 1024]
    assert (c.ewc_weight, c.si_weight, c.probe_train_per_class) == (1e4, 5.0, 100)
    assert (c.eval.classifier, c.eval.batch_size, c.eval.probe_threads) == ("lbfgs", 500, 1)
    assert not c.gates


def test_smoke_overrides_shrink_the_run():
    c = _config(smoke=True)
    assert (c.data.train_subset, c.data.test_subset, c.data.batch_size) == (400, 200, 32)
    assert (c.stream.repeats, c.stream.checkpoints, c.num_splits) == (1, (0.5, 1.0), 2)
    assert c.buffer_sizes == [32, 96] and c.eval.classifier == "ridge"
    assert c.gates["name"] == "smoke"


def test_the_docstring_examples_parse():
    c = _config("protocols=[B]", "stream.repeats=2")
    assert c.protocols == ["B"] and c.stream.repeats == 2
    c = _config("mitigations=[ewc, si]", "buffers=[none]")
    assert ablation_methods(c) == [("none", None, None), ("ewc", None, "ewc"), ("si", None, "si")]
    doc = sys.modules[main.__module__].__doc__ or ""
    assert "step5_streaming_continual.py protocols=[B] stream.repeats=2" in doc
    assert '"mitigations=[ewc, si]" buffers=[none]' in doc


def test_ablation_rows():
    c = _config("buffers=[none, minred]", "buffer_sizes=[8, 16]", "mitigations=[si]")
    assert ablation_methods(c) == [
        ("none", None, None),
        ("minred", 8, None),
        ("minred", 16, None),
        ("si", None, "si"),
    ]


@pytest.mark.parametrize(
    "override",
    ["buffers=[lifo]", "protocols=[C]", "mitigations=[l2]", "probe_on=[x]", "buffer_sizes=[0]"],
)
def test_bad_values_are_rejected(override):
    with pytest.raises((ValueError, TypeError)):
        _config(override)


def test_bad_override_fails_fast(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--smoke", "stream.nope=1"])
    assert exc.value.code == 2 and "unknown config key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["buffers=[lifo]"])
    with pytest.raises(SystemExit):
        main(["stream.lr=1e-3"])  # the loop's settings are train.*, not stream.*


def test_ablation_table_has_a_header_and_dashes_for_missing_values():
    row = {"protocol": "A", "method": "none", "size": None, "linacc_z": 0.5, "linacc_z_agg": 0.25}
    row |= {"r2": 0.1, "train_seconds": 3.0}
    lines = format_ablation_table([row]).splitlines()
    assert len(lines) == 3 and lines[0].startswith("| protocol") and "---" in lines[1]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert len(cells) == len(ABLATION_COLUMNS)
    assert cells[:6] == ["A", "none", "—", "50.0", "25.0", "0.100"]
    assert cells[6:10] == ["—"] * 4 and cells[10] == "3"


def test_tiny_run_in_process(tmp_path):
    config = _config(
        "data.dataset=digits", "data.train_subset=120", "data.test_subset=60",
        "data.batch_size=20", "model.encoder_dim=8", "model.cnn_width=4",
        "model.action_embed_dim=4", "model.predictor_hidden=16", "model.depth=1",
        "protocols=[B]", "num_splits=2", "buffers=[none, reservoir]", "buffer_sizes=[16]",
        "mitigations=[ewc]", "probe_train_per_class=5", "eval.classifier=ridge",
        "eval.plots=false", "stream.repeats=2", "stream.checkpoints=[0.0, 1.0]",
        "train.device=cpu", f"train.out_dir={tmp_path}",
    )  # fmt: skip
    result = run(config, verbose=False)
    data = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert data["step"] == "step5" and data["headline"] == "B/none"
    assert [r["label"] for r in data["runs"]] == ["none", "reservoir-16", "ewc"]
    assert data["metrics"]["linacc"] == data["runs"][0]["linacc"] == result["metrics"]["linacc"]
    assert data["metrics"]["forgetting"] == data["runs"][0]["forgetting"]
    for r in data["runs"]:
        assert r["evaluations"][0]["fraction"] == 0.0  # the initial network
        assert r["steps"] == 2 * 7  # K · 7 batches (no batch straddles the split boundary)
        assert len(r["accuracy_matrix"]) == 2
    assert data["runs"][2]["mean_penalty"] is not None and data["plots"] == []
    assert (tmp_path / "table.md").read_text(encoding="utf-8").strip() == result["table"]
    assert not list(tmp_path.glob("*.pt"))  # the runs write no checkpoints


def test_step5_smoke(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Replay ablation" in proc.stdout and "| protocol" in proc.stdout
    data = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert data["step"] == "step5" and data["preset"] == "cpu-demo"
    assert data["config"]["data"]["train_subset"] == 400
    labels = [(r["protocol"], r["label"]) for r in data["runs"]]
    expected = ["none"] + [f"{k}-{s}" for k in ("fifo", "reservoir", "minred") for s in (32, 96)]
    assert labels == [("A", "none")] + [("B", m) for m in expected]  # the ablation runs on B
    for run_ in data["runs"]:
        assert 0.0 <= run_["linacc"] <= 1.0 and isinstance(run_["r2"], float)
        assert run_["evaluations"][-1]["fraction"] == 1.0
        if run_["protocol"] == "B":
            assert len(run_["accuracy_matrix"]) == 2 and len(run_["forgetting_per_task"]) == 1
            assert isinstance(run_["forgetting"], float)
            assert run_["forgetting"] == run_["forgetting_z"]
            assert len(run_["accuracy_matrix_z_agg"]) == 2
        if run_["method"] != "none":
            assert 0 < run_["buffer_final_size"] <= run_["size"]
    assert data["headline"] == "A/none" and data["metrics"]["linacc"] == data["runs"][0]["linacc"]
    assert set(data["random_init"]) >= {"linacc", "r2", "task_acc_z", "task_acc_z_agg"}
    assert data["gate"]["name"] == "smoke" and isinstance(data["gate"]["passed"], bool)
    assert data["splits"] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] and set(data["plans"]) == {"A", "B"}
    assert data["plots"] and all((tmp_path / p).is_file() for p in data["plots"])
    table = (tmp_path / "table.md").read_text(encoding="utf-8")
    assert table.startswith("| protocol") and table.count("\n") == 2 + len(data["runs"])
