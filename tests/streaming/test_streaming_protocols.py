"""Stream plans visit every item exactly once, in the declared order, reproducibly from a seed."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from streaming_testutils import tiny_source

from jepa_blocks.data import mnist_affine_views
from jepa_blocks.streaming import (
    ImageSequenceMaker,
    SequenceStream,
    StreamPlan,
    blur_boundaries,
    class_incremental_stream,
    even_class_splits,
    regime_shift_stream,
    stationary_stream,
)


def _visited(stream: SequenceStream) -> torch.Tensor:
    return torch.cat([b.sequences.indices.cpu() for b in stream])


def _index_maker(indices, regimes, generator):
    """A maker that returns the indices only (any sequence source works)."""
    from jepa_blocks.data import ViewSequence

    del generator
    n = indices.numel()
    z = torch.zeros(n, 2, 1, 1, 1)
    return ViewSequence(z, torch.zeros(n, 2, 1), torch.zeros(n, 1, 1), regimes.clone(), indices)


# --------------------------------------------------------------------------- plans


def test_stationary_is_a_seeded_permutation():
    a = stationary_stream(100, seed=3)
    assert sorted(a.order.tolist()) == list(range(100))
    assert torch.equal(a.order, stationary_stream(100, seed=3).order)
    assert not torch.equal(a.order, stationary_stream(100, seed=4).order)
    assert a.num_splits == 1 and a.num_regimes == 1 and a.boundaries == (100,)
    b = stationary_stream(indices=[7, 3, 11, 5], seed=0)
    assert sorted(b.order.tolist()) == [3, 5, 7, 11]


def test_class_incremental_declared_order():
    labels = torch.tensor([0, 1, 2, 3, 4, 5] * 10)
    splits = ((4, 5), (0, 1), (2, 3))
    plan = class_incremental_stream(labels, splits=splits, seed=1)
    assert sorted(plan.order.tolist()) == list(range(60))  # every item exactly once
    assert plan.boundaries == (20, 40, 60)
    for k, group in enumerate(splits):
        lo, hi = (0, *plan.boundaries)[k], plan.boundaries[k]
        assert set(labels[plan.order[lo:hi]].tolist()) == set(group)
        assert (plan.splits[lo:hi] == k).all()
    assert torch.equal(plan.order, class_incremental_stream(labels, splits=splits, seed=1).order)
    unshuffled = class_incremental_stream(labels, splits=splits, shuffle=False)
    first = unshuffled.order[:20]
    assert torch.equal(first, first.sort().values)


def test_class_incremental_skips_unlisted_classes_and_validates():
    labels = torch.tensor([0, 1, 2] * 5)
    plan = class_incremental_stream(labels, splits=[[2], [0]], regimes=[1, 0])
    assert len(plan) == 10 and 1 not in labels[plan.order].tolist()
    assert plan.regimes[:5].eq(1).all() and plan.regimes[5:].eq(0).all()
    with pytest.raises(ValueError, match="disjoint"):
        class_incremental_stream(labels, splits=[[0, 1], [1]])
    with pytest.raises(ValueError, match="no items"):
        class_incremental_stream(labels, splits=[[0], [9]])
    with pytest.raises(ValueError, match="regimes"):
        class_incremental_stream(labels, splits=[[0], [1]], regimes=[0])


def test_even_class_splits():
    assert even_class_splits(10, 5) == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    assert sum(len(g) for g in even_class_splits(10, 4)) == 10
    with pytest.raises(ValueError, match="num_splits"):
        even_class_splits(3, 4)


def test_regime_shift_segments():
    plan = regime_shift_stream(30, num_regimes=3, seed=0)
    assert sorted(plan.order.tolist()) == list(range(30))
    assert plan.boundaries == (10, 20, 30)
    assert plan.regimes.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    assert torch.equal(plan.regimes, plan.splits)
    with pytest.raises(ValueError, match="num_regimes"):
        regime_shift_stream(3, num_regimes=4)


def test_blur_keeps_items_and_mixes_only_around_boundaries():
    labels = torch.arange(40) // 10  # 4 classes of 10
    plan = class_incremental_stream(labels, splits=[[0], [1], [2], [3]], seed=0)
    blurred = blur_boundaries(plan, width=0.3, seed=0)
    assert sorted(blurred.order.tolist()) == list(range(40))
    assert blurred.boundaries == plan.boundaries
    # positions outside the windows [b-3, b+3) are untouched
    inside = torch.zeros(40, dtype=torch.bool)
    for b in plan.boundaries[:-1]:
        inside[b - 3 : b + 3] = True
    assert torch.equal(blurred.order[~inside], plan.order[~inside])
    assert not torch.equal(blurred.splits, plan.splits)  # the windows did mix
    assert torch.equal(labels[blurred.order], blurred.splits)  # items keep their split
    assert torch.equal(blur_boundaries(plan, width=0.0).order, plan.order)
    assert torch.equal(blur_boundaries(plan, width=0.3, seed=0).order, blurred.order)
    with pytest.raises(ValueError, match="width"):
        blur_boundaries(plan, width=0.6)


def test_plan_validation():
    z3 = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="once"):
        StreamPlan(torch.tensor([0, 1, 1]), z3, z3, (3,))
    with pytest.raises(ValueError, match="boundaries"):
        StreamPlan(torch.tensor([0, 1, 2]), z3, z3, (2,))
    with pytest.raises(ValueError, match="splits"):
        StreamPlan(torch.tensor([0, 1, 2]), z3[:2], z3, (3,))
    with pytest.raises(TypeError, match="integers"):
        StreamPlan(torch.tensor([0.0, 1.0, 2.0]), z3, z3, (3,))


# --------------------------------------------------------------------------- streams


@given(
    n=st.integers(1, 80),
    batch=st.integers(1, 17),
    splits=st.integers(1, 4),
    align=st.booleans(),
    seed=st.integers(0, 5),
)
def test_stream_visits_each_item_once_in_declared_order(n, batch, splits, align, seed):
    splits = min(splits, n)
    labels = torch.arange(n) % splits
    plan = class_incremental_stream(labels, splits=[[c] for c in range(splits)], seed=seed)
    stream = SequenceStream(plan, _index_maker, batch_size=batch, align_to_boundaries=align)
    visited = _visited(stream)
    assert torch.equal(visited, plan.order)  # declared order, each item exactly once
    assert len(stream) == len(plan.batch_slices(batch, align_to_boundaries=align))
    if align:
        for b in stream:
            assert b.splits.unique().numel() == 1
    assert all(b.sequences.indices.numel() <= batch for b in stream)


def test_stream_batches_are_reproducible():
    source = tiny_source()
    plan = stationary_stream(len(source), seed=0)
    maker = ImageSequenceMaker(source, mnist_affine_views(), num_observed=2)
    s1 = SequenceStream(plan, maker, batch_size=16, seed=5)
    s2 = SequenceStream(plan, maker, batch_size=16, seed=5)
    first = list(s1)
    for b1, b2 in zip(first, s2):
        assert torch.equal(b1.sequences.views, b2.sequences.views)
    again = s1.batch(2)  # regenerated on its own
    assert torch.equal(again.sequences.views, first[2].sequences.views)
    other = SequenceStream(plan, maker, batch_size=16, seed=6).batch(0)
    assert not torch.equal(other.sequences.views, first[0].sequences.views)
    with pytest.raises(ValueError, match="number must be a batch number"):
        s1.batch(len(s1))


def test_image_maker_uses_each_regimes_views():
    src = tiny_source(12)
    still = mnist_affine_views(angle_range=(0.0, 0.0), translate_range=(0.0, 0.0),
                               log_scale_range=(0.0, 0.0))  # fmt: skip
    turn = mnist_affine_views(angle_range=(0.5, 1.0), translate_range=(0.0, 0.0),
                              log_scale_range=(0.0, 0.0))  # fmt: skip
    maker = ImageSequenceMaker(src, [still, turn], num_observed=3)
    idx = torch.tensor([5, 0, 7, 2])
    reg = torch.tensor([1, 0, 1, 0])
    seq = maker(idx, reg, torch.Generator().manual_seed(0))
    assert seq.views.shape == (4, 4, 1, 12, 12) and seq.actions.shape == (4, 3, 5)
    assert torch.equal(seq.indices, idx) and torch.equal(seq.labels, src.labels[idx])
    angle = seq.params[..., 0]
    assert torch.all(angle[reg == 0] == 0)
    assert torch.all((angle[reg == 1] >= 0.5) & (angle[reg == 1] <= 1.0))
    # regime-0 views are the standardised images themselves
    expected = (src.images[idx[1]].float() / 255 - 0.5) / 0.25
    assert torch.allclose(seq.views[1, 0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="regime ids"):
        maker(idx, torch.tensor([0, 2, 0, 0]), torch.Generator())
    with pytest.raises(ValueError, match="regimes"):
        SequenceStream(
            regime_shift_stream(12, num_regimes=3),
            maker,
            batch_size=4,
        )


def test_image_maker_rejects_mismatched_views():
    from jepa_blocks.data import rotation_views

    with pytest.raises(ValueError, match="share"):
        ImageSequenceMaker(
            tiny_source(4), [mnist_affine_views(), rotation_views(discrete=False)], num_observed=1
        )


def test_boundary_fractions():
    plan = class_incremental_stream(torch.arange(40) // 10, splits=[[0], [1], [2], [3]])
    assert plan.boundary_fractions == (0.25, 0.5, 0.75, 1.0)
    assert math.isclose(sum(b - a for a, b in plan.batch_slices(7)), 40)
