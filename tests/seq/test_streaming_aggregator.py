"""ToSTAggregator: the streaming state equals the full-sequence forward; seq-JEPA streaming."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from jepa_blocks import ActionEncoder, Predictor, SeqJEPA, StopGradTarget
from jepa_blocks.blocks.tost import TSSAState
from jepa_blocks.seq.streaming_aggregator import (
    READOUTS,
    AggregateStream,
    ToSTAggregator,
    ToSTAggregatorState,
    stream_aggregates,
)
from tost_testutils import F64, randomise
from tost_testutils import randn as _x


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial parameters: temperatures in [0.5, 2], everything else perturbed."""
    return randomise(module, seed, scale=0.3, perturb=True)


def _agg(dtype: torch.dtype = F64, seed: int = 0, **kwargs) -> ToSTAggregator:
    torch.manual_seed(seed)
    kwargs.setdefault("dim", 16)
    kwargs.setdefault("depth", 2)
    kwargs.setdefault("heads", 4)
    agg = ToSTAggregator(**kwargs).to(dtype).eval()
    return _randomise(agg, seed)


def _push_all(agg: ToSTAggregator, x: torch.Tensor) -> ToSTAggregatorState:
    state = agg.init_state(x.shape[0])
    for t in range(x.shape[1]):
        state = agg.push(state, x[:, t])
    return state


# --------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("decay", [None, 0.9])
@pytest.mark.parametrize("max_len", [None, 4])
def test_streaming_equals_forward_float64(readout, decay, max_len):
    # 11 tokens: longer than the positional bias (max_len 4)
    agg = _agg(readout=readout, decay=decay, max_len=max_len)
    x = _x(3, 11, 16)
    full = agg(x)
    state = _push_all(agg, x[:, :-1])
    assert torch.allclose(agg.read(state, pending=x[:, -1]), full, atol=1e-12, rtol=0)
    # all pushed, read without pending
    assert torch.allclose(agg.read(agg.push(state, x[:, -1])), full, atol=1e-12, rtol=0)
    # chunked prefill
    chunked = agg.scan(agg.scan(agg.init_state(3), x[:, :5]), x[:, 5:])
    assert torch.allclose(agg.read(chunked), full, atol=1e-12, rtol=0)
    assert torch.equal(chunked.position, torch.full((3,), 11))


@pytest.mark.parametrize("readout", READOUTS)
def test_streaming_equals_forward_float32_long(readout):
    agg = _agg(torch.float32, readout=readout, max_len=32)
    x = _x(2, 200, 16, dtype=torch.float32)
    full = agg(x)
    state = agg.scan(agg.init_state(2), x[:, :150])
    for t in range(150, 199):
        state = agg.push(state, x[:, t])
    assert state.out_sum.dtype == torch.float32
    torch.testing.assert_close(agg.read(state, pending=x[:, -1]), full, atol=1e-5, rtol=0)


