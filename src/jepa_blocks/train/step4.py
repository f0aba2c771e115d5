r"""Step 4: seq-JEPA with a streaming ToST aggregator on long sequences; compute, memory, probes.

Builds on :mod:`jepa_blocks.train.experiment` (the presets, data, model, probes and report of
steps 1–2) and replaces the transformer aggregator by
:class:`~jepa_blocks.seq.streaming_aggregator.ToSTAggregator` (causal token-statistics
attention; Wu et al., ICLR 2025, "Token Statistics Transformer: Linear-Time Attention via
Variational Rate Reduction", arXiv:2412.17810), so that a trained model can aggregate a stream
of views one view at a time with a constant-size state. One run (:func:`run_step4`):

1. **Train** seq-JEPA (Ghaemi et al., 2025, arXiv:2505.03176) on sequences of ``M_tr`` observed
   views with the shared loop (:func:`jepa_blocks.train.loop.fit`).
2. **Probe** (the usual table of :func:`~jepa_blocks.train.experiment.evaluate`, trained vs the
   same network at initialisation) on :math:`z_\text{AGG}` computed by **streaming**
   (:func:`~jepa_blocks.seq.streaming_aggregator.stream_aggregates`), plus the linear accuracy of
   :math:`z_\text{AGG}` for every ``M_val`` in ``probe_lengths`` from the same single pass, and
   the largest difference between the streamed and the full-sequence :math:`z_\text{AGG}`.
3. **Measure** against the paper's transformer aggregator (:func:`bench_aggregators`,
   :func:`bench_model_steps`, :func:`bench_streaming`): time of a training step (forward and
   backward) and its activation memory, for the aggregator alone over ``N`` tokens and for the
   whole seq-JEPA step over ``M`` views; and the per-view latency and state size of streaming
   inference against re-running the transformer over the whole prefix.

**Memory.** On CUDA, the peak of ``torch.cuda.max_memory_allocated`` above the memory allocated
before the call. On the CPU there is no allocator statistic, so :class:`SavedTensorMeter` counts
the bytes of the distinct storages that autograd saves for the backward pass
(``torch.autograd.graph.saved_tensors_hooks``), parameters and buffers excluded: the activation
memory that a training step must hold at its peak (transient buffers freed during the forward
pass are not counted).

Nothing heavy is imported at module import time.

**Experimental** (``__experimental__ = True``): this research-step module may change or be
removed in any release without a deprecation period; the API audit
(``tests/test_api_audit.py``) records it as experimental.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from jepa_blocks._validation import check_choice
from jepa_blocks.train.config import TrainConfig, apply_overrides, config_from_dict, config_to_dict
from jepa_blocks.train.experiment import (
    VARIANTS,
    EvalConfig,
    ExperimentConfig,
    FeatureSet,
    ModelConfig,
    _deep_merge,
    _read_yaml,
    build_data,
    build_model,
    evaluate,
    format_table,
    load_experiment_config,
)
from jepa_blocks.train.experiment import _versions as _experiment_versions
from jepa_blocks.train.loop import _schedule_steps, fit, resolve_device, seed_everything

__experimental__ = True

__all__ = [
    "STEP4_OVERRIDES",
    "STEP4_SMOKE",
    "AggregatorConfig",
    "BenchConfig",
    "SavedTensorMeter",
    "Step4Config",
    "Step4Result",
    "StreamFeatures",
    "bench_aggregators",
    "bench_model_steps",
    "bench_streaming",
    "build_aggregator",
    "build_step4_model",
    "build_step4_optimizer",
    "extract_stream_features",
    "format_aggregator_table",
    "format_length_table",
    "format_model_table",
    "format_streaming_table",
    "load_step4_config",
    "main",
    "measure_memory",
    "run_step4",
    "time_call",
]

MIB = 2.0**20


# --------------------------------------------------------------------------- configs


@dataclasses.dataclass
class AggregatorConfig:
    """The aggregator of step 4.

    Attributes:
        kind: ``"tost"`` (:class:`~jepa_blocks.seq.streaming_aggregator.ToSTAggregator`) or
            ``"transformer"`` (the paper's :class:`~jepa_blocks.seq.Aggregator`, to train the
            baseline through the same pipeline). Depth, heads and MLP ratio come from
            ``model``.
        readout: ToST read-out: ``"mean"``, ``"agg"`` or ``"last"``.
        max_len: Length of the causal TSSA positional bias (``None``: none).
        beyond_max_len: ``"clamp"`` or ``"zero"`` past ``max_len``.
        decay: Forgetting factor of the statistics (``None``: none).
        layer_scale_init: LayerScale init of the ToST blocks (``None``: the causal preset 1e-5).
        qkv_bias: Bias on the TSSA input projection.
        dropout: MLP dropout of the ToST blocks.
    """

    kind: Literal["tost", "transformer"] = "tost"
    readout: Literal["mean", "agg", "last"] = "mean"
    max_len: int | None = None
    beyond_max_len: Literal["clamp", "zero"] = "clamp"
    decay: float | None = None
    layer_scale_init: float | None = 1.0
    qkv_bias: bool = True
    dropout: float = 0.0


@dataclasses.dataclass
class BenchConfig:
    """Compute and memory measurements against the transformer aggregator.

    Attributes:
        enabled: Run the measurements.
        token_lengths: ``N`` for the aggregator alone (training step over ``N`` tokens).
        token_batch: Sequences per aggregator step.
        model_lengths: ``M`` for the whole seq-JEPA training step (``M`` views + 1 target).
        model_batch: Sequences per seq-JEPA step (``≥ 2``: the predictor has a BatchNorm).
        stream_lengths: Stream positions ``t`` at which the per-view latency is measured.
        stream_batch: Parallel streams.
        repeats: Timed repetitions (the median is reported) after one warm-up call.
        threads: torch intra-op threads during the measurements (1, default: per-core numbers,
            and no thread oversubscription on a shared machine; ``None``: the run's setting).
    """

    enabled: bool = True
    token_lengths: list[int] = dataclasses.field(default_factory=lambda: [64, 256, 1024, 4096])
    token_batch: int = 1
    model_lengths: list[int] = dataclasses.field(default_factory=lambda: [4, 16, 64])
    model_batch: int = 16
    stream_lengths: list[int] = dataclasses.field(default_factory=lambda: [16, 64, 256, 1024, 4096])
    stream_batch: int = 1
    repeats: int = 3
    threads: int | None = 1


@dataclasses.dataclass
class Step4Config(ExperimentConfig):
    """An :class:`~jepa_blocks.train.experiment.ExperimentConfig` plus the step-4 sections.

    Attributes:
        aggregator: :class:`AggregatorConfig`.
        bench: :class:`BenchConfig`.
        probe_lengths: ``M_val`` values of the per-length linear probes on the streamed
            :math:`z_\\text{AGG}` (one streaming pass gives all of them).
    """

    step: str = "step4"
    variant: str = "baseline"
    aggregator: AggregatorConfig = dataclasses.field(default_factory=AggregatorConfig)
    bench: BenchConfig = dataclasses.field(default_factory=BenchConfig)
    probe_lengths: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 4, 8, 16, 32])


#: Overrides of step 4 applied on top of the shared preset: long training sequences, probes at
#: ``M_val = M_tr`` (plus ``probe_lengths``) on one sequence per image, smaller eval batches
#: (every probe sequence has ``max(probe_lengths) + 1`` views), and the step-4 gates.
STEP4_OVERRIDES: tuple[str, ...] = (
    "step=step4",
    "data.num_observed=16",
    "data.batch_size=64",
    "train.epochs=3",
    "eval.num_observed=null",
    "eval.train_sequences_per_image=1",
    "eval.batch_size=50",
    "eval.pixel_baseline=false",
    "gates={name: step4, description: 'Step 4 CPU demo: the ToST model learns and streams "
    "exactly.', min: {linacc_gain: 0.0}, max: {stream_max_abs_diff_f64: 1.0e-9}}",
)
#: Extra ``--smoke`` overrides (after the preset's own smoke list): a complete run in seconds.
STEP4_SMOKE: tuple[str, ...] = (
    "threads=1",
    "data.train_subset=256",
    "data.test_subset=128",
    "data.batch_size=32",
    "data.num_observed=4",
    "train.epochs=1",
    "probe_lengths=[1, 4, 8]",
    "eval.num_observed=null",
    "eval.train_sequences_per_image=1",
    "eval.batch_size=64",
    "eval.classifier=ridge",
    "eval.regressor=mlp",
    "eval.regressor_epochs=5",
    "bench.token_lengths=[32, 128]",
    "bench.token_batch=2",
    "bench.model_lengths=[4, 16]",
    "bench.model_batch=2",
    "bench.stream_lengths=[16, 128]",
    "bench.repeats=1",
    "gates={name: smoke, max: {stream_max_abs_diff_f64: 1.0e-9}}",
)


def load_step4_config(
    *,
    preset: str | os.PathLike[str] | None = "cpu-demo",
    config_dir: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    variant: str = "baseline",
    smoke: bool = False,
    overrides: Sequence[str] = (),
) -> Step4Config:
    """Build a :class:`Step4Config`: shared preset, step-4 overrides, file, smoke, overrides.

    Args:
        preset: A preset of the steps 1–2 examples (``config_dir/<preset>.yaml``), a YAML path,
            or ``None`` (the dataclass defaults).
        config_dir: Directory of the preset files.
        config_file: A YAML file deep-merged after the step-4 overrides (it may hold
            ``aggregator``, ``bench`` and ``probe_lengths`` sections).
        variant: A key of :data:`~jepa_blocks.train.experiment.VARIANTS` (default ``baseline``,
            the EMA teacher).
        smoke: Apply the preset's ``smoke`` overrides, then :data:`STEP4_SMOKE`.
        overrides: Dotted ``key=value`` overrides, applied last.

    Returns:
        The config.

    Raises:
        ValueError: Unknown preset, variant or key.
        TypeError: A value of the wrong type.
    """
    base = load_experiment_config(preset=preset, config_dir=config_dir, variant=variant)
    data = config_to_dict(base)
    data["smoke"] = [*base.smoke, *STEP4_SMOKE]
    config = apply_overrides(config_from_dict(Step4Config, data), STEP4_OVERRIDES)
    if config_file is not None:
        config = config_from_dict(
            Step4Config, _deep_merge(config_to_dict(config), _read_yaml(config_file))
        )
    if smoke:
        config = apply_overrides(config, config.smoke)
    config = apply_overrides(config, list(overrides))
    _check_config(config)
    return config


def _check_lengths(values: Sequence[int], name: str) -> None:
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be a non-empty list of ints >= 1, got {values!r}")


def _check_config(config: Step4Config) -> None:
    _check_lengths(config.probe_lengths, "probe_lengths")
    _check_lengths(config.bench.token_lengths, "bench.token_lengths")
    _check_lengths(config.bench.model_lengths, "bench.model_lengths")
    _check_lengths(config.bench.stream_lengths, "bench.stream_lengths")
    if config.bench.threads is not None and config.bench.threads < 1:
        raise ValueError(f"bench.threads must be >= 1 or None, got {config.bench.threads}")
    if config.threads is not None and config.threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {config.threads}")
    for name in ("token_batch", "model_batch", "stream_batch", "repeats"):
        value = getattr(config.bench, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"bench.{name} must be an int >= 1, got {value!r}")
    if config.bench.model_batch < 2:
        raise ValueError(
            f"bench.model_batch must be >= 2 (the predictor's BatchNorm needs a batch), got "
            f"{config.bench.model_batch}"
        )
    if config.variant not in VARIANTS:
        raise ValueError(f"unknown variant {config.variant!r}; choose one of {sorted(VARIANTS)}")


# --------------------------------------------------------------------------- model


def build_aggregator(model: ModelConfig, aggregator: AggregatorConfig) -> nn.Module:
    """The aggregator of ``aggregator.kind`` with the depth, heads and widths of ``model``.

    Args:
        model: The model config (``encoder_dim + action_embed_dim`` tokens, ``depth``,
            ``heads``, ``mlp_ratio``; ``dropout`` for the transformer).
        aggregator: The aggregator config.

    Returns:
        A :class:`~jepa_blocks.seq.streaming_aggregator.ToSTAggregator` or the paper's
        :class:`~jepa_blocks.seq.Aggregator`.

    Shape:
        - output module: ``(B, M, D+E)`` → ``(B, D+E)``
    """
    from jepa_blocks.seq import Aggregator, transformer_blocks
    from jepa_blocks.seq.streaming_aggregator import ToSTAggregator

    if not isinstance(model, ModelConfig):
        raise TypeError(f"model must be a ModelConfig, got {type(model).__name__}")
    if not isinstance(aggregator, AggregatorConfig):
        raise TypeError(f"aggregator must be an AggregatorConfig, got {type(aggregator).__name__}")
    check_choice(aggregator.kind, "aggregator.kind", ("tost", "transformer"))
    width = model.encoder_dim + model.action_embed_dim
    if aggregator.kind == "transformer":
        blocks = transformer_blocks(
            dim=width,
            depth=model.depth,
            heads=model.heads,
            mlp_ratio=model.mlp_ratio,
            dropout=model.dropout,
        )
        return Aggregator(dim=width, blocks=blocks)
    return ToSTAggregator(
        dim=width,
        depth=model.depth,
        heads=model.heads,
        mlp_ratio=float(model.mlp_ratio),
        readout=aggregator.readout,
        max_len=aggregator.max_len,
        beyond_max_len=aggregator.beyond_max_len,
        decay=aggregator.decay,
        layer_scale_init=aggregator.layer_scale_init,
        qkv_bias=aggregator.qkv_bias,
        dropout=aggregator.dropout,
    )


def build_step4_model(
    config: Step4Config,
    *,
    in_channels: int,
    action_dim: int,
    total_steps: int,
    steps_per_epoch: int,
) -> nn.Module:
    """:func:`~jepa_blocks.train.experiment.build_model` with the aggregator of ``config``.

    The shared builder assembles the seq-JEPA of ``config.model`` (encoder, target, action
    encoder, predictor, regularizer); its transformer aggregator is then replaced by
    :func:`build_aggregator`. The random initialisation of the other parts is unchanged.

    Args:
        config: The step-4 config.
        in_channels: Image channels.
        action_dim: ``A``.
        total_steps: Optimizer steps of the run (EMA schedule).
        steps_per_epoch: Optimizer steps per epoch.

    Returns:
        The :class:`~jepa_blocks.SeqJEPA`.
    """
    if not isinstance(config, Step4Config):
        raise TypeError(f"config must be a Step4Config, got {type(config).__name__}")
    model = build_model(
        config.model,
        in_channels=in_channels,
        action_dim=action_dim,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
    )
    if config.aggregator.kind != "transformer":
        model.aggregator = build_aggregator(config.model, config.aggregator)
    return model


def build_step4_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``train.recipe``, with ToST's exclusions from weight decay.

    ``"paper"``: AdamW with weight decay on parameters of two or more dimensions, except the
    names that a submodule lists in ``no_weight_decay()`` (the TSSA temperatures and the read-out
    token, as in ToST's official code). ``"official"``: as
    :func:`jepa_blocks.train.build_optimizer`.

    Args:
        model: The model.
        train: The loop config (``recipe``, ``lr``, ``weight_decay``).

    Returns:
        The optimizer.
    """
    from jepa_blocks.train.schedule import build_optimizer

    # param_groups (the "paper" recipe) honours every submodule's no_weight_decay().
    return build_optimizer(model, recipe=train.recipe, lr=train.lr, weight_decay=train.weight_decay)


# --------------------------------------------------------------------------- measurements


class SavedTensorMeter:
    """Bytes of the distinct storages that autograd saves for backward while the meter is on.

    A context manager around ``torch.autograd.graph.saved_tensors_hooks``. Storages are counted
    once (views share them) and the storages of ``exclude`` (the parameters and buffers) are
    left out. With ``scope``, the tensors saved while ``scope``'s forward runs are also counted
    apart (:attr:`scoped_bytes`), e.g. the aggregator inside a whole model step.

    Keep the graph alive (hold the loss) until the meter is read: storages freed during the
    forward pass could otherwise be reused and counted twice.

    Args:
        exclude: Tensors whose storages are not activations.
        scope: Optional module whose own saved tensors are counted apart.

    Example:
        >>> import torch
        >>> from jepa_blocks.train.step4 import SavedTensorMeter
        >>> lin = torch.nn.Linear(4, 4)
        >>> with SavedTensorMeter(exclude=lin.parameters()) as meter:
        ...     y = lin(torch.randn(2, 4, requires_grad=True)).square().sum()
        >>> meter.bytes > 0
        True
    """

    def __init__(self, *, exclude: Iterable[Tensor] = (), scope: nn.Module | None = None) -> None:
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._all: dict[int, int] = {}
        self._scoped: dict[int, int] = {}
        self._in_scope = False
        self._handles: list[Any] = []
        self._ctx: Any = None
        if scope is not None:
            self._handles = [
                scope.register_forward_pre_hook(lambda *_: self._set_scope(True)),
                scope.register_forward_hook(lambda *_: self._set_scope(False)),
            ]

    def _set_scope(self, on: bool) -> None:
        self._in_scope = on

    def _pack(self, t: Tensor) -> Tensor:
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensors without a storage
            return t
        ptr = storage.data_ptr()
        if ptr and ptr not in self._exclude:
            self._all[ptr] = storage.nbytes()
            if self._in_scope:
                self._scoped[ptr] = storage.nbytes()
        return t

    def __enter__(self) -> SavedTensorMeter:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)
        for h in self._handles:
            h.remove()

    @property
    def bytes(self) -> int:
        """Bytes of all distinct saved storages."""
        return sum(self._all.values())

    @property
    def scoped_bytes(self) -> int:
        """Bytes of the distinct storages saved inside ``scope``'s forward."""
        return sum(self._scoped.values())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any], *, repeats: int = 3, warmup: int = 1, device: Any = "cpu"
) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls.

    Args:
        fn: The call to time.
        repeats: Timed calls (``≥ 1``).
        warmup: Untimed calls first.
        device: Synchronised around each call when it is a CUDA device.

    Returns:
        The median of the timed calls.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    dev = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class MemoryReading(NamedTuple):
    """What :func:`measure_memory` returns.

    Attributes:
        bytes: Activation memory of the call (see ``method``).
        scoped_bytes: The same inside ``scope`` (CPU method only; ``None`` otherwise).
        method: ``"cuda-peak"`` or ``"saved-tensors"``.
    """

    bytes: int
    scoped_bytes: int | None
    method: str


