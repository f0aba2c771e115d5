"""Action-parameterised sequence data for seq-JEPA-style world models.

* :mod:`~jepa_blocks.data.geometric`, :mod:`~jepa_blocks.data.photometric`: batched image
  operations with one parameter row per image;
* :mod:`~jepa_blocks.data.transforms`: random transforms that return their parameters;
* :mod:`~jepa_blocks.data.actions`: action encodings and relative actions;
* :mod:`~jepa_blocks.data.views`: ``M + 1`` views per image with parameters and actions;
* :mod:`~jepa_blocks.data.sequences`: on-device batch loader and map-style dataset;
* :mod:`~jepa_blocks.data.sources`, :mod:`~jepa_blocks.data.diebench`: image sources.

Importing this package imports neither torchvision nor matplotlib; the functions that need
torchvision, mlxtend or scikit-learn import them when called.
"""

from jepa_blocks.data.actions import (
    affine_action,
    angle_to_sincos,
    canonicalize_quaternion,
    euler_xyz_to_quaternion,
    normalize_across_views,
    quaternion_conjugate,
    quaternion_multiply,
    relative_affine_actions,
    relative_differences,
    relative_quaternions,
    relative_rotation_actions,
    sincos_to_angle,
    wrap_angle,
)
from jepa_blocks.data.diebench import DIEBENCH_STATS, ThreeDIEBench
from jepa_blocks.data.geometric import (
    affine_transform,
    invert_affine_params,
    resample_matrix,
    resized_crop,
    rotate90,
    sample_resized_crop_boxes,
)
from jepa_blocks.data.photometric import (
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
from jepa_blocks.data.sequences import SequenceDataset, SequenceLoader, ViewSequence, mix_seed
from jepa_blocks.data.sources import (
    CIFAR10_STATS,
    CIFAR100_STATS,
    MNIST_STATS,
    STL10_STATS,
    LabelledImages,
    load_cifar10,
    load_cifar100,
    load_digits,
    load_mnist,
    load_stl10,
)
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
from jepa_blocks.data.views import (
    SequenceViews,
    cifar_augmentation_views,
    mnist_affine_views,
    rotation_views,
)

__all__ = [
    "CIFAR10_STATS",
    "CIFAR100_STATS",
    "DIEBENCH_STATS",
    "MNIST_STATS",
    "STL10_STATS",
    "LabelledImages",
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
    "SequenceDataset",
    "SequenceLoader",
    "SequenceViews",
    "ThreeDIEBench",
    "ViewSequence",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "affine_action",
    "affine_transform",
    "angle_to_sincos",
    "blur_kernel_size",
    "canonicalize_quaternion",
    "cifar_augmentation_views",
    "color_jitter",
    "euler_xyz_to_quaternion",
    "gaussian_blur",
    "grayscale",
    "invert_affine_params",
    "load_cifar10",
    "load_cifar100",
    "load_digits",
    "load_mnist",
    "load_stl10",
    "mix_seed",
    "mnist_affine_views",
    "normalize_across_views",
    "quaternion_conjugate",
    "quaternion_multiply",
    "relative_affine_actions",
    "relative_differences",
    "relative_quaternions",
    "relative_rotation_actions",
    "resample_matrix",
    "resized_crop",
    "rotate90",
    "rotation_views",
    "sample_resized_crop_boxes",
    "sincos_to_angle",
    "solarize",
    "wrap_angle",
]
