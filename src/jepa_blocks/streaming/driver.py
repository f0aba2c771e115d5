r"""Single-pass training: a stream is a batch iterable of :func:`jepa_blocks.train.fit`.

``K = repeats`` steps per incoming batch (Purushwalkam, Morgado & Gupta, 2022). Seeds: views of
batch ``b``: ``mix_seed(seed, b)``; replayed views of repeat ``r``: ``mix_seed(seed, b, 1 + r)``;
the buffer's own generator; the global one, ``train.seed``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

from jepa_blocks._validation import (
    check_bool,
    check_choice,
    check_int,
    check_positive,
    check_type,
)
from jepa_blocks.data.sequences import ViewSequence
from jepa_blocks.metrics.evaluation import eval_mode
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


def _check_fractions(values: Iterable[float], name: str) -> tuple[float, ...]:
    """Sorted, distinct fractions in ``[0, 1]``."""
    vals = list(values) if isinstance(values, Iterable) and not isinstance(values, str) else None
    if vals is None or any(isinstance(f, bool) or not isinstance(f, (int, float)) for f in vals):
        raise TypeError(f"{name} must be a sequence of fractions in [0, 1], got {values!r}")
    fr = sorted({float(f) for f in vals})
    if any(not (math.isfinite(f) and 0.0 <= f <= 1.0) for f in fr):
        raise ValueError(f"{name} must be fractions in [0, 1], got {tuple(vals)}")
    return tuple(fr)


Store = Literal["indices", "sequences"]
Consolidation = Literal["boundaries", "every"]


def _check_consolidation(consolidate: Consolidation, every: int) -> None:
    check_choice(consolidate, "consolidate", get_args(Consolidation))
    check_int(every, "consolidate_every", minimum=0)
    if consolidate == "every" and every < 1:
        raise ValueError(f"consolidate='every' needs consolidate_every >= 1, got {every}")


@dataclasses.dataclass
class StreamConfig:
    """What a stream adds to the loop's :class:`~jepa_blocks.train.TrainConfig`.

    Attributes:
        repeats: ``K``, optimizer steps per incoming batch.
        replay_ratio: Replayed items per fresh item (with a buffer).
        store: ``"indices"`` (views regenerated on replay) or ``"sequences"`` (kept as they are).
        checkpoints: Fractions of the stream after which to evaluate (and save), in ``[0, 1]``.
        consolidate: ``"boundaries"`` (the plan's nominal split ends) or ``"every"``.
        consolidate_every: Steps between consolidations for ``"every"``.
        save_checkpoints: Save the full state at each checkpoint (needs the loop's ``out_dir``).
    """

    repeats: int = 1
    replay_ratio: float = 1.0
    store: Store = "indices"
    checkpoints: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    consolidate: Consolidation = "boundaries"
    consolidate_every: int = 0
    save_checkpoints: bool = True

    def __post_init__(self) -> None:
        check_int(self.repeats, "repeats")
        check_positive(self.replay_ratio, "replay_ratio", allow_zero=True)
        check_choice(self.store, "store", get_args(Store))
        _check_consolidation(self.consolidate, self.consolidate_every)
        self.checkpoints = _check_fractions(self.checkpoints, "checkpoints")
        check_bool(self.save_checkpoints, "save_checkpoints")


@dataclasses.dataclass
class StreamResult:
    """What :func:`train_stream` returns.

    Attributes:
        model: The trained model.
        history: The loop's records plus ``batch``, ``position``, ``replayed``, ``buffer_size``
            and ``penalty``.
        evaluations: Per checkpoint: ``fraction`` (nominal), ``progress`` (actual), ``position``,
            ``step`` and the metrics of ``eval_fn``.
        step: Optimizer steps done.
        checkpoints: Paths of the checkpoints saved by this call.
        seconds: ``{"train", "eval", "total"}`` wall times of this call.
        buffer: The buffer, if any.
        regularizer: The regulariser, if any.
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
    """Repeat ``repeat`` (``0 … K-1``) of batch ``number``."""

    number: int
    repeat: int
    batch: StreamBatch


class RepeatedStream:
    """A stream as a batch iterable of :func:`~jepa_blocks.train.fit`: each batch fetched once.

    Args:
        stream: The stream.
        repeats: ``K``, optimizer steps per incoming batch.
    """

    def __init__(self, stream: SequenceStream, *, repeats: int = 1) -> None:
        check_type(stream, "stream", SequenceStream)
        self.stream = stream
        self.repeats = check_int(repeats, "repeats")

    def __len__(self) -> int:
        return len(self.stream) * self.repeats

    def __iter__(self) -> Iterator[StreamStep]:
        for number in range(len(self.stream)):
            batch = self.stream.batch(number)
            for repeat in range(self.repeats):
                yield StreamStep(number, repeat, batch)


class ReplayCallback(Callback):
    """Experience replay: mixes buffer items into every step, then feeds the buffer.

    Args:
        buffer: The replay buffer (its state goes into the loop's checkpoints).
        stream: The stream (regenerates the views of replayed indices).
        replay_ratio: Replayed items per fresh item.
        store: ``"indices"`` (views from ``stream.generator(b, 1 + r)``) or ``"sequences"``.
        repeats: ``K``, optimizer steps per incoming batch.
    """

    def __init__(
        self,
        buffer: ReplayBuffer,
        stream: SequenceStream,
        *,
        replay_ratio: float = 1.0,
        store: Store = "indices",
        repeats: int = 1,
    ) -> None:
        check_type(buffer, "buffer", ReplayBuffer)
        check_type(stream, "stream", SequenceStream)
        self.buffer = buffer
        self.stream = stream
        self.replay_ratio = check_positive(replay_ratio, "replay_ratio", allow_zero=True)
        self.store = check_choice(store, "store", get_args(Store))
        self.repeats = check_int(repeats, "repeats")
        self._fresh: ViewSequence | None = None
        self._slots = torch.empty(0, dtype=torch.long)

    def mix(self, step: StreamStep, device: torch.device) -> ViewSequence:
        """The fresh sequences of ``step`` on ``device``, followed by the replayed ones."""
        fresh = self._fresh = step.batch.sequences.to(device)
        self._slots = torch.empty(0, dtype=torch.long)
        n = int(fresh.views.shape[0])
        k = replay_count(n, ratio=self.replay_ratio, available=len(self.buffer))
        if not k:
            return fresh
        items, self._slots = self.buffer.sample(k)
        if self.store == "indices":
            gen = self.stream.generator(step.number, 1 + step.repeat)
            replayed = self.stream.maker(items["index"], items["regime"], gen)
        else:
            replayed = ViewSequence(*(items[f] for f in ViewSequence._fields))
        return ViewSequence(*(torch.cat((x, y.to(x.device))) for x, y in zip(fresh, replayed)))

    def _items(self, fresh: ViewSequence, batch: StreamBatch) -> dict[str, Tensor]:
        meta = {"regime": batch.regimes.cpu(), "split": batch.splits.cpu()}
        if self.store == "indices":
            return {"index": fresh.indices.cpu(), **meta}
        items = {k: v.detach() for k, v in fresh._asdict().items()}
        return items | {k: v.to(fresh.views.device) for k, v in meta.items()}

    def after_step(self, state: LoopState, batch: Any, out: Any) -> Mapping[str, float]:
        """Update the replayed slots; after the ``K``-th repeat, add the fresh items."""
        step: StreamStep = batch
        fresh = self._fresh
        if fresh is None:
            raise RuntimeError("ReplayCallback.mix was not called this step (use stream_step_fn)")
        n, z = int(fresh.views.shape[0]), getattr(out, "z_agg", None)
        z_new, z_old = (z.detach()[:n], z.detach()[n:]) if isinstance(z, Tensor) else (None, None)
        replayed = int(self._slots.numel())
        if replayed:
            self.buffer.update(self._slots, features=z_old)
        record = {"replayed": replayed, "buffer_size": len(self.buffer)}
        if step.repeat == self.repeats - 1:
            self.buffer.add(self._items(fresh, step.batch), features=z_new)
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
        consolidate: Consolidation = "boundaries",
        consolidate_every: int = 0,
        repeats: int = 1,
    ) -> None:
        check_type(regularizer, "regularizer", WeightRegularizer)
        check_type(stream, "stream", SequenceStream)
        _check_consolidation(consolidate, consolidate_every)
        self.regularizer = regularizer
        self.consolidate = consolidate
        self.consolidate_every = consolidate_every
        self.boundaries = set(stream.plan.boundaries)
        self.repeats = check_int(repeats, "repeats")
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
                due = any(step.batch.start < b <= step.batch.stop for b in self.boundaries)
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

    Fraction ``f`` is due once the position reaches ``round(f · N)`` items; ``eval_fn`` then runs
    once in eval mode and the state goes to ``out_dir/stream-<percent>.pt`` (with ``save``).

    Args:
        stream: The stream.
        fractions: Checkpoint fractions in ``[0, 1]``.
        repeats: ``K``, optimizer steps per incoming batch.
        eval_fn: ``(model, info) → metrics`` (``None``: records without metrics).
        save: Save the state at each fraction.
        log: Called with one line per checkpoint (e.g. ``print``).

    Attributes:
        evaluations: The checkpoint records (as :attr:`StreamResult.evaluations`).
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
        self.fractions = _check_fractions(fractions, "fractions")
        check_type(stream, "stream", SequenceStream)
        for name, fn in (("eval_fn", eval_fn), ("log", log)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
        self.num_items = len(stream.plan)
        self.repeats = check_int(repeats, "repeats")
        self.eval_fn = eval_fn
        self.save = check_bool(save, "save")
        self.say = log if log is not None else (lambda _: None)
        self.position = 0
        self.evaluations: list[dict[str, Any]] = []
        self.saved: list[Path] = []
        self.eval_seconds = 0.0

    def _fire(self, state: LoopState) -> None:
        done = {float(e["fraction"]) for e in self.evaluations}
        pos, n = self.position, self.num_items
        due = [f for f in self.fractions if f not in done and round(f * n) <= pos]
        if not due:
            return
        t0 = time.perf_counter()
        info = {"progress": pos / n, "position": pos, "step": state.step}
        metrics: dict[str, Any] = {}
        if self.eval_fn is not None:
            with eval_mode(state.model):
                metrics = dict(self.eval_fn(state.model, {"fraction": due[-1], **info}))
        for fraction in due:
            self.evaluations.append({"fraction": fraction, **info, **metrics})
            if self.save and state.out_dir is not None:
                name = f"stream-{round(100 * fraction):03d}.pt"
                path = state.save_checkpoint(state.out_dir / name)
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
    """
    check_type(replay, "replay", (ReplayCallback, type(None)))
    check_type(regularizer, "regularizer", (RegularizerCallback, type(None)))
    forward_backward = default_step_fn()

    def step_fn(model: nn.Module, batch: Any, state: LoopState) -> Any:
        step: StreamStep = batch
        device = state.device
        seqs = replay.mix(step, device) if replay is not None else step.batch.sequences.to(device)
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

    Args:
        model: ``model(views, actions)`` returns a scalar ``loss`` and a ``z_agg`` ``(B, F)`` (the
            buffer features), e.g. :class:`~jepa_blocks.SeqJEPA`.
        stream: The stream; each batch is fetched once.
        train: The loop's config (default ``TrainConfig(schedule="constant", warmup_steps=0)``);
            ``epochs`` is set to 1 and ``warmup_steps=None`` means no warm-up.
        stream_config: The stream's settings (default :class:`StreamConfig`).
        buffer: Replay buffer (``None``: no replay).
        regularizer: :class:`~jepa_blocks.streaming.EWC` / :class:`~jepa_blocks.streaming.SI`.
        optimizer: Default: :func:`~jepa_blocks.train.build_optimizer` of ``train.recipe``.
        eval_fn: ``(model, info) → metrics`` at every checkpoint, model in eval mode.
        resume_from: A checkpoint of an earlier call with the same arguments.
        log: Called with one line per checkpoint (e.g. ``print``).

    Raises:
        NonFiniteLossError: When a loss is NaN or infinite (before its backward pass).
    """
    t0 = time.perf_counter()
    train = TrainConfig(schedule="constant", warmup_steps=0) if train is None else train
    config = StreamConfig() if stream_config is None else stream_config
    check_type(train, "train", TrainConfig)
    check_type(config, "stream_config", StreamConfig)
    check_type(model, "model", nn.Module)
    k = config.repeats
    loader = RepeatedStream(stream, repeats=k)
    replay = consolidation = None
    if buffer is not None:
        replay = ReplayCallback(
            buffer, stream, replay_ratio=config.replay_ratio, store=config.store, repeats=k
        )
    if regularizer is not None:
        consolidation = RegularizerCallback(
            regularizer,
            stream,
            consolidate=config.consolidate,
            consolidate_every=config.consolidate_every,
            repeats=k,
        )
    checkpoints = StreamCheckpoints(
        stream,
        fractions=config.checkpoints,
        repeats=k,
        eval_fn=eval_fn,
        save=config.save_checkpoints,
        log=log,
    )
    train = dataclasses.replace(train, epochs=1, warmup_steps=train.warmup_steps or 0)
    seed_everything(train.seed)
    device = resolve_device(train.device)
    model = model.to(device)
    if regularizer is not None:
        regularizer.to(device)
    result = fit(
        model,
        loader,
        train,
        optimizer=optimizer,
        step_fn=stream_step_fn(replay, consolidation),
        callbacks=[cb for cb in (replay, consolidation, checkpoints) if cb is not None],
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
