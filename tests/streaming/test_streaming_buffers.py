"""Replay buffers: fixed budget, FIFO recency, uniform reservoir, MinRed redundancy, state."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from jepa_blocks.streaming import (
    BUFFER_KINDS,
    FIFOBuffer,
    MinRedBuffer,
    ReservoirBuffer,
    build_buffer,
    replay_count,
)


def _items(start: int, n: int) -> dict[str, torch.Tensor]:
    idx = torch.arange(start, start + n)
    return {"index": idx, "views": idx.float()[:, None, None].expand(n, 3, 2).clone()}


def _features(start: int, n: int, dim: int = 6) -> torch.Tensor:
    gen = torch.Generator().manual_seed(start)
    return torch.randn(n, dim, generator=gen)


@given(
    kind=st.sampled_from(BUFFER_KINDS),
    capacity=st.integers(1, 20),
    sizes=st.lists(st.integers(1, 15), min_size=1, max_size=8),
)
def test_buffers_never_exceed_the_budget(kind, capacity, sizes):
    buf = build_buffer(kind, capacity, seed=0)
    seen = 0
    for n in sizes:
        slots = buf.add(_items(seen, n), features=_features(seen, n))
        seen += n
        assert len(buf) <= capacity
        assert buf.num_seen == seen
        assert slots.shape == (n,)
        stored = buf.items()["index"]
        assert stored.unique().numel() == stored.numel()  # no duplicates
        kept = slots[slots >= 0]
        assert kept.unique().numel() == kept.numel()
        if kind != "minred":
            assert len(buf) == min(capacity, seen)
        items, picked = buf.sample(capacity + 3)
        assert picked.numel() == len(buf) and picked.unique().numel() == picked.numel()
        assert torch.equal(items["views"][:, 0, 0].long(), items["index"])  # fields stay aligned
        buf.update(picked, features=_features(1000 + seen, picked.numel()))
        assert len(buf) <= capacity


def test_fifo_keeps_the_most_recent_items():
    buf = FIFOBuffer(10)
    for start in range(0, 25, 4):
        buf.add(_items(start, min(4, 25 - start)))
    assert sorted(buf.items()["index"].tolist()) == list(range(15, 25))
    big = FIFOBuffer(3)
    slots = big.add(_items(0, 5))
    assert slots.tolist() == [-1, -1, 0, 1, 2]
    assert sorted(big.items()["index"].tolist()) == [2, 3, 4]


def test_reservoir_sampling_is_uniform():
    """Each of N streamed items is kept with probability capacity / N (chi-square, fixed seed)."""
    n_items, capacity, trials = 30, 6, 600
    counts = torch.zeros(n_items)
    for t in range(trials):
        buf = ReservoirBuffer(capacity, seed=t)
        for start in range(0, n_items, 7):
            buf.add({"index": torch.arange(start, min(start + 7, n_items))})
        assert len(buf) == capacity
        counts[buf.items()["index"]] += 1
    expected = trials * capacity / n_items
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 99.9 % quantile of chi-square with 29 degrees of freedom: 58.30 (scipy.stats.chi2.ppf)
    assert chi2 < 58.30, (chi2, counts)
    # early and late items are kept equally often
    assert abs(counts[:15].mean() - counts[15:].mean()) < 0.05 * expected


def test_minred_evicts_the_most_redundant():
    buf = MinRedBuffer(3)
    e = torch.eye(4)
    feats = torch.stack([e[0], e[1], e[0] + 0.01 * e[1], e[2]])  # item 2 duplicates item 0
    slots = buf.add(_items(0, 4), features=feats)
    kept = sorted(buf.items()["index"].tolist())
    assert len(buf) == 3 and 1 in kept and 3 in kept
    assert (0 in kept) != (2 in kept)  # exactly one of the near-duplicates survives
    assert int((slots >= 0).sum()) == 3
    # a new item identical to a stored one displaces one of the pair, not the distinct items
    buf.add(_items(10, 1), features=e[1][None])
    assert 3 in buf.items()["index"].tolist() and len(buf) == 3
    assert buf.features is not None and buf.features.shape == (3, 4)


def test_minred_refreshes_features_and_retires_used_items():
    buf = MinRedBuffer(4, max_uses=2)
    buf.add(_items(0, 4), features=torch.eye(4))
    _, slots = buf.sample(2)
    buf.update(slots, features=torch.ones(2, 4))
    assert torch.allclose(buf._features[slots], torch.full((2, 4), 0.5))  # unit-normalised
    buf.update(slots, features=torch.ones(2, 4))
    assert len(buf) == 2  # both were replayed twice
    with pytest.raises(ValueError, match="features"):
        buf.add(_items(9, 1))


@pytest.mark.parametrize("kind", BUFFER_KINDS)
def test_state_dict_round_trip(kind):
    a = build_buffer(kind, 8, seed=3)
    for start in range(0, 30, 6):
        a.add(_items(start, 6), features=_features(start, 6))
    b = build_buffer(kind, 8, seed=99)
    b.load_state_dict(a.state_dict())
    for start in range(30, 50, 5):
        sa = a.add(_items(start, 5), features=_features(start, 5))
        sb = b.add(_items(start, 5), features=_features(start, 5))
        assert torch.equal(sa, sb)
        ia, pa = a.sample(4)
        ib, pb = b.sample(4)
        assert torch.equal(pa, pb) and torch.equal(ia["index"], ib["index"])
    with pytest.raises(ValueError, match="cannot load"):
        build_buffer(kind, 9).load_state_dict(a.state_dict())


def test_sampling_is_deterministic_under_the_seed():
    def draws(seed):
        buf = ReservoirBuffer(5, seed=seed)
        buf.add(_items(0, 20))
        return [buf.sample(3)[1].tolist() for _ in range(4)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)


def test_item_validation():
    buf = FIFOBuffer(4)
    buf.add(_items(0, 2))
    with pytest.raises(ValueError, match="fields"):
        buf.add({"index": torch.arange(2)})
    with pytest.raises(ValueError, match="same batch size"):
        buf.add({"index": torch.arange(2), "views": torch.zeros(3, 3, 2)})
    with pytest.raises(ValueError, match="rows of shape"):
        buf.add({"index": torch.arange(2), "views": torch.zeros(2, 4, 2)})
    with pytest.raises(TypeError, match="mapping"):
        buf.add(torch.arange(3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capacity"):
        FIFOBuffer(0)
    with pytest.raises(ValueError, match="kind"):
        build_buffer("lifo", 3)
    with pytest.raises(ValueError, match="max_uses"):
        MinRedBuffer(3, max_uses=0)


def test_replay_count():
    assert replay_count(64, ratio=1.0, available=1000) == 64
    assert replay_count(64, ratio=0.5, available=1000) == 32
    assert replay_count(64, ratio=1.0, available=10) == 10
    assert replay_count(64, ratio=0.0, available=10) == 0
    with pytest.raises(ValueError, match="ratio"):
        replay_count(4, ratio=-1.0, available=3)
