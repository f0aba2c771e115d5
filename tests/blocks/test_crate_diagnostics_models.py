"""CRATE diagnostics of a model's CRATE stacks: held-out head R², stack diagnostics, the monitor."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from jepa_blocks import SeqJEPA, SmallCNN, StopGradTarget
from jepa_blocks.blocks import (
    CRATELayer,
    CRATERecorder,
    StackDiagnostics,
    crate_blocks,
    crate_monitor,
    crate_stack_diagnostics,
    head_action_r2,
    specialization_score,
    weighted_specialization,
)
from jepa_blocks.seq import (
    ActionEncoder,
    Aggregator,
    CRATEPredictor,
    Predictor,
    transformer_blocks,
)

D, E, A = 16, 4, 5  # encoder width, action embedding, action dimension (tokens of width 20)


def _model(*, agg: bool = True, pred: bool = True, symmetric: bool = False) -> SeqJEPA:
    """A tiny seq-JEPA whose aggregator and/or predictor are CRATE stacks (2 layers × 2 heads)."""
    torch.manual_seed(0)
    width = D + E
    blocks = (
        crate_blocks(dim=width, depth=2, heads=2)
        if agg
        else transformer_blocks(dim=width, depth=2, heads=2, mlp_ratio=2)
    )
    predictor = (
        CRATEPredictor(in_dim=width + E, out_dim=D, action_embed_dim=E, heads=2)
        if pred
        else Predictor(in_dim=width + E, out_dim=D, hidden=16)
    )
    return SeqJEPA(
        encoder=SmallCNN(in_channels=1, out_dim=D, width=4),
        target=StopGradTarget(),
        action_encoder=ActionEncoder(action_dim=A, embed_dim=E),
        aggregator=Aggregator(dim=width, blocks=blocks),
        predictor=predictor,
        symmetric=symmetric,
    )


def _batch(b: int = 12, m: int = 3, size: int = 8) -> SimpleNamespace:
    g = torch.Generator().manual_seed(1)
    return SimpleNamespace(
        views=torch.randn(b, m + 1, 1, size, size, generator=g),
        actions=torch.randn(b, m, A, generator=g),
    )


# ----------------------------------------------------------------------------- held-out R²


def test_head_action_r2_held_out_against_least_squares():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(400, 3, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, 2, generator=g, dtype=torch.float64)
    a = h[:, 1] @ w + 0.5  # head 1 explains the action exactly, with an offset
    r2 = head_action_r2(h[:200], a[:200], ridge=1e-9, eval_features=h[200:], eval_actions=a[200:])
    assert r2.shape == (3, 2) and r2.dtype == torch.float64
    torch.testing.assert_close(r2[1], torch.ones(2, dtype=torch.float64))
    assert float(r2[0].max()) < 0.1 and float(r2[2].max()) < 0.1
    # Scored on the fitting data it is the in-sample R².
    torch.testing.assert_close(
        head_action_r2(h, a, ridge=1e-3, eval_features=h, eval_actions=a),
        head_action_r2(h, a, ridge=1e-3),
    )


def test_head_action_r2_held_out_is_below_in_sample_with_few_samples():
    """With p close to S the in-sample R² of noise is large; the held-out one is not."""
    g = torch.Generator().manual_seed(3)
    h, a = torch.randn(40, 2, 16, generator=g), torch.randn(40, 1, generator=g)
    in_sample = head_action_r2(h[:20], a[:20], ridge=1e-3)
    held_out = head_action_r2(h[:20], a[:20], ridge=1e-3, eval_features=h[20:], eval_actions=a[20:])
    assert float(in_sample.min()) > 0.5 and float(held_out.max()) < 0.2


def test_head_action_r2_held_out_errors():
    h, a = torch.randn(10, 2, 3), torch.randn(10, 4)
    with pytest.raises(ValueError, match="both eval_features and eval_actions"):
        head_action_r2(h, a, eval_features=h)
    with pytest.raises(ValueError, match="eval_features must have shape"):
        head_action_r2(h, a, eval_features=torch.randn(6, 3, 3), eval_actions=torch.randn(6, 4))
    with pytest.raises(ValueError, match="eval_actions must have 4 coordinates"):
        head_action_r2(h, a, eval_features=torch.randn(6, 2, 3), eval_actions=torch.randn(6, 2))
    with pytest.raises(ValueError, match="same number of samples"):
        head_action_r2(h, a, eval_features=torch.randn(6, 2, 3), eval_actions=torch.randn(5, 4))


def test_weighted_specialization():
    # Coordinate 0: one head explains it well; coordinate 1: noise that happens to be "specialised".
    r2 = torch.tensor([[0.8, 0.02], [0.0, -0.01], [0.0, 0.0]])
    scores = specialization_score(r2)
    assert scores.tolist() == pytest.approx([1.0, 1.0])
    assert weighted_specialization(r2, scores) == pytest.approx(1.0)
    r2 = torch.tensor([[0.4, 0.02], [0.4, 0.0], [0.4, 0.0]])
    scores = specialization_score(r2)
    w = weighted_specialization(r2, scores)
    assert w == pytest.approx((0.4 * float(scores[0]) + 0.02 * 1.0) / 0.42)
    assert w < 0.1 < float(scores.mean())
    assert weighted_specialization(torch.zeros(3, 2), torch.ones(2)) == 0.0
    with pytest.raises(ValueError, match=r"head_r2 must be \(K, A\)"):
        weighted_specialization(torch.zeros(3, 2), torch.ones(3))


# ----------------------------------------------------------------------------- stack diagnostics


def test_crate_stack_diagnostics_shapes_and_values():
    model = _model().train()
    batches = [_batch(b=10), _batch(b=10)]
    diag = crate_stack_diagnostics(model, batches, eps=0.1, max_samples=15)
    assert model.training  # restored
    assert set(diag) == {"agg", "pred"}
    agg, pred = diag["agg"], diag["pred"]
    assert isinstance(agg, StackDiagnostics)
    assert agg.samples == pred.samples == 15
    assert agg.rates.shape == (2,) and agg.rates_std.shape == (2,)
    assert agg.sparsity.shape == (2,) and bool(((agg.sparsity >= 0) & (agg.sparsity <= 1)).all())
    assert agg.head_r2.shape == (2, 2, A) and pred.head_r2.shape == (2, 2, A)
    assert agg.specialization.shape == (2, A)
    assert agg.action == "a_1" and pred.action == "a_M"
    # R^c is bounded by K · n/2 · log(1 + p / (N eps²)) (unit-norm tokens, n = min(N, p)).
    assert agg.rate_max == pytest.approx(2 * 0.5 * 4 * math.log1p(10 / (4 * 0.01)))  # [AGG] + 3
    assert pred.rate_max == pytest.approx(2 * 0.5 * 2 * math.log1p(8 / (2 * 0.01)))
    assert bool((agg.rates <= agg.rate_max + 1e-3).all())
    assert bool((pred.rates <= pred.rate_max + 1e-3).all())
    assert bool((agg.head_r2 <= 1 + 1e-6).all())
    assert crate_stack_diagnostics(_model(agg=False, pred=False), batches) == {}
    assert set(crate_stack_diagnostics(_model(agg=False), batches)) == {"pred"}
    with pytest.raises(ValueError, match="at least 4 sequences"):
        crate_stack_diagnostics(model, [])
    with pytest.raises(ValueError, match="ridge must be a finite number > 0"):
        crate_stack_diagnostics(model, batches, ridge=0.0)


def test_crate_stack_diagnostics_matches_the_recorder_on_one_batch():
    model = _model(pred=False).eval()
    batch = _batch(b=16)
    diag = crate_stack_diagnostics(model, [batch], eps=0.2)["agg"]
    with CRATERecorder(model.aggregator) as rec, torch.no_grad():
        model(batch.views, batch.actions)
    torch.testing.assert_close(diag.rates, rec.coding_rates(eps=0.2).mean(dim=1))
    torch.testing.assert_close(diag.sparsity, rec.sparsities())


def test_head_specialisation_finds_the_head_that_carries_the_action():
    """Plant the action in one head's input projection: that head alone explains it."""
    model = _model(pred=False).eval()
    layer = model.aggregator.blocks[0]
    assert isinstance(layer, CRATELayer)
    with torch.no_grad():
        layer.attn.qkv.weight.zero_()
        # Head 0 (rows 0..9 of qkv) reads the action embedding coordinates 16..19 of the tokens.
        layer.attn.qkv.weight[0:4, 16:20] = torch.eye(4)
    diag = crate_stack_diagnostics(model, [_batch(b=200)])["agg"]
    r2 = diag.head_r2[0]  # (K, A)
    assert float(r2[0].mean()) > 0.1 and float(r2[1].max()) < 0.02  # head 1 sees nothing


