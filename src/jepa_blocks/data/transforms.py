"""Parameterised, batched, reproducible image transforms that return their parameters.

Images are float ``(B, C, H, W)`` in ``[0, 1]``; parameters are drawn on the generator's device.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import get_args

import torch
from torch import Tensor

from jepa_blocks._validation import check_choice, check_finite, check_int, check_positive
from jepa_blocks.data.geometric import (
    AffineInterpolation,
    CropInterpolation,
    affine_transform,
    check_image_batch,
    check_interval,
    check_size,
    resized_crop,
    rotate90,
    sample_resized_crop_boxes,
)
from jepa_blocks.data.photometric import (
    blur_kernel_size,
    check_mask,
    color_jitter,
    gaussian_blur,
    grayscale,
    on_subset,
    solarize,
)

__all__ = [
    "ParamAffine",
    "ParamColorJitter",
    "ParamCompose",
    "ParamGaussianBlur",
    "ParamGrayscale",
    "ParamHorizontalFlip",
    "ParamResizedCrop",
    "ParamRotation90",
    "ParamSolarize",
    "ParamTransform",
]

Size = tuple[int, int]
Device = torch.device | str | None


def _probability(p: float, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


class ParamTransform:
    """Base class: a random image transform described by a parameter row per image.

    Subclasses set ``param_names`` and ``action_names`` and implement ``_apply`` and either
    ``_from_uniforms`` (``_uniforms`` uniform draws per image to a row) or ``_sample``.
    """

    param_names: tuple[str, ...] = ()
    action_names: tuple[str, ...] = ()
    _uniforms: int = 0

    @property
    def num_params(self) -> int:
        """Number of parameter columns."""
        return len(self.param_names)

    @property
    def action_dim(self) -> int:
        """Number of columns that enter the action."""
        return len(self.action_names)

    def output_size(self, image_size: Size) -> Size:
        """Spatial size of the output for inputs of ``image_size`` (unchanged by default)."""
        return check_size(image_size, "image_size")

    def sample(
        self,
        batch_size: int,
        image_size: Size,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw parameters for ``batch_size`` images of spatial size ``image_size``.

        Shape:
            - output: ``(batch_size, num_params)``
        """
        check_int(batch_size, "batch_size", minimum=0)
        return self._sample(batch_size, check_size(image_size, "image_size"), generator, device)

    def _sample(self, n: int, size: Size, gen: torch.Generator | None, device: Device) -> Tensor:
        if not self._uniforms:
            raise NotImplementedError
        # Draw on the generator's device, then move: the same seed gives the same parameters.
        where = gen.device if gen is not None else device
        u = torch.rand((n, self._uniforms), generator=gen, device=where)
        return self._from_uniforms(u.to(device) if device is not None else u)

    def _from_uniforms(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        """Transform ``images`` with given ``params`` (deterministic).

        Shape:
            - images: ``(B, C, H, W)``; params: ``(B, num_params)``; output: ``(B, C, H', W')``
        """
        self._check_params(params, check_image_batch(images).shape[:1])
        return self._apply(images, params)

    def _apply(self, images: Tensor, params: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(
        self, images: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample parameters, apply them and return ``(images, params)``.

        Shape:
            - images: ``(B, C, H, W)``; output: ``(B, C, H', W')`` and ``(B, num_params)``
        """
        b, _, h, w = check_image_batch(images).shape
        params = self.sample(b, (h, w), generator=generator, device=images.device)
        return self.apply(images, params), params

    def action(self, params: Tensor) -> Tensor:
        """The columns of ``params`` that enter the action.

        Shape:
            - params: ``(..., num_params)``; output: ``(..., action_dim)``
        """
        self._check_params(params, params.shape[:-1] if isinstance(params, Tensor) else ())
        return params[..., self._action_columns()]

    def _action_columns(self) -> list[int]:
        return [self.param_names.index(n) for n in self.action_names]

    def _check_params(self, params: Tensor, batch: Sequence[int]) -> None:
        if not isinstance(params, Tensor):
            raise TypeError(f"params must be a torch.Tensor, got {type(params).__name__}")
        want = (*batch, self.num_params)
        if tuple(params.shape) != tuple(want):
            raise ValueError(
                f"{type(self).__name__} params must have shape {want} (columns "
                f"{list(self.param_names)}), got {tuple(params.shape)}"
            )
        check_finite(params, "params")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class ParamAffine(ParamTransform):
    """Random similarity transform (MNIST-affine) :func:`~jepa_blocks.data.affine_transform`.

    Args:
        angle_range: Range of ``θ`` in radians.
        translate_range: Range of ``tx`` and ``ty`` as fractions of ``W`` and ``H``.
        log_scale_range: Range of ``log s``.
        interpolation: ``"bilinear"`` or ``"nearest"``.
    """

    param_names = ("angle", "tx", "ty", "log_scale")
    action_names = param_names
    _uniforms = 4

    def __init__(
        self,
        *,
        angle_range: tuple[float, float] = (-math.pi, math.pi),
        translate_range: tuple[float, float] = (-0.1, 0.1),
        log_scale_range: tuple[float, float] = (math.log(0.8), math.log(1.2)),
        interpolation: AffineInterpolation = "bilinear",
    ) -> None:
        self.angle_range = check_interval(angle_range, "angle_range")
        self.translate_range = check_interval(translate_range, "translate_range")
        self.log_scale_range = check_interval(log_scale_range, "log_scale_range")
        check_choice(interpolation, "interpolation", get_args(AffineInterpolation))
        self.interpolation: AffineInterpolation = interpolation

    def _from_uniforms(self, u: Tensor) -> Tensor:
        ranges = (self.angle_range, self.translate_range, self.translate_range)
        lo, hi = torch.tensor((*ranges, self.log_scale_range), device=u.device).T
        return lo + (hi - lo) * u

    def _apply(self, images: Tensor, params: Tensor) -> Tensor:
        return affine_transform(images, params, interpolation=self.interpolation)


class ParamRotation90(ParamTransform):
    """Random exact rotation of square images, parameter ``angle = k·π/2``, ``k ~ U{0..3}``."""

    param_names = ("angle",)
    action_names = ("angle",)
    _uniforms = 1

    def _from_uniforms(self, u: Tensor) -> Tensor:
        return torch.floor(u * 4).clamp_(max=3) * (math.pi / 2)

    def _apply(self, images: Tensor, params: Tensor) -> Tensor:
        turns = params[:, 0] / (math.pi / 2)
        if not bool((turns - turns.round()).abs().le(1e-4).all()):
            raise ValueError(f"ParamRotation90 params must be multiples of pi/2, got {params}")
        return rotate90(images, turns.round().long())


class ParamResizedCrop(ParamTransform):
    """RandomResizedCrop with its box ``(top, left, height, width) / (H, W, H, W)`` as parameters.

    Args:
        size: Output ``(height, width)``.
        scale: Range of the crop area fraction (paper: ``(0.2, 1.0)``).
        ratio: Range of the aspect ratio (paper: ``(3/4, 4/3)``).
        interpolation: ``"bicubic"`` (paper) or ``"bilinear"``.
    """

    param_names = ("crop_top", "crop_left", "crop_height", "crop_width")
    action_names = param_names

    def __init__(
        self,
        size: int | tuple[int, int],
        *,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: CropInterpolation = "bicubic",
    ) -> None:
        self.size = check_size((size, size) if isinstance(size, int) else size, "size")
        self.scale = check_interval(scale, "scale", low=1e-12)
        self.ratio = check_interval(ratio, "ratio", low=1e-12)
        check_choice(interpolation, "interpolation", get_args(CropInterpolation))
        self.interpolation: CropInterpolation = interpolation

    def output_size(self, image_size: Size) -> Size:
        return self.size

    def _sample(self, n: int, size: Size, gen: torch.Generator | None, device: Device) -> Tensor:
        h, w = check_size(size, "image_size")
        boxes = sample_resized_crop_boxes(
            n, (h, w), scale=self.scale, ratio=self.ratio, generator=gen
        )
        out = boxes / torch.tensor([h, w, h, w], dtype=boxes.dtype, device=boxes.device)
        return out.to(device) if device is not None else out

    def _apply(self, images: Tensor, params: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        boxes = torch.round(params * params.new_tensor([h, w, h, w]))
        return resized_crop(images, boxes, self.size, interpolation=self.interpolation).clamp_(0, 1)


class _CoinFlip(ParamTransform):
    """A view-only transform applied with probability ``p``: one 0/1 parameter per image."""

    p: float
    _uniforms = 1

    def _from_uniforms(self, u: Tensor) -> Tensor:
        return (u < self.p).float()


class ParamHorizontalFlip(_CoinFlip):
    """Random horizontal flip with probability ``p`` (view-only: not part of the action)."""

    param_names = ("hflip",)

    def __init__(self, *, p: float = 0.5) -> None:
        self.p = _probability(p, "p")

    def _apply(self, images: Tensor, params: Tensor) -> Tensor:
        from torchvision.transforms.v2 import functional as TF

        m = check_mask(params[:, 0], images)
        return torch.where(m[:, None, None, None], TF.horizontal_flip(images), images)


class ParamColorJitter(ParamTransform):
    """Colour jitter applied with probability ``p``, random factors and a random per-image order.

    Factors ``~ U[max(0, 1 − v), 1 + v]``, hue shift ``~ U[−v, v]`` (torchvision ``ColorJitter``);
    when not applied they are ``(1, 1, 1, 0)``, as in the official code.
    """

    action_names = ("brightness", "contrast", "saturation", "hue")
    param_names = ("jitter", *action_names, "order_0", "order_1", "order_2", "order_3")
    _uniforms = 9

    def __init__(
        self,
        *,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        p: float = 0.8,
    ) -> None:
        self.brightness = check_positive(brightness, "brightness", allow_zero=True)
        self.contrast = check_positive(contrast, "contrast", allow_zero=True)
        self.saturation = check_positive(saturation, "saturation", allow_zero=True)
        if isinstance(hue, bool) or not isinstance(hue, (int, float)) or not 0 <= hue <= 0.5:
            raise ValueError(f"hue must lie in [0, 0.5], got {hue!r}")
        self.hue = float(hue)
        self.p = _probability(p, "p")

    def _from_uniforms(self, u: Tensor) -> Tensor:
        applied = (u[:, 0] < self.p).float()
        facs = [
            max(0.0, 1 - v) + (1 + v - max(0.0, 1 - v)) * u[:, i + 1]
            for i, v in enumerate((self.brightness, self.contrast, self.saturation))
        ]
        facs.append(-self.hue + 2 * self.hue * u[:, 4])
        identity = torch.tensor([1.0, 1.0, 1.0, 0.0], device=u.device)
        factors = torch.where(applied[:, None] > 0, torch.stack(facs, dim=1), identity)
        order = torch.argsort(u[:, 5:], dim=1).float()
        order = torch.where(applied[:, None] > 0, order, torch.arange(4.0, device=u.device))
        return torch.cat((applied[:, None], factors, order), dim=1)

    def _apply(self, images: Tensor, params: Tensor) -> Tensor:
        params = params.to(images.device)
        applied = params[:, 0] > 0.5
        rows = params[applied]
        return on_subset(images, applied, lambda x: color_jitter(x, rows[:, 1:5], rows[:, 5:9]))


class ParamGrayscale(_CoinFlip):
    """Random conversion to 3-channel grayscale with probability ``p`` (view-only; paper 0.2)."""

    param_names = ("grayscale",)

    def __init__(self, *, p: float = 0.2) -> None:
        self.p = _probability(p, "p")

    def _apply(self, images: Tensor, params: Tensor) -> Tensor:
        return grayscale(images, params[:, 0])


class ParamGaussianBlur(ParamTransform):
    """Gaussian blur with probability ``p`` and ``σ ~ U(sigma)``; parameter ``blur_sigma`` (0: off).

    ``kernel_size=None``: :func:`~jepa_blocks.data.blur_kernel_size` of the smaller image side.
    """

    param_names = ("blur_sigma",)
    action_names = ("blur_sigma",)
    _uniforms = 2

    def __init__(
        self,
        *,
        sigma: tuple[float, float] = (0.1, 2.0),
        p: float = 1.0,
        kernel_size: int | None = None,
    ) -> None:
        self.sigma = check_interval(sigma, "sigma", low=1e-12)
        self.p = _probability(p, "p")
        if kernel_size is not None and check_int(kernel_size, "kernel_size") % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int or None, got {kernel_size!r}")
        self.kernel_size = kernel_size

    def _from_uniforms(self, u: Tensor) -> Tensor:
        sigma = self.sigma[0] + (self.sigma[1] - self.sigma[0]) * u[:, 1]
        return torch.where(u[:, 0] < self.p, sigma, torch.zeros_like(sigma))[:, None]

    def _apply(self, images: Tensor, params: Tensor) -> Tensor:
        k = self.kernel_size or blur_kernel_size(int(min(images.shape[-2:])))
        return gaussian_blur(images, params[:, 0], kernel_size=k)


class ParamSolarize(_CoinFlip):
    """Random solarisation with probability ``p`` (view-only)."""

    param_names = ("solarize",)

    def __init__(self, *, p: float = 0.0, threshold: float = 0.5) -> None:
        self.p = _probability(p, "p")
        self.threshold = _probability(threshold, "threshold")

    def _apply(self, images: Tensor, params: Tensor) -> Tensor:
        return solarize(images, params[:, 0], threshold=self.threshold)


class ParamCompose(ParamTransform):
    """Chain parameterised transforms; parameters and actions are concatenated in order.

    Args:
        transforms: The transforms, applied left to right.
    """

    def __init__(self, transforms: Sequence[ParamTransform]) -> None:
        transforms = tuple(transforms)
        if not transforms:
            raise ValueError("transforms must hold at least one ParamTransform, got none")
        for i, t in enumerate(transforms):
            if not isinstance(t, ParamTransform):
                raise TypeError(f"transforms[{i}] must be a ParamTransform, got {type(t).__name__}")
        self.transforms = transforms
        self.param_names = tuple(n for t in transforms for n in t.param_names)
        self.action_names = tuple(n for t in transforms for n in t.action_names)
        self._splits = [t.num_params for t in transforms]
        # Indices, not names: names may repeat across parts (e.g. two flips).
        starts = itertools.accumulate(self._splits, initial=0)
        self._action_idx = [
            s + t.param_names.index(n) for t, s in zip(transforms, starts) for n in t.action_names
        ]

    def output_size(self, image_size: Size) -> Size:
        size = check_size(image_size, "image_size")
        for t in self.transforms:
            size = t.output_size(size)
        return size

    def _sample(self, n: int, size: Size, gen: torch.Generator | None, device: Device) -> Tensor:
        size = check_size(size, "image_size")
        parts = []
        for t in self.transforms:
            parts.append(t.sample(n, size, generator=gen, device=device))
            size = t.output_size(size)
        return torch.cat(parts, dim=1)

    def _apply(self, images: Tensor, params: Tensor) -> Tensor:
        for t, p in zip(self.transforms, params.split(self._splits, dim=1)):
            images = t._apply(images, p)  # params checked as a whole
        return images

    def _action_columns(self) -> list[int]:
        return self._action_idx

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"ParamCompose([\n  {inner}\n])"
