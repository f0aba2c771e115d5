"""Tests for jepa_blocks.seq.SeqJEPA: data flow, dimensions, options, gradients, steps, resume."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from jepa_blocks.encoders import SmallCNN
from jepa_blocks.losses import MSELoss
from jepa_blocks.seq import (
    ActionEncoder,
    Aggregator,
    Predictor,
    SeqJEPA,
    SeqJEPAOutput,
    reverse_sequence,
    transformer_blocks,
)
from jepa_blocks.targets import CenterSharpen, EMATarget, StopGradTarget, Target

D, E, A = 16, 8, 3


def make_model(target: str = "ema", *, seed: int = 0, **kwargs) -> SeqJEPA:
    torch.manual_seed(seed)
    enc = SmallCNN(in_channels=1, out_dim=D, width=4)
    tgt: Target = EMATarget(enc, total_steps=50) if target == "ema" else StopGradTarget()
    kwargs.setdefault("dropout", 0.0)
    return SeqJEPA.from_encoder(
        enc,
        tgt,
        encoder_dim=D,
        action_dim=A,
        action_embed_dim=E,
        predictor_hidden=32,
        depth=2,
        heads=2,
        **kwargs,
    )


def make_batch(b: int = 4, m: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, m + 1, 1, 8, 8, generator=g), torch.randn(b, m, A, generator=g)


def toy_rate(z: torch.Tensor) -> torch.Tensor:
    """A local stand-in regularizer: ½ logdet(I + d/(n·0.25) ZᵀZ) on (n, d) rows."""
    n, d = z.shape
    gram = z.T @ z * (d / (n * 0.25))
    return 0.5 * torch.logdet(torch.eye(d, dtype=z.dtype) + gram)


def reference_forward(model: SeqJEPA, views, actions):
    """The DESIGN.md data flow written out with the model's parts (official pairing)."""
    b, m1 = views.shape[:2]
    m = m1 - 1
    z = model.encoder(views[:, :m].reshape(b * m, *views.shape[2:])).reshape(b, m, -1)
    with torch.no_grad():
        if isinstance(model.target, EMATarget):
            target = model.target.encoder(views[:, m])
        else:
            target = model.encoder(views[:, m])
    e_pred = model.action_encoder(actions[:, -1])  # a separate call, first, as the official code
    e_tok = model.action_encoder(actions).clone()
    e_tok[:, -1] = 0.0  # the last observed slot has no action
    z_agg = model.aggregator(torch.cat([z, e_tok], dim=-1))
    pred = model.predictor(torch.cat([z_agg, e_pred], dim=-1))
    loss = 1 - F.cosine_similarity(pred, target, dim=-1).mean()
    return loss, z_agg, z, pred, target


# --------------------------------------------------------------------------- shapes and data flow


def test_paper_dimensions():
    torch.manual_seed(0)
    enc = SmallCNN(in_channels=3, out_dim=512, width=4)  # stands in for ResNet-18 (512-d)
    model = SeqJEPA.from_encoder(enc, EMATarget(enc, total_steps=10), encoder_dim=512, action_dim=9)
    assert model.action_encoder.embed_dim == 128
    assert model.aggregator.dim == 640
    assert model.predictor.in_dim == 768 and model.predictor.out_dim == 512
    assert model.predictor.hidden == 1024 and len(model.aggregator.blocks) == 3
    views, actions = torch.randn(4, 4, 3, 8, 8), torch.randn(4, 3, 9)
    out = model(views, actions)
    assert isinstance(out, SeqJEPAOutput)
    assert out.loss.shape == () and out.prediction_loss.shape == ()
    assert out.z_agg.shape == (4, 640)
    assert out.z.shape == (4, 3, 512)
    assert out.prediction.shape == (4, 512) and out.target.shape == (4, 512)
    assert out.rate is None and out.rate_weight is None and out.reverse_loss is None


@pytest.mark.slow
def test_paper_configuration_with_resnet18():
    """B=8, M_tr=3, CIFAR ResNet-18, 9-d actions: one full step, target update included."""
    from jepa_blocks.encoders import resnet18_encoder

    torch.manual_seed(0)
    enc = resnet18_encoder()
    model = SeqJEPA.from_encoder(
        enc, EMATarget(enc, total_steps=100), encoder_dim=512, action_dim=9
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=4e-4)
    model.attach(opt)
    out = model(torch.randn(8, 4, 3, 32, 32), torch.randn(8, 3, 9))
    assert out.z_agg.shape == (8, 640) and out.z.shape == (8, 3, 512)
    assert out.prediction.shape == (8, 512) and out.target.shape == (8, 512)
    out.loss.backward()
    opt.step()
    assert int(model.target.step) == 1


