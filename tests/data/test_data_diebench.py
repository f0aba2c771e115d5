"""3DIEBench reader on a generated miniature of the published layout (offline)."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from jepa_blocks.data import DIEBENCH_STATS, ThreeDIEBench, ViewSequence

pytest.importorskip("torchvision")

VIEWS = 6  # per object in the miniature (50 in the real dataset)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def miniature(tmp_path: Path) -> Path:
    """root/SYNSET/OBJ/image_k.jpg + latent_k.npy, {split}_images.npy, {split}_labels.npy."""
    from torchvision.io import write_jpeg

    rs = np.random.default_rng(0)
    objects = [("02691156", "obj_a"), ("02691156", "obj_b"), ("03001627", "obj_c")]
    for synset, obj in objects:
        folder = tmp_path / synset / obj
        folder.mkdir(parents=True)
        for k in range(VIEWS):
            # Constant-colour images encode the view index, to check which files were read.
            img = torch.full((3, 32, 32), 30 * k + 10, dtype=torch.uint8)
            write_jpeg(img, str(folder / f"image_{k}.jpg"), quality=100)
            latent = np.concatenate(
                (rs.uniform(-math.pi / 2, math.pi / 2, 3), rs.uniform(0, 1, 1),
                 rs.uniform(0, math.pi / 4, 1), rs.uniform(0, 2 * math.pi, 1), rs.uniform(0, 1, 1))
            )  # fmt: skip
            np.save(folder / f"latent_{k}.npy", latent)
    np.save(tmp_path / "train_images.npy", np.array([f"/{s}/{o}" for s, o in objects[:2]]))
    np.save(tmp_path / "train_labels.npy", np.array([0, 0]))
    np.save(tmp_path / "val_images.npy", np.array([f"/{s}/{o}" for s, o in objects[2:]]))
    np.save(tmp_path / "val_labels.npy", np.array([7]))
    return tmp_path


def _view_ids(seq: ViewSequence) -> list[int]:
    mean, std = DIEBENCH_STATS
    raw = seq.views[:, 0].mean(dim=(-2, -1)) * std[0] + mean[0]
    return [round((float(v) * 255 - 10) / 30) for v in raw]


def test_items_have_published_shapes_and_actions(miniature: Path) -> None:
    rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    ds = ThreeDIEBench(miniature, num_observed=3, image_size=16, views_per_object=VIEWS)
    assert len(ds) == 2 and ds.action_dim == 4
    item = ds[1]
    assert item.views.shape == (4, 3, 16, 16)
    assert item.params.shape == (4, 7) and item.actions.shape == (3, 4)
    assert int(item.labels) == 0 and int(item.indices) == 1
    ids = _view_ids(item)
    assert len(set(ids)) == 4 and all(0 <= i < VIEWS for i in ids)  # without replacement
    folder = miniature / "02691156" / "obj_b"
    lat = np.stack([np.load(folder / f"latent_{i}.npy") for i in ids])
    np.testing.assert_allclose(item.params.numpy(), lat, atol=1e-6)
    for j in range(3):
        ref = rotation.from_euler("xyz", lat[j, :3]).inv() * rotation.from_euler(
            "xyz", lat[j + 1, :3]
        )
        np.testing.assert_allclose(item.actions[j].numpy(), ref.as_quat(), atol=1e-6)


def test_rotcolor_adds_hue_differences(miniature: Path) -> None:
    ds = ThreeDIEBench(
        miniature, split="val", num_observed=2, latent="rotcolor", views_per_object=VIEWS
    )
    item = ds[0]
    assert item.actions.shape == (2, 6) and int(item.labels) == 7
    hues = item.params[:, [3, 6]]
    torch.testing.assert_close(item.actions[:, 4:], hues[1:] - hues[:-1])
    assert item.views.shape[-1] == 128  # the official 256 -> 128 resize target


def test_reproducible_per_epoch_and_collates(miniature: Path) -> None:
    ds = ThreeDIEBench(miniature, num_observed=2, image_size=8, views_per_object=VIEWS, seed=3)
    first = _view_ids(ds[0])
    assert _view_ids(ds[0]) == first
    draws = set()
    for e in range(6):
        ds.set_epoch(e)
        draws.add(tuple(_view_ids(ds[0])))
    assert len(draws) > 1
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch.views.shape == (2, 3, 3, 8, 8) and batch.actions.shape == (2, 2, 4)


def test_canonical_quaternions(miniature: Path) -> None:
    plain = ThreeDIEBench(miniature, num_observed=4, image_size=8, views_per_object=VIEWS)
    canon = ThreeDIEBench(
        miniature, num_observed=4, image_size=8, views_per_object=VIEWS, canonical=True
    )
    a, b = plain[0].actions, canon[0].actions
    assert bool((b[:, 3] >= 0).all())
    torch.testing.assert_close((a * b).sum(-1).abs(), torch.ones(4))


def test_reader_errors(miniature: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"test_images\.npy"):
        ThreeDIEBench(miniature, split="test")
    with pytest.raises(ValueError, match="latent"):
        ThreeDIEBench(miniature, latent="all")
    with pytest.raises(ValueError, match="views per object"):
        ThreeDIEBench(miniature, num_observed=VIEWS, views_per_object=VIEWS)
    np.save(miniature / "bad_images.npy", np.array(["/a/b", "/c/d"]))
    np.save(miniature / "bad_labels.npy", np.array([1]))
    with pytest.raises(ValueError, match="labels"):
        ThreeDIEBench(miniature, split="bad")
