"""Tests for jepa_blocks.seq.Aggregator and transformer_blocks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from jepa_blocks.seq import Aggregator, PositionalEmbedding, transformer_blocks


def small_aggregator(**kwargs) -> Aggregator:
    torch.manual_seed(0)
    blocks = transformer_blocks(dim=8, depth=2, heads=2, dropout=0.0, shared_init=False)
    return Aggregator(dim=8, blocks=blocks, **kwargs)


def test_default_is_the_paper_aggregator():
    agg = Aggregator(dim=640)
    assert len(agg.blocks) == 3
    for layer in agg.blocks:
        assert isinstance(layer, nn.TransformerEncoderLayer)
        assert layer.self_attn.num_heads == 4 and layer.self_attn.batch_first
        assert not layer.norm_first  # post-norm
        assert layer.linear1.out_features == 2560
        assert layer.dropout.p == 0.1
    assert isinstance(agg.norm, nn.LayerNorm) and agg.norm.normalized_shape == (640,)
    assert agg.agg_token.shape == (1, 1, 640) and not agg.agg_token.any()
    assert agg.pos_embedding is None
    # nn.TransformerEncoder's (and the official code's) cloned initialisation
    w = [layer.linear1.weight for layer in agg.blocks]
    assert torch.equal(w[0], w[1]) and torch.equal(w[1], w[2])
    assert w[0].data_ptr() != w[1].data_ptr()


def test_independent_init_and_options():
    blocks = transformer_blocks(
        dim=8, depth=2, heads=2, mlp_ratio=2, activation="gelu", norm_first=True, shared_init=False
    )
    assert not torch.equal(blocks[0].linear1.weight, blocks[1].linear1.weight)
    assert blocks[0].norm_first and blocks[0].linear1.out_features == 16
    agg = Aggregator(dim=8, blocks=blocks, final_norm=False)
    assert isinstance(agg.norm, nn.Identity)


def test_output_is_the_agg_position_through_the_blocks():
    agg = small_aggregator()
    agg.eval()
    tokens = torch.randn(3, 4, 8)
    x = torch.cat([agg.agg_token.expand(3, -1, -1), tokens], dim=1)
    for block in agg.blocks:
        x = block(x)
    torch.testing.assert_close(agg(tokens), agg.norm(x)[:, 0])


def test_custom_blocks_are_used():
    class Mean(nn.Module):
        def forward(self, x):
            return x + x.mean(dim=1, keepdim=True)

    agg = Aggregator(dim=4, blocks=[Mean()], final_norm=False)
    tokens = torch.randn(2, 3, 4)
    # AGG token is zero: output = 0 + mean over the 4 positions
    torch.testing.assert_close(agg(tokens), tokens.sum(1) / 4)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 10_000), data=st.data())
def test_agg_output_is_invariant_to_token_permutations(n, seed, data):
    agg = small_aggregator()
    agg.eval()
    tokens = torch.randn(2, n, 8, generator=torch.Generator().manual_seed(seed))
    perm = data.draw(st.permutations(range(n)))
    with torch.no_grad():
        torch.testing.assert_close(agg(tokens[:, perm]), agg(tokens), rtol=1e-5, atol=1e-5)


def test_positional_embedding_breaks_permutation_invariance():
    agg = small_aggregator(pos_embedding=PositionalEmbedding(max_len=5, dim=8))
    agg.eval()
    tokens = torch.randn(2, 4, 8)
    with torch.no_grad():
        assert not torch.allclose(agg(tokens[:, [3, 2, 1, 0]]), agg(tokens), atol=1e-4)


@settings(max_examples=10, deadline=None)
@given(n_obs=st.integers(1, 4), n_pad=st.integers(1, 3), seed=st.integers(0, 1000))
def test_padding_mask_equals_the_shorter_sequence(n_obs, n_pad, seed):
    agg = small_aggregator()
    agg.eval()
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(2, n_obs, 8, generator=g)
    padded = torch.cat([tokens, 100 * torch.randn(2, n_pad, 8, generator=g)], dim=1)
    mask = torch.zeros(2, n_obs + n_pad, dtype=torch.bool)
    mask[:, n_obs:] = True
    with torch.no_grad():
        torch.testing.assert_close(
            agg(padded, padding_mask=mask), agg(tokens), rtol=1e-5, atol=1e-5
        )
        assert not torch.allclose(agg(padded), agg(tokens), atol=1e-3)


def test_padding_mask_in_training_mode_with_gradient():
    agg = small_aggregator()
    tokens = torch.randn(3, 4, 8, requires_grad=True)
    mask = torch.tensor([[False] * 4, [False, False, True, True], [False, True, True, True]])
    weights = torch.randn(3, 8)  # (a plain sum of a LayerNorm output has zero gradient)
    (agg(tokens, padding_mask=mask) * weights).sum().backward()
    assert torch.equal(tokens.grad[1, 2:], torch.zeros(2, 8))  # padded tokens get no gradient
    assert tokens.grad[1, :2].abs().sum() > 0


def test_rejects_bad_input():
    agg = small_aggregator()
    with pytest.raises(ValueError, match=r"\(B, N, 8\), got \(2, 3, 7\)"):
        agg(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="padding_mask must be a bool tensor of shape"):
        agg(torch.randn(2, 3, 8), padding_mask=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="padding_mask"):
        agg(torch.randn(2, 3, 8), padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible by heads"):
        transformer_blocks(dim=10, heads=4)
    with pytest.raises(TypeError, match=r"blocks\[0\] must be an nn.Module"):
        Aggregator(dim=8, blocks=[lambda x: x])  # type: ignore[list-item]


@pytest.mark.parametrize("with_mask", [False, True])
def test_compiles_fullgraph_in_training_mode(with_mask):
    torch._dynamo.reset()
    agg = small_aggregator()
    tokens = torch.randn(3, 4, 8)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, 3] = True
    kwargs = {"padding_mask": mask} if with_mask else {}
    compiled = torch.compile(agg, fullgraph=True, backend="eager")
    out = compiled(tokens, **kwargs)  # dropout is 0, so train mode is deterministic
    torch.testing.assert_close(out, agg(tokens, **kwargs))
    (out * torch.randn(3, 8)).sum().backward()
    assert agg.agg_token.grad is not None and agg.agg_token.grad.abs().sum() > 0