@pytest.mark.parametrize("target", ["ema", "stopgrad"])
def test_forward_follows_the_design_data_flow(target):
    model = make_model(target)
    ref_model = copy.deepcopy(model)
    views, actions = make_batch()
    out = model(views, actions)
    loss, z_agg, z, pred, tgt = reference_forward(ref_model, views, actions)
    torch.testing.assert_close(out.loss, loss)
    torch.testing.assert_close(out.z_agg, z_agg)
    torch.testing.assert_close(out.z, z)
    torch.testing.assert_close(out.prediction, pred)
    torch.testing.assert_close(out.target, tgt)
    # identical BatchNorm bookkeeping (same passes, same batches)
    for (name, a), (_, b) in zip(model.state_dict().items(), ref_model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_last_slot_action_is_zeroed_and_a_M_feeds_the_predictor():
    model = make_model()
    model.eval()
    views, actions = make_batch()
    changed_last = actions.clone()
    changed_last[:, -1] += 5.0
    changed_first = actions.clone()
    changed_first[:, 0] += 5.0
    with torch.no_grad():
        base, last, first = (model(views, a) for a in (actions, changed_last, changed_first))
    torch.testing.assert_close(last.z_agg, base.z_agg)  # a_M is not in the tokens ...
    assert not torch.allclose(last.prediction, base.prediction)  # ... it conditions the predictor
    assert not torch.allclose(first.z_agg, base.z_agg)  # a_1 is in token 1


@pytest.mark.parametrize(("mode", "depends"), [("action", True), ("zeros", False)])
def test_last_token_action_options_in_training_mode(mode, depends):
    """Official quirk: with the 3DIEBench path a_M enters the token BatchNorm statistics."""
    model = make_model(last_token_action=mode)
    views, actions = make_batch()
    changed = actions.clone()
    changed[:, -1] = 10 * torch.randn(4, A)
    outs = [copy.deepcopy(model)(views, a).z_agg for a in (actions, changed)]
    assert torch.allclose(outs[0], outs[1]) != depends


def test_shared_predictor_action_uses_one_batchnorm_pass():
    model = make_model(predictor_action="shared")
    ref = copy.deepcopy(model)
    views, actions = make_batch()
    out = model(views, actions)
    b, m = actions.shape[:2]
    z = ref.encoder(views[:, :m].reshape(b * m, 1, 8, 8)).reshape(b, m, D)
    e_all = ref.action_encoder(actions)
    keep = torch.tensor([1.0] * (m - 1) + [0.0])[None, :, None]
    z_agg = ref.aggregator(torch.cat([z, e_all * keep], -1))
    pred = ref.predictor(torch.cat([z_agg, e_all[:, -1]], -1))
    torch.testing.assert_close(out.prediction, pred)
    assert int(model.action_encoder.norm.num_batches_tracked) == 1


def test_without_action_conditioning():
    model = make_model(condition_tokens=False)
    assert model.aggregator.dim == D and model.predictor.in_dim == D + E
    model.eval()
    views, actions = make_batch()
    with torch.no_grad():
        a, b = model(views, actions), model(views, actions + 3.0)
    torch.testing.assert_close(a.z_agg, b.z_agg)
    assert not torch.allclose(a.prediction, b.prediction)

    torch.manual_seed(0)
    enc = SmallCNN(in_channels=1, out_dim=D, width=4)
    plain = SeqJEPA(
        encoder=enc,
        target=StopGradTarget(),
        action_encoder=None,
        aggregator=Aggregator(dim=D, blocks=transformer_blocks(dim=D, depth=1, heads=2)),
        predictor=Predictor(in_dim=D, out_dim=D, hidden=32),
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(views, actions).loss, plain(views, -actions).loss)


# --------------------------------------------------------------------------- regularizer


@pytest.mark.parametrize("on", ["z_agg", "z", "both"])
def test_regularized_objective_and_parts(on):
    seen: list[tuple[int, ...]] = []

    def rate(z: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(z.shape))
        return toy_rate(z)

    model = make_model(regularizer=rate, regularize_on=on, regularizer_weight=0.3)
    views, actions = make_batch()
    out = model(views, actions)
    expected_rates = {}
    if on in ("z_agg", "both"):
        expected_rates["z_agg"] = toy_rate(out.z_agg)
        torch.testing.assert_close(out.rate_z_agg, expected_rates["z_agg"])
    else:
        assert out.rate_z_agg is None
    if on in ("z", "both"):
        expected_rates["z"] = toy_rate(out.z.reshape(-1, D))
        torch.testing.assert_close(out.rate_z, expected_rates["z"])
    else:
        assert out.rate_z is None
    total = sum(expected_rates.values())
    torch.testing.assert_close(out.rate, total)
    torch.testing.assert_close(out.loss, out.prediction_loss - 0.3 * total)
    assert set(seen[: len(expected_rates)]) <= {(4, D + E), (12, D)}
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.encoder.parameters())