def measure_memory(
    fn: Callable[[], Any],
    *,
    module: nn.Module,
    device: Any = "cpu",
    scope: nn.Module | None = None,
) -> MemoryReading:
    """Activation memory of a training call ``fn()`` (forward; it must return the loss).

    CUDA: the peak allocated memory above the memory allocated before the call
    (``torch.cuda.max_memory_allocated``). CPU: the bytes saved for backward
    (:class:`SavedTensorMeter`, ``module``'s parameters and buffers excluded).

    Args:
        fn: Runs the forward pass and returns what keeps the graph alive (the loss).
        module: The module whose parameters and buffers are not activations.
        device: Where ``fn`` runs.
        scope: A submodule measured apart (CPU only).

    Returns:
        :class:`MemoryReading`.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        out = fn()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - base
        del out
        return MemoryReading(int(peak), None, "cuda-peak")
    exclude = [*module.parameters(), *module.buffers()]
    with SavedTensorMeter(exclude=exclude, scope=scope) as meter:
        out = fn()
    reading = MemoryReading(meter.bytes, meter.scoped_bytes if scope is not None else None, "")
    del out
    return reading._replace(method="saved-tensors")


def _bench_pair(model: ModelConfig, aggregator: AggregatorConfig, device: torch.device) -> dict:
    tost_cfg = dataclasses.replace(aggregator, kind="tost")
    trans_cfg = dataclasses.replace(aggregator, kind="transformer")
    return {
        "tost": build_aggregator(model, tost_cfg).to(device),
        "transformer": build_aggregator(model, trans_cfg).to(device),
    }


def bench_aggregators(
    model: ModelConfig,
    aggregator: AggregatorConfig,
    *,
    lengths: Sequence[int],
    batch: int,
    repeats: int = 3,
    device: Any = "cpu",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Training step (forward + backward) of the aggregator alone: ToST vs transformer.

    Args:
        model: Widths, depth and heads (as trained).
        aggregator: The ToST settings.
        lengths: Token counts ``N``.
        batch: Sequences per step.
        repeats: Timed repetitions.
        device: Where to run.
        seed: Seed of the weights and tokens.

    Returns:
        One row per ``(N, kind)``: ``{"n", "kind", "ms", "mib", "memory"}``.
    """
    dev = torch.device(device)
    torch.manual_seed(seed)
    aggs = _bench_pair(model, aggregator, dev)
    width = model.encoder_dim + model.action_embed_dim
    rows = []
    for n in lengths:
        tokens = torch.randn(batch, n, width, device=dev, requires_grad=True)
        for kind, agg in aggs.items():
            agg.train()

            def forward(agg: nn.Module = agg, tokens: Tensor = tokens) -> Tensor:
                return agg(tokens).square().mean()

            def step(forward: Callable[[], Tensor] = forward) -> None:
                forward().backward()

            seconds = time_call(step, repeats=repeats, device=dev)
            mem = measure_memory(forward, module=agg, device=dev)
            rows.append(
                {"n": n, "kind": kind, "ms": 1e3 * seconds, "mib": mem.bytes / MIB,
                 "memory": mem.method}
            )  # fmt: skip
    return rows


