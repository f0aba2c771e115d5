"""View generators and sequence sources: shapes, actions, reproducibility, epochs."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from jepa_blocks.data import (
    LabelledImages,
    ParamAffine,
    ParamHorizontalFlip,
    SequenceDataset,
    SequenceLoader,
    SequenceViews,
    ViewSequence,
    cifar_augmentation_views,
    mix_seed,
    mnist_affine_views,
    normalize_across_views,
    relative_affine_actions,
    rotation_views,
)

pytest.importorskip("torchvision")


def _source(n: int = 20, c: int = 3, size: int = 16) -> LabelledImages:
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(n, c, size, size, generator=gen) * 255).to(torch.uint8)
    return LabelledImages(
        images, torch.arange(n) % 4, ("a", "b", "c", "d"), (0.5,) * c, (0.25,) * c, "toy"
    )


@pytest.mark.parametrize("m", [1, 3, 5])
def test_cifar_views_shapes_and_9d_actions(m: int) -> None:
    views = cifar_augmentation_views(16)
    x = torch.rand(4, 3, 24, 24)
    v, p = views(x, num_views=m + 1, generator=torch.Generator().manual_seed(0))
    assert v.shape == (4, m + 1, 3, 16, 16)
    assert p.shape == (4, m + 1, views.transform.num_params)
    a = views.actions(p)
    assert a.shape == (4, m, 9) and views.action_dim == 9
    act = views.transform.action(p)
    torch.testing.assert_close(a, act[:, 1:] - act[:, :-1])
    assert cifar_augmentation_views(32, blur=False).action_dim == 8


def test_cifar_target_view_uses_the_asymmetric_pipeline() -> None:
    views = cifar_augmentation_views(8)
    x = torch.rand(500, 3, 8, 8)
    _, p = views(x, num_views=3, generator=torch.Generator().manual_seed(1))
    names = views.param_names
    sigma, solar = p[..., names.index("blur_sigma")], p[..., names.index("solarize")]
    assert bool((sigma[:, :2] > 0).all())  # observed views: blur p = 1
    assert float(solar[:, :2].sum()) == 0.0  # observed views: no solarisation
    assert abs(float((sigma[:, 2] > 0).float().mean()) - 0.1) < 0.05
    assert abs(float(solar[:, 2].mean()) - 0.2) < 0.06


def test_official_action_normalisation_option() -> None:
    views = cifar_augmentation_views(8, action_norm="official")
    x = torch.rand(3, 3, 8, 8)
    _, p = views(x, num_views=4, generator=torch.Generator().manual_seed(2))
    tn = normalize_across_views(views.transform.action(p))
    torch.testing.assert_close(views.actions(p), tn[:, 1:] - tn[:, :-1])
    with pytest.raises(ValueError, match="action_norm"):
        cifar_augmentation_views(8, action_norm="l2")


def test_views_reproduce_from_params() -> None:
    views = cifar_augmentation_views(8)
    x = torch.rand(3, 3, 12, 12)
    v, p = views(x, num_views=3, generator=torch.Generator().manual_seed(3))
    for i in range(3):
        t = views.transform if i < 2 else views.target_transform
        torch.testing.assert_close(t.apply(x, p[:, i]), v[:, i])


def test_affine_and_rotation_views_actions() -> None:
    x = torch.rand(5, 1, 12, 12)
    views = mnist_affine_views()
    v, p = views(x, num_views=4, generator=torch.Generator().manual_seed(4))
    assert v.shape == (5, 4, 1, 12, 12) and views.actions(p).shape == (5, 3, 5)
    torch.testing.assert_close(views.actions(p), relative_affine_actions(p))
    rot = rotation_views()
    _, pr = rot(x, num_views=3, generator=torch.Generator().manual_seed(5))
    a = rot.actions(pr)
    d = pr[:, 1:, 0] - pr[:, :-1, 0]
    torch.testing.assert_close(a, torch.stack((d.sin(), d.cos()), -1))
    # Quarter-turn actions take only the four values of k·90°.
    assert bool(((a.abs() < 1e-6) | ((a.abs() - 1).abs() < 1e-6)).all())
    cont = rotation_views(discrete=False, angle_range=(-0.5, 0.5))
    _, pc = cont(x, num_views=2, generator=torch.Generator().manual_seed(6))
    assert cont.action_dim == 2 and float(pc[..., 0].abs().max()) <= 0.5


def test_views_validate_arguments() -> None:
    with pytest.raises(ValueError, match="same parameter columns"):
        SequenceViews(ParamAffine(), target_transform=ParamHorizontalFlip())
    with pytest.raises(ValueError, match="num_views"):
        mnist_affine_views()(torch.rand(2, 1, 8, 8), num_views=1)


def test_loader_yields_device_batches_covering_the_epoch() -> None:
    src = _source(22)
    loader = SequenceLoader(src, rotation_views(), num_observed=2, batch_size=8, seed=1)
    assert len(loader) == 3
    batches = list(loader)
    assert [b.views.shape[0] for b in batches] == [8, 8, 6]
    b = batches[0]
    assert isinstance(b, ViewSequence)
    assert b.views.shape == (8, 3, 3, 16, 16) and b.params.shape == (8, 3, 1)
    assert b.actions.shape == (8, 2, 2) and b.labels.shape == (8,)
    seen = torch.cat([bb.indices for bb in batches])
    assert torch.equal(seen.sort().values, torch.arange(22))
    torch.testing.assert_close(b.labels, src.labels[b.indices])
    # Standardised with the source statistics: view 0 of a quarter turn is a rotated image.
    raw = (b.views * 0.25 + 0.5) * 255
    k = round(float(b.params[0, 0, 0]) / (math.pi / 2))
    expected = torch.rot90(src.images[b.indices[0]].float(), k, dims=(-2, -1))
    torch.testing.assert_close(raw[0, 0], expected, atol=1e-3, rtol=0)


def test_loader_epochs_differ_and_seeds_reproduce() -> None:
    src = _source(16)
    make = lambda seed: SequenceLoader(  # noqa: E731
        src, cifar_augmentation_views(8), num_observed=2, batch_size=16, seed=seed
    )
    a, b = make(0), make(0)
    e0a, e0b = next(iter(a)), next(iter(b))
    assert torch.equal(e0a.views, e0b.views) and torch.equal(e0a.indices, e0b.indices)
    e1a = next(iter(a))  # every new pass advances the epoch
    assert not torch.equal(e1a.params, e0a.params)
    b.set_epoch(1)
    assert torch.equal(next(iter(b)).params, e1a.params)
    assert not torch.equal(next(iter(make(1))).params, e0a.params)


def test_loader_drop_last_and_no_shuffle() -> None:
    loader = SequenceLoader(
        _source(10), rotation_views(), num_observed=1, batch_size=4, shuffle=False, drop_last=True
    )
    assert len(loader) == 2
    idx = torch.cat([b.indices for b in loader])
    assert torch.equal(idx, torch.arange(8))


def test_dataset_items_collate_and_reproduce() -> None:
    src = _source(12, c=1)
    ds = SequenceDataset(src, mnist_affine_views(), num_observed=3, seed=5, normalize=False)
    item = ds[4]
    assert item.views.shape == (4, 1, 16, 16) and item.actions.shape == (3, 5)
    assert int(item.labels) == int(src.labels[4]) and int(item.indices) == 4
    assert torch.equal(ds[4].views, item.views)
    ds.set_epoch(1)
    assert not torch.equal(ds[4].params, item.params)
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert isinstance(batch, ViewSequence)
    assert batch.views.shape == (5, 4, 1, 16, 16) and batch.actions.shape == (5, 3, 5)
    with pytest.raises(IndexError):
        ds[12]


def test_prefix_for_m_val_probes() -> None:
    seq = next(iter(SequenceLoader(_source(4), rotation_views(), num_observed=4, batch_size=4)))
    pre = seq.prefix(2)
    assert pre.num_observed == 2 and seq.num_observed == 4
    assert torch.equal(pre.views, seq.views[:, :3]) and torch.equal(pre.actions, seq.actions[:, :2])
    with pytest.raises(ValueError, match="num_observed"):
        seq.prefix(5)


def test_mix_seed_is_deterministic_and_spreads() -> None:
    assert mix_seed(0, 1, 2) == mix_seed(0, 1, 2)
    seeds = {mix_seed(0, e, i) for e in range(5) for i in range(200)}
    assert len(seeds) == 1000
    assert all(0 <= s < 2**63 for s in seeds)


def test_sources_validate() -> None:
    with pytest.raises(TypeError, match="uint8"):
        LabelledImages(
            torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), ("a",), (0.5,), (0.2,)
        )
    with pytest.raises(ValueError, match="num_observed"):
        SequenceLoader(_source(4), rotation_views(), num_observed=0, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        SequenceLoader(_source(4), rotation_views(), num_observed=1, batch_size=0)


def test_loader_shards_across_ranks_like_distributed_sampler():
    src = _source(10)
    loaders = [
        SequenceLoader(
            src, rotation_views(), num_observed=1, batch_size=3, seed=5, rank=r, world_size=3
        )
        for r in range(3)
    ]
    seen = []
    for loader in loaders:
        assert len(loader) == 2  # ceil(10 / 3) = 4 items per rank, batches of 3
        seen.append(torch.cat([b.indices for b in loader]))
    assert all(s.numel() == 4 for s in seen)
    union = torch.cat(seen)
    assert set(union.tolist()) == set(range(10))  # every item, two wrapped duplicates
    assert union.numel() == 12
    # Ranks see different augmentations for their items.
    first = [next(iter(ld)).params for ld in loaders]
    assert not torch.equal(first[0], first[1])
    with pytest.raises(ValueError, match="rank"):
        SequenceLoader(src, rotation_views(), num_observed=1, batch_size=3, rank=3, world_size=3)


def test_dataset_and_loader_share_view_generation_and_ranks() -> None:
    """An item and a one-image batch drawn with the same generator state are the same sequence."""
    src = _source(6)
    views = cifar_augmentation_views(16)
    ds = SequenceDataset(src, views, num_observed=2, seed=3)
    item = ds[2]
    gen = torch.Generator().manual_seed(mix_seed(3, 0, 2))
    images = src.images[2:3].float().div_(255.0)
    raw, params = views(images, num_views=3, generator=gen)
    mean = torch.tensor(src.mean).view(1, 1, -1, 1, 1)
    std = torch.tensor(src.std).view(1, 1, -1, 1, 1)
    torch.testing.assert_close(item.views, ((raw - mean) / std)[0])
    assert torch.equal(item.params, params[0])
    assert torch.equal(item.actions, views.actions(params)[0])
    loader = SequenceLoader(src, views, num_observed=2, batch_size=6, shuffle=False, seed=3)
    batch = next(iter(loader))
    gen = torch.Generator().manual_seed(mix_seed(3, 0))
    raw, params = views(src.images.float().div_(255.0), num_views=3, generator=gen)
    torch.testing.assert_close(batch.views, (raw - mean) / std)
    assert torch.equal(batch.actions, views.actions(params))
    for make in (
        lambda **kw: SequenceDataset(src, views, num_observed=1, **kw),
        lambda **kw: SequenceLoader(src, views, num_observed=1, batch_size=2, **kw),
    ):
        assert (make().rank, make().world_size) == (0, 1)
        assert (make(rank=1, world_size=2).rank, make(rank=1, world_size=2).world_size) == (1, 2)
        for bad in ({"rank": 2, "world_size": 2}, {"rank": -1}, {"world_size": 0}):
            with pytest.raises(ValueError, match=r"rank must be in \[0, world_size\)"):
                make(**bad)
