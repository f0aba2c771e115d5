r"""Single-pass training driver: every stream batch is seen once (optionally ``K`` times).

Unlike the epoch loop (:func:`jepa_blocks.train.fit`), :func:`train_stream` walks a
:class:`~jepa_blocks.streaming.SequenceStream` exactly once. For each incoming batch of fresh
sequences it does ``K = repeats`` optimizer steps (the "number of updates per incoming batch" of
the buffer literature, Purushwalkam, Morgado & Gupta, 2022); each step trains on the fresh
sequences plus ``round(replay_ratio · B)`` items replayed from a buffer, then the fresh items are
offered to the buffer. Per step:

.. code-block:: text

    replay  = buffer.sample(round(ratio · B))       # indices → views regenerated, or sequences
    out     = model(cat(fresh, replay).views, .actions)
    out.loss.backward()                              # self-supervised loss only
    reg.observe(); reg.penalty().backward()          # EWC / SI on the encoder (optional)
    optimizer.step(); model.update(); reg.after_step()
    buffer.update(replayed slots, features = z_agg of the replayed rows)   # MinRed statistics
    (after the K-th step) buffer.add(fresh items, features = z_agg of the fresh rows)

Checkpoints fire after the batch that reaches each fraction of the stream (default 25 / 50 / 75 /
100 %, Purushwalkam et al.'s protocol; ``0.0`` evaluates the initial network): the evaluation
callback runs there and, with ``out_dir``, the full state is saved (model, optimizer, buffer,
regulariser, step, random generators), from which :func:`train_stream` resumes exactly. Every
random draw comes from a seeded generator (views of batch ``b``: ``mix_seed(seed, b)``; replayed
views of repeat ``r``: ``mix_seed(seed, b, 1 + r)``; the buffer's own generator; the global
generator, seeded at the start, for dropout), so a run is deterministic under its seed.

Regulariser consolidation: at the plan's nominal split boundaries (``consolidate="boundaries"``,
task-aware) or every ``consolidate_every`` steps (``"every"``, task-free).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from jepa_blocks._validation import check_choice, check_positive
from jepa_blocks.data.sequences import ViewSequence
from jepa_blocks.streaming.buffers import ReplayBuffer, replay_count
from jepa_blocks.streaming.protocols import SequenceStream
from jepa_blocks.streaming.regularizers import WeightRegularizer
from jepa_blocks.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from jepa_blocks.train.loop import NonFiniteLossError, resolve_device, seed_everything
from jepa_blocks.train.schedule import build_optimizer, lr_at

__all__ = ["EvalFn", "StreamConfig", "StreamResult", "train_stream"]

#: ``(model, info) → metrics``; ``info`` has ``fraction``, ``progress``, ``position``, ``step``.
EvalFn = Callable[[nn.Module, Mapping[str, Any]], Mapping[str, Any]]

_SEQ_FIELDS = ViewSequence._fields


@dataclasses.dataclass
class StreamConfig:
    """Hyperparameters of :func:`train_stream`.

    Attributes:
        repeats: ``K``, optimizer steps per incoming batch (``1``: each batch once).
        replay_ratio: Replayed items per fresh item in every step (with a buffer).
        store: What the buffer keeps: ``"indices"`` (source index, regime and split; views are
            regenerated, with new augmentations, when replayed) or ``"sequences"`` (the views,
            parameters and actions themselves).
        lr: Peak learning rate (AdamW of :func:`~jepa_blocks.train.build_optimizer`).
        weight_decay: AdamW weight decay on ≥ 2-D parameters.
        schedule: ``"constant"`` after the warm-up (a stream has no natural end) or
            ``"cosine"`` to ``final_lr`` over the known stream length.
        warmup_steps: Linear warm-up from ``warmup_start_lr``.
        warmup_start_lr: Learning rate at step 0.
        final_lr: End of the cosine.
        grad_clip: Clip the global gradient norm (``None``: no clipping).
        seed: Seeds the global generators at the start (dropout); the stream and the buffer
            have their own seeds.
        checkpoints: Fractions of the stream after which to evaluate (and save), in ``[0, 1]``.
        consolidate: When the regulariser consolidates: ``"boundaries"`` (nominal split ends
            of the plan) or ``"every"`` (every ``consolidate_every`` steps).
        consolidate_every: Steps between consolidations for ``"every"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` …
        out_dir: Where checkpoints go (``None``: nothing is written).
        save_checkpoints: Save the full state at each checkpoint (needs ``out_dir``).
        log_every: Append a training record to the history every this many steps.
    """

    repeats: int = 1
    replay_ratio: float = 1.0
    store: Literal["indices", "sequences"] = "indices"
    lr: float = 1e-3
    weight_decay: float = 1e-3
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    warmup_start_lr: float = 1e-5
    final_lr: float = 1e-5
    grad_clip: float | None = None
    seed: int = 0
    checkpoints: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    consolidate: Literal["boundaries", "every"] = "boundaries"
    consolidate_every: int = 0
    device: str = "auto"
    out_dir: str | None = None
    save_checkpoints: bool = True
    log_every: int = 10

    def __post_init__(self) -> None:
        for name in ("repeats", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("warmup_steps", "consolidate_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        check_positive(self.replay_ratio, "replay_ratio", allow_zero=True)
        check_positive(self.lr, "lr")
        check_positive(self.weight_decay, "weight_decay", allow_zero=True)
        check_positive(self.warmup_start_lr, "warmup_start_lr", allow_zero=True)
        check_positive(self.final_lr, "final_lr", allow_zero=True)
        if self.grad_clip is not None:
            check_positive(self.grad_clip, "grad_clip")
        check_choice(self.store, "store", ("indices", "sequences"))
        check_choice(self.schedule, "schedule", ("constant", "cosine"))
        check_choice(self.consolidate, "consolidate", ("boundaries", "every"))
        if self.consolidate == "every" and self.consolidate_every < 1:
            raise ValueError(
                f"consolidate='every' needs consolidate_every >= 1, got {self.consolidate_every}"
            )
        fr = tuple(float(f) for f in self.checkpoints)
        if any(not (math.isfinite(f) and 0.0 <= f <= 1.0) for f in fr):
            raise ValueError(f"checkpoints must be fractions in [0, 1], got {self.checkpoints}")
        self.checkpoints = tuple(sorted(set(fr)))


@dataclasses.dataclass
class StreamResult:
    """What :func:`train_stream` returns.

    Attributes:
        model: The trained model.
        history: Training records (``step``, ``position``, ``lr``, ``loss`` …).
        evaluations: One record per checkpoint: ``fraction`` (nominal), ``progress`` (actual
            fraction of the stream seen), ``position``, ``step`` and the callback's metrics.
        step: Optimizer steps done.
        checkpoints: Paths of the saved checkpoints.
        seconds: ``{"train", "eval", "total"}`` wall times of this call.
        buffer: The buffer (``None`` without one).
        regularizer: The regulariser (``None`` without one).
    """

    model: nn.Module
    history: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]
    step: int
    checkpoints: list[Path]
    seconds: dict[str, float]
    buffer: ReplayBuffer | None = None
    regularizer: WeightRegularizer | None = None


def _cat(a: ViewSequence, b: ViewSequence) -> ViewSequence:
    return ViewSequence(*(torch.cat((x, y.to(x.device)), dim=0) for x, y in zip(a, b)))


def _items_for_buffer(
    seqs: ViewSequence, splits: Tensor, regimes: Tensor, store: str
) -> dict[str, Tensor]:
    meta = {"regime": regimes.cpu(), "split": splits.cpu()}
    if store == "indices":
        return {"index": seqs.indices.cpu(), **meta}
    dev = seqs.views.device
    return {
        **{k: v.detach() for k, v in seqs._asdict().items()},
        **{k: v.to(dev) for k, v in meta.items()},
    }


def _replayed(
    items: Mapping[str, Tensor], stream: SequenceStream, number: int, repeat: int, store: str
) -> ViewSequence:
    if store == "indices":
        gen = stream.generator(number, 1 + repeat)
        return stream.maker(items["index"], items["regime"], gen)
    return ViewSequence(*(items[k] for k in _SEQ_FIELDS))


def _lr(config: StreamConfig, step: int, total: int) -> float:
    return lr_at(
        step,
        recipe="official" if config.schedule == "constant" else "paper",
        total_steps=total,
        warmup_steps=config.warmup_steps,
        base_lr=config.lr,
        warmup_start_lr=config.warmup_start_lr,
        final_lr=config.final_lr,
    )


def _scalar(x: Any) -> float | None:
    return float(x.detach()) if isinstance(x, Tensor) and x.numel() == 1 else None


def train_stream(
    model: nn.Module,
    stream: SequenceStream,
    *,
    config: StreamConfig | None = None,
    buffer: ReplayBuffer | None = None,
    regularizer: WeightRegularizer | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    eval_fn: EvalFn | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> StreamResult:
    """Train ``model`` in a single pass over ``stream`` (see the module docstring).

    Args:
        model: A module called as ``model(views, actions)`` returning an output with a scalar
            ``loss`` and a ``z_agg`` ``(B, F)`` used as the buffer features (e.g.
            :class:`~jepa_blocks.SeqJEPA`); its ``update()`` runs after every optimizer step.
        stream: The stream; each batch is fetched once.
        config: Hyperparameters (default :class:`StreamConfig`).
        buffer: Replay buffer (``None``: no replay).
        regularizer: :class:`~jepa_blocks.streaming.EWC` / :class:`~jepa_blocks.streaming.SI`
            on (part of) the model, usually ``model.encoder``.
        optimizer: Default: AdamW of :func:`~jepa_blocks.train.build_optimizer`.
        eval_fn: ``(model, info) → metrics`` at every checkpoint, model in eval mode.
        resume_from: A checkpoint written by an earlier call with the same arguments.
        log: Called with one line per checkpoint (e.g. ``print``).

    Returns:
        :class:`StreamResult`.

    Raises:
        NonFiniteLossError: When a loss is NaN or infinite (before its backward pass).
    """
    t0 = time.perf_counter()
    config = StreamConfig() if config is None else config
    if not isinstance(config, StreamConfig):
        raise TypeError(f"config must be a StreamConfig, got {type(config).__name__}")
    if not isinstance(stream, SequenceStream):
        raise TypeError(f"stream must be a SequenceStream, got {type(stream).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if buffer is not None and not isinstance(buffer, ReplayBuffer):
        raise TypeError(f"buffer must be a ReplayBuffer or None, got {type(buffer).__name__}")
    if regularizer is not None and not isinstance(regularizer, WeightRegularizer):
        raise TypeError(
            f"regularizer must be a WeightRegularizer or None, got {type(regularizer).__name__}"
        )
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model = model.to(device)
    if regularizer is not None:
        regularizer.to(device)
    if optimizer is None:
        optimizer = build_optimizer(
            model, recipe="paper", lr=config.lr, weight_decay=config.weight_decay
        )
    n_items = len(stream.plan)
    total_steps = len(stream) * config.repeats
    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    pending = [(f, round(f * n_items)) for f in config.checkpoints]
    boundaries = set(stream.plan.boundaries)
    history: list[dict[str, Any]] = []
    evaluations: list[dict[str, Any]] = []
    saved: list[Path] = []
    step, next_batch, position = 0, 0, 0
    t_eval = 0.0
    say = log if log is not None else (lambda _: None)

    if resume_from is not None:
        state = load_checkpoint(resume_from, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if buffer is not None:
            buffer.load_state_dict(state["buffer"])
        if regularizer is not None:
            regularizer.load_state_dict(state["regularizer"])
        step, next_batch, position = state["step"], state["next_batch"], state["position"]
        history, evaluations = list(state["history"]), list(state["evaluations"])
        done = {float(e["fraction"]) for e in evaluations}
        pending = [(f, p) for f, p in pending if f not in done]
        set_rng_state(state["rng"])

    def checkpoint(fractions: list[float]) -> None:
        """Evaluate once for every fraction that falls on this position, then save each."""
        nonlocal t_eval
        t1 = time.perf_counter()
        info = {"progress": position / n_items, "position": position, "step": step}
        metrics: dict[str, Any] = {}
        if eval_fn is not None:
            was_training = model.training
            model.eval()
            try:
                metrics = dict(eval_fn(model, {"fraction": fractions[-1], **info}))
            finally:
                model.train(was_training)
        for fraction in fractions:
            evaluations.append({"fraction": fraction, **info, **metrics})
            if out_dir is None or not config.save_checkpoints:
                continue
            path = out_dir / f"stream-{round(100 * fraction):03d}.pt"
            save_checkpoint(
                path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "buffer": buffer.state_dict() if buffer is not None else None,
                    "regularizer": regularizer.state_dict() if regularizer is not None else None,
                    "step": step,
                    "next_batch": next_batch,
                    "position": position,
                    "history": history,
                    "evaluations": evaluations,
                    "rng": rng_state(),
                    "config": dataclasses.asdict(config),
                },
            )
            saved.append(path)
        t_eval += time.perf_counter() - t1
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
        pct = " / ".join(f"{100 * f:.0f} %" for f in fractions)
        say(f"checkpoint {pct} (step {step}, position {position}): {shown}")

    def fire_checkpoints() -> None:
        due: list[float] = []
        while pending and pending[0][1] <= position:
            due.append(pending.pop(0)[0])
        if due:
            checkpoint(due)

    model.train()
    update = getattr(model, "update", None)
    fire_checkpoints()
    for number in range(next_batch, len(stream)):
        batch = stream.batch(number)
        fresh = batch.sequences.to(device)
        n_fresh = int(fresh.views.shape[0])
        out: Any = None
        for r in range(config.repeats):
            slots = torch.empty(0, dtype=torch.long)
            seqs = fresh
            if buffer is not None and config.replay_ratio > 0 and len(buffer):
                k = replay_count(n_fresh, ratio=config.replay_ratio, available=len(buffer))
                if k:
                    items, slots = buffer.sample(k)
                    seqs = _cat(fresh, _replayed(items, stream, number, r, config.store))
            lr = _lr(config, step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            out = model(seqs.views, seqs.actions)
            loss = out.loss if not isinstance(out, Tensor) else out
            if not math.isfinite(float(loss.detach())):
                raise NonFiniteLossError(
                    f"non-finite loss {float(loss.detach())} at step {step} (batch {number}, "
                    f"repeat {r}); training stopped before its backward pass"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            penalty = None
            if regularizer is not None:
                regularizer.observe()
                penalty = regularizer.penalty()
                if penalty.requires_grad:
                    penalty.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            if callable(update):
                update()
            if regularizer is not None:
                regularizer.after_step()
            feats = getattr(out, "z_agg", None)
            if buffer is not None and slots.numel():
                buffer.update(slots, features=None if feats is None else feats[n_fresh:].detach())
            step += 1
            if step % config.log_every == 0 or step == total_steps:
                rec: dict[str, Any] = {
                    "step": step,
                    "batch": number,
                    "position": batch.stop,
                    "lr": lr,
                    "replayed": int(slots.numel()),
                }
                for name in ("loss", "prediction_loss", "rate"):
                    v = _scalar(getattr(out, name, None))
                    if v is not None:
                        rec[name] = v
                if penalty is not None:
                    rec["penalty"] = float(penalty.detach())
                if buffer is not None:
                    rec["buffer_size"] = len(buffer)
                history.append(rec)
        if buffer is not None:
            feats = getattr(out, "z_agg", None)
            buffer.add(
                _items_for_buffer(fresh, batch.splits, batch.regimes, config.store),
                features=None if feats is None else feats[:n_fresh].detach(),
            )
        position = batch.stop
        next_batch = number + 1
        if regularizer is not None:
            if config.consolidate == "boundaries":
                if any(batch.start < b <= batch.stop for b in boundaries):
                    regularizer.consolidate()
            elif (
                step // config.consolidate_every
                > (step - config.repeats) // config.consolidate_every
            ):
                regularizer.consolidate()
        fire_checkpoints()
    seconds = {"total": time.perf_counter() - t0, "eval": t_eval}
    seconds["train"] = seconds["total"] - t_eval
    return StreamResult(model, history, evaluations, step, saved, seconds, buffer, regularizer)