def bench_model_steps(
    config: Step4Config,
    *,
    in_channels: int,
    image_size: tuple[int, int],
    action_dim: int,
    lengths: Sequence[int],
    batch: int,
    repeats: int = 3,
    device: Any = "cpu",
) -> list[dict[str, Any]]:
    """Whole seq-JEPA training step (forward + backward) over ``M`` views: ToST vs transformer.

    Random views and actions (the cost does not depend on the content).

    Args:
        config: The step-4 config (model and ToST settings).
        in_channels: Image channels.
        image_size: ``(H, W)``.
        action_dim: ``A``.
        lengths: Observed views ``M``.
        batch: Sequences per step.
        repeats: Timed repetitions.
        device: Where to run.

    Returns:
        One row per ``(M, kind)``: ``{"m", "kind", "ms", "mib", "agg_mib", "memory"}``
        (``agg_mib`` is the aggregator's share, CPU only).
    """
    dev = torch.device(device)
    rows = []
    h, w = image_size
    for kind in ("tost", "transformer"):
        cfg = dataclasses.replace(
            config, aggregator=dataclasses.replace(config.aggregator, kind=kind)
        )
        torch.manual_seed(config.train.seed)
        model = build_step4_model(
            cfg, in_channels=in_channels, action_dim=action_dim, total_steps=100,
            steps_per_epoch=10,
        ).to(dev)  # fmt: skip
        model.train()
        for m in lengths:
            views = torch.randn(batch, m + 1, in_channels, h, w, device=dev)
            actions = torch.randn(batch, m, action_dim, device=dev)

            def forward(model: nn.Module = model, v: Tensor = views, a: Tensor = actions) -> Any:
                return model(v, a).loss

            def step(forward: Callable[[], Tensor] = forward) -> None:
                forward().backward()

            seconds = time_call(step, repeats=repeats, device=dev)
            agg = model.aggregator
            assert isinstance(agg, nn.Module)
            mem = measure_memory(forward, module=model, device=dev, scope=agg)
            rows.append(
                {
                    "m": m,
                    "kind": kind,
                    "ms": 1e3 * seconds,
                    "mib": mem.bytes / MIB,
                    "agg_mib": None if mem.scoped_bytes is None else mem.scoped_bytes / MIB,
                    "memory": mem.method,
                }
            )
    return rows


