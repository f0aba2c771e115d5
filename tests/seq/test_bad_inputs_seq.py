"""Bad-input table of jepa_blocks.seq (ActionEncoder, Aggregator, Predictor, positions, time
reversal, SeqJEPA; see tests/bad_inputs.py), and rejected calls leave every buffer bit-identical."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bad_inputs import Case, run_case
from jepa_blocks._validation import NonFiniteError
from jepa_blocks.encoders import SmallCNN
from jepa_blocks.losses import CosineLoss
from jepa_blocks.seq import (
    ActionEncoder,
    Aggregator,
    PositionalEmbedding,
    Predictor,
    SeqJEPA,
    negate_actions,
    reverse_sequence,
    sinusoidal_positions,
    transformer_blocks,
)
from jepa_blocks.targets import EMATarget, StopGradTarget

D, E, A, B, M = 16, 8, 3, 4, 3


def make(*, encoder_dim: int = D, ema: bool = True, **kwargs) -> SeqJEPA:
    torch.manual_seed(0)
    enc = SmallCNN(in_channels=1, out_dim=D, width=4)
    target = EMATarget(enc, total_steps=10) if ema else StopGradTarget()
    kw = {"action_embed_dim": E, "predictor_hidden": 16, "depth": 1, "heads": 2, "dropout": 0.0}
    return SeqJEPA.from_encoder(enc, target, encoder_dim=encoder_dim, action_dim=A, **kw | kwargs)


def parts(**change) -> dict:
    torch.manual_seed(0)
    kw = {
        "encoder": SmallCNN(in_channels=1, out_dim=D, width=4),
        "target": StopGradTarget(),
        "action_encoder": ActionEncoder(action_dim=A, embed_dim=E),
        "aggregator": Aggregator(dim=D + E, blocks=transformer_blocks(dim=D + E, depth=1, heads=2)),
        "predictor": Predictor(in_dim=D + 2 * E, out_dim=D, hidden=16),
    }
    return kw | change


def batch(b: int = B, m: int = M) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, m + 1, 1, 8, 8, generator=g), torch.randn(b, m, A, generator=g)


def with_nan(x: torch.Tensor, value: float = math.nan) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[3] = value
    return x


V, ACT = batch()
Z = torch.randn(B, M, D)
TOK = torch.randn(B, M, D + E)


def aggregate(mask: list[bool] | None = None, **kw):
    model = make().eval()
    pm = None if mask is None else torch.tensor([mask] * B)
    return model.aggregate(kw.pop("z", Z), kw.pop("actions", ACT), padding_mask=pm, **kw)


CASES: list[Case] = [
    # ActionEncoder
    Case("ActionEncoder-action-dim-zero", lambda: ActionEncoder(action_dim=0), ValueError, "action_dim must be an int >= 1"),
    Case("ActionEncoder-embed-dim-float", lambda: ActionEncoder(action_dim=3, embed_dim=8.0), TypeError, "embed_dim must be an int"),
    Case("ActionEncoder-momentum-above-1", lambda: ActionEncoder(action_dim=3, momentum=1.5), ValueError, r"momentum must be in \[0, 1\]"),
    Case("ActionEncoder-momentum-string", lambda: ActionEncoder(action_dim=3, momentum="0.1"), TypeError, "momentum must be a real number"),
    Case("ActionEncoder-eps-zero", lambda: ActionEncoder(action_dim=3, eps=0.0), ValueError, "eps must be a finite number > 0"),
    Case("ActionEncoder-momentum-none", lambda: ActionEncoder(action_dim=3, momentum=None)(ACT), None, check=lambda v: v.shape == (B, M, 128)),
    Case("ActionEncoder-int-actions", lambda: ActionEncoder(action_dim=A)(torch.ones(B, M, A, dtype=torch.long)), TypeError, "actions must have a floating dtype"),
    Case("ActionEncoder-wrong-A", lambda: ActionEncoder(action_dim=A)(torch.randn(B, M, A + 1)), ValueError, r"actions must have shape \(\.\.\., 3\)"),
    Case("ActionEncoder-1d", lambda: ActionEncoder(action_dim=A)(torch.randn(A)), ValueError, "actions must have at least 2 dimensions"),
    Case("ActionEncoder-list", lambda: ActionEncoder(action_dim=A)([[0.0] * A]), TypeError, r"actions must be a torch\.Tensor"),
    Case("ActionEncoder-one-vector-training", lambda: ActionEncoder(action_dim=A)(torch.randn(1, A)), ValueError, "at least 2 vectors"),
    Case("ActionEncoder-one-vector-eval", lambda: ActionEncoder(action_dim=A).eval()(torch.randn(1, A)), None, check=lambda v: v.shape == (1, 128)),
    # Predictor
    Case("Predictor-in-dim-zero", lambda: Predictor(in_dim=0, out_dim=4), ValueError, "in_dim must be an int >= 1"),
    Case("Predictor-out-dim-bool", lambda: Predictor(in_dim=4, out_dim=True), TypeError, "out_dim must be an int"),
    Case("Predictor-hidden-zero", lambda: Predictor(in_dim=4, out_dim=4, hidden=0), ValueError, "hidden must be an int >= 1"),
    Case("Predictor-norm-typo", lambda: Predictor(in_dim=4, out_dim=4, norm="layer"), ValueError, "norm must be one of"),
    Case("Predictor-wrong-in-dim", lambda: Predictor(in_dim=4, out_dim=2)(torch.randn(5, 3)), ValueError, r"predictor input must have shape \(\.\.\., 4\)"),
    Case("Predictor-int-input", lambda: Predictor(in_dim=4, out_dim=2)(torch.ones(5, 4, dtype=torch.long)), TypeError, "predictor input must have a floating dtype"),
    Case("Predictor-one-vector-training", lambda: Predictor(in_dim=4, out_dim=2)(torch.randn(1, 4)), ValueError, "at least 2 vectors"),
    Case("Predictor-no-norm-one-vector", lambda: Predictor(in_dim=4, out_dim=2, norm="none")(torch.randn(1, 4)), None, check=lambda v: v.shape == (1, 2)),
    # Aggregator and transformer_blocks
    Case("transformer_blocks-heads-not-divisor", lambda: transformer_blocks(dim=10, heads=4), ValueError, "dim must be divisible by heads"),
    Case("transformer_blocks-dropout-one", lambda: transformer_blocks(dim=8, heads=2, dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
    Case("transformer_blocks-activation-typo", lambda: transformer_blocks(dim=8, heads=2, activation="tanh"), ValueError, "activation must be one of"),
    Case("transformer_blocks-norm-first-string", lambda: transformer_blocks(dim=8, heads=2, norm_first="no"), TypeError, "norm_first must be a bool"),
    Case("transformer_blocks-shared-init-int", lambda: transformer_blocks(dim=8, heads=2, shared_init=1), TypeError, "shared_init must be a bool"),
    Case("transformer_blocks-depth-zero", lambda: transformer_blocks(dim=8, heads=2, depth=0), ValueError, "depth must be an int >= 1"),
    Case("Aggregator-dim-zero", lambda: Aggregator(dim=0), ValueError, "dim must be an int >= 1"),
    Case("Aggregator-block-function", lambda: Aggregator(dim=8, blocks=[lambda x: x]), TypeError, r"blocks\[0\] must be an nn\.Module"),
    Case("Aggregator-final-norm-string", lambda: Aggregator(dim=8, blocks=[], final_norm="yes"), TypeError, "final_norm must be a bool"),
    Case("Aggregator-pos-embedding-tensor", lambda: Aggregator(dim=8, blocks=[], pos_embedding=torch.zeros(4, 8)), TypeError, r"pos_embedding must be an nn\.Module"),
    Case("Aggregator-tokens-dim", lambda: Aggregator(dim=8, blocks=[])(torch.randn(2, 3, 7)), ValueError, r"tokens must have shape \(B, N, dim\) = \(B, N, 8\)"),
    Case("Aggregator-tokens-int", lambda: Aggregator(dim=8, blocks=[])(torch.ones(2, 3, 8, dtype=torch.long)), TypeError, "tokens must have a floating dtype"),
    Case("Aggregator-tokens-2d", lambda: Aggregator(dim=8, blocks=[])(torch.randn(3, 8)), ValueError, "tokens must have at least 3 dimensions"),
    Case("Aggregator-mask-float", lambda: Aggregator(dim=8, blocks=[])(torch.randn(2, 3, 8), padding_mask=torch.zeros(2, 3)), ValueError, "padding_mask must be a bool tensor"),
    Case("Aggregator-mask-shape", lambda: Aggregator(dim=8, blocks=[])(torch.randn(2, 3, 8), padding_mask=torch.zeros(2, 4, dtype=torch.bool)), ValueError, r"padding_mask must be a bool tensor of shape \(B, N\) = \(2, 3\)"),
    Case("Aggregator-mask-list", lambda: Aggregator(dim=8, blocks=[])(torch.randn(2, 3, 8), padding_mask=[[False] * 3] * 2), ValueError, "padding_mask must be a bool tensor"),
    Case("Aggregator-no-tokens", lambda: Aggregator(dim=8, blocks=[])(torch.randn(2, 0, 8)), None, check=lambda v: v.shape == (2, 8)),
    # positions and time reversal
    Case("sinusoidal_positions-odd-dim", lambda: sinusoidal_positions(4, 5), ValueError, "dim must be an even int >= 2"),
    Case("sinusoidal_positions-n-zero", lambda: sinusoidal_positions(0, 4), ValueError, "n must be an int >= 1"),
    Case("PositionalEmbedding-max-len-zero", lambda: PositionalEmbedding(max_len=0, dim=4), ValueError, "max_len must be an int >= 1"),
    Case("PositionalEmbedding-learnable-string", lambda: PositionalEmbedding(max_len=4, dim=4, learnable="no"), TypeError, "learnable must be a bool"),
    Case("PositionalEmbedding-too-long", lambda: PositionalEmbedding(max_len=4, dim=4)(torch.randn(2, 5, 4)), ValueError, "N <= max_len=4"),
    Case("PositionalEmbedding-int-tokens", lambda: PositionalEmbedding(max_len=4, dim=4)(torch.ones(2, 3, 4, dtype=torch.long)), TypeError, "tokens must have a floating dtype"),
    Case("negate_actions-list", lambda: negate_actions([1.0, 2.0]), TypeError, r"actions must be a torch\.Tensor"),
    Case("negate_actions-bool", lambda: negate_actions(torch.ones(3, dtype=torch.bool)), TypeError, "actions must have a floating dtype"),
    Case("reverse_sequence-actions-shape", lambda: reverse_sequence(V, ACT[:, :2]), ValueError, r"actions must have shape \(B, M, A\) = \(4, 3, A\)"),
    Case("reverse_sequence-views-list", lambda: reverse_sequence([V], ACT), TypeError, r"views must be a torch\.Tensor"),
    Case("reverse_sequence-invert-not-callable", lambda: reverse_sequence(V, ACT, invert=-1), TypeError, "invert must be callable"),
    Case("reverse_sequence-invert-changes-shape", lambda: reverse_sequence(V, ACT, invert=lambda a: a[..., :1]), ValueError, "invert must keep the action shape"),
    # SeqJEPA construction
    Case("SeqJEPA-encoder-function", lambda: SeqJEPA(**parts(encoder=lambda x: x)), TypeError, r"encoder must be an nn\.Module"),
    Case("SeqJEPA-target-module", lambda: SeqJEPA(**parts(target=nn.Identity())), TypeError, "target must be a jepa_blocks.targets.Target"),
    Case("SeqJEPA-action-encoder-string", lambda: SeqJEPA(**parts(action_encoder="linear")), TypeError, "action_encoder must be an nn.Module or None"),
    Case("SeqJEPA-loss-string", lambda: SeqJEPA(**parts(loss="cosine")), TypeError, "loss must be callable"),
    Case("SeqJEPA-regularizer-number", lambda: SeqJEPA(**parts(regularizer=1.0)), TypeError, "regularizer must be callable"),
    Case("SeqJEPA-invert-action-none", lambda: SeqJEPA(**parts(invert_action=None)), TypeError, "invert_action must be callable"),
    Case("SeqJEPA-regularize-on-typo", lambda: SeqJEPA(**parts(regularize_on="agg")), ValueError, "regularize_on must be one of"),
    Case("SeqJEPA-weight-negative", lambda: SeqJEPA(**parts(regularizer_weight=-1.0)), ValueError, "regularizer_weight must be a finite number >= 0"),
    Case("SeqJEPA-warmup-float", lambda: SeqJEPA(**parts(regularizer_warmup_steps=1.5)), TypeError, "regularizer_warmup_steps must be an int"),
    Case("SeqJEPA-last-token-typo", lambda: SeqJEPA(**parts(last_token_action="zero")), ValueError, "last_token_action must be one of"),
    Case("SeqJEPA-shared-with-zeros", lambda: SeqJEPA(**parts(predictor_action="shared", last_token_action="zeros")), ValueError, "needs last_token_action='action'"),
    Case("SeqJEPA-condition-tokens-string", lambda: SeqJEPA(**parts(condition_tokens="no")), TypeError, "condition_tokens must be a bool"),
    Case("SeqJEPA-symmetric-int", lambda: SeqJEPA(**parts(symmetric=1)), TypeError, "symmetric must be a bool"),
    Case("SeqJEPA-condition-predictor-none", lambda: SeqJEPA(**parts(condition_predictor=None)), TypeError, "condition_predictor must be a bool"),
    Case("SeqJEPA-predictor-in-dim", lambda: SeqJEPA(**parts(predictor=Predictor(in_dim=D + E, out_dim=D))), ValueError, "predictor.in_dim must be aggregator.dim"),
    Case("SeqJEPA-predictor-out-dim", lambda: SeqJEPA(**parts(predictor=Predictor(in_dim=D + 2 * E, out_dim=D + 1))), ValueError, "predictor.out_dim must equal the encoder dimension"),
    Case("from_encoder-encoder-dim-string", lambda: make(encoder_dim="16"), TypeError, "encoder_dim must be an int"),
    Case("from_encoder-action-embed-dim-zero", lambda: make(action_embed_dim=0), ValueError, "action_embed_dim must be an int >= 1"),
    Case("from_encoder-heads", lambda: make(heads=5), ValueError, "dim must be divisible by heads"),
    Case("from_encoder-predictor-norm-typo", lambda: make(predictor_norm="layer"), ValueError, "norm must be one of"),
    # SeqJEPA.forward
    Case("forward-views-list", lambda: make()([V], ACT), TypeError, "views and actions must be tensors"),
    Case("forward-views-uint8", lambda: make()(V.to(torch.uint8), ACT), TypeError, "views must have a floating dtype"),
    Case("forward-views-one-view", lambda: make()(V[:, :1], ACT), ValueError, r"views must have shape \(B, M\+1, \*obs\) with M >= 1"),
    Case("forward-views-obs-mismatch", lambda: make()(V[:, :, 0], ACT), (ValueError, RuntimeError), r"views|encoder|shape"),
    Case("forward-one-view", lambda: make()(V[:, :1], ACT[:, :0]), ValueError, "M >= 1"),
    Case("forward-actions-batch", lambda: make()(V, ACT[:2]), ValueError, r"actions must have shape \(B, M, A\) = \(4, 3, A\)"),
    Case("forward-actions-int", lambda: make()(V, ACT.long()), TypeError, "actions must have a floating dtype"),
    Case("forward-actions-A", lambda: make()(V, torch.randn(B, M, A + 1)), ValueError, "action_encoder.action_dim = 3"),
    Case("forward-views-nan", lambda: make()(with_nan(V), ACT), NonFiniteError, "views must be finite, got 1 NaN/inf"),
    Case("forward-actions-inf", lambda: make()(V, with_nan(ACT, math.inf)), NonFiniteError, "actions must be finite"),
    Case("forward-loss-vector", lambda: make(loss=CosineLoss(reduction="none"))(V, ACT), ValueError, r"loss must return a scalar tensor, got shape \(4,\)"),
    Case("forward-regularizer-vector", lambda: make(regularizer=lambda z: z.sum(0), regularizer_weight=0.1)(V, ACT), ValueError, r"regularizer must return a scalar rate, got shape \(24,\)"),
    Case("forward-regularizer-float", lambda: make(regularizer=lambda z: 1.0, regularizer_weight=0.1)(V, ACT), ValueError, "regularizer must return a scalar rate, got float"),
    Case("forward-invert-changes-shape", lambda: make(symmetric=True, invert_action=lambda a: a[..., :1])(V, ACT), ValueError, "invert_action must keep the action shape"),
    Case("forward-encoder-dim-mismatch", lambda: make(encoder_dim=D + 2)(V, ACT), ValueError, r"D = 16 features, but the parts expect D = .* = 18 \(from_encoder's encoder_dim\)"),
    Case("forward-step-float", lambda: make(regularizer=lambda z: z.square().mean(), regularizer_weight=0.1)(V, ACT, step=1.5), TypeError, "step must be an int or a tensor"),
    Case("forward-ok", lambda: make()(V, ACT).loss, None, check=lambda v: v.ndim == 0),
    # encode / aggregate / attach
    Case("encode-2d", lambda: make().encode(V[:, 0, 0, 0]), ValueError, "views must have at least 3 dimensions"),
    Case("SeqJEPA-regularizer-without-weight", lambda: make(regularizer=lambda z: z.sum()), ValueError, "explicit regularizer_weight"),
    Case("SeqJEPA-regularizer-kind", lambda: make(regularizer=lambda z: z.sum(), regularizer_weight=0.1, regularizer_kind="loss"), ValueError, "regularizer_kind"),
    Case("SeqJEPA-pool-type", lambda: make(pool="mean"), TypeError, "pool must be an nn.Module"),
    Case("from_encoder-dim-not-inferable", lambda: SeqJEPA.from_encoder(torch.nn.Linear(4, 4), StopGradTarget(), action_dim=A), ValueError, "cannot infer encoder_dim"),
    Case("from_encoder-obs_shape-bad", lambda: SeqJEPA.from_encoder(torch.nn.Flatten(), StopGradTarget(), action_dim=A, obs_shape=(0, 4)), ValueError, "obs_shape"),
    Case("encode-nan", lambda: make().encode(with_nan(V)), NonFiniteError, "views must be finite"),
    Case("aggregate-z-2d", lambda: aggregate(z=Z[0]), ValueError, "z must have at least 3 dimensions"),
    Case("aggregate-z-nan", lambda: aggregate(z=with_nan(Z)), NonFiniteError, "z must be finite"),
    Case("aggregate-z-wrong-D", lambda: aggregate(z=torch.randn(B, M, D + 1)), ValueError, r"z has D = 17 features, but the parts expect D = .* = 16"),
    Case("aggregate-actions-nan", lambda: aggregate(actions=with_nan(ACT)), NonFiniteError, "actions must be finite"),
    Case("aggregate-actions-none", lambda: aggregate(actions=None), TypeError, r"actions must be a torch\.Tensor"),
    Case("aggregate-actions-M-2", lambda: aggregate(actions=ACT[:, :1]), ValueError, r"actions must have shape \(B, M, A\) or \(B, M-1, A\)"),
    Case("aggregate-mask-gap", lambda: aggregate([False, True, False]), ValueError, "padding_mask must mark a trailing suffix"),
    Case("aggregate-mask-leading", lambda: aggregate([True, False, False]), ValueError, "padding_mask must mark a trailing suffix"),
    Case("aggregate-mask-all-padded", lambda: aggregate([True, True, True]), ValueError, ">= 1 observed"),
    Case("aggregate-mask-float", lambda: make().aggregate(Z, ACT, padding_mask=torch.zeros(B, M)), ValueError, "padding_mask must be a bool tensor"),
    Case("aggregate-mask-list", lambda: make().aggregate(Z, ACT, padding_mask=[[False] * M] * B), ValueError, "padding_mask must be a bool tensor"),
    Case("aggregate-mask-trailing", lambda: aggregate([False, False, True]), None, check=lambda v: torch.allclose(v, make().eval().aggregate(Z[:, :2], ACT[:, :2]), atol=1e-5)),
    Case("attach-not-optimizer", lambda: make().attach("adam"), TypeError, r"optimizer must be a torch\.optim\.Optimizer"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_same(before: dict[str, torch.Tensor], module: nn.Module) -> None:
    after = module.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


@pytest.mark.parametrize("symmetric", [False, True])
def test_rejected_batch_leaves_every_buffer_unchanged(symmetric):
    """NaN/inf views or actions raise before any module runs: the BatchNorm statistics of the
    encoder, the EMA target, the action encoder and the predictor, and ``step``, are untouched."""
    model = make(symmetric=symmetric).train()
    model(V, ACT)  # some history
    model.update()
    before = _state(model)
    for views, actions in ((with_nan(V), ACT), (V, with_nan(ACT, -math.inf))):
        with pytest.raises(NonFiniteError):
            model(views, actions)
    with pytest.raises(NonFiniteError):
        model.encode(with_nan(V))
    with pytest.raises(NonFiniteError):
        model.aggregate(Z, with_nan(ACT))
    with pytest.raises(ValueError, match="trailing"):
        model.aggregate(Z, ACT, padding_mask=torch.tensor([[False, True, False]] * B))
    with pytest.raises(ValueError, match="at least 2 vectors"):
        model.action_encoder(ACT[:1, 0])
    _assert_same(before, model)
    model(V, ACT)  # and the model still trains
