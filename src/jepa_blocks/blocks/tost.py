r"""ToST: token-statistics self-attention (TSSA), its causal streaming form, and the ToST block.

Wu et al. (ICLR 2025), arXiv:2412.17810; official code ``RobinWu218/ToST``
(``tost_vision/tost.py``, ``tost_lang/model_TSSA.py``), written from the formulas.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from jepa_blocks._validation import (
    check_bool,
    check_choice,
    check_int,
    check_positive,
    check_probability,
)
from jepa_blocks.blocks._heads import (
    HeadProjection,
    check_finite,
    check_padding,
    check_tokens,
    layer_scales,
    scaled,
)

__all__ = ["TSSA", "CausalTSSA", "TSSAState", "ToSTBlock", "ToSTStack", "tost_blocks"]

#: Guard added to the membership mass :math:`\sum_i \pi_{k,i}` (official code: ``1e-8``).
MASS_EPS = 1e-8
#: ``F.normalize``'s default: the per-coordinate L2 norm over tokens is clamped at ``1e-12``.
VISION_NORM_EPS = 1e-12
#: Clamp of the causal running sum of squares (official language code: ``min=1e-12``).
CAUSAL_DEN_EPS = 1e-12

#: ``CausalTSSA(beyond_max_len=...)``: the position bias past ``max_len``.
BeyondMaxLen = Literal["clamp", "zero"]


def _check_decay(value: Any) -> float | None:
    if value is None:
        return None
    v = check_positive(value, "decay")
    if v > 1.0:
        raise ValueError(f"decay must be in (0, 1] or None, got {value!r}")
    return None if v == 1.0 else v


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics dtype: float32, or float64 for float64 inputs."""
    return torch.promote_types(dtype, torch.float32)


class _VisionStats(NamedTuple):
    pi: Tensor  # (..., K, N) memberships
    den: Tensor  # (..., K, 1, p) clamped per-coordinate sums of squares over tokens
    mass: Tensor  # (..., K, 1) Σ_i π + 1e-8
    m: Tensor  # (..., K, p) weighted second moments


def _vision_tssa(
    w: Tensor, temperature: Tensor, valid: Tensor | None, drop: Tensor | None
) -> tuple[Tensor, _VisionStats]:
    """Vision TSSA core on heads ``w`` ``(..., K, N, p)`` in the compute dtype: ``(y, stats)``."""
    w2 = w.square()
    w2_stat = w2 if valid is None else w2 * valid
    den = w2_stat.sum(-2, keepdim=True).clamp_min(VISION_NORM_EPS**2)
    energy = (w2 / den).sum(-1)
    pi = torch.softmax(temperature * energy, dim=-2)
    pi_stat = pi if valid is None else pi * valid[..., 0]
    mass = pi_stat.sum(-1, keepdim=True) + MASS_EPS
    # a broadcast product, not a matmul on the non-contiguous head view: no copy of w² saved
    m = (pi_stat[..., None] * w2).sum(-2) / mass
    a = 1.0 / (1.0 + m)
    if drop is not None:
        a = a * drop
    return -pi[..., None] * w * a[..., None, :], _VisionStats(pi, den, mass, m)


