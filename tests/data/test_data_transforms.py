"""Parameterised transforms: reproducible, re-applicable, correct parameter distributions."""

from __future__ import annotations

import math

import pytest
import torch

from jepa_blocks.data import (
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

pytest.importorskip("torchvision")

ALL = [
    ParamAffine(),
    ParamRotation90(),
    ParamResizedCrop(12),
    ParamHorizontalFlip(),
    ParamColorJitter(),
    ParamGrayscale(),
    ParamGaussianBlur(kernel_size=3),
    ParamSolarize(p=0.5),
]


def _images(n: int = 24, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("transform", ALL, ids=lambda t: type(t).__name__)
def test_same_generator_same_views(transform: ParamTransform) -> None:
    x = _images()
    a, pa = transform(x, generator=torch.Generator().manual_seed(7))
    b, pb = transform(x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(pa, pb) and torch.equal(a, b)
    _, pc = transform(x, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(pa, pc)
    assert pa.shape == (x.shape[0], transform.num_params)
    assert a.shape[:2] == x.shape[:2] and a.shape[-2:] == transform.output_size((16, 16))


@pytest.mark.parametrize("transform", ALL, ids=lambda t: type(t).__name__)
def test_reapplying_returned_params_gives_the_same_images(transform: ParamTransform) -> None:
    x = _images()
    out, params = transform(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(transform.apply(x, params), out)
    # Per-image: the parameters of image b reproduce image b alone.
    for b in (0, 5, 17):
        assert torch.allclose(
            transform.apply(x[b : b + 1], params[b : b + 1]), out[b : b + 1], atol=1e-6
        )


def test_param_columns_and_actions() -> None:
    jit = ParamColorJitter()
    assert jit.action_names == ("brightness", "contrast", "saturation", "hue")
    params = jit.sample(10, (8, 8), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(jit.action(params), params[:, 1:5])
    assert ParamHorizontalFlip().action_dim == 0
    crop = ParamResizedCrop(8)
    p = crop.sample(5, (32, 32), generator=torch.Generator())
    assert torch.equal(crop.action(p), p)
    assert bool((p >= 0).all() and (p <= 1).all())
    # Normalised boxes map back to whole pixels.
    torch.testing.assert_close(p * 32, (p * 32).round())


def test_jitter_not_applied_is_identity_with_identity_factors() -> None:
    x = _images(400)
    jit = ParamColorJitter(p=0.8)
    out, params = jit(x, generator=torch.Generator().manual_seed(1))
    off = params[:, 0] == 0
    frac_on = float(params[:, 0].mean())
    assert 0.74 < frac_on < 0.86
    assert torch.equal(out[off], x[off])
    torch.testing.assert_close(
        params[off, 1:5], torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(int(off.sum()), 4)
    )
    on = ~off
    f = params[on, 1:5]
    assert float(f[:, 0].min()) >= 0.6 and float(f[:, 0].max()) <= 1.4
    assert float(f[:, 2].min()) >= 0.8 and float(f[:, 2].max()) <= 1.2
    assert float(f[:, 3].abs().max()) <= 0.1
    # The order columns hold permutations of 0..3.
    orders = params[:, 5:9].sort(dim=1).values
    torch.testing.assert_close(orders, torch.arange(4.0).expand(400, 4))


def test_probabilities_and_ranges() -> None:
    gen = torch.Generator().manual_seed(2)
    n = 4000
    assert (
        abs(float(ParamHorizontalFlip(p=0.5).sample(n, (8, 8), generator=gen).mean()) - 0.5) < 0.04
    )
    assert abs(float(ParamGrayscale(p=0.2).sample(n, (8, 8), generator=gen).mean()) - 0.2) < 0.03
    assert float(ParamSolarize(p=0.0).sample(n, (8, 8), generator=gen).sum()) == 0.0
    sig = ParamGaussianBlur(p=0.1).sample(n, (8, 8), generator=gen)[:, 0]
    assert abs(float((sig > 0).float().mean()) - 0.1) < 0.02
    assert float(sig[sig > 0].min()) >= 0.1 and float(sig.max()) <= 2.0
    k = ParamRotation90().sample(n, (8, 8), generator=gen)[:, 0] / (math.pi / 2)
    counts = torch.bincount(k.round().long(), minlength=4).float() / n
    assert bool(((counts - 0.25).abs() < 0.03).all())
    aff = ParamAffine(
        angle_range=(-1.0, 1.0), translate_range=(-0.2, 0.1), log_scale_range=(0.0, 0.3)
    )
    p = aff.sample(n, (8, 8), generator=gen)
    assert float(p[:, 0].min()) >= -1 and float(p[:, 0].max()) <= 1
    assert float(p[:, 1:3].min()) >= -0.2 and float(p[:, 1:3].max()) <= 0.1
    assert float(p[:, 3].min()) >= 0 and float(p[:, 3].max()) <= 0.3


def test_rotation90_params_are_exact_quarter_turns() -> None:
    x = _images(8)
    out, params = ParamRotation90()(x, generator=torch.Generator().manual_seed(4))
    for b in range(8):
        k = round(float(params[b, 0]) / (math.pi / 2))
        assert torch.equal(out[b], torch.rot90(x[b], k, dims=(-2, -1)))


def test_compose_concatenates_params_and_actions() -> None:
    comp = ParamCompose(
        [
            ParamResizedCrop(8),
            ParamHorizontalFlip(),
            ParamColorJitter(),
            ParamGaussianBlur(kernel_size=3),
        ]
    )
    assert comp.num_params == 4 + 1 + 9 + 1
    assert comp.action_names == (
        "crop_top", "crop_left", "crop_height", "crop_width",
        "brightness", "contrast", "saturation", "hue", "blur_sigma",
    )  # fmt: skip
    x = _images(6)
    out, params = comp(x, generator=torch.Generator().manual_seed(5))
    assert out.shape == (6, 3, 8, 8)
    act = comp.action(params)
    torch.testing.assert_close(act[:, :4], params[:, :4])
    torch.testing.assert_close(act[:, 4:8], params[:, 6:10])
    torch.testing.assert_close(act[:, 8], params[:, 14])
    # Applying the parts one by one with their slices gives the same images.
    y = x
    for t, p in zip(comp.transforms, params.split([4, 1, 9, 1], dim=1)):
        y = t.apply(y, p)
    assert torch.equal(y, out)


def test_cpu_generator_gives_device_independent_params() -> None:
    t = ParamColorJitter()
    p1 = t.sample(5, (8, 8), generator=torch.Generator().manual_seed(0), device="cpu")
    p2 = t.sample(5, (8, 8), generator=torch.Generator().manual_seed(0), device="meta")
    assert p2.device.type == "meta" and p1.shape == p2.shape


def test_transform_bad_arguments() -> None:
    with pytest.raises(ValueError, match="p must be a probability"):
        ParamHorizontalFlip(p=1.5)
    with pytest.raises(ValueError, match="hue"):
        ParamColorJitter(hue=0.7)
    with pytest.raises(ValueError, match="scale"):
        ParamResizedCrop(8, scale=(0.9, 0.1))
    with pytest.raises(ValueError, match="kernel_size"):
        ParamGaussianBlur(kernel_size=4)
    with pytest.raises(ValueError, match="params must have shape"):
        ParamAffine().apply(_images(2), torch.zeros(2, 3))
    with pytest.raises(TypeError, match="ParamTransform"):
        ParamCompose([ParamAffine(), "flip"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="images must have shape"):
        ParamAffine()(torch.zeros(3, 8, 8))


@pytest.mark.parametrize(
    ("transform", "draws"),
    [(ParamAffine(), 4), (ParamRotation90(), 1), (ParamHorizontalFlip(), 1),
     (ParamColorJitter(), 9), (ParamGrayscale(), 1), (ParamGaussianBlur(), 2),
     (ParamSolarize(p=0.5), 1)],
    ids=lambda v: type(v).__name__ if isinstance(v, ParamTransform) else str(v),
)  # fmt: skip
def test_sampling_consumes_one_uniform_block_per_batch(transform: ParamTransform, draws: int):
    """Each transform draws one ``(B, draws)`` uniform block: compositions stay reproducible."""
    gen = torch.Generator().manual_seed(11)
    params = transform.sample(6, (16, 16), generator=gen)
    ref = torch.Generator().manual_seed(11)
    u = torch.rand((6, draws), generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())
    if isinstance(transform, (ParamHorizontalFlip, ParamGrayscale, ParamSolarize)):
        assert torch.equal(params, (u < transform.p).float())
    if isinstance(transform, ParamRotation90):
        assert torch.equal(params, torch.floor(u * 4).clamp(max=3) * (math.pi / 2))


def test_view_only_transforms_apply_their_flag_column() -> None:
    """Flip, grayscale and solarize change exactly the images whose flag is 1."""
    x = _images(4)
    flags = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    for transform in (ParamHorizontalFlip(), ParamGrayscale(), ParamSolarize(threshold=0.3)):
        out = transform.apply(x, flags)
        assert torch.equal(out[1::2], x[1::2])
        assert not torch.equal(out[0], x[0]) and not torch.equal(out[2], x[2])
        with pytest.raises(ValueError, match="params must have shape"):
            transform.apply(x, torch.zeros(4, 2))
    torch.testing.assert_close(ParamHorizontalFlip().apply(x, flags)[0], x[0].flip(-1))


def test_a_subclass_without_sample_or_apply_raises_not_implemented() -> None:
    class Bare(ParamTransform):
        param_names = ("a",)

    with pytest.raises(NotImplementedError):
        Bare().sample(2, (4, 4))
    with pytest.raises(NotImplementedError):
        Bare().apply(_images(2), torch.zeros(2, 1))
