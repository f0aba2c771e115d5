"""Checkpoints you can trust, and resume you can trust, through the one loop."""

from __future__ import annotations

import json
import os
import pickle
import warnings

import pytest
import torch
from test_loop import ToyLoader, cfg, tiny_seq_jepa
from torch import nn

from jepa_blocks.train import TrainConfig, fit
from jepa_blocks.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_latest_checkpoint,
    previous_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from jepa_blocks.train.loop import NonFiniteLossError, ResumeMismatchError, config_differences


class _Evil:
    """Pickles into a call of ``os.system``: what a crafted checkpoint would hold."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_crafted_file_cannot_run_code_on_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)
    torch.save({"model": _Evil()}, path)  # a torch file with the same payload
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_save_refuses_objects_that_cannot_be_loaded_safely(tmp_path):
    with pytest.raises(TypeError, match="tensors and primitives"):
        save_checkpoint(tmp_path / "ck.pt", {"obj": _Evil()})
    assert list(tmp_path.iterdir()) == []


def _flip(path, offset: int, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", [0.3, 0.5, 0.7])
def test_flipped_bytes_are_detected(tmp_path, where):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.arange(4096, dtype=torch.float32), "step": 3})
    _flip(path, int(where * path.stat().st_size))
    with pytest.raises(CheckpointError, match=r"corrupted|unreadable"):
        load_checkpoint(path)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.randn(1000)})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"ck\.pt.*unreadable"):
        load_checkpoint(path)


def test_previous_checkpoint_is_kept_and_used(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"v": torch.tensor([1.0])})
    save_checkpoint(path, {"v": torch.tensor([2.0])})
    assert load_checkpoint(previous_path(path))["v"].item() == 1.0
    _flip(path, path.stat().st_size // 2)
    with pytest.warns(UserWarning, match="previous good checkpoint"):
        state, source = load_latest_checkpoint(path)
    assert state["v"].item() == 1.0 and source == previous_path(path)
    _flip(previous_path(path), previous_path(path).stat().st_size // 2)
    with pytest.raises(CheckpointError, match="previous one"):
        load_latest_checkpoint(path)


def test_interrupted_saves_leave_no_temp_files(tmp_path):
    path = tmp_path / "ck.pt"
    stale = tmp_path / ".ck.pt.abc123.tmp"  # what a save killed before its rename leaves
    stale.write_bytes(b"partial")
    save_checkpoint(path, {"v": torch.tensor([1.0])})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_rng_state_round_trips_through_a_safe_checkpoint(tmp_path):
    import random

    import numpy as np

    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    torch.testing.assert_close(again[0], expected[0])
    assert np.array_equal(again[1], expected[1]) and again[2] == expected[2]


# ----------------------------------------------------------------------------- resume


def test_resume_refuses_another_config_and_names_the_keys(tmp_path):
    fit(tiny_seq_jepa(), ToyLoader(), cfg(tmp_path, epochs=1), full_config={"model": {"w": 1}})
    with pytest.raises(ResumeMismatchError, match=r"epochs: 1 in the checkpoint, 2 now") as e:
        fit(tiny_seq_jepa(), ToyLoader(), cfg(tmp_path, epochs=2), full_config={"model": {"w": 1}})
    assert "resume=false" in str(e.value) and "--out" in str(e.value)
    with pytest.raises(ResumeMismatchError, match=r"model\.w: 1 in the checkpoint, 2 now"):
        fit(tiny_seq_jepa(), ToyLoader(), cfg(tmp_path, epochs=1), full_config={"model": {"w": 2}})
    with pytest.raises(ResumeMismatchError, match=r"lr"):
        fit(tiny_seq_jepa(), ToyLoader(), cfg(tmp_path, epochs=1, lr=1e30))
    # Logging keys and ignored prefixes may change; the run resumes (here: nothing left to do).
    res = fit(
        tiny_seq_jepa(), ToyLoader(), cfg(tmp_path, epochs=1, log_every=5, progress=False),
        full_config={"model": {"w": 1}, "eval": {"x": 3}}, resume_ignore=("eval",),
    )  # fmt: skip
    assert res.step == 3
    # resume=false starts over in the same directory
    fresh = fit(tiny_seq_jepa(), ToyLoader(), cfg(tmp_path, epochs=2, resume=False))
    assert fresh.step == 6


def test_config_differences():
    diffs = config_differences(
        {"a": 1, "b": {"c": [1, 2], "log_every": 3}, "gone": 1},
        {"a": 1, "b": {"c": (1, 3), "log_every": 4}, "new": 2},
        ignore=("new",),
    )
    assert diffs == [("b.c", [1, 2], [1, 3]), ("gone", 1, "<absent>")]


def test_logs_after_a_resume_equal_an_uninterrupted_run(tmp_path):
    fit(tiny_seq_jepa(), ToyLoader(), cfg(tmp_path / "full", max_steps=8))
    calls = 0

    def crash(model, batch, device):
        nonlocal calls
        calls += 1
        if calls > 5:
            raise KeyboardInterrupt
        return model(batch.views, batch.actions)

    split = cfg(tmp_path / "split", max_steps=8, checkpoint_every_steps=4)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_seq_jepa(), ToyLoader(), split, batch_fn=crash)  # steps 1-5 logged, ckpt at 4
    fit(tiny_seq_jepa(), ToyLoader(), split)

    def steps(d):
        return [json.loads(x)["step"] for x in (d / "metrics.jsonl").read_text().splitlines()]

    assert steps(tmp_path / "split") == steps(tmp_path / "full") == list(range(1, 9))


def test_resume_falls_back_to_the_previous_checkpoint(tmp_path):
    fit(tiny_seq_jepa(), ToyLoader(), cfg(tmp_path, epochs=2))
    ck = tmp_path / "checkpoint.pt"
    assert load_checkpoint(previous_path(ck))["step"] == 3
    ck.write_bytes(ck.read_bytes()[:100])  # the latest is truncated
    with pytest.warns(UserWarning, match="previous good checkpoint"):
        res = fit(tiny_seq_jepa(), ToyLoader(), cfg(tmp_path, epochs=2))
    assert res.step == 6  # epoch 2 was redone from the step-3 checkpoint


# ----------------------------------------------------------------------------- guard rails


class InfGradModel(nn.Module):
    """Finite loss, infinite gradient from the second step on (a sqrt at 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.calls = 0

    def forward(self, views, actions):
        self.calls += 1
        base = (self.w**2).sum() * views.mean() ** 2
        if self.calls >= 2:
            base = base + torch.sqrt(self.w[0] - self.w[0].detach())  # value 0, gradient inf
        return base


def test_finite_loss_with_infinite_gradient_is_stopped_before_the_step(tmp_path):
    model = InfGradModel()
    with pytest.raises(NonFiniteLossError, match="gradient norm"):
        fit(model, ToyLoader(), cfg(tmp_path, epochs=2, checkpoint_every_steps=1))
    assert torch.isfinite(model.w).all()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_huge_lr_is_caught_by_the_guard_not_deep_inside(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"non-finite (parameters|values in the forward)"):
        fit(tiny_seq_jepa(), ToyLoader(), cfg(tmp_path, lr=1e30, warmup_epochs=0))
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("grad_clip", -1.0), ("grad_clip", 0.0), ("final_lr", -1e-5), ("epochs", 0),
        ("log_every", 0), ("lr", 0.0), ("max_steps", 0), ("warmup_epochs", -1.0),
        ("eval_every_epochs", -1), ("schedule", "linear"), ("compile", "yes"),
    ],
)  # fmt: skip
def test_train_config_rejects_out_of_range_values(field, value):
    with pytest.raises((ValueError, TypeError), match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})


def test_warnings_are_not_raised_on_a_clean_resume(tmp_path):
    fit(tiny_seq_jepa(), ToyLoader(), cfg(tmp_path, epochs=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(tiny_seq_jepa(), ToyLoader(), cfg(tmp_path, epochs=1))
