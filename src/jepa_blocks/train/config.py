"""Dataclass configs loadable from YAML with ``key=value`` command-line overrides."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, get_args, get_origin

from jepa_blocks._validation import check_bool, check_choice

__all__ = [
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
]

T = TypeVar("T")


@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters of :func:`jepa_blocks.train.fit`.

    Attributes:
        epochs: Passes over the training loader.
        max_steps: Stop after this many optimizer steps (``None``: ``epochs`` decide).
        seed: Seed of every generator (model init, data order, augmentations).
        recipe: ``"paper"`` (AdamW, warm-up + cosine) or ``"official"`` (Adam, constant lr).
        lr: Peak learning rate (paper 4e-4).
        weight_decay: AdamW weight decay on ≥ 2-D parameters (paper 1e-3).
        warmup_epochs: Linear warm-up length in epochs (paper 20 of 2000; at most ``epochs``).
        warmup_steps: Warm-up length in optimizer steps, replacing ``warmup_epochs`` when set.
        warmup_start_lr: Learning rate at step 0 (paper 1e-5).
        final_lr: Learning rate at the end of the cosine (paper 1e-5).
        schedule: ``"recipe"`` (the recipe's), ``"cosine"`` or ``"constant"`` (after warm-up).
        grad_clip: Clip the global gradient norm to this value (``None``: no clipping).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        amp: ``"auto"`` (bf16 autocast on CUDA, none on CPU), ``"bf16"`` or ``"off"``.
        channels_last: Use the channels-last memory format for 4-D activations on CUDA.
        compile: Wrap the model in ``torch.compile``.
        out_dir: Where metrics, checkpoints and plots go (``None``: nothing is written).
        log_every: Log training metrics every this many steps.
        eval_every_epochs: Run ``eval_fn`` every this many epochs (0: only at the end).
        checkpoint_every_steps: Also checkpoint every this many steps (0: only at epoch ends).
        resume: Continue from ``out_dir/checkpoint.pt`` when it exists.
        progress: Show a progress bar (tqdm when installed).
        wandb: Log to Weights & Biases (``import wandb`` at run time; offline by default).
        wandb_project: W&B project name.
        wandb_mode: ``"offline"``, ``"online"`` or ``"disabled"``.
    """

    epochs: int = 10
    max_steps: int | None = None
    seed: int = 0
    recipe: Literal["paper", "official"] = "paper"
    lr: float = 4e-4
    weight_decay: float = 1e-3
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None
    warmup_start_lr: float = 1e-5
    final_lr: float = 1e-5
    schedule: Literal["recipe", "cosine", "constant"] = "recipe"
    grad_clip: float | None = None
    device: str = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: bool = True
    compile: bool = False
    out_dir: str | None = None
    log_every: int = 20
    eval_every_epochs: int = 0
    checkpoint_every_steps: int = 0
    resume: bool = True
    progress: bool = True
    wandb: bool = False
    wandb_project: str = "jepa-blocks"
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"

    def __post_init__(self) -> None:
        def integer(name: str, minimum: int, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                what = f"an int >= {minimum}" + (" or None" if optional else "")
                raise ValueError(f"TrainConfig.{name} must be {what}, got {v!r}")

        def number(name: str, *, positive: bool, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or (v <= 0 if positive else v < 0):
                bound = "> 0" if positive else ">= 0"
                what = f"a finite number {bound}" + (" or None" if optional else "")
                raise ValueError(f"TrainConfig.{name} must be {what}, got {v!r}")

        for name in ("epochs", "max_steps", "log_every"):
            integer(name, 1, optional=name == "max_steps")
        for name in ("seed", "warmup_steps", "eval_every_epochs", "checkpoint_every_steps"):
            integer(name, 0, optional=name == "warmup_steps")
        number("lr", positive=True)
        number("grad_clip", positive=True, optional=True)
        for name in ("weight_decay", "warmup_epochs", "warmup_start_lr", "final_lr"):
            number(name, positive=False)
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"TrainConfig.warmup_epochs ({self.warmup_epochs}) must not exceed TrainConfig.epochs"
                f" ({self.epochs}): the warm-up would never end"
            )
        steps, cap = self.warmup_steps, self.max_steps
        if steps is not None and cap is not None and steps > cap:
            raise ValueError(
                f"TrainConfig.warmup_steps ({steps}) must not exceed TrainConfig.max_steps ({cap})"
            )
        for name, choices in (
            ("recipe", ("paper", "official")),
            ("schedule", ("recipe", "cosine", "constant")),
            ("amp", ("auto", "bf16", "off")),
            ("wandb_mode", ("offline", "online", "disabled")),
        ):
            check_choice(getattr(self, name), f"TrainConfig.{name}", choices)
        for name in ("channels_last", "compile", "resume", "progress", "wandb"):
            check_bool(getattr(self, name), f"TrainConfig.{name}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"TrainConfig.device must be a device string, got {self.device!r}")


_PLAIN = {bool: "a bool", int: "an int", str: "a string"}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check/convert ``value`` against a (possibly Optional/Literal/nested) annotation."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in [a for a in args if a is not type(None)]:
            try:
                return _coerce(value, a, where)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(f"{where}: {value!r} matches none of {annotation} ({'; '.join(errors)})")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where} must be one of {args}, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"{where} must be a mapping for {annotation.__name__}, got {value!r}")
        return config_from_dict(annotation, value, _where=where)
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where} must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if annotation in _PLAIN:
        if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
            raise TypeError(f"{where} must be {_PLAIN[annotation]}, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string
            with contextlib.suppress(ValueError):
                return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where} must be a number, got {value!r}")
        return float(value)
    return value


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, _where: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``, checking names and types.

    Raises:
        ValueError: For an unknown key (the message lists the valid ones).
        TypeError: For a value of the wrong type.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"cls must be a dataclass type, got {cls!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {unknown} for {cls.__name__}{' at ' + _where if _where else ''};"
            f" valid keys: {names}"
        )
    prefix = f"{_where}." if _where else ""
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in data.items()})


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serialisable dict of a (nested) dataclass config."""
    return dataclasses.asdict(config)


def apply_overrides(config: T, overrides: Sequence[str]) -> T:
    """A copy of ``config`` with dotted ``key=value`` overrides, values parsed as YAML
    (``lr=1e-3``, ``compile=true``, ``max_steps=null``).

    Raises:
        ValueError: For a malformed override or an unknown key.
    """
    import yaml

    data = config_to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override must look like key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"unknown config section {p!r} in override {item!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(
                f"unknown config key {key!r} in override {item!r}; valid keys here: {sorted(node)}"
            )
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return config_from_dict(type(config), data)


def load_config(
    cls: type[T], path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> T:
    """Load ``cls`` from a YAML file (or its defaults when ``path`` is ``None``) plus overrides."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{path}: the YAML top level must be a mapping, got {type(loaded)}")
        data = dict(loaded)
    return apply_overrides(config_from_dict(cls, data), overrides)
