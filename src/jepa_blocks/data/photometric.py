"""Batched photometric operations (torchvision's formulas) on ``[0, 1]`` images, a factor each."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from jepa_blocks._validation import check_floating_tensor, check_int, check_positive
from jepa_blocks.data.geometric import check_rows

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "blur_kernel_size",
    "color_jitter",
    "gaussian_blur",
    "grayscale",
    "solarize",
]

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision and Pillow.


def _check_images(images: Tensor) -> Tensor:
    check_floating_tensor(images, "images", min_ndim=4, shape_doc="(B, C, H, W)")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have shape (B, C, H, W) with C = 1 or 3, got {tuple(images.shape)}"
        )
    return images


def _per_image(
    values: Tensor, images: Tensor, name: str, lo: float = -math.inf, hi: float = math.inf
) -> Tensor:
    if not isinstance(values, Tensor) or values.is_complex():
        raise TypeError(f"{name} must be a real tensor of shape (B,), got {type(values).__name__}")
    if values.shape != images.shape[:1]:
        raise ValueError(
            f"{name} must have shape ({images.shape[0]},), one value per image, "
            f"got {tuple(values.shape)}"
        )
    if not bool((torch.isfinite(values) & (values >= lo) & (values <= hi)).all()):
        raise ValueError(f"{name} must hold finite values in [{lo}, {hi}], got {values}")
    return values.to(device=images.device, dtype=images.dtype)[:, None, None, None]


def check_mask(mask: Tensor, images: Tensor) -> Tensor:
    """The boolean ``(B,)`` selection of a 0/1 or boolean per-image ``mask``."""
    m = _per_image(mask, images, "mask", 0, 1)[:, 0, 0, 0]
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError(f"mask must be boolean or 0/1, got {mask}")
    return m > 0.5


def _luma(images: Tensor) -> Tensor:
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(dim=1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b)[:, None]


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    return torch.lerp(other, images, factor).clamp_(0.0, 1.0)


def on_subset(images: Tensor, mask: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """A copy of ``images`` with ``fn`` applied to the rows selected by the boolean ``mask``."""
    out = images.clone()
    idx = torch.nonzero(mask).squeeze(1)
    if idx.numel():
        out[idx] = fn(images[idx])
    return out


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Multiply each image by its factor and clip to ``[0, 1]``.

    Shape:
        - images: ``(B, C, H, W)``; factor: ``(B,)``, non-negative; output: ``(B, C, H, W)``
    """
    f = _per_image(factor, _check_images(images), "factor", 0.0)
    return (images * f).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with the mean of its luma: ``f·x + (1 − f)·mean``, clipped.

    Shapes as in :func:`adjust_brightness`.
    """
    f = _per_image(factor, _check_images(images), "factor", 0.0)
    mean = _luma(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, f)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with its luma image: ``f·x + (1 − f)·gray``, clipped (identity for C = 1).

    Shapes as in :func:`adjust_brightness`.
    """
    f = _per_image(factor, _check_images(images), "factor", 0.0)
    if images.shape[1] == 1:
        return images.clone()
    return _blend(images, _luma(images), f)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of each image by ``shift`` turns (``shift ∈ [−½, ½]``; identity for C = 1).

    Hexcone HSV (maximum ties broken red > green > blue, as torchvision): with chroma
    ``C = max − min`` the hue is ``h = (g − b)/C``, ``(b − r)/C + 2`` or ``(r − g)/C + 4`` sixths
    of a turn for a red, green or blue maximum; with ``h' = (h/6 + shift) mod 1``,
    ``c_n = max − C·clip(min(k_n, 4 − k_n), 0, 1)``, ``k_n = (n + 6h') mod 6``, ``n = 5, 3, 1``.

    Shape:
        - images: ``(B, C, H, W)``; shift: ``(B,)``; output: ``(B, C, H, W)``
    """
    f = _per_image(shift, _check_images(images), "shift", -0.5, 0.5)
    if images.shape[1] == 1:
        return images.clone()
    r, g, b = images.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    red = maxc == r
    is_r, is_g = red.to(images.dtype), ((maxc == g) & ~red).to(images.dtype)
    is_b = 1 - is_r - is_g
    # C = 0 means r = g = b, where every numerator is 0 as well.
    hue6 = (is_r * (g - b) + is_g * (b - r + 2 * chroma) + is_b * (r - g + 4 * chroma)) / (
        chroma + (chroma == 0).to(images.dtype)
    )
    hue = hue6 * (1 / 6) + f[:, 0]
    hue = hue - torch.floor(hue)
    n = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype)
    k = n[None, :, None, None] + 6 * hue[:, None]
    k = k - 6 * torch.floor(k * (1 / 6))
    ramp = torch.minimum(k, 4 - k).clamp_(0.0, 1.0)
    return maxc[:, None] - chroma[:, None] * ramp


_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(images: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Brightness, contrast, saturation and hue adjustments in a per-image order.

    Args:
        images: Float images in ``[0, 1]``.
        factors: ``[brightness, contrast, saturation, hue]`` per image (identity ``(1, 1, 1, 0)``).
        order: Per-image permutation of the columns of ``factors``, applied left to right.

    Shape:
        - images: ``(B, C, H, W)``; factors: ``(B, 4)``; order: ``(B, 4)``, integer-valued
        - output: ``(B, C, H, W)``
    """
    bsz = _check_images(images).shape[0]
    check_rows(factors, "factors", bsz, 4, "[brightness, contrast, saturation, hue]")
    check_rows(order, "order", bsz, 4, "(a permutation of 0..3 per image)")
    if not bool((order.sort(dim=1).values == torch.arange(4, device=order.device)).all()):
        raise ValueError(f"order must hold a permutation of (0, 1, 2, 3) per image, got {order}")
    order = order.to(device=images.device, dtype=torch.long)
    factors = factors.to(device=images.device, dtype=images.dtype)
    out = images.clone()
    for stage in range(4):
        for op_id, op in enumerate(_OPS):
            idx = torch.nonzero(order[:, stage] == op_id).squeeze(1)
            if idx.numel():
                out[idx] = op(out[idx], factors[idx, op_id])
    return out


def grayscale(images: Tensor, mask: Tensor) -> Tensor:
    """Replace the images selected by ``mask`` with their 3-channel luma (identity for C = 1).

    Shape:
        - images: ``(B, C, H, W)``; mask: ``(B,)``, boolean or 0/1; output: ``(B, C, H, W)``
    """
    from torchvision.transforms.v2 import functional as TF

    m = check_mask(mask, _check_images(images))
    if images.shape[1] == 1:
        return images.clone()
    return on_subset(images, m, lambda x: TF.rgb_to_grayscale(x, num_output_channels=3))


def solarize(images: Tensor, mask: Tensor, *, threshold: float = 0.5) -> Tensor:
    """Invert the pixels ``≥ threshold`` of the images selected by ``mask``.

    The default 0.5 selects the pixels the official ``threshold=128`` selects on 8-bit images.
    Shapes as in :func:`grayscale`.
    """
    from torchvision.transforms.v2 import functional as TF

    _check_images(images)
    if check_positive(threshold, "threshold", allow_zero=True) > 1.0:
        raise ValueError(f"threshold must lie in [0, 1] for float images, got {threshold!r}")
    m = check_mask(mask, images)
    return on_subset(images, m, lambda x: TF.solarize(x, threshold=float(threshold)))


def blur_kernel_size(image_size: int) -> int:
    """The official blur kernel size ``max(1, 2·round((S − 10)/20) + 1)`` (3 for 32 px, 7 for 64).

    From ``hafezgh/seq-jepa`` ``src/datasets.py`` (``CIFAR100_aug``).
    """
    check_int(image_size, "image_size")
    return max(1, 2 * round((image_size - 10) / 20) + 1)


def gaussian_blur(images: Tensor, sigma: Tensor, *, kernel_size: int) -> Tensor:
    """Blur each image with its own Gaussian ``σ`` (``σ ≤ 0`` leaves the image unchanged).

    torchvision's ``gaussian_blur`` (kernel ``exp(−x²/(2σ²))``, reflect padding) per image.

    Args:
        images: Float images.
        sigma: Standard deviation per image, in pixels.
        kernel_size: Odd kernel size ``k`` (smaller than the image sides).

    Shape:
        - images: ``(B, C, H, W)``; sigma: ``(B,)``; output: ``(B, C, H, W)``
    """
    bsz, _, h, w = _check_images(images).shape
    if check_int(kernel_size, "kernel_size") % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    if kernel_size // 2 >= min(h, w):
        raise ValueError(f"kernel_size {kernel_size} is too large for {h}x{w} images")
    s = _per_image(sigma, images, "sigma")[:, 0, 0, 0]
    if kernel_size == 1 or bsz == 0:
        return images.clone()
    half = (kernel_size - 1) / 2
    x = torch.linspace(-half, half, kernel_size, device=images.device, dtype=images.dtype)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    pdf = torch.exp(-0.5 * (x[None, :] / safe[:, None]) ** 2)
    kern = pdf / pdf.sum(dim=1, keepdim=True)
    delta = (x.abs() < 0.5).to(images.dtype)[None, :].expand_as(kern)
    kern = torch.where((s > 0)[:, None], kern, delta)
    taps = rearrange(kern, "b k -> k b 1 1 1")
    pad = kernel_size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    # Shifted copies, rows then columns: faster than a depthwise conv with a group per image.
    rows = padded[..., 0:w] * taps[0]
    for t in range(1, kernel_size):
        rows.addcmul_(padded[..., t : t + w], taps[t])
    out = rows[..., 0:h, :] * taps[0]
    for t in range(1, kernel_size):
        out.addcmul_(rows[..., t : t + h, :], taps[t])
    return out