class _VisionTSSAFunction(torch.autograd.Function):
    """TSSA core whose backward recomputes ``π``: it saves ``w`` (own dtype) and ``O(D)`` stats."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, w: Tensor, temperature: Tensor, valid: Tensor | None, drop: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        dtype = _stat_dtype(w.dtype)
        with torch.autocast(device_type=w.device.type, enabled=False):
            y, st = _vision_tssa(w.to(dtype), temperature.to(dtype), valid, drop)
        ctx.save_for_backward(w, temperature, valid, drop, st.den, st.mass, st.m)
        ctx.mark_non_differentiable(st.pi)
        return y, st.pi

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_y: Tensor, _grad_pi: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        w, temperature, valid, drop, den, mass, m = ctx.saved_tensors
        dtype = den.dtype
        with torch.autocast(device_type=w.device.type, enabled=False):
            wc = w.to(dtype)
            tau = temperature.to(dtype)
            w2 = wc.square()
            energy = (w2 / den).sum(-1)  # (..., K, N)
            pi = torch.softmax(tau * energy, dim=-2)
            a = 1.0 / (1.0 + m)  # (..., K, p)
            a_eff = a if drop is None else a * drop
            g = grad_y.to(dtype)
            gw = g * wc
            # y = -π w a_eff
            g_pi = -(gw * a_eff[..., None, :]).sum(-1)  # (..., K, N)
            g_a = -torch.einsum("...knp,...kn->...kp", gw, pi)
            if drop is not None:
                g_a = g_a * drop
            # a = 1 / (1 + m),  m = M / mass
            g_m = -a.square() * g_a
            g_big_m = g_m / mass
            g_mass = -(g_m * m).sum(-1, keepdim=True) / mass  # (..., K, 1)
            stat_grad = torch.einsum("...knp,...kp->...kn", w2, g_big_m) + g_mass
            if valid is not None:
                stat_grad = stat_grad * valid[..., 0]
            g_pi = g_pi + stat_grad
            pi_gbm = pi[..., None] * g_big_m[..., None, :]
            if valid is not None:
                pi_gbm = pi_gbm * valid
            g_w = (-pi[..., None] * a_eff[..., None, :]) * g + 2.0 * pi_gbm * wc
            # π = softmax_k(τ e)
            g_s = pi * (g_pi - (pi * g_pi).sum(-2, keepdim=True))
            g_tau = None
            if ctx.needs_input_grad[1]:
                g_tau = (g_s * energy).sum(-1, keepdim=True)
                g_tau = g_tau.reshape(-1, *temperature.shape).sum(0)
            g_e = tau * g_s  # (..., K, N)
            # e = Σ_j w² / den,  den = max(Σ_i v w², c)
            g_w = g_w + 2.0 * wc * g_e[..., None] / den
            g_den = -(g_e[..., None] * w2).sum(-2, keepdim=True) / den.square()
            g_den = torch.where(den > VISION_NORM_EPS**2, g_den, 0.0)
            g_w = g_w + 2.0 * (wc if valid is None else wc * valid) * g_den
        g_tau_out = None if g_tau is None else g_tau.to(temperature.dtype)
        return g_w.to(w.dtype), g_tau_out, None, None


class TSSAState(NamedTuple):
    r"""Streaming state of one :class:`CausalTSSA` layer: :math:`O(D)` numbers per sequence.

    Attributes:
        sum_w2: :math:`S_{w^2} = \sum_{s \le t} \lambda^{t-s} w_s^{2}`, ``(B, K, p)``.
        sum_pi_w2: :math:`S_{\pi w^2} = \sum_{s \le t} \lambda^{t-s} \pi_s w_s^{2}`, ``(B, K, p)``.
        sum_pi: :math:`S_\pi = \sum_{s \le t} \lambda^{t-s} \pi_s`, ``(B, K)``.
        position: Positions consumed so far (indexes the bias, never decayed), ``(B,)`` int64.
    """

    sum_w2: Tensor
    sum_pi_w2: Tensor
    sum_pi: Tensor
    position: Tensor


def _decayed_prefix_sum(v: Tensor, init: Tensor, decay: float | None) -> Tensor:
    r"""Inclusive prefix sums :math:`S_t = \lambda S_{t-1} + v_t`, :math:`S_{-1} =` ``init``.

    ``v`` is ``(..., N, c)``, ``init`` ``(..., c)``. With decay: a Hillis–Steele scan
    (:math:`\lceil \log_2 N \rceil` passes), stable for any :math:`\lambda` (powers :math:`\le 1`).
    """
    n = v.shape[-2]
    if decay is None:
        return v.cumsum(-2) + init[..., None, :]
    out = v
    offset = 1
    while offset < n:
        shifted = out[..., : n - offset, :] * (decay**offset)
        out = torch.cat([out[..., :offset, :], out[..., offset:, :] + shifted], dim=-2)
        offset *= 2
    steps = torch.arange(1, n + 1, device=v.device, dtype=v.dtype)
    powers = torch.exp(steps * math.log(decay))  # λ^{t+1}, underflows cleanly to 0
    return out + powers[:, None] * init[..., None, :]


def _causal_tssa(
    w: Tensor,
    temperature: Tensor,
    bias: Tensor | None,
    state: TSSAState,
    decay: float | None,
    valid: Tensor | None,
) -> tuple[Tensor, Tensor, TSSAState]:
    """Causal TSSA core on heads ``w`` ``(B, K, N, p)`` from ``state``: ``(y, π, new_state)``.

    ``bias`` is the already-gathered positional term ``(B, K, N)`` (``p·β``) or ``None``.
    """
    n = w.shape[-2]
    w2 = w.square()
    w2_stat = w2 if valid is None else w2 * valid
    s_w2 = _decayed_prefix_sum(w2_stat, state.sum_w2, decay)  # (B, K, N, p)
    energy = (w2 / s_w2.clamp_min(CAUSAL_DEN_EPS)).sum(-1)  # (B, K, N)
    if bias is not None:
        energy = energy + bias
    pi = torch.softmax(temperature * energy, dim=-2)
    pi_stat = pi if valid is None else pi * valid[..., 0]
    # one scan over [π w², π]: (B, K, N, p + 1)
    packed = torch.cat([pi_stat[..., None] * w2, pi_stat[..., None]], dim=-1)
    init = torch.cat([state.sum_pi_w2, state.sum_pi[..., None]], dim=-1)
    sums = _decayed_prefix_sum(packed, init, decay)
    s_piw2, s_pi = sums[..., :-1], sums[..., -1:]
    m = s_piw2 / (s_pi + MASS_EPS)
    y = -pi[..., None] * w / (1.0 + m)
    if n == 0:  # an empty chunk consumes nothing: the state is unchanged
        return y, pi, state
    new_state = TSSAState(
        sum_w2=s_w2[..., -1, :],
        sum_pi_w2=s_piw2[..., -1, :],
        sum_pi=s_pi[..., -1, 0],
        position=state.position + n,
    )
    return y, pi, new_state


class _TSSABase(HeadProjection):
    """Shared parameters of :class:`TSSA` and :class:`CausalTSSA` (projections, temperature)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        qkv_bias: bool,
        tie_out: bool,
        out_bias: bool | None,
        proj_drop: float,
    ) -> None:
        super().__init__(dim, heads, None, qkv_bias=qkv_bias, tie_out=tie_out)
        self.qkv_bias = qkv_bias
        self.proj_drop = check_probability(proj_drop, "proj_drop")
        #: Per-head temperature :math:`\tau_k` (initialised to 1; excluded from weight decay).
        self.temperature = nn.Parameter(torch.ones(heads, 1))
        self._add_output_map(out_bias)
        #: Observation hook: called with the detached memberships ``π`` ``(..., K, N)``.
        self.membership_tap = nn.Identity()

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay (the temperature, as in ToST)."""
        return {"temperature"}

    def _output(self, y: Tensor, pi: Tensor, dtype: torch.dtype) -> Tensor:
        self.membership_tap(pi.detach())
        return F.dropout(self._merge(y.to(dtype)), self.proj_drop, self.training)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, heads={self.heads}, dim_head={self.dim_head}, "
            f"qkv_bias={self.qkv_bias}, tie_out={self.tie_out}"
        )


class TSSA(_TSSABase):
    r"""Token-statistics self-attention, vision (non-causal) form (Wu et al., ICLR 2025).

    Memberships :math:`\pi` (a softmax over heads of each token's normalised energy) weight the
    per-coordinate second moments :math:`m`; the output is :math:`-\pi w / (1 + m)` (formulas:
    the ToST page). ``attn_drop`` acts on :math:`1/(1+m)` (official code). Statistics run in an
    fp32 island (float64 for float64 input); padded tokens are left out of every statistic.

    Args:
        dim: Token dimension :math:`D`, divisible by ``heads``.
        heads: Number of heads (subspaces) :math:`K`; head size :math:`p = D/K`.
        qkv_bias: Bias on the input projection.
        tie_out: ``True``: the paper's tied output :math:`U_k`; ``False``: official ``to_out``.
        out_bias: Bias on the output map; ``None``: ``not tie_out``.
        attn_drop: Dropout probability on :math:`1/(1+m)` (training only).
        proj_drop: Dropout probability on the output (training only).
        memory_efficient: Recompute the memberships in the backward (less memory, same values).

    Shape:
        - x: ``(..., N, dim)``; src_key_padding_mask: ``(..., N)`` boolean, ``True`` = ignore
        - output: ``(..., N, dim)``

    Example:
        >>> from jepa_blocks.blocks.tost import TSSA
        >>> x = torch.randn(2, 10, 64)
        >>> TSSA(64, heads=4, memory_efficient=True)(x).shape
        torch.Size([2, 10, 64])
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 4,
        qkv_bias: bool = True,
        tie_out: bool = False,
        out_bias: bool | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__(dim, heads, qkv_bias, tie_out, out_bias, proj_drop)
        self.attn_drop = check_probability(attn_drop, "attn_drop")
        self.memory_efficient = check_bool(memory_efficient, "memory_efficient")

    def forward(self, x: Tensor, *, src_key_padding_mask: Tensor | None = None) -> Tensor:
        """Apply TSSA to the (already normalised) tokens ``x``."""
        check_tokens(x, self.dim)
        mask = check_padding(src_key_padding_mask, x, "src_key_padding_mask")
        w = self._split(x)  # (..., K, N, p)
        dtype = _stat_dtype(w.dtype)
        valid = None if mask is None else (~mask).to(dtype)[..., None, :, None]
        drop = None
        if self.training and self.attn_drop > 0:
            # the official nn.Dropout on 1/(1+m) (b, h, 1, d): one draw per sample, head, coordinate
            drop = F.dropout(w.new_ones((*w.shape[:-2], w.shape[-1]), dtype=dtype), self.attn_drop)
        if self.memory_efficient:
            y, pi = _VisionTSSAFunction.apply(w, self.temperature, valid, drop)
        else:
            with torch.autocast(device_type=w.device.type, enabled=False):
                y, st = _vision_tssa(w.to(dtype), self.temperature.to(dtype), valid, drop)
            pi = st.pi
        return self._output(y, pi, w.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, memory_efficient={self.memory_efficient}"


class CausalTSSA(_TSSABase):
    r"""Causal TSSA with prefix statistics and an exact streaming recurrence (ToST, language form).

    :class:`TSSA` with prefix sums (optionally decayed by :math:`\lambda`; the official
    ``tost_lang/model_TSSA.py`` has :math:`\lambda = 1`), the normaliser clamped at
    :math:`10^{-12}` and, with ``max_len``, a learned positional bias (``pos_bias``, init 0).
    :meth:`forward`, :meth:`scan` and :meth:`step` agree to rounding.

    Args:
        dim, heads, qkv_bias, tie_out, out_bias, proj_drop: As :class:`TSSA`.
        max_len: Length :math:`L` of the positional bias (official: 1024); ``None``: no bias.
        beyond_max_len: ``"clamp"`` or ``"zero"``: the bias for positions :math:`\ge L`.
        decay: Forgetting factor :math:`\lambda \in (0, 1]`; ``None`` or ``1.0``: none.

    Shape:
        - x: ``(B, N, dim)``; x_t (for :meth:`step`): ``(B, dim)``
        - src_key_padding_mask: ``(B, N)`` boolean, ``True`` = ignore (left out of the sums)
        - output: ``(B, N, dim)``; state: see :class:`TSSAState`

    Example:
        >>> from jepa_blocks.blocks.tost import CausalTSSA
        >>> attn, x = CausalTSSA(32, heads=4).eval(), torch.randn(2, 6, 32)
        >>> y, state = attn.scan(x[:, :5], attn.init_state(2))
        >>> y_t, state = attn.step(state, x[:, 5])
        >>> torch.allclose(y_t, attn(x)[:, 5], atol=1e-5)
        True
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 4,
        max_len: int | None = None,
        beyond_max_len: BeyondMaxLen = "clamp",
        decay: float | None = None,
        qkv_bias: bool = True,
        tie_out: bool = False,
        out_bias: bool | None = None,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, heads, qkv_bias, tie_out, out_bias, proj_drop)
        self.max_len = None if max_len is None else check_int(max_len, "max_len")
        self.beyond_max_len = check_choice(beyond_max_len, "beyond_max_len", get_args(BeyondMaxLen))
        self.decay = _check_decay(decay)
        self.pos_bias: nn.Parameter | None = None
        if self.max_len is not None:
            self.pos_bias = nn.Parameter(torch.zeros(heads, self.max_len))

    def init_state(
        self,
        batch: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> TSSAState:
        """An empty state (all sums zero, position 0) for ``batch ≥ 1`` sequences.

        Args:
            batch: Number of sequences.
            device: Defaults to the module's device.
            dtype: Defaults to float32, or float64 for a float64 module.
        """
        check_int(batch, "batch")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        weight = self.qkv.weight
        device = weight.device if device is None else device
        dtype = _stat_dtype(weight.dtype) if dtype is None else dtype
        sums = torch.zeros(batch, self.heads, self.dim_head, device=device, dtype=dtype)
        return TSSAState(
            sum_w2=sums,
            sum_pi_w2=sums.clone(),
            sum_pi=torch.zeros(batch, self.heads, device=device, dtype=dtype),
            position=torch.zeros(batch, device=device, dtype=torch.long),
        )

    def _bias(self, position: Tensor, n: int, dtype: torch.dtype) -> Tensor | None:
        """Positional term ``p·β[k, t]`` for positions ``position + arange(n)``: ``(B, K, n)``."""
        if self.pos_bias is None or self.max_len is None:
            return None
        pos = position[:, None] + torch.arange(n, device=position.device)  # (B, n)
        beta = self.pos_bias.to(dtype)[:, pos.clamp_max(self.max_len - 1)]  # (K, B, n)
        if self.beyond_max_len == "zero":
            beta = torch.where(pos < self.max_len, beta, 0.0)
        return self.dim_head * rearrange(beta, "k b n -> b k n")

    def _check_state(self, state: Any, batch: int) -> TSSAState:
        if not isinstance(state, TSSAState):
            raise TypeError(f"state must be a TSSAState, got {type(state).__name__}")
        k, p = self.heads, self.dim_head
        want = {"sum_w2": (batch, k, p), "sum_pi_w2": (batch, k, p), "sum_pi": (batch, k)}
        got = {name: tuple(getattr(state, name).shape) for name in want}
        if got != want or tuple(state.position.shape) != (batch,):
            raise ValueError(f"state must match batch {batch} and this layer: {want}, got {got}")
        return state

    def scan(
        self, x: Tensor, state: TSSAState, *, src_key_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, TSSAState]:
        """Process a chunk of tokens after ``state`` (unchanged by an empty chunk).

        Args:
            x: Normalised tokens of the chunk.
            state: The state after the previous chunk (:meth:`init_state` for the first).
            src_key_padding_mask: Tokens to leave out of the statistics (``True`` = ignore).

        Returns:
            ``(y, new_state)``.

        Raises:
            NonFiniteError: NaN or inf in ``x`` (eager mode), which would poison the state.

        Shape:
            - x: ``(B, N, dim)``; output: ``(B, N, dim)``
        """
        check_tokens(x, self.dim, ndim=3)
        return self._scan(x, state, src_key_padding_mask, "x")

    def _scan(
        self, x: Tensor, state: TSSAState, mask: Any, name: str | None
    ) -> tuple[Tensor, TSSAState]:
        """:meth:`scan` of checked tokens; ``name``: check them finite under that name."""
        mask = check_padding(mask, x, "src_key_padding_mask")
        self._check_state(state, x.shape[0])
        if name is not None:
            check_finite(x, name)
        w = self._split(x)  # (B, K, N, p)
        sdtype = state.sum_w2.dtype
        with torch.autocast(device_type=w.device.type, enabled=False):
            valid = None if mask is None else (~mask).to(sdtype)[:, None, :, None]
            bias = self._bias(state.position, x.shape[1], sdtype)
            y, pi, new_state = _causal_tssa(
                w.to(sdtype), self.temperature.to(sdtype), bias, state, self.decay, valid
            )
        return self._output(y, pi, w.dtype), new_state

    def forward(self, x: Tensor, *, src_key_padding_mask: Tensor | None = None) -> Tensor:
        """Causal TSSA over a whole sequence from an empty state (see :meth:`scan`)."""
        check_tokens(x, self.dim, ndim=3)
        state = self.init_state(x.shape[0], device=x.device)
        return self._scan(x, state, src_key_padding_mask, None)[0]  # no state kept: no sync

    def step(self, state: TSSAState, x_t: Tensor) -> tuple[Tensor, TSSAState]:
        """Consume one token per sequence: :math:`O(D)` work on the statistics, :math:`O(D^2)` maps.

        Args:
            state: The current state.
            x_t: The next (normalised) token of each sequence.

        Returns:
            ``(y_t, new_state)``.

        Raises:
            NonFiniteError: NaN or inf in ``x_t`` (eager mode), which would poison the state.

        Shape:
            - x_t: ``(B, dim)``; y_t: ``(B, dim)``
        """
        check_tokens(x_t, self.dim, "x_t", ndim=2)
        y, new_state = self._scan(x_t[:, None, :], state, None, "x_t")
        return y[:, 0], new_state

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, max_len={self.max_len}, "
            f"beyond_max_len={self.beyond_max_len!r}, decay={self.decay}"
        )


class ToSTBlock(nn.Module):
    r"""ToST block: pre-norm TSSA and MLP, each with a residual and LayerScale.

    Official ``Block`` (GELU MLP). With a :class:`CausalTSSA` the block streams (:meth:`step`,
    :meth:`scan`): only the attention carries a state.

    Args:
        dim: Token dimension.
        heads: Heads of the default attention (ignored when ``attn`` is given).
        attn: The token mixer, e.g. :class:`CausalTSSA`; default ``TSSA(dim, heads=heads)``.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        layer_scale_init: Initial LayerScale, or ``None`` for none.
        norm_eps: LayerNorm epsilon.
        dropout: Dropout inside the MLP and on its output (training only).

    Shape:
        - x: ``(B, N, dim)``; src_key_padding_mask: ``(B, N)`` boolean, ``True`` = ignore
        - output: ``(B, N, dim)``

    Example:
        >>> from jepa_blocks.blocks.tost import CausalTSSA, ToSTBlock
        >>> block = ToSTBlock(64, attn=CausalTSSA(64, heads=4))
        >>> y_t, state = block.step(block.init_state(2), torch.randn(2, 64))
        >>> y_t.shape
        torch.Size([2, 64])
    """

    def __init__(
        self,
        dim: int,
        *,
        heads: int = 4,
        attn: nn.Module | None = None,
        mlp_ratio: float = 4.0,
        layer_scale_init: float | None = 1.0,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim")
        attn = TSSA(dim, heads=heads) if attn is None else attn
        if not isinstance(attn, nn.Module):
            raise TypeError(f"attn must be an nn.Module, got {type(attn).__name__}")
        attn_dim = getattr(attn, "dim", dim)
        if attn_dim != dim:
            raise ValueError(f"attn.dim must equal dim={dim}, got attn.dim={attn_dim}")
        hidden = max(1, round(check_positive(mlp_ratio, "mlp_ratio") * dim))
        self.norm_eps = check_positive(norm_eps, "norm_eps")
        self.dropout = check_probability(dropout, "dropout")
        self.norm1 = nn.LayerNorm(dim, eps=self.norm_eps)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=self.norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(self.dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(self.dropout),
        )
        self.gamma1, self.gamma2 = layer_scales(dim, layer_scale_init, "layer_scale_init")
        self.layer_scale_init = None if layer_scale_init is None else float(layer_scale_init)

    def _residuals(self, x: Tensor, h: Tensor) -> Tensor:
        """The block output from its input ``x`` and the attention output ``h``."""
        x = x + scaled(self.gamma1, h)
        return x + scaled(self.gamma2, self.mlp(self.norm2(x)))

    def forward(self, x: Tensor, *, src_key_padding_mask: Tensor | None = None) -> Tensor:
        """Apply the block."""
        check_tokens(x, self.dim)
        h = self.attn(self.norm1(x), src_key_padding_mask=src_key_padding_mask)
        return self._residuals(x, h)

    def _streaming_attn(self) -> CausalTSSA:
        if not isinstance(self.attn, CausalTSSA):
            raise TypeError(
                f"streaming needs a causal attention (CausalTSSA), got {type(self.attn).__name__}"
            )
        return self.attn

    def init_state(self, batch: int, **kwargs: Any) -> TSSAState:
        """The attention's empty state (see :meth:`CausalTSSA.init_state`)."""
        return self._streaming_attn().init_state(batch, **kwargs)

    def scan(
        self, x: Tensor, state: TSSAState, *, src_key_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, TSSAState]:
        """Process a chunk ``(B, N, dim)`` after ``state`` (see :meth:`CausalTSSA.scan`)."""
        attn = self._streaming_attn()
        check_tokens(x, self.dim, ndim=3)
        h, state = attn.scan(self.norm1(x), state, src_key_padding_mask=src_key_padding_mask)
        return self._residuals(x, h), state

    def step(self, state: TSSAState, x_t: Tensor) -> tuple[Tensor, TSSAState]:
        """Consume one token ``(B, dim)`` per sequence (see :meth:`CausalTSSA.step`)."""
        attn = self._streaming_attn()
        h, state = attn.step(state, self.norm1(check_tokens(x_t, self.dim, "x_t", ndim=2)))
        return self._residuals(x_t, h), state

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay: the attention temperature."""
        return {"attn.temperature"} if hasattr(self.attn, "temperature") else set()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, layer_scale_init={self.layer_scale_init}"


_Call = Callable[[ToSTBlock, Tensor, TSSAState], tuple[Tensor, TSSAState]]


class ToSTStack(nn.ModuleList):
    """A stack of :class:`ToSTBlock` (e.g. the ``blocks`` of :class:`jepa_blocks.seq.Aggregator`).

    With causal attention it streams with one :class:`TSSAState` per layer.

    Args:
        blocks: The blocks, each ``(B, N, D) → (B, N, D)``.

    Shape:
        - x: ``(B, N, D)``; x_t: ``(B, D)``; output: as the input
    """

    def __init__(self, blocks: Iterable[nn.Module]) -> None:
        block_list = list(blocks)
        for i, b in enumerate(block_list):
            if not isinstance(b, nn.Module):
                raise TypeError(f"blocks[{i}] must be an nn.Module, got {type(b).__name__}")
        super().__init__(block_list)

    def forward(self, x: Tensor, *, src_key_padding_mask: Tensor | None = None) -> Tensor:
        """Apply the blocks in order."""
        for block in self:
            x = block(x, src_key_padding_mask=src_key_padding_mask)
        return x

    def _streaming_blocks(self) -> list[ToSTBlock]:
        blocks = []
        for i, block in enumerate(self):
            if not isinstance(block, ToSTBlock):
                raise TypeError(
                    f"streaming needs ToSTBlock layers, blocks[{i}] is {type(block).__name__}"
                )
            blocks.append(block)
        return blocks

    def init_state(self, batch: int, **kwargs: Any) -> tuple[TSSAState, ...]:
        """One empty state per layer (keywords as :meth:`CausalTSSA.init_state`)."""
        return tuple(block.init_state(batch, **kwargs) for block in self._streaming_blocks())

    def _through(self, x: Tensor, states: Any, call: _Call) -> tuple[Tensor, tuple[TSSAState, ...]]:
        """Thread ``x`` and one state per block through ``call(block, x, state)``."""
        if not isinstance(states, (tuple, list)) or len(states) != len(self):
            raise ValueError(f"states must be a sequence of {len(self)} per-layer states")
        new = []
        for block, state in zip(self._streaming_blocks(), states):
            x, state = call(block, x, state)
            new.append(state)
        return x, tuple(new)

    def scan(
        self,
        x: Tensor,
        states: tuple[TSSAState, ...],
        *,
        src_key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, tuple[TSSAState, ...]]:
        """Process a chunk after ``states``; return the outputs and the new states."""
        return self._through(
            x, states, lambda b, x, s: b.scan(x, s, src_key_padding_mask=src_key_padding_mask)
        )

    def step(
        self, states: tuple[TSSAState, ...], x_t: Tensor
    ) -> tuple[Tensor, tuple[TSSAState, ...]]:
        """Consume one token per sequence through every layer."""
        return self._through(x_t, states, lambda b, x, s: b.step(s, x))


def tost_blocks(
    dim: int,
    *,
    depth: int = 3,
    heads: int = 4,
    mlp_ratio: float = 4.0,
    causal: bool = False,
    max_len: int | None = None,
    beyond_max_len: BeyondMaxLen = "clamp",
    decay: float | None = None,
    layer_scale_init: float | None = None,
    norm_eps: float | None = None,
    qkv_bias: bool = True,
    memory_efficient: bool = False,
    dropout: float = 0.0,
) -> ToSTStack:
    """A stack of ToST blocks for the seq-JEPA aggregator (drop-in for ``transformer_blocks``).

    With ``causal=True`` it streams; its output at position 0 (the [AGG] of the aggregator) then
    sees only that token.

    Args:
        dim: Token dimension, divisible by ``heads``.
        depth: Number of blocks.
        heads: TSSA heads.
        mlp_ratio: MLP width multiple.
        causal: Use :class:`CausalTSSA` (streaming) instead of :class:`TSSA`.
        max_len, beyond_max_len, decay: Of :class:`CausalTSSA`.
        layer_scale_init: ``None``: official presets, 1e-5 if causal or ``depth > 12``, else 1.0.
        norm_eps: LayerNorm epsilon; ``None``: official, 1e-5 if causal, else 1e-6.
        qkv_bias: Bias on the TSSA input projection.
        memory_efficient: Recomputing backward for the vision :class:`TSSA`.
        dropout: MLP dropout.

    Returns:
        A :class:`ToSTStack` of ``depth`` independently initialised blocks.

    Shape:
        - each block: ``(B, N, dim)`` → ``(B, N, dim)``
    """
    check_int(depth, "depth")
    check_bool(causal, "causal")
    if layer_scale_init is None:
        layer_scale_init = 1e-5 if (causal or depth > 12) else 1.0
    if norm_eps is None:
        norm_eps = 1e-5 if causal else 1e-6

    def attn() -> nn.Module:
        if causal:
            return CausalTSSA(
                dim,
                heads=heads,
                qkv_bias=qkv_bias,
                max_len=max_len,
                beyond_max_len=beyond_max_len,
                decay=decay,
            )
        return TSSA(dim, heads=heads, qkv_bias=qkv_bias, memory_efficient=memory_efficient)

    return ToSTStack(
        ToSTBlock(
            dim,
            attn=attn(),
            mlp_ratio=mlp_ratio,
            layer_scale_init=layer_scale_init,
            norm_eps=norm_eps,
            dropout=dropout,
        )
        for _ in range(depth)
    )
