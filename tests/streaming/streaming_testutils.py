"""Helpers of the streaming tests: a tiny labelled image source and a tiny seq-JEPA."""

from __future__ import annotations

import torch

from jepa_blocks.data import LabelledImages


def tiny_source(n: int = 60, *, classes: int = 3, size: int = 12, seed: int = 0) -> LabelledImages:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return LabelledImages(
        images, labels, tuple(str(c) for c in range(classes)), (0.5,), (0.25,), "tiny"
    )


def tiny_model(total_steps: int = 10, seed: int = 0) -> torch.nn.Module:
    from jepa_blocks.train.experiment import ModelConfig, build_model

    torch.manual_seed(seed)
    cfg = ModelConfig(
        encoder_dim=8,
        cnn_width=4,
        action_embed_dim=4,
        predictor_hidden=16,
        depth=1,
        heads=1,
        ema_base=0.9,
    )
    return build_model(cfg, in_channels=1, action_dim=5, total_steps=total_steps, steps_per_epoch=1)
