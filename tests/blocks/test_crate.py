"""CRATE blocks: MSSA, ISTA, CRATE layers and encoders against their formulas (float64)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from jepa_blocks.blocks import (
    CRATE,
    ISTA,
    MSSA,
    CRATEAlpha,
    CRATEAlphaLayer,
    CRATEDecoderLayer,
    CRATELayer,
    OvercompleteISTA,
    crate_blocks,
    ista_step,
    lasso_objective,
)

# ---------------------------------------------------------------------------------------------
# naive references, written from the formulas with explicit loops
# ---------------------------------------------------------------------------------------------


def naive_mssa(
    x: Tensor,
    bases: Tensor,
    *,
    scale: float,
    out_weight: Tensor | None = None,
    out_bias: Tensor | None = None,
    softmax: bool = True,
    key_padding: Tensor | None = None,
) -> Tensor:
    """MSSA(X) with loops over batch, heads, queries and keys.

    SSA_k(x_i) = Σ_j a_ij w_j with w = U_kᵀ x, a_ij = softmax_j(s·w_i·w_j); output Σ_k U_k SSA_k
    (paper, ``out_weight=None``) or W_o [SSA_1; …; SSA_K] + b (official code).
    """
    b_sz, n, d = x.shape
    k_heads, _, p = bases.shape
    y = torch.zeros(b_sz, n, d, dtype=torch.float64)
    for b in range(b_sz):
        concat = torch.zeros(n, k_heads * p, dtype=torch.float64)
        for k in range(k_heads):
            w = [bases[k].T @ x[b, i] for i in range(n)]
            for i in range(n):
                keys = [j for j in range(n) if key_padding is None or not key_padding[b, j]]
                scores = torch.stack([scale * torch.dot(w[i], w[j]) for j in keys])
                weights = torch.softmax(scores, 0) if softmax else scores
                head = sum(weights[t] * w[j] for t, j in enumerate(keys))
                concat[i, k * p : (k + 1) * p] = head
                if out_weight is None:
                    y[b, i] += bases[k] @ head
        if out_weight is not None:
            for i in range(n):
                y[b, i] = out_weight @ concat[i] + (0.0 if out_bias is None else out_bias)
    return y


def naive_ista_crate(x: Tensor, dictionary: Tensor, eta: float, lambd: float) -> Tensor:
    """ReLU(x + η Dᵀ(x − D x) − ηλ) per token, column-vector form of the paper."""
    out = torch.empty_like(x)
    for idx in range(x.shape[0] * x.shape[1]):
        b, i = divmod(idx, x.shape[1])
        z = x[b, i]
        out[b, i] = torch.relu(z + eta * dictionary.T @ (z - dictionary @ z) - eta * lambd)
    return out


def layer_norm(x: Tensor, ln: nn.LayerNorm) -> Tensor:
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _randomize_norms(module: nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)


# ---------------------------------------------------------------------------------------------
# MSSA
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie_out", [False, True])
@pytest.mark.parametrize("use_softmax", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_mssa_equals_naive_loop(tie_out: bool, use_softmax: bool, masked: bool) -> None:
    torch.manual_seed(0)
    mssa = MSSA(12, heads=3, dim_head=5, tie_out=tie_out, use_softmax=use_softmax).double()
    if tie_out:
        assert mssa.to_out is None and mssa.out_bias is None
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 4:] = True
    mask[1, 1] = True
    key_padding = mask if masked else None
    expected = naive_mssa(
        x,
        mssa.subspaces().detach(),
        scale=5**-0.5,
        out_weight=None if tie_out else mssa.to_out.weight.detach(),
        out_bias=None if tie_out else mssa.to_out.bias.detach(),
        softmax=use_softmax,
        key_padding=key_padding,
    )
    out = mssa(x, src_key_padding_mask=key_padding)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_mssa_subspaces_view_qkv_weight() -> None:
    mssa = MSSA(8, heads=2)
    u = mssa.subspaces()
    assert u.shape == (2, 8, 4)
    x = torch.randn(3, 8)
    torch.testing.assert_close(mssa.qkv(x)[:, 4:], x @ u[1])


def test_mssa_paper_and_code_forms_differ_only_in_output_map() -> None:
    """Code form with to_out = Uᵀ-map (weight qkv.weightᵀ, zero bias) is the paper form."""
    torch.manual_seed(1)
    paper = MSSA(16, heads=4, tie_out=True).double()
    code = MSSA(16, heads=4, tie_out=False).double()
    extra = {k for k in code.state_dict()} - {k for k in paper.state_dict()}
    assert extra == {"to_out.weight", "to_out.bias"}
    assert set(paper.state_dict()) == {"qkv.weight"}
    with torch.no_grad():
        code.qkv.weight.copy_(paper.qkv.weight)
        code.to_out.weight.copy_(paper.qkv.weight.T)
        code.to_out.bias.zero_()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    torch.testing.assert_close(code(x), paper(x), rtol=1e-12, atol=1e-12)
    # a tied form with a bias adds exactly that bias
    biased = MSSA(16, heads=4, tie_out=True, out_bias=True).double()
    with torch.no_grad():
        biased.qkv.weight.copy_(paper.qkv.weight)
        biased.out_bias.fill_(0.25)
    torch.testing.assert_close(biased(x), paper(x) + 0.25)


def test_mssa_default_is_code_form_with_bias() -> None:
    mssa = MSSA(8, heads=2)
    assert not mssa.tie_out and mssa.to_out is not None and mssa.to_out.bias is not None
    assert MSSA(8, heads=2, out_bias=False).to_out.bias is None


def test_mssa_attn_mask_combines_with_padding() -> None:
    torch.manual_seed(2)
    mssa = MSSA(8, heads=2).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    out = mssa(x, attn_mask=causal)
    # causal: the first token only sees itself, so it is unaffected by later tokens
    x2 = x.clone()
    x2[:, 1:] = torch.randn(1, 4, 8, dtype=torch.float64)
    torch.testing.assert_close(mssa(x2, attn_mask=causal)[:, 0], out[:, 0])
    with pytest.raises(TypeError, match="attn_mask"):
        mssa(x, attn_mask=causal.double())
    with pytest.raises(TypeError, match="src_key_padding_mask"):
        mssa(x, src_key_padding_mask=torch.zeros(1, 5))


# ---------------------------------------------------------------------------------------------
# ISTA
# ---------------------------------------------------------------------------------------------


def test_ista_module_equals_paper_formula() -> None:
    torch.manual_seed(3)
    ista = ISTA(10, eta=0.1, lambd=0.1).double()
    x = torch.randn(2, 4, 10, dtype=torch.float64)
    expected = naive_ista_crate(x, ista.weight.detach(), 0.1, 0.1)
    torch.testing.assert_close(ista(x), expected, rtol=1e-12, atol=1e-12)
    # and the official code's three-product expression: x + η(Dᵀx − DᵀDx) − ηλ, row form
    d = ista.weight.detach()
    official = torch.relu(x + 0.1 * (x @ d - (x @ d.T) @ d) - 0.1 * 0.1)
    torch.testing.assert_close(ista(x), official, rtol=1e-12, atol=1e-12)
    assert ista.eta == 0.1 and ista.lambd == 0.1  # official defaults


def test_ista_step_signed_is_soft_threshold() -> None:
    torch.manual_seed(4)
    z = torch.randn(5, 6, dtype=torch.float64)
    d = torch.randn(6, 9, dtype=torch.float64)
    a = torch.randn(5, 9, dtype=torch.float64)
    u = a + 0.05 * (z - a @ d.T) @ d
    expected = torch.sign(u) * torch.clamp(u.abs() - 0.05 * 0.3, min=0)
    out = ista_step(z, d, a, eta=0.05, lambd=0.3, nonneg=False)
    torch.testing.assert_close(out, expected)
    assert (out < 0).any()
    assert (ista_step(z, d, a, eta=0.05, lambd=0.3) >= 0).all()


def _random_problem(seed: int, d: int, m: int, eta_frac: float) -> tuple[Tensor, Tensor, float]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(8, d, generator=g, dtype=torch.float64)
    dictionary = torch.randn(d, m, generator=g, dtype=torch.float64) * 0.7
    lipschitz = torch.linalg.matrix_norm(dictionary, ord=2).item() ** 2
    return z, dictionary, eta_frac / lipschitz


@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.integers(1, 8),
    ratio=st.sampled_from([1, 2, 4]),
    eta_frac=st.floats(0.05, 1.0),
    lambd=st.floats(0.0, 1.0),
    nonneg=st.booleans(),
)
def test_ista_step_never_increases_lasso(
    seed: int, d: int, ratio: int, eta_frac: float, lambd: float, nonneg: bool
) -> None:
    """Descent lemma: with η ≤ 1/‖D‖₂², F(a⁺) ≤ F(a) for every feasible start a."""
    z, dictionary, eta = _random_problem(seed, d, ratio * d, eta_frac)
    g = torch.Generator().manual_seed(seed + 1)
    a = torch.randn(8, ratio * d, generator=g, dtype=torch.float64)
    if nonneg:
        a = a.clamp_min(0)  # feasible start
    before = lasso_objective(z, dictionary, a, lambd=lambd, nonneg=nonneg)
    a_next = ista_step(z, dictionary, a, eta=eta, lambd=lambd, nonneg=nonneg)
    after = lasso_objective(z, dictionary, a_next, lambd=lambd, nonneg=nonneg)
    assert torch.isfinite(after).all()
    assert (after <= before + 1e-10 * (1 + before.abs())).all()
    # the first step from a = 0 (CRATE-α) also descends
    zero = torch.zeros_like(a)
    a0 = ista_step(z, dictionary, None, eta=eta, lambd=lambd, nonneg=nonneg)
    torch.testing.assert_close(
        a0, ista_step(z, dictionary, zero, eta=eta, lambd=lambd, nonneg=nonneg)
    )
    f0 = lasso_objective(z, dictionary, zero, lambd=lambd, nonneg=nonneg)
    f1 = lasso_objective(z, dictionary, a0, lambd=lambd, nonneg=nonneg)
    assert (f1 <= f0 + 1e-10 * (1 + f0)).all()


@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 8), eta_frac=st.floats(0.05, 1.0))
def test_crate_ista_module_descends_on_nonneg_tokens(seed: int, d: int, eta_frac: float) -> None:
    """CRATE's block is the step from A = Z; Z ≥ 0 is feasible, so it descends under η ≤ 1/L."""
    z, dictionary, eta = _random_problem(seed, d, d, eta_frac)
    z = z.abs()
    ista = ISTA(d, eta=eta, lambd=0.1).double()
    with torch.no_grad():
        ista.weight.copy_(dictionary)
    before = lasso_objective(z, dictionary, z, lambd=0.1)
    after = lasso_objective(z, dictionary, ista(z), lambd=0.1)
    assert (after <= before + 1e-10 * (1 + before)).all()