# ----------------------------------------------------------------------------- monitor


def test_monitor_logs_ranks_and_per_layer_crate_diagnostics():
    batch = _batch()
    plain = _model(agg=False, pred=False).eval()
    with torch.no_grad():
        assert set(crate_monitor(batch)(plain, 0)) == {"rank_z_agg", "rank_z"}
    model = _model().eval()
    with torch.no_grad():
        logged = crate_monitor(batch, eps=0.1)(model, 0)
    expected = {"rank_z_agg", "rank_z"} | {
        f"{s}_{what}_{i}" for s in ("agg", "pred")
        for what in ("rate", "sparsity", "spec", "head_r2") for i in range(2)
    }  # fmt: skip
    assert set(logged) == expected
    assert all(0.0 <= logged[f"{s}_spec_{i}"] <= 1.0 for s in ("agg", "pred") for i in range(2))
    assert all(isinstance(v, float) for v in logged.values())
    assert all(0.0 <= logged[f"agg_sparsity_{i}"] <= 1.0 for i in range(2))
    # The hooks are removed afterwards.
    assert not model.aggregator.blocks[0]._forward_hooks
    # Same numbers as a recorder on the aggregator.
    with CRATERecorder(model.aggregator) as rec, torch.no_grad():
        model(batch.views, batch.actions)
    torch.testing.assert_close(
        torch.tensor([logged["agg_rate_0"], logged["agg_rate_1"]]),
        rec.coding_rates(eps=0.1).mean(dim=1),
    )
    with pytest.raises(ValueError, match="eps"):
        crate_monitor(batch, eps=0.0)


