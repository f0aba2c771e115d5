"""The shared training loop: schedules, configs, atomic checkpoints, exact resume, NaN stop."""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import pytest
import torch
from torch import nn

from jepa_blocks import (
    ActionEncoder,
    Aggregator,
    CodingRate,
    EMATarget,
    Predictor,
    SeqJEPA,
    transformer_blocks,
)
from jepa_blocks.blocks import TSSA, ToSTBlock
from jepa_blocks.train.checkpoint import load_checkpoint, save_checkpoint
from jepa_blocks.train.config import TrainConfig, apply_overrides, config_from_dict, load_config
from jepa_blocks.train.loop import NonFiniteLossError, default_batch_fn, fit, seed_everything
from jepa_blocks.train.schedule import build_optimizer, lr_at, param_groups, warmup_cosine_lr


class Batch(NamedTuple):
    views: torch.Tensor
    actions: torch.Tensor


class ToyLoader:
    """Deterministic per-epoch batches of random 'views' and actions (own generator)."""

    def __init__(self, n_batches: int = 3, batch: int = 8, m: int = 2, seed: int = 0) -> None:
        self.n_batches, self.batch, self.m, self.seed, self.epoch = n_batches, batch, m, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        for _ in range(self.n_batches):
            views = torch.randn(self.batch, self.m + 1, 1, 8, 8, generator=g)
            actions = torch.randn(self.batch, self.m, 3, generator=g)
            yield Batch(views, actions)


class TinyEncoder(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.1), nn.ReLU())
        self.out = nn.Linear(32, dim)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(x))


def tiny_seq_jepa(seed: int = 0) -> SeqJEPA:
    seed_everything(seed)
    enc = TinyEncoder(16)
    return SeqJEPA(
        encoder=enc,
        target=EMATarget(enc, total_steps=20),
        action_encoder=ActionEncoder(action_dim=3, embed_dim=4),
        aggregator=Aggregator(
            dim=20, blocks=transformer_blocks(dim=20, depth=1, heads=2, mlp_ratio=2)
        ),
        predictor=Predictor(in_dim=24, hidden=32, out_dim=16),
        regularizer=CodingRate(eps=0.5),
        regularizer_weight=0.05,
    )


def cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(epochs=4, lr=1e-3, warmup_epochs=1, progress=False, log_every=1, device="cpu")
    base.update(kw)
    return TrainConfig(out_dir=str(tmp_path), **base)


# ----------------------------------------------------------------------------- schedules


def test_warmup_cosine_formula():
    kw = dict(total_steps=100, warmup_steps=20, base_lr=4e-4, warmup_start_lr=1e-5, final_lr=1e-5)
    assert warmup_cosine_lr(0, **kw) == pytest.approx(1e-5)
    assert warmup_cosine_lr(10, **kw) == pytest.approx(1e-5 + (4e-4 - 1e-5) * 0.5)
    assert warmup_cosine_lr(20, **kw) == pytest.approx(4e-4)
    mid = 1e-5 + 0.5 * (4e-4 - 1e-5) * (1 + math.cos(math.pi * 0.5))
    assert warmup_cosine_lr(60, **kw) == pytest.approx(mid)
    assert warmup_cosine_lr(100, **kw) == pytest.approx(1e-5)
    assert lr_at(70, recipe="official", **kw) == pytest.approx(4e-4)  # constant after warm-up
    with pytest.raises(ValueError, match="recipe"):
        lr_at(0, recipe="cosine", **kw)


def test_param_groups_and_recipes():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    groups = param_groups(model, weight_decay=0.1)
    assert [p.ndim for p in groups[0]["params"]] == [2]
    assert sorted(p.ndim for p in groups[1]["params"]) == [1, 1, 1]
    assert isinstance(build_optimizer(model), torch.optim.AdamW)
    official = build_optimizer(model, recipe="official", lr=5.0)
    assert isinstance(official, torch.optim.Adam) and official.defaults["lr"] == 1e-3


def test_param_groups_honour_no_weight_decay():
    """Names listed by a module's no_weight_decay() (relative to it) get no weight decay."""

    class WithToken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.token = nn.Parameter(torch.zeros(1, 4))
            self.proj = nn.Linear(4, 4)

        def no_weight_decay(self) -> set[str]:
            return {"token", "missing"}  # an unknown name is ignored

    tssa = TSSA(8, heads=2)
    block = ToSTBlock(8, heads=2)
    model = nn.ModuleDict({"attn": tssa, "block": block, "inner": nn.Sequential(WithToken())})
    groups = param_groups(model, weight_decay=0.1)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    names = dict(model.named_parameters())
    for name in ("attn.temperature", "block.attn.temperature", "inner.0.token"):
        assert names[name].ndim == 2 and id(names[name]) in no_decay, name
    for name in ("attn.qkv.weight", "block.mlp.0.weight", "inner.0.proj.weight"):
        assert id(names[name]) in decay, name
    assert len(decay) + len(no_decay) == len(names)
    # the order within each group is the model's parameter order
    order = [id(p) for p in model.parameters()]
    for group in groups:
        ids = [id(p) for p in group["params"]]
        assert ids == sorted(ids, key=order.index)
    optimizer = build_optimizer(tssa)
    assert any(p is tssa.temperature for p in optimizer.param_groups[1]["params"])
    assert optimizer.param_groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize("recipe", ["paper", "official"])
