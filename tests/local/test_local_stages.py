"""The three local stages: gradient isolation, frozen encoder, memory bound, determinism."""

from __future__ import annotations

import copy
import re
from typing import NamedTuple

import pytest
import torch
from torch import nn

from jepa_blocks import CodingRate, EMATarget, SeqJEPA, StopGradTarget
from jepa_blocks.local import (
    STAGES,
    BlockLossLog,
    LocalRateLoss,
    LocalSeqJEPA,
    LPLLoss,
    conv_block_encoder,
    fit_local,
    local_step_fn,
    peak_step_memory,
)
from jepa_blocks.train import Callback, TrainConfig, fit, lr_at

B, M, A = 16, 3, 5


def _model(
    *, target: str = "stopgrad", seed: int = 0, small: bool = True, norm: str = "readout"
) -> SeqJEPA:
    torch.manual_seed(seed)
    widths = (4, 8, 8, 16) if small else (16, 32, 64, 128)
    enc = conv_block_encoder(in_channels=1, widths=widths, norm=norm)  # type: ignore[arg-type]
    tgt = EMATarget(enc, total_steps=10) if target == "ema" else StopGradTarget()
    return SeqJEPA.from_encoder(
        enc, tgt, encoder_dim=widths[-1], action_dim=A, action_embed_dim=8,
        predictor_hidden=32, depth=2, heads=2, mlp_ratio=2,
        regularizer=CodingRate(eps=0.5), regularizer_weight=0.03,
    )  # fmt: skip


def _batch(seed: int = 1, size: int = 12, b: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, M + 1, 1, size, size, generator=g), torch.randn(b, M, A, generator=g)


class _Batch(NamedTuple):
    views: torch.Tensor
    actions: torch.Tensor


class _Loader:
    """A tiny deterministic loader with ``set_epoch``."""

    def __init__(self, n: int = 3) -> None:
        self.batches = [_Batch(*_batch(seed=10 + i)) for i in range(n)]

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        del epoch

    def __iter__(self):
        return iter(self.batches)


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=1, lr=1e-3, warmup_epochs=0.0, device="cpu", progress=False, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def _grads(module: nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: (None if p.grad is None else p.grad.clone()) for n, p in module.named_parameters()}


def test_stage3_no_gradient_crosses_a_block_boundary():
    learner = LocalSeqJEPA(_model(), stage="stage3")
    views, actions = _batch()
    blocks = list(learner.encoder_blocks.blocks)
    seen: list[bool] = []
    handles = [
        b.register_forward_pre_hook(lambda _m, args: seen.append(args[0].requires_grad))
        for b in blocks
    ]
    arrivals: dict[int, int] = {}

    def out_hook(k):
        def hook(_m, _i, out):
            if out.requires_grad:
                out.register_hook(lambda g: arrivals.__setitem__(k, arrivals.get(k, 0) + 1))

        return hook

    handles += [b.register_forward_hook(out_hook(k)) for k, b in enumerate(blocks)]
    learner.backward_step(views, actions)
    for h in handles:
        h.remove()
    # Every block input (images or the previous block's detached output) carries no history.
    assert seen and not any(seen)
    # Each block's output received gradient exactly once: from its own local loss.
    assert arrivals == {k: 1 for k in range(len(blocks))}

    # The same losses with all graphs alive: block k's loss reaches block k (and head k) only,
    # and the aggregator/predictor loss reaches no encoder block.
    learner.zero_grad(set_to_none=True)
    out = learner(views, actions)
    params = [list(b.parameters()) for b in blocks]
    for k, loss_k in enumerate(out.block_losses):
        for j, ps in enumerate(params):
            grads = torch.autograd.grad(loss_k, ps, retain_graph=True, allow_unused=True)
            if j == k:
                assert all(g is not None and torch.any(g != 0) for g in grads[:1])
            else:
                # ``block_losses`` is a stack, so other entries get exact zeros, not ``None``.
                assert all(g is None or not torch.any(g) for g in grads), f"{k} reached {j}"
    top = out.main_loss + out.aggregator_losses.sum()
    flat = [p for ps in params for p in ps]
    top_grads = torch.autograd.grad(top, flat, retain_graph=True, allow_unused=True)
    assert all(g is None for g in top_grads)


def test_stage3_backward_and_free_gives_the_detach_only_gradients():
    learner = LocalSeqJEPA(_model(), stage="stage3")
    views, actions = _batch()
    a, b = copy.deepcopy(learner), copy.deepcopy(learner)
    torch.manual_seed(5)
    out_a = a.backward_step(views, actions)
    torch.manual_seed(5)
    out_b = b(views, actions)
    out_b.loss.backward()
    torch.testing.assert_close(out_a.loss, out_b.loss.detach())
    ga, gb = _grads(a), _grads(b)
    assert ga.keys() == gb.keys()
    for name in ga:
        if ga[name] is None:
            assert gb[name] is None, name
        else:
            torch.testing.assert_close(ga[name], gb[name], msg=name)


