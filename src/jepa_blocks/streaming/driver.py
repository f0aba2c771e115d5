r"""Single-pass training: a stream is a batch iterable of :func:`jepa_blocks.train.fit`.

:func:`train_stream` walks a :class:`~jepa_blocks.streaming.SequenceStream` exactly once, with the
library's one loop. Each incoming batch of fresh sequences is yielded ``K = repeats`` times by
:class:`RepeatedStream` (the "number of updates per incoming batch" of the buffer literature,
Purushwalkam, Morgado & Gupta, 2022); each of those optimizer steps trains on the fresh sequences
plus ``round(replay_ratio · B)`` items replayed from a buffer, then the fresh items are offered to
the buffer. The parts, each usable with :func:`~jepa_blocks.train.fit` directly:

* :func:`stream_step_fn`, the ``step_fn``: fresh + replayed items, forward under
  ``state.autocast()``, finite-loss check, ``backward``, then the EWC / SI penalty's ``backward``;
* :class:`ReplayCallback`: draws the replayed items (in the step) and, after the step, updates the
  MinRed statistics of the replayed rows and adds the fresh items after the ``K``-th repeat;
* :class:`RegularizerCallback`: the penalty (in the step), ``after_step()`` and consolidation at
  the plan's nominal split boundaries (``consolidate="boundaries"``, task-aware) or every
  ``consolidate_every`` steps (``"every"``, task-free);
* :class:`StreamCheckpoints`: evaluates after the batch that reaches each fraction of the stream
  (default 25 / 50 / 75 / 100 %, Purushwalkam et al.'s protocol; ``0.0`` evaluates the initial
  network) and, with ``out_dir``, saves the loop's full state to ``stream-025.pt`` … .

One step:

.. code-block:: text

    replay  = buffer.sample(round(ratio · B))       # indices → views regenerated, or sequences
    out     = model(cat(fresh, replay).views, .actions)
    out.loss.backward()                              # self-supervised loss only
    reg.observe(); reg.penalty().backward()          # EWC / SI on the encoder (optional)
    optimizer.step(); model.update(); reg.after_step()            # (fit)
    buffer.update(replayed slots, features = z_agg of the replayed rows)   # MinRed statistics
    (after the K-th step) buffer.add(fresh items, features = z_agg of the fresh rows)
    (after the K-th step) consolidate; evaluate and save at the checkpoint fractions

The callbacks' states (buffer, regulariser, evaluations) go into the loop's checkpoints, so
``train_stream(..., resume_from=out_dir / "stream-050.pt")`` resumes exactly. Every random draw
comes from a seeded generator (views of batch ``b``: ``mix_seed(seed, b)``; replayed views of
repeat ``r``: ``mix_seed(seed, b, 1 + r)``; the buffer's own generator; the global generator,
seeded with ``train.seed`` at the start, for dropout), so a run is deterministic under its seeds.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from jepa_blocks._validation import check_choice, check_positive
from jepa_blocks.data.sequences import ViewSequence
from jepa_blocks.streaming.buffers import ReplayBuffer, replay_count
from jepa_blocks.streaming.protocols import SequenceStream, StreamBatch
from jepa_blocks.streaming.regularizers import WeightRegularizer
from jepa_blocks.train.config import TrainConfig, config_to_dict
from jepa_blocks.train.loop import (
    Callback,
    LoopState,
    StepFn,
    default_step_fn,
    fit,
    resolve_device,
    seed_everything,
)

__all__ = [
    "EvalFn",
    "RegularizerCallback",
    "RepeatedStream",
    "ReplayCallback",
    "StreamCheckpoints",
    "StreamConfig",
    "StreamResult",
    "StreamStep",
    "stream_step_fn",
    "train_stream",
]

#: ``(model, info) → metrics``; ``info`` has ``fraction``, ``progress``, ``position``, ``step``.
EvalFn = Callable[[nn.Module, Mapping[str, Any]], Mapping[str, Any]]

_SEQ_FIELDS = ViewSequence._fields


@dataclasses.dataclass
class StreamConfig:
    """What a stream adds to the loop's :class:`~jepa_blocks.train.TrainConfig`.

    The optimizer, learning-rate schedule (``schedule="constant"`` or ``"cosine"`` over the
    stream, ``warmup_steps``), gradient clipping, seed, device, AMP, logging and ``out_dir`` are
    the loop's (:class:`~jepa_blocks.train.TrainConfig`).

    Attributes:
        repeats: ``K``, optimizer steps per incoming batch (``1``: each batch once).
        replay_ratio: Replayed items per fresh item in every step (with a buffer).
        store: What the buffer keeps: ``"indices"`` (source index, regime and split; views are
            regenerated, with new augmentations, when replayed) or ``"sequences"`` (the views,
            parameters and actions themselves).
        checkpoints: Fractions of the stream after which to evaluate (and save), in ``[0, 1]``.
        consolidate: When the regulariser consolidates: ``"boundaries"`` (nominal split ends
            of the plan) or ``"every"`` (every ``consolidate_every`` steps).
        consolidate_every: Steps between consolidations for ``"every"``.
        save_checkpoints: Save the full state at each checkpoint fraction (needs the loop's
            ``out_dir``).
    """

    repeats: int = 1
    replay_ratio: float = 1.0
    store: Literal["indices", "sequences"] = "indices"
    checkpoints: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    consolidate: Literal["boundaries", "every"] = "boundaries"
    consolidate_every: int = 0
    save_checkpoints: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be an int >= 1, got {self.repeats!r}")
        v = self.consolidate_every
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"consolidate_every must be an int >= 0, got {v!r}")
        check_positive(self.replay_ratio, "replay_ratio", allow_zero=True)
        check_choice(self.store, "store", ("indices", "sequences"))
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
        history: The loop's training records (``step``, ``lr``, ``loss`` … plus ``batch``,
            ``position``, ``replayed``, ``buffer_size``, ``penalty`` of the callbacks).
        evaluations: One record per checkpoint: ``fraction`` (nominal), ``progress`` (actual
            fraction of the stream seen), ``position``, ``step`` and the callback's metrics.
        step: Optimizer steps done.
        checkpoints: Paths of the checkpoints saved by this call.
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


class StreamStep(NamedTuple):
    """One item of :class:`RepeatedStream`: repeat ``repeat`` of incoming batch ``number``.

    Attributes:
        number: Batch number ``b`` of the stream.
        repeat: ``0 … K-1``.
        batch: The :class:`~jepa_blocks.streaming.StreamBatch` (the same object for every
            repeat of a batch).
    """

    number: int
    repeat: int
    batch: StreamBatch


class RepeatedStream:
    """A stream as a batch iterable of :func:`~jepa_blocks.train.fit`: each batch ``repeats``
    times.

    Every batch is fetched once (``stream.batch(b)``) and yielded as ``repeats`` consecutive
    :class:`StreamStep` items, so ``len(self) = len(stream) · repeats`` optimizer steps.

    Args:
        stream: The stream.
        repeats: ``K``, optimizer steps per incoming batch.
    """

    def __init__(self, stream: SequenceStream, *, repeats: int = 1) -> None:
        if not isinstance(stream, SequenceStream):
            raise TypeError(f"stream must be a SequenceStream, got {type(stream).__name__}")
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
        self.stream = stream
        self.repeats = repeats

    def __len__(self) -> int:
        return len(self.stream) * self.repeats

    def __iter__(self) -> Iterator[StreamStep]:
        for number in range(len(self.stream)):
            batch = self.stream.batch(number)
            for repeat in range(self.repeats):
                yield StreamStep(number, repeat, batch)


def _cat(a: ViewSequence, b: ViewSequence) -> ViewSequence:
    return ViewSequence(*(torch.cat((x, y.to(x.device)), dim=0) for x, y in zip(a, b)))


def _features(out: Any) -> Tensor | None:
    feats = getattr(out, "z_agg", None)
    return feats.detach() if isinstance(feats, Tensor) else None


class ReplayCallback(Callback):
    """Experience replay: mixes buffer items into every step, then feeds the buffer.

    :meth:`mix` (called by :func:`stream_step_fn`) returns the fresh sequences of a
    :class:`StreamStep` followed by ``replay_count(B, ratio=replay_ratio)`` items sampled from
    the buffer; after the step, :meth:`after_step` updates the buffer's statistics of the
    replayed rows (MinRed: their ``z_agg``) and, after the ``K``-th repeat of a batch, offers
    the fresh items to the buffer (with their ``z_agg`` as features).

    Args:
        buffer: The replay buffer (its state goes into the loop's checkpoints).
        stream: The stream (regenerates the views of replayed indices).
        replay_ratio: Replayed items per fresh item.
        store: ``"indices"`` (views regenerated from ``stream.generator(b, 1 + r)``) or
            ``"sequences"`` (the stored views are replayed as they are).
        repeats: ``K``, optimizer steps per incoming batch.
    """

    def __init__(
        self,
        buffer: ReplayBuffer,
        stream: SequenceStream,
        *,
        replay_ratio: float = 1.0,
        store: Literal["indices", "sequences"] = "indices",
        repeats: int = 1,
    ) -> None:
        if not isinstance(buffer, ReplayBuffer):
            raise TypeError(f"buffer must be a ReplayBuffer, got {type(buffer).__name__}")
        self.buffer = buffer
        self.stream = stream
        self.replay_ratio = check_positive(replay_ratio, "replay_ratio", allow_zero=True)
        self.store = check_choice(store, "store", ("indices", "sequences"))
        self.repeats = repeats
        self._fresh: ViewSequence | None = None
        self._slots = torch.empty(0, dtype=torch.long)

    def mix(self, step: StreamStep, device: torch.device) -> ViewSequence:
        """The fresh sequences of ``step`` on ``device``, followed by the replayed ones."""
        fresh = step.batch.sequences.to(device)
        self._fresh = fresh
        self._slots = torch.empty(0, dtype=torch.long)
        if self.replay_ratio > 0 and len(self.buffer):
            n_fresh = int(fresh.views.shape[0])
            k = replay_count(n_fresh, ratio=self.replay_ratio, available=len(self.buffer))
            if k:
                items, self._slots = self.buffer.sample(k)
                return _cat(fresh, self._replayed(items, step))
        return fresh

    def _replayed(self, items: Mapping[str, Tensor], step: StreamStep) -> ViewSequence:
        if self.store == "indices":
            gen = self.stream.generator(step.number, 1 + step.repeat)
            return self.stream.maker(items["index"], items["regime"], gen)
        return ViewSequence(*(items[k] for k in _SEQ_FIELDS))

    def _items(self, fresh: ViewSequence, batch: StreamBatch) -> dict[str, Tensor]:
        meta = {"regime": batch.regimes.cpu(), "split": batch.splits.cpu()}
        if self.store == "indices":
            return {"index": fresh.indices.cpu(), **meta}
        dev = fresh.views.device
        return {
            **{k: v.detach() for k, v in fresh._asdict().items()},
            **{k: v.to(dev) for k, v in meta.items()},
        }

    def after_step(self, state: LoopState, batch: Any, out: Any) -> Mapping[str, float]:
        """Update the replayed slots; after the ``K``-th repeat, add the fresh items."""
        step: StreamStep = batch
        fresh = self._fresh
        if fresh is None:
            raise RuntimeError(
                "ReplayCallback.mix was not called in this step (use stream_step_fn)"
            )
        n_fresh = int(fresh.views.shape[0])
        feats = _features(out)
        replayed = int(self._slots.numel())
        if replayed:
            self.buffer.update(self._slots, features=None if feats is None else feats[n_fresh:])
        record = {"replayed": replayed, "buffer_size": len(self.buffer)}
        if step.repeat == self.repeats - 1:
            self.buffer.add(
                self._items(fresh, step.batch),
                features=None if feats is None else feats[:n_fresh],
            )
        self._fresh = None
        return record

    def state_dict(self) -> dict[str, Any]:
        """The buffer's state."""
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the buffer."""
        self.buffer.load_state_dict(state["buffer"])


class RegularizerCallback(Callback):
    """EWC / SI in a stream: the penalty's backward, ``after_step()`` and consolidation.

    :meth:`backward` (called by :func:`stream_step_fn` right after the loss's backward) lets the
    regulariser read the gradients of the self-supervised loss (``observe()``), then
    back-propagates its penalty. After every step :meth:`after_step` calls the regulariser's
    ``after_step()`` and, after the ``K``-th repeat of a batch, consolidates at the plan's
    nominal split boundaries or every ``consolidate_every`` steps.

    Args:
        regularizer: :class:`~jepa_blocks.streaming.EWC` or :class:`~jepa_blocks.streaming.SI`.
        stream: The stream (its plan's boundaries).
        consolidate: ``"boundaries"`` or ``"every"``.
        consolidate_every: Steps between consolidations for ``"every"``.
        repeats: ``K``, optimizer steps per incoming batch.
    """

    def __init__(
        self,
        regularizer: WeightRegularizer,
        stream: SequenceStream,
        *,
        consolidate: Literal["boundaries", "every"] = "boundaries",
        consolidate_every: int = 0,
        repeats: int = 1,
    ) -> None:
        if not isinstance(regularizer, WeightRegularizer):
            raise TypeError(
                f"regularizer must be a WeightRegularizer, got {type(regularizer).__name__}"
            )
        self.regularizer = regularizer
        self.consolidate = check_choice(consolidate, "consolidate", ("boundaries", "every"))
        if consolidate == "every" and consolidate_every < 1:
            raise ValueError(
                f"consolidate='every' needs consolidate_every >= 1, got {consolidate_every}"
            )
        self.consolidate_every = consolidate_every
        self.boundaries = set(stream.plan.boundaries)
        self.repeats = repeats
        self._penalty = 0.0

    def backward(self) -> None:
        """``observe()`` the loss's gradients, then back-propagate the penalty."""
        self.regularizer.observe()
        penalty = self.regularizer.penalty()
        if penalty.requires_grad:
            penalty.backward()
        self._penalty = float(penalty.detach())

    def after_step(self, state: LoopState, batch: Any, out: Any) -> Mapping[str, float]:
        """``after_step()``; consolidate after the last repeat of a batch when due."""
        step: StreamStep = batch
        self.regularizer.after_step()
        if step.repeat == self.repeats - 1:
            if self.consolidate == "boundaries":
                start, stop = step.batch.start, step.batch.stop
                due = any(start < b <= stop for b in self.boundaries)
            else:
                every = self.consolidate_every
                due = state.step // every > (state.step - self.repeats) // every
            if due:
                self.regularizer.consolidate()
        return {"penalty": self._penalty}

    def state_dict(self) -> dict[str, Any]:
        """The regulariser's state."""
        return {"regularizer": self.regularizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the regulariser."""
        self.regularizer.load_state_dict(state["regularizer"])


class StreamCheckpoints(Callback):
    """Evaluate (and save) after the batch that reaches each fraction of the stream.

    Fraction ``f`` is due once the stream position reaches ``round(f · N)`` items; fractions
    due at the start (``0.0``) are evaluated in ``on_fit_start``. At a checkpoint ``eval_fn``
    runs once in eval mode, one record per due fraction is appended to :attr:`evaluations`, and
    with ``save`` and the loop's ``out_dir`` the loop's full state is saved to
    ``out_dir/stream-<percent>.pt`` after each record (resuming from it is exact).

    Args:
        stream: The stream.
        fractions: Checkpoint fractions in ``[0, 1]`` (sorted, duplicates dropped).
        repeats: ``K``, optimizer steps per incoming batch.
        eval_fn: ``(model, info) → metrics`` (``None``: records without metrics).
        save: Save the state at each fraction.
        log: Called with one line per checkpoint (e.g. ``print``).

    Attributes:
        evaluations: The checkpoint records (``fraction``, ``progress``, ``position``,
            ``step`` and the metrics).
        saved: Paths written by this run.
        eval_seconds: Time spent in ``eval_fn`` by this run.
    """

    def __init__(
        self,
        stream: SequenceStream,
        *,
        fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
        repeats: int = 1,
        eval_fn: EvalFn | None = None,
        save: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        fr = sorted({float(f) for f in fractions})
        if any(not (math.isfinite(f) and 0.0 <= f <= 1.0) for f in fr):
            raise ValueError(f"fractions must be in [0, 1], got {tuple(fractions)}")
        self.num_items = len(stream.plan)
        self.fractions = tuple(fr)
        self.repeats = repeats
        self.eval_fn = eval_fn
        self.save = save
        self.say = log if log is not None else (lambda _: None)
        self.position = 0
        self.evaluations: list[dict[str, Any]] = []
        self.saved: list[Path] = []
        self.eval_seconds = 0.0

    def _due(self) -> list[float]:
        done = {float(e["fraction"]) for e in self.evaluations}
        return [
            f
            for f in self.fractions
            if f not in done and round(f * self.num_items) <= self.position
        ]

    def _fire(self, state: LoopState) -> None:
        due = self._due()
        if not due:
            return
        t0 = time.perf_counter()
        info = {
            "progress": self.position / self.num_items,
            "position": self.position,
            "step": state.step,
        }
        metrics: dict[str, Any] = {}
        model = state.model
        if self.eval_fn is not None:
            was_training = model.training
            model.eval()
            try:
                metrics = dict(self.eval_fn(model, {"fraction": due[-1], **info}))
            finally:
                model.train(was_training)
        for fraction in due:
            self.evaluations.append({"fraction": fraction, **info, **metrics})
            if self.save and state.out_dir is not None:
                path = state.save_checkpoint(
                    state.out_dir / f"stream-{round(100 * fraction):03d}.pt"
                )
                if path is not None:
                    self.saved.append(path)
        self.eval_seconds += time.perf_counter() - t0
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
        pct = " / ".join(f"{100 * f:.0f} %" for f in due)
        self.say(f"checkpoint {pct} (step {state.step}, position {self.position}): {shown}")

    def on_fit_start(self, state: LoopState) -> None:
        """Evaluate the fractions already due (``0.0`` before training)."""
        self._fire(state)

    def after_step(self, state: LoopState, batch: Any, out: Any) -> Mapping[str, float]:
        """After the last repeat of a batch, advance the position and fire due fractions."""
        step: StreamStep = batch
        if step.repeat == self.repeats - 1:
            self.position = step.batch.stop
            self._fire(state)
        return {"batch": step.number, "position": step.batch.stop}

    def state_dict(self) -> dict[str, Any]:
        """The position reached and the checkpoint records."""
        return {"position": self.position, "evaluations": [dict(e) for e in self.evaluations]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.position = int(state["position"])
        self.evaluations = [dict(e) for e in state["evaluations"]]


def stream_step_fn(
    replay: ReplayCallback | None = None, regularizer: RegularizerCallback | None = None
) -> StepFn:
    """The ``step_fn`` of a stream: fresh + replayed items, loss backward, penalty backward.

    Args:
        replay: Mixes replayed items into the step (``None``: the fresh items only).
        regularizer: Back-propagates the EWC / SI penalty after the loss.

    Returns:
        A ``step_fn`` for :func:`~jepa_blocks.train.fit` over a :class:`RepeatedStream`: the
        forward pass under ``state.autocast()``, the finite-loss check and ``loss.backward()``
        of :func:`~jepa_blocks.train.default_step_fn`, then ``regularizer.backward()``.
    """
    forward_backward = default_step_fn()

    def step_fn(model: nn.Module, batch: Any, state: LoopState) -> Any:
        step: StreamStep = batch
        if replay is not None:
            seqs = replay.mix(step, state.device)
        else:
            seqs = step.batch.sequences.to(state.device)
        out = forward_backward(model, seqs, state)
        if regularizer is not None:
            regularizer.backward()
        return out

    return step_fn


def train_stream(
    model: nn.Module,
    stream: SequenceStream,
    *,
    train: TrainConfig | None = None,
    stream_config: StreamConfig | None = None,
    buffer: ReplayBuffer | None = None,
    regularizer: WeightRegularizer | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    eval_fn: EvalFn | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> StreamResult:
    """Train ``model`` in a single pass over ``stream`` with :func:`~jepa_blocks.train.fit`.

    A composition of the module's parts: :class:`RepeatedStream` as the loader,
    :func:`stream_step_fn`, and the callbacks :class:`ReplayCallback` (with a buffer),
    :class:`RegularizerCallback` (with a regulariser) and :class:`StreamCheckpoints`. The global
    generators are seeded with ``train.seed`` first.

    Args:
        model: A module called as ``model(views, actions)`` returning an output with a scalar
            ``loss`` and a ``z_agg`` ``(B, F)`` used as the buffer features (e.g.
            :class:`~jepa_blocks.SeqJEPA`); its ``update()`` runs after every optimizer step.
        stream: The stream; each batch is fetched once.
        train: The loop's config (default ``TrainConfig(schedule="constant",
            warmup_steps=0)``). A stream is one pass: ``epochs`` is set to 1, and
            ``warmup_steps=None`` means no warm-up (``warmup_epochs`` is not used).
            ``schedule="constant"`` keeps ``lr`` after the warm-up (a stream has no natural
            end), ``"cosine"`` decays it to ``final_lr`` over the stream.
        stream_config: The stream's settings (default :class:`StreamConfig`).
        buffer: Replay buffer (``None``: no replay).
        regularizer: :class:`~jepa_blocks.streaming.EWC` / :class:`~jepa_blocks.streaming.SI`
            on (part of) the model, usually ``model.encoder``.
        optimizer: Default: :func:`~jepa_blocks.train.build_optimizer` of ``train.recipe``
            (``"paper"``: AdamW).
        eval_fn: ``(model, info) → metrics`` at every checkpoint, model in eval mode.
        resume_from: A checkpoint written by an earlier call with the same arguments (e.g.
            ``out_dir/stream-050.pt``).
        log: Called with one line per checkpoint (e.g. ``print``).

    Returns:
        :class:`StreamResult`.

    Raises:
        NonFiniteLossError: When a loss is NaN or infinite (before its backward pass).
    """
    t0 = time.perf_counter()
    train = TrainConfig(schedule="constant", warmup_steps=0) if train is None else train
    config = StreamConfig() if stream_config is None else stream_config
    if not isinstance(train, TrainConfig):
        raise TypeError(f"train must be a TrainConfig, got {type(train).__name__}")
    if not isinstance(config, StreamConfig):
        raise TypeError(f"stream_config must be a StreamConfig, got {type(config).__name__}")
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
    train = dataclasses.replace(
        train, epochs=1, warmup_steps=0 if train.warmup_steps is None else train.warmup_steps
    )
    k = config.repeats
    seed_everything(train.seed)
    device = resolve_device(train.device)
    model = model.to(device)
    if regularizer is not None:
        regularizer.to(device)

    replay = (
        ReplayCallback(
            buffer, stream, replay_ratio=config.replay_ratio, store=config.store, repeats=k
        )
        if buffer is not None
        else None
    )
    consolidation = (
        RegularizerCallback(
            regularizer,
            stream,
            consolidate=config.consolidate,
            consolidate_every=config.consolidate_every,
            repeats=k,
        )
        if regularizer is not None
        else None
    )
    checkpoints = StreamCheckpoints(
        stream,
        fractions=config.checkpoints,
        repeats=k,
        eval_fn=eval_fn,
        save=config.save_checkpoints,
        log=log,
    )
    callbacks = [cb for cb in (replay, consolidation, checkpoints) if cb is not None]
    result = fit(
        model,
        RepeatedStream(stream, repeats=k),
        train,
        optimizer=optimizer,
        step_fn=stream_step_fn(replay, consolidation),
        callbacks=callbacks,
        full_config={"train": config_to_dict(train), "stream": dataclasses.asdict(config)},
        resume_from=resume_from,
    )
    seconds = {"total": time.perf_counter() - t0, "eval": checkpoints.eval_seconds}
    seconds["train"] = seconds["total"] - seconds["eval"]
    return StreamResult(
        result.model,
        result.history,
        checkpoints.evaluations,
        result.step,
        checkpoints.saved,
        seconds,
        buffer,
        regularizer,
    )
