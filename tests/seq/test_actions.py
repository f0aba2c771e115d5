"""Tests for jepa_blocks.seq.ActionEncoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jepa_blocks.seq import ActionEncoder


def test_structure_matches_paper_defaults():
    enc = ActionEncoder(action_dim=9)
    assert enc.embed_dim == 128
    assert isinstance(enc.proj, nn.Linear) and enc.proj.bias is None
    assert enc.proj.weight.shape == (128, 9)
    assert isinstance(enc.norm, nn.BatchNorm1d) and not enc.norm.affine
    assert [n for n, _ in enc.named_parameters()] == ["proj.weight"]


def test_forward_equals_linear_then_batchnorm_over_all_leading_dims():
    torch.manual_seed(0)
    enc = ActionEncoder(action_dim=4, embed_dim=6)
    a = torch.randn(5, 3, 4)
    out = enc(a)
    assert out.shape == (5, 3, 6)
    h = a.reshape(15, 4) @ enc.proj.weight.T
    ref = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(out.reshape(15, 6), ref, rtol=1e-5, atol=1e-5)
    # running statistics saw all 15 vectors, once
    torch.testing.assert_close(enc.norm.running_mean, 0.1 * h.mean(0).detach())
    enc.eval()
    out_eval = enc(a)
    rm, rv = enc.norm.running_mean, enc.norm.running_var
    torch.testing.assert_close(out_eval, (a @ enc.proj.weight.T - rm) / torch.sqrt(rv + 1e-5))


def test_rejects_bad_input():
    enc = ActionEncoder(action_dim=4, embed_dim=6)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\).*got \(2, 3, 5\)"):
        enc(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="leading"):
        enc(torch.randn(4))
    with pytest.raises(ValueError, match="action_dim must be an int >= 1, got 0"):
        ActionEncoder(action_dim=0)
    with pytest.raises(ValueError, match="embed_dim"):
        ActionEncoder(action_dim=3, embed_dim=-2)


def test_compiles_fullgraph():
    torch._dynamo.reset()
    enc = ActionEncoder(action_dim=3, embed_dim=8)
    compiled = torch.compile(enc, fullgraph=True, backend="eager")
    a = torch.randn(4, 2, 3)
    ref = ActionEncoder(action_dim=3, embed_dim=8)
    ref.load_state_dict(enc.state_dict())
    torch.testing.assert_close(compiled(a), ref(a))
