"""Step 4's measurements (``benchmarks/bench_streaming_aggregator.py``): time, memory, streaming.

The recipe's helper puts ``benchmarks/`` on ``sys.path``; the benchmark is also a script.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import step4_parts  # noqa: F401  (puts benchmarks/ on sys.path)
from bench_streaming_aggregator import (
    bench_aggregators,
    bench_model_steps,
    bench_streaming,
    format_aggregator_table,
    format_model_table,
    format_streaming_table,
    main,
    memory_label,
    step_memory,
    time_call,
)
from parts import ModelConfig
from step4_parts import AggregatorConfig, build_aggregator, build_step4_model

TINY_MODEL = ModelConfig(
    encoder_dim=16, cnn_width=4, action_embed_dim=8, predictor_hidden=16, depth=2, heads=2,
    mlp_ratio=2,
)  # fmt: skip


def _pair() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        kind: build_aggregator(TINY_MODEL, AggregatorConfig(kind=kind))
        for kind in ("tost", "transformer")
    }


def test_step_memory_and_time_call():
    lin = nn.Linear(64, 64)
    x = torch.randn(32, 64)
    nbytes, scoped, method = step_memory(lambda: lin(x).relu().sum(), module=lin)
    assert method == "saved-tensors" and scoped is None
    assert nbytes >= 32 * 64 * 4  # the input; the relu output too
    inner = nn.Sequential(nn.Linear(64, 64), nn.Tanh())
    outer = nn.Sequential(lin, nn.ReLU(), inner)
    total, share, _ = step_memory(lambda: outer(x).sum(), module=outer, scope=inner)
    assert share == 32 * 64 * 4 and total == 3 * 32 * 64 * 4  # x, the ReLU and the Tanh output
    calls = []
    s = time_call(lambda: calls.append(1), repeats=3, warmup=2)
    assert s >= 0 and len(calls) == 5
    with pytest.raises(ValueError, match="repeats"):
        time_call(lambda: None, repeats=0)


def test_tost_activation_memory_is_linear_in_tokens():
    rows = bench_aggregators(_pair(), width=24, lengths=[64, 256, 1024], batch=1, repeats=1)
    mib = {(r["kind"], r["n"]): r["mib"] for r in rows}
    assert {r["memory"] for r in rows} == {"saved-tensors"}
    assert memory_label(rows) == "activations saved for backward"
    ratio = mib[("tost", 1024)] / mib[("tost", 256)]
    assert 3.8 < ratio < 4.2  # linear: 4× the tokens, 4× the memory
    # softmax attention saves N×N weights per head: more than linear, and more than ToST
    assert mib[("transformer", 1024)] / mib[("transformer", 256)] > 6
    assert mib[("transformer", 1024)] > mib[("tost", 1024)]
    table = format_aggregator_table(rows)
    assert "ToST MiB" in table and "| 1024" in table


def test_bench_model_steps_rows():
    models = {}
    for kind in ("tost", "transformer"):
        torch.manual_seed(0)
        models[kind] = build_step4_model(
            TINY_MODEL, dataclasses.replace(AggregatorConfig(), kind=kind), in_channels=1,
            action_dim=5, total_steps=100, steps_per_epoch=10,
        )  # fmt: skip
    rows = bench_model_steps(
        models, in_channels=1, image_size=(8, 8), action_dim=5, lengths=[2, 4], batch=2,
        repeats=1,
    )  # fmt: skip
    assert [(r["kind"], r["m"]) for r in rows] == [
        ("tost", 2), ("tost", 4), ("transformer", 2), ("transformer", 4)
    ]  # fmt: skip
    for r in rows:
        assert r["ms"] > 0 and 0 < r["agg_mib"] < r["mib"] and r["memory"] == "saved-tensors"
    assert "ToST step ms" in format_model_table(rows)


def test_bench_streaming_is_exact_and_constant_size():
    aggs = _pair()
    rows = bench_streaming(aggs["tost"], aggs["transformer"], lengths=[4, 64, 256], repeats=1)
    assert [r["t"] for r in rows] == [4, 64, 256]
    assert all(r["max_abs_diff"] < 1e-5 for r in rows)
    assert len({r["tost_state_kib"] for r in rows}) == 1
    ctx = [r["transformer_context_kib"] for r in rows]
    assert ctx[2] == pytest.approx(4 * ctx[1]) and ctx[1] == pytest.approx(16 * ctx[0])
    assert "ToST state KiB" in format_streaming_table(rows)
    with pytest.raises(ValueError, match=">= 2"):
        bench_streaming(aggs["tost"], aggs["transformer"], lengths=[1], repeats=1)


def test_benchmark_command_line(tmp_path, capsys):
    out = main(
        ["--device", "cpu", "--width", "24", "--heads", "2", "--tokens", "8", "16", "--stream",
         "4", "--repeats", "1", "--json", str(tmp_path / "b.json"), "--markdown",
         str(tmp_path / "b.md")]
    )  # fmt: skip
    assert [r["n"] for r in out["aggregator"]] == [8, 8, 16, 16]
    assert [r["t"] for r in out["streaming"]] == [4]
    assert "ToST ms" in capsys.readouterr().out
    assert (tmp_path / "b.json").is_file() and "ToST state KiB" in (tmp_path / "b.md").read_text()