def bench_streaming(
    model: ModelConfig,
    aggregator: AggregatorConfig,
    *,
    lengths: Sequence[int],
    batch: int = 1,
    repeats: int = 3,
    device: Any = "cpu",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per-view cost of streaming inference at stream position ``t``: ToST vs transformer.

    ToST: commit the previous view's token and read :math:`z_\\text{AGG}` with the new view's
    token pending (what :class:`~jepa_blocks.seq.streaming_aggregator.AggregateStream` does per
    view), from the state after ``t − 2`` tokens; memory: the state (plus the pending token), per
    stream. Transformer (bidirectional; a new view changes every token): re-run the aggregator
    over all ``t`` tokens; memory: the ``t`` tokens it must keep (its minimum), per stream.
    Also checks that the streamed read equals the ToST full-sequence forward.

    Args:
        model: Widths, depth and heads.
        aggregator: The ToST settings.
        lengths: Stream positions ``t ≥ 2``.
        batch: Parallel streams.
        repeats: Timed repetitions.
        device: Where to run.
        seed: Seed of the weights and tokens.

    Returns:
        One row per ``t``: ``{"t", "tost_ms", "transformer_ms", "tost_state_kib",
        "transformer_context_kib", "max_abs_diff"}``.
    """
    dev = torch.device(device)
    torch.manual_seed(seed)
    aggs = _bench_pair(model, aggregator, dev)
    tost, trans = aggs["tost"].eval(), aggs["transformer"].eval()
    width = model.encoder_dim + model.action_embed_dim
    rows = []
    with torch.no_grad():
        for t in lengths:
            if t < 2:
                raise ValueError(f"stream lengths must be >= 2, got {t}")
            tokens = torch.randn(batch, t, width, device=dev)
            state = tost.scan(tost.init_state(batch, device=dev), tokens[:, : t - 2])
            prev, new = tokens[:, t - 2], tokens[:, t - 1]

            def tost_view(state: Any = state, prev: Tensor = prev, new: Tensor = new) -> Tensor:
                return tost.read(tost.push(state, prev), pending=new)

            def trans_view(tokens: Tensor = tokens) -> Tensor:
                return trans(tokens)

            tost_s = time_call(tost_view, repeats=repeats, device=dev)
            trans_s = time_call(trans_view, repeats=repeats, device=dev)
            diff = (tost_view() - tost(tokens)).abs().max()
            final = tost.push(state, prev)
            state_bytes = final.nbytes() / batch + width * new.element_size()
            rows.append(
                {
                    "t": t,
                    "tost_ms": 1e3 * tost_s,
                    "transformer_ms": 1e3 * trans_s,
                    "tost_state_kib": state_bytes / 1024,
                    "transformer_context_kib": t * width * tokens.element_size() / 1024,
                    "max_abs_diff": float(diff),
                }
            )
    return rows


# --------------------------------------------------------------------------- features


class StreamFeatures(NamedTuple):
    """Frozen features of one split with :math:`z_\\text{AGG}` for several ``M_val``.

    Attributes:
        z: Encodings of the first two views, ``(N, 2, D)``.
        z_agg: :math:`z_\\text{AGG}` for each length of ``lengths``, ``(N, L, D+E)``.
        lengths: The ``M_val`` values.
        labels: Class indices, ``(N,)``.
        actions: The first relative action, ``(N, 1, A)``.
        max_abs_diff: Largest difference between the streamed and the full-sequence
            :math:`z_\\text{AGG}` at the longest length, in the model's dtype, over all
            sequences (``0.0`` for a transformer, which is not streamed).
        max_abs_diff_f64: The same for a float64 copy of the model on the first batch, at every
            length: the exactness of the recurrence without float32 rounding (``0.0`` for a
            transformer).
    """

    z: Tensor
    z_agg: Tensor
    lengths: tuple[int, ...]
    labels: Tensor
    actions: Tensor
    max_abs_diff: float
    max_abs_diff_f64: float = 0.0

    def at(self, m: int) -> FeatureSet:
        """The :class:`~jepa_blocks.train.experiment.FeatureSet` with :math:`z_\\text{AGG}` at ``m``."""
        if m not in self.lengths:
            raise ValueError(f"m={m} is not one of the extracted lengths {self.lengths}")
        return FeatureSet(self.z, self.z_agg[:, self.lengths.index(m)], self.labels, self.actions)


@torch.no_grad()
def extract_stream_features(
    model: nn.Module, loader: Any, lengths: Sequence[int], *, passes: int = 1
) -> StreamFeatures:
    """Encode the sequences of ``loader`` and aggregate each prefix length of ``lengths``.

    With a :class:`~jepa_blocks.seq.streaming_aggregator.ToSTAggregator` the aggregates come from
    one streaming pass (:func:`~jepa_blocks.seq.streaming_aggregator.stream_aggregates`), and the
    full-sequence aggregate of the longest prefix is computed too, to check the two agree (in the
    model's dtype on every batch; in float64, on a copy of the model, at every length on the
    first batch). Other aggregators are run once per length.

    Float32 differences can exceed rounding: the causal TSSA normaliser
    :math:`w_t^2 / \\max(\\sum_{s \\le t} w_s^2, 10^{-12})` is ill-conditioned where a coordinate's
    projections are near zero in the first positions, so the two paths' different matmul
    roundings can move the memberships there. The float64 check shows the recurrence itself is
    exact.

    Args:
        model: A :class:`~jepa_blocks.SeqJEPA` (put in eval mode here).
        loader: A :class:`~jepa_blocks.data.SequenceLoader` with at least ``max(lengths)``
            observed views.
        lengths: The ``M_val`` values.
        passes: Passes over the loader (epochs ``0..passes-1``).

    Returns:
        :class:`StreamFeatures` on the CPU, float32.
    """
    from jepa_blocks.seq.streaming_aggregator import ToSTAggregator, stream_aggregates

    lengths = tuple(sorted(set(lengths)))
    _check_lengths(lengths, "lengths")
    streaming = isinstance(getattr(model, "aggregator", None), ToSTAggregator)
    was_training = model.training
    model.eval()
    zs: list[Tensor] = []
    aggs: list[Tensor] = []
    labels: list[Tensor] = []
    actions: list[Tensor] = []
    diff = torch.zeros(())
    diff64 = 0.0
    try:
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
    finally:
        model.train(was_training)
    return StreamFeatures(
        torch.cat(zs),
        torch.cat(aggs),
        lengths,
        torch.cat(labels),
        torch.cat(actions),
        float(diff),
        diff64,
    )


def _float64_check(model: nn.Module, z: Tensor, actions: Tensor, lengths: Sequence[int]) -> float:
    """Largest |streamed − full| z_agg of a float64 copy of ``model`` at every length."""
    import copy

    from jepa_blocks.seq.streaming_aggregator import stream_aggregates

    m64 = copy.deepcopy(model).double().eval()
    z64, a64 = z.double(), actions.double()
    every = stream_aggregates(m64, z64, a64)
    worst = 0.0
    for n in lengths:
        full = m64.aggregate(z64[:, :n], a64[:, :n])  # type: ignore[operator]
        worst = max(worst, float((every[:, n - 1] - full).abs().max()))
    return worst


def _length_accuracies(
    train: StreamFeatures, test: StreamFeatures, config: EvalConfig
) -> dict[int, float]:
    from jepa_blocks.metrics import linear_probe_accuracy

    out = {}
    threads = torch.get_num_threads()
    if config.probe_threads is not None:
        torch.set_num_threads(config.probe_threads)
    try:
        for i, m in enumerate(train.lengths):
            kw: dict[str, Any] = {"solver": config.classifier}
            if config.classifier == "adam":
                kw.update(epochs=config.classifier_epochs, standardize=False)
            else:
                kw["weight_decay"] = config.classifier_weight_decay
            kw["generator"] = torch.Generator().manual_seed(config.seed)
            res = linear_probe_accuracy(
                train.z_agg[:, i], train.labels, test.z_agg[:, i], test.labels, **kw
            )
            out[m] = float(res.test)
    finally:
        torch.set_num_threads(threads)
    return out


# --------------------------------------------------------------------------- tables


def _md(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(r, widths))) + " |" for r in rows]  # fmt: skip
    lines.insert(1, "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in
                                   enumerate(widths)) + "|")  # fmt: skip
    return "\n".join(lines)


def _pair(rows: Sequence[Mapping[str, Any]], key: str) -> dict[Any, dict[str, Mapping[str, Any]]]:
    out: dict[Any, dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(r[key], {})[r["kind"]] = r
    return out


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def format_aggregator_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`bench_aggregators` (ToST next to the transformer per ``N``)."""
    out = [("N tokens", "ToST ms", "transformer ms", "time ToST/tr.", "ToST MiB",
            "transformer MiB", "memory ToST/tr.")]  # fmt: skip
    for n, r in _pair(rows, "n").items():
        t, s = r["tost"], r["transformer"]
        out.append((str(n), f"{t['ms']:.1f}", f"{s['ms']:.1f}", _ratio(t["ms"], s["ms"]),
                    f"{t['mib']:.1f}", f"{s['mib']:.1f}", _ratio(t["mib"], s["mib"])))  # fmt: skip
    return _md(out)


def format_model_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`bench_model_steps` (whole seq-JEPA step per ``M``)."""
    out = [("M views", "ToST step ms", "transformer step ms", "ToST MiB (agg.)",
            "transformer MiB (agg.)")]  # fmt: skip

    def mem(r: Mapping[str, Any]) -> str:
        agg = "" if r["agg_mib"] is None else f" ({r['agg_mib']:.2f})"
        return f"{r['mib']:.1f}{agg}"

    for m, r in _pair(rows, "m").items():
        t, s = r["tost"], r["transformer"]
        out.append((str(m), f"{t['ms']:.0f}", f"{s['ms']:.0f}", mem(t), mem(s)))
    return _md(out)


def format_streaming_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`bench_streaming` (per-view latency and memory per stream)."""
    out = [("stream position t", "ToST ms/view", "transformer ms/view", "ToST state KiB",
            "transformer context KiB", "max |stream − full|")]  # fmt: skip
    for r in rows:
        out.append((str(r["t"]), f"{r['tost_ms']:.2f}", f"{r['transformer_ms']:.2f}",
                    f"{r['tost_state_kib']:.1f}", f"{r['transformer_context_kib']:.1f}",
                    f"{r['max_abs_diff']:.1e}"))  # fmt: skip
    return _md(out)


def format_length_table(
    trained: Mapping[int, float], random_init: Mapping[int, float] | None, m_train: int
) -> str:
    """Markdown table of the linear accuracy of :math:`z_\\text{AGG}` per ``M_val``."""
    out = [("M_val", "linacc(z_agg) trained", "random-init")]
    for m, acc in trained.items():
        base = (
            "—" if random_init is None or m not in random_init else f"{100 * random_init[m]:.1f} %"
        )
        label = f"{m} (= M_tr)" if m == m_train else str(m)
        out.append((label, f"{100 * acc:.1f} %", base))
    return _md(out)


# --------------------------------------------------------------------------- plots


def _write_plots(out_dir: Path, agg_rows: Sequence[Mapping[str, Any]],
                 lengths: Mapping[int, float], m_train: int) -> list[str]:  # fmt: skip
    from matplotlib.figure import Figure

    written = []
    if agg_rows:
        fig = Figure(figsize=(8.0, 3.2))
        ax_t, ax_m = fig.subplots(1, 2)
        for kind, style in (("tost", "o-"), ("transformer", "s--")):
            rs = [r for r in agg_rows if r["kind"] == kind]
            label = "ToST (causal TSSA)" if kind == "tost" else "transformer (softmax)"
            ax_t.loglog([r["n"] for r in rs], [r["ms"] for r in rs], style, label=label)
            ax_m.loglog([r["n"] for r in rs], [r["mib"] for r in rs], style, label=label)
        ax_t.set(xlabel="tokens N", ylabel="ms per step (fwd+bwd)", title="Aggregator time")
        ax_m.set(xlabel="tokens N", ylabel="MiB", title="Aggregator activation memory")
        ax_t.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "scaling.png", dpi=120)
        written.append("scaling.png")
    if lengths:
        fig = Figure(figsize=(4.5, 3.2))
        ax = fig.subplots()
        ax.semilogx(list(lengths), [100 * v for v in lengths.values()], "o-", base=2)
        ax.axvline(m_train, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="M_val (views aggregated, streamed)", ylabel="linacc(z_agg) %",
               title="Probe accuracy vs sequence length")  # fmt: skip
        fig.tight_layout()
        fig.savefig(out_dir / "linacc_vs_length.png", dpi=120)
        written.append("linacc_vs_length.png")
    return written


