"""Batched geometric operations against torchvision applied one image at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from jepa_blocks.data import (
    affine_transform,
    invert_affine_params,
    resample_matrix,
    resized_crop,
    rotate90,
    sample_resized_crop_boxes,
)

TF = pytest.importorskip("torchvision.transforms.v2.functional")


def _blob(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Smooth images whose content stays well inside the frame (for inverse-transform tests)."""
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, size, dtype=torch.float64),
        torch.linspace(-1, 1, size, dtype=torch.float64),
        indexing="ij",
    )
    out = torch.zeros(n, 3, size, size, dtype=torch.float64)
    for _ in range(3):
        c = (torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5) * 0.5
        amp = torch.rand(n, 3, generator=gen, dtype=torch.float64)
        r2 = (xx - c[:, 0, None, None]) ** 2 + (yy - c[:, 1, None, None]) ** 2
        out += amp[:, :, None, None] * torch.exp(-r2 / 0.05)[:, None]
    return out / out.amax(dim=(1, 2, 3), keepdim=True)


def test_affine_matches_torchvision_per_image() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 18, 22, generator=gen)
    u = torch.rand(6, 4, generator=gen)
    params = torch.stack(
        (
            u[:, 0] * 2 * math.pi - math.pi,
            u[:, 1] * 0.3 - 0.15,
            u[:, 2] * 0.3 - 0.15,
            u[:, 3] - 0.5,
        ),
        1,
    )
    out = affine_transform(x, params)
    for b in range(6):
        ref = TF.affine(
            x[b],
            angle=-math.degrees(float(params[b, 0])),
            translate=[float(params[b, 1]) * 22, float(params[b, 2]) * 18],
            scale=math.exp(float(params[b, 3])),
            shear=[0.0, 0.0],
            interpolation=TF.InterpolationMode.BILINEAR,
        )
        torch.testing.assert_close(out[b], ref, atol=2e-5, rtol=0)


def test_affine_rotation_direction_is_counter_clockwise() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 4] = 1.0  # a dot right of the centre
    out = affine_transform(x, torch.tensor([[math.pi / 2, 0.0, 0.0, 0.0]]))
    # Counter-clockwise on screen (y down): right of centre goes to above the centre.
    assert out[0, 0].argmax() == 0 * 5 + 2


def test_rotate90_is_exact_and_agrees_with_affine() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 12, 12, generator=gen)
    k = torch.tensor([0, 1, 2, 3, 4, -1, 5, 2])
    out = rotate90(x, k)
    for b in range(8):
        assert torch.equal(out[b], torch.rot90(x[b], int(k[b]) % 4, dims=(-2, -1)))
    params = torch.zeros(8, 4)
    params[:, 0] = k * (math.pi / 2)
    torch.testing.assert_close(affine_transform(x, params), out, atol=1e-5, rtol=0)
    # Four quarter turns are the identity, exactly.
    y = x
    for _ in range(4):
        y = rotate90(y, torch.ones(8, dtype=torch.long))
    assert torch.equal(y, x)


@given(
    st.floats(-math.pi, math.pi),
    st.floats(-0.06, 0.06),
    st.floats(-0.06, 0.06),
    st.floats(-0.15, 0.15),
)
def test_inverse_affine_recovers_input(theta: float, tx: float, ty: float, log_s: float) -> None:
    gen = torch.Generator().manual_seed(2)
    x = _blob(2, 48, gen)
    p = torch.tensor([[theta, tx, ty, log_s]] * 2, dtype=torch.float64)
    back = affine_transform(affine_transform(x, p), invert_affine_params(p, (48, 48)))
    # Interpolation tolerance: bilinear twice on a smooth image.
    assert float((back - x).abs().max()) < 0.05
    assert float((back - x).abs().mean()) < 0.004


def test_invert_affine_params_composes_to_identity() -> None:
    p = torch.tensor([[0.7, 0.05, -0.02, 0.1]], dtype=torch.float64)
    q = invert_affine_params(invert_affine_params(p, (20, 30)), (20, 30))
    torch.testing.assert_close(q, p)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(32, 32), (7, 9)])
