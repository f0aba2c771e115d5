"""The training loop: one :func:`fit` for every recipe (epochs, streams, block-local training).

It trains any module whose output has a scalar ``loss`` on any batch iterable with ``__len__``
and resumes exactly (``N`` steps + resume + ``N`` steps equal ``2N`` steps); what one step does,
checkpoints and resuming are described on the "Training loop" page.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jepa_blocks._validation import NonFiniteError
from jepa_blocks.distributed import is_distributed
from jepa_blocks.train.checkpoint import (
    load_latest_checkpoint,
    previous_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from jepa_blocks.train.config import TrainConfig, config_to_dict
from jepa_blocks.train.schedule import build_optimizer, lr_at

__all__ = [
    "Callback",
    "FitResult",
    "LoopState",
    "NonFiniteLossError",
    "ResumeMismatchError",
    "StepFn",
    "config_differences",
    "default_batch_fn",
    "default_step_fn",
    "fit",
    "loss_of",
    "resolve_device",
    "scalars_of",
    "schedule_steps",
    "seed_everything",
]

CHECKPOINT_NAME = "checkpoint.pt"
#: Config keys that may differ on resume: they change how a run is logged or run, not its result.
RESUME_MUTABLE_KEYS = frozenset(
    {
        "out_dir", "resume", "progress", "log_every", "wandb", "wandb_project", "wandb_mode",
        "device", "compile", "checkpoint_every_steps", "eval_every_epochs",
    }
)  # fmt: skip


class ResumeMismatchError(ValueError):
    """The checkpoint in ``out_dir`` was written by a run with another config."""


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        return {kk: vv for k, v in data.items() for kk, vv in _flatten(v, f"{prefix}{k}.").items()}
    return {prefix[:-1]: list(data) if isinstance(data, tuple) else data}


def config_differences(
    saved: Any, current: Any, *, ignore: Sequence[str] = ()
) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, current value)`` for every differing leaf of two nested configs,
    except keys ending in :data:`RESUME_MUTABLE_KEYS` and keys under a dotted prefix in ``ignore``.
    """
    a, b = _flatten(saved or {}), _flatten(current or {})
    out = []
    for key in sorted(set(a) | set(b)):
        skip = key.rsplit(".", 1)[-1] in RESUME_MUTABLE_KEYS
        if skip or any(key == p or key.startswith(p + ".") for p in ignore):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            out.append((key, a.get(key, "<absent>"), b.get(key, "<absent>")))
    return out


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient is NaN or infinite; nothing is stepped or saved."""


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: The trained (unwrapped) model.
        history: One dict per logged step or evaluation.
        step: Optimizer steps done.
        epoch: Completed epochs.
        checkpoint: Path of the last checkpoint written (``None`` without ``out_dir``).
        seconds: Wall time of this call.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    step: int
    epoch: int
    checkpoint: Path | None
    seconds: float


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (seed the legacy global generator too)
    torch.manual_seed(seed)


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` → CUDA (this rank's device under ``torchrun``) when available, else CPU."""
    if spec == "auto" and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu" if spec == "auto" else spec)


def schedule_steps(loader: Iterable[Any], config: TrainConfig) -> tuple[int, int]:
    """``(total_steps, warmup_steps)``: ``epochs · len(loader)`` capped by ``max_steps``, and
    ``warmup_steps`` when set, else ``warmup_epochs · len(loader)``."""
    steps_per_epoch = len(loader)  # type: ignore[arg-type]
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup = config.warmup_steps
    return total_steps, round(config.warmup_epochs * steps_per_epoch) if warmup is None else warmup


def default_batch_fn(model: nn.Module, batch: Any, device: torch.device) -> Any:
    """Call ``model(views, actions)`` on a batch with ``views`` and ``actions`` fields."""
    views = batch.views.to(device, non_blocking=True)
    actions = batch.actions.to(device, non_blocking=True)
    return model(views, actions)


def scalars_of(out: Any) -> dict[str, float]:
    """Scalar tensor fields of a model output (NamedTuple, dataclass or dict) as floats."""
    if hasattr(out, "_asdict"):
        items = out._asdict().items()
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        items = ((f.name, getattr(out, f.name)) for f in dataclasses.fields(out))
    elif isinstance(out, Mapping):
        items = out.items()
    else:
        items = [("loss", out)]
    return {
        k: float(v.detach()) for k, v in items if isinstance(v, torch.Tensor) and v.numel() == 1
    }