# --------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Step4Result:
    """What :func:`run_step4` returns.

    Attributes:
        metrics: Final probe metrics of the trained model (plus ``stream_max_abs_diff``,
            ``stream_max_abs_diff_f64`` and ``linacc_by_length``).
        random_init: The same for the network at initialisation (``None`` if not measured).
        bench: ``{"aggregator", "model", "streaming"}`` rows (empty lists when disabled).
        tables: The printed tables by name.
        gate: The gate verdict or ``None``.
        out_dir: Where ``metrics.json`` and the plots went (``None``: nowhere).
        seconds: Wall times.
    """

    metrics: dict[str, Any]
    random_init: dict[str, Any] | None
    bench: dict[str, list[dict[str, Any]]]
    tables: dict[str, str]
    gate: Any
    out_dir: Path | None
    seconds: dict[str, float]


def _loader(source: Any, views: Any, *, m: int, batch: int, seed: int, device: torch.device,
            shuffle: bool) -> Any:  # fmt: skip
    from jepa_blocks.data import SequenceLoader

    return SequenceLoader(
        source, views, num_observed=m, batch_size=batch, device=device, shuffle=shuffle,
        drop_last=shuffle and len(source) > batch, seed=seed,
    )  # fmt: skip


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, Tensor):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _versions() -> dict[str, str]:
    return {**_experiment_versions(), "threads": str(torch.get_num_threads())}


