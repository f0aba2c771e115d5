"""Parameterised, batched, reproducible image transforms that return their parameters.

Each transform is a thin class around the pure functions of :mod:`jepa_blocks.data.geometric` and
:mod:`jepa_blocks.data.photometric` with three methods:

* ``sample(batch_size, image_size, generator=..., device=...)`` draws one parameter row per image
  (on the generator's device, so a CPU generator gives the same parameters for CPU and GPU data);
* ``apply(images, params)`` is deterministic: the same parameters give the same images;
* ``__call__(images, generator=...)`` does both and returns ``(images, params)``.

``param_names`` names the columns of ``params``; ``action_names`` lists the columns that enter the
seq-JEPA action (the view-only augmentations flip, grayscale and solarize have none), and
``action(params)`` extracts them. :class:`ParamCompose` chains transforms and concatenates their
parameters, so ``ParamCompose(...).action(params)`` is the paper's action vector, e.g. the 9-d
``[crop i, j, h, w | brightness, contrast, saturation, hue | blur σ]`` of CIFAR-100 (official code
``hafezgh/seq-jepa`` ``src/augmentations.py``, adapted from EquiMod).

Images are float tensors ``(B, C, H, W)`` with values in ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from jepa_blocks.data.geometric import (
    affine_transform,
    resized_crop,
    rotate90,
    sample_resized_crop_boxes,
)
from jepa_blocks.data.photometric import (
    blur_kernel_size,
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


def _probability(p: float, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _interval(r: Sequence[float], name: str, *, low: float = -math.inf) -> tuple[float, float]:
    if len(r) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {r!r}")
    a, b = float(r[0]), float(r[1])
    if not (math.isfinite(a) and math.isfinite(b) and low <= a <= b):
        raise ValueError(f"{name} must satisfy {low} <= min <= max (finite), got {r!r}")
    return a, b


def _rand(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None
) -> Tensor:
    """Uniform [0, 1) draws on the generator's device (else ``device``), moved to ``device``."""
    where = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=where)
    return u.to(device) if device is not None else u


def _size(image_size: Sequence[int]) -> Size:
    if len(image_size) != 2 or min(int(v) for v in image_size) < 1:
        raise ValueError(f"image_size must be a positive (H, W) pair, got {tuple(image_size)!r}")
    return int(image_size[0]), int(image_size[1])


