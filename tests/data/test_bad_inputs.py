"""Bad-input table of :mod:`jepa_blocks.data`: transforms, actions, views, sequences, sources."""

from __future__ import annotations

import math

import pytest
import torch

from bad_inputs import Case, run_case
from jepa_blocks._validation import NonFiniteError
from jepa_blocks.data import (
    LabelledImages,
    ParamAffine,
    ParamColorJitter,
    ParamCompose,
    ParamGaussianBlur,
    ParamHorizontalFlip,
    ParamResizedCrop,
    ParamRotation90,
    ParamSolarize,
    SequenceDataset,
    SequenceLoader,
    SequenceViews,
    ThreeDIEBench,
    ViewSequence,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    affine_action,
    affine_transform,
    blur_kernel_size,
    canonicalize_quaternion,
    cifar_augmentation_views,
    color_jitter,
    euler_xyz_to_quaternion,
    gaussian_blur,
    grayscale,
    invert_affine_params,
    load_cifar10,
    load_mnist,
    load_stl10,
    mix_seed,
    mnist_affine_views,
    normalize_across_views,
    quaternion_conjugate,
    quaternion_multiply,
    relative_affine_actions,
    relative_differences,
    relative_quaternions,
    relative_rotation_actions,
    resample_matrix,
    resized_crop,
    rotate90,
    rotation_views,
    sample_resized_crop_boxes,
    sincos_to_angle,
    solarize,
    wrap_angle,
)

NAN = float("nan")


def _img(b: int = 2, c: int = 3, s: int = 8) -> torch.Tensor:
    return torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(0))


def _params(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows)


def _src(n: int = 6, **kw) -> LabelledImages:
    args = {
        "images": torch.zeros(n, 1, 8, 8, dtype=torch.uint8),
        "labels": torch.arange(n) % 2,
        "classes": ("a", "b"),
        "mean": (0.5,),
        "std": (0.25,),
    }
    return LabelledImages(**{**args, **kw})


def _loader(**kw) -> SequenceLoader:
    args = {"num_observed": 1, "batch_size": 2}
    return SequenceLoader(_src(), rotation_views(), **{**args, **kw})


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a, b)


_X = _img()

