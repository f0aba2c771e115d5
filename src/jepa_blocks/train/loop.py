"""The shared training loop: AMP, compile, DDP, progress, metrics, checkpoints, exact resume.

:func:`fit` trains any module whose forward returns an object with a ``loss`` field (e.g.
:class:`jepa_blocks.SeqJEPA`'s :class:`~jepa_blocks.SeqJEPAOutput`) on any loader that yields
batches and has ``set_epoch(epoch)`` (e.g. :class:`jepa_blocks.data.SequenceLoader`).

Per optimizer step: set the learning rate from a pure function of the step, forward under bf16
autocast (CUDA), stop with :class:`NonFiniteLossError` *before* the backward pass if the loss is
not finite (the last checkpoint on disk is the last good one), backward, optional clipping,
optimizer step, then ``model.update()`` (EMA target, step counters) exactly once.

Exact resume: a checkpoint holds the model, optimizer, step, epoch, position within the epoch,
every random generator's state, the metrics history and the config; resuming replays the epoch's
loader up to the saved position (its random draws included), so ``N`` steps + resume + ``N``
steps equal ``2N`` uninterrupted steps.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jepa_blocks.distributed import is_distributed, world_size
from jepa_blocks.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from jepa_blocks.train.config import TrainConfig, config_to_dict
from jepa_blocks.train.schedule import build_optimizer, lr_at

__all__ = [
    "FitResult",
    "NonFiniteLossError",
    "default_batch_fn",
    "fit",
    "resolve_device",
    "seed_everything",
]

CHECKPOINT_NAME = "checkpoint.pt"


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss is NaN or infinite; no checkpoint is written after it."""


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
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(spec)


def default_batch_fn(model: nn.Module, batch: Any, device: torch.device) -> Any:
    """Call ``model(views, actions)`` on a batch with ``views`` and ``actions`` fields."""
    views = batch.views.to(device, non_blocking=True)
    actions = batch.actions.to(device, non_blocking=True)
    return model(views, actions)


def _scalars(out: Any) -> dict[str, float]:
    """Scalar tensor fields of a model output (NamedTuple, dataclass or dict) as floats."""
    if hasattr(out, "_asdict"):
        items = out._asdict().items()
    elif dataclasses.is_dataclass(out):
        items = ((f.name, getattr(out, f.name)) for f in dataclasses.fields(out))
    elif isinstance(out, dict):
        items = out.items()
    else:
        items = [("loss", out)]
    return {
        k: float(v.detach()) for k, v in items if isinstance(v, torch.Tensor) and v.numel() == 1
    }


def _loss_of(out: Any) -> torch.Tensor:
    loss = out if isinstance(out, torch.Tensor) else getattr(out, "loss", None)
    if loss is None and isinstance(out, dict):
        loss = out.get("loss")
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(
            "the model output must be a scalar tensor or have a scalar 'loss' field, got "
            f"{type(out).__name__}"
        )
    return loss.reshape(())


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
    keys: list[str] = []
    for rec in history:
        keys.extend(k for k in rec if k not in keys)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


class _Progress:
    """tqdm when installed and wanted, else nothing (metrics still go to the log)."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                self.bar = None

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


def _schedule_steps(loader: Iterable[Any], config: TrainConfig) -> tuple[int, int]:
    """``(total_steps, warmup_steps)`` of a run of ``config`` over ``loader``'s epochs."""
    steps_per_epoch = len(loader)  # type: ignore[arg-type]
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    return total_steps, round(config.warmup_epochs * steps_per_epoch)


