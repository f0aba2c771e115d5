"""Batched geometric image operations with one parameter row per image, no loop over the batch.

Angles are in radians, counter-clockwise on screen; crop boxes ``(top, left, height, width)``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from jepa_blocks._validation import check_choice, check_finite, check_floating_tensor, check_int
from jepa_blocks.data.actions import check_last_dim

__all__ = [
    "affine_transform",
    "invert_affine_params",
    "resample_matrix",
    "resized_crop",
    "rotate90",
    "sample_resized_crop_boxes",
]

AffineInterpolation = Literal["bilinear", "nearest"]
CropInterpolation = Literal["bilinear", "bicubic"]

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_image_batch(images: Any) -> Tensor:
    """Raise ``ValueError`` unless ``images`` is a 4-d ``(B, C, H, W)`` tensor (any dtype)."""
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (B, C, H, W), got {shape}")
    return images


def _check_images(images: Tensor) -> Tensor:
    check_floating_tensor(images, "images", min_ndim=4, shape_doc="(B, C, H, W)")
    return check_image_batch(images)


def check_size(value: Any, name: str) -> tuple[int, int]:
    """Return ``value`` as ``(H, W)``; raise unless it is a pair of positive ints."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a (height, width) pair of ints, got {value!r}")
    return check_int(value[0], name), check_int(value[1], name)


def check_interval(r: Any, name: str, *, low: float = -math.inf) -> tuple[float, float]:
    """Return ``r`` as ``(min, max)``; raise unless finite numbers with ``low <= min <= max``."""
    pair = isinstance(r, (tuple, list)) and len(r) == 2
    if not pair or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r):
        raise TypeError(f"{name} must be a (min, max) pair of numbers, got {r!r}")
    a, b = float(r[0]), float(r[1])
    if not (math.isfinite(a) and math.isfinite(b) and low <= a <= b):
        raise ValueError(f"{name} must satisfy {low} <= min <= max (finite), got {r!r}")
    return a, b


def check_rows(params: Any, name: str, batch: int, width: int, doc: str) -> Tensor:
    """Raise unless ``params`` is a finite real ``(batch, width)`` tensor: one row per image."""
    if not isinstance(params, Tensor) or params.is_complex() or params.dtype == torch.bool:
        raise TypeError(f"{name} must be a real tensor, got {getattr(params, 'dtype', params)!r}")
    if params.shape != (batch, width):
        raise ValueError(
            f"{name} must have shape ({batch}, {width}) {doc} for a batch of {batch} images, "
            f"got {tuple(params.shape)}"
        )
    return check_finite(params, name)


def affine_transform(
    images: Tensor, params: Tensor, *, interpolation: AffineInterpolation = "bilinear"
) -> Tensor:
    """Apply one similarity transform per image: rotation, translation and isotropic scale.

    Row ``[θ, tx, ty, log s]`` is torchvision's ``affine(img, angle=−degrees(θ),
    translate=[tx·W, ty·H], scale=s, shear=[0, 0])``; pixels from outside the input are 0.

    Args:
        images: Float images.
        params: ``[angle (rad), tx, ty (fractions of W and H), log scale]`` per image.
        interpolation: ``"bilinear"`` or ``"nearest"``.

    Shape:
        - images: ``(B, C, H, W)``; params: ``(B, 4)``; output: ``(B, C, H, W)``
    """
    b, _, h, w = _check_images(images).shape
    check_rows(params, "params", b, 4, "[angle, tx, ty, log_scale]")
    check_choice(interpolation, "interpolation", get_args(AffineInterpolation))
    p = params.to(device=images.device, dtype=images.dtype)
    cos, sin = torch.cos(p[:, 0]), torch.sin(p[:, 0])
    inv_s = torch.exp(-p[:, 3])
    tx, ty = p[:, 1] * w, p[:, 2] * h
    # Inverse map p = R(θ)ᵀ (p' − t) / s in affine_grid's [-1, 1] coordinates: x / (W/2), y / (H/2).
    rot = rearrange(torch.stack((cos, -sin * h / w, sin * w / h, cos), -1), "b (i j) -> b i j", i=2)
    a = rot * inv_s[:, None, None]
    shift = -torch.stack(((cos * tx - sin * ty) * 2 / w, (sin * tx + cos * ty) * 2 / h), -1)
    theta = torch.cat((a, (shift * inv_s[:, None])[..., None]), dim=-1)
    grid = F.affine_grid(theta, [b, images.shape[1], h, w], align_corners=False)
    return F.grid_sample(
        images, grid, mode=interpolation, padding_mode="zeros", align_corners=False
    )


