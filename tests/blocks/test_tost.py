"""ToST: TSSA against its formula, causal TSSA against its recurrence, streaming, blocks, compile."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jepa_blocks._validation import NonFiniteError
from jepa_blocks.blocks.tost import (
    TSSA,
    CausalTSSA,
    ToSTBlock,
    ToSTStack,
    TSSAState,
    tost_blocks,
)
from jepa_blocks.seq import Aggregator
from jepa_blocks.variational import variational_rate
from tost_testutils import F64
from tost_testutils import randn as _x
from tost_testutils import randomise as _randomise  # parameters set to 0.4·N(0, 1)


def _heads(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """w = qkv(x) as (B, K, N, p), written out."""
    w = x @ attn.qkv.weight.T
    if attn.qkv.bias is not None:
        w = w + attn.qkv.bias
    b, n, _ = x.shape
    return w.reshape(b, n, attn.heads, attn.dim_head).permute(0, 2, 1, 3)


def _out(attn: nn.Module, y: torch.Tensor) -> torch.Tensor:
    b, k, n, p = y.shape
    merged = y.permute(0, 2, 1, 3).reshape(b, n, k * p)
    if attn.tie_out:
        out = merged @ attn.qkv.weight
        return out if attn.out_bias is None else out + attn.out_bias
    return merged @ attn.to_out.weight.T + attn.to_out.bias


def naive_tssa(attn: TSSA, x: torch.Tensor, pad: torch.Tensor | None = None):
    """The vision TSSA formula, head by head and token by token (float64)."""
    w = _heads(attn, x)
    b, k, n, _ = w.shape
    valid = torch.ones(b, n, dtype=F64) if pad is None else (~pad).to(F64)
    tau = attn.temperature.reshape(k)
    y = torch.zeros_like(w)
    pis = torch.zeros(b, k, n, dtype=F64)
    for bi in range(b):
        norms = [
            torch.sqrt(sum(valid[bi, i] * w[bi, h, i] ** 2 for i in range(n))).clamp_min(1e-12)
            for h in range(k)
        ]
        for i in range(n):
            scores = torch.stack([tau[h] * ((w[bi, h, i] / norms[h]) ** 2).sum() for h in range(k)])
            pis[bi, :, i] = torch.softmax(scores, dim=0)
        for h in range(k):
            mass = sum(valid[bi, i] * pis[bi, h, i] for i in range(n)) + 1e-8
            m = sum(valid[bi, i] * pis[bi, h, i] * w[bi, h, i] ** 2 for i in range(n)) / mass
            for i in range(n):
                y[bi, h, i] = -pis[bi, h, i] * w[bi, h, i] / (1 + m)
    return _out(attn, y), pis


def naive_causal(attn: CausalTSSA, x: torch.Tensor) -> torch.Tensor:
    """The causal recurrence (reference crate-tost.md §5.1), one token at a time (float64)."""
    w = _heads(attn, x)
    b, k, n, p = w.shape
    lam = 1.0 if attn.decay is None else attn.decay
    tau = attn.temperature.reshape(k)
    s_w2 = torch.zeros(b, k, p, dtype=F64)
    s_pw2 = torch.zeros(b, k, p, dtype=F64)
    s_p = torch.zeros(b, k, dtype=F64)
    ys = []
    for t in range(n):
        wt = w[:, :, t]
        s_w2 = lam * s_w2 + wt**2
        what = wt**2 / s_w2.clamp_min(1e-12)
        if attn.pos_bias is not None:
            length = attn.pos_bias.shape[1]
            if t < length:
                beta = attn.pos_bias[:, t]
            elif attn.beyond_max_len == "clamp":
                beta = attn.pos_bias[:, length - 1]
            else:
                beta = torch.zeros(k, dtype=F64)
            what = what + beta[None, :, None]  # broadcast over the p coordinates
        pi = torch.softmax(tau * what.sum(-1), dim=1)
        s_pw2 = lam * s_pw2 + pi[..., None] * wt**2
        s_p = lam * s_p + pi
        m = s_pw2 / (s_p[..., None] + 1e-8)
        ys.append(-pi[..., None] * wt / (1 + m))
    return _out(attn, torch.stack(ys, dim=2))


# ----------------------------------------------------------------------------- vision TSSA


@pytest.mark.parametrize("tie_out", [False, True])
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_tssa_equals_naive_formula(tie_out: bool, qkv_bias: bool) -> None:
    attn = _randomise(TSSA(12, heads=3, qkv_bias=qkv_bias, tie_out=tie_out).double())
    x = _x(2, 7, 12)
    taps = []
    attn.membership_tap.register_forward_hook(lambda m, i, o: taps.append(i[0]))
    ref, pis = naive_tssa(attn, x)
    torch.testing.assert_close(attn(x), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(taps[0], pis, rtol=1e-12, atol=1e-12)


def test_tssa_padding_mask_excludes_tokens() -> None:
    attn = _randomise(TSSA(8, heads=2).double())
    x = _x(2, 6, 8)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[0, 4:] = True
    out = attn(x, src_key_padding_mask=pad)
    torch.testing.assert_close(out, naive_tssa(attn, x, pad)[0], rtol=1e-12, atol=1e-12)
    # the padded tokens do not influence the others: same as dropping them
    torch.testing.assert_close(out[0, :4], attn(x[:1, :4])[0], rtol=1e-12, atol=1e-12)


def test_tssa_is_a_descent_step_on_the_variational_rate() -> None:
    """y_i = -n ∂R^{c,var}/∂w_i with π held fixed and d/ε² = 1 (coding-rate.md §5.2)."""
    dim, heads, n = 8, 2, 9
    attn = _randomise(TSSA(dim, heads=heads, qkv_bias=False).double())
    with torch.no_grad():
        attn.qkv.weight.copy_(torch.eye(dim))
        attn.to_out.weight.copy_(torch.eye(dim))
        attn.to_out.bias.zero_()
    w = _x(1, n, dim)[0].requires_grad_(True)
    taps = []
    attn.membership_tap.register_forward_hook(lambda m, i, o: taps.append(i[0]))
    y = attn(w[None])[0]
    pi = taps[0][0].T  # (n, K)
    selectors = torch.eye(dim, dtype=F64).reshape(dim, heads, dim // heads).permute(1, 0, 2)
    rate = variational_rate(w, pi, selectors, eps=dim**0.5)
    (grad,) = torch.autograd.grad(rate, w)
    torch.testing.assert_close(y, -n * grad, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("masked", [False, True])
def test_memory_efficient_matches_plain(masked: bool) -> None:
    plain = _randomise(TSSA(12, heads=3).double())
    fast = TSSA(12, heads=3, memory_efficient=True).double()
    fast.load_state_dict(plain.state_dict())
    x = _x(2, 10, 12).requires_grad_(True)
    pad = None
    if masked:
        pad = torch.zeros(2, 10, dtype=torch.bool)
        pad[1, 7:] = True
    g = _x(2, 10, 12, seed=5)
    outs, grads = [], []
    for attn in (plain, fast):
        y = attn(x, src_key_padding_mask=pad)
        outs.append(y)
        grads.append(torch.autograd.grad(y, [x, *attn.parameters()], g))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_memory_efficient_gradcheck() -> None:
    attn = _randomise(TSSA(6, heads=2, memory_efficient=True).double())
    x = _x(1, 5, 6).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: attn(t), (x,))


def test_attention_dropout_same_in_both_paths() -> None:
    plain = _randomise(TSSA(8, heads=2, attn_drop=0.5).double()).train()
    fast = TSSA(8, heads=2, attn_drop=0.5, memory_efficient=True).double().train()
    fast.load_state_dict(plain.state_dict())
    x = _x(2, 5, 8)
    torch.manual_seed(3)
    a = plain(x)
    torch.manual_seed(3)
    b = fast(x)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, plain.eval()(x))


class OfficialAttentionTSSA(nn.Module):
    """``tost_vision/tost.py::AttentionTSSA`` of ``RobinWu218/ToST``, its forward re-typed."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float) -> None:
        super().__init__()
        self.heads = num_heads
        self.attn_drop = nn.Dropout(attn_drop)
        self.qkv = nn.Linear(dim, dim, bias=True)
        self.temp = nn.Parameter(torch.ones(num_heads, 1))
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        w = self.qkv(x).reshape(b, n, self.heads, -1).permute(0, 2, 1, 3)  # b h n d
        pi = torch.softmax((nn.functional.normalize(w, dim=-2) ** 2).sum(-1) * self.temp, dim=1)
        dots = (pi / (pi.sum(dim=-1, keepdim=True) + 1e-8)).unsqueeze(-2) @ w**2
        attn = self.attn_drop(1.0 / (1 + dots))  # (b, h, 1, d): one draw per head, coordinate
        out = -(w * pi.unsqueeze(-1)) * attn
        return self.to_out(out.permute(0, 2, 1, 3).reshape(b, n, -1))


