"""Tests for jepa_blocks.targets: schedules, EMA update, buffer policies, resume, stop-grad, DINO."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from jepa_blocks.targets import (
    CenterSharpen,
    EMATarget,
    StopGradTarget,
    Target,
    center_sharpen,
    cosine_momentum,
    ema_update_,
    epoch_cosine_momentum,
    updated_center,
)

momenta = st.floats(0.0, 1.0, allow_nan=False)


def small_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 5)
    ).to(dtype)


def perturb_(module: nn.Module, seed: int) -> None:
    """Deterministically move every parameter (stands in for an optimizer step)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


# --------------------------------------------------------------------------- schedules


@settings(max_examples=60, deadline=None)
@given(total=st.integers(1, 10_000), frac=st.floats(0.0, 1.5), base=momenta, final=momenta)
def test_cosine_momentum_equals_formula(total, frac, base, final):
    step = int(frac * total)
    k = min(step, total)
    expected = final - (final - base) * (math.cos(math.pi * k / total) + 1) / 2
    value = cosine_momentum(step, total, base=base, final=final)
    assert value == pytest.approx(expected, abs=1e-15)
    assert min(base, final) - 1e-15 <= value <= max(base, final) + 1e-15


def test_cosine_momentum_paper_endpoints_and_monotone():
    assert cosine_momentum(0, 1000) == pytest.approx(0.996)
    assert cosine_momentum(500, 1000) == pytest.approx(0.998)
    assert cosine_momentum(1000, 1000) == 1.0
    assert cosine_momentum(5000, 1000) == 1.0
    values = [cosine_momentum(k, 100) for k in range(101)]
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert cosine_momentum(40, 100, base=0.99, final=0.99) == pytest.approx(0.99)


def test_epoch_cosine_momentum_reproduces_official_loop():
    """Simulate hafezgh/seq-jepa engine.py: update with ema_decay, then set it from the epoch."""
    base, epochs, steps_per_epoch = 0.996, 5, 3
    used = []
    ema_decay = base  # the model is built with ema_decay = base
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            used.append(ema_decay)
            ema_decay = 1 - (1 - base) * ((math.cos(math.pi * epoch / epochs) + 1) / 2)
    ours = [
        epoch_cosine_momentum(k, steps_per_epoch=steps_per_epoch, total_epochs=epochs, base=base)
        for k in range(epochs * steps_per_epoch)
    ]
    assert ours == pytest.approx(used, abs=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"step": -1, "total_steps": 10}, "step must be an int >= 0"),
        ({"step": 0, "total_steps": 0}, "total_steps must be an int >= 1"),
        ({"step": 0, "total_steps": 10, "base": 1.5}, r"base must be in \[0, 1\], got 1.5"),
        ({"step": 0, "total_steps": 10, "final": -0.1}, r"final must be in \[0, 1\]"),
        ({"step": 0, "total_steps": 10, "base": float("nan")}, "base must be in"),
    ],
)
def test_cosine_momentum_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cosine_momentum(**kwargs)


# --------------------------------------------------------------------------- EMA update


@settings(max_examples=30, deadline=None)
@given(tau=momenta, seed=st.integers(0, 1000))
def test_ema_update_equals_naive_loop_float64(tau, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (7,), (2, 2, 2), ()]
    target = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    online = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    expected = [tau * t + (1 - tau) * o for t, o in zip(target, online)]
    ema_update_(target, online, tau)
    for got, want in zip(target, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)


def test_ema_update_rejects_bad_input():
    a = [torch.zeros(2)]
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.2"):
        ema_update_(a, a, 1.2)
    with pytest.raises(ValueError, match="same number of tensors"):
        ema_update_(a, [torch.zeros(2), torch.zeros(2)], 0.5)
    with pytest.raises(
        ValueError, match=r"same shape and dtype, got \(2,\) torch.float32 and \(3,\)"
    ):
        ema_update_(a, [torch.zeros(3)], 0.5)


@pytest.mark.parametrize("steps_per_epoch", [None, 2])
def test_ema_target_update_equals_naive_per_parameter_loop(steps_per_epoch):
    online = small_net(0)
    target = EMATarget(online, total_steps=8, steps_per_epoch=steps_per_epoch)
    naive = [p.detach().clone() for p in online.parameters()]
    for k in range(8):
        perturb_(online, seed=k)
        if steps_per_epoch is None:
            tau = cosine_momentum(k, 8)
        else:
            tau = epoch_cosine_momentum(k, steps_per_epoch=2, total_epochs=4)
        assert target.momentum == tau
        used = target.update(online, step=k)
        assert used == tau
        for i, p in enumerate(online.parameters()):  # the official per-parameter loop
            naive[i] = tau * naive[i] + (1 - tau) * p.detach()
    for got, want in zip(target.encoder.parameters(), naive):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    assert int(target.step) == 8


