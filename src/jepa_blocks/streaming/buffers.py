r"""Replay buffers with a fixed memory budget: FIFO, reservoir and minimum-redundancy (MinRed).

MinRed: Purushwalkam, Morgado & Gupta (2022), "The Challenges of Continuous Self-Supervised
Learning" (ECCV), §4.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from jepa_blocks._validation import (
    check_choice,
    check_finite,
    check_floating_tensor,
    check_int,
    check_positive,
)

#: A replay buffer by name.
BufferKind = Literal["fifo", "reservoir", "minred"]
#: Names accepted by :func:`build_buffer`.
BUFFER_KINDS: tuple[BufferKind, ...] = get_args(BufferKind)

__all__ = [
    "BUFFER_KINDS",
    "FIFOBuffer",
    "MinRedBuffer",
    "ReplayBuffer",
    "ReservoirBuffer",
    "build_buffer",
    "replay_count",
]


def replay_count(num_fresh: int, *, ratio: float, available: int) -> int:
    """Replayed items to mix with ``num_fresh`` fresh ones: ``round(ratio · num_fresh)``, capped.

    Args:
        num_fresh: Fresh items in the batch.
        ratio: Replayed items per fresh item (``1``: half the batch).
        available: Items in the buffer (the cap).
    """
    r = check_positive(ratio, "ratio", allow_zero=True)
    check_int(num_fresh, "num_fresh", minimum=0)
    return min(round(r * num_fresh), check_int(available, "available", minimum=0))


class ReplayBuffer:
    """Base class: fixed-capacity storage, uniform sampling; subclasses implement ``_place``.

    Storage is allocated on the first :meth:`add`, on the items' device.

    Args:
        capacity: Maximum number of items held.
        seed: Seed of the buffer's own generator (placement and sampling).

    Attributes:
        num_seen: Items offered to :meth:`add` so far.
    """

    kind = "base"

    def __init__(self, capacity: int, *, seed: int = 0) -> None:
        self.capacity = check_int(capacity, "capacity")
        self.generator = torch.Generator().manual_seed(check_int(seed, "seed", minimum=-(2**63)))
        self.num_seen = 0
        self._store: dict[str, Tensor] = {}
        self._valid = torch.zeros(capacity, dtype=torch.bool)
        self._uses = torch.zeros(capacity, dtype=torch.long)

    def __len__(self) -> int:
        return int(self._valid.sum())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capacity={self.capacity}, size={len(self)}, seen={self.num_seen})"

    @property
    def keys(self) -> tuple[str, ...]:
        """Names of the stored fields (empty before the first :meth:`add`)."""
        return tuple(self._store)

    @property
    def slots(self) -> Tensor:
        """Indices of the occupied slots, increasing, ``(len(self),)``."""
        return torch.nonzero(self._valid, as_tuple=False).flatten()

    @property
    def uses(self) -> Tensor:
        """How often the item in each slot was replayed, ``(capacity,)`` (0 for free slots)."""
        return self._uses.clone()

    def items(self, slots: Tensor | None = None) -> dict[str, Tensor]:
        """The stored items at ``slots`` (default: all occupied slots, in slot order)."""
        s = self.slots if slots is None else self._check_slots(slots)
        return {k: v[s.to(v.device)] for k, v in self._store.items()}

    def _check_slots(self, slots: Any) -> Tensor:
        """``slots`` as a flat int64 CPU tensor; raise unless every one is occupied."""
        s = torch.as_tensor(slots)
        if s.numel() and (s.is_floating_point() or s.is_complex() or s.dtype == torch.bool):
            raise TypeError(f"slots must hold integer slot indices, got dtype {s.dtype}")
        s = s.flatten().long().cpu()
        in_range = bool(((s >= 0) & (s < self.capacity)).all())
        if not (in_range and bool(self._valid[s].all())):
            raise ValueError(
                f"slots must be occupied slots in [0, {self.capacity}), got {s.tolist()}"
            )
        return s

    def _check_items(self, items: Mapping[str, Tensor]) -> int:
        if not isinstance(items, Mapping) or not items:
            raise TypeError(
                f"items must be a non-empty mapping of batch-first tensors, got "
                f"{type(items).__name__}"
            )
        sizes = set()
        for k, v in items.items():
            if not isinstance(k, str) or not isinstance(v, Tensor) or v.ndim < 1:
                raise TypeError(f"items[{k!r}] must be a tensor with a batch dimension")
            sizes.add(int(v.shape[0]))
        if len(sizes) != 1:
            raise ValueError(f"all item fields must have the same batch size, got {sorted(sizes)}")
        if self._store:
            if set(items) != set(self._store):
                raise ValueError(
                    f"items must have the fields {sorted(self._store)}, got {sorted(items)}"
                )
            for k, v in items.items():
                ref = self._store[k]
                if v.shape[1:] != ref.shape[1:] or v.dtype != ref.dtype:
                    raise ValueError(
                        f"items[{k!r}] must have rows of shape {tuple(ref.shape[1:])} and dtype "
                        f"{ref.dtype}, got {tuple(v.shape[1:])} and {v.dtype}"
                    )
        return sizes.pop()

    def _allocate(self, items: Mapping[str, Tensor]) -> None:
        if not self._store:
            self._store = {k: v.new_zeros((self.capacity, *v.shape[1:])) for k, v in items.items()}

    def _write(self, slots: Tensor, rows: Tensor, items: Mapping[str, Tensor]) -> None:
        for k, v in items.items():
            store = self._store[k]
            store[slots.to(store.device)] = v[rows.to(v.device)].detach().to(store.device)
        self._valid[slots] = True
        self._uses[slots] = 0

    def _free(self, slots: Tensor) -> None:
        """Empty ``slots`` (indices or a mask)."""
        self._valid[slots] = False
        self._uses[slots] = 0

    def add(self, items: Mapping[str, Tensor], *, features: Tensor | None = None) -> Tensor:
        """Offer a batch of items; the policy decides which are kept and where.

        Args:
            items: ``{field: (B, ...)}``.
            features: Per-item features ``(B, D)`` (:class:`MinRedBuffer` only).

        Returns:
            The slot of each offered item, ``(B,)``; ``-1`` if not kept (or evicted in this call).
        """
        n = self._check_items(items)
        features = self._check_features(features, n)  # all checks before any state changes
        self._allocate(items)
        slots = self._place(n, items, features)
        self.num_seen += n
        return slots

    def _check_features(self, features: Tensor | None, n: int) -> Tensor | None:
        return features

    def _place(self, n: int, items: Mapping[str, Tensor], features: Tensor | None) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int) -> tuple[dict[str, Tensor], Tensor]:
        """Draw ``min(n, len(self))`` distinct items uniformly at random.

        Returns:
            ``(items, slots)``: ``{field: (n', ...)}`` and the slots ``(n',)`` for :meth:`update`.
        """
        check_int(n, "n", minimum=0)
        occupied = self.slots
        k = min(n, occupied.numel())
        chosen = occupied[torch.randperm(occupied.numel(), generator=self.generator)[:k]]
        return self.items(chosen), chosen

    def update(self, slots: Tensor, *, features: Tensor | None = None) -> None:
        """Record that the items at ``slots`` were replayed (with their new features).

        Args:
            slots: Slots returned by :meth:`sample`, ``(n,)``.
            features: Their current features ``(n, D)`` (kept by :class:`MinRedBuffer`).
        """
        self._uses[self._check_slots(slots)] += 1

    def state_dict(self) -> dict[str, Any]:
        """The whole state: items, occupancy, use counts, counters and the generator."""
        return {
            "kind": self.kind,
            "capacity": self.capacity,
            "num_seen": self.num_seen,
            "store": {k: v.clone() for k, v in self._store.items()},
            "valid": self._valid.clone(),
            "uses": self._uses.clone(),
            "generator": self.generator.get_state(),
        }

    def _check_state(self, state: Mapping[str, Any]) -> None:
        """Raise unless ``state`` is a complete :meth:`state_dict` of this kind and capacity."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        if state.get("kind") != self.kind or state.get("capacity") != self.capacity:
            raise ValueError(
                f"cannot load a {state.get('kind')!r} buffer of capacity {state.get('capacity')} "
                f"into a {self.kind!r} buffer of capacity {self.capacity}"
            )
        keys = {"num_seen", "store", "valid", "uses", "generator"} - set(state)
        store, cap = state.get("store"), (self.capacity,)
        store = store if isinstance(store, Mapping) and not keys else {"": None}
        ok = isinstance(state.get("num_seen"), int)
        ok = ok and all(isinstance(v, Tensor) and v.shape[:1] == cap for v in store.values())
        ok = ok and all(getattr(state[k], "shape", None) == cap for k in ("valid", "uses"))
        if not ok:
            raise ValueError(
                f"state must be a complete {self.kind!r} buffer state of capacity-sized tensors "
                f"(missing: {sorted(keys)})"
            )
        try:
            torch.Generator().set_state(state["generator"])
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"state['generator'] is not a generator state: {e}") from e

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict` of the same kind and capacity.

        Raises:
            ValueError: ``state`` is incomplete or of another kind or capacity (nothing changes).
        """
        self._check_state(state)
        self.num_seen = int(state["num_seen"])
        self._store = {k: v.clone() for k, v in state["store"].items()}
        self._valid = state["valid"].clone().cpu()
        self._uses = state["uses"].clone().cpu()
        self.generator.set_state(state["generator"])


class FIFOBuffer(ReplayBuffer):
    """First in, first out: keeps the ``capacity`` most recently offered items.

    Args:
        capacity: Maximum number of items held.
        seed: Seed of the sampling generator.
    """

    kind = "fifo"

    def __init__(self, capacity: int, *, seed: int = 0) -> None:
        super().__init__(capacity, seed=seed)
        self._head = 0

    def _place(self, n: int, items: Mapping[str, Tensor], features: Tensor | None) -> Tensor:
        del features
        out = torch.full((n,), -1, dtype=torch.long)
        keep = torch.arange(max(0, n - self.capacity), n)  # older rows would be overwritten
        slots = (self._head + torch.arange(keep.numel())) % self.capacity
        self._head = (self._head + keep.numel()) % self.capacity
        self._write(slots, keep, items)
        out[keep] = slots
        return out

    def state_dict(self) -> dict[str, Any]:
        """See :meth:`ReplayBuffer.state_dict`; adds the ring position."""
        return {**super().state_dict(), "head": self._head}

    def _check_state(self, state: Mapping[str, Any]) -> None:
        super()._check_state(state)
        if not 0 <= check_int(state.get("head"), "state['head']", minimum=0) < self.capacity:
            raise ValueError(f"state['head'] must be < capacity {self.capacity}")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """See :meth:`ReplayBuffer.load_state_dict`."""
        super().load_state_dict(state)
        self._head = int(state["head"])


class ReservoirBuffer(ReplayBuffer):
    """Reservoir sampling (Vitter 1985, Algorithm R): a uniform subset of the whole stream.

    The ``t``-th offered item (0-based) fills slot ``t`` while ``t < capacity``; afterwards it
    replaces slot ``j ~ U{0, …, t}`` if ``j < capacity``.

    Args:
        capacity: Maximum number of items held.
        seed: Seed of the replacement draws and of the sampling.
    """

    kind = "reservoir"

    def _place(self, n: int, items: Mapping[str, Tensor], features: Tensor | None) -> Tensor:
        del features
        t = self.num_seen + torch.arange(n, dtype=torch.float64)
        u = torch.rand(n, generator=self.generator, dtype=torch.float64)
        j = torch.floor(u * (t + 1)).long()
        j = torch.where(t < self.capacity, t.long(), j)
        out = torch.full((n,), -1, dtype=torch.long)
        final: dict[int, int] = {}
        for row in torch.nonzero(j < self.capacity, as_tuple=False).flatten().tolist():
            slot = int(j[row])
            if slot in final:  # a later item of this batch replaced an earlier one
                out[final[slot]] = -1
            final[slot] = row
            out[row] = slot
        if final:
            self._write(torch.tensor(list(final.keys())), torch.tensor(list(final.values())), items)
        return out


class MinRedBuffer(ReplayBuffer):
    r"""Minimum-redundancy buffer (MinRed; Purushwalkam, Morgado & Gupta, 2022).

    On overflow, the stored + incoming items are thinned greedily: the item with the smallest
    cosine distance :math:`1 - \cos(f_i, f_j)` to its nearest neighbour is evicted until
    ``capacity`` remain (ties evict the older item). ``max_uses`` is their ``limit_num_seen``.

    Args:
        capacity: Maximum number of items held.
        max_uses: Retire items after this many replays (``None``: never).
        seed: Seed of the sampling generator.
    """

    kind = "minred"

    def __init__(self, capacity: int, *, max_uses: int | None = None, seed: int = 0) -> None:
        super().__init__(capacity, seed=seed)
        self.max_uses = None if max_uses is None else check_int(max_uses, "max_uses")
        self._features: Tensor | None = None

    @property
    def features(self) -> Tensor | None:
        """Features of the occupied slots (slot order), ``(len(self), D)``; ``None`` before use."""
        return None if self._features is None else self._features[self.slots]

    def _check_features(self, features: Tensor | None, n: int) -> Tensor:
        if features is None:
            raise ValueError("MinRedBuffer needs features (B, D) for every add and update")
        check_floating_tensor(features, "features", min_ndim=2, shape_doc="(B, D)")
        d = "D" if self._features is None else self._features.shape[1]
        if features.ndim != 2 or features.shape[0] != n or d not in ("D", features.shape[1]):
            raise ValueError(f"features must have shape ({n}, {d}), got {tuple(features.shape)}")
        check_finite(features, "features")
        return torch.nn.functional.normalize(features.detach().float().cpu(), dim=1)

    def _place(self, n: int, items: Mapping[str, Tensor], features: Tensor | None) -> Tensor:
        assert features is not None
        if self._features is None:
            self._features = torch.zeros(self.capacity, features.shape[1])
        old = self.slots
        cand = torch.cat((self._features[old], features))  # stored items first: ties evict them
        alive = torch.ones(cand.shape[0], dtype=torch.bool)
        excess = cand.shape[0] - self.capacity
        if excess > 0:
            alive = torch.from_numpy(_greedy_min_redundancy(cand, excess))
        n_old = old.numel()
        self._free(old[~alive[:n_old]])
        kept_new = torch.nonzero(alive[n_old:], as_tuple=False).flatten()
        free = torch.nonzero(~self._valid, as_tuple=False).flatten()[: kept_new.numel()]
        self._write(free, kept_new, items)
        self._features[free] = features[kept_new]
        out = torch.full((n,), -1, dtype=torch.long)
        out[kept_new] = free
        return out

    def update(self, slots: Tensor, *, features: Tensor | None = None) -> None:
        """Count the replay, refresh the features, retire items used ``max_uses`` times."""
        s = self._check_slots(slots)
        f = None if features is None or not s.numel() else self._check_features(features, s.numel())
        super().update(s)
        if f is not None:
            assert self._features is not None
            self._features[s] = f
        if self.max_uses is not None:
            self._free(self._valid & (self._uses >= self.max_uses))

    def state_dict(self) -> dict[str, Any]:
        """See :meth:`ReplayBuffer.state_dict`; adds the features and ``max_uses``."""
        return {**super().state_dict(), "features": self._features, "max_uses": self.max_uses}

    def _check_state(self, state: Mapping[str, Any]) -> None:
        super()._check_state(state)
        f, m = state.get("features"), state.get("max_uses")
        if f is not None and (not isinstance(f, Tensor) or f.ndim != 2 or len(f) != self.capacity):
            raise ValueError(f"state['features'] must be None or ({self.capacity}, D), got {f!r}")
        if m is not None:
            check_int(m, "state['max_uses']")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """See :meth:`ReplayBuffer.load_state_dict`."""
        super().load_state_dict(state)
        feats = state.get("features")
        self._features = None if feats is None else feats.clone().cpu()
        self.max_uses = state.get("max_uses")


def _greedy_min_redundancy(features: Tensor, excess: int) -> np.ndarray:
    """Survivor mask after evicting ``excess`` unit rows, each time the one nearest a neighbour."""
    dist = (features @ features.T).numpy()
    np.subtract(1.0, dist, out=dist)
    np.fill_diagonal(dist, np.inf)
    nn_idx = dist.argmin(axis=1)
    nn_dist = dist[np.arange(dist.shape[0]), nn_idx]
    alive = np.ones(dist.shape[0], dtype=bool)
    for _ in range(excess):
        victim = int(np.argmin(np.where(alive, nn_dist, np.inf)))  # first index on ties
        alive[victim] = False
        nn_dist[victim] = np.inf
        dist[:, victim] = np.inf
        stale = np.flatnonzero(alive & (nn_idx == victim))
        if stale.size:
            nn_idx[stale] = dist[stale].argmin(axis=1)
            nn_dist[stale] = dist[stale, nn_idx[stale]]
    return alive


def build_buffer(
    kind: BufferKind, capacity: int, *, seed: int = 0, max_uses: int | None = None
) -> ReplayBuffer:
    """Build a buffer by name: one of :data:`BUFFER_KINDS`.

    Args:
        kind: ``"fifo"``, ``"reservoir"`` or ``"minred"``.
        capacity: Memory budget in items.
        seed: Seed of the buffer's generator.
        max_uses: :class:`MinRedBuffer` only: retire items after this many replays.
    """
    if check_choice(kind, "kind", BUFFER_KINDS) == "minred":
        return MinRedBuffer(capacity, seed=seed, max_uses=max_uses)
    return {"fifo": FIFOBuffer, "reservoir": ReservoirBuffer}[kind](capacity, seed=seed)