CASES: list[Case] = [
    # ------------------------------------------------------------------ actions
    Case("wrap_angle-int", lambda: wrap_angle(torch.arange(3)), match="theta"),
    Case("wrap_angle-list", lambda: wrap_angle([1.0]), match="theta"),
    Case("sincos_to_angle-last3", lambda: sincos_to_angle(torch.zeros(2, 3)), match="code"),
    Case("affine_action-last3", lambda: affine_action(torch.zeros(2, 3)), match="params"),
    Case(
        "normalize_across_views-eps0",
        lambda: normalize_across_views(torch.zeros(2, 3, 1), eps=0.0),
        match="eps",
    ),
    Case(
        "normalize_across_views-zero-column",
        lambda: normalize_across_views(torch.zeros(2, 3, 1)),
        raises=None,
        check=lambda out: bool((out == 0).all()),
    ),
    Case(
        "relative_differences-one-view",
        lambda: relative_differences(torch.zeros(2, 1, 3)),
        match="views",
    ),
    Case(
        "relative_differences-angle_dims-float",
        lambda: relative_differences(torch.zeros(2, 3, 3), angle_dims=(1.7,)),
        match="angle_dims",
    ),
    Case(
        "relative_differences-angle_dims-bool",
        lambda: relative_differences(torch.zeros(2, 3, 3), angle_dims=(True,)),
        match="angle_dims",
    ),
    Case(
        "relative_differences-angle_dims-int",
        lambda: relative_differences(torch.zeros(2, 3, 3), angle_dims=0),
        match="angle_dims",
    ),
    Case(
        "relative_differences-angle_dims-out-of-range",
        lambda: relative_differences(torch.zeros(2, 3, 3), angle_dims=(3,)),
        match="angle_dims",
    ),
    Case(
        "relative_differences-normalize-bool",
        lambda: relative_differences(torch.zeros(2, 3, 3), normalize=True),
        match="normalize",
    ),
    Case(
        "relative_differences-wraps-negative-dim",
        lambda: relative_differences(torch.tensor([[0.0, 3.0], [0.0, -3.0]]), angle_dims=(-1,)),
        raises=None,
        check=lambda a: abs(float(a[0, 1]) - (2 * math.pi - 6.0)) < 1e-6,
    ),
    Case(
        "relative_rotation_actions-one-view",
        lambda: relative_rotation_actions(torch.zeros(2, 1)),
        match="angles",
    ),
    Case(
        "relative_affine_actions-last3",
        lambda: relative_affine_actions(torch.zeros(2, 3, 3)),
        match="params",
    ),
    Case(
        "quaternion_multiply-no-broadcast",
        lambda: quaternion_multiply(torch.zeros(2, 4), torch.zeros(3, 4)),
        match="p and q",
    ),
    Case(
        "quaternion_multiply-int",
        lambda: quaternion_multiply(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4)),
        match="p",
    ),
    Case("quaternion_conjugate-last3", lambda: quaternion_conjugate(torch.zeros(3)), match="q"),
    Case(
        "canonicalize_quaternion-complex",
        lambda: canonicalize_quaternion(torch.zeros(4, dtype=torch.complex64)),
        match="q",
    ),
    Case("euler_xyz-last4", lambda: euler_xyz_to_quaternion(torch.zeros(4)), match="angles"),
    Case(
        "relative_quaternions-canonical-str",
        lambda: relative_quaternions(torch.zeros(2, 3), canonical="no"),
        match="canonical",
    ),
    # ------------------------------------------------------------------ geometric
    Case("affine_transform-uint8", lambda: affine_transform(_X.byte(), torch.zeros(2, 4))),
    Case("affine_transform-3d", lambda: affine_transform(_X[0], torch.zeros(2, 4)), match="images"),
    Case(
        "affine_transform-params-rows",
        lambda: affine_transform(_X, torch.zeros(3, 4)),
        match="params",
    ),
    Case(
        "affine_transform-params-nan",
        lambda: affine_transform(_X, _params([NAN, 0, 0, 0], [0, 0, 0, 0])),
        raises=NonFiniteError,
        match="params",
    ),
    Case(
        "affine_transform-params-list",
        lambda: affine_transform(_X, [[0.0] * 4] * 2),
        match="params",
    ),
    Case(
        "affine_transform-interpolation",
        lambda: affine_transform(_X, torch.zeros(2, 4), interpolation="cubic"),
        match="interpolation",
    ),
    Case(
        "affine_transform-identity",
        lambda: affine_transform(_X, torch.zeros(2, 4)),
        raises=None,
        check=lambda y: torch.allclose(y, _X, atol=1e-5),
    ),
    Case(
        "invert_affine_params-image_size-int",
        lambda: invert_affine_params(torch.zeros(4), 8),
        match="image_size",
    ),
    Case(
        "invert_affine_params-image_size-zero",
        lambda: invert_affine_params(torch.zeros(4), (0, 8)),
        match="image_size",
    ),
    Case(
        "invert_affine_params-image_size-float",
        lambda: invert_affine_params(torch.zeros(4), (8.5, 8)),
        match="image_size",
    ),
    Case("rotate90-k-1.7", lambda: rotate90(_X, torch.tensor([1.7, 0.0])), raises=TypeError),
    Case("rotate90-k-float-int", lambda: rotate90(_X, torch.tensor([1.0, 0.0])), match="k"),
    Case("rotate90-k-float", lambda: rotate90(_X, 1.7), match="k"),
    Case("rotate90-k-bool", lambda: rotate90(_X, torch.tensor([True, False])), match="k"),
    Case("rotate90-k-shape", lambda: rotate90(_X, torch.tensor([1, 0, 2])), match="k"),
    Case(
        "rotate90-not-square", lambda: rotate90(_X[..., :6], torch.tensor([1, 0])), match="square"
    ),
    Case(
        "rotate90-k-int",
        lambda: rotate90(_X, 5),
        raises=None,
        check=lambda y: torch.equal(y, torch.rot90(_X, 1, dims=(-2, -1))),
    ),
    Case(
        "sample_resized_crop_boxes-batch-negative",
        lambda: sample_resized_crop_boxes(-1, (8, 8)),
        match="batch_size",
    ),
    Case(
        "sample_resized_crop_boxes-batch-float",
        lambda: sample_resized_crop_boxes(2.5, (8, 8)),
        match="batch_size",
    ),
    Case(
        "sample_resized_crop_boxes-image_size-float",
        lambda: sample_resized_crop_boxes(2, (8.5, 8)),
        match="image_size",
    ),
    Case(
        "sample_resized_crop_boxes-scale-inverted",
        lambda: sample_resized_crop_boxes(2, (8, 8), scale=(0.5, 0.2)),
        match="scale",
    ),
    Case(
        "sample_resized_crop_boxes-scale-nan",
        lambda: sample_resized_crop_boxes(2, (8, 8), scale=(NAN, 1.0)),
        match="scale",
    ),
    Case(
        "sample_resized_crop_boxes-scale-float",
        lambda: sample_resized_crop_boxes(2, (8, 8), scale=0.5),
        match="scale",
    ),
    Case(
        "sample_resized_crop_boxes-ratio-zero",
        lambda: sample_resized_crop_boxes(2, (8, 8), ratio=(0.0, 1.0)),
        match="ratio",
    ),
    Case(
        "sample_resized_crop_boxes-attempts-zero",
        lambda: sample_resized_crop_boxes(2, (8, 8), attempts=0),
        match="attempts",
    ),
    Case(
        "sample_resized_crop_boxes-empty",
        lambda: sample_resized_crop_boxes(0, (8, 8)),
        raises=None,
        check=lambda b: b.shape == (0, 4),
    ),
    Case(
        "resample_matrix-length-zero",
        lambda: resample_matrix(torch.tensor([0.0]), torch.tensor([0.0]), 8, 4),
        match="length",
    ),
    Case(
        "resample_matrix-window-outside",
        lambda: resample_matrix(torch.tensor([6.0]), torch.tensor([4.0]), 8, 4),
        match="start and length",
    ),
    Case(
        "resample_matrix-nan",
        lambda: resample_matrix(torch.tensor([NAN]), torch.tensor([4.0]), 8, 4),
        match="start",
    ),
    Case(
        "resample_matrix-shapes",
        lambda: resample_matrix(torch.tensor([0.0, 1.0]), torch.tensor([4.0]), 8, 4),
        match="start and length",
    ),
    Case(
        "resample_matrix-out_size-zero",
        lambda: resample_matrix(torch.tensor([0.0]), torch.tensor([4.0]), 8, 0),
        match="out_size",
    ),
    Case(
        "resample_matrix-list",
        lambda: resample_matrix([0.0], [4.0], 8, 4),
        match="start and length",
    ),
    Case(
        "resized_crop-size-int",
        lambda: resized_crop(_X, _params([0, 0, 4, 4], [0, 0, 4, 4]), 4),
        match="size",
    ),
    Case(
        "resized_crop-size-float",
        lambda: resized_crop(_X, _params([0, 0, 4, 4], [0, 0, 4, 4]), (4.5, 4)),
        match="size",
    ),
    Case(
        "resized_crop-boxes-nan",
        lambda: resized_crop(_X, _params([0, 0, NAN, 4], [0, 0, 4, 4]), (4, 4)),
        raises=NonFiniteError,
        match="boxes",
    ),
    Case(
        "resized_crop-boxes-outside",
        lambda: resized_crop(_X, _params([6, 0, 4, 4], [0, 0, 4, 4]), (4, 4)),
        match="boxes",
    ),
    Case(
        "resized_crop-boxes-bool",
        lambda: resized_crop(_X, torch.ones(2, 4, dtype=torch.bool), (4, 4)),
        match="boxes",
    ),
    # ------------------------------------------------------------------ photometric
    Case(
        "adjust_brightness-negative",
        lambda: adjust_brightness(_X, torch.tensor([-1.0, 1.0])),
        match="factor",
    ),
    Case(
        "adjust_brightness-nan",
        lambda: adjust_brightness(_X, torch.tensor([NAN, 1.0])),
        match="factor",
    ),
    Case(
        "adjust_brightness-inf",
        lambda: adjust_brightness(_X, torch.tensor([math.inf, 1.0])),
        match="factor",
    ),
    Case("adjust_brightness-shape", lambda: adjust_brightness(_X, torch.ones(3)), match="factor"),
    Case("adjust_brightness-float", lambda: adjust_brightness(_X, 1.0), match="factor"),
    Case(
        "adjust_brightness-c2", lambda: adjust_brightness(_X[:, :2], torch.ones(2)), match="images"
    ),
    Case(
        "adjust_contrast-negative",
        lambda: adjust_contrast(_X, torch.tensor([-0.1, 1.0])),
        match="factor",
    ),
    Case(
        "adjust_saturation-nan",
        lambda: adjust_saturation(_X, torch.tensor([NAN, 1.0])),
        match="factor",
    ),
    Case("adjust_hue-shift-big", lambda: adjust_hue(_X, torch.tensor([0.7, 0.0])), match="shift"),
    Case(
        "adjust_hue-shift-complex",
        lambda: adjust_hue(_X, torch.zeros(2, dtype=torch.complex64)),
        match="shift",
    ),
    Case(
        "adjust_hue-identity",
        lambda: adjust_hue(_X, torch.zeros(2)),
        raises=None,
        check=lambda y: torch.allclose(y, _X, atol=1e-6),
    ),
    Case(
        "color_jitter-order-not-permutation",
        lambda: color_jitter(
            _X, _params([1, 1, 1, 0], [1, 1, 1, 0]), _params([0, 0, 2, 3], [0, 1, 2, 3])
        ),
        match="order",
    ),
    Case(
        "color_jitter-order-fractional",
        lambda: color_jitter(
            _X, _params([1, 1, 1, 0], [1, 1, 1, 0]), _params([0, 1.5, 2, 3], [0, 1, 2, 3])
        ),
        match="order",
    ),
    Case(
        "color_jitter-factors-nan",
        lambda: color_jitter(
            _X, _params([NAN, 1, 1, 0], [1, 1, 1, 0]), _params([0, 1, 2, 3], [0, 1, 2, 3])
        ),
        raises=NonFiniteError,
        match="factors",
    ),
    Case(
        "color_jitter-hue-big",
        lambda: color_jitter(
            _X, _params([1, 1, 1, 0.9], [1, 1, 1, 0]), _params([0, 1, 2, 3], [0, 1, 2, 3])
        ),
        match="shift",
    ),
    Case("grayscale-mask-0.7", lambda: grayscale(_X, torch.tensor([0.7, 0.0])), match="mask"),
    Case("grayscale-mask-nan", lambda: grayscale(_X, torch.tensor([NAN, 0.0])), match="mask"),
    Case("grayscale-mask-shape", lambda: grayscale(_X, torch.tensor([True])), match="mask"),
    Case(
        "grayscale-mask-bool",
        lambda: grayscale(_X, torch.tensor([False, False])),
        raises=None,
        check=lambda y: torch.equal(y, _X),
    ),
    Case(
        "solarize-threshold-str",
        lambda: solarize(_X, torch.ones(2), threshold="0.5"),
        match="threshold",
    ),
    Case(
        "solarize-threshold-bool",
        lambda: solarize(_X, torch.ones(2), threshold=True),
        match="threshold",
    ),
    Case(
        "solarize-threshold-2",
        lambda: solarize(_X, torch.ones(2), threshold=2.0),
        match="threshold",
    ),
    Case("blur_kernel_size-float", lambda: blur_kernel_size(32.0), match="image_size"),
    Case(
        "gaussian_blur-sigma-nan",
        lambda: gaussian_blur(_X, torch.tensor([NAN, 1.0]), kernel_size=3),
        match="sigma",
    ),
    Case(
        "gaussian_blur-kernel-even",
        lambda: gaussian_blur(_X, torch.ones(2), kernel_size=4),
        match="kernel_size",
    ),
    Case(
        "gaussian_blur-kernel-big",
        lambda: gaussian_blur(_X, torch.ones(2), kernel_size=17),
        match="kernel_size",
    ),
    Case(
        "gaussian_blur-kernel-bool",
        lambda: gaussian_blur(_X, torch.ones(2), kernel_size=True),
        match="kernel_size",
    ),
    Case(
        "gaussian_blur-sigma-zero-identity",
        lambda: gaussian_blur(_X, torch.zeros(2), kernel_size=3),
        raises=None,
        check=lambda y: torch.allclose(y, _X),
    ),
    # ------------------------------------------------------------------ transforms
    Case(
        "ParamAffine-angle_range-inverted",
        lambda: ParamAffine(angle_range=(1.0, -1.0)),
        match="angle_range",
    ),
    Case(
        "ParamAffine-angle_range-float", lambda: ParamAffine(angle_range=1.0), match="angle_range"
    ),
    Case(
        "ParamAffine-angle_range-str",
        lambda: ParamAffine(angle_range=("a", "b")),
        match="angle_range",
    ),
    Case(
        "ParamAffine-translate-inf",
        lambda: ParamAffine(translate_range=(0.0, math.inf)),
        match="translate_range",
    ),
    Case(
        "ParamAffine-interpolation",
        lambda: ParamAffine(interpolation="bicubic"),
        match="interpolation",
    ),
    Case(
        "ParamAffine-sample-batch-float",
        lambda: ParamAffine().sample(2.5, (8, 8)),
        match="batch_size",
    ),
    Case(
        "ParamAffine-sample-batch-negative",
        lambda: ParamAffine().sample(-1, (8, 8)),
        match="batch_size",
    ),
    Case(
        "ParamAffine-sample-image_size-int", lambda: ParamAffine().sample(2, 8), match="image_size"
    ),
    Case(
        "ParamAffine-apply-params-nan",
        lambda: ParamAffine().apply(_X, _params([NAN, 0, 0, 0], [0, 0, 0, 0])),
        match="params",
    ),
    Case(
        "ParamAffine-apply-params-shape",
        lambda: ParamAffine().apply(_X, torch.zeros(2, 3)),
        match="params",
    ),
    Case(
        "ParamAffine-apply-images-list",
        lambda: ParamAffine().apply([1.0], torch.zeros(2, 4)),
        match="images",
    ),
    Case("ParamAffine-action-list", lambda: ParamAffine().action([0.0] * 4), match="params"),
    Case(
        "ParamRotation90-apply-non-multiple",
        lambda: ParamRotation90().apply(_X, torch.tensor([[1.0], [0.0]])),
        match="pi/2",
    ),
    Case(
        "ParamRotation90-apply-quarter",
        lambda: ParamRotation90().apply(_X, torch.tensor([[math.pi / 2], [0.0]])),
        raises=None,
        check=lambda y: torch.equal(y[0], torch.rot90(_X[0], 1, dims=(-2, -1))),
    ),
    Case("ParamResizedCrop-size-float", lambda: ParamResizedCrop(16.5), match="size"),
    Case("ParamResizedCrop-size-zero", lambda: ParamResizedCrop((0, 4)), match="size"),
    Case(
        "ParamResizedCrop-scale-zero", lambda: ParamResizedCrop(4, scale=(0.0, 1.0)), match="scale"
    ),
    Case(
        "ParamResizedCrop-ratio-triple",
        lambda: ParamResizedCrop(4, ratio=(0.5, 1.0, 2.0)),
        match="ratio",
    ),
    Case(
        "ParamResizedCrop-interpolation",
        lambda: ParamResizedCrop(4, interpolation="nearest"),
        match="interpolation",
    ),
    Case(
        "ParamResizedCrop-apply-outside",
        lambda: ParamResizedCrop(4).apply(_X, _params([0.9, 0, 0.5, 0.5], [0, 0, 1, 1])),
        match="boxes",
    ),
    Case("ParamHorizontalFlip-p-big", lambda: ParamHorizontalFlip(p=1.5), match="p"),
    Case("ParamHorizontalFlip-p-str", lambda: ParamHorizontalFlip(p="0.5"), match="p"),
    Case("ParamHorizontalFlip-p-bool", lambda: ParamHorizontalFlip(p=True), match="p"),
    Case(
        "ParamHorizontalFlip-apply-0.7",
        lambda: ParamHorizontalFlip().apply(_X, torch.tensor([[0.7], [0.0]])),
        match="mask",
    ),
    Case(
        "ParamColorJitter-brightness-negative",
        lambda: ParamColorJitter(brightness=-0.1),
        match="brightness",
    ),
    Case("ParamColorJitter-contrast-nan", lambda: ParamColorJitter(contrast=NAN), match="contrast"),
    Case(
        "ParamColorJitter-saturation-str",
        lambda: ParamColorJitter(saturation="0.2"),
        match="saturation",
    ),
    Case("ParamColorJitter-hue-big", lambda: ParamColorJitter(hue=0.6), match="hue"),
    Case("ParamColorJitter-hue-bool", lambda: ParamColorJitter(hue=True), match="hue"),
    Case("ParamColorJitter-p-negative", lambda: ParamColorJitter(p=-0.1), match="p"),
    Case(
        "ParamColorJitter-apply-order",
        lambda: ParamColorJitter().apply(
            _X, _params([1, 1, 1, 1, 0, 0, 0, 2, 3], [0, 1, 1, 1, 0, 0, 1, 2, 3])
        ),
        match="order",
    ),
    Case(
        "ParamGaussianBlur-sigma-zero", lambda: ParamGaussianBlur(sigma=(0.0, 1.0)), match="sigma"
    ),
    Case(
        "ParamGaussianBlur-kernel-even",
        lambda: ParamGaussianBlur(kernel_size=4),
        match="kernel_size",
    ),
    Case(
        "ParamGaussianBlur-kernel-float",
        lambda: ParamGaussianBlur(kernel_size=3.0),
        match="kernel_size",
    ),
    Case("ParamSolarize-threshold-big", lambda: ParamSolarize(threshold=1.5), match="threshold"),
    Case("ParamCompose-empty", lambda: ParamCompose([]), match="transforms"),
    Case(
        "ParamCompose-not-transform",
        lambda: ParamCompose([ParamAffine(), "flip"]),
        match=r"transforms\[1\]",
    ),
    Case(
        "ParamCompose-apply-nan",
        lambda: ParamCompose([ParamHorizontalFlip(), ParamAffine()]).apply(
            _X, _params([0, NAN, 0, 0, 0], [0, 0, 0, 0, 0])
        ),
        match="params",
    ),
    # ------------------------------------------------------------------ views
    Case("SequenceViews-transform", lambda: SequenceViews("affine"), match="transform"),
    Case(
        "SequenceViews-target-columns",
        lambda: SequenceViews(ParamAffine(), target_transform=ParamRotation90()),
        match="target_transform",
    ),
    Case(
        "SequenceViews-encoding",
        lambda: SequenceViews(ParamAffine(), encoding="diff"),
        match="encoding",
    ),
    Case(
        "SequenceViews-num_views-1",
        lambda: mnist_affine_views()(_X, num_views=1),
        match="num_views",
    ),
    Case(
        "SequenceViews-num_views-float",
        lambda: mnist_affine_views()(_X, num_views=2.0),
        match="num_views",
    ),
    Case(
        "SequenceViews-images-3d", lambda: mnist_affine_views()(_X[0], num_views=2), match="images"
    ),
    Case("rotation_views-discrete-str", lambda: rotation_views(discrete="no"), match="discrete"),
    Case(
        "mnist_affine_views-range",
        lambda: mnist_affine_views(log_scale_range=(1.0, 0.0)),
        match="log_scale_range",
    ),
    Case(
        "cifar_views-image_size-float", lambda: cifar_augmentation_views(32.0), match="image_size"
    ),
    Case("cifar_views-blur-str", lambda: cifar_augmentation_views(32, blur="no"), match="blur"),
    Case(
        "cifar_views-action_norm",
        lambda: cifar_augmentation_views(32, action_norm="l2"),
        match="action_norm",
    ),
    # ------------------------------------------------------------------ sequences
    Case("mix_seed-float", lambda: mix_seed(1, 2.5), match="mix_seed"),
    Case(
        "ViewSequence-prefix-too-long",
        lambda: ViewSequence(
            torch.zeros(2, 3, 1, 4, 4),
            torch.zeros(2, 3, 1),
            torch.zeros(2, 2, 1),
            torch.zeros(2),
            torch.zeros(2),
        ).prefix(3),
        match="num_observed",
    ),
    Case(
        "SequenceLoader-source",
        lambda: SequenceLoader("mnist", rotation_views(), num_observed=1, batch_size=2),
        match="source",
    ),
    Case(
        "SequenceLoader-views",
        lambda: SequenceLoader(_src(), ParamAffine(), num_observed=1, batch_size=2),
        match="views",
    ),
    Case("SequenceLoader-num_observed-0", lambda: _loader(num_observed=0), match="num_observed"),
    Case("SequenceLoader-batch_size-float", lambda: _loader(batch_size=2.0), match="batch_size"),
    Case("SequenceLoader-seed-float", lambda: _loader(seed=1.5), match="seed"),
    Case("SequenceLoader-seed-str", lambda: _loader(seed="1"), match="seed"),
    Case("SequenceLoader-normalize-str", lambda: _loader(normalize="no"), match="normalize"),
    Case("SequenceLoader-shuffle-str", lambda: _loader(shuffle="no"), match="shuffle"),
    Case("SequenceLoader-drop_last-int", lambda: _loader(drop_last=1), match="drop_last"),
    Case("SequenceLoader-device", lambda: _loader(device="gpu0"), match="device"),
    Case("SequenceLoader-rank-float", lambda: _loader(rank=0.5, world_size=2), match="rank"),
    Case("SequenceLoader-rank-too-big", lambda: _loader(rank=2, world_size=2), match="rank"),
    Case("SequenceLoader-world_size-zero", lambda: _loader(world_size=0), match="world_size"),
    Case("SequenceLoader-set_epoch-negative", lambda: _loader().set_epoch(-1), match="epoch"),
    Case("SequenceLoader-set_epoch-float", lambda: _loader().set_epoch(1.5), match="epoch"),
    Case(
        "SequenceDataset-index-float",
        lambda: SequenceDataset(_src(), rotation_views(), num_observed=1)[1.5],
        match="index",
    ),
    # ------------------------------------------------------------------ sources
    Case(
        "LabelledImages-float-images", lambda: _src(images=torch.zeros(6, 1, 8, 8)), match="images"
    ),
    Case(
        "LabelledImages-3d-images",
        lambda: _src(images=torch.zeros(6, 8, 8, dtype=torch.uint8)),
        match="images",
    ),
    Case("LabelledImages-labels-float", lambda: _src(labels=torch.zeros(6)), match="labels"),
    Case("LabelledImages-labels-range", lambda: _src(labels=torch.arange(6)), match="labels"),
    Case(
        "LabelledImages-labels-below-1", lambda: _src(labels=torch.full((6,), -2)), match="labels"
    ),
    Case(
        "LabelledImages-labels-shape",
        lambda: _src(labels=torch.zeros(5, dtype=torch.long)),
        match="labels",
    ),
    Case("LabelledImages-std-zero", lambda: _src(std=(0.0,)), match="std"),
    Case("LabelledImages-std-channels", lambda: _src(std=(0.2, 0.2)), match="std"),
    Case("LabelledImages-mean-nan", lambda: _src(mean=(NAN,)), match="mean"),
    Case("LabelledImages-mean-float", lambda: _src(mean=0.5), match="mean"),
    Case(
        "LabelledImages-unlabelled",
        lambda: len(_src(labels=torch.full((6,), -1))),
        raises=None,
        check=lambda n: n == 6,
    ),
    Case("subset-float", lambda: _src().subset([1.7]), match="indices"),
    Case("subset-bool", lambda: _src().subset([True, False]), match="indices"),
    Case("subset-out-of-range", lambda: _src().subset([6]), match="indices"),
    Case("subset-str", lambda: _src().subset("ab"), match="indices"),
    Case("subset-2d", lambda: _src().subset([[0]]), match="indices"),
    Case(
        "subset-negative",
        lambda: _src(labels=torch.tensor([0, 1, 0, 1, 0, 1])).subset([-1, 0]).labels,
        raises=None,
        check=lambda labels: labels.tolist() == [1, 0],
    ),
    Case("subset-empty", lambda: len(_src().subset([])), raises=None, check=lambda n: n == 0),
    Case("load_mnist-split", lambda: load_mnist("val"), match="split"),
    Case(
        "load_cifar10-download-str",
        lambda: load_cifar10("/nonexistent", download="no"),
        match="download",
    ),
    Case("load_stl10-split", lambda: load_stl10("/nonexistent", split="val"), match="split"),
    Case(
        "ThreeDIEBench-latent",
        lambda: ThreeDIEBench("/nonexistent", latent="color"),
        match="latent",
    ),
    Case(
        "ThreeDIEBench-num_observed",
        lambda: ThreeDIEBench("/nonexistent", num_observed=50),
        match="num_observed",
    ),
    Case(
        "ThreeDIEBench-views_per_object",
        lambda: ThreeDIEBench("/nonexistent", views_per_object=2.5),
        match="views_per_object",
    ),
    Case(
        "ThreeDIEBench-normalize-str",
        lambda: ThreeDIEBench("/nonexistent", normalize="no"),
        match="normalize",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case) -> None:
    run_case(case)


def test_rejected_epoch_keeps_the_loader_state() -> None:
    loader = _loader()
    loader.set_epoch(3)
    with pytest.raises(TypeError, match="epoch"):
        loader.set_epoch(1.5)
    assert loader.epoch == 3