def test_fit_sets_the_scheduled_lr_every_step(tmp_path, recipe):
    """Each step runs with lr_at(step) over total = min(epochs·len, max_steps) steps."""
    loader = ToyLoader(n_batches=4)
    config = cfg(tmp_path, epochs=3, warmup_epochs=0.5, max_steps=9, recipe=recipe)
    seen = []

    def batch_fn(model, batch, device):
        seen.append(optimizer.param_groups[0]["lr"])
        return default_batch_fn(model, batch, device)

    model = tiny_seq_jepa()
    optimizer = torch.optim.AdamW(model.parameters(), lr=123.0)
    res = fit(model, loader, config, optimizer=optimizer, batch_fn=batch_fn)
    kw = dict(recipe=recipe, total_steps=9, warmup_steps=2, base_lr=1e-3)
    expected = [lr_at(step, **kw) for step in range(9)]
    assert seen == expected
    assert [r["lr"] for r in res.history if "lr" in r] == expected
    assert res.step == 9


# ----------------------------------------------------------------------------- config


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nlr: 0.001\ncompile: false\n")
    c = load_config(
        TrainConfig, path, ["lr=2e-4", "max_steps=7", "recipe=official", "grad_clip=null"]
    )
    assert (c.epochs, c.lr, c.max_steps, c.recipe, c.grad_clip) == (3, 2e-4, 7, "official", None)
    with pytest.raises(ValueError, match="unknown config key"):
        apply_overrides(c, ["learning_rate=1"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(c, ["lr"])
    with pytest.raises(TypeError, match="epochs"):
        config_from_dict(TrainConfig, {"epochs": "many"})
    with pytest.raises(ValueError, match="recipe"):
        apply_overrides(c, ["recipe=sgd"])


# ----------------------------------------------------------------------------- checkpoints


def test_atomic_checkpoint_survives_a_failed_write(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"v": torch.tensor([1.0])})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"v": torch.tensor([2.0])})
    monkeypatch.undo()
    assert load_checkpoint(path)["v"].item() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left behind
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- resume


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("split_steps", [3, 5])  # at an epoch boundary and mid-epoch
def test_resume_is_exact(tmp_path, split_steps):
    full = fit(tiny_seq_jepa(), ToyLoader(), cfg(tmp_path / "full", max_steps=10))
    calls = 0

    def crash_after_split(model, batch, device):
        nonlocal calls
        calls += 1
        if calls > split_steps:
            raise KeyboardInterrupt  # the process dies here
        return default_batch_fn(model, batch, device)

    split_cfg = cfg(tmp_path / "split", max_steps=10, checkpoint_every_steps=1)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_seq_jepa(), ToyLoader(), split_cfg, batch_fn=crash_after_split)
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == split_steps
    # A fresh process rebuilds the model (here with another seed): resume must not care.
    resumed = fit(tiny_seq_jepa(seed=99), ToyLoader(), split_cfg)
    assert resumed.step == full.step == 10
    a, b = _params(full.model), _params(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-7, msg=k)
    losses_full = [r["loss"] for r in full.history if "loss" in r]
    losses_split = [r["loss"] for r in resumed.history if "loss" in r]
    assert losses_split == pytest.approx(losses_full, rel=1e-6)


def test_metrics_files_and_eval(tmp_path):
    calls = []

    def eval_fn(model, epoch):
        calls.append((epoch, model.training))
        return {"score": float(epoch)}

    res = fit(
        tiny_seq_jepa(), ToyLoader(), cfg(tmp_path, epochs=2, eval_every_epochs=1), eval_fn=eval_fn
    )
    assert calls == [(1, False), (2, False)]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "epoch", "lr", "loss", "prediction_loss", "rate"} <= set(lines[0])
    assert any("eval/score" in r for r in lines)
    assert (tmp_path / "metrics.csv").read_text().startswith("step,epoch,lr,")
    assert res.model.training


# ----------------------------------------------------------------------------- non-finite loss


class ExplodingModel(nn.Module):
    def __init__(self, explode_at: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.calls, self.explode_at = 0, explode_at

    def forward(self, views, actions):
        self.calls += 1
        loss = (self.w**2).sum() * views.mean() ** 2
        return loss * float("nan") if self.calls > self.explode_at else loss


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = ExplodingModel(explode_at=4)
    with pytest.raises(NonFiniteLossError, match=r"step 4 .*last good checkpoint"):
        fit(model, ToyLoader(), cfg(tmp_path, epochs=3))
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 3  # end of epoch 1; nothing written after the NaN
    assert torch.isfinite(model.w).all()  # the NaN step never reached the optimizer
