"""Batched photometric operations against torchvision applied one image at a time."""

from __future__ import annotations

import pytest
import torch

from jepa_blocks.data import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    color_jitter,
    gaussian_blur,
    grayscale,
    solarize,
)

TF = pytest.importorskip("torchvision.transforms.v2.functional")


def _images(n: int = 12, c: int = 3, seed: int = 0) -> torch.Tensor:
    x = torch.rand(n, c, 9, 11, generator=torch.Generator().manual_seed(seed))
    x[0] = 0.5  # grey: hue undefined
    x[1, :, :3] = 0.0  # black rows
    if c == 3:
        x[2, 0] = x[2, 1]  # ties between channel maxima
        x[3, 1] = x[3, 2]
    return x


@pytest.mark.parametrize(
    ("ours", "ref", "low", "high"),
    [
        (adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
        (adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
        (adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
        (adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_adjust_matches_torchvision(ours, ref, low: float, high: float, channels: int) -> None:
    x = _images(c=channels)
    f = low + (high - low) * torch.rand(x.shape[0], generator=torch.Generator().manual_seed(1))
    out = ours(x, f)
    assert out.shape == x.shape
    for b in range(x.shape[0]):
        torch.testing.assert_close(out[b], ref(x[b], float(f[b])), atol=3e-6, rtol=0)


def test_color_jitter_follows_per_image_order() -> None:
    x = _images(16)
    gen = torch.Generator().manual_seed(2)
    order = torch.stack([torch.randperm(4, generator=gen) for _ in range(16)])
    factors = torch.stack(
        (
            0.6 + 0.8 * torch.rand(16, generator=gen),
            0.6 + 0.8 * torch.rand(16, generator=gen),
            0.8 + 0.4 * torch.rand(16, generator=gen),
            0.2 * torch.rand(16, generator=gen) - 0.1,
        ),
        dim=1,
    )
    out = color_jitter(x, factors, order)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for b in range(16):
        ref = x[b]
        for k in order[b].tolist():
            ref = ops[k](ref, float(factors[b, k]))
        torch.testing.assert_close(out[b], ref, atol=5e-6, rtol=0)
    # The order matters: brightness then contrast differs from contrast then brightness.
    f = torch.tensor([[1.4, 0.5, 1.0, 0.0]] * 16)
    a = color_jitter(x, f, torch.tensor([[0, 1, 2, 3]] * 16))
    b = color_jitter(x, f, torch.tensor([[1, 0, 2, 3]] * 16))
    assert float((a - b).abs().max()) > 1e-3


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_gaussian_blur_matches_torchvision(kernel_size: int) -> None:
    x = _images(8)
    sigma = 0.1 + 1.9 * torch.rand(8, generator=torch.Generator().manual_seed(3))
    out = gaussian_blur(x, sigma, kernel_size=kernel_size)
    for b in range(8):
        ref = TF.gaussian_blur(x[b], [kernel_size, kernel_size], [float(sigma[b])] * 2)
        torch.testing.assert_close(out[b], ref, atol=2e-6, rtol=0)


def test_gaussian_blur_sigma_zero_is_identity() -> None:
    x = _images(4)
    out = gaussian_blur(x, torch.tensor([0.0, 1.0, 0.0, 2.0]), kernel_size=3)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert not torch.equal(out[1], x[1])


def test_grayscale_and_solarize_masks() -> None:
    x = _images(4)
    mask = torch.tensor([True, False, True, False])
    g = grayscale(x, mask)
    torch.testing.assert_close(g[0], TF.rgb_to_grayscale(x[0], num_output_channels=3))
    assert torch.equal(g[1], x[1]) and torch.equal(g[3], x[3])
    s = solarize(x, mask.float(), threshold=0.5)
    torch.testing.assert_close(s[2], TF.solarize(x[2], 0.5))
    assert torch.equal(s[1], x[1])


def test_blur_kernel_size_official_formula() -> None:
    # 2·round((S − 10)/20) + 1: 3 for CIFAR (32 px), 7 for Tiny ImageNet (64 px).
    assert blur_kernel_size(32) == 3
    assert blur_kernel_size(64) == 7
    assert blur_kernel_size(96) == 9
    assert blur_kernel_size(8) == 1


def test_photometric_bad_inputs() -> None:
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="factor"):
        adjust_brightness(x, torch.ones(3))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        adjust_hue(torch.rand(2, 4, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="order"):
        color_jitter(x, torch.ones(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(x, torch.ones(2), kernel_size=4)
    with pytest.raises(ValueError, match="too large"):
        gaussian_blur(x, torch.ones(2), kernel_size=17)
    with pytest.raises(ValueError, match="threshold"):
        solarize(x, torch.ones(2), threshold=128)
