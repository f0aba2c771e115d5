"""Training: the one loop, its config, schedules and checkpoints."""

from jepa_blocks.train.checkpoint import load_checkpoint, save_checkpoint
from jepa_blocks.train.config import (
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
)
from jepa_blocks.train.loop import (
    Callback,
    FitResult,
    LoopState,
    NonFiniteLossError,
    StepFn,
    default_step_fn,
    fit,
    seed_everything,
)
from jepa_blocks.train.schedule import build_optimizer, lr_at, warmup_cosine_lr

__all__ = [
    "Callback",
    "FitResult",
    "LoopState",
    "NonFiniteLossError",
    "StepFn",
    "TrainConfig",
    "apply_overrides",
    "build_optimizer",
    "config_from_dict",
    "config_to_dict",
    "default_step_fn",
    "fit",
    "load_checkpoint",
    "load_config",
    "lr_at",
    "save_checkpoint",
    "seed_everything",
    "warmup_cosine_lr",
]