@pytest.mark.parametrize("memory_efficient", [False, True])
@pytest.mark.parametrize(("batch", "heads"), [(3, 4), (4, 4), (5, 2), (1, 2)])
def test_attention_dropout_matches_the_official_code(memory_efficient, batch, heads) -> None:
    official = OfficialAttentionTSSA(16, heads, attn_drop=0.3).double().train()
    ours = TSSA(16, heads=heads, attn_drop=0.3, memory_efficient=memory_efficient)
    ours = _randomise(ours.double()).train()
    with torch.no_grad():
        for a, b in ((official.qkv, ours.qkv), (official.to_out, ours.to_out)):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
        official.temp.copy_(ours.temperature)
    x = _x(batch, 7, 16)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    torch.manual_seed(5)
    a = official(xa)
    torch.manual_seed(5)
    b = ours(xb)
    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(b, ours.eval()(x))  # the dropout acted
    (a * x).sum().backward()
    (b * x).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(ours.temperature.grad, official.temp.grad, rtol=1e-9, atol=1e-11)


def _flat(states) -> list[torch.Tensor]:
    states = (
        states if isinstance(states, tuple) and not isinstance(states, TSSAState) else (states,)
    )
    return [t.clone() for s in states for t in s]


@pytest.mark.parametrize("where", ["attn", "block", "stack"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_token_raises_and_leaves_the_state(where: str, bad: float) -> None:
    torch.manual_seed(0)
    stack = _randomise(tost_blocks(dim=8, depth=2, heads=2, causal=True, decay=0.9).double())
    layer = {"attn": stack[0].attn, "block": stack[0], "stack": stack}[where]
    x = _x(2, 5, 8)
    state = layer.init_state(2, dtype=F64)
    ys = []
    for t in range(5):
        if t == 2:
            before = _flat(state)
            poisoned = x[:, t].clone()
            poisoned[1, 3] = bad
            with pytest.raises(NonFiniteError, match="x_t"):
                layer.step(state, poisoned)
            with pytest.raises(NonFiniteError, match="x"):
                layer.scan(poisoned[:, None], state)
            assert all(torch.equal(a, b) for a, b in zip(before, _flat(state)))
        y, state = layer.step(state, x[:, t])
        ys.append(y)
    # the stream after the rejected tokens is the stream without them
    torch.testing.assert_close(torch.stack(ys, 1), layer(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_tssa_bf16_autocast(memory_efficient: bool) -> None:
    attn = _randomise(TSSA(16, heads=4, memory_efficient=memory_efficient))
    x = _x(2, 32, 16, dtype=torch.float32).requires_grad_(True)
    ref = attn(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.05)
    y.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- causal TSSA


def _causal(**kw) -> CausalTSSA:
    return _randomise(CausalTSSA(12, heads=3, **kw).double())


CAUSAL_CASES = [
    {},
    {"decay": 0.8},
    {"max_len": 5},
    {"max_len": 5, "beyond_max_len": "zero", "decay": 0.95},
    {"max_len": 5, "tie_out": True},
]


@pytest.mark.parametrize("kw", CAUSAL_CASES)
def test_causal_forward_equals_naive_recurrence(kw: dict) -> None:
    attn = _causal(**kw)
    x = _x(2, 13, 12)  # longer than the positional bias
    torch.testing.assert_close(attn(x), naive_causal(attn, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", CAUSAL_CASES)
def test_causal_forward_equals_streaming_and_chunks_float64(kw: dict) -> None:
    attn = _causal(**kw)
    x = _x(2, 17, 12)
    full = attn(x)
    state = attn.init_state(2)
    steps = []
    for t in range(x.shape[1]):
        y_t, state = attn.step(state, x[:, t])
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-12, atol=1e-12)
    chunks, state2 = [], attn.init_state(2)
    for sl in (slice(0, 3), slice(3, 4), slice(4, 11), slice(11, 17)):
        y, state2 = attn.scan(x[:, sl], state2)
        chunks.append(y)
    torch.testing.assert_close(torch.cat(chunks, 1), full, rtol=1e-12, atol=1e-12)
    for a, b in zip(state, state2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert int(state.position[0]) == 17


@pytest.mark.parametrize("kw", CAUSAL_CASES)
def test_causal_scan_of_an_empty_chunk_keeps_the_state(kw: dict) -> None:
    """A chunk of zero tokens gives an empty output and the unchanged state, at any position."""
    attn = _causal(**kw)
    x = _x(2, 7, 12)
    _, state = attn.scan(x[:, :6], attn.init_state(2))
    y, same = attn.scan(x[:, 6:6], state, src_key_padding_mask=torch.zeros(2, 0, dtype=torch.bool))
    assert y.shape == (2, 0, 12) and y.dtype == x.dtype
    assert same is state
    y0, empty = attn.scan(x[:, :0], attn.init_state(2))
    assert y0.shape == (2, 0, 12) and int(empty.position[0]) == 0
    assert attn(x[:, :0]).shape == (2, 0, 12)
    # the stream goes on as if the empty chunk had not been there
    y_next, _ = attn.scan(x[:, 6:], same)
    torch.testing.assert_close(y_next, attn(x)[:, 6:], rtol=1e-12, atol=1e-12)
    block = ToSTBlock(12, attn=attn).double()
    y_block, block_state = block.scan(x[:, :0], state)
    assert y_block.shape == (2, 0, 12) and block_state is state


def test_causal_streaming_float32_within_1e5() -> None:
    attn = _randomise(CausalTSSA(32, heads=4, max_len=16, decay=0.99))
    x = _x(2, 64, 32, dtype=torch.float32)
    full = attn(x)
    state = attn.init_state(2)
    steps = []
    for t in range(64):
        y_t, state = attn.step(state, x[:, t])
        steps.append(y_t)
    assert (torch.stack(steps, 1) - full).abs().max() <= 1e-5
    y1, s = attn.scan(x[:, :40], attn.init_state(2))
    y2, _ = attn.scan(x[:, 40:], s)
    assert (torch.cat([y1, y2], 1) - full).abs().max() <= 1e-5


@pytest.mark.parametrize("policy", ["clamp", "zero"])
def test_policy_past_positional_bias(policy: str) -> None:
    """Past max_len, "clamp" repeats the last bias and "zero" drops it."""
    short = _causal(max_len=4, beyond_max_len=policy)
    long = CausalTSSA(12, heads=3, max_len=10).double()
    state = {k: v for k, v in short.state_dict().items() if k != "pos_bias"}
    beta = short.pos_bias.detach()
    tail = beta[:, -1:].expand(-1, 6) if policy == "clamp" else torch.zeros(3, 6, dtype=F64)
    state["pos_bias"] = torch.cat([beta, tail], dim=1)
    long.load_state_dict(state)
    x = _x(2, 10, 12)
    torch.testing.assert_close(short(x), long(x), rtol=1e-12, atol=1e-12)


def test_decay_forgets_the_distant_past() -> None:
    attn = _causal(decay=0.5)
    x = _x(1, 80, 12)
    x2 = x.clone()
    x2[:, :10] = _x(1, 10, 12, seed=9)
    diff = (attn(x) - attn(x2)).abs()
    assert diff[:, :10].max() > 1e-3
    assert diff[:, -1].max() < 1e-12  # 0.5^70: the first tokens are forgotten


def test_state_is_o_of_d_and_length_independent() -> None:
    attn = CausalTSSA(24, heads=4)
    x = torch.randn(3, 1000, 24)
    with torch.no_grad():
        _, s_short = attn.scan(x[:, :5], attn.init_state(3))
        _, s_long = attn.scan(x, attn.init_state(3))
    assert isinstance(s_long, TSSAState)
    for a, b in zip(s_short, s_long):
        assert a.shape == b.shape
    numel = sum(t.numel() for t in s_long)
    assert numel == 3 * (2 * 24 + 4 + 1)
    assert s_long.sum_w2.shape == (3, 4, 6) and s_long.sum_pi.shape == (3, 4)


def test_state_is_fp32_under_bf16_autocast() -> None:
    attn = _randomise(CausalTSSA(16, heads=4, max_len=8))
    x = _x(2, 12, 16, dtype=torch.float32)
    ref = attn(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        state = attn.init_state(2)
        outs = []
        for t in range(12):
            y_t, state = attn.step(state, x[:, t])
            outs.append(y_t)
        y_full = attn(x)
    for t in state[:3]:
        assert t.dtype == torch.float32
    assert state.position.dtype == torch.long
    assert outs[0].dtype == torch.bfloat16 and y_full.dtype == torch.bfloat16
    torch.testing.assert_close(torch.stack(outs, 1).float(), ref, rtol=0.05, atol=0.05)


def test_causal_padding_mask_leaves_tokens_out_of_the_sums() -> None:
    attn = _causal(decay=0.9)
    x = _x(1, 8, 12)
    pad = torch.zeros(1, 8, dtype=torch.bool)
    pad[0, 3] = True
    y = attn(x, src_key_padding_mask=pad)
    # later tokens see the same statistics as a stream that skips token 3 but keeps positions
    state = attn.init_state(1)
    _, state = attn.scan(x[:, :3], state)
    state = state._replace(
        sum_w2=0.9 * state.sum_w2,
        sum_pi_w2=0.9 * state.sum_pi_w2,
        sum_pi=0.9 * state.sum_pi,
        position=state.position + 1,
    )
    y_rest, _ = attn.scan(x[:, 4:], state)
    torch.testing.assert_close(y[:, 4:], y_rest, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- blocks and stacks


def test_block_layer_scale_and_formula() -> None:
    block = _randomise(ToSTBlock(8, heads=2, layer_scale_init=1e-5).double())
    x = _x(2, 5, 8)
    h = x + block.gamma1 * block.attn(block.norm1(x))
    torch.testing.assert_close(block(x), h + block.gamma2 * block.mlp(block.norm2(h)))
    fresh = ToSTBlock(8, heads=2, layer_scale_init=1e-5)
    assert torch.all(fresh.gamma1 == 1e-5) and torch.all(fresh.gamma2 == 1e-5)
    assert ToSTBlock(8, heads=2, layer_scale_init=None).gamma1 is None
    assert fresh.no_weight_decay() == {"attn.temperature"}


def test_tost_blocks_defaults() -> None:
    stack = tost_blocks(dim=16)
    assert isinstance(stack, ToSTStack) and len(stack) == 3
    assert all(isinstance(b.attn, TSSA) and b.attn.heads == 4 for b in stack)
    assert stack[0].layer_scale_init == 1.0 and torch.all(stack[0].gamma1 == 1.0)
    causal = tost_blocks(dim=16, depth=2, causal=True, max_len=8, decay=0.9)
    assert all(isinstance(b.attn, CausalTSSA) for b in causal)
    assert causal[0].layer_scale_init == 1e-5
    assert tost_blocks(dim=16, depth=13)[0].layer_scale_init == 1e-5


@pytest.mark.parametrize("decay", [None, 0.9])
def test_stack_streaming_equals_forward(decay: float | None) -> None:
    stack = tost_blocks(dim=12, depth=2, heads=3, causal=True, max_len=4, decay=decay)
    _randomise(stack.double())
    x = _x(2, 9, 12)
    full = stack(x)
    states = stack.init_state(2)
    outs = []
    for t in range(9):
        y_t, states = stack.step(states, x[:, t])
        outs.append(y_t)
    torch.testing.assert_close(torch.stack(outs, 1), full, rtol=1e-11, atol=1e-12)
    y1, s = stack.scan(x[:, :4], stack.init_state(2))
    y2, _ = stack.scan(x[:, 4:], s)
    torch.testing.assert_close(torch.cat([y1, y2], 1), full, rtol=1e-11, atol=1e-12)


def test_stack_as_seq_jepa_aggregator_blocks() -> None:
    torch.manual_seed(0)
    agg = Aggregator(dim=16, blocks=tost_blocks(dim=16, depth=2, heads=4))
    tokens = torch.randn(3, 5, 16)
    out = agg(tokens)
    assert out.shape == (3, 16)
    # no positions: permutation invariant, like the transformer aggregator
    torch.testing.assert_close(agg(tokens[:, [4, 2, 0, 1, 3]]), out, rtol=1e-5, atol=1e-5)
    # padded tokens do not change [AGG]
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[:, 5:] = True
    padded = torch.cat([tokens, torch.randn(3, 2, 16)], 1)
    torch.testing.assert_close(agg(padded, padding_mask=pad), out, rtol=1e-5, atol=1e-5)
    out.sum().backward()


# ----------------------------------------------------------------------------- compile


def _compile_check(backend: str) -> None:
    torch._dynamo.reset()
    block = ToSTBlock(16, heads=4)
    x = torch.randn(2, 8, 16)
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    torch.testing.assert_close(compiled(x), block(x), rtol=1e-5, atol=1e-5)
    fast = TSSA(16, heads=4, memory_efficient=True)
    xg = x.clone().requires_grad_(True)
    y = torch.compile(fast, fullgraph=True, backend=backend)(xg)
    torch.testing.assert_close(y, fast(x), rtol=1e-5, atol=1e-5)
    y.sum().backward()
    causal = CausalTSSA(16, heads=4, max_len=4, decay=0.9)
    step = torch.compile(causal.step, fullgraph=True, backend=backend)
    state = causal.init_state(2)
    y_t, state2 = step(state, x[:, 0])
    ref, ref_state = causal.step(state, x[:, 0])
    torch.testing.assert_close(y_t, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state2.sum_w2, ref_state.sum_w2)
    full = torch.compile(causal, fullgraph=True, backend=backend)(x)
    torch.testing.assert_close(full, causal(x), rtol=1e-5, atol=1e-5)


def test_compile_fullgraph_aot_eager() -> None:
    _compile_check("aot_eager")


@pytest.mark.slow
def test_compile_fullgraph_inductor() -> None:
    _compile_check("inductor")


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("factory", "exc", "match"),
    [
        (lambda: TSSA(10, heads=3), ValueError, "divisible"),
        (lambda: TSSA(8, heads=0), ValueError, "heads"),
        (lambda: TSSA(8, heads=True), TypeError, "heads"),
        (lambda: TSSA(8.0, heads=2), TypeError, "dim"),
        (lambda: TSSA(8, heads=2, attn_drop=1.0), ValueError, "attn_drop"),
        (lambda: TSSA(8, heads=2, memory_efficient=1), TypeError, "memory_efficient"),
        (lambda: CausalTSSA(8, heads=2, decay=1.5), ValueError, "decay"),
        (lambda: CausalTSSA(8, heads=2, decay=0.0), ValueError, "decay"),
        (lambda: CausalTSSA(8, heads=2, max_len=0), ValueError, "max_len"),
        (lambda: CausalTSSA(8, heads=2, beyond_max_len="wrap"), ValueError, "beyond_max_len"),
        (lambda: ToSTBlock(8, heads=2, layer_scale_init=0.0), ValueError, "layer_scale_init"),
        (lambda: ToSTBlock(8, attn=TSSA(4, heads=2)), ValueError, "attn.dim"),
        (lambda: ToSTBlock(8, attn="tssa"), TypeError, "attn"),
        (lambda: tost_blocks(dim=8, depth=0), ValueError, "depth"),
        (lambda: ToSTStack([nn.Linear(2, 2), "x"]), TypeError, "blocks"),
    ],
)
def test_bad_hyperparameters(factory, exc, match) -> None:
    with pytest.raises(exc, match=match):
        factory()


def test_bad_inputs() -> None:
    attn = TSSA(8, heads=2)
    with pytest.raises(ValueError, match="shape"):
        attn(torch.randn(2, 5, 6))
    with pytest.raises(TypeError, match="floating"):
        attn(torch.ones(2, 5, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="bool"):
        attn(torch.randn(2, 5, 8), src_key_padding_mask=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="src_key_padding_mask"):
        attn(torch.randn(2, 5, 8), src_key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    causal = CausalTSSA(8, heads=2)
    with pytest.raises(ValueError, match="x_t"):
        causal.step(causal.init_state(2), torch.randn(2, 1, 8))
    with pytest.raises(ValueError, match="state"):
        causal.step(causal.init_state(3), torch.randn(2, 8))
    with pytest.raises(TypeError, match="TSSAState"):
        causal.step((1, 2, 3, 4), torch.randn(2, 8))
    with pytest.raises(ValueError, match="batch"):
        causal.init_state(0)
    with pytest.raises(TypeError, match="causal"):
        ToSTBlock(8, heads=2).init_state(2)
    with pytest.raises(ValueError, match="states"):
        tost_blocks(dim=8, depth=2, heads=2, causal=True).step((), torch.randn(1, 8))


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_tssa_leading_dimensions(memory_efficient: bool) -> None:
    attn = _randomise(TSSA(8, heads=2, memory_efficient=memory_efficient).double())
    x = _x(2, 3, 5, 8)
    out = attn(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out[1, 2], attn(x[1, 2]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[0], attn(x[0]), rtol=1e-12, atol=1e-12)