def test_regularizer_weight_warmup_values():
    model = make_model(regularizer=toy_rate, regularizer_weight=0.5, regularizer_warmup_steps=4)
    model.eval()
    views, actions = make_batch()
    with torch.no_grad():
        for step, factor in [(0, 0.0), (1, 0.25), (2, 0.5), (4, 1.0), (10, 1.0)]:
            out = model(views, actions, step=step)
            assert float(out.rate_weight) == pytest.approx(0.5 * factor)
            torch.testing.assert_close(out.loss, out.prediction_loss - 0.5 * factor * out.rate)
        out = model(views, actions)  # the step buffer: 0 updates so far
        assert float(out.rate_weight) == 0.0
        torch.testing.assert_close(out.loss, out.prediction_loss)
        for k in range(1, 7):
            model.update()
            out = model(views, actions)
            assert int(model.step) == k
            assert float(out.rate_weight) == pytest.approx(0.5 * min(1.0, k / 4))


@pytest.mark.skipif(
    importlib.util.find_spec("jepa_blocks.rate") is None, reason="jepa_blocks.rate not available"
)
def test_with_the_real_coding_rate():
    from jepa_blocks.rate import CodingRate, coding_rate

    model = make_model(
        "stopgrad", regularizer=CodingRate(eps=0.5), regularizer_weight=1.0, regularize_on="both"
    )
    views, actions = make_batch()
    out = model(views, actions)
    torch.testing.assert_close(out.rate_z_agg, coding_rate(out.z_agg, eps=0.5))
    torch.testing.assert_close(out.rate_z, coding_rate(out.z.reshape(-1, D), eps=0.5))
    assert float(out.rate.detach()) > 0
    torch.testing.assert_close(out.loss, out.prediction_loss - out.rate)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.encoder.parameters())


# --------------------------------------------------------------------------- gradients


class _ConstTarget(Target):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, x, online):
        return self.value


class _NoStopGrad(Target):
    def forward(self, x, online):
        return online(x)


@pytest.mark.parametrize("target", ["ema", "stopgrad"])
def test_no_gradient_reaches_the_target_path(target):
    model = make_model(target)
    views, actions = make_batch()
    const_model = copy.deepcopy(model)
    leaky_model = copy.deepcopy(model)
    with torch.no_grad():
        source = copy.deepcopy(model)
        tgt_net = source.target.encoder if target == "ema" else source.encoder
        value = tgt_net(views[:, -1]).clone()

    model(views, actions).loss.backward()
    if target == "ema":
        assert all(p.grad is None and not p.requires_grad for p in model.target.parameters())
    const_model.target = _ConstTarget(value)
    const_model(views, actions).loss.backward()
    for p, q in zip(model.encoder.parameters(), const_model.encoder.parameters()):
        torch.testing.assert_close(p.grad, q.grad)

    if target == "stopgrad":  # the check above would catch a missing stop-grad
        leaky_model.target = _NoStopGrad()
        leaky_model(views, actions).loss.backward()
        assert any(
            not torch.allclose(p.grad, q.grad)
            for p, q in zip(model.encoder.parameters(), leaky_model.encoder.parameters())
        )


# --------------------------------------------------------------------------- variants


