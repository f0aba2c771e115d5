"""Tests for jepa_blocks.seq.Predictor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jepa_blocks.seq import Predictor


def test_structure_matches_official_mlp():
    p = Predictor(in_dim=768, out_dim=512)
    lin1, bn, act, lin2 = p.net
    assert isinstance(lin1, nn.Linear) and lin1.bias is None and lin1.weight.shape == (1024, 768)
    assert isinstance(bn, nn.BatchNorm1d) and bn.num_features == 1024 and bn.affine
    assert isinstance(act, nn.ReLU)
    assert (
        isinstance(lin2, nn.Linear) and lin2.bias is not None and lin2.weight.shape == (512, 1024)
    )


def test_forward_equals_manual_mlp_and_keeps_leading_dims():
    torch.manual_seed(0)
    p = Predictor(in_dim=6, out_dim=3, hidden=8)
    x = torch.randn(4, 2, 6)
    out = p(x)
    assert out.shape == (4, 2, 3)
    h = x.reshape(8, 6) @ p.net[0].weight.T
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5)
    h = torch.relu(h * p.net[1].weight + p.net[1].bias)
    ref = h @ p.net[3].weight.T + p.net[3].bias
    torch.testing.assert_close(out.reshape(8, 3), ref, rtol=1e-5, atol=1e-5)


def test_one_layer_fallback():
    p = Predictor(in_dim=6, out_dim=3, hidden=None)
    assert len(p.net) == 2 and p.net[0].bias is None and isinstance(p.net[1], nn.BatchNorm1d)
    assert p(torch.randn(5, 6)).shape == (5, 3)


def test_norm_none_is_the_mlp_without_batchnorm():
    torch.manual_seed(0)
    p = Predictor(in_dim=6, out_dim=3, hidden=8, norm="none")
    lin1, act, lin2 = p.net
    assert isinstance(lin1, nn.Linear) and lin1.bias is not None and isinstance(act, nn.ReLU)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in p.modules())
    x = torch.randn(5, 6)
    ref = torch.relu(x @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    torch.testing.assert_close(p(x), ref)
    # no batch statistics: a row's output does not depend on the rest of the batch
    torch.testing.assert_close(p(x[:1]), p(x)[:1])
    one = Predictor(in_dim=6, out_dim=3, hidden=None, norm="none")
    assert len(one.net) == 1 and one.net[0].bias is not None
    # the default keeps the paper's structure and parameter names
    assert list(dict(Predictor(in_dim=6, out_dim=3, hidden=8).named_parameters())) == [
        "net.0.weight",
        "net.1.weight",
        "net.1.bias",
        "net.3.weight",
        "net.3.bias",
    ]
    with pytest.raises(ValueError, match=r"norm must be one of \('batch', 'none'\), got 'layer'"):
        Predictor(in_dim=6, out_dim=3, norm="layer")  # type: ignore[arg-type]


def test_rejects_bad_input():
    p = Predictor(in_dim=6, out_dim=3, hidden=8)
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\).*got \(4, 5\)"):
        p(torch.randn(4, 5))
    with pytest.raises(ValueError, match="hidden must be an int >= 1, got 0"):
        Predictor(in_dim=6, out_dim=3, hidden=0)
    with pytest.raises(ValueError, match="in_dim"):
        Predictor(in_dim=0, out_dim=3)


def test_compiles_fullgraph():
    torch._dynamo.reset()
    p = Predictor(in_dim=6, out_dim=3, hidden=8)
    x = torch.randn(5, 6)
    p.eval()
    expected = p(x)
    torch.testing.assert_close(torch.compile(p, fullgraph=True, backend="eager")(x), expected)
