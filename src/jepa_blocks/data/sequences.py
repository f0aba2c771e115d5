"""Sequence sources: views ``(M+1, C, H, W)``, parameters, actions ``(M, A)`` and labels."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor

from jepa_blocks._validation import check_bool, check_int
from jepa_blocks.data.sources import LabelledImages
from jepa_blocks.data.views import SequenceViews

__all__ = ["SequenceDataset", "SequenceLoader", "ViewSequence", "mix_seed"]

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """Hash integers, e.g. ``(seed, epoch, index)``, into one 63-bit seed (SplitMix64 finaliser)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"mix_seed takes ints, got {type(v).__name__}")
        z = (h + (v & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h & ((1 << 63) - 1)


class ViewSequence(NamedTuple):
    """One sequence, or a batch of sequences, of views with parameters, actions and labels.

    Attributes:
        views: The ``M`` observed views followed by the target view, ``(..., M+1, C, H, W)``.
        params: Absolute transformation parameters of every view, ``(..., M+1, P)``.
        actions: Relative actions ``a_i`` from view ``i`` to ``i+1``, ``(..., M, A)``.
        labels: Class labels, ``(...)``.
        indices: Indices of the source images, ``(...)``.
    """

    views: Tensor
    params: Tensor
    actions: Tensor
    labels: Tensor
    indices: Tensor

    @property
    def num_observed(self) -> int:
        """``M``, the number of observed views."""
        return int(self.views.shape[-4]) - 1

    def prefix(self, num_observed: int) -> ViewSequence:
        """The first ``m = num_observed`` views observed and view ``m+1`` as target.

        The actions are sliced, not recomputed (the official normalisation saw the full sequence).
        """
        m = num_observed
        if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= self.num_observed:
            raise ValueError(
                f"num_observed must be an int in [1, {self.num_observed}], got {num_observed!r}"
            )
        return self._replace(
            views=self.views[..., : m + 1, :, :, :],
            params=self.params[..., : m + 1, :],
            actions=self.actions[..., :m, :],
        )

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> ViewSequence:
        """Move every tensor to ``device``."""
        return ViewSequence(*(t.to(device, non_blocking=non_blocking) for t in self))


def standardize(views: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """``(views − mean) / std`` per channel (dim -3)."""
    m = torch.tensor(mean, dtype=views.dtype, device=views.device)[:, None, None]
    return (views - m) / torch.tensor(std, dtype=views.dtype, device=views.device)[:, None, None]


def check_index(index: Any, n: int) -> int:
    """``index`` in ``[0, n)``; ``TypeError`` unless an integer, ``IndexError`` out of range."""
    try:
        i = operator.index(index)
    except TypeError:
        raise TypeError(f"index must be an int, got {type(index).__name__}") from None
    if not -n <= i < n:
        raise IndexError(f"index {index} is out of range for a dataset of {n} items")
    return i % n


def _ranks(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``, by default ``torch.distributed``'s when initialised, else 0/1."""
    dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
    if world_size is None:
        world_size = torch.distributed.get_world_size() if dist_on else 1
    if rank is None:
        rank = torch.distributed.get_rank() if dist_on else 0
    check_int(rank, "rank", minimum=-(1 << 63))
    if check_int(world_size, "world_size", minimum=-(1 << 63)) < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"rank must be in [0, world_size) and world_size >= 1, got rank={rank}, "
            f"world_size={world_size}"
        )
    return int(rank), int(world_size)


class _SequenceSource:
    """The source, views, seed, epoch and ranks of the sequence dataset and loader."""

    def __init__(
        self,
        source: LabelledImages,
        views: SequenceViews,
        *,
        num_observed: int,
        seed: int = 0,
        normalize: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        for name, v, cls in (("source", source, LabelledImages), ("views", views, SequenceViews)):
            if not isinstance(v, cls):
                raise TypeError(f"{name} must be a {cls.__name__}, got {type(v).__name__}")
        self.source = source
        self.views = views
        self.num_observed = check_int(num_observed, "num_observed")
        self.seed = check_int(seed, "seed", minimum=-(1 << 63))
        self.normalize = check_bool(normalize, "normalize")
        self.epoch = 0
        self.rank, self.world_size = _ranks(rank, world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling and augmentation randomness of ``epoch`` for the next pass."""
        self.epoch = check_int(epoch, "epoch", minimum=0)

    def _view_sequences(
        self, images: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(views, params, actions)`` of ``M + 1`` views of each ``uint8`` image."""
        views, params = self.views(
            images.float().div_(255.0), num_views=self.num_observed + 1, generator=generator
        )
        if self.normalize:
            views = standardize(views, self.source.mean, self.source.std)
        return views, params, self.views.actions(params)


class SequenceDataset(_SequenceSource, torch.utils.data.Dataset):
    """Map-style dataset of view sequences: item ``i`` is the :class:`ViewSequence` of image ``i``.

    Arguments as :class:`SequenceLoader`'s; item ``i`` of epoch ``e`` uses ``mix_seed(seed, e, i)``.
    """

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> ViewSequence:
        i = check_index(index, len(self.source))
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, i))
        views, params, actions = self._view_sequences(self.source.images[i : i + 1], gen)
        item = torch.tensor(i, device=self.source.labels.device)
        return ViewSequence(views[0], params[0], actions[0], self.source.labels[i], item)


class SequenceLoader(_SequenceSource):
    """Iterate over a source in batches of view sequences generated on the device.

    Args:
        source: The labelled images.
        views: The view generator.
        num_observed: ``M``, the number of observed views.
        batch_size: Sequences per batch.
        device: Where the images live and are augmented (default: the source's device).
        shuffle: Reshuffle every epoch.
        drop_last: Drop the last incomplete batch.
        seed: Base seed; epoch ``e`` uses ``mix_seed(seed, e)``.
        normalize: Standardise the views with the source's ``mean`` and ``std``.
        rank: This process's rank (default: from ``torch.distributed`` when initialised, else 0).
        world_size: Number of ranks (default: from ``torch.distributed``, else 1); ranks take
            every ``world_size``-th item of the epoch permutation padded as ``DistributedSampler``.

    Each ``iter(loader)`` uses the current epoch and then advances it.
    """

    def __init__(
        self,
        source: LabelledImages,
        views: SequenceViews,
        *,
        num_observed: int,
        batch_size: int,
        device: torch.device | str | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        normalize: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__(
            source,
            views,
            num_observed=num_observed,
            seed=seed,
            normalize=normalize,
            rank=rank,
            world_size=world_size,
        )
        self.batch_size = check_int(batch_size, "batch_size")
        try:
            self.device = torch.device(device) if device is not None else source.images.device
        except (RuntimeError, TypeError):
            raise ValueError(f"device must name a torch device, got {device!r}") from None
        self.shuffle = check_bool(shuffle, "shuffle")
        self.drop_last = check_bool(drop_last, "drop_last")
        self.source = source.to(self.device)

    def _items_per_rank(self) -> int:
        return -(-len(self.source) // self.world_size)

    def __len__(self) -> int:
        n = self._items_per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[ViewSequence]:
        epoch = self.epoch
        self.epoch += 1
        return self._iterate(epoch)

    def _iterate(self, epoch: int) -> Iterator[ViewSequence]:
        gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        n = len(self.source)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            padded = self._items_per_rank() * self.world_size
            order = torch.cat([order, order[: padded - n]])[self.rank :: self.world_size]
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch, self.rank))
            n = order.numel()
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and idx.numel() < self.batch_size:
                break
            idx = idx.to(self.device)
            views, params, actions = self._view_sequences(self.source.images[idx], gen)
            yield ViewSequence(views, params, actions, self.source.labels[idx], idx)