def test_ema_target_parameters_are_frozen_and_output_detached():
    online = small_net(1)
    target = EMATarget(online, total_steps=10)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())  # the online net is untouched
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    y = target(x)
    assert not y.requires_grad
    torch.testing.assert_close(y, online(x).detach())  # a copy at construction


def test_ema_target_checks_exactly_one_update_per_step():
    online = small_net(2)
    target = EMATarget(online, total_steps=10)
    target.update(online, step=0)
    with pytest.raises(RuntimeError, match="exactly once per optimizer step"):
        target.update(online, step=0)  # a doubled update
    with pytest.raises(RuntimeError, match="exactly once"):
        target.update(online, step=3)  # a skipped one
    target.update(online, step=1)
    assert int(target.step) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"total_steps": 0}, ValueError, "total_steps must be an int >= 1"),
        (
            {"total_steps": 10, "base_momentum": 1.01},
            ValueError,
            r"base_momentum must be in \[0, 1\]",
        ),
        ({"total_steps": 10, "final_momentum": -1}, ValueError, "final_momentum"),
        ({"total_steps": 10, "steps_per_epoch": 3}, ValueError, "multiple of steps_per_epoch"),
        ({"total_steps": 10, "buffers": "average"}, ValueError, "buffers must be one of"),
        ({"total_steps": 2.5}, TypeError, "total_steps must be an int"),
    ],
)
def test_ema_target_rejects_bad_config(kwargs, error, match):
    with pytest.raises(error, match=match):
        EMATarget(small_net(0), **kwargs)


def test_ema_target_rejects_mismatched_online():
    target = EMATarget(small_net(0), total_steps=10)
    with pytest.raises(ValueError, match="parameters"):
        target.update(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"online must be an nn\.Module"):
        target.update("encoder")  # type: ignore[arg-type]


def _bn(module: nn.Module) -> nn.BatchNorm2d:
    bn = module[1]
    assert isinstance(bn, nn.BatchNorm2d)
    return bn


def test_buffer_policies():
    online = small_net(3)
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    targets = {p: EMATarget(online, total_steps=5, buffers=p) for p in ("own", "copy", "ema")}
    online.train()
    online(x)  # moves the online running statistics
    before = {p: copy.deepcopy(_bn(t.encoder).state_dict()) for p, t in targets.items()}
    tau = cosine_momentum(0, 5)
    for t in targets.values():
        t.update(online)
    on = _bn(online)
    own, cp, ema = (_bn(targets[p].encoder) for p in ("own", "copy", "ema"))
    # own: untouched by update
    torch.testing.assert_close(own.running_mean, before["own"]["running_mean"], rtol=0, atol=0)
    assert int(own.num_batches_tracked) == 0
    # copy: equal to the online buffers
    assert torch.equal(cp.running_mean, on.running_mean)
    assert torch.equal(cp.running_var, on.running_var)
    assert int(cp.num_batches_tracked) == 1
    # ema: floating buffers averaged, integer ones copied
    want = tau * before["ema"]["running_mean"] + (1 - tau) * on.running_mean
    torch.testing.assert_close(ema.running_mean, want, rtol=0, atol=1e-15)
    assert int(ema.num_batches_tracked) == 1
    # own: the target's buffers move through its own train-mode forward passes
    targets["own"].train()
    targets["own"](x)
    assert int(own.num_batches_tracked) == 1


@pytest.mark.parametrize("steps_per_epoch", [None, 3])
def test_state_dict_round_trip_resumes_bit_exactly(steps_per_epoch):
    n = 6

    def run(target: EMATarget, online: nn.Module, start: int, stop: int) -> None:
        for k in range(start, stop):
            perturb_(online, seed=100 + k)
            target(
                torch.randn(
                    4, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(k)
                )
            )
            target.update(online, step=k)

    kw = {"total_steps": 2 * n, "steps_per_epoch": steps_per_epoch, "buffers": "ema"}
    online_a = small_net(5)
    ref = EMATarget(online_a, **kw)
    run(ref, online_a, 0, 2 * n)

    online_b = small_net(5)
    first = EMATarget(online_b, **kw)
    run(first, online_b, 0, n)
    state = copy.deepcopy(first.state_dict())
    online_state = copy.deepcopy(online_b.state_dict())
    assert "step" in state and "total_steps" in state

    online_c = small_net(9)  # a different init, overwritten by the checkpoint
    online_c.load_state_dict(online_state)
    resumed = EMATarget(online_c, total_steps=2 * n, steps_per_epoch=steps_per_epoch, buffers="ema")
    resumed.load_state_dict(state)
    assert resumed.momentum == first.momentum
    run(resumed, online_c, n, 2 * n)

    for (name, a), (_, b) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------- stop-grad