def run_step4(config: Step4Config, *, verbose: bool = True) -> Step4Result:
    """Train, probe and measure ``config``; write ``metrics.json`` and plots to ``train.out_dir``.

    Args:
        config: The step-4 config.
        verbose: Print progress and the tables.

    Returns:
        :class:`Step4Result`.
    """
    from jepa_blocks.metrics import effective_rank
    from jepa_blocks.train.gates import Gates, check_gates

    if not isinstance(config, Step4Config):
        raise TypeError(f"config must be a Step4Config, got {type(config).__name__}")
    _check_config(config)
    t0 = time.perf_counter()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    say = print if verbose else (lambda *a, **k: None)
    device = resolve_device(config.train.device)
    out_dir = Path(config.train.out_dir) if config.train.out_dir is not None else None
    kind = config.aggregator.kind

    data = build_data(config.data)
    m_tr = config.data.num_observed
    m_val = config.eval.num_observed or m_tr
    lengths = tuple(sorted({*config.probe_lengths, m_val}))
    seed_everything(config.train.seed)
    loader = _loader(data.train, data.views, m=m_tr, batch=config.data.batch_size,
                     seed=config.train.seed, device=device, shuffle=True)  # fmt: skip
    steps_per_epoch = len(loader)
    total_steps, _ = _schedule_steps(loader, config.train)
    in_channels = int(data.train.images.shape[1])
    action_dim = int(data.views.action_dim)
    model = build_step4_model(config, in_channels=in_channels, action_dim=action_dim,
                              total_steps=max(1, total_steps),
                              steps_per_epoch=steps_per_epoch).to(device)  # fmt: skip
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(
        f"[step4/{config.variant}] preset {config.name}: {config.data.dataset} "
        f"{len(data.train)}/{len(data.test)} images, M_tr={m_tr}, probes at M_val={list(lengths)}, "
        f"aggregator={kind}"
        + (f" (readout={config.aggregator.readout})" if kind == "tost" else "")
        + f", {n_params / 1e6:.2f} M parameters, {total_steps} steps on {device}"
    )

    def probe_loader(source: Any, seed: int) -> Any:
        return _loader(source, data.views, m=lengths[-1], batch=config.eval.batch_size,
                       seed=seed, device=device, shuffle=False)  # fmt: skip

    probe_train = probe_loader(data.train, config.eval.seed)
    probe_test = probe_loader(data.test, config.eval.seed + 1)
    monitor_src = data.test.subset(torch.arange(min(config.eval.monitor_size, len(data.test))))
    monitor = next(iter(_loader(monitor_src, data.views, m=m_tr, batch=config.eval.monitor_size,
                                seed=7, device=device, shuffle=False)))  # fmt: skip

    def monitor_fn(net: nn.Module, epoch: int) -> dict[str, float]:
        del epoch
        z = net.encode(monitor.views[:, :m_tr])  # type: ignore[operator]
        z_agg = net.aggregate(z, monitor.actions)  # type: ignore[operator]
        return {"rank_z_agg": effective_rank(z_agg.float()), "rank_z": effective_rank(z[:, 0])}

    passes = config.eval.train_sequences_per_image
    t_eval = 0.0
    random_metrics: dict[str, Any] | None = None
    random_lengths: dict[int, float] | None = None
    if config.eval.baseline:
        t1 = time.perf_counter()
        say("evaluating the random-init network ...")
        r_test = extract_stream_features(model, probe_test, lengths)
        r_train = extract_stream_features(model, probe_train, lengths, passes=passes)
        random_metrics = evaluate(r_train.at(m_val), r_test.at(m_val), config.eval)
        random_lengths = _length_accuracies(r_train, r_test, config.eval)
        t_eval += time.perf_counter() - t1

    t1 = time.perf_counter()
    optimizer = build_step4_optimizer(model, config.train)
    fit_result = fit(model, loader, config.train, optimizer=optimizer, eval_fn=monitor_fn,
                     full_config=config_to_dict(config))  # fmt: skip
    t_train = time.perf_counter() - t1
    model = fit_result.model

    t1 = time.perf_counter()
    say("evaluating the trained network (streamed z_agg) ...")
    f_test = extract_stream_features(model, probe_test, lengths)
    f_train = extract_stream_features(model, probe_train, lengths, passes=passes)
    metrics = evaluate(f_train.at(m_val), f_test.at(m_val), config.eval)
    by_length = _length_accuracies(f_train, f_test, config.eval)
    metrics["stream_max_abs_diff"] = max(f_test.max_abs_diff, f_train.max_abs_diff)
    metrics["stream_max_abs_diff_f64"] = max(f_test.max_abs_diff_f64, f_train.max_abs_diff_f64)
    metrics["linacc_by_length"] = {str(k): v for k, v in by_length.items()}
    if random_metrics is not None and random_lengths is not None:
        random_metrics["linacc_by_length"] = {str(k): v for k, v in random_lengths.items()}
    t_eval += time.perf_counter() - t1

    bench: dict[str, list[dict[str, Any]]] = {"aggregator": [], "model": [], "streaming": []}
    t_bench = 0.0
    if config.bench.enabled:
        t1 = time.perf_counter()
        say("measuring compute and memory against the transformer aggregator ...")
        b = config.bench
        run_threads = torch.get_num_threads()
        if b.threads is not None:
            torch.set_num_threads(b.threads)
        bench["aggregator"] = bench_aggregators(
            config.model, config.aggregator, lengths=b.token_lengths, batch=b.token_batch,
            repeats=b.repeats, device=device,
        )  # fmt: skip
        bench["model"] = bench_model_steps(
            config, in_channels=in_channels, image_size=tuple(data.train.image_size),
            action_dim=action_dim, lengths=b.model_lengths, batch=b.model_batch,
            repeats=b.repeats, device=device,
        )  # fmt: skip
        bench["streaming"] = bench_streaming(
            config.model, config.aggregator, lengths=b.stream_lengths, batch=b.stream_batch,
            repeats=b.repeats, device=device,
        )  # fmt: skip
        torch.set_num_threads(run_threads)
        t_bench = time.perf_counter() - t1

    tables = {"probes": format_table(metrics, random_metrics),
              "lengths": format_length_table(by_length, random_lengths, m_tr)}  # fmt: skip
    if config.bench.enabled:
        tables["aggregator"] = format_aggregator_table(bench["aggregator"])
        tables["model"] = format_model_table(bench["model"])
        tables["streaming"] = format_streaming_table(bench["streaming"])
    gate_metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    if random_metrics is not None:
        gate_metrics["linacc_gain"] = metrics["linacc"] - random_metrics["linacc"]
        gate_metrics["r2_gain"] = metrics["r2"] - random_metrics["r2"]
    gates = Gates.from_dict(config.gates, name=config.gates.get("name")) if config.gates else None
    gate = check_gates(gate_metrics, gates) if gates is not None else None
    seconds = {"train": t_train, "eval": t_eval, "bench": t_bench,
               "total": time.perf_counter() - t0}  # fmt: skip

    plots: list[str] = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if config.eval.plots:
            plots = _write_plots(out_dir, bench["aggregator"], by_length, m_tr)
        seconds["total"] = time.perf_counter() - t0
        record = {
            "step": "step4",
            "variant": config.variant,
            "preset": config.name,
            "aggregator": kind,
            "date": _dt.date.today().isoformat(),
            "device": str(device),
            "versions": _versions(),
            "metrics": metrics,
            "random_init": random_metrics,
            "bench": bench,
            "tables": tables,
            "gate": None if gate is None else {
                "name": gate.name, "passed": gate.passed, "reasons": list(gate.reasons),
            },
            "train": {"steps": fit_result.step, "epochs": fit_result.epoch,
                      "parameters": n_params},
            "seconds": seconds,
            "plots": plots,
            "config": config_to_dict(config),
        }  # fmt: skip
        tmp = out_dir / "metrics.json.tmp"
        tmp.write_text(json.dumps(record, indent=2, default=_json_default) + "\n", "utf-8")
        os.replace(tmp, out_dir / "metrics.json")

    titles = {
        "aggregator": "Aggregator alone, training step (fwd+bwd), "
        f"B={config.bench.token_batch}, memory: {_memory_label(bench['aggregator'])}",
        "model": f"Whole seq-JEPA training step, B={config.bench.model_batch} sequences of M "
        f"views + 1 target, memory: {_memory_label(bench['model'])}",
        "streaming": f"Streaming inference, per new view, B={config.bench.stream_batch}, "
        "memory per stream",
        "probes": f"Probes at M_val={m_val} (z_agg streamed), trained vs random-init",
        "lengths": "Linear probe on the streamed z_agg per M_val",
    }
    for name in ("aggregator", "model", "streaming", "probes", "lengths"):
        if name in tables:
            say(f"\n{titles[name]}\n{tables[name]}")
    if kind == "tost":
        say(
            f"\nmax |streamed − full-sequence z_agg|: {metrics['stream_max_abs_diff']:.1e} "
            f"(float32, all probe sequences), {metrics['stream_max_abs_diff_f64']:.1e} (float64 "
            "copy, first batch, every M_val)"
        )
    if gate is not None:
        say(f"\n{gate}")
    say(
        f"\ntrain {seconds['train']:.0f} s, eval {seconds['eval']:.0f} s, bench "
        f"{seconds['bench']:.0f} s, total {seconds['total']:.0f} s"
        + (f"; results in {out_dir}" if out_dir is not None else "")
    )
    return Step4Result(metrics, random_metrics, bench, tables, gate, out_dir, seconds)