def test_stage2_leaves_the_encoder_bit_identical():
    learner = LocalSeqJEPA(_model(), stage="stage2")
    before = copy.deepcopy(learner.model.encoder.state_dict())
    agg_before = copy.deepcopy(learner.model.aggregator.state_dict())
    result = fit_local(learner, _Loader(), _cfg(epochs=2))
    assert result.step == 6
    after = learner.model.encoder.state_dict()
    assert before.keys() == after.keys()
    for k in before:  # parameters and BatchNorm statistics
        assert torch.equal(before[k], after[k]), k
    assert all(not p.requires_grad for p in learner.model.encoder.parameters())
    assert any(
        not torch.equal(agg_before[k], v) for k, v in learner.model.aggregator.state_dict().items()
    )
    learner.set_stage("stage3")  # unfreezes what stage 2 froze
    assert all(p.requires_grad for p in learner.model.encoder.parameters())


# End-to-end keeps every block's maps: two per block with BatchNorm (its input and the ReLU's
# output), one without. Stage 3 keeps one block's input and output, so the ratio is higher
# without BatchNorm (0.53 with this small top; 0.47 with the cpu-demo model, test_step6_smoke).
@pytest.mark.parametrize(("norm", "bound"), [("block", 0.5), ("readout", 0.55)])
def test_stage3_peak_memory_about_half_of_end_to_end(norm, bound):
    views, actions = _batch(size=28, b=32)
    e2e = LocalSeqJEPA(_model(small=False, norm=norm), stage="end-to-end")
    local = LocalSeqJEPA(_model(small=False, norm=norm), stage="stage3")
    assert local.encoder_blocks.num_blocks == 4
    peak_e2e = peak_step_memory(e2e, views, actions, warmup=False).saved_bytes
    peak_local = peak_step_memory(local, views, actions, warmup=False).saved_bytes
    detach_only = peak_step_memory(local, views, actions, warmup=False, free_blocks=False)
    assert peak_local <= bound * peak_e2e, (peak_local, peak_e2e)
    # Detaching alone saves nothing: every block's activations stay alive until the backward.
    assert detach_only.saved_bytes >= 0.9 * peak_e2e


def test_stage3_is_deterministic_under_a_seed():
    def run():
        learner = LocalSeqJEPA(_model(seed=3), stage="stage3")
        torch.manual_seed(7)
        res = fit_local(learner, _Loader(), _cfg(epochs=2))
        return learner.state_dict(), res.history

    (s1, h1), (s2, h2) = run(), run()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    assert [r["loss"] for r in h1] == [r["loss"] for r in h2]
    assert len(h1) == 6 and all(r["loss"] == r["loss"] for r in h1)


def test_stage3_sets_the_scheduled_lr_every_step():
    """Stage 3 runs in fit (with local_step_fn): the learning rate is lr_at(step) every step."""
    learner = LocalSeqJEPA(_model(), stage="stage3")
    optimizer = torch.optim.SGD(learner.parameters(), lr=123.0)
    seen = []
    step_fn = learner.backward_step

    def backward_step(*args, **kwargs):
        seen.append(optimizer.param_groups[0]["lr"])
        return step_fn(*args, **kwargs)

    learner.backward_step = backward_step  # type: ignore[method-assign]
    config = _cfg(epochs=3, warmup_epochs=1.0, max_steps=7, warmup_start_lr=1e-4, final_lr=1e-6)
    res = fit_local(learner, _Loader(), config, optimizer=optimizer)
    kw = dict(total_steps=7, warmup_steps=3, base_lr=1e-3, warmup_start_lr=1e-4, final_lr=1e-6)
    expected = [lr_at(step, recipe="paper", **kw) for step in range(7)]
    assert seen == expected
    assert [r["lr"] for r in res.history] == expected and res.step == 7


def test_stage1_adds_local_losses_to_the_end_to_end_objective():
    learner = LocalSeqJEPA(_model(), stage="stage1", aux_weight=0.5)
    views, actions = _batch()
    torch.manual_seed(0)
    out = learner(views, actions)
    assert out.block_losses.shape == (4,) and out.aggregator_losses.shape == (0,)
    torch.testing.assert_close(out.loss, out.main_loss + 0.5 * out.block_losses.sum())
    out.loss.backward()
    enc_grads = [p.grad for p in learner.model.encoder.parameters()]
    assert all(g is not None for g in enc_grads)
    # Same main loss as the plain model on the same input and seed.
    ref = LocalSeqJEPA(_model(), stage="end-to-end")
    torch.manual_seed(0)
    torch.testing.assert_close(ref(views, actions).loss, out.main_loss)
    res = fit_local(learner, _Loader(), _cfg())
    assert res.step == 3 and "local_loss" in res.history[-1]


