r"""Frozen features of streamed aggregates: :math:`z_\text{AGG}` at several sequence lengths.

From one streaming pass of a :class:`~jepa_blocks.seq.streaming_aggregator.ToSTAggregator`, or
one aggregator call per length for other aggregators, so the same code compares them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from jepa_blocks._validation import check_finite, check_int, check_type
from jepa_blocks.metrics.evaluation import (
    EvalConfig,
    FeatureSet,
    check_model,
    classifier_kwargs,
    eval_mode,
)
from jepa_blocks.metrics.probes import linear_probe_accuracy
from jepa_blocks.runtime import num_threads

__all__ = ["StreamFeatures", "extract_stream_features", "linacc_by_length"]


class StreamFeatures(NamedTuple):
    r"""Frozen features of one split with :math:`z_\text{AGG}` for several ``M_val``.

    Attributes:
        z: Encodings of the first two views, ``(N, 2, D)``.
        z_agg: :math:`z_\text{AGG}` for each length of ``lengths``, ``(N, L, D+E)``.
        lengths: The ``M_val`` values, increasing.
        labels: Class indices, ``(N,)``.
        actions: The first relative action, ``(N, 1, A)``.
        max_abs_diff: Largest difference of the streamed and the full-sequence :math:`z_\text{AGG}`
            (longest length, model's dtype, all sequences; ``0.0`` if not streamed).
        max_abs_diff_f64: The same for a float64 copy of the model, first batch, every length.
    """

    z: Tensor
    z_agg: Tensor
    lengths: tuple[int, ...]
    labels: Tensor
    actions: Tensor
    max_abs_diff: float
    max_abs_diff_f64: float = 0.0

    def at(self, m: int) -> FeatureSet:
        r"""The :class:`~jepa_blocks.metrics.FeatureSet` at length ``m`` (one of :attr:`lengths`).

        Shape:
            - output.z: ``(N, 2, D)``; output.z_agg: ``(N, D+E)``; output.actions: ``(N, 1, A)``
        """
        if m not in self.lengths:
            raise ValueError(f"m={m} is not one of the extracted lengths {self.lengths}")
        return FeatureSet(self.z, self.z_agg[:, self.lengths.index(m)], self.labels, self.actions)


@torch.no_grad()
def extract_stream_features(
    model: nn.Module, loader: Any, lengths: Sequence[int], *, passes: int = 1
) -> StreamFeatures:
    r"""Encode ``loader``'s sequences, aggregate each prefix length of ``lengths`` (CPU, float32).

    With a :class:`~jepa_blocks.seq.streaming_aggregator.ToSTAggregator` the aggregates come from
    one streaming pass (:func:`~jepa_blocks.seq.streaming_aggregator.stream_aggregates`), checked
    against the full sequence (float32 can exceed rounding where the causal TSSA normaliser is
    ill-conditioned; the float64 check shows the recurrence is exact); others run once per length.

    Args:
        model: A :class:`~jepa_blocks.SeqJEPA` (put in eval mode here, restored after).
        loader: A :class:`~jepa_blocks.data.SequenceLoader` with at least ``max(lengths)``
            observed views; pass ``k`` uses its epoch ``k``.
        lengths: The ``M_val`` values (sorted and deduplicated here).
        passes: Passes over the loader (sequences per image).

    Raises:
        ValueError: A length below 1, or longer than the loader's sequences.

    Shape:
        - output.z: ``(N, 2, D)``; output.z_agg: ``(N, L, D+E)``; output.actions: ``(N, 1, A)``
    """
    from jepa_blocks.seq.streaming_aggregator import ToSTAggregator, stream_aggregates

    check_model(model)
    check_int(passes, "passes")
    lengths = tuple(sorted(set(lengths)))
    if not lengths or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in lengths):
        raise ValueError(f"lengths must be a non-empty list of ints >= 1, got {lengths!r}")
    streaming = isinstance(getattr(model, "aggregator", None), ToSTAggregator)
    zs: list[Tensor] = []
    aggs, labels, actions = [], [], []
    diff = torch.zeros(())
    diff64 = 0.0
    with eval_mode(model):
        for k in range(passes):
            loader.set_epoch(k)
            for batch in loader:
                m = batch.views.shape[1] - 1
                if m < lengths[-1]:
                    raise ValueError(f"the loader has {m} observed views, need {lengths[-1]}")
                z = model.encode(batch.views[:, : lengths[-1]])  # type: ignore[operator]
                if streaming:
                    every = stream_aggregates(model, z, batch.actions)
                    agg = every[:, [n - 1 for n in lengths]]
                    full = model.aggregate(z, batch.actions[:, : lengths[-1]])  # type: ignore[operator]
                    diff = torch.maximum(diff, (agg[:, -1] - full).abs().max().float().cpu())
                    if not zs:
                        diff64 = _float64_check(model, z, batch.actions, lengths)
                else:
                    agg = torch.stack(
                        [model.aggregate(z[:, :n], batch.actions[:, :n]) for n in lengths],  # type: ignore[operator]
                        dim=1,
                    )
                zs.append(z[:, :2].float().cpu())
                aggs.append(agg.float().cpu())
                labels.append(batch.labels.cpu())
                actions.append(batch.actions[:, :1].float().cpu())
    if not zs:
        raise ValueError("loader must yield at least one batch, got none")
    z, agg, lab, act = map(torch.cat, (zs, aggs, labels, actions))
    check_finite(z, "the encoder's features z")
    check_finite(agg, "the aggregates z_agg")
    return StreamFeatures(z, agg, lengths, lab, act, float(diff), diff64)


def _float64_check(model: nn.Module, z: Tensor, actions: Tensor, lengths: Sequence[int]) -> float:
    """Largest |streamed − full| z_agg of a float64 copy of ``model`` at every length."""
    from jepa_blocks.seq.streaming_aggregator import stream_aggregates

    m64 = copy.deepcopy(model).double().eval()
    z64, a64 = z.double(), actions.double()
    every = stream_aggregates(m64, z64, a64)
    worst = 0.0
    for n in lengths:
        full = m64.aggregate(z64[:, :n], a64[:, :n])  # type: ignore[operator]
        worst = max(worst, float((every[:, n - 1] - full).abs().max()))
    return worst


def linacc_by_length(
    train: StreamFeatures, test: StreamFeatures, config: EvalConfig
) -> dict[int, float]:
    r"""Test accuracies ``{M_val: linacc}`` of :func:`~jepa_blocks.metrics.evaluate`'s class probe.

    Args:
        train, test: Features of the probes' training and test splits (the same lengths).
        config: Probe settings.
    """
    check_type(config, "config", EvalConfig, "an EvalConfig")
    for name, f in (("train", train), ("test", test)):
        check_type(f, name, StreamFeatures, "a StreamFeatures")
    if train.lengths != test.lengths:
        raise ValueError(f"train and test lengths differ: {train.lengths} vs {test.lengths}")
    out = {}
    with num_threads(config.probe_threads):
        for i, m in enumerate(train.lengths):
            tr, te, kw = train.z_agg[:, i], test.z_agg[:, i], classifier_kwargs(config)
            out[m] = linear_probe_accuracy(tr, train.labels, te, test.labels, **kw).test
    return out
