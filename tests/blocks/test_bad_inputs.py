"""Bad-input table of :mod:`jepa_blocks.blocks`: CRATE, ToST and the CRATE diagnostics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bad_inputs import Case, run_case
from jepa_blocks._validation import NonFiniteError
from jepa_blocks.blocks import (
    CRATE,
    ISTA,
    MSSA,
    TSSA,
    CausalTSSA,
    CRATEAlpha,
    CRATEAlphaLayer,
    CRATEDecoderLayer,
    CRATELayer,
    CRATERecorder,
    OvercompleteISTA,
    ToSTBlock,
    ToSTStack,
    code_sparsity,
    crate_blocks,
    crate_monitor,
    crate_stack_diagnostics,
    head_action_r2,
    ista_step,
    lasso_objective,
    project_heads,
    specialization_score,
    subspace_coding_rate,
    tost_blocks,
    weighted_specialization,
)

NAN = float("nan")


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _nan(*shape: int) -> torch.Tensor:
    x = _x(*shape)
    x.view(-1)[0] = NAN
    return x


def _pad(*rows: list[bool]) -> torch.Tensor:
    return torch.tensor(rows)


_D = torch.randn(8, 12)

CASES: list[Case] = [
    # ------------------------------------------------------------------ MSSA
    Case("MSSA-dim-float", lambda: MSSA(8.0, heads=2), match="dim"),
    Case("MSSA-heads-zero", lambda: MSSA(8, heads=0), match="heads"),
    Case("MSSA-heads-not-divisor", lambda: MSSA(10, heads=4), match="divisible"),
    Case("MSSA-dim_head-bool", lambda: MSSA(8, heads=2, dim_head=True), match="dim_head"),
    Case("MSSA-tie_out-str", lambda: MSSA(8, heads=2, tie_out="no"), match="tie_out"),
    Case("MSSA-use_softmax-int", lambda: MSSA(8, heads=2, use_softmax=0), match="use_softmax"),
    Case("MSSA-scale-negative", lambda: MSSA(8, heads=2, scale=-1.0), match="scale"),
    Case("MSSA-dropout-one", lambda: MSSA(8, heads=2, dropout=1.0), match="dropout"),
    Case("MSSA-x-dim", lambda: MSSA(8, heads=2)(_x(2, 3, 6)), match="x"),
    Case("MSSA-x-1d", lambda: MSSA(8, heads=2)(_x(8)), match="x"),
    Case("MSSA-x-int", lambda: MSSA(8, heads=2)(torch.ones(2, 3, 8, dtype=torch.long)), match="x"),
    Case(
        "MSSA-padding-float",
        lambda: MSSA(8, heads=2)(_x(2, 3, 8), src_key_padding_mask=torch.zeros(2, 3)),
        match="src_key_padding_mask",
    ),
    Case(
        "MSSA-padding-shape",
        lambda: MSSA(8, heads=2)(
            _x(2, 3, 8), src_key_padding_mask=torch.zeros(3, dtype=torch.bool)
        ),
        match="src_key_padding_mask",
    ),
    Case(
        "MSSA-padding-all",
        lambda: MSSA(8, heads=2)(_x(2, 3, 8), src_key_padding_mask=_pad([True] * 3, [False] * 3)),
        match="src_key_padding_mask",
    ),
    Case(
        "MSSA-padding-all-no-softmax",
        lambda: MSSA(8, heads=2, use_softmax=False)(
            _x(2, 3, 8), src_key_padding_mask=_pad([True] * 3, [False] * 3)
        ),
        raises=None,
    ),
    Case(
        "MSSA-attn_mask-float",
        lambda: MSSA(8, heads=2)(_x(2, 3, 8), attn_mask=torch.ones(3, 3)),
        match="attn_mask",
    ),
    Case(
        "MSSA-attn_mask-shape",
        lambda: MSSA(8, heads=2)(_x(2, 3, 8), attn_mask=torch.ones(4, 4, dtype=torch.bool)),
        match="attn_mask",
    ),
    Case(
        "MSSA-attn_mask-expands",
        lambda: MSSA(8, heads=2)(_x(2, 3, 8), attn_mask=torch.ones(5, 2, 3, 3, dtype=torch.bool)),
        match="attn_mask",
    ),
    Case(
        "MSSA-attn_mask-causal",
        lambda: MSSA(8, heads=2)(_x(2, 3, 8), attn_mask=torch.ones(3, 3, dtype=torch.bool).tril()),
        raises=None,
        check=lambda y: y.shape == (2, 3, 8),
    ),
    Case(
        "MSSA-empty-tokens",
        lambda: MSSA(8, heads=2)(_x(2, 0, 8)),
        raises=None,
        check=lambda y: y.shape == (2, 0, 8),
    ),
    # ------------------------------------------------------------------ ISTA
    Case("ista_step-z-int", lambda: ista_step(torch.ones(3, 8, dtype=torch.long), _D), match="z"),
    Case("ista_step-dictionary-rows", lambda: ista_step(_x(3, 7), _D), match="dictionary"),
    Case("ista_step-dictionary-3d", lambda: ista_step(_x(3, 8), _D[None]), match="dictionary"),
    Case("ista_step-codes-width", lambda: ista_step(_x(3, 8), _D, _x(3, 11)), match="codes"),
    Case("ista_step-codes-broadcast", lambda: ista_step(_x(3, 8), _D, _x(4, 12)), match="codes"),
    Case("ista_step-eta-zero", lambda: ista_step(_x(3, 8), _D, eta=0.0), match="eta"),
    Case("ista_step-eta-nan", lambda: ista_step(_x(3, 8), _D, eta=NAN), match="eta"),
    Case("ista_step-lambd-negative", lambda: ista_step(_x(3, 8), _D, lambd=-0.1), match="lambd"),
    Case("ista_step-nonneg-str", lambda: ista_step(_x(3, 8), _D, nonneg="no"), match="nonneg"),
    Case(
        "ista_step-zero-codes",
        lambda: ista_step(torch.zeros(3, 8), _D),
        raises=None,
        check=lambda a: bool((a == 0).all()),
    ),
    Case(
        "lasso_objective-nonneg-str",
        lambda: lasso_objective(_x(3, 8), _D, _x(3, 12), nonneg="yes"),
        match="nonneg",
    ),
    Case(
        "lasso_objective-lambd-inf",
        lambda: lasso_objective(_x(3, 8), _D, _x(3, 12), lambd=math.inf),
        match="lambd",
    ),
    Case(
        "lasso_objective-codes-missing", lambda: lasso_objective(_x(3, 8), _D, None), match="codes"
    ),
    Case("ISTA-dim-zero", lambda: ISTA(0), match="dim"),
    Case("ISTA-eta-str", lambda: ISTA(8, eta="0.1"), match="eta"),
    Case("ISTA-nonneg-int", lambda: ISTA(8, nonneg=1), match="nonneg"),
    Case("ISTA-x-dim", lambda: ISTA(8)(_x(2, 3, 6)), match="x"),
    Case("ISTA-x-int", lambda: ISTA(8)(torch.ones(2, 8, dtype=torch.long)), match="x"),
    Case("OvercompleteISTA-ratio-float", lambda: OvercompleteISTA(8, ratio=2.5), match="ratio"),
    Case("OvercompleteISTA-n_steps-zero", lambda: OvercompleteISTA(8, n_steps=0), match="n_steps"),
    Case(
        "OvercompleteISTA-decoupled-str",
        lambda: OvercompleteISTA(8, decoupled="no"),
        match="decoupled",
    ),
    Case("OvercompleteISTA-x-dim", lambda: OvercompleteISTA(8)(_x(2, 3, 6)), match="x"),
    # ------------------------------------------------------------------ CRATE layers and encoders
    Case("CRATELayer-dim-str", lambda: CRATELayer("8", heads=2), match="dim"),
    Case(
        "CRATELayer-norm_eps-zero", lambda: CRATELayer(8, heads=2, norm_eps=0.0), match="norm_eps"
    ),
    Case("CRATELayer-x-dim", lambda: CRATELayer(8, heads=2)(_x(2, 3, 6)), match="x"),
    Case(
        "CRATELayer-x-complex",
        lambda: CRATELayer(8, heads=2)(torch.zeros(2, 3, 8, dtype=torch.complex64)),
        match="x",
    ),
    Case(
        "CRATELayer-padding-shape",
        lambda: CRATELayer(8, heads=2)(
            _x(2, 3, 8), src_key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)
        ),
        match="src_key_padding_mask",
    ),
    Case(
        "CRATEAlphaLayer-layer_scale-zero",
        lambda: CRATEAlphaLayer(8, heads=2, layer_scale=0.0),
        match="layer_scale",
    ),
    Case("CRATEAlphaLayer-x-dim", lambda: CRATEAlphaLayer(8, heads=2)(_x(2, 3, 6)), match="x"),
    Case("CRATEDecoderLayer-dim-zero", lambda: CRATEDecoderLayer(0, heads=1), match="dim"),
    Case("CRATEDecoderLayer-y-dim", lambda: CRATEDecoderLayer(8, heads=2)(_x(2, 3, 6)), match="y"),
    Case("crate_blocks-depth-zero", lambda: crate_blocks(dim=8, depth=0), match="depth"),
    Case(
        "crate_blocks-layer-instance",
        lambda: crate_blocks(dim=8, layer=CRATELayer(8, heads=2)),
        match="layer",
    ),
    Case("crate_blocks-layer-other", lambda: crate_blocks(dim=8, layer=nn.Linear), match="layer"),
    Case("crate_blocks-kwarg-bad", lambda: crate_blocks(dim=8, heads=2, eta=-1.0), match="eta"),
    Case(
        "CRATE-patch-not-divisor",
        lambda: CRATE(image_size=32, patch_size=5, dim=8, depth=1, heads=2),
        match="divisible",
    ),
    Case(
        "CRATE-image_size-triple",
        lambda: CRATE(image_size=(32, 32, 3), patch_size=8, dim=8, depth=1, heads=2),
        match="image_size",
    ),
    Case(
        "CRATE-pool",
        lambda: CRATE(image_size=16, patch_size=8, dim=8, depth=1, heads=2, pool="max"),
        match="pool",
    ),
    Case(
        "CRATE-num_classes-negative",
        lambda: CRATE(image_size=16, patch_size=8, dim=8, depth=1, heads=2, num_classes=-1),
        match="num_classes",
    ),
    Case(
        "CRATE-emb_dropout-big",
        lambda: CRATE(image_size=16, patch_size=8, dim=8, depth=1, heads=2, emb_dropout=1.5),
        match="emb_dropout",
    ),
    Case(
        "CRATE-dim-zero",
        lambda: CRATE(image_size=16, patch_size=8, dim=0, depth=1, heads=1),
        match="dim",
    ),
    Case(
        "CRATE-images-size",
        lambda: CRATE(image_size=16, patch_size=8, dim=8, depth=1, heads=2)(_x(2, 3, 8, 8)),
        match="images",
    ),
    Case(
        "CRATE-images-uint8",
        lambda: CRATE(image_size=16, patch_size=8, dim=8, depth=1, heads=2)(
            torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
        ),
        match="images",
    ),
    Case("CRATE-preset", lambda: CRATE.from_preset("huge"), match="name"),
    Case(
        "CRATEAlpha-n_steps-zero",
        lambda: CRATEAlpha(image_size=16, patch_size=8, dim=8, depth=1, heads=2, n_steps=0),
        match="n_steps",
    ),
    # ------------------------------------------------------------------ ToST
    Case("TSSA-attn_drop-negative", lambda: TSSA(8, heads=2, attn_drop=-0.1), match="attn_drop"),
    Case("TSSA-proj_drop-str", lambda: TSSA(8, heads=2, proj_drop="0"), match="proj_drop"),
    Case("TSSA-qkv_bias-str", lambda: TSSA(8, heads=2, qkv_bias="yes"), match="qkv_bias"),
    Case("TSSA-out_bias-int", lambda: TSSA(8, heads=2, out_bias=1), match="out_bias"),
    Case("TSSA-x-dim", lambda: TSSA(8, heads=2)(_x(2, 3, 6)), match="x"),
    Case(
        "TSSA-attn_drop-batch-3-heads-2",
        lambda: TSSA(8, heads=2, attn_drop=0.5).train()(_x(3, 5, 8)),
        raises=None,
        check=lambda y: y.shape == (3, 5, 8),
    ),
    Case(
        "TSSA-attn_drop-memory-efficient-batch-1",
        lambda: TSSA(8, heads=4, attn_drop=0.5, memory_efficient=True).train()(_x(1, 5, 8)),
        raises=None,
        check=lambda y: y.shape == (1, 5, 8),
    ),
    Case(
        "TSSA-all-padded",
        lambda: TSSA(8, heads=2)(
            _x(2, 3, 8), src_key_padding_mask=torch.ones(2, 3, dtype=torch.bool)
        ),
        raises=None,
        check=lambda y: y.shape == (2, 3, 8),
    ),
    Case("CausalTSSA-max_len-bool", lambda: CausalTSSA(8, heads=2, max_len=True), match="max_len"),
    Case("CausalTSSA-decay-nan", lambda: CausalTSSA(8, heads=2, decay=NAN), match="decay"),
    Case(
        "CausalTSSA-beyond-int",
        lambda: CausalTSSA(8, heads=2, beyond_max_len=0),
        match="beyond_max_len",
    ),
    Case(
        "CausalTSSA-init_state-batch-float",
        lambda: CausalTSSA(8, heads=2).init_state(2.0),
        match="batch",
    ),
    Case(
        "CausalTSSA-init_state-dtype-long",
        lambda: CausalTSSA(8, heads=2).init_state(2, dtype=torch.long),
        match="dtype",
    ),
    Case(
        "CausalTSSA-init_state-dtype-str",
        lambda: CausalTSSA(8, heads=2).init_state(2, dtype="float32"),
        match="dtype",
    ),
    Case(
        "CausalTSSA-step-nan",
        lambda: (lambda a: a.step(a.init_state(2), _nan(2, 8)))(CausalTSSA(8, heads=2)),
        raises=NonFiniteError,
        match="x_t",
    ),
    Case(
        "CausalTSSA-step-inf",
        lambda: (lambda a: a.step(a.init_state(2), torch.full((2, 8), math.inf)))(
            CausalTSSA(8, heads=2)
        ),
        raises=NonFiniteError,
        match="x_t",
    ),
    Case(
        "CausalTSSA-scan-nan",
        lambda: (lambda a: a.scan(_nan(2, 3, 8), a.init_state(2)))(CausalTSSA(8, heads=2)),
        raises=NonFiniteError,
        match="x",
    ),
    Case(
        "CausalTSSA-scan-state-fields",
        lambda: (lambda a: a.scan(_x(2, 3, 8), a.init_state(2)._replace(sum_pi=torch.zeros(2, 3))))(
            CausalTSSA(8, heads=2)
        ),
        match="state",
    ),
    Case(
        "CausalTSSA-scan-x-2d",
        lambda: (lambda a: a.scan(_x(2, 8), a.init_state(2)))(CausalTSSA(8, heads=2)),
        match="x",
    ),
    Case(
        "CausalTSSA-forward-4d",
        lambda: CausalTSSA(8, heads=2)(_x(2, 2, 3, 8)),
        match="x",
    ),
    Case(
        "ToSTBlock-mlp_ratio-zero", lambda: ToSTBlock(8, heads=2, mlp_ratio=0.0), match="mlp_ratio"
    ),
    Case("ToSTBlock-dropout-str", lambda: ToSTBlock(8, heads=2, dropout="0.1"), match="dropout"),
    Case(
        "ToSTBlock-norm_eps-negative",
        lambda: ToSTBlock(8, heads=2, norm_eps=-1e-6),
        match="norm_eps",
    ),
    Case("ToSTBlock-x-dim", lambda: ToSTBlock(8, heads=2)(_x(2, 3, 6)), match="x"),
    Case(
        "ToSTBlock-step-x_t-dim",
        lambda: (lambda b: b.step(b.init_state(2), _x(2, 6)))(
            ToSTBlock(8, attn=CausalTSSA(8, heads=2))
        ),
        match="x_t",
    ),
    Case(
        "ToSTBlock-scan-x-dim",
        lambda: (lambda b: b.scan(_x(2, 3, 6), b.init_state(2)))(
            ToSTBlock(8, attn=CausalTSSA(8, heads=2))
        ),
        match="x",
    ),
    Case(
        "ToSTBlock-step-nan",
        lambda: (lambda b: b.step(b.init_state(2), _nan(2, 8)))(
            ToSTBlock(8, attn=CausalTSSA(8, heads=2))
        ),
        raises=NonFiniteError,
        match="x_t",
    ),
    Case("ToSTStack-not-module", lambda: ToSTStack(["block"]), match="blocks"),
    Case(
        "ToSTStack-step-states-length",
        lambda: tost_blocks(dim=8, depth=2, heads=2, causal=True).step((None,), _x(2, 8)),
        match="states",
    ),
    Case(
        "ToSTStack-step-nan",
        lambda: (lambda s: s.step(s.init_state(2), _nan(2, 8)))(
            tost_blocks(dim=8, depth=2, heads=2, causal=True)
        ),
        raises=NonFiniteError,
        match="x_t",
    ),
    Case(
        "ToSTStack-step-vision-blocks",
        lambda: tost_blocks(dim=8, depth=1, heads=2).init_state(2),
        match="causal",
    ),
    Case("tost_blocks-causal-str", lambda: tost_blocks(dim=8, causal="yes"), match="causal"),
    Case("tost_blocks-depth-float", lambda: tost_blocks(dim=8, depth=2.0), match="depth"),
    Case(
        "tost_blocks-memory_efficient-str",
        lambda: tost_blocks(dim=8, memory_efficient="no"),
        match="memory_efficient",
    ),
    Case("tost_blocks-heads-not-divisor", lambda: tost_blocks(dim=10, heads=4), match="divisible"),
    # ------------------------------------------------------------------ diagnostics
    Case("project_heads-bases-d", lambda: project_heads(_x(2, 5, 8), _x(2, 6, 4)), match="bases"),
    Case(
        "project_heads-tokens-nan",
        lambda: project_heads(_nan(2, 5, 8), _x(2, 8, 4)),
        raises=NonFiniteError,
        match="tokens",
    ),
    Case(
        "subspace_coding_rate-eps-zero",
        lambda: subspace_coding_rate(_x(2, 5, 8), _x(2, 8, 4), eps=0.0),
        match="eps",
    ),
    Case(
        "subspace_coding_rate-normalize-str",
        lambda: subspace_coding_rate(_x(2, 5, 8), _x(2, 8, 4), normalize="no"),
        match="normalize",
    ),
    Case(
        "subspace_coding_rate-per_head-int",
        lambda: subspace_coding_rate(_x(2, 5, 8), _x(2, 8, 4), per_head=1),
        match="per_head",
    ),
    Case(
        "subspace_coding_rate-precision",
        lambda: subspace_coding_rate(_x(2, 5, 8), _x(2, 8, 4), precision="half"),
        match="precision",
    ),
    Case(
        "subspace_coding_rate-tokens-nan",
        lambda: subspace_coding_rate(_nan(2, 5, 8), _x(2, 8, 4)),
        raises=NonFiniteError,
        match="tokens",
    ),
    Case(
        "subspace_coding_rate-zero-tokens",
        lambda: subspace_coding_rate(torch.zeros(2, 5, 8), _x(2, 8, 4)),
        raises=None,
        check=lambda r: bool((r == 0).all()),
    ),
    Case(
        "code_sparsity-nan", lambda: code_sparsity(_nan(3, 4)), raises=NonFiniteError, match="codes"
    ),
    Case("code_sparsity-empty", lambda: code_sparsity(torch.zeros(0, 4)), match="codes"),
    Case("code_sparsity-dim-out-of-range", lambda: code_sparsity(_x(3, 4), dim=3), match="dim"),
    Case(
        "code_sparsity-int", lambda: code_sparsity(torch.zeros(3, dtype=torch.long)), match="codes"
    ),
    Case(
        "code_sparsity-half-zero",
        lambda: code_sparsity(torch.tensor([0.0, 1.0, 0.0, 2.0])),
        raises=None,
        check=lambda s: float(s) == 0.5,
    ),
    Case("head_action_r2-samples", lambda: head_action_r2(_x(6, 2, 3), _x(5, 2)), match="samples"),
    Case(
        "head_action_r2-nan",
        lambda: head_action_r2(_nan(6, 2, 3), _x(6, 2)),
        raises=NonFiniteError,
        match="head_features",
    ),
    Case(
        "head_action_r2-actions-nan",
        lambda: head_action_r2(_x(6, 2, 3), _nan(6, 2)),
        raises=NonFiniteError,
        match="actions",
    ),
    Case(
        "head_action_r2-ridge-negative",
        lambda: head_action_r2(_x(6, 2, 3), _x(6, 2), ridge=-1.0),
        match="ridge",
    ),
    Case(
        "head_action_r2-eval-half",
        lambda: head_action_r2(_x(6, 2, 3), _x(6, 2), eval_features=_x(4, 2, 3)),
        match="eval",
    ),
    Case(
        "head_action_r2-eval-heads",
        lambda: head_action_r2(
            _x(6, 2, 3), _x(6, 2), eval_features=_x(4, 3, 3), eval_actions=_x(4, 2)
        ),
        match="eval_features",
    ),
    Case(
        "head_action_r2-constant-action",
        lambda: head_action_r2(_x(6, 2, 3), torch.ones(6, 1)),
        raises=None,
        check=lambda r: bool((r == 0).all()),
    ),
    Case(
        "specialization_score-nan",
        lambda: specialization_score(_nan(3, 2)),
        raises=NonFiniteError,
        match="r2",
    ),
    Case("specialization_score-1d", lambda: specialization_score(_x(3)), match="r2"),
    Case(
        "specialization_score-one-head",
        lambda: specialization_score(torch.ones(3, 2)),
        raises=None,
        check=lambda s: bool((s == 0).all()),
    ),
    Case(
        "weighted_specialization-nan",
        lambda: weighted_specialization(_nan(3, 2), _x(2)),
        raises=NonFiniteError,
        match="head_r2",
    ),
    Case(
        "weighted_specialization-scores-nan",
        lambda: weighted_specialization(_x(3, 2), _nan(2)),
        raises=NonFiniteError,
        match="scores",
    ),
    Case(
        "weighted_specialization-shapes",
        lambda: weighted_specialization(_x(3, 2), _x(3)),
        match="scores",
    ),
    Case(
        "weighted_specialization-no-explained",
        lambda: weighted_specialization(-torch.ones(3, 2), torch.ones(2)),
        raises=None,
        check=lambda v: v == 0.0,
    ),
    Case("CRATERecorder-model-str", lambda: CRATERecorder("model"), match="model"),
    Case("CRATERecorder-no-layers", lambda: CRATERecorder(nn.Linear(2, 2)), match="model"),
    Case(
        "CRATERecorder-detach-str",
        lambda: CRATERecorder(CRATELayer(8, heads=2), detach="no"),
        match="detach",
    ),
    Case(
        "crate_stack_diagnostics-model", lambda: crate_stack_diagnostics("model", []), match="model"
    ),
    Case(
        "crate_stack_diagnostics-eps",
        lambda: crate_stack_diagnostics(nn.Linear(2, 2), [], eps=-1.0),
        match="eps",
    ),
    Case(
        "crate_stack_diagnostics-max_samples",
        lambda: crate_stack_diagnostics(nn.Linear(2, 2), [], max_samples=0),
        match="max_samples",
    ),
    Case("crate_monitor-batch", lambda: crate_monitor(_x(2, 3)), match="batch"),
    Case("crate_monitor-ridge", lambda: crate_monitor(None, ridge=0.0), match="ridge"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case) -> None:
    run_case(case)
