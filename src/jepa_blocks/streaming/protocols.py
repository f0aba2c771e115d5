r"""Stream protocols: the order in which a single pass visits a sequence source.

They follow the single-pass setting of Purushwalkam, Morgado & Gupta (2022), "The Challenges of
Continuous Self-Supervised Learning" (ECCV), and the boundary-free streams of SCALE (Yu, Guo, Gao
& Rosing, 2023).
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from jepa_blocks._validation import check_bool, check_int, check_positive, check_type
from jepa_blocks.data.sequences import ViewSequence, mix_seed
from jepa_blocks.data.sources import LabelledImages
from jepa_blocks.data.views import SequenceViews

__all__ = [
    "ImageSequenceMaker",
    "SequenceMaker",
    "SequenceStream",
    "StreamBatch",
    "StreamPlan",
    "blur_boundaries",
    "class_incremental_stream",
    "even_class_splits",
    "regime_shift_stream",
    "stationary_stream",
]

#: ``(indices (B,), regimes (B,), generator) → ViewSequence`` with batch size ``B``.
SequenceMaker = Callable[[Tensor, Tensor, torch.Generator], ViewSequence]


def _as_index_tensor(
    x: Sequence[int] | Tensor, name: str, *, nonempty: bool = False, below: int | None = None
) -> Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(t.shape)}")
    if t.numel() and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise TypeError(f"{name} must hold integers, got dtype {t.dtype}")
    if nonempty and t.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if below is not None and t.numel() and (int(t.min()) < 0 or int(t.max()) >= below):
        raise ValueError(f"{name} must be in [0, {below}), got {sorted(set(t.tolist()))}")
    return t.to(dtype=torch.long, device="cpu")


@dataclasses.dataclass(frozen=True, eq=False)
class StreamPlan:
    """Which source item is visited at each stream position, in which split and regime.

    Attributes:
        order: Source index of each stream position, ``int64``, all distinct.
        splits: Split (task) id of each position, ``0 … S−1``.
        regimes: Transformation-regime id of each position, ``0 … R−1``.
        boundaries: Nominal end of each split, increasing, the last equal to ``N`` (unblurred).
        name: A short description, e.g. ``"class-incremental(5)"``.

    Shape:
        - order, splits, regimes: ``(N,)``
    """

    order: Tensor
    splits: Tensor
    regimes: Tensor
    boundaries: tuple[int, ...]
    name: str = ""

    def __post_init__(self) -> None:
        for k in ("order", "splits", "regimes"):  # the constructor raises if a check fails
            object.__setattr__(self, k, _as_index_tensor(getattr(self, k), k))
        n = self.order.numel()
        if n == 0:
            raise ValueError("a stream plan needs at least one item, got an empty order")
        for name, t in (("order", self.order), ("splits", self.splits), ("regimes", self.regimes)):
            if t.numel() != n:
                raise ValueError(f"{name} must have one entry per position ({n}), got {t.numel()}")
            if int(t.min()) < 0:
                raise ValueError(f"{name} must be >= 0, got min {int(t.min())}")
        if torch.unique(self.order).numel() != n:
            raise ValueError("order must visit each item once, but it repeats some indices")
        bounds = _ints(self.boundaries, "boundaries")
        if not bounds or bounds[-1] != n or any(b <= a for a, b in zip((0, *bounds), bounds)):
            raise ValueError(
                f"boundaries must increase strictly and end at N = {n}, got {self.boundaries}"
            )
        object.__setattr__(self, "boundaries", bounds)

    def __len__(self) -> int:
        return int(self.order.numel())

    @property
    def num_splits(self) -> int:
        """Number of splits ``S`` (largest split id + 1)."""
        return int(self.splits.max()) + 1

    @property
    def num_regimes(self) -> int:
        """Number of regimes ``R`` (largest regime id + 1)."""
        return int(self.regimes.max()) + 1

    @property
    def boundary_fractions(self) -> tuple[float, ...]:
        """The nominal split ends as fractions of the stream, e.g. ``(0.2, 0.4, …, 1.0)``."""
        n = len(self)
        return tuple(b / n for b in self.boundaries)

    def items_of_split(self, split: int) -> Tensor:
        """Source indices of the items of ``split``, in stream order."""
        return self.order[self.splits == check_int(split, "split", minimum=0)]

    def batch_slices(
        self, batch_size: int, *, align_to_boundaries: bool = False
    ) -> list[tuple[int, int]]:
        """``[start, stop)`` positions of consecutive batches covering the plan once.

        Args:
            batch_size: Items per batch (the last batch of a segment may be smaller).
            align_to_boundaries: Start a new batch at every nominal boundary.
        """
        check_int(batch_size, "batch_size")
        cuts = (0, *self.boundaries) if align_to_boundaries else (0, len(self))
        slices = []
        for a, b in itertools.pairwise(cuts):
            slices += [(s, min(s + batch_size, b)) for s in range(a, b, batch_size)]
        return slices

    def __repr__(self) -> str:
        return (
            f"StreamPlan(name={self.name!r}, items={len(self)}, splits={self.num_splits}, "
            f"regimes={self.num_regimes}, boundaries={self.boundaries})"
        )


def _ints(values: Any, name: str) -> tuple[int, ...]:
    try:
        return tuple(operator.index(v) for v in values)
    except TypeError as e:
        raise TypeError(f"{name} must be a sequence of ints, got {values!r}") from e


def _items(num_items: int | None, indices: Sequence[int] | Tensor | None) -> Tensor:
    if indices is not None and num_items is not None:
        raise ValueError("pass num_items or indices, not both")
    if indices is not None:
        items = _as_index_tensor(indices, "indices", nonempty=True)
        if torch.unique(items).numel() != items.numel():
            raise ValueError("indices must be distinct")
        return items
    if num_items is None:
        raise ValueError("pass num_items or indices")
    return torch.arange(check_int(num_items, "num_items"))


def _perm(n: int, seed: int, *salt: int) -> Tensor:
    gen = torch.Generator().manual_seed(mix_seed(check_int(seed, "seed", minimum=-(2**63)), *salt))
    return torch.randperm(n, generator=gen)


def stationary_stream(
    num_items: int | None = None,
    *,
    indices: Sequence[int] | Tensor | None = None,
    seed: int = 0,
) -> StreamPlan:
    """Protocol A: an i.i.d. single pass, every item once in a seeded random order.

    Args:
        num_items: Stream over ``range(num_items)`` …
        indices: … or over these source indices.
        seed: Seed of the order.
    """
    items = _items(num_items, indices)
    order = items[_perm(items.numel(), seed, 0)]
    zeros = torch.zeros_like(order)
    return StreamPlan(order, zeros, zeros, (order.numel(),), name="stationary")


def even_class_splits(num_classes: int, num_splits: int) -> tuple[tuple[int, ...], ...]:
    """Consecutive classes in ``num_splits`` groups of (nearly) equal size.

    ``even_class_splits(10, 5)`` is Split-MNIST's ``((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))``.
    """
    check_int(num_classes, "num_classes")
    check_int(num_splits, "num_splits")
    if num_splits > num_classes:
        raise ValueError(f"num_splits must be <= num_classes ({num_classes}), got {num_splits}")
    bounds = [round(k * num_classes / num_splits) for k in range(num_splits + 1)]
    return tuple(tuple(range(a, b)) for a, b in itertools.pairwise(bounds))


def class_incremental_stream(
    labels: Sequence[int] | Tensor,
    *,
    splits: Sequence[Sequence[int]],
    seed: int = 0,
    shuffle: bool = True,
    regimes: Sequence[int] | None = None,
) -> StreamPlan:
    """Protocol B (new objects): the items of ``splits[0]``'s classes, then ``splits[1]``'s …

    Items whose label is in no split are not part of the stream.

    Args:
        labels: Class label of every source item, ``(N,)``.
        splits: Disjoint groups of class ids, e.g. :func:`even_class_splits`.
        seed: Seed of the within-split order.
        shuffle: Shuffle within each split (else: source order).
        regimes: Regime id of each split (default: all 0).
    """
    lab = _as_index_tensor(labels, "labels")
    check_bool(shuffle, "shuffle")
    if not isinstance(splits, Sequence):
        raise TypeError(f"splits must be a sequence of class-id groups, got {splits!r}")
    groups = [_ints(g, "splits[k]") for g in splits]
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError(f"splits must be non-empty groups of class ids, got {splits!r}")
    flat = [c for g in groups for c in g]
    if len(set(flat)) != len(flat):
        raise ValueError(f"splits must be disjoint, got {splits!r}")
    regime_of = [0] * len(groups) if regimes is None else list(_ints(regimes, "regimes"))
    if len(regime_of) != len(groups) or min(regime_of) < 0:
        raise ValueError(
            f"regimes must give one id >= 0 per split ({len(groups)}), got {regimes!r}"
        )
    orders = []
    for k, group in enumerate(groups):
        members = torch.nonzero(torch.isin(lab, torch.tensor(group)), as_tuple=False).flatten()
        if members.numel() == 0:
            raise ValueError(f"split {k} (classes {group}) has no items")
        orders.append(members[_perm(members.numel(), seed, k)] if shuffle else members)
    sizes = [o.numel() for o in orders]
    split_ids = torch.repeat_interleave(torch.arange(len(orders)), torch.tensor(sizes))
    bounds = tuple(itertools.accumulate(sizes))
    name = f"class-incremental({len(groups)})"
    return StreamPlan(
        torch.cat(orders), split_ids, torch.tensor(regime_of)[split_ids], bounds, name=name
    )


def regime_shift_stream(
    num_items: int | None = None,
    *,
    num_regimes: int,
    indices: Sequence[int] | Tensor | None = None,
    seed: int = 0,
) -> StreamPlan:
    """Transformation-regime shifts: i.i.d. items, the view generator changes over time.

    Segment ``r`` of ``num_regimes`` (nearly) equal ones is seen under regime ``r`` (= its split).

    Args:
        num_items: Stream over ``range(num_items)`` …
        indices: … or over these source indices.
        num_regimes: Number of regimes ``R``.
        seed: Seed of the order.
    """
    items = _items(num_items, indices)
    n = items.numel()
    r = check_int(num_regimes, "num_regimes")
    if r > n:
        raise ValueError(f"num_regimes must be <= the number of items ({n}), got {r}")
    order = items[_perm(n, seed, 1)]
    bounds = tuple(round((k + 1) * n / r) for k in range(r))
    ids = torch.bucketize(torch.arange(n), torch.tensor(bounds), right=True)
    return StreamPlan(order, ids, ids.clone(), bounds, name=f"regime-shift({r})")


def blur_boundaries(plan: StreamPlan, *, width: float, seed: int = 0) -> StreamPlan:
    """Blur the split boundaries of ``plan``: shuffle the items around each boundary together.

    The last ``width · n_k`` positions of split ``k`` and the first ``width · n_{k+1}`` of split
    ``k+1`` are shuffled together (SCALE's ``seq-bl`` streams); items keep their split and
    regime, and the nominal boundaries are kept.

    Args:
        plan: The plan to blur.
        width: Fraction of each split mixed on each side of a boundary, in ``[0, 0.5]``.
        seed: Seed of the shuffles.
    """
    check_type(plan, "plan", StreamPlan)
    w = check_positive(width, "width", allow_zero=True)
    if w > 0.5:
        raise ValueError(f"width must be in [0, 0.5] so that windows do not overlap, got {width}")
    sizes = [b - a for a, b in itertools.pairwise((0, *plan.boundaries))]
    perm = torch.arange(len(plan))
    for k in range(len(sizes) - 1):
        b = plan.boundaries[k]
        lo, hi = b - round(w * sizes[k]), b + round(w * sizes[k + 1])
        if hi - lo > 1:
            perm[lo:hi] = perm[lo:hi][_perm(hi - lo, seed, 2, k)]
    order, splits, regimes = (t[perm] for t in (plan.order, plan.splits, plan.regimes))
    return StreamPlan(order, splits, regimes, plan.boundaries, name=f"{plan.name}+blur({w:g})")


class ImageSequenceMaker:
    """Make view sequences of images from a :class:`~jepa_blocks.data.LabelledImages` split.

    ``maker(indices, regimes, generator)`` makes ``M + 1`` views of each image with its regime's
    generator (regimes in increasing order, so the draws are reproducible).

    Args:
        source: The labelled images (moved to ``device`` once).
        views: A :class:`~jepa_blocks.data.SequenceViews` or one per regime (same parameters).
        num_observed: ``M``, observed views per sequence (the target is one more).
        device: Where the images live and views are made (default: the source's device).
        normalize: Standardise the views with the source's ``mean`` and ``std``.

    Shape:
        - indices, regimes: ``(B,)``
        - output: ``views (B, M+1, C, H', W')``, ``actions (B, M, A)``, ``labels (B,)``
    """

    def __init__(
        self,
        source: LabelledImages,
        views: SequenceViews | Sequence[SequenceViews],
        *,
        num_observed: int,
        device: torch.device | str | None = None,
        normalize: bool = True,
    ) -> None:
        check_type(source, "source", LabelledImages)
        per_regime = [views] if isinstance(views, SequenceViews) else list(views)
        if not per_regime or not all(isinstance(v, SequenceViews) for v in per_regime):
            raise TypeError("views must be a SequenceViews or a non-empty sequence of them")
        first = per_regime[0]
        for r, v in enumerate(per_regime[1:], start=1):
            if v.param_names != first.param_names or v.action_dim != first.action_dim:
                raise ValueError(
                    f"views[{r}] has parameters {v.param_names} / action_dim {v.action_dim}, "
                    f"but views[0] has {first.param_names} / {first.action_dim}; all regimes "
                    "must share them"
                )
        self.num_observed = check_int(num_observed, "num_observed")
        self.device = torch.device(device) if device is not None else source.images.device
        self.source = source.to(self.device)
        self.views = per_regime
        self.normalize = check_bool(normalize, "normalize")
        c = source.images.shape[1]
        self._mean = torch.tensor(source.mean, device=self.device).reshape(c, 1, 1)
        self._std = torch.tensor(source.std, device=self.device).reshape(c, 1, 1)

    @property
    def num_regimes(self) -> int:
        """Number of view generators."""
        return len(self.views)

    @property
    def action_dim(self) -> int:
        """``A``, the action dimension."""
        return int(self.views[0].action_dim)

    def __len__(self) -> int:
        return len(self.source)

    def __call__(
        self, indices: Tensor, regimes: Tensor | None, generator: torch.Generator
    ) -> ViewSequence:
        """The view sequences of ``indices``, in their order."""
        idx = _as_index_tensor(indices, "indices", nonempty=True, below=len(self.source))
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        reg = torch.zeros_like(idx) if regimes is None else regimes
        reg = _as_index_tensor(reg, "regime ids", below=self.num_regimes)  # one SequenceViews each
        if reg.shape != idx.shape:
            raise ValueError(f"regimes must have shape {tuple(idx.shape)}, got {tuple(reg.shape)}")
        dev_idx = idx.to(self.device)
        rows, made = [], []
        for r in torch.unique(reg).tolist():
            rows.append(torch.nonzero(reg == r, as_tuple=False).flatten().to(self.device))
            images = self.source.images[dev_idx[rows[-1]]].float().div_(255.0)
            made.append(self.views[r](images, num_views=self.num_observed + 1, generator=generator))
        order = torch.argsort(torch.cat(rows))  # back to the order of ``indices``
        views_out, params_out = (torch.cat(x)[order] for x in zip(*made))
        if self.normalize:
            views_out = (views_out - self._mean) / self._std
        actions = self.views[0].actions(params_out)
        return ViewSequence(views_out, params_out, actions, self.source.labels[dev_idx], dev_idx)


class StreamBatch(NamedTuple):
    """Batch ``number`` (0-based) of a :class:`SequenceStream`: stream positions ``[start, stop)``.

    ``splits`` and ``regimes``: ids of the items, ``(B,)``.
    """

    number: int
    start: int
    stop: int
    sequences: ViewSequence
    splits: Tensor
    regimes: Tensor


class SequenceStream:
    """Iterate once over a :class:`StreamPlan` in batches of view sequences.

    Batch ``b`` draws its views from ``mix_seed(seed, b)``: :meth:`batch` regenerates it alone.

    Args:
        plan: Which item comes when.
        maker: ``(indices, regimes, generator) → ViewSequence``, e.g. :class:`ImageSequenceMaker`.
        batch_size: Items per batch.
        seed: Base seed of the views.
        align_to_boundaries: Never let a batch straddle a nominal split boundary.
    """

    def __init__(
        self,
        plan: StreamPlan,
        maker: SequenceMaker,
        *,
        batch_size: int,
        seed: int = 0,
        align_to_boundaries: bool = False,
    ) -> None:
        check_type(plan, "plan", StreamPlan)
        if not callable(maker):
            raise TypeError(f"maker must be callable, got {type(maker).__name__}")
        regimes = getattr(maker, "num_regimes", None)
        if isinstance(regimes, int) and plan.num_regimes > regimes:
            raise ValueError(
                f"the plan uses {plan.num_regimes} regimes but the maker has {regimes} view "
                "generators"
            )
        self.plan = plan
        self.maker = maker
        self.batch_size = check_int(batch_size, "batch_size")
        self.seed = check_int(seed, "seed", minimum=-(2**63))
        check_bool(align_to_boundaries, "align_to_boundaries")
        self.slices = plan.batch_slices(batch_size, align_to_boundaries=align_to_boundaries)

    def __len__(self) -> int:
        return len(self.slices)

    def generator(self, number: int, *salt: int) -> torch.Generator:
        """The CPU generator of batch ``number`` (extra ``salt`` ints derive sub-streams)."""
        return torch.Generator().manual_seed(mix_seed(self.seed, int(number), *salt))

    def batch(self, number: int) -> StreamBatch:
        """Batch ``number``, regenerated from its seed."""
        if not 0 <= check_int(number, "number", minimum=0) < len(self):
            raise ValueError(f"number must be a batch number in [0, {len(self)}), got {number}")
        start, stop = self.slices[number]
        idx = self.plan.order[start:stop]
        regimes = self.plan.regimes[start:stop]
        seqs = self.maker(idx, regimes, self.generator(number))
        return StreamBatch(number, start, stop, seqs, self.plan.splits[start:stop], regimes)

    def __iter__(self) -> Iterator[StreamBatch]:
        for b in range(len(self)):
            yield self.batch(b)

    def __repr__(self) -> str:
        return f"SequenceStream({self.plan!r}, batches={len(self)}, batch_size={self.batch_size})"