def test_stage3_pull_targets_are_detached_by_the_objective():
    """The stage passes targets with their graph; ``LPLLoss(stop_gradient=...)`` decides."""
    views, actions = _batch()
    grads = []
    for sg in (True, False):
        objective = LPLLoss(stop_gradient=sg, push_weight=0.0, decorrelation_weight=0.0)
        learner = LocalSeqJEPA(_model(), stage="stage3", objective=objective)
        learner.backward_step(views, actions)
        grads.append(learner.encoder_blocks.blocks[0][0].weight.grad)
    assert grads[0] is not None and grads[1] is not None
    assert not torch.allclose(grads[0], grads[1])


def test_stage3_with_ema_target_and_rate_objective():
    learner = LocalSeqJEPA(_model(target="ema"), stage="stage3", objective=LocalRateLoss())
    res = fit_local(learner, _Loader(), _cfg())
    assert res.step == 3 and all(r["loss"] == r["loss"] for r in res.history)
    assert int(learner.model.step) == 3


def test_end_to_end_stage_is_the_model_objective():
    learner = LocalSeqJEPA(_model(), stage="end-to-end", action_conditioned=False)
    views, actions = _batch()
    torch.manual_seed(0)
    out = learner(views, actions)
    torch.manual_seed(0)
    torch.testing.assert_close(out.loss, learner.model(views, actions).loss)
    assert float(out.local_loss) == 0.0


def test_validation():
    with pytest.raises(TypeError, match="SeqJEPA"):
        LocalSeqJEPA(nn.Linear(2, 2))  # type: ignore[arg-type]
    learner = LocalSeqJEPA(_model())
    with pytest.raises(ValueError, match="stage"):
        learner.set_stage("stage4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aux_weight"):
        LocalSeqJEPA(_model(), aux_weight=-1.0)
    with pytest.raises(ValueError, match="head_hidden"):
        LocalSeqJEPA(_model(), head_hidden=0)
    with pytest.raises(TypeError, match="learner"):
        fit_local(nn.Linear(2, 2), _Loader(), _cfg())  # type: ignore[arg-type]
    assert STAGES == ("end-to-end", "stage1", "stage2", "stage3")


@pytest.mark.parametrize("stage", ["stage1", "stage2", "stage3"])
def test_fit_local_logs_each_blocks_local_loss(stage):
    """``block{k}`` (encoder blocks) and ``agg{k}`` (aggregator heads) beside the scalar losses."""
    learner = LocalSeqJEPA(_model(), stage=stage)
    res = fit_local(learner, _Loader(), _cfg(log_every=2))
    records = [r for r in res.history if "loss" in r]
    assert [r["step"] for r in records] == [2, 3]  # every log_every steps and the last
    blocks = [f"block{k}" for k in range(4)] if stage != "stage2" else []
    aggs = ["agg0"] if stage != "stage1" else []  # depth 2: one head (the last block has none)
    for r in records:
        assert {"loss", "main_loss", "local_loss"} <= set(r)
        assert sorted(k for k in r if re.fullmatch(r"(block|agg)\d+", k)) == sorted(blocks + aggs)
    if stage == "stage3":  # the total is the sum of the parts
        r = records[-1]
        parts = sum(r[k] for k in blocks) + sum(r[k] for k in aggs) + r["main_loss"]
        assert r["loss"] == pytest.approx(parts, rel=1e-5)
    assert BlockLossLog().after_step(None, None, torch.zeros(())) is None  # type: ignore[arg-type]


def test_local_step_fn_is_fits_step_for_stage3():
    """fit(step_fn=local_step_fn) is fit_local's stage 3, callbacks run after it."""
    seen = []

    class Spy(Callback):
        def after_step(self, state, batch, out):
            seen.append(float(out.loss))

    def train(use_fit: bool):
        learner = LocalSeqJEPA(_model(seed=4), stage="stage3")
        torch.manual_seed(1)
        if use_fit:
            return fit(learner, _Loader(), _cfg(), step_fn=local_step_fn, callbacks=[Spy()])
        return fit_local(learner, _Loader(), _cfg(), callbacks=[Spy()])

    a, b = train(True), train(False)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert len(seen) == 6 and seen[:3] == seen[3:]
    with pytest.raises(TypeError, match="LocalSeqJEPA"):
        local_step_fn(nn.Linear(2, 2), None, None)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="compile"):
        fit_local(LocalSeqJEPA(_model(), stage="stage3"), _Loader(), _cfg(compile=True))