class ParamTransform:
    """Base class: a random image transform described by a parameter row per image.

    Subclasses set ``param_names`` and ``action_names`` and implement :meth:`sample` and
    :meth:`apply`.
    """

    param_names: tuple[str, ...] = ()
    action_names: tuple[str, ...] = ()
    #: Uniform draws per image that :meth:`_from_uniforms` maps to a parameter row; a subclass
    #: that sets it needs no :meth:`sample` of its own.
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
        return _size(image_size)

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
        if not self._uniforms:
            raise NotImplementedError
        return self._from_uniforms(_rand((batch_size, self._uniforms), generator, device))

    def _from_uniforms(self, u: Tensor) -> Tensor:
        """Parameters ``(B, num_params)`` from uniform draws ``u`` ``(B, _uniforms)``."""
        raise NotImplementedError

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        """Transform ``images`` with given ``params`` (deterministic).

        Shape:
            - images: ``(B, C, H, W)``
            - params: ``(B, num_params)``
            - output: ``(B, C, H', W')``
        """
        raise NotImplementedError

    def __call__(
        self, images: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample parameters, apply them and return ``(images, params)``.

        Shape:
            - images: ``(B, C, H, W)``
            - output: ``(B, C, H', W')`` and ``(B, num_params)``
        """
        if not isinstance(images, Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must have shape (B, C, H, W), got {shape}")
        params = self.sample(
            images.shape[0],
            (images.shape[-2], images.shape[-1]),
            generator=generator,
            device=images.device,
        )
        return self.apply(images, params), params

    def action(self, params: Tensor) -> Tensor:
        """The columns of ``params`` that enter the action.

        Shape:
            - params: ``(..., num_params)``
            - output: ``(..., action_dim)``
        """
        self._check_params(params, params.shape[:-1] if isinstance(params, Tensor) else ())
        idx = [self.param_names.index(n) for n in self.action_names]
        return params[..., idx]

    def _check_params(self, params: Tensor, batch: Sequence[int]) -> None:
        if not isinstance(params, Tensor):
            raise TypeError(f"params must be a torch.Tensor, got {type(params).__name__}")
        want = (*batch, self.num_params)
        if tuple(params.shape) != tuple(want):
            raise ValueError(
                f"{type(self).__name__} params must have shape {want} (columns "
                f"{list(self.param_names)}), got {tuple(params.shape)}"
            )

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class ParamAffine(ParamTransform):
    """Random similarity transform (MNIST-affine): rotation, translation, isotropic scale.

    Parameters ``[angle, tx, ty, log_scale]`` are drawn uniformly from the ranges (angle in
    radians, translations as fractions of the image size, scale log-uniform) and applied with
    :func:`~jepa_blocks.data.geometric.affine_transform`. The follow-up repository
    (``kaikun213/seq-jepa``, ``experiments/datasets_mnist_affine.py``) samples the same factors.

    Args:
        angle_range: Range of ``θ`` in radians.
        translate_range: Range of ``tx`` and ``ty`` as fractions of ``W`` and ``H``.
        log_scale_range: Range of ``log s``.
        interpolation: ``"bilinear"`` or ``"nearest"``.
    """

    param_names = ("angle", "tx", "ty", "log_scale")
    action_names = ("angle", "tx", "ty", "log_scale")
    _uniforms = 4

    def __init__(
        self,
        *,
        angle_range: tuple[float, float] = (-math.pi, math.pi),
        translate_range: tuple[float, float] = (-0.1, 0.1),
        log_scale_range: tuple[float, float] = (math.log(0.8), math.log(1.2)),
        interpolation: str = "bilinear",
    ) -> None:
        self.angle_range = _interval(angle_range, "angle_range")
        self.translate_range = _interval(translate_range, "translate_range")
        self.log_scale_range = _interval(log_scale_range, "log_scale_range")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}"
            )
        self.interpolation = interpolation

    def _from_uniforms(self, u: Tensor) -> Tensor:
        lo = torch.tensor(
            [self.angle_range[0], self.translate_range[0], self.translate_range[0],
             self.log_scale_range[0]], device=u.device,
        )  # fmt: skip
        hi = torch.tensor(
            [self.angle_range[1], self.translate_range[1], self.translate_range[1],
             self.log_scale_range[1]], device=u.device,
        )  # fmt: skip
        return lo + (hi - lo) * u

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        self._check_params(params, images.shape[:1])
        return affine_transform(images, params, interpolation=self.interpolation)


class ParamRotation90(ParamTransform):
    """Random rotation by a multiple of 90° (exact), parameter ``angle = k·π/2``, ``k ~ U{0..3}``.

    The CIFAR-10 rotation setting of the follow-up repository (``kaikun213/seq-jepa``,
    ``experiments/datasets_rot.py``). Images must be square.
    """

    param_names = ("angle",)
    action_names = ("angle",)
    _uniforms = 1

    def _from_uniforms(self, u: Tensor) -> Tensor:
        return torch.floor(u * 4).clamp_(max=3) * (math.pi / 2)

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        self._check_params(params, images.shape[:1])
        return rotate90(images, torch.round(params[:, 0] / (math.pi / 2)))


class ParamResizedCrop(ParamTransform):
    """RandomResizedCrop with its box as parameters ``(top, left, height, width)`` / ``(H, W, H, W)``.

    Boxes are sampled like torchvision's ``RandomResizedCrop`` (see
    :func:`~jepa_blocks.data.geometric.sample_resized_crop_boxes`) and stored normalised by the
    input size (the official code stores pixels; under :func:`normalize_across_views
    <jepa_blocks.data.actions.normalize_across_views>` both give the same action). The crop is
    resampled with antialiasing like Pillow, then clipped to ``[0, 1]``.

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
        interpolation: str = "bicubic",
    ) -> None:
        self.size = _size((size, size) if isinstance(size, int) else size)
        self.scale = _interval(scale, "scale", low=1e-12)
        self.ratio = _interval(ratio, "ratio", low=1e-12)
        if interpolation not in ("bicubic", "bilinear"):
            raise ValueError(
                f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}"
            )
        self.interpolation = interpolation

    def output_size(self, image_size: Size) -> Size:
        return self.size

    def sample(
        self,
        batch_size: int,
        image_size: Size,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        h, w = _size(image_size)
        boxes = sample_resized_crop_boxes(
            batch_size, (h, w), scale=self.scale, ratio=self.ratio, generator=generator
        )
        scale = torch.tensor([h, w, h, w], dtype=boxes.dtype, device=boxes.device)
        out = boxes / scale
        return out.to(device) if device is not None else out

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        self._check_params(params, images.shape[:1])
        h, w = images.shape[-2:]
        scale = torch.tensor([h, w, h, w], dtype=params.dtype, device=params.device)
        boxes = torch.round(params * scale)
        out = resized_crop(images, boxes, self.size, interpolation=self.interpolation)
        return out.clamp_(0.0, 1.0)


class _CoinFlip(ParamTransform):
    """A view-only transform applied with probability ``p``: one 0/1 parameter per image."""

    p: float
    _uniforms = 1

    def _from_uniforms(self, u: Tensor) -> Tensor:
        return (u < self.p).float()

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        self._check_params(params, images.shape[:1])
        return self._apply_to(images, params[:, 0])

    def _apply_to(self, images: Tensor, flags: Tensor) -> Tensor:
        """Transform the images whose flag ``(B,)`` is 1."""
        raise NotImplementedError


class ParamHorizontalFlip(_CoinFlip):
    """Random horizontal flip with probability ``p`` (view-only: not part of the action)."""

    param_names = ("hflip",)

    def __init__(self, *, p: float = 0.5) -> None:
        self.p = _probability(p, "p")

    def _apply_to(self, images: Tensor, flags: Tensor) -> Tensor:
        from torchvision.transforms.v2 import functional as TF

        m = flags.to(images.device)[:, None, None, None] > 0.5
        return torch.where(m, TF.horizontal_flip(images), images)


class ParamColorJitter(ParamTransform):
    """Colour jitter applied with probability ``p``, random factors and a random per-image order.

    Parameters ``[jitter, brightness, contrast, saturation, hue, order_0..order_3]``: brightness,
    contrast and saturation factors ``~ U[max(0, 1 − v), 1 + v]``, hue shift ``~ U[−v, v]``, order a
    random permutation (torchvision ``ColorJitter``). When the jitter is not applied the factors are
    ``(1, 1, 1, 0)`` and the image is unchanged, as in the official code, whose action uses the four
    factors. Paper strengths: ``brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8``.
    """

    param_names = (
        "jitter",
        "brightness",
        "contrast",
        "saturation",
        "hue",
        "order_0",
        "order_1",
        "order_2",
        "order_3",
    )
    action_names = ("brightness", "contrast", "saturation", "hue")
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
        for name, v in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if isinstance(hue, bool) or not isinstance(hue, (int, float)) or not 0 <= hue <= 0.5:
            raise ValueError(f"hue must lie in [0, 0.5], got {hue!r}")
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.hue = float(hue)
        self.p = _probability(p, "p")

    def _from_uniforms(self, u: Tensor) -> Tensor:
        applied = (u[:, 0] < self.p).float()
        strengths = (self.brightness, self.contrast, self.saturation)
        facs = [
            max(0.0, 1 - v) + (1 + v - max(0.0, 1 - v)) * u[:, i + 1]
            for i, v in enumerate(strengths)
        ]
        facs.append(-self.hue + 2 * self.hue * u[:, 4])
        factors = torch.stack(facs, dim=1)
        identity = torch.tensor([1.0, 1.0, 1.0, 0.0], device=u.device)
        factors = torch.where(applied[:, None] > 0, factors, identity)
        order = torch.argsort(u[:, 5:], dim=1).float()
        order = torch.where(applied[:, None] > 0, order, torch.arange(4.0, device=u.device))
        return torch.cat((applied[:, None], factors, order), dim=1)

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        self._check_params(params, images.shape[:1])
        params = params.to(images.device)
        applied = params[:, 0] > 0.5
        rows = params[applied]
        return on_subset(images, applied, lambda x: color_jitter(x, rows[:, 1:5], rows[:, 5:9]))


class ParamGrayscale(_CoinFlip):
    """Random conversion to 3-channel grayscale with probability ``p`` (view-only; paper 0.2)."""

    param_names = ("grayscale",)

    def __init__(self, *, p: float = 0.2) -> None:
        self.p = _probability(p, "p")

    def _apply_to(self, images: Tensor, flags: Tensor) -> Tensor:
        return grayscale(images, flags)


class ParamGaussianBlur(ParamTransform):
    """Gaussian blur with probability ``p`` and ``σ ~ U(sigma)``; parameter ``blur_sigma`` (0 if off).

    Paper: ``σ ~ U(0.1, 2.0)``, ``p = 1.0`` for the observed views and ``0.1`` for the target view,
    kernel size ``2·round((S − 10)/20) + 1`` (:func:`~jepa_blocks.data.photometric.blur_kernel_size`,
    used when ``kernel_size`` is ``None``, from the smaller image side).
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
        self.sigma = _interval(sigma, "sigma", low=1e-12)
        self.p = _probability(p, "p")
        if kernel_size is not None and (
            isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1
            or kernel_size % 2 == 0
        ):  # fmt: skip
            raise ValueError(f"kernel_size must be a positive odd int or None, got {kernel_size!r}")
        self.kernel_size = kernel_size

    def _from_uniforms(self, u: Tensor) -> Tensor:
        sigma = self.sigma[0] + (self.sigma[1] - self.sigma[0]) * u[:, 1]
        return torch.where(u[:, 0] < self.p, sigma, torch.zeros_like(sigma))[:, None]

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        self._check_params(params, images.shape[:1])
        k = self.kernel_size or blur_kernel_size(int(min(images.shape[-2:])))
        return gaussian_blur(images, params[:, 0], kernel_size=k)


class ParamSolarize(_CoinFlip):
    """Random solarisation with probability ``p`` (view-only; paper: 0 observed, 0.2 target)."""

    param_names = ("solarize",)

    def __init__(self, *, p: float = 0.0, threshold: float = 0.5) -> None:
        self.p = _probability(p, "p")
        self.threshold = _probability(threshold, "threshold")

    def _apply_to(self, images: Tensor, flags: Tensor) -> Tensor:
        return solarize(images, flags, threshold=self.threshold)


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
        offsets = [0]
        for n in self._splits:
            offsets.append(offsets[-1] + n)
        self._action_idx = [
            offsets[i] + t.param_names.index(n)
            for i, t in enumerate(transforms)
            for n in t.action_names
        ]

    def output_size(self, image_size: Size) -> Size:
        size = _size(image_size)
        for t in self.transforms:
            size = t.output_size(size)
        return size

    def sample(
        self,
        batch_size: int,
        image_size: Size,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        size = _size(image_size)
        parts = []
        for t in self.transforms:
            parts.append(t.sample(batch_size, size, generator=generator, device=device))
            size = t.output_size(size)
        return torch.cat(parts, dim=1)

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        self._check_params(params, images.shape[:1])
        for t, p in zip(self.transforms, params.split(self._splits, dim=1)):
            images = t.apply(images, p)
        return images

    def action(self, params: Tensor) -> Tensor:
        self._check_params(params, params.shape[:-1] if isinstance(params, Tensor) else ())
        return params[..., self._action_idx]

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"ParamCompose([\n  {inner}\n])"