def invert_affine_params(params: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Parameters of the inverse similarity transform, in :func:`affine_transform`'s convention.

    Args:
        params: ``[θ, tx, ty, log s]`` rows.
        image_size: ``(H, W)`` the translations refer to.

    Shape:
        - params: ``(..., 4)``; output: ``(..., 4)``
    """
    check_last_dim(params, "params", 4)
    h, w = check_size(image_size, "image_size")
    theta, log_s = params[..., 0], params[..., 3]
    tx, ty = params[..., 1] * w, params[..., 2] * h
    # p = R(−θ)(p' − t)/s  =>  t_inv = −R(−θ) t / s, with R(φ) = [[cos, sin], [−sin, cos]].
    c, s = torch.cos(-theta), torch.sin(-theta)
    inv_s = torch.exp(-log_s)
    tx_inv = -(c * tx + s * ty) * inv_s
    ty_inv = -(-s * tx + c * ty) * inv_s
    return torch.stack((-theta, tx_inv / w, ty_inv / h, -log_s), dim=-1)


def rotate90(images: Tensor, k: Tensor) -> Tensor:
    """Rotate each square image by ``k · 90°`` counter-clockwise, exactly.

    Args:
        images: Square images.
        k: Integer tensor of quarter turns per image, or one int for all (modulo 4).

    Raises:
        TypeError: ``k`` is not an int or an integer tensor (floats are not rounded).

    Shape:
        - images: ``(B, C, H, H)``; k: ``(B,)``; output: ``(B, C, H, H)``
    """
    if check_image_batch(images).shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be square for quarter turns, got {tuple(images.shape)}")
    if type(k) is int:
        k = torch.full(images.shape[:1], k)
    if not isinstance(k, Tensor) or k.dtype not in _INT_DTYPES:
        raise TypeError(f"k must be an int or an integer tensor, got {k!r}")
    if k.shape != images.shape[:1]:
        raise ValueError(f"k must have shape ({images.shape[0]},), got {tuple(k.shape)}")
    k = torch.remainder(k.to(device=images.device, dtype=torch.long), 4)
    out = images.clone()
    for r in (1, 2, 3):
        idx = torch.nonzero(k == r).squeeze(1)
        if idx.numel():
            out[idx] = torch.rot90(images[idx], r, dims=(-2, -1))
    return out


def sample_resized_crop_boxes(
    batch_size: int,
    image_size: tuple[int, int],
    *,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    attempts: int = 10,
) -> Tensor:
    """Sample crop boxes like torchvision's ``RandomResizedCrop.get_params``, for a whole batch.

    Args:
        batch_size: Number of boxes.
        image_size: ``(H, W)`` of the input images.
        scale: Range of the crop area as a fraction of the image area.
        ratio: Range of the aspect ratio ``w / h``.
        generator: Source of randomness; the draws happen on its device.
        device: Device of the result (default: the generator's, else CPU).
        attempts: Candidates per image before the central-crop fallback.

    Returns:
        Integer-valued ``float32`` ``(top, left, height, width)`` boxes in pixels.

    Shape:
        - output: ``(batch_size, 4)``
    """
    check_int(batch_size, "batch_size", minimum=0)
    check_int(attempts, "attempts")
    h_img, w_img = check_size(image_size, "image_size")
    scale = check_interval(scale, "scale", low=1e-12)
    ratio = check_interval(ratio, "ratio", low=1e-12)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    out_device = torch.device(device) if device is not None else gen_device
    u = torch.rand(batch_size, attempts, 4, generator=generator, device=gen_device)
    target = h_img * w_img * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    top = torch.floor(u[..., 2] * (h_img - h + 1))
    left = torch.floor(u[..., 3] * (w_img - w + 1))
    cand = torch.stack((top, left, h, w), dim=-1)
    first = torch.argmax(ok.to(torch.int8), dim=1)
    chosen = cand[torch.arange(batch_size, device=gen_device), first]
    # Central-crop fallback (torchvision: clamp the input's aspect ratio into `ratio`).
    in_ratio = w_img / h_img
    if in_ratio < ratio[0]:
        fw, fh = w_img, round(w_img / ratio[0])
    elif in_ratio > ratio[1]:
        fh, fw = h_img, round(h_img * ratio[1])
    else:
        fw, fh = w_img, h_img
    fallback = chosen.new_tensor([(h_img - fh) // 2, (w_img - fw) // 2, fh, fw])
    boxes = torch.where(ok.any(dim=1, keepdim=True), chosen, fallback)
    return boxes.to(out_device)


def _filter(x: Tensor, interpolation: CropInterpolation) -> Tensor:
    ax = x.abs()
    if interpolation == "bilinear":
        return (1 - ax).clamp_min_(0)
    # Cubic convolution, a = −½ (Pillow, PyTorch antialias). Both pieces vanish at the knots, so
    # clamping |x| into each piece's interval and adding selects the right piece without masks.
    a = -0.5
    u = ax.clamp(max=1.0)
    v = ax.clamp(1.0, 2.0)
    near = ((a + 2) * u - (a + 3)) * u * u + 1
    far = (((v - 5) * v + 8) * v - 4) * a
    return near + far


def resample_matrix(
    start: Tensor,
    length: Tensor,
    in_size: int,
    out_size: int,
    *,
    interpolation: CropInterpolation = "bicubic",
) -> Tensor:
    """Rows of the 1-D resampling of the window ``[start, start + length)`` to ``out_size`` samples.

    Antialiased as Pillow: window pixel ``k`` gets weight ``φ((k + ½ − c)/max(length/out_size, 1))``
    normalised over the window, ``c = start + (x + ½)·length/out_size`` (``φ`` triangle or cubic).

    Args:
        start: Window start per sample (pixels).
        length: Window length per sample (pixels, ≥ 1).
        in_size: Length of the full input axis.
        out_size: Number of output samples.
        interpolation: ``"bilinear"`` or ``"bicubic"``.

    Shape:
        - start: ``(B,)``; length: ``(B,)``; output: ``(B, out_size, in_size)``
    """
    check_choice(interpolation, "interpolation", get_args(CropInterpolation))
    check_int(in_size, "in_size")
    check_int(out_size, "out_size")
    if not all(
        isinstance(v, Tensor) and v.ndim == 1 and v.shape == start.shape for v in (start, length)
    ):
        got = [getattr(v, "shape", type(v).__name__) for v in (start, length)]
        raise ValueError(f"start and length must be tensors of one shape (B,), got {got}")
    if not bool(((length >= 1) & (start >= 0) & (start + length <= in_size)).all()):
        raise ValueError(f"start and length must give windows inside [0, {in_size}), length >= 1")
    dtype = start.dtype if start.is_floating_point() else torch.float32
    start = start.to(dtype)[:, None, None]
    length = length.to(dtype)[:, None, None]
    radius = 1.0 if interpolation == "bilinear" else 2.0
    step = length / out_size
    support_scale = step.clamp_min(1.0)
    x = torch.arange(out_size, device=start.device, dtype=dtype)[None, :, None]
    centre = start + (x + 0.5) * step
    # Only the taps within the filter's support can be non-zero: evaluate those, then scatter.
    num_taps = math.ceil(2 * radius * float(support_scale.max())) + 2 if start.numel() else 1
    first = torch.floor(centre - radius * support_scale + 0.5)
    k = first + torch.arange(num_taps, device=start.device, dtype=dtype)
    inside = (k >= start) & (k < start + length) & (k >= 0) & (k < in_size)
    wgt = _filter((k + 0.5 - centre) / support_scale, interpolation) * inside
    wgt = wgt / wgt.sum(dim=-1, keepdim=True)
    idx = k.clamp(0, in_size - 1).long()
    out = torch.zeros(start.shape[0], out_size, in_size, device=start.device, dtype=dtype)
    return out.scatter_add_(-1, idx, wgt)


def resized_crop(
    images: Tensor,
    boxes: Tensor,
    size: tuple[int, int],
    *,
    interpolation: CropInterpolation = "bicubic",
) -> Tensor:
    """Crop one box per image, resized to ``size`` as ``Wy · img · Wxᵀ`` (:func:`resample_matrix`).

    Args:
        images: Float images.
        boxes: Integer-valued ``(top, left, height, width)`` per image, inside the image.
        size: Output ``(height, width)``.
        interpolation: ``"bilinear"`` or ``"bicubic"``.

    Shape:
        - images: ``(B, C, H, W)``; boxes: ``(B, 4)``; output: ``(B, C, size[0], size[1])``
    """
    b, _, h, w = _check_images(images).shape
    check_rows(boxes, "boxes", b, 4, "(top, left, height, width)")
    oh, ow = check_size(size, "size")
    bx = boxes.to(device=images.device, dtype=images.dtype)
    lo, ext = bx[:, :2], bx[:, 2:]
    if not bool(((ext >= 1) & (lo >= 0) & (lo + ext <= bx.new_tensor([h, w]))).all()):
        raise ValueError(f"boxes must lie inside the {h}x{w} images with height, width >= 1")
    wy = resample_matrix(bx[:, 0], bx[:, 2], h, oh, interpolation=interpolation)
    wx = resample_matrix(bx[:, 1], bx[:, 3], w, ow, interpolation=interpolation)
    out = torch.einsum("byh,bchw->bcyw", wy, images)
    return torch.einsum("bcyw,bxw->bcyx", out, wx)
