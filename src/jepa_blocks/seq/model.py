r"""seq-JEPA: predict the next view's embedding from a sequence of views and the actions between them.

Ghaemi, Muller, Bakhtiari (2025), "seq-JEPA: Autoregressive Predictive Learning of
Invariant-Equivariant World Models", arXiv:2505.03176 (NeurIPS 2025); official code
``hafezgh/seq-jepa`` (``src/models.py``, ``SeqJEPA_Transforms``). One training step
(``docs/model.rst`` and the design notes):

.. code-block:: text

    views (B, M+1, *obs), actions (B, M, A); a_i maps view i to view i+1
    z     = encoder(views[:, :M])                        (B, M, D)
    z̄     = target(views[:, M])                          (B, D)   no gradient
    u_i   = [z_i ; e(a_i)] for i < M,  u_M = [z_M ; 0]   (B, M, D+E)
    z_agg = aggregator([AGG], u_1..u_M)                  (B, D+E)
    ẑ     = predictor([z_agg ; e(a_M)])                  (B, D)
    loss  = prediction_loss(ẑ, z̄) − λ·rate(z_agg and/or z)

The invariant representation is ``z_agg``; the equivariant one is ``z``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Literal, NamedTuple, get_args

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import TypeVar

from jepa_blocks._validation import (
    check_bool,
    check_choice,
    check_finite,
    check_floating_tensor,
    check_int,
    check_positive,
)
from jepa_blocks.losses import CosineLoss, linear_warmup, regularized_objective
from jepa_blocks.seq.actions import ActionEncoder
from jepa_blocks.seq.aggregator import Aggregator, transformer_blocks
from jepa_blocks.seq.predictor import Predictor, PredictorNorm
from jepa_blocks.seq.symmetric import negate_actions
from jepa_blocks.targets import Target

__all__ = ["SeqJEPA", "SeqJEPAOutput"]

RegularizeOn = Literal["z_agg", "z", "both"]
RegularizerKind = Literal["rate", "penalty"]
LastTokenAction = Literal["action", "zeros"]
PredictorAction = Literal["separate", "shared"]
#: The target's type: ``model.target`` of a ``SeqJEPA[EMATarget]`` is an ``EMATarget``.
TargetT = TypeVar("TargetT", bound=Target, default=Target)


class SeqJEPAOutput(NamedTuple):
    """What :meth:`SeqJEPA.forward` returns.

    Attributes:
        loss: The objective to minimise, ``prediction_loss − rate_weight · rate``, shape ``()``.
        prediction_loss: The prediction loss (``symmetric=True``: mean of both directions), ``()``.
        z_agg: Aggregate (invariant) representation of the forward sequence, ``(B, D+E)``.
        z: Encoder (equivariant) representations of the observed views, ``(B, M, D)``.
        prediction: Predicted target embedding of the forward task, ``(B, D)``.
        target: Detached target of the forward task (after ``target_transform``), ``(B, D)``.
        rate: Total rate ``rate_z_agg + rate_z`` (``None`` without a regularizer), ``()``.
        rate_z_agg: Rate of ``z_agg`` (``None`` unless regularised), ``()``.
        rate_z: Rate of the flattened ``z`` (``None`` unless regularised), ``()``.
        rate_weight: :math:`\\lambda` after warm-up (``None`` without a regularizer), ``()``.
        reverse_loss: Prediction loss of the reverse task (``None`` unless symmetric), ``()``.
    """

    loss: Tensor
    prediction_loss: Tensor
    z_agg: Tensor
    z: Tensor
    prediction: Tensor
    target: Tensor
    rate: Tensor | None = None
    rate_z_agg: Tensor | None = None
    rate_z: Tensor | None = None
    rate_weight: Tensor | None = None
    reverse_loss: Tensor | None = None


def _shape(x: Any) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def declared_dim(module: Any, name: str) -> int | None:
    """``module.name`` if it is an int (a declared dimension), else ``None``."""
    value = getattr(module, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _infer_dim(encoder: nn.Module, obs_shape: Any, pool: Any) -> int:
    """The encoder's output dimension: a declared attribute, else a dry run on ``obs_shape``."""
    for name in ("out_dim", "embed_dim", "dim"):
        d = declared_dim(encoder, name)
        if d is not None:
            return d
    if obs_shape is None:
        raise ValueError(
            f"cannot infer encoder_dim: {type(encoder).__name__} declares no out_dim/embed_dim/"
            "dim; pass encoder_dim, or obs_shape for a dry run"
        )
    if not all(isinstance(s, int) and s >= 1 for s in obs_shape):
        raise ValueError(f"obs_shape must be a tuple of ints >= 1, got {obs_shape!r}")
    param = next(encoder.parameters(), None)
    x = torch.zeros(2, *obs_shape, device=param.device if param is not None else None)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            z = encoder(x)
            if z.ndim == 3 and pool is not None:
                z = pool(z)
    finally:
        encoder.train(was_training)
    if z.ndim != 2:
        raise ValueError(
            f"the encoder returns shape {tuple(z.shape)} for obs_shape {tuple(obs_shape)}; "
            "SeqJEPA needs (N, D) vectors (pass pool=TokenPool(...) for (N, T, D) tokens)"
        )
    return int(z.shape[-1])


