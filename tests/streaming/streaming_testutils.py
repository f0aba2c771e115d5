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
    """A seq-JEPA with a 4-channel SmallCNN (D = 8), an EMA target and a one-layer aggregator."""
    from jepa_blocks import EMATarget, SeqJEPA
    from jepa_blocks.encoders import SmallCNN

    torch.manual_seed(seed)
    encoder = SmallCNN(in_channels=1, out_dim=8, width=4)
    target = EMATarget(encoder, total_steps=total_steps, base_momentum=0.9, final_momentum=1.0)
    return SeqJEPA.from_encoder(
        encoder,
        target,
        encoder_dim=8,
        action_dim=5,
        action_embed_dim=4,
        predictor_hidden=16,
        depth=1,
        heads=1,
    )