@pytest.mark.parametrize("target", ["ema", "stopgrad"])
def test_symmetric_averages_forward_and_reverse_tasks(target):
    sym = make_model(target, symmetric=True).eval()
    plain = copy.deepcopy(sym)
    plain.symmetric = False
    views, actions = make_batch()
    rv, ra = reverse_sequence(views, actions)
    with torch.no_grad():
        out = sym(views, actions)
        fwd, rev = plain(views, actions), plain(rv, ra)
    torch.testing.assert_close(out.reverse_loss, rev.prediction_loss)
    torch.testing.assert_close(
        out.prediction_loss, 0.5 * (fwd.prediction_loss + rev.prediction_loss)
    )
    torch.testing.assert_close(out.z_agg, fwd.z_agg)
    torch.testing.assert_close(out.prediction, fwd.prediction)
    sym.train()
    out = sym(views, actions)
    out.loss.backward()
    assert out.reverse_loss is not None and torch.isfinite(out.loss)


def test_target_transform_and_loss_are_used():
    model = make_model(target_transform=CenterSharpen(D, temperature=0.1), loss=MSELoss())
    views, actions = make_batch()
    out = model(views, actions)
    torch.testing.assert_close(out.target.sum(-1), torch.ones(4))
    torch.testing.assert_close(out.loss, F.mse_loss(out.prediction, out.target))
    assert model.target_transform.center.abs().sum() > 0


# --------------------------------------------------------------------------- steps and resume


def test_attach_updates_the_target_once_per_optimizer_step():
    model = make_model()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    handle = model.attach(opt)
    views, actions = make_batch()
    online = [p.detach().clone() for p in model.encoder.parameters()]
    naive = [p.clone() for p in online]
    for k in range(3):
        opt.zero_grad()
        model(views, actions).loss.backward()
        opt.step()
        tau = model.target.momentum_at(k)
        naive = [
            tau * t + (1 - tau) * p.detach() for t, p in zip(naive, model.encoder.parameters())
        ]
    assert int(model.step) == 3 and int(model.target.step) == 3
    for got, want in zip(model.target.encoder.parameters(), naive):
        torch.testing.assert_close(got, want)
    handle.remove()
    opt.step()
    assert int(model.step) == 3


def _train(model: SeqJEPA, opt: torch.optim.Optimizer, steps: range) -> None:
    for k in steps:
        views, actions = make_batch(seed=1000 + k)
        opt.zero_grad()
        model(views, actions).loss.backward()
        opt.step()


def test_resume_from_state_dict_is_bit_exact():
    n = 3

    def build() -> tuple[SeqJEPA, torch.optim.Optimizer]:
        model = make_model(regularizer=toy_rate, regularizer_weight=0.1, regularizer_warmup_steps=4)
        opt = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9
        )
        model.attach(opt)
        return model, opt

    ref, ref_opt = build()
    _train(ref, ref_opt, range(2 * n))

    first, first_opt = build()
    _train(first, first_opt, range(n))
    ckpt = copy.deepcopy({"model": first.state_dict(), "opt": first_opt.state_dict()})
    resumed, resumed_opt = build()
    resumed.load_state_dict(ckpt["model"])
    resumed_opt.load_state_dict(ckpt["opt"])
    _train(resumed, resumed_opt, range(n, 2 * n))

    for (name, a), (_, b) in zip(ref.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------- probes API


def test_context_with_padding_matches_shorter_sequences():
    model = make_model().eval()
    views, actions = make_batch(b=3, m=4)
    obs_views, obs_actions = views[:, :4], actions  # 4 observed views, a_j leaves view j
    mask = torch.tensor([[False] * 4, [False, False, True, True], [False, True, True, True]])
    with torch.no_grad():
        z_agg, z = model.context(obs_views, obs_actions, padding_mask=mask)
        assert z.shape == (3, 4, D) and z_agg.shape == (3, D + E)
        for row, m in enumerate([4, 2, 1]):
            short, _ = model.context(obs_views[row : row + 1, :m], obs_actions[row : row + 1, :m])
            torch.testing.assert_close(z_agg[row : row + 1], short, rtol=1e-5, atol=1e-5)
        # M - 1 actions are enough (the last slot is zeroed anyway)
        a, _ = model.context(obs_views[:, :3], obs_actions[:, :2])
        b, _ = model.context(obs_views[:, :3], obs_actions[:, :3])
        torch.testing.assert_close(a, b)
        # the forward pass's z_agg is the context of the observed views
        out = model(views, actions[:, :4])
        c, _ = model.context(views[:, :4], actions[:, :4])
        torch.testing.assert_close(out.z_agg, c)


# --------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors():
    model = make_model()
    views, actions = make_batch()
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, H, W\).*\(12, 8, 8\)"):
        model(views[:, :, 0], actions)  # (B, M+1, 8, 8) observations the image encoder can't take
    with pytest.raises(ValueError, match="M >= 1"):
        model(views[:, :1], actions[:, :0])
    with pytest.raises(
        ValueError, match=r"actions must have shape \(B, M, A\) = \(4, 3, A\).*\(4, 2, 3\)"
    ):
        model(views, actions[:, :2])
    with pytest.raises(ValueError, match=r"\(4, 3, A\)"):
        model(views, actions[:2])
    with pytest.raises(ValueError, match="action_dim = 3 features, got 5"):
        model(views, torch.randn(4, 3, 5))
    with pytest.raises(TypeError, match="floating dtype"):
        model(views, actions.long())
    with pytest.raises(ValueError, match=r"padding_mask must be a bool tensor of shape \(B, M\)"):
        model.context(views[:, :3], actions, padding_mask=torch.zeros(4, 2, dtype=torch.bool))