def test_monitor_head_specialisation_equals_stack_diagnostics_on_the_batch():
    """The per-epoch specialisation is crate_stack_diagnostics' on the fixed batch (same split)."""
    batch = _batch(b=16)
    model = _model().eval()
    with torch.no_grad():
        logged = crate_monitor(batch)(model, 0)
    diag = crate_stack_diagnostics(model, [batch], max_samples=16)
    for key in ("agg", "pred"):
        d = diag[key]
        for i in range(2):
            assert logged[f"{key}_spec_{i}"] == pytest.approx(
                weighted_specialization(d.head_r2[i], d.specialization[i]), abs=1e-5
            )
            assert logged[f"{key}_head_r2_{i}"] == pytest.approx(
                float(d.head_r2[i].max(dim=0).values.mean()), abs=1e-5
            )
    # Fewer than 4 sequences: no held-out split, no specialisation keys.
    with torch.no_grad():
        small = crate_monitor(_batch(b=3))(model, 0)
    assert "agg_rate_0" in small and not any("_spec_" in k or "_head_r2_" in k for k in small)


def test_monitor_with_symmetric_model_uses_the_forward_half():
    batch = _batch()
    model = _model(symmetric=True).eval()
    with torch.no_grad():
        logged = crate_monitor(batch)(model, 0)
    assert "pred_rate_1" in logged