def _memory_label(rows: Sequence[Mapping[str, Any]]) -> str:
    methods = {r["memory"] for r in rows}
    if methods == {"cuda-peak"}:
        return "CUDA peak allocated"
    if methods == {"saved-tensors"}:
        return "activations saved for backward"
    return "/".join(sorted(methods)) or "—"


# --------------------------------------------------------------------------- command line


def main(
    argv: Sequence[str] | None = None,
    *,
    config_dir: str | os.PathLike[str],
    description: str = "",
) -> int:
    """Command line of ``examples/step4_tost_streaming.py``.

    ``--preset NAME`` (default ``cpu-demo``), ``--variant`` (default ``baseline``), ``--smoke``,
    ``--out DIR``, ``--config FILE`` and ``key=value`` overrides (e.g. ``aggregator.readout=agg``,
    ``data.num_observed=64``, ``aggregator.kind=transformer``).

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
        config_dir: Directory of the preset YAML files (shared with steps 1–2).
        description: Help text.

    Returns:
        The exit status (0; the gate verdict is reported, not enforced).
    """
    presets = sorted(p.stem for p in Path(config_dir).glob("*.yaml"))
    parser = argparse.ArgumentParser(
        description=description or None, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="cpu-demo", help=f"one of {presets}")
    parser.add_argument("--variant", default="baseline", choices=list(VARIANTS),
                        help="target/regularizer variant of steps 1-2 (default baseline: EMA)")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="a complete run in seconds (CI)")
    parser.add_argument("--out", default=None, help="output directory (default runs/<name>)")
    parser.add_argument("--config", default=None, help="YAML file merged on top of the preset")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=3")
    args = parser.parse_intermixed_args(argv)
    try:
        config = load_step4_config(
            preset=args.preset, config_dir=config_dir, config_file=args.config,
            variant=args.variant, smoke=args.smoke, overrides=args.overrides,
        )  # fmt: skip
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    name = f"step4-{config.aggregator.kind}-{config.name}" + ("-smoke" if args.smoke else "")
    out = args.out or os.path.join("runs", name)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, out_dir=out))
    run_step4(config)
    sys.stdout.flush()
    return 0