@settings(max_examples=15)
@given(cuts=st.lists(st.integers(1, 12), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_any_chunking_gives_the_same_state(cuts, seed):
    agg = _agg(readout="mean", decay=0.8, max_len=3, seed=seed % 7)
    x = _x(2, sum(cuts), 16, seed=seed)
    state = agg.init_state(2)
    start = 0
    for c in cuts:
        state = agg.scan(state, x[:, start : start + c])
        start += c
    ref = _push_all(agg, x)
    for a, b in zip(
        [*state.out_sum, *state.out_weight, *state.last], [*ref.out_sum, *ref.out_weight, *ref.last]
    ):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    for la, lb in zip(state.layers, ref.layers):
        for a, b in zip(la, lb):
            assert torch.allclose(a.double(), b.double(), atol=1e-12, rtol=0)
    assert torch.allclose(agg.read(state), agg(x), atol=1e-12, rtol=0)


def test_read_and_push_do_not_modify_the_state():
    agg = _agg(readout="agg")
    x = _x(2, 5, 16)
    state = _push_all(agg, x[:, :4])
    saved = [t.clone() for layer in state.layers for t in layer] + [state.out_sum.clone()]
    agg.read(state, pending=x[:, 4])
    new = agg.push(state, x[:, 4])
    after = [t for layer in state.layers for t in layer] + [state.out_sum]
    assert all(torch.equal(a, b) for a, b in zip(saved, after))
    assert not torch.equal(new.layers[0].sum_w2, state.layers[0].sum_w2)


def test_prefix_reads_are_causal():
    """The aggregate of a prefix does not depend on later tokens (the stream's premise)."""
    agg = _agg(readout="agg")
    x = _x(2, 8, 16)
    y = x.clone()
    y[:, 5:] = _x(2, 3, 16, seed=9)
    assert torch.allclose(agg(x[:, :5]), agg(y[:, :5]))
    assert torch.allclose(agg.read(_push_all(agg, x[:, :5])), agg.read(_push_all(agg, y[:, :5])))


@pytest.mark.parametrize("readout", READOUTS)
def test_padding_equals_the_unpadded_prefix(readout):
    agg = _agg(readout=readout)
    x = _x(3, 7, 16)
    lengths = [7, 4, 1]
    mask = torch.arange(7)[None, :] >= torch.tensor(lengths)[:, None]
    padded = agg(x, padding_mask=mask)
    for i, n in enumerate(lengths):
        assert torch.allclose(padded[i], agg(x[i : i + 1, :n])[0], atol=1e-12, rtol=0)
    # the streaming scan with the same mask agrees too
    state = agg.scan(agg.init_state(3), x, padding_mask=mask)
    assert torch.allclose(agg.read(state), padded, atol=1e-12, rtol=0)


def test_empty_chunk_keeps_the_state():
    agg = _agg()
    state = _push_all(agg, _x(2, 3, 16))
    assert agg.scan(state, _x(2, 0, 16)) is state


def test_empty_state_reads_are_finite():
    for readout in READOUTS:
        agg = _agg(readout=readout)
        z = agg.read(agg.init_state(2))
        assert z.shape == (2, 16) and torch.isfinite(z).all()


# --------------------------------------------------------------------------- state, dtype, training


def test_state_is_constant_size_and_fp32():
    agg = ToSTAggregator(dim=32, depth=3, heads=4)
    state = agg.init_state(5)
    assert isinstance(state, ToSTAggregatorState) and len(state.layers) == 3
    assert all(isinstance(s, TSSAState) for s in state.layers)
    # 3 layers × (2·32 + 4 + 1) + 32 + 1 + 32
    assert state.numel_per_sequence() == 3 * (2 * 32 + 4 + 1) + 32 + 1 + 32
    size = state.nbytes()
    with torch.no_grad():
        for n in (1, 50):
            state = agg.scan(state, torch.randn(5, n, 32))
            assert state.nbytes() == size
    assert state.out_sum.dtype == torch.float32 and state.layers[0].sum_w2.dtype == torch.float32
    assert torch.equal(state.position, torch.full((5,), 51))


def test_autocast_keeps_the_state_in_fp32():
    agg = _agg(torch.float32, readout="mean")
    x = _x(2, 9, 16, dtype=torch.float32)
    ref = agg(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        state = agg.scan(agg.init_state(2), x[:, :8])
        out = agg.read(state, pending=x[:, 8])
        full = agg(x)
    assert state.out_sum.dtype == torch.float32 and state.out_weight.dtype == torch.float32
    assert all(t.dtype == torch.float32 for layer in state.layers for t in layer[:3])
    assert torch.isfinite(out).all() and torch.isfinite(full).all()
    assert (out.float() - ref).abs().max() < 0.1 and (full.float() - ref).abs().max() < 0.1


@pytest.mark.parametrize("readout", READOUTS)
def test_training_gradients_reach_every_parameter(readout):
    torch.manual_seed(0)
    agg = ToSTAggregator(dim=16, depth=2, heads=4, readout=readout, max_len=8)
    x = torch.randn(4, 6, 16, requires_grad=True)
    agg(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in agg.named_parameters():
        if name.endswith("pos_bias"):
            continue  # zero-initialised bias: zero gradient possible only by accident
        assert p.grad is not None, name
    assert (agg.agg_token is not None) == (readout == "agg")


def test_no_weight_decay_names_exist():
    agg = ToSTAggregator(dim=16, depth=2, heads=4, readout="agg")
    names = dict(agg.named_parameters())
    skip = agg.no_weight_decay()
    assert {"agg_token", "blocks.0.attn.temperature", "blocks.1.attn.temperature"} == skip
    assert skip <= set(names)


def test_defaults_and_repr():
    agg = ToSTAggregator(dim=640)
    assert len(agg.blocks) == 3 and agg.blocks[0].attn.heads == 4
    assert agg.readout == "mean" and agg.decay is None and isinstance(agg.norm, nn.LayerNorm)
    assert agg.blocks[0].gamma1 is not None and torch.all(agg.blocks[0].gamma1 == 1.0)
    assert "readout='mean'" in repr(agg)
    assert ToSTAggregator(dim=8, heads=2, decay=1.0).decay is None
    assert isinstance(ToSTAggregator(dim=8, heads=2, final_norm=False).norm, nn.Identity)


# --------------------------------------------------------------------------- seq-JEPA streaming


def _seq_jepa(readout: str, *, condition_tokens: bool = True) -> SeqJEPA:
    torch.manual_seed(0)
    d, e, a = 8, 4, 3
    width = d + (e if condition_tokens else 0)
    model = SeqJEPA(
        encoder=nn.Flatten(),
        target=StopGradTarget(),
        action_encoder=ActionEncoder(action_dim=a, embed_dim=e),
        aggregator=ToSTAggregator(dim=width, depth=2, heads=2, readout=readout),
        predictor=Predictor(in_dim=width + e, out_dim=d, hidden=16),
        condition_tokens=condition_tokens,
    ).double()
    # one training step's forward so that the BatchNorm statistics are not trivial
    model(torch.randn(6, 4, 1, 2, 4, dtype=F64), torch.randn(6, 3, a, dtype=F64))
    return model.eval()


@pytest.mark.parametrize("readout", READOUTS)
def test_stream_aggregates_equal_every_prefix(readout):
    model = _seq_jepa(readout)
    z, actions = _x(2, 7, 8), _x(2, 7, 3, seed=2)
    every = stream_aggregates(model, z, actions)
    assert every.shape == (2, 7, 12)
    for m in range(1, 8):
        ref = model.aggregate(z[:, :m], actions[:, :m])
        assert torch.allclose(every[:, m - 1], ref, atol=1e-12, rtol=0), m
    # M - 1 actions suffice
    assert torch.allclose(stream_aggregates(model, z, actions[:, :6]), every, atol=1e-12, rtol=0)


def test_stream_without_token_actions():
    model = _seq_jepa("mean", condition_tokens=False)
    z, actions = _x(2, 5, 8), _x(2, 5, 3, seed=2)
    every = stream_aggregates(model, z, actions)
    for m in (1, 3, 5):
        assert torch.allclose(every[:, m - 1], model.aggregate(z[:, :m], actions[:, :m]))


def test_aggregate_stream_predicts_like_the_model():
    model = _seq_jepa("agg")
    z, actions = _x(3, 5, 8), _x(3, 5, 3, seed=2)
    stream = AggregateStream.from_model(model, batch=3)
    sizes = []
    for i in range(5):
        stream.observe(z[:, i], None if i == 0 else actions[:, i - 1])
        sizes.append(stream.state_nbytes())
    assert stream.num_observed == 5 and len(set(sizes)) == 1
    z_agg = model.aggregate(z, actions)
    ref = model.predictor(torch.cat([z_agg, model.action_encoder(actions[:, -1])], dim=-1))
    assert torch.allclose(stream.read(), z_agg, atol=1e-12, rtol=0)
    assert torch.allclose(stream.predict(actions[:, -1]), ref, atol=1e-12, rtol=0)


def test_seq_jepa_trains_with_the_tost_aggregator():
    model = _seq_jepa("mean").train()
    out = model(torch.randn(4, 6, 1, 2, 4, dtype=F64), torch.randn(4, 5, 3, dtype=F64))
    out.loss.backward()
    grads = [p.grad for p in model.aggregator.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# --------------------------------------------------------------------------- argument checks


def test_argument_errors():
    with pytest.raises(TypeError, match="dim"):
        ToSTAggregator(dim=16.0)
    with pytest.raises(ValueError, match="divisible"):
        ToSTAggregator(dim=10, heads=4)
    with pytest.raises(ValueError, match="readout"):
        ToSTAggregator(dim=8, heads=2, readout="cls")
    with pytest.raises(ValueError, match="decay"):
        ToSTAggregator(dim=8, heads=2, decay=1.5)
    with pytest.raises(TypeError, match="final_norm"):
        ToSTAggregator(dim=8, heads=2, final_norm=1)
    agg = ToSTAggregator(dim=8, heads=2)
    with pytest.raises(ValueError, match="tokens"):
        agg(torch.randn(2, 3, 7))
    with pytest.raises(TypeError, match="tokens"):
        agg(torch.ones(2, 3, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="padding_mask"):
        agg(torch.randn(2, 3, 8), padding_mask=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="padding_mask"):
        agg(torch.randn(2, 3, 8), padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="state"):
        agg.push((), torch.randn(2, 8))
    with pytest.raises(ValueError, match="batch"):
        agg.push(agg.init_state(3), torch.randn(2, 8))
    with pytest.raises(ValueError, match="token"):
        agg.push(agg.init_state(2), torch.randn(2, 1, 8))
    with pytest.raises(ValueError, match="batch"):
        agg.init_state(0)
    with pytest.raises(TypeError, match="ToSTAggregator"):
        AggregateStream(nn.Linear(2, 2), batch=1)  # type: ignore[arg-type]
    stream = AggregateStream(agg, batch=2, action_encoder=ActionEncoder(action_dim=2, embed_dim=4))
    with pytest.raises(ValueError, match="z must have shape"):
        stream.observe(torch.randn(3, 4))
    stream.observe(torch.randn(2, 4))
    with pytest.raises(ValueError, match="action"):
        stream.observe(torch.randn(2, 4))
    with pytest.raises(ValueError, match="predictor"):
        stream.predict()
    with pytest.raises(TypeError, match="ToSTAggregator"):
        AggregateStream.from_model(SeqJEPA.from_encoder(
            nn.Flatten(), StopGradTarget(), encoder_dim=8, action_dim=2, action_embed_dim=4,
            heads=2, depth=1, predictor_hidden=None,
        ), batch=1)  # fmt: skip
