"""Bad-input table of the streaming ToST aggregator and the CRATE predictor (``jepa_blocks.seq``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bad_inputs import Case, run_case
from jepa_blocks import ActionEncoder
from jepa_blocks._validation import NonFiniteError
from jepa_blocks.blocks import CausalTSSA, CRATEAlphaLayer
from jepa_blocks.seq.crate_predictor import CRATEPredictor
from jepa_blocks.seq.streaming_aggregator import (
    AggregateStream,
    ToSTAggregator,
    stream_aggregates,
)

NAN = float("nan")


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _nan(*shape: int) -> torch.Tensor:
    x = _x(*shape)
    x.view(-1)[-1] = NAN
    return x


def _agg(**kw) -> ToSTAggregator:
    torch.manual_seed(0)
    return ToSTAggregator(**{"dim": 8, "depth": 2, "heads": 2, **kw}).eval()


def _stream(actions: bool = True) -> AggregateStream:
    enc = ActionEncoder(action_dim=2, embed_dim=4).eval() if actions else None
    return AggregateStream(_agg(), batch=2, action_encoder=enc)


def _observed(actions: bool = True) -> AggregateStream:
    stream = _stream(actions)
    stream.observe(_x(2, 4 if actions else 8))
    return stream


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.aggregator = _agg()
        self.action_encoder = ActionEncoder(action_dim=2, embed_dim=4).eval()


CASES: list[Case] = [
    # ------------------------------------------------------------------ ToSTAggregator
    Case("ToSTAggregator-dim-float", lambda: ToSTAggregator(dim=8.0), match="dim"),
    Case(
        "ToSTAggregator-readout",
        lambda: ToSTAggregator(dim=8, heads=2, readout="cls"),
        match="readout",
    ),
    Case(
        "ToSTAggregator-final_norm-str",
        lambda: ToSTAggregator(dim=8, heads=2, final_norm="no"),
        match="final_norm",
    ),
    Case(
        "ToSTAggregator-decay-big", lambda: ToSTAggregator(dim=8, heads=2, decay=2.0), match="decay"
    ),
    Case(
        "ToSTAggregator-max_len-zero",
        lambda: ToSTAggregator(dim=8, heads=2, max_len=0),
        match="max_len",
    ),
    Case(
        "ToSTAggregator-depth-zero", lambda: ToSTAggregator(dim=8, heads=2, depth=0), match="depth"
    ),
    Case(
        "ToSTAggregator-dropout-big",
        lambda: ToSTAggregator(dim=8, heads=2, dropout=1.0),
        match="dropout",
    ),
    Case(
        "ToSTAggregator-layer_scale-zero",
        lambda: ToSTAggregator(dim=8, heads=2, layer_scale_init=0.0),
        match="layer_scale_init",
    ),
    Case("ToSTAggregator-tokens-2d", lambda: _agg()(_x(2, 8)), match="tokens"),
    Case(
        "ToSTAggregator-tokens-int",
        lambda: _agg()(torch.ones(2, 3, 8, dtype=torch.long)),
        match="tokens",
    ),
    Case(
        "ToSTAggregator-padding-float",
        lambda: _agg()(_x(2, 3, 8), padding_mask=torch.zeros(2, 3)),
        match="padding_mask",
    ),
    Case(
        "ToSTAggregator-all-padded",
        lambda: _agg()(_x(2, 3, 8), padding_mask=torch.ones(2, 3, dtype=torch.bool)),
        raises=None,
        check=lambda z: z.shape == (2, 8),
    ),
    Case("ToSTAggregator-init_state-batch-zero", lambda: _agg().init_state(0), match="batch"),
    Case(
        "ToSTAggregator-init_state-dtype",
        lambda: _agg().init_state(2, dtype=torch.int32),
        match="dtype",
    ),
    Case(
        "ToSTAggregator-push-nan",
        lambda: (lambda a: a.push(a.init_state(2), _nan(2, 8)))(_agg()),
        raises=NonFiniteError,
        match="token",
    ),
    Case(
        "ToSTAggregator-push-inf",
        lambda: (lambda a: a.push(a.init_state(2), torch.full((2, 8), -math.inf)))(_agg()),
        raises=NonFiniteError,
        match="token",
    ),
    Case(
        "ToSTAggregator-push-shape",
        lambda: (lambda a: a.push(a.init_state(2), _x(2, 1, 8)))(_agg()),
        match="token",
    ),
    Case("ToSTAggregator-push-state", lambda: _agg().push((), _x(2, 8)), match="state"),
    Case(
        "ToSTAggregator-push-batch",
        lambda: (lambda a: a.push(a.init_state(3), _x(2, 8)))(_agg()),
        match="batch",
    ),
    Case(
        "ToSTAggregator-scan-nan",
        lambda: (lambda a: a.scan(a.init_state(2), _nan(2, 3, 8)))(_agg()),
        raises=NonFiniteError,
        match="tokens",
    ),
    Case(
        "ToSTAggregator-scan-nan-padded",
        lambda: (
            lambda a: a.scan(
                a.init_state(2), _nan(2, 3, 8), padding_mask=torch.ones(2, 3, dtype=torch.bool)
            )
        )(_agg()),
        raises=NonFiniteError,
        match="tokens",
    ),
    Case(
        "ToSTAggregator-scan-padding-shape",
        lambda: (
            lambda a: a.scan(
                a.init_state(2), _x(2, 3, 8), padding_mask=torch.zeros(2, 2, dtype=torch.bool)
            )
        )(_agg()),
        match="padding_mask",
    ),
    Case(
        "ToSTAggregator-read-pending-nan",
        lambda: (lambda a: a.read(a.init_state(2), pending=_nan(2, 8)))(_agg()),
        raises=NonFiniteError,
        match="pending",
    ),
    Case(
        "ToSTAggregator-read-pending-shape",
        lambda: (lambda a: a.read(a.init_state(2), pending=_x(2, 7)))(_agg()),
        match="pending",
    ),
    Case(
        "ToSTAggregator-read-empty-state",
        lambda: (lambda a: a.read(a.init_state(2)))(_agg(final_norm=False)),
        raises=None,
        check=lambda z: bool((z == 0).all()),
    ),
    Case(
        "ToSTAggregator-agg-read-nan",
        lambda: (lambda a: a.read(a.init_state(2), pending=_nan(2, 8)))(_agg(readout="agg")),
        raises=NonFiniteError,
        match="pending",
    ),
    # ------------------------------------------------------------------ AggregateStream
    Case(
        "AggregateStream-aggregator",
        lambda: AggregateStream(CausalTSSA(8, heads=2), batch=2),
        match="aggregator",
    ),
    Case("AggregateStream-batch-zero", lambda: AggregateStream(_agg(), batch=0), match="batch"),
    Case(
        "AggregateStream-action_encoder-str",
        lambda: AggregateStream(_agg(), batch=2, action_encoder="e"),
        match="action_encoder",
    ),
    Case(
        "AggregateStream-from_model",
        lambda: AggregateStream.from_model(nn.Linear(2, 2), batch=2),
        match="aggregator",
    ),
    Case("observe-z-nan", lambda: _stream().observe(_nan(2, 4)), raises=NonFiniteError, match="z"),
    Case("observe-z-batch", lambda: _stream().observe(_x(3, 4)), match="z"),
    Case("observe-z-too-wide", lambda: _stream().observe(_x(2, 8)), match="z"),
    Case("observe-z-width-no-actions", lambda: _stream(actions=False).observe(_x(2, 4)), match="z"),
    Case("observe-z-width-changes", lambda: _observed().observe(_x(2, 3), _x(2, 2)), match="z"),
    Case("observe-z-int", lambda: _stream().observe(torch.ones(2, 4, dtype=torch.long)), match="z"),
    Case("observe-action-missing", lambda: _observed().observe(_x(2, 4)), match="action"),
    Case(
        "observe-action-nan",
        lambda: _observed().observe(_x(2, 4), _nan(2, 2)),
        raises=NonFiniteError,
        match="action",
    ),
    Case("observe-action-batch", lambda: _observed().observe(_x(2, 4), _x(3, 2)), match="action"),
    Case(
        "observe-action-list",
        lambda: _observed().observe(_x(2, 4), [[0.0, 0.0]] * 2),
        match="action",
    ),
    Case(
        "observe-action-ignored-without-encoder",
        lambda: (lambda s: (s.observe(_x(2, 8), _nan(2, 2)), s.read())[1])(
            _observed(actions=False)
        ),
        raises=None,
        check=lambda z: z.shape == (2, 8),
    ),
    Case("predict-no-predictor", lambda: _observed().predict(), match="predictor"),
    Case(
        "stream_aggregates-z-2d",
        lambda: stream_aggregates(_Model(), _x(2, 4), _x(2, 1, 2)),
        match="z",
    ),
    Case(
        "stream_aggregates-actions-short",
        lambda: stream_aggregates(_Model(), _x(2, 3, 4), _x(2, 1, 2)),
        match="actions",
    ),
    Case(
        "stream_aggregates-z-nan",
        lambda: stream_aggregates(_Model(), _nan(2, 3, 4), _x(2, 3, 2)),
        raises=NonFiniteError,
        match="z",
    ),
    Case(
        "stream_aggregates-ok",
        lambda: stream_aggregates(_Model(), _x(2, 3, 4), _x(2, 2, 2)),
        raises=None,
        check=lambda z: z.shape == (2, 3, 8),
    ),
    # ------------------------------------------------------------------ CRATEPredictor
    Case(
        "CRATEPredictor-in_dim-float",
        lambda: CRATEPredictor(in_dim=12.0, out_dim=8, action_embed_dim=4),
        match="in_dim",
    ),
    Case(
        "CRATEPredictor-out_dim-zero",
        lambda: CRATEPredictor(in_dim=12, out_dim=0, action_embed_dim=4),
        match="out_dim",
    ),
    Case(
        "CRATEPredictor-action-too-wide",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=12),
        match="action_embed_dim",
    ),
    Case(
        "CRATEPredictor-action-negative",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=-1),
        match="action_embed_dim",
    ),
    Case(
        "CRATEPredictor-action-bool",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=True),
        match="action_embed_dim",
    ),
    Case(
        "CRATEPredictor-dim-zero",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=4, dim=0),
        match="dim",
    ),
    Case(
        "CRATEPredictor-heads-not-divisor",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=4, heads=3),
        match="divisible",
    ),
    Case(
        "CRATEPredictor-readout",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=4, readout="max"),
        match="readout",
    ),
    Case(
        "CRATEPredictor-layer",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=4, layer=nn.Linear),
        match="layer",
    ),
    Case(
        "CRATEPredictor-layer_kwargs",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=4, eta=0.0),
        match="eta",
    ),
    Case(
        "CRATEPredictor-depth-zero",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=4, depth=0),
        match="depth",
    ),
    Case(
        "CRATEPredictor-x-width",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=4)(_x(3, 10)),
        match="predictor input",
    ),
    Case(
        "CRATEPredictor-x-1d",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=4)(_x(12)),
        match="x",
    ),
    Case(
        "CRATEPredictor-x-int",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=4)(
            torch.ones(3, 12, dtype=torch.long)
        ),
        match="x",
    ),
    Case(
        "CRATEPredictor-empty-batch",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=4)(_x(0, 12)),
        raises=None,
        check=lambda y: y.shape == (0, 8),
    ),
    Case(
        "CRATEPredictor-alpha-leading-dims",
        lambda: CRATEPredictor(in_dim=12, out_dim=8, action_embed_dim=0, layer=CRATEAlphaLayer)(
            _x(2, 3, 12)
        ),
        raises=None,
        check=lambda y: y.shape == (2, 3, 8),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case) -> None:
    run_case(case)


def _snapshot(stream: AggregateStream) -> list[torch.Tensor]:
    tensors = [t for layer in stream.state.layers for t in layer]
    tensors += [stream.state.out_sum, stream.state.out_weight, stream.state.last]
    assert stream.action_encoder is not None
    tensors += [b.clone() for b in stream.action_encoder.buffers()]
    return [t.clone() for t in tensors] + (
        [stream.pending.clone()] if stream.pending is not None else []
    )


def test_rejected_observation_leaves_the_stream_bit_identical() -> None:
    stream = _stream()
    stream.action_encoder.train()  # BatchNorm would update its running statistics
    stream.observe(_x(2, 4))
    stream.observe(_x(2, 4, seed=1), _x(2, 2))
    before, n, z_agg = _snapshot(stream), stream.num_observed, stream.read()
    for z, action in ((_nan(2, 4), _x(2, 2)), (_x(2, 4), _nan(2, 2))):
        with pytest.raises(NonFiniteError):
            stream.observe(z, action)
    after = _snapshot(stream)
    assert stream.num_observed == n and len(after) == len(before)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    # the stream goes on as if the bad views had never come
    stream.observe(_x(2, 4, seed=2), _x(2, 2, seed=3))
    assert torch.isfinite(stream.read()).all() and not torch.equal(stream.read(), z_agg)


def test_rejected_push_keeps_the_state_and_the_next_push_is_exact() -> None:
    agg = _agg()
    tokens = _x(2, 4, 8)
    state = agg.push(agg.push(agg.init_state(2), tokens[:, 0]), tokens[:, 1])
    copy = [t.clone() for layer in state.layers for t in layer] + [state.out_sum.clone()]
    for bad in (_nan(2, 8), torch.full((2, 8), math.inf)):
        with pytest.raises(NonFiniteError, match="token"):
            agg.push(state, bad)
    assert all(
        torch.equal(a, b)
        for a, b in zip(copy, [t for layer in state.layers for t in layer] + [state.out_sum])
    )
    state = agg.push(agg.push(state, tokens[:, 2]), tokens[:, 3])
    torch.testing.assert_close(agg.read(state), agg(tokens))