def test_resized_crop_matches_torchvision(interpolation: str, size: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(10, 3, 24, 20, generator=gen)
    boxes = sample_resized_crop_boxes(10, (24, 20), generator=gen)
    out = resized_crop(x, boxes, size, interpolation=interpolation)
    mode = (
        TF.InterpolationMode.BICUBIC
        if interpolation == "bicubic"
        else TF.InterpolationMode.BILINEAR
    )
    for b in range(10):
        i, j, h, w = (int(v) for v in boxes[b])
        ref = TF.resized_crop(x[b], i, j, h, w, list(size), interpolation=mode, antialias=True)
        torch.testing.assert_close(out[b], ref, atol=2e-6, rtol=0)


def test_resized_crop_matches_pil_like_the_official_code() -> None:
    from PIL import Image

    gen = torch.Generator().manual_seed(4)
    # Smooth images: Pillow rounds and clips to 8 bits between its two passes, which only
    # matters where bicubic overshoots (sharp random noise).
    low = torch.rand(6, 3, 8, 8, generator=gen)
    smooth = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear")
    x8 = (smooth * 255).round().to(torch.uint8)
    boxes = sample_resized_crop_boxes(6, (32, 32), generator=gen)
    out = resized_crop(x8.float() / 255, boxes, (32, 32)).clamp(0, 1)
    for b in range(6):
        i, j, h, w = (int(v) for v in boxes[b])
        pil = Image.fromarray(x8[b].permute(1, 2, 0).numpy())
        ref = TF.resized_crop(pil, i, j, h, w, [32, 32], interpolation=TF.InterpolationMode.BICUBIC)
        ref_t = torch.from_numpy(np.array(ref)).permute(2, 0, 1).float() / 255
        # Pillow works in 8 bits (with fixed-point weights): within ~2 grey levels.
        assert float((out[b] - ref_t).abs().max()) <= 2.5 / 255


def test_full_box_crop_at_same_size_is_identity() -> None:
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 3)
    torch.testing.assert_close(resized_crop(x, boxes, (16, 16)), x, atol=1e-6, rtol=0)


def test_resample_matrix_rows_are_normalised_and_local() -> None:
    m = resample_matrix(torch.tensor([3.0, 0.0]), torch.tensor([5.0, 20.0]), 20, 8)
    torch.testing.assert_close(m.sum(-1), torch.ones(2, 8))
    assert float(m[0, :, :3].abs().sum()) == 0.0 and float(m[0, :, 8:].abs().sum()) == 0.0


@given(st.integers(4, 40), st.integers(4, 40), st.integers(0, 2**31 - 1))
def test_crop_boxes_are_valid_and_reproducible(h: int, w: int, seed: int) -> None:
    boxes = sample_resized_crop_boxes(64, (h, w), generator=torch.Generator().manual_seed(seed))
    again = sample_resized_crop_boxes(64, (h, w), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(boxes, again)
    top, left, bh, bw = boxes.unbind(1)
    assert bool(torch.equal(boxes, boxes.round()))
    assert bool((bh >= 1).all() and (bw >= 1).all())
    assert bool((top >= 0).all() and (left >= 0).all())
    assert bool((top + bh <= h).all() and (left + bw <= w).all())


def test_crop_boxes_follow_scale_and_ratio() -> None:
    boxes = sample_resized_crop_boxes(4000, (64, 64), generator=torch.Generator().manual_seed(6))
    area = boxes[:, 2] * boxes[:, 3] / 64**2
    ratio = boxes[:, 3] / boxes[:, 2]
    # Rounding to whole pixels blurs the bounds slightly.
    assert float(area.min()) > 0.17 and float(area.max()) <= 1.0
    assert float(ratio.min()) > 0.7 and float(ratio.max()) < 1.42
    # torchvision's sampler (same algorithm) gives the same mean area within noise.
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    img = torch.zeros(3, 64, 64)
    ref = torch.tensor(
        [RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)]
    )
    ref_area = (ref[:, 2] * ref[:, 3]).double() / 64**2
    assert abs(float(area.mean()) - float(ref_area.mean())) < 0.02


def test_crop_boxes_fallback_is_central() -> None:
    # A 4x40 image cannot host a crop with aspect ratio in [3/4, 4/3] covering >= 90 %.
    boxes = sample_resized_crop_boxes(5, (4, 40), scale=(0.9, 1.0), generator=torch.Generator())
    expected = torch.tensor([0.0, (40 - 5) // 2, 4.0, 5.0])  # w = round(4 · 4/3) = 5
    assert torch.equal(boxes, expected.expand(5, 4))


def test_geometric_bad_inputs() -> None:
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="params"):
        affine_transform(x, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="interpolation"):
        affine_transform(x, torch.zeros(2, 4), interpolation="bicubic")
    with pytest.raises(ValueError, match="square"):
        rotate90(torch.rand(2, 3, 8, 6), torch.zeros(2))
    with pytest.raises(ValueError, match="boxes"):
        resized_crop(x, torch.tensor([[0.0, 0.0, 9.0, 8.0]] * 2), (4, 4))
    with pytest.raises(ValueError, match="scale"):
        sample_resized_crop_boxes(2, (8, 8), scale=(0.5, 0.2))
    with pytest.raises(TypeError, match="images"):
        affine_transform(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 4))