class SeqJEPA(nn.Module, Generic[TargetT]):
    r"""seq-JEPA assembled from parts: encoder, target, action encoder, aggregator, predictor.

    ``views`` holds :math:`x_1, \dots, x_{M+1}` (the last is the target), ``actions``
    :math:`a_1, \dots, a_M` (:math:`a_i` maps view :math:`i` to :math:`i+1`, e.g.
    :math:`t_{i+1} - t_i`), paired as in the official ``SeqJEPA_Transforms.forward``; the last
    token's action embedding is zeroed *after* the action encoder.

    **Action batching options** (they differ only in training mode, through the action encoder's
    BatchNorm batch statistics):

    * ``last_token_action``: the last slot's action input is :math:`a_M` (``"action"``, official
      3DIEBench path) or zero (``"zeros"``, official augmentation/saccade path).
    * ``predictor_action``: :math:`e(a_M)` for the predictor comes from its own action-encoder
      call made *before* the token call, as the official code orders them (``"separate"``: the
      BatchNorm running statistics see the ``B`` vectors :math:`a_M`, then the ``B·M`` token
      actions), or from the token call (``"shared"``, one BatchNorm pass; needs
      ``last_token_action="action"``).

    **Regularizer** ``(n, d) → ()``, applied to ``z_agg``, to ``z`` flattened to ``(B·M, D)``, or
    to both (summed), weighted by :math:`\lambda\cdot\min(1, s/S)`: a *rate* (larger = more
    spread, e.g. :class:`jepa_blocks.rate.CodingRate`) is subtracted, a *penalty* (e.g.
    :class:`jepa_blocks.SIGReg`, :class:`jepa_blocks.VICRegRegularizer`) is added.
    ``regularizer=None`` is the paper's objective. :meth:`update` also calls the regularizer's
    ``update()`` when it has one (SIGReg's slices follow the step).

    **Symmetric variant**: also predict :math:`x_1` from the time-reversed sequence
    :math:`x_{M+1}, \dots, x_2` (actions ``invert_action``-ed and reversed, as
    :func:`jepa_blocks.seq.reverse_sequence`) and average the two losses, as one ``2B`` batch.
    The other outputs are those of the forward direction.

    Call :meth:`update` once after every optimizer step (or :meth:`attach` it): it updates the
    target and the ``step`` buffer that drives the warm-up. An EMA target's parameters belong to
    the model (``requires_grad=False``): optimise only those that require gradients.

    Args:
        encoder: Online encoder :math:`f_\theta`, ``(N, *obs)`` → ``(N, D)`` (or ``(N, T, D)``
            tokens that ``pool``, e.g. :class:`~jepa_blocks.seq.TokenPool`, turns into vectors);
            observations are anything it takes (images, state vectors, feature maps...).
        target: A :class:`jepa_blocks.targets.Target` (e.g. ``EMATarget(encoder, ...)``); its
            type is the class parameter: ``model.target`` of a ``SeqJEPA[EMATarget]``.
        action_encoder: :math:`e`, ``(..., A)`` → ``(..., E)``, e.g.
            :class:`jepa_blocks.seq.ActionEncoder`; ``None`` disables action conditioning.
        aggregator: ``(B, M, D+E)`` → ``(B, D+E)``, e.g. :class:`jepa_blocks.seq.Aggregator`.
        predictor: :math:`h_\psi` ``(B, D+2E)`` → ``(B, D)`` (:class:`jepa_blocks.seq.Predictor`).
        loss: Prediction loss ``(pred, target) → ()``; default
            :class:`jepa_blocks.losses.CosineLoss` (paper).
        target_transform: Optional module applied to the detached target before the loss, e.g.
            :class:`jepa_blocks.targets.CenterSharpen`.
        regularizer: Optional rate or penalty ``(n, d) → ()``.
        regularize_on: ``"z_agg"`` (default), ``"z"`` or ``"both"``.
        regularizer_weight: :math:`\lambda \ge 0`, required with a regularizer (coding rates are
            40–90 nats, penalties O(1); the recipes use 1e-3 for the coding rate).
        regularizer_kind: ``"rate"`` (subtracted, default) or ``"penalty"`` (added).
        regularizer_warmup_steps: :math:`S \ge 0`.
        pool: ``(N, T, D)`` encoder tokens → ``(N, D)`` (``None``: the encoder returns vectors).
        condition_tokens: Concatenate action embeddings to the tokens (paper: yes; Table 4).
        condition_predictor: Concatenate :math:`e(a_M)` to the predictor input (paper: yes).
        last_token_action, predictor_action: See above.
        symmetric: Add the reverse-direction task (default ``False``).
        invert_action: Inverse of one action for the reverse task (default: negate).

    Shape:
        - views: ``(B, M+1, *obs)`` with ``M ≥ 1``; actions: ``(B, M, A)``
        - output: :class:`SeqJEPAOutput`
    """

    step: Tensor

    def __init__(
        self,
        *,
        encoder: nn.Module,
        target: TargetT,
        action_encoder: nn.Module | None,
        aggregator: nn.Module,
        predictor: nn.Module,
        loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        target_transform: nn.Module | None = None,
        regularizer: Callable[[Tensor], Tensor] | None = None,
        regularize_on: RegularizeOn = "z_agg",
        regularizer_weight: float | None = None,
        regularizer_kind: RegularizerKind = "rate",
        regularizer_warmup_steps: int = 0,
        pool: nn.Module | None = None,
        condition_tokens: bool = True,
        condition_predictor: bool = True,
        last_token_action: LastTokenAction = "action",
        predictor_action: PredictorAction = "separate",
        symmetric: bool = False,
        invert_action: Callable[[Tensor], Tensor] = negate_actions,
    ) -> None:
        super().__init__()
        parts = {"encoder": encoder, "aggregator": aggregator, "predictor": predictor}
        for name, part in parts.items():
            if not isinstance(part, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(part).__name__}")
        if not isinstance(target, Target):
            raise TypeError(
                f"target must be a jepa_blocks.targets.Target (EMATarget, StopGradTarget, ...), "
                f"got {type(target).__name__}"
            )
        if action_encoder is not None and not isinstance(action_encoder, nn.Module):
            raise TypeError(
                f"action_encoder must be an nn.Module or None, got {type(action_encoder).__name__}"
            )
        if pool is not None and not isinstance(pool, nn.Module):
            raise TypeError(f"pool must be an nn.Module or None, got {type(pool).__name__}")
        for name, fn in (("loss", loss), ("regularizer", regularizer)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        if not callable(invert_action):
            raise TypeError(f"invert_action must be callable, got {type(invert_action).__name__}")
        flags = {"condition_tokens": condition_tokens, "condition_predictor": condition_predictor}
        for name, flag in {**flags, "symmetric": symmetric}.items():
            check_bool(flag, name)
        check_choice(regularize_on, "regularize_on", get_args(RegularizeOn))
        if regularizer is not None and regularizer_weight is None:
            raise ValueError(
                "a regularizer needs an explicit regularizer_weight (λ): coding rates are 40–90 "
                "nats, penalties O(1); e.g. 1e-3 for the coding rate, as the recipes use"
            )
        weight = 0.0 if regularizer_weight is None else regularizer_weight
        check_positive(weight, "regularizer_weight", allow_zero=True)
        check_choice(regularizer_kind, "regularizer_kind", get_args(RegularizerKind))
        check_int(regularizer_warmup_steps, "regularizer_warmup_steps", minimum=0)
        check_choice(last_token_action, "last_token_action", get_args(LastTokenAction))
        check_choice(predictor_action, "predictor_action", get_args(PredictorAction))
        if predictor_action == "shared" and last_token_action != "action":
            raise ValueError(
                "predictor_action='shared' reuses the last token slot's embedding of a_M, so it "
                "needs last_token_action='action'"
            )
        if action_encoder is None:
            condition_tokens = condition_predictor = False

        self.encoder = encoder
        self.target = target
        self.action_encoder = action_encoder
        self.aggregator = aggregator
        self.predictor = predictor
        self.loss_fn = loss if loss is not None else CosineLoss()
        self.target_transform = target_transform
        self.regularizer = regularizer
        self.regularize_on: RegularizeOn = regularize_on
        self.regularizer_weight = float(weight)
        self.regularizer_kind: RegularizerKind = regularizer_kind
        self.pool = pool
        self.regularizer_warmup_steps = regularizer_warmup_steps
        self.condition_tokens = bool(condition_tokens)
        self.condition_predictor = bool(condition_predictor)
        self.last_token_action: LastTokenAction = last_token_action
        self.predictor_action: PredictorAction = predictor_action
        self.symmetric = bool(symmetric)
        self.invert_action = invert_action
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._dim_z = self._check_dims()

    def _check_dims(self) -> int | None:
        """Check the parts' declared dimensions against each other; return the encoder's ``D``."""
        e = declared_dim(self.action_encoder, "embed_dim") if self.action_encoder is not None else 0
        agg = declared_dim(self.aggregator, "dim")
        p_in = declared_dim(self.predictor, "in_dim")
        p_out = declared_dim(self.predictor, "out_dim")
        if e is None or agg is None:
            return None
        e_pred = e if self.condition_predictor else 0
        if p_in is not None and p_in != agg + e_pred:
            raise ValueError(
                f"predictor.in_dim must be aggregator.dim + action embed_dim = {agg} + {e_pred} = "
                f"{agg + e_pred}, got {p_in}"
            )
        d = agg - (e if self.condition_tokens else 0)
        if p_out is not None and p_out != d:
            raise ValueError(
                f"predictor.out_dim must equal the encoder dimension D = aggregator.dim - "
                f"embed_dim = {d}, got {p_out}"
            )
        return d

    def _check_z(self, z: Tensor, what: str) -> None:
        if self._dim_z is not None and z.shape[-1] != self._dim_z:
            raise ValueError(
                f"{what} has D = {z.shape[-1]} features, but the parts expect D = aggregator.dim - "
                f"action embed_dim = {self._dim_z} (from_encoder's encoder_dim)"
            )

    @classmethod
    def from_encoder(
        cls,
        encoder: nn.Module,
        target: TargetT,
        *,
        action_dim: int,
        encoder_dim: int | None = None,
        obs_shape: tuple[int, ...] | None = None,
        action_embed_dim: int = 128,
        predictor_hidden: int | None = 1024,
        predictor_norm: PredictorNorm = "batch",
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        condition_tokens: bool = True,
        condition_predictor: bool = True,
        **kwargs: Any,
    ) -> SeqJEPA[TargetT]:
        """Assemble the paper's seq-JEPA around ``encoder`` (defaults: Ghaemi et al., 2025).

        Builds :class:`ActionEncoder` ``(A → E)``, an :class:`Aggregator` over
        :func:`transformer_blocks` of width ``D + E`` and a :class:`Predictor`
        ``(D + 2E → predictor_hidden → D)``; the paper's ``D=512, E=128`` give 640 and 768.

        Args:
            encoder: Online encoder with output dimension ``encoder_dim``.
            target: The target (e.g. ``EMATarget(encoder, total_steps=...)``).
            action_dim: ``A``.
            encoder_dim: ``D``; ``None``: the encoder's ``out_dim`` (or ``embed_dim``, ``dim``)
                attribute, else a dry run on one zero observation of ``obs_shape`` (eval mode,
                no gradient, the encoder's mode restored; tokens pooled by ``pool``).
            obs_shape: One observation's shape, for the dry run (e.g. ``(3, 32, 32)``).
            action_embed_dim: ``E`` (paper: 128).
            predictor_hidden: Predictor hidden width (paper: 1024; ``None``: one layer).
            predictor_norm: The predictor's ``norm`` (``"batch"``, paper; ``"none"``, an ablation).
            depth, heads, mlp_ratio: The aggregator's layers, attention heads and feed-forward
                width ratio (paper: 3, 4, 4).
            dropout: Aggregator dropout (PyTorch default 0.1, as in the official code).
            condition_tokens, condition_predictor: See :class:`SeqJEPA`.
            **kwargs: Further keyword arguments of :class:`SeqJEPA` (loss, regularizer, ...).
        """
        if encoder_dim is None:
            encoder_dim = _infer_dim(encoder, obs_shape, kwargs.get("pool"))
        check_int(encoder_dim, "encoder_dim")
        check_int(action_embed_dim, "action_embed_dim")
        action_encoder = ActionEncoder(action_dim=action_dim, embed_dim=action_embed_dim)
        width = encoder_dim + (action_embed_dim if condition_tokens else 0)
        blocks = transformer_blocks(
            dim=width, depth=depth, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout
        )
        aggregator = Aggregator(dim=width, blocks=blocks)
        predictor = Predictor(
            in_dim=width + (action_embed_dim if condition_predictor else 0),
            out_dim=encoder_dim,
            hidden=predictor_hidden,
            norm=predictor_norm,
        )
        return cls(
            encoder=encoder,
            target=target,
            action_encoder=action_encoder,
            aggregator=aggregator,
            predictor=predictor,
            condition_tokens=condition_tokens,
            condition_predictor=condition_predictor,
            **kwargs,
        )

    def encode(self, views: Tensor) -> Tensor:
        """Encode every view with the online encoder in one batched pass.

        Shape:
            - views: ``(B, M, *obs)``; output: ``(B, M, D)``
        """
        check_floating_tensor(views, "views", min_ndim=3, shape_doc="(B, M, *obs)")
        return self._encode(check_finite(views, "views"))

    def _vectors(self, z: Tensor, what: str) -> Tensor:
        """``(N, D)`` from the encoder's (or target's) output, pooling ``(N, T, D)`` tokens."""
        if z.ndim == 3 and self.pool is not None:
            z = self.pool(z)
        elif z.ndim == 3:
            raise ValueError(
                f"{what} is tokens of shape {tuple(z.shape)}; pass pool=TokenPool('mean') (or "
                f"'cls') to SeqJEPA to pool them into (N, D) vectors"
            )
        if z.ndim != 2:
            raise ValueError(f"{what} must be (N, D) vectors, got shape {tuple(z.shape)}")
        self._check_z(z, what)
        return z

    def _encode(self, views: Tensor) -> Tensor:
        if views.ndim < 3:
            raise ValueError(f"views must have shape (B, M, *obs), got {tuple(views.shape)}")
        z = self._vectors(self.encoder(views.flatten(0, 1)), "the encoder's output")
        return rearrange(z, "(b m) d -> b m d", b=views.shape[0])

    def _embed_actions(
        self, actions: Tensor, keep: Tensor, *, predictor: bool = True
    ) -> tuple[Tensor | None, Tensor | None]:
        """Token action embeddings ``(N, M, E)`` (masked by ``keep``) and ``e(a_M)`` ``(N, E)``."""
        if self.action_encoder is None:
            return None, None
        keep_e = keep[..., None]
        e_tok: Tensor | None = None
        e_pred: Tensor | None = None
        if self.predictor_action == "shared":
            e_all = self.action_encoder(actions)
            return (e_all * keep_e.to(e_all.dtype) if self.condition_tokens else None), e_all[:, -1]
        if self.condition_predictor and predictor:  # first, as the official forward does
            e_pred = self.action_encoder(actions[:, -1])
        if self.condition_tokens:
            a_in = actions if self.last_token_action == "action" else actions * keep_e
            e_all = self.action_encoder(a_in)
            e_tok = e_all * keep_e.to(e_all.dtype)
        return e_tok, e_pred

    def _tokens(self, z: Tensor, e_tok: Tensor | None) -> Tensor:
        return z if e_tok is None else torch.cat([z, e_tok.to(z.dtype)], dim=-1)

    @staticmethod
    def _keep_last_zeroed(m: int, like: Tensor) -> Tensor:
        """``(M,)`` multiplier: 1 for token slots that carry an action, 0 for the last one."""
        return (torch.arange(m, device=like.device) < m - 1).to(like.dtype)

    def aggregate(
        self, z: Tensor, actions: Tensor, *, padding_mask: Tensor | None = None
    ) -> Tensor:
        r"""Aggregate encodings and actions into :math:`z_\text{AGG}` (no prediction).

        For probes with any number ``M`` of observed views (the paper's ``M_val``); action ``j``
        leaves view ``j``, the last observed slot's embedding is zeroed as in training, and
        ``M - 1`` actions suffice. With ``padding_mask`` (trailing padding only), padded slots are
        ignored and the last *observed* slot gets the zeroed action; their actions still enter the
        action encoder's BatchNorm statistics in training mode, so probe in eval mode.

        Args:
            z: Encodings of the observed views.
            actions: Their actions.
            padding_mask: Optional ``(B, M)`` boolean, ``True`` for padded slots.

        Raises:
            NonFiniteError: NaN or inf in ``z`` or ``actions`` (eager mode).
            ValueError: A ``padding_mask`` row that is not a trailing suffix with >= 1 observed.

        Shape:
            - z: ``(B, M, D)``; actions: ``(B, M, A)`` or ``(B, M-1, A)``; output: ``(B, D+E)``
        """
        check_floating_tensor(z, "z", min_ndim=3, shape_doc="(B, M, D)")
        if z.ndim != 3:
            raise ValueError(f"z must have shape (B, M, D), got {tuple(z.shape)}")
        self._check_z(check_finite(z, "z"), "z")
        b, m = z.shape[:2]
        if self.action_encoder is not None:
            check_finite(check_floating_tensor(actions, "actions", min_ndim=1), "actions")
            if actions.ndim != 3 or actions.shape[0] != b or actions.shape[1] not in (m, m - 1):
                raise ValueError(
                    f"actions must have shape (B, M, A) or (B, M-1, A) with B={b}, M={m}, got "
                    f"{tuple(actions.shape)}"
                )
            if actions.shape[1] == m - 1:
                actions = torch.cat([actions, actions.new_zeros(b, 1, actions.shape[2])], dim=1)
        if padding_mask is None:
            keep = self._keep_last_zeroed(m, z)
        else:
            if getattr(padding_mask, "dtype", None) != torch.bool or padding_mask.shape != (b, m):
                raise ValueError(
                    f"padding_mask must be a bool tensor of shape (B, M) = ({b}, {m}), got "
                    f"{getattr(padding_mask, 'dtype', '')} {_shape(padding_mask)}"
                )
            if not torch.compiler.is_compiling():  # a host sync
                bad = (padding_mask[:, :-1] & ~padding_mask[:, 1:]).any(1) | padding_mask.all(1)
                if bool(bad.any()):
                    raise ValueError(
                        "padding_mask must mark a trailing suffix of each row (True after the "
                        f"last observed view, >= 1 observed), got rows {bad.nonzero().tolist()}"
                    )
            observed = ~padding_mask
            next_observed = torch.cat([observed[:, 1:], observed.new_zeros(b, 1)], dim=1)
            keep = (observed & next_observed).to(z.dtype)
        e_tok = (
            self._embed_actions(actions, keep, predictor=False)[0]
            if self.condition_tokens
            else None
        )
        return self.aggregator(self._tokens(z, e_tok), padding_mask=padding_mask)

    def context(
        self, views: Tensor, actions: Tensor, *, padding_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Encode observed views and aggregate them: returns ``(z_agg, z)``.

        See :meth:`aggregate` for ``actions`` and ``padding_mask``.

        Shape:
            - views: ``(B, M, C, H, W)``; actions: ``(B, M, A)`` or ``(B, M-1, A)``
            - output: ``(B, D+E)`` and ``(B, M, D)``
        """
        z = self.encode(views)
        return self.aggregate(z, actions, padding_mask=padding_mask), z

    def _predict(self, z: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``(z_agg, prediction)`` for full sequences ``z`` ``(N, M, D)``, ``actions`` ``(N, M, A)``."""
        keep = self._keep_last_zeroed(z.shape[1], z)
        e_tok, e_pred = self._embed_actions(actions, keep)
        z_agg = self.aggregator(self._tokens(z, e_tok))
        pred_in = z_agg if e_pred is None else torch.cat([z_agg, e_pred.to(z_agg.dtype)], dim=-1)
        return z_agg, self.predictor(pred_in)

    def _check_inputs(self, views: Tensor, actions: Tensor) -> int:
        if not isinstance(views, Tensor) or not isinstance(actions, Tensor):
            raise TypeError(
                f"views and actions must be tensors, got {type(views).__name__} and "
                f"{type(actions).__name__}"
            )
        if views.ndim < 3 or views.shape[1] < 2:
            raise ValueError(
                f"views must have shape (B, M+1, *obs) with M >= 1, got {tuple(views.shape)}"
            )
        b, m = views.shape[0], views.shape[1] - 1
        if actions.ndim != 3 or actions.shape[0] != b or actions.shape[1] != m:
            raise ValueError(
                f"actions must have shape (B, M, A) = ({b}, {m}, A) for views "
                f"{tuple(views.shape)} (action i maps view i to view i+1), got "
                f"{tuple(actions.shape)}"
            )
        check_floating_tensor(views, "views")
        check_floating_tensor(actions, "actions")
        a = declared_dim(self.action_encoder, "action_dim")
        if a is not None and actions.shape[2] != a:
            raise ValueError(
                f"actions must have A = action_encoder.action_dim = {a} features, got "
                f"{actions.shape[2]}"
            )
        return m

    def forward(
        self, views: Tensor, actions: Tensor, *, step: int | Tensor | None = None
    ) -> SeqJEPAOutput:
        """Run one seq-JEPA step (see the class docstring); returns :class:`SeqJEPAOutput`.

        Args:
            views, actions: ``(B, M+1, *obs)`` and ``(B, M, A)``.
            step: Optimizer steps done so far, for the regularizer warm-up; ``None`` uses the
                ``step`` buffer advanced by :meth:`update`.

        Raises:
            NonFiniteError: NaN or inf in ``views`` or ``actions`` (eager mode; checked before any
                module runs, so no BatchNorm statistics or other state change).
            ValueError: ``loss`` or ``regularizer`` does not return a scalar tensor.
        """
        m = self._check_inputs(views, actions)
        check_finite(views, "views")  # before any module (BatchNorm statistics) runs
        check_finite(actions, "actions")
        b = views.shape[0]
        if self.symmetric:
            z_all = self._encode(views)  # (B, M+1, D)
            z = z_all[:, :m]
            z_rev = z_all[:, 1:].flip(1)
            a_rev = self.invert_action(actions).flip(1)
            if a_rev.shape != actions.shape:
                raise ValueError(
                    f"invert_action must keep the action shape {tuple(actions.shape)}, got "
                    f"{tuple(a_rev.shape)}"
                )
            target_views = torch.cat([views[:, m], views[:, 0]], dim=0)
            z_ctx = torch.cat([z, z_rev], dim=0)
            a_ctx = torch.cat([actions, a_rev], dim=0)
        else:
            z = self._encode(views[:, :m])
            target_views = views[:, m]
            z_ctx, a_ctx = z, actions

        target = self.target(target_views, self.encoder)
        if target.ndim == 3:  # token outputs: pooled as the online ones
            target = self._vectors(target, "the target's output")
        if self.target_transform is not None:
            target = self.target_transform(target)
        z_agg_all, pred_all = self._predict(z_ctx, a_ctx)

        reverse_loss: Tensor | None = None
        if self.symmetric:
            forward_loss = self.loss_fn(pred_all[:b], target[:b])
            reverse_loss = self.loss_fn(pred_all[b:], target[b:])
            pred_loss = 0.5 * (forward_loss + reverse_loss)
        else:
            pred_loss = self.loss_fn(pred_all, target)
        if not isinstance(pred_loss, Tensor) or pred_loss.ndim != 0:
            raise ValueError(f"loss must return a scalar tensor, got {_shape(pred_loss)}")
        z_agg, prediction, target = z_agg_all[:b], pred_all[:b], target[:b]

        out = SeqJEPAOutput(
            pred_loss, pred_loss, z_agg, z, prediction, target, reverse_loss=reverse_loss
        )
        if self.regularizer is None:
            return out
        rate_z_agg = rate_z = None
        if self.regularize_on in ("z_agg", "both"):
            rate_z_agg = self.regularizer(z_agg)
        if self.regularize_on in ("z", "both"):
            rate_z = self.regularizer(rearrange(z, "b m d -> (b m) d"))
        rates = [r for r in (rate_z_agg, rate_z) if r is not None]
        for r in rates:
            if not isinstance(r, Tensor) or r.ndim != 0:
                raise ValueError(f"regularizer must return a scalar rate, got {_shape(r)}")
        rate = rates[0] if len(rates) == 1 else rates[0] + rates[1]
        factor = linear_warmup(
            self.step if step is None else step, warmup_steps=self.regularizer_warmup_steps
        )
        weight = torch.as_tensor(factor, dtype=torch.float32, device=rate.device)
        weight = self.regularizer_weight * weight
        signed = rate if self.regularizer_kind == "rate" else -rate
        loss = regularized_objective(pred_loss, signed, weight=weight)
        return out._replace(
            loss=loss, rate=rate, rate_z_agg=rate_z_agg, rate_z=rate_z, rate_weight=weight
        )

    @torch.no_grad()
    def update(self) -> None:
        """After one optimizer step: update the target from the encoder, advance ``step`` and
        the regularizer's own step (``regularizer.update()`` when it has one, e.g. SIGReg)."""
        self.target.update(self.encoder)
        self.step.add_(1)
        reg_update = getattr(self.regularizer, "update", None)
        if callable(reg_update):
            reg_update()

    def attach(self, optimizer: torch.optim.Optimizer) -> RemovableHandle:
        """Call :meth:`update` after every ``optimizer.step()`` (a post-step hook).

        Steps skipped (e.g. by ``GradScaler`` on inf gradients) do not call the hook.

        Args:
            optimizer: The optimizer of the online parameters.

        Returns:
            The hook handle (``handle.remove()`` detaches it).
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        return optimizer.register_step_post_hook(lambda *_, **__: self.update())

    def extra_repr(self) -> str:
        return (
            f"regularize_on={self.regularize_on!r}, regularizer_weight={self.regularizer_weight}, "
            f"regularizer_warmup_steps={self.regularizer_warmup_steps}, condition_tokens="
            f"{self.condition_tokens}, condition_predictor={self.condition_predictor}, "
            f"last_token_action={self.last_token_action!r}, predictor_action="
            f"{self.predictor_action!r}, symmetric={self.symmetric}"
        )
