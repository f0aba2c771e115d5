"""Sequence view generators: ``M + 1`` transformed views of each image, parameters and actions."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import get_args

import torch
from einops import rearrange, repeat
from torch import Tensor

from jepa_blocks._validation import check_bool, check_choice, check_int
from jepa_blocks.data.actions import (
    ActionNorm,
    relative_affine_actions,
    relative_differences,
    relative_rotation_actions,
)
from jepa_blocks.data.geometric import check_image_batch
from jepa_blocks.data.photometric import blur_kernel_size
from jepa_blocks.data.transforms import (
    ParamAffine,
    ParamColorJitter,
    ParamCompose,
    ParamGaussianBlur,
    ParamGrayscale,
    ParamHorizontalFlip,
    ParamResizedCrop,
    ParamRotation90,
    ParamSolarize,
    ParamTransform,
)

__all__ = ["SequenceViews", "cifar_augmentation_views", "mnist_affine_views", "rotation_views"]

Encoding = Callable[[Tensor], Tensor]


class SequenceViews:
    """Generate views, their parameters and the relative actions between consecutive views.

    Args:
        transform: Transform of the observed views ``x_1 … x_M``.
        target_transform: Target-view transform with the same columns (default: ``transform``).
        encoding: Maps the action columns ``(..., V, A₀)`` to relative actions ``(..., V − 1, A)``.
    """

    def __init__(
        self,
        transform: ParamTransform,
        *,
        target_transform: ParamTransform | None = None,
        encoding: Encoding = relative_differences,
    ) -> None:
        target = transform if target_transform is None else target_transform
        for name, t in (("transform", transform), ("target_transform", target)):
            if not isinstance(t, ParamTransform):
                raise TypeError(f"{name} must be a ParamTransform, got {type(t).__name__}")
        if target.param_names != transform.param_names:
            raise ValueError(
                "target_transform must have the same parameter columns as transform: "
                f"{list(target.param_names)} vs {list(transform.param_names)}"
            )
        if not callable(encoding):
            raise TypeError(f"encoding must be callable, got {type(encoding).__name__}")
        self.transform = transform
        self.target_transform = target
        self.encoding = encoding
        self.action_dim = int(encoding(torch.zeros(1, 2, transform.action_dim)).shape[-1])

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the parameter columns of every view."""
        return self.transform.param_names

    def output_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Spatial size of the views for inputs of ``image_size``."""
        return self.transform.output_size(image_size)

    def __call__(
        self, images: Tensor, *, num_views: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``num_views`` views of each image and their absolute parameters.

        Args:
            images: Float images in ``[0, 1]``.
            num_views: ``V = M + 1`` (``M`` observed views plus the target), at least 2.
            generator: Source of randomness (observed views first).

        Shape:
            - images: ``(B, C, H, W)``; output: views ``(B, V, C, H', W')`` and params ``(B, V, P)``
        """
        b, _, h, w = check_image_batch(images).shape
        m = check_int(num_views, "num_views", minimum=2) - 1
        obs_params = self.transform.sample(b * m, (h, w), generator=generator, device=images.device)
        tgt_params = self.target_transform.sample(
            b, (h, w), generator=generator, device=images.device
        )
        obs = self.transform.apply(repeat(images, "b c h w -> (b m) c h w", m=m), obs_params)
        tgt = self.target_transform.apply(images, tgt_params)
        views = torch.cat((rearrange(obs, "(b m) c h w -> b m c h w", b=b), tgt[:, None]), dim=1)
        params = torch.cat(
            (rearrange(obs_params, "(b m) p -> b m p", b=b), tgt_params[:, None]), dim=1
        )
        return views, params

    def actions(self, params: Tensor) -> Tensor:
        """Relative actions between consecutive views.

        Shape:
            - params: ``(..., V, P)``; output: ``(..., V − 1, A)``
        """
        return self.encoding(self.transform.action(params))

    def __repr__(self) -> str:
        enc = getattr(self.encoding, "__name__", None) or repr(self.encoding)
        return (
            f"SequenceViews(transform={self.transform!r}, target_transform="
            f"{self.target_transform!r}, encoding={enc}, action_dim={self.action_dim})"
        )


def mnist_affine_views(
    *,
    angle_range: tuple[float, float] = (-math.pi, math.pi),
    translate_range: tuple[float, float] = (-0.1, 0.1),
    log_scale_range: tuple[float, float] = (math.log(0.8), math.log(1.2)),
) -> SequenceViews:
    """Views by :class:`~jepa_blocks.data.ParamAffine` (same arguments) with the 5-d action."""
    affine = ParamAffine(
        angle_range=angle_range, translate_range=translate_range, log_scale_range=log_scale_range
    )
    return SequenceViews(affine, encoding=relative_affine_actions)


def _rotation_encoding(angles: Tensor) -> Tensor:
    return relative_rotation_actions(angles[..., 0])


def rotation_views(
    *, discrete: bool = True, angle_range: tuple[float, float] = (-math.pi, math.pi)
) -> SequenceViews:
    """Rotated views with action ``[sin Δθ, cos Δθ]`` (2-d).

    Args:
        discrete: Exact quarter turns, else angles ``~ U(angle_range)`` (bilinear resampling).
        angle_range: Range of the continuous angles in radians.
    """
    if check_bool(discrete, "discrete"):
        return SequenceViews(ParamRotation90(), encoding=_rotation_encoding)
    still = (0.0, 0.0)
    affine = ParamAffine(angle_range=angle_range, translate_range=still, log_scale_range=still)
    return SequenceViews(affine, encoding=_rotation_encoding)


def cifar_augmentation_views(
    image_size: int = 32, *, blur: bool = True, action_norm: ActionNorm = "none"
) -> SequenceViews:
    """The paper's CIFAR-100 / Tiny ImageNet views (§3.1, A.1) and 9-d action (8-d without blur).

    Args:
        image_size: Side of the output views (32 for CIFAR, 64 for Tiny ImageNet).
        blur: Include the blur (and ``σ`` in the action).
        action_norm: ``"none"`` or ``"official"`` (normalise across the views first).
    """
    check_choice(action_norm, "action_norm", get_args(ActionNorm))
    check_int(image_size, "image_size")
    check_bool(blur, "blur")

    def pipeline(blur_p: float, solarize_p: float) -> ParamCompose:
        parts: list[ParamTransform] = [
            ParamResizedCrop(image_size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)),
            ParamHorizontalFlip(p=0.5),
            ParamColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8),
            ParamGrayscale(p=0.2),
        ]
        if blur:
            k = blur_kernel_size(image_size)
            parts.append(ParamGaussianBlur(sigma=(0.1, 2.0), p=blur_p, kernel_size=k))
        parts.append(ParamSolarize(p=solarize_p))
        return ParamCompose(parts)

    encoding = functools.partial(relative_differences, normalize=action_norm)
    return SequenceViews(pipeline(1.0, 0.0), target_transform=pipeline(0.1, 0.2), encoding=encoding)