def test_stop_grad_target_is_the_online_encoder_without_gradient():
    online = small_net(6)
    target = StopGradTarget()
    assert list(target.parameters()) == [] and list(target.buffers()) == []
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    online.eval()
    y = target(x, online)
    assert not y.requires_grad
    torch.testing.assert_close(y, online(x))
    target.update(online)  # no-op, must not raise
    with pytest.raises(TypeError, match="online must be the online encoder"):
        target(x, None)  # type: ignore[arg-type]


def test_stop_grad_gives_zero_gradient_through_the_target_path():
    online = small_net(7)
    online.eval()
    x_ctx = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    x_tgt = torch.randn(3, 1, 4, 4, dtype=torch.float64)

    def grads(target_fn) -> list[torch.Tensor]:
        online.zero_grad()
        loss = (online(x_ctx) * target_fn()).sum()
        loss.backward()
        return [p.grad.clone() for p in online.parameters()]

    constant = online(x_tgt).detach().clone()
    g_sg = grads(lambda: StopGradTarget()(x_tgt, online))
    g_const = grads(lambda: constant)
    g_through = grads(lambda: online(x_tgt))  # what a missing stop-grad would give
    for a, b in zip(g_sg, g_const):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.allclose(a, c) for a, c in zip(g_sg, g_through))


def test_target_base_class_contract():
    with pytest.raises(NotImplementedError):
        Target()(torch.zeros(1), nn.Identity())
    Target().update(nn.Identity())


# --------------------------------------------------------------------------- centering / sharpening


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), t=st.floats(0.01, 1.0), d=st.integers(1, 8))
def test_center_sharpen_equals_softmax_formula(seed, t, d):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(4, d, generator=g, dtype=torch.float64)
    c = torch.randn(d, generator=g, dtype=torch.float64)
    p = center_sharpen(z, c, temperature=t)
    logits = (z - c) / t
    expected = torch.exp(logits - logits.max(-1, keepdim=True).values)
    expected = expected / expected.sum(-1, keepdim=True)
    torch.testing.assert_close(p, expected)
    torch.testing.assert_close(p.sum(-1), torch.ones(4, dtype=torch.float64))


def test_lower_temperature_is_sharper():
    z = torch.randn(16, 10, dtype=torch.float64)
    c = torch.zeros(10, dtype=torch.float64)

    def entropy(p: torch.Tensor) -> float:
        return float(-(p * p.clamp_min(1e-300).log()).sum(-1).mean())

    assert entropy(center_sharpen(z, c, temperature=0.04)) < entropy(
        center_sharpen(z, c, temperature=1.0)
    )


def test_updated_center_formula():
    c = torch.tensor([1.0, -1.0], dtype=torch.float64)
    z = torch.tensor([[[0.0, 2.0], [4.0, 0.0]]], dtype=torch.float64)  # (1, 2, 2): mean (2, 1)
    torch.testing.assert_close(
        updated_center(c, z, momentum=0.9),
        0.9 * c + 0.1 * torch.tensor([2.0, 1.0], dtype=torch.float64),
    )
    with pytest.raises(ValueError, match="center"):
        updated_center(torch.zeros(3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        updated_center(c, z, momentum=2.0)


def test_center_sharpen_module_uses_old_center_then_updates_in_training_only():
    mod = CenterSharpen(3, temperature=0.5, momentum=0.8).double()
    z1 = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], dtype=torch.float64)
    out = mod(z1)
    torch.testing.assert_close(out, torch.softmax(z1 / 0.5, -1))  # centre was zero
    torch.testing.assert_close(mod.center, 0.2 * z1.mean(0))
    z2 = torch.randn(5, 3, dtype=torch.float64)
    c1 = mod.center.clone()
    out2 = mod(z2)
    torch.testing.assert_close(out2, torch.softmax((z2 - c1) / 0.5, -1))
    torch.testing.assert_close(mod.center, updated_center(c1, z2, momentum=0.8))
    mod.eval()
    c2 = mod.center.clone()
    mod(torch.randn(4, 3, dtype=torch.float64))
    assert torch.equal(mod.center, c2)
    assert "center" in mod.state_dict()


def test_center_sharpen_rejects_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        CenterSharpen(3, temperature=0.0)
    with pytest.raises(ValueError, match="momentum"):
        CenterSharpen(3, momentum=1.5)
    with pytest.raises(ValueError, match=r"\(\.\.\., n, 3\), n >= 1, got \(2, 4\)"):
        CenterSharpen(3)(torch.zeros(2, 4))
