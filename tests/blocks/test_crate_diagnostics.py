"""CRATE diagnostics: per-layer subspace coding rate, sparsity, head specialisation, recorder."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from jepa_blocks.blocks import (
    CRATE,
    CRATEAlphaLayer,
    CRATEDecoderLayer,
    CRATELayer,
    CRATERecorder,
    code_sparsity,
    head_action_r2,
    project_heads,
    specialization_score,
    subspace_coding_rate,
)


def ref_vis_utils_rate(tokens: Tensor, bases: Tensor, eps_code: float, normalize: bool) -> Tensor:
    """Official ``vis_utils`` protocol in float64, one head and one sample at a time.

    Per head: W = X U_k (N×p), rows normalised, ½ logdet(I_N + p/(N·eps_code) W Wᵀ); sum over
    heads. ``eps_code`` is the code's eps (ε²).
    """
    tokens, bases = tokens.double(), bases.double()
    b_sz, n, _ = tokens.shape
    k_heads, _, p = bases.shape
    out = torch.zeros(b_sz, k_heads, dtype=torch.float64)
    for b in range(b_sz):
        for k in range(k_heads):
            w = tokens[b] @ bases[k]
            if normalize:
                w = w / torch.linalg.vector_norm(w, dim=-1, keepdim=True)
            gram = w @ w.T
            eye = torch.eye(n, dtype=torch.float64)
            out[b, k] = 0.5 * torch.logdet(eye + p / (n * eps_code) * gram)
    return out


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize(("n", "p"), [(10, 4), (3, 8)])
def test_subspace_coding_rate_equals_float64_reference(normalize: bool, n: int, p: int) -> None:
    torch.manual_seed(0)
    tokens = torch.randn(3, n, 12)
    bases = torch.randn(2, 12, p) / 12**0.5
    expected = ref_vis_utils_rate(tokens, bases, eps_code=0.01, normalize=normalize)
    per_head = subspace_coding_rate(tokens, bases, eps=0.1, normalize=normalize, per_head=True)
    assert per_head.dtype == torch.float32 and per_head.shape == (3, 2)
    torch.testing.assert_close(per_head.double(), expected, rtol=1e-4, atol=1e-4)
    total = subspace_coding_rate(tokens, bases, eps=0.1, normalize=normalize)
    torch.testing.assert_close(total.double(), expected.sum(-1), rtol=1e-4, atol=1e-4)
    f64 = subspace_coding_rate(tokens.double(), bases, normalize=normalize, per_head=True)
    torch.testing.assert_close(f64, expected, rtol=1e-10, atol=1e-10)


def test_subspace_coding_rate_low_for_compressed_tokens() -> None:
    """Tokens on one line per head compress to a single direction: a much lower rate."""
    torch.manual_seed(1)
    bases = torch.linalg.qr(torch.randn(8, 8))[0].reshape(8, 2, 4).transpose(0, 1)  # (2, 8, 4)
    spread = torch.randn(1, 32, 8)
    line = torch.randn(1, 32, 1) * torch.randn(1, 1, 8)
    assert subspace_coding_rate(line, bases) < 0.5 * subspace_coding_rate(spread, bases)


def test_subspace_coding_rate_under_autocast_is_float32() -> None:
    tokens = torch.randn(2, 6, 8, dtype=torch.bfloat16)
    bases = torch.randn(2, 8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = subspace_coding_rate(tokens, bases)
    assert out.dtype == torch.float32
    expected = ref_vis_utils_rate(tokens.float(), bases, 0.01, True).sum(-1)
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)


def test_project_heads_shape_and_errors() -> None:
    w = project_heads(torch.randn(2, 3, 5, 8), torch.randn(4, 8, 2))
    assert w.shape == (2, 3, 4, 5, 2)
    with pytest.raises(ValueError, match="bases"):
        project_heads(torch.randn(5, 8), torch.randn(4, 7, 2))


def test_code_sparsity_on_constructed_codes() -> None:
    codes = torch.tensor([[[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 3.0]]])  # (1, 2, 4)
    assert code_sparsity(codes).item() == pytest.approx(5 / 8)
    torch.testing.assert_close(code_sparsity(codes, dim=-1), torch.tensor([[0.5, 0.75]]))
    tiny = torch.full((3,), 1e-30)
    assert code_sparsity(tiny).item() == 0.0  # exact zeros only
    assert code_sparsity(torch.relu(-torch.rand(10))).item() == 1.0


def test_head_action_r2_finds_the_responsible_head() -> None:
    torch.manual_seed(2)
    s, p = 400, 3
    actions = torch.randn(s, 2)
    mix0, mix1 = torch.randn(1, p), torch.randn(1, p)
    head0 = actions[:, :1] * mix0 + 0.05 * torch.randn(s, p)
    head1 = actions[:, 1:] * mix1 + 0.05 * torch.randn(s, p)
    head2 = torch.randn(s, p)
    feats = torch.stack([head0, head1, head2], dim=1)  # (S, K, p)
    r2 = head_action_r2(feats, actions)
    assert r2.shape == (3, 2) and r2.dtype == torch.float64
    assert r2[0, 0] > 0.95 and r2[1, 1] > 0.95
    assert r2[0, 1] < 0.05 and r2[1, 0] < 0.05 and r2[2].max() < 0.05
    score = specialization_score(r2)
    assert (score > 0.7).all()
    ridge = head_action_r2(feats, actions, ridge=1e-3)
    torch.testing.assert_close(ridge, r2, rtol=1e-3, atol=1e-3)


def test_head_action_r2_equals_lstsq_reference() -> None:
    torch.manual_seed(3)
    feats = torch.randn(50, 2, 3, dtype=torch.float64)
    actions = torch.randn(50, 2, dtype=torch.float64)
    r2 = head_action_r2(feats, actions)
    for k in range(2):
        x = torch.cat([feats[:, k], torch.ones(50, 1, dtype=torch.float64)], dim=1)
        for j in range(2):
            y = actions[:, j]
            beta = torch.linalg.lstsq(x, y[:, None]).solution
            resid = y - (x @ beta)[:, 0]
            expected = 1 - resid.square().sum() / (y - y.mean()).square().sum()
            torch.testing.assert_close(r2[k, j], expected)


def test_head_action_r2_constant_action_and_errors() -> None:
    feats = torch.randn(20, 2, 3)
    actions = torch.cat([torch.ones(20, 1), torch.randn(20, 1)], dim=1)
    assert (head_action_r2(feats, actions)[:, 0] == 0).all()
    with pytest.raises(ValueError, match="same number of samples"):
        head_action_r2(feats, torch.randn(19, 2))
    with pytest.raises(ValueError, match="ridge"):
        head_action_r2(feats, actions, ridge=-1.0)


def test_specialization_score_constructed() -> None:
    r2 = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.5, 0.0]])
    torch.testing.assert_close(specialization_score(r2), torch.tensor([1.0, 0.0, 0.0]))
    assert specialization_score(torch.rand(1, 4)).eq(0).all()


def test_recorder_matches_direct_computation() -> None:
    torch.manual_seed(4)
    stack = nn.Sequential(*[CRATELayer(16, heads=4) for _ in range(3)])
    x = torch.randn(2, 7, 16)
    with CRATERecorder(stack) as rec:
        out = stack(x)
    assert len(rec.layers) == 3
    torch.testing.assert_close(rec.outputs[2], out)
    torch.testing.assert_close(rec.inputs[0], x)
    torch.testing.assert_close(rec.inputs[1], rec.outputs[0])
    torch.testing.assert_close(rec.mssa_inputs[1], stack[1].norm1(rec.inputs[1]))
    assert rec.heads[0].shape == (2, 4, 7, 4)
    torch.testing.assert_close(rec.codes[2], out)  # CRATE layer output = ISTA codes
    rates = rec.coding_rates()
    assert rates.shape == (3, 2)
    for i, layer in enumerate(stack):
        expected = ref_vis_utils_rate(
            layer.norm1(rec.inputs[i]).detach(), layer.attn.subspaces().detach(), 0.01, True
        ).sum(-1)
        torch.testing.assert_close(rates[i].double(), expected, rtol=1e-4, atol=1e-4)
    assert rec.coding_rates(per_head=True).shape == (3, 2, 4)
    sparsity = rec.sparsities()
    assert sparsity.shape == (3,)
    torch.testing.assert_close(sparsity[1], (rec.codes[1] == 0).float().mean())
    # hooks are gone after the context
    rec.clear()
    stack(x)
    assert not rec.outputs


def test_recorder_on_encoder_alpha_and_decoder_layers() -> None:
    torch.manual_seed(5)
    model = CRATE(image_size=8, patch_size=4, dim=16, depth=2, heads=4)
    with CRATERecorder(model) as rec:
        model(torch.randn(2, 3, 8, 8))
    assert rec.coding_rates().shape == (2, 2) and rec.outputs[1].shape == (2, 5, 16)

    mixed = nn.ModuleList([CRATEAlphaLayer(8, heads=2), CRATEDecoderLayer(8, heads=2)])
    rec = CRATERecorder(mixed)
    y = torch.randn(3, 4, 8)
    for layer in mixed:
        y = layer(y)
    assert rec.codes[0].shape == (3, 4, 32) and 1 not in rec.codes
    assert rec.sparsities().shape == (1,)
    assert rec.coding_rates().shape == (2, 3)
    rec.remove()


def test_recorder_errors() -> None:
    with pytest.raises(ValueError, match="no CRATELayer"):
        CRATERecorder(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="model"):
        CRATERecorder("model")  # type: ignore[arg-type]
    rec = CRATERecorder(CRATELayer(8, heads=2))
    with pytest.raises(RuntimeError, match="forward pass"):
        rec.coding_rates()
    with pytest.raises(RuntimeError, match="forward pass"):
        rec.sparsities()