def test_ista_step_can_increase_lasso_without_descent_condition() -> None:
    """The documented condition matters: D = 2 (L = 4), η = 1 > 1/L overshoots."""
    z = torch.tensor([[1.0]], dtype=torch.float64)
    d = torch.tensor([[2.0]], dtype=torch.float64)
    a = torch.zeros(1, 1, dtype=torch.float64)
    a_next = ista_step(z, d, a, eta=1.0, lambd=0.0)
    assert lasso_objective(z, d, a_next, lambd=0.0) > lasso_objective(z, d, a, lambd=0.0)


@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.integers(1, 8),
    eta=st.floats(0.01, 10.0),
    lambd=st.floats(0.01, 1.0),
    nonneg=st.booleans(),
)
def test_ista_step_leaves_lasso_minimisers_fixed(
    seed: int, d: int, eta: float, lambd: float, nonneg: bool
) -> None:
    """Build a minimiser a* from the KKT conditions (any invertible D); a step keeps it."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.eye(d, dtype=torch.float64) + 0.3 * torch.randn(
        d, d, generator=g, dtype=torch.float64
    ) / math.sqrt(d)
    support = torch.rand(4, d, generator=g) < 0.5
    magnitude = 0.5 + torch.rand(4, d, generator=g, dtype=torch.float64)
    sign = (
        torch.ones(4, d, dtype=torch.float64)
        if nonneg
        else torch.where(torch.rand(4, d, generator=g) < 0.5, -1.0, 1.0).double()
    )
    a_star = torch.where(support, sign * magnitude, 0.0)
    # Dᵀ(z − D a*) = v with v = λ·sign on the support and |v| < λ (or v < λ) off it
    off = lambd * (1.8 * torch.rand(4, d, generator=g, dtype=torch.float64) - 0.9)
    if nonneg:
        off = off - lambd * 3 * torch.rand(4, d, generator=g, dtype=torch.float64)
    v = torch.where(support, lambd * sign, off)
    z = a_star @ dictionary.T + torch.linalg.solve(dictionary.T, v.T).T
    out = ista_step(z, dictionary, a_star, eta=eta, lambd=lambd, nonneg=nonneg)
    torch.testing.assert_close(out, a_star, rtol=1e-9, atol=1e-9)


def test_crate_ista_module_fixed_point() -> None:
    """With D = c·I, tokens with entries in {0, λ/(c(1−c))} are fixed by ISTA (from A = Z)."""
    ista = ISTA(6, eta=0.1, lambd=0.2).double()
    c = 0.5
    with torch.no_grad():
        ista.weight.copy_(c * torch.eye(6, dtype=torch.float64))
    value = 0.2 / (c * (1 - c))
    z = torch.tensor([[value, 0, value, 0, 0, value]], dtype=torch.float64)
    torch.testing.assert_close(ista(z), z)


def test_overcomplete_ista_equals_formula() -> None:
    torch.manual_seed(5)
    block = OvercompleteISTA(6, ratio=4, n_steps=2).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    d, d1 = block.dictionary.detach(), block.decoder.detach()
    assert d.shape == d1.shape == (6, 24)
    # official form, column vectors: z1 = ReLU(η Dᵀx − ηλ); z2 = ReLU(z1 − η Dᵀ(D z1 − x) − ηλ)
    expected = torch.empty_like(x)
    for b in range(2):
        for i in range(3):
            xi = x[b, i]
            z1 = torch.relu(0.1 * d.T @ xi - 0.01)
            z2 = torch.relu(z1 - 0.1 * d.T @ (d @ z1 - xi) - 0.01)
            expected[b, i] = d1 @ z2
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)
    # n_steps and decoupled
    three = OvercompleteISTA(6, n_steps=3, decoupled=False).double()
    assert three.decoder is None
    codes = ista_step(x, three.dictionary, None)
    for _ in range(2):
        codes = ista_step(x, three.dictionary, codes)
    torch.testing.assert_close(three(x), codes @ three.dictionary.T)
    torch.testing.assert_close(three.encode(x), codes)


# ---------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------


def test_crate_layer_equals_composition() -> None:
    torch.manual_seed(6)
    layer = CRATELayer(12, heads=3).double()
    _randomize_norms(layer)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    attn = layer.attn
    bases = attn.subspaces().detach()
    h = x + naive_mssa(
        layer_norm(x, layer.norm1),
        bases,
        scale=4**-0.5,
        out_weight=attn.to_out.weight.detach(),
        out_bias=attn.to_out.bias.detach(),
    )
    expected = naive_ista_crate(layer_norm(h, layer.norm2), layer.ista.weight.detach(), 0.1, 0.1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)
    assert (layer(x) >= 0).all()  # no residual around ISTA: output is the non-negative code


@pytest.mark.parametrize("layer_scale", [None, 0.5])
def test_crate_alpha_layer_equals_composition(layer_scale: float | None) -> None:
    torch.manual_seed(7)
    layer = CRATEAlphaLayer(8, heads=2, layer_scale=layer_scale).double()
    _randomize_norms(layer)
    assert layer.attn.to_out.bias is None  # torch port: no output bias
    assert layer.norm1.eps == 1e-6
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    ls = 1.0 if layer_scale is None else layer_scale
    attn = layer.attn
    h = x + ls * naive_mssa(
        layer_norm(x, layer.norm1),
        attn.subspaces().detach(),
        scale=4**-0.5,
        out_weight=attn.to_out.weight.detach(),
    )
    expected = h + ls * layer.ista(layer_norm(h, layer.norm2))
    torch.testing.assert_close(layer(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("use_softmax", [True, False])
def test_crate_decoder_layer_equals_composition(use_softmax: bool) -> None:
    torch.manual_seed(8)
    layer = CRATEDecoderLayer(8, heads=2, use_softmax=use_softmax).double()
    _randomize_norms(layer)
    y = torch.randn(2, 4, 8, dtype=torch.float64)
    h = layer_norm(y, layer.norm1) @ layer.weight.detach().T  # D·LN(y), row form
    attn = layer.attn
    expected = h - naive_mssa(
        layer_norm(h, layer.norm2),
        attn.subspaces().detach(),
        scale=4**-0.5,
        out_weight=attn.to_out.weight.detach(),
        out_bias=attn.to_out.bias.detach(),
        softmax=use_softmax,
    )
    torch.testing.assert_close(layer(y), expected, rtol=1e-10, atol=1e-10)


def _small_blocks() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(9)
    return {
        "mssa_code": (MSSA(16, heads=4), (2, 5, 16)),
        "mssa_paper": (MSSA(16, heads=4, tie_out=True), (2, 5, 16)),
        "mssa_nosoftmax": (MSSA(16, heads=4, use_softmax=False), (2, 5, 16)),
        "ista": (ISTA(16), (2, 5, 16)),
        "overcomplete_ista": (OvercompleteISTA(16, n_steps=3), (2, 5, 16)),
        "crate_layer": (CRATELayer(16, heads=4), (2, 5, 16)),
        "crate_alpha_layer": (CRATEAlphaLayer(16, heads=4, layer_scale=0.1), (2, 5, 16)),
        "crate_decoder_layer": (CRATEDecoderLayer(16, heads=4), (2, 5, 16)),
        "crate": (CRATE(image_size=8, patch_size=4, dim=16, depth=2, heads=4), (2, 3, 8, 8)),
        "crate_alpha": (
            CRATEAlpha(image_size=8, patch_size=4, dim=16, depth=2, heads=4, num_classes=5),
            (2, 3, 8, 8),
        ),
    }


_OUT_SHAPES = {"crate": (2, 16), "crate_alpha": (2, 5)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shapes_and_dtypes(dtype: torch.dtype) -> None:
    for name, (module, shape) in _small_blocks().items():
        module = module.to(dtype)
        out = module(torch.randn(shape, dtype=dtype))
        assert out.dtype == dtype, name
        assert out.shape == _OUT_SHAPES.get(name, shape), name
        assert torch.isfinite(out).all(), name


def test_autocast_bf16_runs() -> None:
    layer = CRATELayer(16, heads=4)
    x = torch.randn(2, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), layer(x), rtol=0.1, atol=0.1)


def test_compile_fullgraph_all_blocks() -> None:
    """One grouped check: every block traces into a single graph (eager backend)."""
    torch._dynamo.reset()
    for name, (module, shape) in _small_blocks().items():
        x = torch.randn(shape)
        compiled = torch.compile(module, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), module(x), msg=name)
    layer = CRATELayer(16, heads=4)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[:, -2:] = True
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(
        compiled(x, src_key_padding_mask=mask), layer(x, src_key_padding_mask=mask)
    )


@pytest.mark.slow
def test_compile_inductor_crate_layer() -> None:
    torch._dynamo.reset()
    layer = CRATEAlphaLayer(16, heads=4)
    x = torch.randn(2, 5, 16, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, layer(x), rtol=1e-4, atol=1e-5)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(10)
    for name, (module, shape) in _small_blocks().items():
        module.zero_grad()
        module(torch.randn(shape)).square().sum().backward()
        for pname, param in module.named_parameters():
            assert param.grad is not None, f"{name}.{pname}"


def test_padded_keys_do_not_change_other_tokens() -> None:
    torch.manual_seed(11)
    layer = CRATELayer(16, heads=4)
    x = torch.randn(1, 6, 16)
    mask = torch.tensor([[False, False, False, False, True, True]])
    out = layer(x, src_key_padding_mask=mask)
    x2 = x.clone()
    x2[:, 4:] = 100 * torch.randn(1, 2, 16)
    torch.testing.assert_close(layer(x2, src_key_padding_mask=mask)[:, :4], out[:, :4])


def test_layers_work_as_seq_jepa_aggregator_blocks() -> None:
    """A CRATE stack passes as ``blocks`` of the seq-JEPA aggregator, with and without a mask."""
    from jepa_blocks.seq import Aggregator

    torch.manual_seed(12)
    blocks = [*crate_blocks(dim=16, depth=2, heads=4), CRATEAlphaLayer(16, heads=4)]
    agg = Aggregator(dim=16, blocks=blocks)
    tokens = torch.randn(3, 4, 16)
    assert agg(tokens).shape == (3, 16)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, -1] = True
    out = agg(tokens, padding_mask=mask)
    assert out.shape == (3, 16)
    # the padded token does not influence sample 0
    tokens2 = tokens.clone()
    tokens2[0, -1] = 50.0
    torch.testing.assert_close(agg(tokens2, padding_mask=mask), out)


def test_crate_blocks_factory() -> None:
    stack = crate_blocks(dim=16, depth=3, heads=2, layer=CRATEAlphaLayer, ratio=2, n_steps=1)
    assert len(stack) == 3 and all(isinstance(m, CRATEAlphaLayer) for m in stack)
    assert stack[0].ista.dictionary.shape == (16, 32)
    assert stack[0].attn.qkv.weight.data_ptr() != stack[1].attn.qkv.weight.data_ptr()
    assert all(isinstance(m, CRATELayer) for m in crate_blocks(dim=8))
    with pytest.raises(TypeError, match="layer"):
        crate_blocks(dim=8, layer=nn.Linear)
    with pytest.raises(ValueError, match="depth"):
        crate_blocks(dim=8, depth=0)
    with pytest.raises(ValueError, match="eta"):
        crate_blocks(dim=8, eta=0.0)


# ---------------------------------------------------------------------------------------------
# encoders and presets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dim", "heads", "depth"),
    [("tiny", 384, 6, 12), ("small", 576, 12, 12), ("base", 768, 12, 12), ("large", 1024, 16, 24)],
)
def test_crate_presets_match_official_dims(name: str, dim: int, heads: int, depth: int) -> None:
    with torch.device("meta"):
        model = getattr(CRATE, name)()
    assert len(model.layers) == depth
    assert model.num_patches == 196 and model.pos_embedding.shape == (1, 197, dim)
    assert model.patch_embedding[2].weight.shape == (dim, 16 * 16 * 3)
    for layer in model.layers:
        assert layer.attn.heads == heads and layer.attn.dim_head == dim // heads
        assert layer.attn.qkv.weight.shape == (dim, dim)
        assert layer.attn.to_out.weight.shape == (dim, dim)
        assert layer.ista.weight.shape == (dim, dim)
        assert layer.ista.eta == 0.1 and layer.ista.lambd == 0.1
    assert model.head[1].weight.shape == (1000, dim)


def test_crate_tiny_parameter_count() -> None:
    """Count from the official structure (stem LNs, to_out bias, head LN)."""
    with torch.device("meta"):
        model = CRATE.tiny()
    d = 384
    per_layer = 3 * d * d + d + 4 * d
    stem = 2 * 768 + 768 * d + d + 2 * d
    expected = 12 * per_layer + stem + 197 * d + d + 2 * d + 1000 * d + 1000
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize(
    ("name", "dim", "depth", "patch"), [("base", 768, 12, 16), ("large", 1024, 24, 14)]
)
def test_crate_alpha_presets(name: str, dim: int, depth: int, patch: int) -> None:
    with torch.device("meta"):
        model = getattr(CRATEAlpha, name)()
    assert len(model.layers) == depth and model.patch_size == (patch, patch)
    layer = model.layers[0]
    assert layer.ista.dictionary.shape == layer.ista.decoder.shape == (dim, 4 * dim)
    assert layer.ista.n_steps == 2


def test_crate_encoder_pooling_and_features() -> None:
    torch.manual_seed(13)
    model = CRATE(image_size=(8, 12), patch_size=4, dim=16, depth=2, heads=2, pool="mean")
    images = torch.randn(2, 3, 8, 12)
    tokens = model.forward_features(images)
    assert tokens.shape == (2, 1 + 6, 16)
    torch.testing.assert_close(model(images), tokens.mean(1))
    cls_model = CRATE(image_size=8, patch_size=4, dim=16, depth=1, heads=2, num_classes=3)
    assert cls_model(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="images"):
        model(torch.randn(2, 3, 8, 8))


def test_encoders_pass_their_options_to_the_layers_and_stem() -> None:
    """Both encoders share one stem: each keeps its own layer class, options and patch norms."""
    crate = CRATE(image_size=8, patch_size=4, dim=8, depth=2, heads=2, tie_out=True, eta=0.2,
                  lambd=0.3, dropout=0.1)  # fmt: skip
    assert [type(m) for m in crate.patch_embedding][1:] == [nn.LayerNorm, nn.Linear, nn.LayerNorm]
    for layer in crate.layers:
        assert type(layer) is CRATELayer and layer.attn.tie_out and layer.attn.dropout == 0.1
        assert (layer.ista.eta, layer.ista.lambd, layer.norm1.eps) == (0.2, 0.3, 1e-5)
    assert crate.layers[0] is not crate.layers[1]
    alpha = CRATEAlpha(image_size=8, patch_size=4, dim=8, depth=3, heads=2, ratio=2, n_steps=3,
                       eta=0.2, lambd=0.3, layer_scale=0.5, dropout=0.1)  # fmt: skip
    assert [type(m) for m in alpha.patch_embedding][1:] == [nn.Linear]
    assert len(alpha.layers) == 3
    for layer in alpha.layers:
        assert type(layer) is CRATEAlphaLayer and layer.attn.to_out.bias is None
        assert (layer.ista.ratio, layer.ista.n_steps, layer.ista.eta, layer.ista.lambd) == (
            2, 3, 0.2, 0.3,
        )  # fmt: skip
        assert layer.gamma1 is not None and float(layer.gamma1[0].detach()) == 0.5
        assert layer.norm1.eps == 1e-6 and layer.attn.dropout == 0.1


def test_encoder_parameter_order_is_stable() -> None:
    """Parameter order (optimizer state, checkpoints): stem tokens, patch embedding, layers, head."""
    model = CRATE(image_size=8, patch_size=4, dim=8, depth=1, heads=2, num_classes=3)
    assert list(model.state_dict()) == [
        "cls_token", "pos_embedding",
        "patch_embedding.1.weight", "patch_embedding.1.bias",
        "patch_embedding.2.weight", "patch_embedding.2.bias",
        "patch_embedding.3.weight", "patch_embedding.3.bias",
        "layers.0.norm1.weight", "layers.0.norm1.bias", "layers.0.attn.qkv.weight",
        "layers.0.attn.to_out.weight", "layers.0.attn.to_out.bias",
        "layers.0.norm2.weight", "layers.0.norm2.bias", "layers.0.ista.weight",
        "head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias",
    ]  # fmt: skip
    alpha = CRATEAlphaLayer(8, heads=2, layer_scale=1.0)
    assert list(alpha.state_dict()) == [
        "gamma1", "gamma2", "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.to_out.weight",
        "norm2.weight", "norm2.bias", "ista.dictionary", "ista.decoder",
    ]  # fmt: skip


def test_preset_defaults_and_overrides() -> None:
    with torch.device("meta"):
        crate = CRATE.from_preset("tiny", image_size=32, patch_size=8, depth=1)
        alpha = CRATEAlpha.from_preset("large", image_size=32, patch_size=16, depth=1)
        alpha_default = CRATEAlpha.large(depth=1, num_classes=0)
    assert crate.patch_size == (8, 8) and crate.dim == 384 and len(crate.layers) == 1
    assert crate.head[1].out_features == 1000
    assert alpha.patch_size == (16, 16) and alpha.image_size == (32, 32) and alpha.dim == 1024
    assert alpha_default.patch_size == (14, 14) and alpha_default.image_size == (224, 224)
    assert isinstance(alpha_default.head, nn.Identity)
    with pytest.raises(ValueError, match="name"):
        CRATEAlpha.from_preset("tiny")


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "exc", "match"),
    [
        (lambda: MSSA(10, heads=3), ValueError, "dim must be divisible by heads"),
        (lambda: MSSA(8, heads=0), ValueError, "heads"),
        (lambda: MSSA(8, heads=2.0), TypeError, "heads"),
        (lambda: MSSA(8, heads=2, dim_head=0), ValueError, "dim_head"),
        (lambda: MSSA(8, heads=2, tie_out=1), TypeError, "tie_out"),
        (lambda: MSSA(8, heads=2, dropout=1.0), ValueError, "dropout"),
        (lambda: MSSA(8, heads=2, scale=-1.0), ValueError, "scale"),
        (lambda: ISTA(8, eta=0.0), ValueError, "eta"),
        (lambda: ISTA(8, lambd=-0.1), ValueError, "lambd"),
        (lambda: ISTA(8, nonneg="yes"), TypeError, "nonneg"),
        (lambda: OvercompleteISTA(8, n_steps=0), ValueError, "n_steps"),
        (lambda: OvercompleteISTA(8, ratio=0), ValueError, "ratio"),
        (lambda: CRATELayer(8, heads=2, norm_eps=0), ValueError, "norm_eps"),
        (lambda: CRATEAlphaLayer(8, heads=2, layer_scale=-1.0), ValueError, "layer_scale"),
        (lambda: CRATE(image_size=30, patch_size=4), ValueError, "divisible by patch_size"),
        (lambda: CRATE(pool="max"), ValueError, "pool"),
        (lambda: CRATE(depth=0), ValueError, "depth"),
        (lambda: CRATE(num_classes=-1), ValueError, "num_classes"),
        (lambda: CRATE.from_preset("huge"), ValueError, "name"),
    ],
)
def test_invalid_arguments(factory, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        factory()


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., N, 8\)"):
        MSSA(8, heads=2)(torch.randn(2, 3, 6))
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        MSSA(8, heads=2)(torch.ones(2, 3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="dictionary"):
        ista_step(torch.randn(3, 4), torch.randn(5, 4))
    with pytest.raises(ValueError, match="codes"):
        ista_step(torch.randn(3, 4), torch.randn(4, 6), torch.randn(3, 4))
    with pytest.raises(ValueError, match="eta"):
        ista_step(torch.randn(3, 4), torch.randn(4, 4), eta=-1.0)