def loss_of(out: Any) -> torch.Tensor:
    """The scalar loss of a model output: the tensor itself or its ``loss`` field.

    Raises:
        TypeError: When there is no scalar loss.
    """
    loss = out if isinstance(out, torch.Tensor) else getattr(out, "loss", None)
    if loss is None and isinstance(out, Mapping):
        loss = out.get("loss")
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(
            "the model output must be a scalar tensor or have a scalar 'loss' field, got "
            f"{type(out).__name__}"
            + (f" with loss of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else "")
        )
    return loss.reshape(())


@dataclasses.dataclass
class LoopState:
    """The loop's state, handed to ``step_fn`` and to every callback.

    Attributes:
        model: The unwrapped model (parameters, ``state_dict``).
        train_model: What the step calls: the model, possibly wrapped by DDP / ``torch.compile``.
        optimizer: The optimizer.
        config: The loop's :class:`~jepa_blocks.train.TrainConfig`.
        device: The training device.
        use_amp: Whether the forward pass runs under bf16 autocast.
        total_steps: Optimizer steps of the whole run.
        warmup_steps: Learning-rate warm-up steps.
        step: Optimizer steps done.
        epoch: Completed epochs.
        batch_in_epoch: Batches done in the current epoch.
        lr: The learning rate of the current step.
        rank: This process's rank (0 when not distributed).
        out_dir: Where files go (``None``: nowhere).
        history: Logged records (training steps and evaluations).
    """

    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    device: torch.device
    use_amp: bool
    total_steps: int
    warmup_steps: int
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    lr: float = 0.0
    rank: int = 0
    out_dir: Path | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    _save: Callable[[Path | None], Path | None] | None = dataclasses.field(default=None, repr=False)
    _log: Callable[[dict[str, Any]], None] | None = dataclasses.field(default=None, repr=False)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward pass's autocast context (bf16 when ``use_amp``, else a no-op)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp)

    def log(self, record: Mapping[str, Any]) -> None:
        """Append a record to the history and the metrics stream (rank 0)."""
        rec = dict(record)
        self.history.append(rec)
        if self._log is not None:
            self._log(rec)

    def save_checkpoint(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Save the full state now (default path ``out_dir/checkpoint.pt``; rank 0 only).

        Returns:
            The path written, or ``None`` when nothing was written (no ``out_dir``, rank > 0).
        """
        if self._save is None:
            return None
        return self._save(None if path is None else Path(path))

    def check_finite(self, loss: torch.Tensor, *, where: str = "its backward pass") -> None:
        """Raise :class:`NonFiniteLossError` if ``loss`` is NaN or infinite."""
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"non-finite loss {value} at step {self.step} (epoch {self.epoch}, batch "
                f"{self.batch_in_epoch}); training stopped before {where}"
            )


#: ``(model, batch, state) → output``: forward and backward of one step (see :func:`fit`).
StepFn = Callable[[nn.Module, Any, LoopState], Any]


def default_step_fn(
    batch_fn: Callable[[nn.Module, Any, torch.device], Any] = default_batch_fn,
) -> StepFn:
    """The standard step: ``batch_fn`` under autocast, finite-loss check, ``loss.backward()``.

    Args:
        batch_fn: ``(model, batch, device) → output``.
    """

    def step_fn(model: nn.Module, batch: Any, state: LoopState) -> Any:
        with state.autocast():
            out = batch_fn(model, batch, state.device)
        loss = loss_of(out)
        state.check_finite(loss)
        loss.backward()
        return out

    return step_fn


class Callback:
    """Hooks into :func:`fit`; every hook is optional.

    ``after_step`` may return scalars for the step's logged record, ``after_epoch`` scalars logged
    as ``eval/<name>``; ``state_dict``/``load_state_dict`` go into the loop's checkpoints.
    """

    def on_fit_start(self, state: LoopState) -> None:
        """Called once, after the model, optimizer and any resumed state are in place."""

    def after_step(self, state: LoopState, batch: Any, out: Any) -> Mapping[str, float] | None:
        """Called after every optimizer step and ``model.update()``."""

    def after_epoch(self, state: LoopState) -> Mapping[str, float] | None:
        """Called at the end of every epoch (``state.epoch`` already counts it)."""

    def on_fit_end(self, state: LoopState) -> None:
        """Called once when training ends normally."""

    def state_dict(self) -> dict[str, Any]:
        """State stored in the loop's checkpoints."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class _MetricsWriter:
    """JSONL stream (and an optional W&B run) for the rank-0 process."""

    def __init__(self, out_dir: Path | None, config: TrainConfig, full_config: Any) -> None:
        self.path = out_dir / "metrics.jsonl" if out_dir is not None else None
        self.wandb = None
        if config.wandb and config.wandb_mode != "disabled":
            import wandb  # optional dependency, imported only when asked for

            self.wandb = wandb.init(
                project=config.wandb_project,
                mode=config.wandb_mode,
                config=full_config,
                dir=str(out_dir) if out_dir is not None else None,
            )

    def restart(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the JSONL stream with ``history`` (records after a checkpoint are dropped)."""
        if self.path is not None:
            with open(self.path, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(rec) + "\n" for rec in history)

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log(record, step=int(record.get("step", 0)))

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Write the metrics history as CSV (union of keys as columns)."""
    keys = list(dict.fromkeys(k for rec in history for k in rec))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


class _Progress:
    """tqdm when installed and wanted, else nothing (metrics still go to the log)."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            with contextlib.suppress(ImportError):
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, file=sys.stderr)

    def update(self, postfix: dict[str, float] | None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _skip(it: Iterator[Any], n: int) -> Iterator[Any]:
    for _ in range(n):
        next(it)
    return it


def _set_lr(optimizer: torch.optim.Optimizer, config: TrainConfig, state: LoopState) -> float:
    """Set every group's learning rate to the schedule's value at ``state.step``."""
    recipe = {"recipe": config.recipe, "constant": "official", "cosine": "paper"}[config.schedule]
    lr = lr_at(
        state.step,
        recipe=recipe,
        total_steps=state.total_steps,
        warmup_steps=state.warmup_steps,
        base_lr=config.lr,
        warmup_start_lr=config.warmup_start_lr,
        final_lr=config.final_lr,
    )
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite (one synchronisation)."""
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    return (v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor))


def fit(
    model: nn.Module,
    loader: Iterable[Any],
    config: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    step_fn: StepFn | None = None,
    callbacks: Sequence[Callback] = (),
    batch_fn: Callable[[nn.Module, Any, torch.device], Any] = default_batch_fn,
    eval_fn: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
    full_config: Any = None,
    resume_from: str | os.PathLike[str] | None = None,
    resume_ignore: Sequence[str] = (),
) -> FitResult:
    """Train ``model`` on ``loader`` (one step is described on the "Training loop" page).

    Args:
        model: Module whose output has a scalar ``loss``; its ``update()``, if any, runs after
            every optimizer step.
        loader: Iterable of batches with ``__len__``; ``set_epoch(epoch)`` is called when present.
        config: Loop hyperparameters.
        optimizer: Default: :func:`jepa_blocks.train.build_optimizer` of ``config.recipe``.
        step_fn: ``(model, batch, state) → output``: forward and backward passes of one step
            (default: :func:`default_step_fn` of ``batch_fn``).
        callbacks: :class:`Callback` hooks, called in order.
        batch_fn: ``(model, batch, device) → output`` of the default step.
        eval_fn: ``(model, epoch) → metrics`` run every ``config.eval_every_epochs`` epochs and at
            the end, in eval mode without gradients (rank 0 only); logged as ``eval/<name>``.
        full_config: The whole experiment config, stored in checkpoints and W&B.
        resume_from: Resume from this checkpoint (default: ``out_dir/checkpoint.pt`` when
            ``config.resume`` and it exists, else the previous one, with a warning).
        resume_ignore: Dotted keys of ``full_config`` that may differ from the checkpoint's;
            any other difference raises :class:`ResumeMismatchError`.

    Raises:
        NonFiniteLossError: When a loss, the gradient norm or the parameters become NaN/inf
            (nothing is stepped or saved from a non-finite state).
        ResumeMismatchError: When the checkpoint to resume from has another config.
        CheckpointError: When no trustworthy checkpoint can be read.
    """
    t_start = time.perf_counter()
    for name, value, cls, what in (
        ("model", model, nn.Module, "an nn.Module"),
        ("config", config, TrainConfig, "a TrainConfig"),
        ("optimizer", optimizer, (torch.optim.Optimizer, type(None)), "a torch.optim.Optimizer"),
    ):
        if not isinstance(value, cls):
            raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    if not (hasattr(loader, "__iter__") and hasattr(loader, "__len__")):
        raise TypeError(f"loader must be an iterable with a length, got {type(loader).__name__}")
    for name, fn in (("step_fn", step_fn), ("batch_fn", batch_fn), ("eval_fn", eval_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    if len(loader) < 1:  # type: ignore[arg-type]
        raise ValueError("loader must yield at least one batch per epoch, got len(loader) = 0")
    callbacks = tuple(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
    step_fn = default_step_fn(batch_fn) if step_fn is None else step_fn
    device = resolve_device(config.device)
    distributed = is_distributed()
    rank = torch.distributed.get_rank() if distributed else 0
    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    if out_dir is not None and rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME if out_dir is not None else None

    model = model.to(device)
    if config.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-arg,call-overload]
    if optimizer is None:
        optimizer = build_optimizer(
            model, recipe=config.recipe, lr=config.lr, weight_decay=config.weight_decay
        )
    total_steps, warmup_steps = schedule_steps(loader, config)
    state = LoopState(
        model=model,
        train_model=model,
        optimizer=optimizer,
        config=config,
        device=device,
        use_amp=config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda"),
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        rank=rank,
        out_dir=out_dir,
    )

    resume_path = Path(resume_from) if resume_from is not None else None
    has_ckpt = ckpt_path is not None and (ckpt_path.is_file() or previous_path(ckpt_path).is_file())
    if resume_path is None and config.resume and has_ckpt:
        resume_path = ckpt_path
    if resume_path is not None:
        saved, _ = load_latest_checkpoint(resume_path, map_location=device)
        diffs = config_differences(saved.get("config"), config_to_dict(config))
        diffs += config_differences(saved.get("full_config"), full_config, ignore=resume_ignore)
        if diffs:
            shown = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in diffs)
            raise ResumeMismatchError(
                f"cannot resume from {str(resume_path)!r}: it was written with another config "
                f"({shown}). Start over with train.resume=false (resume=False), or write to "
                f"another directory (--out in the recipes, TrainConfig.out_dir)"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state.step, state.epoch = saved["step"], saved["epoch"]
        state.batch_in_epoch = saved["batch_in_epoch"]
        state.history = list(saved.get("history", []))
        for cb, cb_state in zip(callbacks, saved.get("callbacks", [{}] * len(callbacks))):
            cb.load_state_dict(cb_state)
        set_rng_state(saved["rng"])

    if distributed:
        wrapped = nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else model
        state.train_model = nn.parallel.DistributedDataParallel(
            wrapped, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        state.train_model = torch.compile(state.train_model)  # type: ignore[assignment]

    writer = _MetricsWriter(out_dir, config, full_config) if rank == 0 else None
    if writer is not None:
        writer.restart(state.history)  # a resumed log equals an uninterrupted run's
    state._log = writer.write if writer is not None else None
    progress = _Progress(total_steps, state.step, config.progress and rank == 0)
    last_ckpt: Path | None = ckpt_path if ckpt_path is not None and ckpt_path.is_file() else None

    saved_at: tuple[int, int] | None = None  # (step, records) of the last default-path save
    # Saves asked for by after_step callbacks wait until the step's record is logged, so that a
    # checkpoint's history includes its own step.
    deferred: list[Path | None] | None = None

    def save(path: Path | None) -> Path | None:
        nonlocal last_ckpt, saved_at
        dest = path if path is not None else ckpt_path
        if dest is None or rank != 0:
            return None
        if deferred is not None:
            deferred.append(path)
            return dest
        if path is None:
            if saved_at == (state.step, len(state.history)):
                return dest  # nothing changed since the last save (the end of the last epoch)
            saved_at = (state.step, len(state.history))
        if not (_all_finite(model.parameters()) and _all_finite(_optimizer_tensors(optimizer))):
            raise NonFiniteLossError(
                f"non-finite parameters or optimizer state at step {state.step}; no checkpoint "
                f"written to {str(dest)!r}"
            )
        save_checkpoint(
            dest,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": state.step,
                "epoch": state.epoch,
                "batch_in_epoch": state.batch_in_epoch,
                "rng": rng_state(),
                "history": state.history,
                "callbacks": [cb.state_dict() for cb in callbacks],
                "config": config_to_dict(config),
                "full_config": full_config,
            },
        )
        last_ckpt = dest
        return dest

    state._save = save

    def log_eval(metrics: Mapping[str, Any]) -> None:
        if metrics:
            rec = {"step": state.step, "epoch": state.epoch}
            state.log({**rec, **{f"eval/{k}": v for k, v in metrics.items()}})

    def evaluate() -> None:
        if eval_fn is None or rank != 0:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = eval_fn(model, state.epoch)
        model.train(was_training)
        log_eval(metrics)

    def end_of_epoch() -> None:
        state.epoch += 1
        state.batch_in_epoch = 0
        if config.eval_every_epochs and state.epoch % config.eval_every_epochs == 0:
            evaluate()
        for cb in callbacks:
            log_eval(cb.after_epoch(state) or {})

    update = getattr(model, "update", None)
    params = [p for p in model.parameters() if p.requires_grad]
    clip = config.grad_clip if config.grad_clip is not None else math.inf  # inf: no clipping
    model.train()
    for cb in callbacks:
        cb.on_fit_start(state)
    try:
        while state.step < total_steps and state.epoch < config.epochs:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(state.epoch)
            for batch in _skip(iter(loader), state.batch_in_epoch):
                if state.step >= total_steps:
                    break
                lr = state.lr = _set_lr(optimizer, config, state)
                optimizer.zero_grad(set_to_none=True)
                try:
                    out = step_fn(state.train_model, batch, state)
                except NonFiniteError as e:  # a part refused non-finite activations
                    raise NonFiniteLossError(
                        f"non-finite values in the forward pass at step {state.step} (epoch "
                        f"{state.epoch}, batch {state.batch_in_epoch}): {e}; training stopped "
                        f"before the optimizer step"
                    ) from e
                state.check_finite(loss_of(out), where="the optimizer step")
                norm = torch.nn.utils.clip_grad_norm_(params, clip)  # the global gradient norm
                if not math.isfinite(float(norm)):
                    where = f"; the last good checkpoint is {last_ckpt}" if last_ckpt else ""
                    raise NonFiniteLossError(
                        f"non-finite gradient norm {float(norm)} at step {state.step} (epoch "
                        f"{state.epoch}, batch {state.batch_in_epoch}) with a finite loss; "
                        f"training stopped before the optimizer step{where}"
                    )
                optimizer.step()
                if not _all_finite(params):
                    raise NonFiniteLossError(
                        f"non-finite parameters after the optimizer step at step {state.step} "
                        f"(lr {lr:.3g}, gradient norm {float(norm):.3g}): the step diverged"
                    )
                if callable(update):
                    update()
                state.step += 1
                state.batch_in_epoch += 1
                extra: dict[str, float] = {}
                deferred = []
                for cb in callbacks:
                    extra.update(cb.after_step(state, batch, out) or {})
                postfix = None
                if state.step % config.log_every == 0 or state.step == total_steps:
                    postfix = {"lr": lr, **scalars_of(out), **extra}
                    state.log({"step": state.step, "epoch": state.epoch, **postfix})
                pending, deferred = deferred, None
                for path in pending:
                    save(path)
                progress.update(postfix)
                ckpt_every = config.checkpoint_every_steps
                if ckpt_every and state.step % ckpt_every == 0:
                    save(None)
            else:
                end_of_epoch()
                save(None)
                continue
            break  # max_steps reached inside the epoch
        eval_every = config.eval_every_epochs
        if not (eval_every and state.batch_in_epoch == 0 and state.epoch % eval_every == 0):
            evaluate()  # unless the last epoch end just did
        save(None)
        for cb in callbacks:
            cb.on_fit_end(state)
    except NonFiniteLossError as e:
        if last_ckpt is not None and "last good checkpoint" not in str(e):
            raise NonFiniteLossError(f"{e}; the last good checkpoint is {last_ckpt}") from None
        raise
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    if out_dir is not None and rank == 0 and state.history:
        write_csv(out_dir / "metrics.csv", state.history)
    return FitResult(
        model, state.history, state.step, state.epoch, last_ckpt, time.perf_counter() - t_start
    )
