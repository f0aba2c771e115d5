r"""A streaming ToST aggregator for seq-JEPA: causal TSSA blocks with an :math:`O(D)` state.

:class:`ToSTAggregator` (causal ToST blocks, Wu et al., ICLR 2025) is trained like
:class:`jepa_blocks.seq.Aggregator` and streams one token at a time with the same values (see
:doc:`tutorials/step4` for the read-outs and seq-JEPA's pending last token).
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

from jepa_blocks._validation import check_bool, check_choice, check_floating_tensor, check_int
from jepa_blocks.blocks._heads import check_finite, check_padding, check_tokens
from jepa_blocks.blocks.tost import (
    BeyondMaxLen,
    CausalTSSA,
    ToSTBlock,
    ToSTStack,
    TSSAState,
    tost_blocks,
)

#: How a streaming state is read out.
StreamReadout = Literal["mean", "agg", "last"]
#: Read-outs of :class:`ToSTAggregator`.
READOUTS: tuple[StreamReadout, ...] = get_args(StreamReadout)
#: Floor of the read-out weight sum (an empty state reads as the norm of a zero vector).
COUNT_EPS = 1e-12

__all__ = [
    "READOUTS",
    "AggregateStream",
    "ToSTAggregator",
    "ToSTAggregatorState",
    "stream_aggregates",
]


class ToSTAggregatorState(NamedTuple):
    r"""Streaming state of a :class:`ToSTAggregator`, float32 (float64 for a float64 module).

    Attributes:
        layers: One :class:`~jepa_blocks.blocks.tost.TSSAState` per block.
        out_sum: Running (decayed) sum of the last block's outputs, ``(B, D)`` (``"mean"``).
        out_weight: Running (decayed) number of tokens, ``(B,)`` (``"mean"``).
        last: The last block's output at the latest token, ``(B, D)`` (``"last"``).
    """

    layers: tuple[TSSAState, ...]
    out_sum: Tensor
    out_weight: Tensor
    last: Tensor

    @property
    def position(self) -> Tensor:
        """Tokens consumed so far, ``(B,)`` int64."""
        return self.layers[0].position

    def numel_per_sequence(self) -> int:
        """Numbers held per sequence (the position counters included): constant in the length."""
        tensors = [*self.layers[0]] if self.layers else []
        per_layer = sum(t[0].numel() for t in tensors)
        return len(self.layers) * per_layer + self.out_sum[0].numel() + 1 + self.last[0].numel()

    def nbytes(self) -> int:
        """Bytes of the whole state (all sequences)."""
        tensors = [*(t for layer in self.layers for t in layer), *self[1:]]
        return sum(t.numel() * t.element_size() for t in tensors)


class _Summary(NamedTuple):
    out_sum: Tensor  # (B, D) Σ_t λ^{n-1-t} v_t h_t
    weight: Tensor  # (B,) Σ_t λ^{n-1-t} v_t
    last: Tensor  # (B, D) h at the last valid token (zeros if none)
    has_valid: Tensor  # (B,) bool
    carry: float  # λ^n, the factor applied to the previous sums


def _summarise(
    h: Tensor, valid: Tensor | None, decay: float | None, dtype: torch.dtype
) -> _Summary:
    """Weighted sum, weight and last valid output of a chunk ``h`` ``(B, n, D)``."""
    b, n, _ = h.shape
    hc = h.to(dtype)
    t = torch.arange(n, device=h.device, dtype=dtype)
    if decay is None:
        weights = torch.ones(n, device=h.device, dtype=dtype)
        carry = 1.0
    else:
        weights = torch.exp((n - 1 - t) * math.log(decay))  # λ^{n-1-t}
        carry = decay**n
    w = weights.expand(b, n) if valid is None else weights * valid.to(dtype)
    out_sum = torch.einsum("bn,bnd->bd", w, hc)
    count = w.sum(-1)
    if valid is None:
        last = hc[:, -1]
        has_valid = torch.ones(b, device=h.device, dtype=torch.bool)
    else:
        rank = valid.to(torch.long) * torch.arange(1, n + 1, device=h.device)  # 0 = padded
        idx = rank.amax(-1)  # (B,) 1-based index of the last valid token, 0 if none
        has_valid = idx > 0
        pick = (idx - 1).clamp_min(0)[:, None, None].expand(b, 1, hc.shape[-1])
        last = hc.gather(1, pick)[:, 0] * has_valid[:, None].to(dtype)
    return _Summary(out_sum, count, last, has_valid, carry)


class ToSTAggregator(nn.Module):
    r"""seq-JEPA aggregator made of causal ToST blocks, with a streaming state (ToST, ICLR 2025).

    :meth:`forward` is the call of :class:`jepa_blocks.seq.Aggregator`; a stream uses
    :meth:`init_state`, :meth:`push` or :meth:`scan`, and :meth:`read`. Padded tokens (trailing)
    are left out of every statistic and of the read-out, but still advance the position and age
    the sums.

    Args:
        dim: Token dimension (encoder + action embedding), divisible by ``heads``.
        readout: ``"mean"`` (mean of the last block's outputs, weights :math:`\lambda^{n-1-t}`),
            ``"agg"`` (a learnable token after the tokens) or ``"last"`` (the last output).
        decay: Forgetting factor λ in (0, 1] of the statistics and of the ``"mean"`` read-out.
        layer_scale_init: Initial LayerScale; ``None``: the causal preset 1e-5.
        final_norm: Apply ``LayerNorm(dim)`` to the read-out (as the paper aggregator).
        depth, heads, mlp_ratio, max_len, beyond_max_len, qkv_bias, dropout: As
            :func:`~jepa_blocks.blocks.tost.tost_blocks` with ``causal=True``.

    Shape:
        - tokens: ``(B, N, dim)``; padding_mask: ``(B, N)`` boolean, ``True`` = ignore
        - token (:meth:`push`), pending (:meth:`read`) and output: ``(B, dim)``

    Example:
        >>> from jepa_blocks.seq.streaming_aggregator import ToSTAggregator
        >>> agg, tokens = ToSTAggregator(dim=32, depth=2, heads=4).eval(), torch.randn(3, 7, 32)
        >>> state = agg.scan(agg.init_state(3), tokens[:, :6])
        >>> torch.allclose(agg.read(state, pending=tokens[:, 6]), agg(tokens), atol=1e-5)
        True
    """

    agg_token: nn.Parameter | None

    def __init__(
        self,
        *,
        dim: int,
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        readout: StreamReadout = "mean",
        max_len: int | None = None,
        beyond_max_len: BeyondMaxLen = "clamp",
        decay: float | None = None,
        layer_scale_init: float | None = 1.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim")
        self.readout = check_choice(readout, "readout", READOUTS)
        check_bool(final_norm, "final_norm")
        self.blocks: ToSTStack = tost_blocks(
            dim=dim,
            depth=depth,
            heads=heads,
            mlp_ratio=mlp_ratio,
            causal=True,
            max_len=max_len,
            beyond_max_len=beyond_max_len,
            decay=decay,
            layer_scale_init=layer_scale_init,
            qkv_bias=qkv_bias,
            dropout=dropout,
        )
        first = self.blocks[0].attn
        assert isinstance(first, CausalTSSA)
        #: The normalised forgetting factor (``None`` for none), shared by every layer.
        self.decay: float | None = first.decay
        if readout == "agg":
            #: The learnable read-out token, placed after the tokens (``"agg"`` only).
            self.agg_token = nn.Parameter(torch.empty(1, 1, dim))
            nn.init.trunc_normal_(self.agg_token, std=0.02)
        else:
            self.register_parameter("agg_token", None)
        self.norm: nn.Module = nn.LayerNorm(dim) if final_norm else nn.Identity()

    def _state_dtype(self) -> torch.dtype:
        first = self.blocks[0].attn
        assert isinstance(first, CausalTSSA)
        return torch.promote_types(first.qkv.weight.dtype, torch.float32)

    def _check_state(self, state: Any, batch: int | None = None) -> ToSTAggregatorState:
        if not isinstance(state, ToSTAggregatorState):
            raise TypeError(f"state must be a ToSTAggregatorState, got {type(state).__name__}")
        if len(state.layers) != len(self.blocks):
            raise ValueError(
                f"state has {len(state.layers)} layer states, the aggregator {len(self.blocks)}"
            )
        if batch is not None and tuple(state.out_sum.shape) != (batch, self.dim):
            raise ValueError(
                f"state is for out_sum of shape {tuple(state.out_sum.shape)}, expected a batch of "
                f"{batch} and dim {self.dim}"
            )
        return state

    def _agg_tokens(self, batch: int, dtype: torch.dtype) -> Tensor:
        assert self.agg_token is not None
        return self.agg_token.expand(batch, -1, -1).to(dtype)

    def _pooled(self, out_sum: Tensor, count: Tensor, last: Tensor) -> Tensor:
        if self.readout == "mean":
            return out_sum / count.clamp_min(COUNT_EPS)[:, None]
        return last

    def forward(self, tokens: Tensor, *, padding_mask: Tensor | None = None) -> Tensor:
        r"""Return :math:`z_\text{AGG}` of whole sequences ``(B, N, dim)`` (the training path).

        Args:
            tokens: The tokens :math:`u_1, \dots, u_N` in order.
            padding_mask: Optional ``(B, N)``, ``True`` for padded (unobserved) tokens.

        Shape:
            - output: ``(B, dim)``
        """
        check_tokens(tokens, self.dim, "tokens", ndim=3)
        mask = check_padding(padding_mask, tokens, "padding_mask")
        b = tokens.shape[0]
        x = tokens
        if self.agg_token is not None:
            x = torch.cat([x, self._agg_tokens(b, x.dtype)], dim=1)
            if mask is not None:
                mask = torch.cat([mask, mask.new_zeros(b, 1)], dim=1)
        h = self.blocks(x, src_key_padding_mask=mask)
        if self.agg_token is not None:
            return self.norm(h[:, -1])
        valid = None if mask is None else ~mask
        s = _summarise(h, valid, self.decay, self._state_dtype())
        return self.norm(self._pooled(s.out_sum, s.weight, s.last).to(h.dtype))

    def init_state(
        self,
        batch: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> ToSTAggregatorState:
        """The zero state for ``batch ≥ 1`` sequences (arguments as ``CausalTSSA.init_state``)."""
        layers = self.blocks.init_state(batch, device=device, dtype=dtype)
        new = layers[0].sum_pi.new_zeros  # the device and dtype of the layer states
        return ToSTAggregatorState(layers, new(batch, self.dim), new(batch), new(batch, self.dim))

    def scan(
        self, state: ToSTAggregatorState, tokens: Tensor, *, padding_mask: Tensor | None = None
    ) -> ToSTAggregatorState:
        """Return the state after consuming a chunk of tokens (``state`` is not modified).

        Args:
            state: The state after the previous tokens (:meth:`init_state` for none).
            tokens: The next tokens, in order.
            padding_mask: Optional, ``True`` for tokens to leave out.

        Raises:
            NonFiniteError: NaN or inf in ``tokens`` (eager mode), which would poison the state.

        Shape:
            - tokens: ``(B, N, dim)``; padding_mask: ``(B, N)``
        """
        return self._scan(state, check_tokens(tokens, self.dim, "tokens", ndim=3), padding_mask)

    def _scan(
        self, state: ToSTAggregatorState, tokens: Tensor, padding_mask: Any, name: str = "tokens"
    ) -> ToSTAggregatorState:
        mask = check_padding(padding_mask, tokens, "padding_mask")
        self._check_state(state, tokens.shape[0])
        check_finite(tokens, name)
        if tokens.shape[1] == 0:
            return state
        h, layers = self.blocks.scan(tokens, state.layers, src_key_padding_mask=mask)
        valid = None if mask is None else ~mask
        dtype = state.out_sum.dtype
        with torch.autocast(device_type=h.device.type, enabled=False):
            s = _summarise(h, valid, self.decay, dtype)
            last = torch.where(s.has_valid[:, None], s.last, state.last)
            return ToSTAggregatorState(
                layers=layers,
                out_sum=s.carry * state.out_sum + s.out_sum,
                out_weight=s.carry * state.out_weight + s.weight,
                last=last,
            )

    def push(self, state: ToSTAggregatorState, token: Tensor) -> ToSTAggregatorState:
        """Return the state after one more token ``(B, dim)`` per sequence (constant cost)."""
        check_tokens(token, self.dim, "token", ndim=2)
        return self._scan(state, token[:, None, :], None, "token")

    def read(self, state: ToSTAggregatorState, *, pending: Tensor | None = None) -> Tensor:
        r"""Return :math:`z_\text{AGG}` as :meth:`forward` of the consumed tokens (and ``pending``).

        Args:
            state: The current state (not modified).
            pending: An optional last token, peeked (seq-JEPA's :math:`[z_M; 0]`), not committed.

        Shape:
            - pending: ``(B, dim)``; output: ``(B, dim)``
        """
        self._check_state(state)
        if pending is not None:
            pending = check_tokens(pending, self.dim, "pending", ndim=2)
            state = self._scan(state, pending[:, None, :], None, "pending")
        if self.agg_token is None:
            with torch.autocast(device_type=state.out_sum.device.type, enabled=False):
                return self.norm(self._pooled(state.out_sum, state.out_weight, state.last))
        b = state.out_sum.shape[0]
        h, _ = self.blocks.scan(self._agg_tokens(b, self.agg_token.dtype), state.layers)
        return self.norm(h[:, -1])

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay: TSSA temperatures and the read-out token."""
        names = {
            f"blocks.{i}.{n}"
            for i, block in enumerate(self.blocks)
            if isinstance(block, ToSTBlock)
            for n in block.no_weight_decay()
        }
        if self.agg_token is not None:
            names.add("agg_token")
        return names

    def extra_repr(self) -> str:
        return f"dim={self.dim}, readout={self.readout!r}, decay={self.decay}"


class AggregateStream:
    r"""Streaming seq-JEPA context: views arrive one at a time; read :math:`z_\text{AGG}` any time.

    :meth:`observe` keeps the newest encoding pending (token :math:`[z_M; 0]`) and commits it,
    :math:`[z_i; e(a_i)]`, when the next action arrives: after :math:`M` views :meth:`read` equals
    ``model.aggregate(z[:, :M], actions[:, :M])``. Use eval mode (the action encoder's BatchNorm).

    Args:
        aggregator: The :class:`ToSTAggregator`.
        batch: Number of parallel streams ``B``.
        action_encoder: :math:`e` of the committed tokens (``None``: ``condition_tokens=False``).
        predictor: Optional predictor for :meth:`predict` (input :math:`[z_\text{AGG}; e(a)]`).
        predictor_action_encoder: The :math:`e` of the predictor input (``None``: no action).
        device: Device of the state (default: the aggregator's).

    Shape:
        - z (for :meth:`observe`): ``(B, D)``; action: ``(B, A)``; :meth:`read`: ``(B, dim)``
    """

    def __init__(
        self,
        aggregator: ToSTAggregator,
        *,
        batch: int,
        action_encoder: nn.Module | None = None,
        predictor: nn.Module | None = None,
        predictor_action_encoder: nn.Module | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(aggregator, ToSTAggregator):
            raise TypeError(f"aggregator must be a ToSTAggregator, got {type(aggregator).__name__}")
        self.aggregator = aggregator
        self.batch = check_int(batch, "batch")
        for name, module in (
            ("action_encoder", action_encoder),
            ("predictor", predictor),
            ("predictor_action_encoder", predictor_action_encoder),
        ):
            if module is not None and not callable(module):
                raise TypeError(f"{name} must be callable, got {type(module).__name__}")
        self.action_encoder = action_encoder
        self.predictor = predictor
        self.predictor_action_encoder = predictor_action_encoder
        self.state = aggregator.init_state(batch, device=device)
        self.pending: Tensor | None = None
        self.num_observed = 0

    @classmethod
    def from_model(cls, model: nn.Module, *, batch: int, **kwargs: Any) -> AggregateStream:
        """A stream for an eval-mode :class:`~jepa_blocks.seq.SeqJEPA` with a ToSTAggregator.

        Args:
            model: The model, whose action encoder and predictor the stream uses.
            batch: Number of parallel streams.
            **kwargs: Further arguments of :class:`AggregateStream` (``device``).
        """
        aggregator = getattr(model, "aggregator", None)
        if not isinstance(aggregator, ToSTAggregator):
            raise TypeError(
                f"model.aggregator must be a ToSTAggregator, got {type(aggregator).__name__}"
            )
        encoder = getattr(model, "action_encoder", None)
        tokens_e = encoder if getattr(model, "condition_tokens", True) else None
        pred_e = encoder if getattr(model, "condition_predictor", True) else None
        return cls(
            aggregator,
            batch=batch,
            action_encoder=tokens_e,
            predictor=getattr(model, "predictor", None),
            predictor_action_encoder=pred_e,
            **kwargs,
        )

    def _token(self, z: Tensor, action: Tensor | None) -> Tensor:
        if self.action_encoder is None:
            return z
        if action is None:
            e_dim = self.aggregator.dim - z.shape[-1]
            return torch.cat([z, z.new_zeros(z.shape[0], e_dim)], dim=-1)
        return torch.cat([z, self.action_encoder(action).to(z.dtype)], dim=-1)

    def _check_action(self, action: Any) -> None:
        check_floating_tensor(action, "action", min_ndim=2, shape_doc="(B, A)")
        if action.ndim != 2 or action.shape[0] != self.batch:
            raise ValueError(f"action must have shape ({self.batch}, A), got {tuple(action.shape)}")
        check_finite(action, "action")

    def observe(self, z: Tensor, action: Tensor | None = None) -> None:
        """Add the next view's encoding ``z``.

        Args:
            z: Encoding of the new view.
            action: The action from the previous view (needed after view 1 if tokens carry one).

        Raises:
            NonFiniteError: NaN or inf in ``z`` or ``action``; the stream is left unchanged.
        """
        check_floating_tensor(z, "z", min_ndim=2, shape_doc="(B, D)")
        dim, prev, enc = self.aggregator.dim, self.pending, self.action_encoder
        wide = z.shape[1] >= dim if enc is not None else z.shape[1] != dim
        same = prev is None or z.shape == prev.shape
        if z.ndim != 2 or z.shape[0] != self.batch or wide or not same:
            want = f"D < {dim}" if enc is not None else f"D = {dim}"
            raise ValueError(
                f"z must have shape ({self.batch}, D), {want}, as before, got {z.shape}"
            )
        check_finite(z, "z")
        if prev is not None:
            if self.action_encoder is not None:
                if action is None:
                    raise ValueError("action (previous view → this view) is required after view 1")
                self._check_action(action)
            self.state = self.aggregator.push(self.state, self._token(prev, action))
        self.pending = z
        self.num_observed += 1

    def read(self) -> Tensor:
        r"""Return :math:`z_\text{AGG}` ``(B, dim)`` of the views observed so far."""
        pending = None if self.pending is None else self._token(self.pending, None)
        return self.aggregator.read(self.state, pending=pending)

    def predict(self, action: Tensor | None = None) -> Tensor:
        r"""Predict :math:`\hat z = h([z_\text{AGG}; e(a)])` for the view reached by ``action``.

        Args:
            action: The action from the latest view (``None`` if the predictor takes none).

        Shape:
            - action: ``(B, A)``; output: ``(B, D)``
        """
        if self.predictor is None:
            raise ValueError("this stream has no predictor (build it with from_model)")
        z_agg = self.read()
        if self.predictor_action_encoder is None or action is None:
            return self.predictor(z_agg)
        self._check_action(action)
        e = self.predictor_action_encoder(action).to(z_agg.dtype)
        return self.predictor(torch.cat([z_agg, e], dim=-1))

    def state_nbytes(self) -> int:
        """Bytes held by the stream: the aggregator state plus the pending encoding."""
        pending = 0 if self.pending is None else self.pending.numel() * self.pending.element_size()
        return self.state.nbytes() + pending


def stream_aggregates(model: nn.Module, z: Tensor, actions: Tensor) -> Tensor:
    r""":math:`z_\text{AGG}` after every prefix, streaming the views one at a time.

    ``out[:, m-1]`` equals ``model.aggregate(z[:, :m], actions[:, :m])`` (eval mode), in one pass.

    Args:
        model: A :class:`~jepa_blocks.seq.SeqJEPA` with a :class:`ToSTAggregator` (eval mode).
        z: Encodings of the views, in order.
        actions: ``actions[:, i]`` leads from view ``i`` to view ``i+1`` (``M - 1`` suffice).

    Shape:
        - z: ``(B, M, D)``; actions: ``(B, M, A)`` or ``(B, M-1, A)``; output: ``(B, M, dim)``
    """
    check_floating_tensor(z, "z", min_ndim=3, shape_doc="(B, M, D)")
    if z.ndim != 3:
        raise ValueError(f"z must have shape (B, M, D), got {tuple(z.shape)}")
    b, m = z.shape[:2]
    stream = AggregateStream.from_model(model, batch=b, device=z.device)
    if stream.action_encoder is not None:
        check_floating_tensor(actions, "actions", min_ndim=3, shape_doc="(B, M, A)")
        if actions.ndim != 3 or actions.shape[0] != b or actions.shape[1] < m - 1:
            raise ValueError(
                f"actions must have shape (B, M, A) or (B, M-1, A) with B={b}, M={m}, "
                f"got {tuple(actions.shape)}"
            )
    outs = []
    for i in range(m):
        action = None if i == 0 or stream.action_encoder is None else actions[:, i - 1]
        stream.observe(z[:, i], action)
        outs.append(stream.read())
    return torch.stack(outs, dim=1)
