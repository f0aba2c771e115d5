"""Step 6's parts: the ``local:`` config section and its string → part factories.

``step6_local.py`` reads a :class:`Step6Config`: the recipe config of steps 1-2
(:class:`common.RecipeConfig`: ``data``, ``model``, ``train``, ``eval``, ``gates``) plus a
``local:`` section (:class:`LocalConfig`), so ``local.key=value`` overrides such as
``local.objective=rate`` or ``local.stages=[end-to-end,stage3]`` go through the one parser.

* :func:`build_local_model` — :func:`parts.build_model` with the small CNN replaced by the
  four-block :func:`~jepa_blocks.local.conv_block_encoder` (a ResNet-18 is kept: it splits into
  its four stages);
* :func:`local_objective` — ``local.objective`` → :class:`~jepa_blocks.local.LPLLoss` or
  :class:`~jepa_blocks.local.LocalRateLoss`;
* :func:`build_learner` — both, wrapped in :class:`~jepa_blocks.local.LocalSeqJEPA`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from common import RecipeConfig
from jepa_blocks import EMATarget, SeqJEPA
from jepa_blocks.local import (
    STAGES,
    LocalRateLoss,
    LocalSeqJEPA,
    LPLLoss,
    conv_block_encoder,
)
from parts import ModelConfig, build_model

__all__ = [
    "LocalConfig",
    "StageName",
    "Step6Config",
    "build_learner",
    "build_local_model",
    "local_objective",
]

StageName = Literal["end-to-end", "stage1", "stage2", "stage3"]


@dataclasses.dataclass
class LocalConfig:
    """Settings of the local stages (``local.key=value`` on the command line).

    Attributes:
        stages: Which of ``end-to-end``, ``stage1``, ``stage2``, ``stage3`` to run, in order.
        objective: Block-local objective: ``"lpl"`` (:class:`~jepa_blocks.local.LPLLoss`, the
            published weights 1 / 1 / 10) or ``"rate"``
            (:class:`~jepa_blocks.local.LocalRateLoss`).
        rate_weight: λ of the ``"rate"`` objective.
        widths: Channels of the encoder blocks (small-cnn only; ``None``: ``cnn_width`` × 1, 2,
            4, then ``encoder_dim``).
        strides: Strides of the encoder blocks (small-cnn only).
        norm: Where the block encoder normalises (small-cnn only;
            :func:`~jepa_blocks.local.conv_block_encoder`): ``"readout"`` (BatchNorm on the pooled
            output, none in the blocks), ``"block"`` (conv–BN–ReLU blocks) or ``"none"``.
        head_dim: Embedding dimension of the local heads (``None``: no projection).
        action_conditioned: Action-conditioned predictors in the encoder blocks' heads.
        head_hidden: Hidden width of the heads' predictors.
        aux_weight: Weight of the local losses in stage 1.
        local_aggregator: Train the aggregator blocks locally in stages 2 and 3.
        stage2_encoder: Where stage 2's frozen encoder comes from: ``"stage1"``,
            ``"end-to-end"`` (the encoder that stage trained; falls back to ``"init"`` when it
            did not run) or ``"init"`` (random initialisation).
        memory_batch_size: Batch of the memory measurement (``None``: ``data.batch_size``).
    """

    stages: list[StageName] = dataclasses.field(
        default_factory=lambda: ["end-to-end", "stage1", "stage2", "stage3"]
    )
    objective: Literal["lpl", "rate"] = "lpl"
    rate_weight: float = 0.03
    widths: list[int] | None = None
    strides: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 2, 1])
    norm: Literal["readout", "block", "none"] = "readout"
    head_dim: int | None = None
    action_conditioned: bool = True
    head_hidden: int = 128
    aux_weight: float = 1.0
    local_aggregator: bool = True
    stage2_encoder: Literal["stage1", "end-to-end", "init"] = "stage1"
    memory_batch_size: int | None = None

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("local.stages must name at least one stage")
        for s in self.stages:
            if s not in STAGES:
                raise ValueError(f"local.stages must hold stages of {STAGES}, got {s!r}")
        if self.memory_batch_size is not None and self.memory_batch_size < 1:
            raise ValueError(f"local.memory_batch_size must be >= 1, got {self.memory_batch_size}")


@dataclasses.dataclass
class Step6Config(RecipeConfig):
    """The recipe config of steps 1-2 plus the ``local:`` section (:class:`LocalConfig`)."""

    local: LocalConfig = dataclasses.field(default_factory=LocalConfig)


def build_local_model(
    model_config: ModelConfig,
    local: LocalConfig,
    *,
    in_channels: int,
    action_dim: int,
    total_steps: int,
    steps_per_epoch: int,
) -> SeqJEPA:
    """:func:`parts.build_model` with a block encoder.

    For ``encoder="small-cnn"`` the :class:`~jepa_blocks.SmallCNN` is replaced by
    :func:`~jepa_blocks.local.conv_block_encoder` (``local.widths``, ``local.strides``,
    ``local.norm``; the EMA
    target, if any, is rebuilt around it); a ResNet-18 is kept (it splits into four stages).

    The block encoder ends in global average pooling, so the small CNN's ``cnn_grid`` and
    ``encoder_norm`` do not apply. The small CNN is still built first and then discarded, always
    in one pinned form (``cnn_grid=1``, no output norm): the random draws it consumes fix the
    initialisation of the other parts, which therefore does not depend on those two options,
    and the step-6 tables stay reproducible.

    Args:
        model_config: The ``model:`` section.
        local: The ``local:`` section.
        in_channels: Image channels.
        action_dim: ``A``.
        total_steps: Optimizer steps of the run (EMA schedule).
        steps_per_epoch: Optimizer steps per epoch.

    Returns:
        The model (random initialisation from the current torch seed).

    Raises:
        ValueError: When ``local.widths`` does not end with ``model.encoder_dim``.
    """
    if model_config.encoder == "small-cnn":
        model_config = dataclasses.replace(model_config, cnn_grid=1, encoder_norm="none")
    model = build_model(
        model_config,
        in_channels=in_channels,
        action_dim=action_dim,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
    )
    if model_config.encoder != "small-cnn":
        return model
    w, d = model_config.cnn_width, model_config.encoder_dim
    widths = list(local.widths) if local.widths is not None else [w, 2 * w, 4 * w, d]
    if widths[-1] != d:
        raise ValueError(
            f"local.widths must end with model.encoder_dim = {d}, got {widths} (the predictor "
            f"and aggregator are sized for encoder_dim)"
        )
    encoder = conv_block_encoder(
        in_channels=in_channels, widths=widths, strides=local.strides, norm=local.norm
    )
    model.encoder = encoder
    if model_config.target == "ema":
        epoch_wise = model_config.ema_schedule == "epoch"
        model.target = EMATarget(
            encoder,
            total_steps=total_steps,
            base_momentum=model_config.ema_base,
            final_momentum=model_config.ema_final,
            steps_per_epoch=steps_per_epoch if epoch_wise else None,
        )
    return model


def local_objective(local: LocalConfig) -> nn.Module:
    """The block-local objective ``(z, *, pred, target) → ()`` named by ``local.objective``."""
    if local.objective == "lpl":
        return LPLLoss()
    if local.objective == "rate":
        return LocalRateLoss(rate_weight=local.rate_weight)
    raise ValueError(f"unknown local.objective {local.objective!r}")


def build_learner(
    config: Step6Config,
    *,
    in_channels: int,
    action_dim: int,
    total_steps: int,
    steps_per_epoch: int,
    device: torch.device,
) -> LocalSeqJEPA:
    """A fresh :class:`~jepa_blocks.local.LocalSeqJEPA` in the ``end-to-end`` stage.

    The model (:func:`build_local_model`), the objective (:func:`local_objective`) and the local
    heads, initialised from the current torch seed (the recipe reseeds before each stage, so
    every stage starts from the same network), on ``device``.
    """
    local = config.local
    model = build_local_model(
        config.model, local, in_channels=in_channels, action_dim=action_dim,
        total_steps=total_steps, steps_per_epoch=steps_per_epoch,
    )  # fmt: skip
    learner = LocalSeqJEPA(
        model, stage="end-to-end", objective=local_objective(local), head_dim=local.head_dim,
        action_conditioned=local.action_conditioned, head_hidden=local.head_hidden,
        aux_weight=local.aux_weight, local_aggregator=local.local_aggregator,
    )  # fmt: skip
    return learner.to(device)