def test_bad_construction_raises_clear_errors():
    enc = SmallCNN(in_channels=1, out_dim=D, width=4)
    parts = {
        "encoder": enc,
        "target": StopGradTarget(),
        "action_encoder": ActionEncoder(action_dim=A, embed_dim=E),
        "aggregator": Aggregator(dim=D + E, blocks=transformer_blocks(dim=D + E, depth=1, heads=2)),
        "predictor": Predictor(in_dim=D + 2 * E, out_dim=D, hidden=8),
    }
    SeqJEPA(**parts)  # consistent
    with pytest.raises(TypeError, match=r"target must be a jepa_blocks\.targets\.Target"):
        SeqJEPA(**{**parts, "target": enc})
    with pytest.raises(ValueError, match=r"predictor\.in_dim must be .* = 32, got 31"):
        SeqJEPA(**{**parts, "predictor": Predictor(in_dim=31, out_dim=D)})
    with pytest.raises(ValueError, match=r"predictor\.out_dim must equal the encoder dimension D"):
        SeqJEPA(**{**parts, "predictor": Predictor(in_dim=D + 2 * E, out_dim=7)})
    with pytest.raises(ValueError, match="needs last_token_action='action'"):
        SeqJEPA(**parts, predictor_action="shared", last_token_action="zeros")
    with pytest.raises(ValueError, match="regularize_on"):
        SeqJEPA(**parts, regularize_on="agg")
    with pytest.raises(ValueError, match="regularizer_weight must be a finite number >= 0"):
        SeqJEPA(**parts, regularizer_weight=-0.1)
    with pytest.raises(ValueError, match="regularizer_warmup_steps"):
        SeqJEPA(**parts, regularizer_warmup_steps=-1)
    with pytest.raises(TypeError, match="regularizer must be callable"):
        SeqJEPA(**parts, regularizer=3)
    with pytest.raises(TypeError, match="optimizer"):
        SeqJEPA(**parts).attach("sgd")


def test_compiles_fullgraph():
    torch._dynamo.reset()
    model = make_model(
        "stopgrad",
        symmetric=True,
        regularizer=toy_rate,
        regularizer_weight=1.0,
        regularizer_warmup_steps=3,
        target_transform=None,
    )
    views, actions = make_batch()
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    out = compiled(views, actions)
    ref = eager(views, actions)
    torch.testing.assert_close(out.loss, ref.loss)
    out.loss.backward()
    assert all(isinstance(p.grad, torch.Tensor) for p in model.encoder.parameters())


def test_parts_are_submodules():
    model = make_model()
    names = {n for n, _ in model.named_children()}
    assert {"encoder", "target", "action_encoder", "aggregator", "predictor", "loss_fn"} <= names
    # the stop-grad target does not duplicate the encoder in the state dict
    sg = make_model("stopgrad")
    assert not any(k.startswith("target.") for k in sg.state_dict())