def _use_amp(config: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast: ``amp="bf16"``, or ``"auto"`` on CUDA."""
    return config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")


def _set_lr(
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
) -> float:
    """Set every group's learning rate to the schedule's value at ``step`` and return it."""
    lr = lr_at(
        step,
        recipe=config.recipe,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        base_lr=config.lr,
        warmup_start_lr=config.warmup_start_lr,
        final_lr=config.final_lr,
    )
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def fit(
    model: nn.Module,
    loader: Iterable[Any],
    config: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    batch_fn: Callable[[nn.Module, Any, torch.device], Any] = default_batch_fn,
    eval_fn: Callable[[nn.Module, int], dict[str, float]] | None = None,
    full_config: Any = None,
) -> FitResult:
    """Train ``model`` on ``loader`` (see the module docstring).

    Args:
        model: Module whose ``batch_fn`` output has a scalar ``loss``; its optional ``update()``
            method is called once after every optimizer step.
        loader: Iterable of batches with ``__len__``; ``set_epoch(epoch)`` is called when present.
        config: Loop hyperparameters.
        optimizer: Default: :func:`jepa_blocks.train.build_optimizer` of ``config.recipe``.
        batch_fn: ``(model, batch, device) → output``; default :func:`default_batch_fn`.
        eval_fn: ``(model, epoch) → metrics`` run every ``config.eval_every_epochs`` epochs
            and at the end, with the model in eval mode (rank 0 only).
        full_config: The whole experiment config, stored in checkpoints and W&B.

    Returns:
        :class:`FitResult`.

    Raises:
        NonFiniteLossError: When a loss is NaN/inf (before its backward pass).
    """
    t_start = time.perf_counter()
    device = resolve_device(config.device)
    distributed = is_distributed()
    rank = torch.distributed.get_rank() if distributed else 0
    n_ranks = world_size()
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

    total_steps, warmup_steps = _schedule_steps(loader, config)
    history: list[dict[str, Any]] = []
    step, epoch, batch_in_epoch = 0, 0, 0

    if ckpt_path is not None and config.resume and ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        history = list(state.get("history", []))
        set_rng_state(state["rng"])

    train_model: nn.Module = model
    if distributed:
        train_model = (
            nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda" else model
        )
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]

    use_amp = _use_amp(config, device)
    writer = _MetricsWriter(out_dir, config, full_config) if rank == 0 else None
    progress = _Progress(total_steps, step, config.progress and rank == 0)
    last_ckpt: Path | None = ckpt_path if ckpt_path is not None and ckpt_path.is_file() else None

    def checkpoint() -> None:
        nonlocal last_ckpt
        if ckpt_path is None or rank != 0:
            return
        save_checkpoint(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "rng": rng_state(),
                "history": history,
                "config": config_to_dict(config),
                "full_config": full_config,
            },
        )
        last_ckpt = ckpt_path

    def evaluate() -> None:
        if eval_fn is None or rank != 0:
            return
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = eval_fn(model, epoch)
        model.train(was_training)
        record = {"step": step, "epoch": epoch, **{f"eval/{k}": v for k, v in metrics.items()}}
        history.append(record)
        if writer is not None:
            writer.write(record)

    update = getattr(model, "update", None)
    model.train()
    try:
        while step < total_steps and epoch < config.epochs:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            it = _skip(iter(loader), batch_in_epoch)
            for batch in it:
                if step >= total_steps:
                    break
                lr = _set_lr(
                    optimizer, config, step, total_steps=total_steps, warmup_steps=warmup_steps
                )
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    out = batch_fn(train_model, batch, device)
                loss = _loss_of(out)
                rate = getattr(out, "rate", None)
                weight = getattr(out, "rate_weight", None)
                if (
                    config.scale_global_terms_by_world_size
                    and n_ranks > 1
                    and rate is not None
                    and weight is not None
                ):
                    loss = loss - (n_ranks - 1) * weight * rate
                if not math.isfinite(float(loss.detach())):
                    where = f"; the last good checkpoint is {last_ckpt}" if last_ckpt else ""
                    raise NonFiniteLossError(
                        f"non-finite loss {float(loss.detach())} at step {step} (epoch {epoch}, "
                        f"batch {batch_in_epoch}); training stopped before its backward pass"
                        f"{where}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                if callable(update):
                    update()
                step += 1
                batch_in_epoch += 1
                postfix = None
                if step % config.log_every == 0 or step == total_steps:
                    postfix = {"lr": lr, **_scalars(out)}
                    record = {"step": step, "epoch": epoch, **postfix}
                    history.append(record)
                    if writer is not None:
                        writer.write(record)
                progress.update(postfix)
                if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
                    checkpoint()
            else:
                epoch += 1
                batch_in_epoch = 0
                if config.eval_every_epochs and epoch % config.eval_every_epochs == 0:
                    evaluate()
                checkpoint()
                continue
            break  # max_steps reached inside the epoch
        if not (
            config.eval_every_epochs
            and batch_in_epoch == 0
            and epoch % config.eval_every_epochs == 0
        ):
            evaluate()
        checkpoint()
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    if out_dir is not None and rank == 0 and history:
        write_csv(out_dir / "metrics.csv", history)
    return FitResult(model, history, step, epoch, last_ckpt, time.perf_counter() - t_start)
