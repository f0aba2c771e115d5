"""Tests for jepa_blocks.seq.crate_predictor.CRATEPredictor (integration B of step 3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jepa_blocks.blocks import CRATEAlphaLayer, CRATELayer, CRATERecorder
from jepa_blocks.seq import ActionEncoder, Aggregator, SeqJEPA
from jepa_blocks.seq.crate_predictor import CRATEPredictor
from jepa_blocks.targets import StopGradTarget


def _predictor(**kw):
    kw = {"in_dim": 12 + 4, "out_dim": 8, "action_embed_dim": 4, "heads": 2, **kw}
    return CRATEPredictor(**kw)


def test_structure_and_shapes():
    p = _predictor(depth=3)
    assert p.state_dim == 12 and p.dim == 8 and p.num_tokens == 2
    assert len(p.blocks) == 3 and all(isinstance(b, CRATELayer) for b in p.blocks)
    assert p.state_proj.weight.shape == (8, 12) and p.action_proj.weight.shape == (8, 4)
    assert p(torch.randn(5, 16)).shape == (5, 8)
    assert p(torch.randn(3, 5, 16)).shape == (3, 5, 8)  # leading dims are flattened
    assert p.tokens(torch.randn(5, 16)).shape == (5, 2, 8)


def test_forward_equals_manual_composition():
    torch.manual_seed(0)
    p = _predictor(dim=6, depth=2).eval()
    x = torch.randn(7, 16)
    t = torch.stack([p.state_proj(x[:, :12]), p.action_proj(x[:, 12:])], dim=1)
    for layer in p.blocks:
        t = layer(t)
    ref = p.head(p.norm(t)[:, 0])
    torch.testing.assert_close(p(x), ref)


def test_state_token_reads_the_action():
    """The read-out token attends to the action token, so the action changes the prediction."""
    torch.manual_seed(0)
    p = _predictor().eval()
    x = torch.randn(4, 16)
    y = x.clone()
    y[:, 12:] = torch.randn(4, 4)
    assert not torch.allclose(p(x), p(y))
    z = x.clone()
    z[:, :12] = torch.randn(4, 12)
    assert not torch.allclose(p(x), p(z))


def test_rows_are_independent():
    """No BatchNorm: each row's prediction does not depend on the rest of the batch."""
    torch.manual_seed(0)
    p = _predictor().train()
    x = torch.randn(6, 16)
    torch.testing.assert_close(p(x)[:2], p(x[:2]))


@pytest.mark.parametrize("readout", ["state", "concat", "mean"])
def test_readouts(readout):
    p = _predictor(readout=readout)
    assert p.head.in_features == (16 if readout == "concat" else 8)
    assert p(torch.randn(3, 16)).shape == (3, 8)


def test_unconditioned_single_token():
    p = CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=0, heads=2, readout="concat")
    assert p.num_tokens == 1 and p.action_proj is None and p.head.in_features == 8
    assert p.tokens(torch.randn(3, 12)).shape == (3, 1, 8)
    assert p(torch.randn(3, 12)).shape == (3, 8)


def test_layer_kwargs_and_alpha_layers_pass_through():
    p = _predictor(layer=CRATEAlphaLayer, lambd=0.2, eta=0.05, tie_out=True)
    assert all(isinstance(b, CRATEAlphaLayer) for b in p.blocks)
    assert p.blocks[0].ista.lambd == 0.2 and p.blocks[0].ista.eta == 0.05
    assert p.blocks[0].attn.tie_out
    assert p(torch.randn(2, 16)).shape == (2, 8)


def test_recorder_sees_two_tokens_and_sparse_codes():
    torch.manual_seed(0)
    p = _predictor(depth=2).eval()
    with CRATERecorder(p) as rec:
        p(torch.randn(10, 16))
    assert rec.coding_rates().shape == (2, 10)
    assert rec.heads[0].shape == (10, 2, 2, 4)  # (B, K, tokens, p)
    assert bool((rec.codes[1] >= 0).all())  # ISTA codes are non-negative
    assert 0.0 < float(rec.sparsities().mean()) < 1.0


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    p = _predictor()
    p(torch.randn(4, 16)).square().sum().backward()
    for name, param in p.named_parameters():
        assert param.grad is not None, name


def test_selected_by_passing_the_part_to_seqjepa():
    torch.manual_seed(0)
    d, e, a = 8, 4, 3
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, d))
    model = SeqJEPA(
        encoder=encoder,
        target=StopGradTarget(),
        action_encoder=ActionEncoder(action_dim=a, embed_dim=e),
        aggregator=Aggregator(dim=d + e, blocks=[nn.Identity()]),
        predictor=CRATEPredictor(in_dim=d + 2 * e, out_dim=d, action_embed_dim=e, heads=2),
    )
    out = model(torch.randn(5, 3, 1, 4, 4), torch.randn(5, 2, a))
    assert out.prediction.shape == (5, d) and torch.isfinite(out.loss)
    out.loss.backward()
    with pytest.raises(ValueError, match=r"predictor\.in_dim"):
        SeqJEPA(
            encoder=encoder,
            target=StopGradTarget(),
            action_encoder=ActionEncoder(action_dim=a, embed_dim=e),
            aggregator=Aggregator(dim=d + e, blocks=[nn.Identity()]),
            predictor=CRATEPredictor(in_dim=d + e, out_dim=d, action_embed_dim=e, heads=2),
        )


def test_dtypes():
    p = _predictor().double()
    assert p(torch.randn(3, 16, dtype=torch.float64)).dtype == torch.float64
    p = _predictor().to(torch.bfloat16)
    assert p(torch.randn(3, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_rejects_bad_arguments_and_inputs():
    p = _predictor()
    with pytest.raises(ValueError, match=r"\(\.\.\., 16\).*got \(4, 15\)"):
        p(torch.randn(4, 15))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        p(torch.randn(16))
    with pytest.raises(TypeError, match="floating dtype"):
        p(torch.ones(2, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="action_embed_dim must be smaller than in_dim"):
        CRATEPredictor(in_dim=4, out_dim=8, action_embed_dim=4)
    with pytest.raises(ValueError, match="action_embed_dim must be an int >= 0"):
        CRATEPredictor(in_dim=4, out_dim=8, action_embed_dim=-1)
    with pytest.raises(TypeError, match="in_dim must be an int"):
        CRATEPredictor(in_dim=4.0, out_dim=8, action_embed_dim=1)
    with pytest.raises(ValueError, match="depth must be an int >= 1"):
        _predictor(depth=0)
    with pytest.raises(ValueError, match="readout must be one of"):
        _predictor(readout="cls")
    with pytest.raises(ValueError, match="divisible by heads"):
        _predictor(heads=3)
    with pytest.raises(TypeError, match="layer must be"):
        _predictor(layer=nn.Linear)
    with pytest.raises(TypeError):
        _predictor(nope=1)


def test_compiles_fullgraph():
    torch._dynamo.reset()
    p = _predictor().eval()
    x = torch.randn(5, 16)
    expected = p(x)
    torch.testing.assert_close(torch.compile(p, fullgraph=True, backend="eager")(x), expected)
