r"""Three stages of local learning for seq-JEPA; stage 3 really saves activation memory.

:class:`LocalSeqJEPA` wraps a :class:`jepa_blocks.SeqJEPA` whose encoder splits into blocks
(:func:`jepa_blocks.local.split_encoder`), with one :class:`~jepa_blocks.local.LocalHead` per
encoder block, one small head per aggregator block but the last, and a block-local objective
(default :class:`~jepa_blocks.local.LPLLoss`). Its ``stage`` selects:

* ``"end-to-end"`` — the model's own objective, backpropagated through everything (reference).
* ``"stage1"`` — auxiliary local losses beside it,
  :math:`\mathcal L = \mathcal L_\text{seq-JEPA} + w_\text{aux}\sum_k \mathcal L_k`, with block
  ``k``'s objective :math:`\mathcal L_k` on its head's embeddings of the observed views (read
  with forward hooks; the gradients also reach earlier blocks, as deep supervision).
* ``"stage2"`` — frozen encoder (``requires_grad=False``, eval mode); the aggregator and
  predictor train on its features, and with ``local_aggregator=True`` every aggregator block gets
  a detached input and (but the last) a head predicting the target from its [AGG] output and
  :math:`a_M`.
* ``"stage3"`` — fully local: each encoder block trains on its detached input with its own
  objective, the top as in stage 2; :meth:`LocalSeqJEPA.backward_step` frees each block's graph
  before the next block runs, so the activation peak is the largest block's.

References (full titles in :doc:`/local`): Greedy InfoMax (Löwe et al., 2019), CLAPP (Illing
et al., 2021), LPL (Halvagal & Zenke, 2023), blockwise SSL (Siddiqui et al., 2023).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from jepa_blocks._validation import check_bool, check_choice, check_int, check_positive
from jepa_blocks.local.blocks import BlockEncoder, LocalHead, local_heads, split_encoder
from jepa_blocks.local.objectives import LPLLoss
from jepa_blocks.metrics.memory import PeakMemory, measure_peak_memory
from jepa_blocks.seq.model import SeqJEPA, SeqJEPAOutput
from jepa_blocks.targets import StopGradTarget
from jepa_blocks.train.config import TrainConfig
from jepa_blocks.train.loop import Callback, FitResult, LoopState, fit

__all__ = [
    "STAGES",
    "BlockLossLog",
    "LocalOutput",
    "LocalSeqJEPA",
    "Stage",
    "fit_local",
    "local_step_fn",
    "peak_step_memory",
]

Stage = Literal["end-to-end", "stage1", "stage2", "stage3"]
#: The stages, in order of locality.
STAGES: tuple[str, ...] = ("end-to-end", "stage1", "stage2", "stage3")


class LocalOutput(NamedTuple):
    """What :class:`LocalSeqJEPA` returns (forward) or reports (:meth:`~LocalSeqJEPA.backward_step`).

    Attributes:
        loss: The total that is minimised, ``()`` (detached after ``backward_step``).
        main_loss: The seq-JEPA objective (``output.loss``), ``()``.
        local_loss: Sum of the block-local losses (encoder and aggregator blocks), ``()``.
        block_losses: The encoder blocks' local losses, ``(K,)`` (``(0,)`` when unused).
        aggregator_losses: The aggregator heads' losses, ``(K_agg − 1,)`` (``(0,)`` when unused).
        output: The model's :class:`~jepa_blocks.SeqJEPAOutput` (its ``z`` are detached in
            stages 2 and 3).
    """

    loss: Tensor
    main_loss: Tensor
    local_loss: Tensor
    block_losses: Tensor
    aggregator_losses: Tensor
    output: SeqJEPAOutput


def _called_module(block: nn.Module) -> nn.Module:
    """The module whose forward output is the block's output when the parent encoder runs.

    Blocks built by :func:`split_encoder` may be ``nn.Sequential`` views that the original
    encoder never calls as a unit; their last child is called, so hooks go there.
    """
    while isinstance(block, nn.Sequential) and len(block) > 0:
        block = block[-1]
    return block


@contextlib.contextmanager
def _removed_after(handles: list[Any]) -> Iterator[None]:
    """Remove the hook ``handles`` when the context closes."""
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _capture(blocks: Iterable[nn.Module]) -> Iterator[list[list[tuple[Tensor, bool]]]]:
    """Record every output of each block as ``(output, grad_enabled)`` while the context is open."""
    records: list[list[tuple[Tensor, bool]]] = []
    handles = []
    for block in blocks:
        rec: list[tuple[Tensor, bool]] = []
        records.append(rec)

        def hook(_m: nn.Module, _i: Any, out: Any, rec: list = rec) -> None:
            rec.append((out, torch.is_grad_enabled()))

        handles.append(_called_module(block).register_forward_hook(hook))
    with _removed_after(handles):
        yield records


@contextlib.contextmanager
def _swapped(module: nn.Module, **parts: nn.Module) -> Iterator[None]:
    """Temporarily replace submodules of ``module``."""
    old = {name: getattr(module, name) for name in parts}
    try:
        for name, part in parts.items():
            setattr(module, name, part)
        yield
    finally:
        for name, part in old.items():
            setattr(module, name, part)


def _dim(module: Any, name: str) -> int | None:
    value = getattr(module, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class LocalSeqJEPA(nn.Module):
    r"""A seq-JEPA model with block-local heads and objectives; ``stage`` selects the training.

    Build the optimizer **after** choosing the stage (stage 2 freezes the encoder).

    **Local objective of an encoder block.** Block ``k``'s head embeds its output for the ``T``
    observed views, ``e`` ``(B, T, d)``; ``head.predict(e_t, a_t)`` predicts ``e_{t+1}`` (detached
    by the objective), and the last observed view is paired with the target view's embedding
    when the block saw it without gradient: ``M`` pairs, else ``M − 1``.
    ``objective(e, pred=..., target=...)`` adds its anti-collapse terms on ``e``.

    Args:
        model: The seq-JEPA model; its encoder must split into blocks (:func:`split_encoder`).
        stage: One of :data:`STAGES` (default ``"stage3"``).
        objective: Block-local objective ``(z, *, pred, target) → ()``; default
            :class:`~jepa_blocks.local.LPLLoss` with the published weights.
        head_dim: Embedding dimension of the encoder heads (``None``: each block's channels,
            no projection, as LPL).
        action_conditioned: Give the encoder heads an action-conditioned predictor (needs the
            model's action encoder to declare ``action_dim``).
        head_hidden: Hidden width of the heads' predictors and of the aggregator heads.
        aux_weight: :math:`w_\text{aux} \ge 0` of the local losses in stage 1.
        local_aggregator: Train the aggregator blocks locally in stages 2 and 3 (otherwise the
            aggregator and predictor are one block trained by the seq-JEPA loss).

    Shape:
        - views: ``(B, M+1, C, H, W)``; actions: ``(B, M, A)``; output: :class:`LocalOutput`
    """

    def __init__(
        self,
        model: SeqJEPA,
        *,
        stage: Stage = "stage3",
        objective: Callable[..., Tensor] | None = None,
        head_dim: int | None = None,
        action_conditioned: bool = True,
        head_hidden: int = 128,
        aux_weight: float = 1.0,
        local_aggregator: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(model, SeqJEPA):
            raise TypeError(f"model must be a jepa_blocks.SeqJEPA, got {type(model).__name__}")
        if objective is not None and not callable(objective):
            raise TypeError(f"objective must be callable, got {type(objective).__name__}")
        check_bool(action_conditioned, "action_conditioned")
        check_bool(local_aggregator, "local_aggregator")
        check_int(head_hidden, "head_hidden")
        self.model = model
        blocks = split_encoder(model.encoder)
        # A plain tuple: the blocks share the encoder's modules and must not be registered twice.
        self._encoder_blocks: tuple[BlockEncoder] = (blocks,)
        self.objective: Callable[..., Tensor] = objective if objective is not None else LPLLoss()
        action_dim = _dim(model.action_encoder, "action_dim") if model.action_encoder else None
        if action_conditioned and action_dim is None:
            raise ValueError(
                "action_conditioned=True needs the model's action encoder to declare action_dim; "
                "pass action_conditioned=False"
            )
        self.action_dim = action_dim or 0
        self.heads = local_heads(
            blocks,
            dim=head_dim,
            action_dim=self.action_dim if action_conditioned else 0,
            hidden=head_hidden,
        )
        self.aux_weight = check_positive(aux_weight, "aux_weight", allow_zero=True)
        self.local_aggregator = local_aggregator
        self.aggregator_heads = nn.ModuleList()
        agg_blocks = getattr(model.aggregator, "blocks", None)
        if local_aggregator and isinstance(agg_blocks, nn.ModuleList) and len(agg_blocks) > 1:
            width = _dim(model.aggregator, "dim")
            d_out = _dim(model.predictor, "out_dim") or _dim(model.encoder, "out_dim")
            if width is None or d_out is None:
                raise ValueError(
                    "local_aggregator=True needs aggregator.dim and predictor.out_dim; pass "
                    "local_aggregator=False"
                )
            for _ in range(len(agg_blocks) - 1):
                self.aggregator_heads.append(_mlp(width + self.action_dim, head_hidden, d_out))
        self._frozen: list[nn.Parameter] = []
        self.stage: Stage = "end-to-end"
        self.set_stage(stage)

    @property
    def encoder_blocks(self) -> BlockEncoder:
        """The model's encoder as a :class:`BlockEncoder` (shared modules)."""
        return self._encoder_blocks[0]

    def set_stage(self, stage: Stage) -> None:
        """Switch the stage; stage 2 freezes the encoder, the others unfreeze what it froze."""
        check_choice(stage, "stage", STAGES)
        sg_target = isinstance(self.model.target, StopGradTarget)
        if stage == "stage3" and self.model.symmetric and not sg_target:
            raise ValueError(
                "stage3 with symmetric=True needs a StopGradTarget (the reverse task's target is "
                "the locally trained encoder's own feature of the first view)"
            )
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []
        if stage == "stage2":
            self._frozen = [p for p in self.model.encoder.parameters() if p.requires_grad]
            for p in self._frozen:
                p.requires_grad_(False)
        self.stage = stage

    def _block_loss(
        self, head: nn.Module, h: Tensor, h_next: Tensor | None, actions: Tensor, b: int
    ) -> Tensor:
        """Local objective of one encoder block from its outputs (see the class docstring)."""
        if not isinstance(head, LocalHead):
            raise TypeError(f"heads must be LocalHead modules, got {type(head).__name__}")
        e = head.sequence(h, b)  # (B, T, d)
        t = e.shape[1]
        if h_next is not None:
            with torch.no_grad():
                e_next = head.embed(h_next)
            target = torch.cat([e[:, 1:], e_next[:, None]], dim=1)
            src, acts = e, actions[:, :t]
        else:
            target = e[:, 1:]
            src, acts = e[:, :-1], actions[:, : t - 1]
        pred = head.predict(src, acts if head.action_dim > 0 else None)
        return self.objective(e, pred=pred, target=target)

    @contextlib.contextmanager
    def _aggregator_local(self) -> Iterator[list[Tensor]]:
        """Detach each aggregator block's input (but the first) and record the [AGG] outputs."""
        outs: list[Tensor] = []
        blocks = getattr(self.model.aggregator, "blocks", None)
        if not len(self.aggregator_heads) or not isinstance(blocks, nn.ModuleList):
            yield outs
            return

        def detach_input(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            return (args[0].detach(), *args[1:]), kwargs

        def record(_m: nn.Module, _i: Any, out: Tensor) -> None:
            outs.append(out[:, 0])

        handles = [
            blk.register_forward_pre_hook(detach_input, with_kwargs=True) for blk in blocks[1:]
        ]
        handles += [blk.register_forward_hook(record) for blk in blocks[:-1]]
        with _removed_after(handles):
            yield outs

    def _top(self, feats: Tensor, actions: Tensor) -> tuple[SeqJEPAOutput, Tensor]:
        """seq-JEPA loss on precomputed, detached features ``(B, M+1, D)`` (last = target view)."""
        model = self.model
        fake_views = rearrange(feats.detach(), "b m d -> b m d 1 1")
        with (
            _swapped(model, encoder=nn.Flatten(1), target=StopGradTarget()),
            self._aggregator_local() as agg_outs,
        ):
            out = model(fake_views, actions)
        b = feats.shape[0]
        losses = []
        for head, agg in zip(self.aggregator_heads, agg_outs):
            inp = agg[:b]
            if self.action_dim:
                inp = torch.cat([inp, actions[:, -1].to(inp.dtype)], dim=-1)
            losses.append(model.loss_fn(head(inp), out.target))
        agg_losses = torch.stack(losses) if losses else feats.new_zeros(0)
        return out, agg_losses

    def _zeros(self, like: Tensor) -> Tensor:
        return like.new_zeros(0, dtype=torch.float32)

    def _stage1(self, views: Tensor, actions: Tensor) -> LocalOutput:
        enc = self.encoder_blocks
        b, m = views.shape[0], views.shape[1] - 1
        with _capture(enc.blocks) as records:
            out = self.model(views, actions)
        losses = []
        for head, rec in zip(self.heads, records):
            with_grad = [o for o, g in rec if g]
            without = [o for o, g in rec if not g]
            if len(with_grad) != 1:
                raise RuntimeError(
                    f"expected one encoder call with gradient per step, saw {len(with_grad)}"
                )
            h = with_grad[0]
            t = h.shape[0] // b
            nxt = without[0] if without and t == m and without[0].shape[0] == b else None
            losses.append(self._block_loss(head, h, nxt, actions, b))
        block_losses = torch.stack(losses)
        local = block_losses.sum()
        total = out.loss + self.aux_weight * local
        return LocalOutput(total, out.loss, local, block_losses, self._zeros(views), out)

    def _stage2(self, views: Tensor, actions: Tensor) -> LocalOutput:
        self.model.encoder.eval()
        with torch.no_grad():
            feats = self.model.encode(views)
        out, agg_losses = self._top(feats, actions)
        local = agg_losses.sum()
        return LocalOutput(out.loss + local, out.loss, local, self._zeros(views), agg_losses, out)

    def _stage3(
        self, views: Tensor, actions: Tensor, *, backward: bool, amp: bool = False
    ) -> LocalOutput:
        enc = self.encoder_blocks

        def autocast() -> Any:
            return torch.autocast(views.device.type, dtype=torch.bfloat16, enabled=amp)

        b, m = views.shape[0], views.shape[1] - 1
        x = rearrange(views[:, :m], "b m c h w -> (b m) c h w")
        x_t = views[:, m]
        use_next = isinstance(self.model.target, StopGradTarget)
        losses = []
        for block, head in zip(enc.blocks, self.heads):
            with autocast():
                h = block(x)  # the input has no history: nothing flows into earlier blocks
                with torch.no_grad():
                    h_t = block(x_t)
                loss = self._block_loss(head, h, h_t if use_next else None, actions, b)
            if backward:
                loss.backward()  # frees this block's graph before the next block runs
                loss = loss.detach()
            losses.append(loss)
            x, x_t = h.detach(), h_t
            del h
        with torch.no_grad(), autocast():
            z = rearrange(enc.readout(x), "(b m) d -> b m d", b=b)
            if use_next:
                z_t = enc.readout(x_t)
            else:
                z_t = self.model.target(views[:, m], self.model.encoder)
        feats = torch.cat([z, z_t[:, None].to(z.dtype)], dim=1)
        with autocast():
            out, agg_losses = self._top(feats, actions)
        top = out.loss + agg_losses.sum()
        if backward:
            top.backward()
        block_losses = torch.stack(losses)
        local = block_losses.sum() + agg_losses.sum()
        total = block_losses.sum() + top
        if backward:
            total, local = total.detach(), local.detach()
            out = out._replace(loss=out.loss.detach())
            agg_losses = agg_losses.detach()
        return LocalOutput(total, out.loss, local, block_losses, agg_losses, out)

    def forward(self, views: Tensor, actions: Tensor) -> LocalOutput:
        """The stage's losses with all graphs alive (one ``loss.backward()`` trains the stage).

        In stage 3 this is the "detach only" form: same gradients as :meth:`backward_step`,
        without its memory saving.

        Args:
            views: ``(B, M+1, C, H, W)``.
            actions: ``(B, M, A)``.
        """
        if self.stage == "end-to-end":
            out = self.model(views, actions)
            zero = out.loss.new_zeros(())
            empty = self._zeros(views)
            return LocalOutput(out.loss, out.loss, zero, empty, empty, out)
        if self.stage == "stage3":
            return self._stage3(views, actions, backward=False)
        return (self._stage1 if self.stage == "stage1" else self._stage2)(views, actions)

    def backward_step(self, views: Tensor, actions: Tensor, *, amp: bool = False) -> LocalOutput:
        """Compute the stage's losses and their gradients (accumulated into ``.grad``).

        Stage 3 runs forward → loss → backward → free block by block, so at most one block's
        activations are alive; the other stages call ``forward(...).loss.backward()``. Zero the
        gradients before and step the optimizer after (as :func:`fit_local` does).

        Args:
            views: ``(B, M+1, C, H, W)``.
            actions: ``(B, M, A)``.
            amp: Run the forward passes under bf16 autocast on the views' device.

        Returns:
            :class:`LocalOutput` with detached losses.
        """
        if self.stage == "stage3":
            return self._stage3(views, actions, backward=True, amp=amp)
        with torch.autocast(views.device.type, dtype=torch.bfloat16, enabled=amp):
            out = self(views, actions)
        out.loss.backward()
        loss, main, local, blocks, agg = (t.detach() for t in out[:5])
        return LocalOutput(loss, main, local, blocks, agg, out.output)

    @torch.no_grad()
    def update(self) -> None:
        """After each optimizer step: the model's :meth:`~jepa_blocks.SeqJEPA.update`."""
        self.model.update()

    # seq-JEPA helpers, so that probes written for SeqJEPA accept the wrapper.
    def encode(self, views: Tensor) -> Tensor:
        """:meth:`jepa_blocks.SeqJEPA.encode` of the wrapped model."""
        return self.model.encode(views)

    def aggregate(self, z: Tensor, actions: Tensor, **kwargs: Any) -> Tensor:
        """:meth:`jepa_blocks.SeqJEPA.aggregate` of the wrapped model."""
        return self.model.aggregate(z, actions, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"stage={self.stage!r}, aux_weight={self.aux_weight}, "
            f"local_aggregator={self.local_aggregator}"
        )


def _batch_tensors(batch: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    views = getattr(batch, "views", None)
    actions = getattr(batch, "actions", None)
    if views is None or actions is None:
        raise TypeError(f"batches must have views and actions fields, got {type(batch).__name__}")
    return views.to(device, non_blocking=True), actions.to(device, non_blocking=True)


def local_step_fn(model: nn.Module, batch: Any, state: LoopState) -> LocalOutput:
    """The ``step_fn`` of stage 3 for :func:`jepa_blocks.train.fit`: per-block backward-and-free.

    Calls :meth:`LocalSeqJEPA.backward_step` (bf16 autocast when the loop uses AMP); the loop
    zeroes the gradients before and checks the detached loss and gradient norm after.

    Args:
        model: The :class:`LocalSeqJEPA`, unwrapped (stage 3 supports neither ``compile`` nor DDP).
        batch: A batch with ``views`` ``(B, M+1, C, H, W)`` and ``actions`` ``(B, M, A)``.
        state: The loop's state (device, AMP).

    Returns:
        :class:`LocalOutput` with detached losses.
    """
    if not isinstance(model, LocalSeqJEPA):
        raise TypeError(f"model must be a LocalSeqJEPA, got {type(model).__name__}")
    views, actions = _batch_tensors(batch, state.device)
    return model.backward_step(views, actions, amp=state.use_amp)


class BlockLossLog(Callback):
    """Log each block's local loss: ``block{k}`` (encoder blocks) and ``agg{k}`` (aggregator heads).

    ``fit`` logs only the scalar fields of a step's output; this adds the per-block vectors of
    :class:`LocalOutput` on the loop's logging steps (no device synchronisation on the others).
    """

    def after_step(self, state: LoopState, batch: Any, out: Any) -> dict[str, float] | None:
        """``{"block0": …, "agg0": …}`` on a logging step, else ``None``."""
        del batch
        if not isinstance(out, LocalOutput):
            return None
        if state.step % state.config.log_every and state.step != state.total_steps:
            return None
        record = {f"block{k}": float(v) for k, v in enumerate(out.block_losses.detach())}
        record.update({f"agg{k}": float(v) for k, v in enumerate(out.aggregator_losses.detach())})
        return record


def fit_local(
    learner: LocalSeqJEPA,
    loader: Iterable[Any],
    config: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    callbacks: Sequence[Callback] = (),
    eval_fn: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
) -> FitResult:
    """Train ``learner`` in its current stage with :func:`jepa_blocks.train.fit`.

    Stage 3 uses :func:`local_step_fn`, the others the standard step (one ``loss.backward()``);
    :class:`BlockLossLog` comes first among the callbacks. With ``out_dir`` set, give each stage
    its own directory, since ``fit`` resumes from a checkpoint it finds there.

    Args:
        learner: The wrapped model, already in the wanted stage.
        loader: Batches with ``views`` and ``actions``; ``set_epoch`` is called when present.
        config: Loop hyperparameters.
        optimizer: Default: :func:`~jepa_blocks.train.build_optimizer` of ``config.recipe``.
        callbacks: More :class:`~jepa_blocks.train.Callback` hooks, after :class:`BlockLossLog`.
        eval_fn: ``(learner, epoch) → metrics``, run in eval mode without gradient every
            ``config.eval_every_epochs`` epochs and at the end.

    Raises:
        NonFiniteLossError: A NaN or infinite loss or gradient norm (before the optimizer step).
        NotImplementedError: Stage 3 with ``config.compile`` or under DDP.
    """
    if not isinstance(learner, LocalSeqJEPA):
        raise TypeError(f"learner must be a LocalSeqJEPA, got {type(learner).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    step_fn = None
    if learner.stage == "stage3":
        if config.compile:
            raise NotImplementedError("stage3 does not support compile=True (per-block backward)")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            raise NotImplementedError(
                "stage3 does not support DDP yet; train one process per device"
            )
        step_fn = local_step_fn
    return fit(
        learner,
        loader,
        config,
        optimizer=optimizer,
        step_fn=step_fn,
        callbacks=(BlockLossLog(), *callbacks),
        eval_fn=eval_fn,
    )


def peak_step_memory(
    learner: LocalSeqJEPA,
    views: Tensor,
    actions: Tensor,
    *,
    warmup: bool = True,
    free_blocks: bool = True,
) -> PeakMemory:
    """Peak activation memory of one training step of ``learner``'s stage on one batch.

    Runs on a deep copy with a zero-learning-rate SGD optimizer: an optional unmeasured warm-up
    step (lazily created state does not count on CUDA), then one measured ``zero_grad``,
    :meth:`LocalSeqJEPA.backward_step`, ``step``. Parameters and buffers are not counted.

    Args:
        learner: The wrapped model, in the stage to measure.
        views: ``(B, M+1, C, H, W)`` on the learner's device.
        actions: ``(B, M, A)``.
        warmup: Run one unmeasured step first.
        free_blocks: Use :meth:`LocalSeqJEPA.backward_step` (default); ``False``: call
            ``forward(...).loss.backward()``, stage 3's "detach only" baseline (all blocks alive).

    Returns:
        :class:`~jepa_blocks.metrics.PeakMemory` (``result`` is the step's :class:`LocalOutput`;
        ``cuda_bytes`` is ``None`` off CUDA).

    Shape:
        - views: ``(B, M+1, C, H, W)``; actions: ``(B, M, A)``
    """
    if not isinstance(learner, LocalSeqJEPA):
        raise TypeError(f"learner must be a LocalSeqJEPA, got {type(learner).__name__}")
    check_bool(warmup, "warmup")
    check_bool(free_blocks, "free_blocks")
    work = copy.deepcopy(learner)
    work.train()
    params = [p for p in work.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0)

    def one_step() -> LocalOutput:
        opt.zero_grad(set_to_none=True)
        if free_blocks:
            out = work.backward_step(views, actions)
        else:
            out = work(views, actions)
            out.loss.backward()
        opt.step()
        return out

    if warmup:
        one_step()
    exclude = [*work.parameters(), *work.buffers()]
    return measure_peak_memory(one_step, exclude=exclude, device=views.device)
