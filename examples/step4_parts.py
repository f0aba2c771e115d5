"""The parts of step 4 (``step4_tost_streaming.py``): its config, the ToST model, its report.

* :class:`Step4Config`: the recipe config plus ``aggregator:`` (:class:`AggregatorConfig`),
  ``bench:`` (:class:`BenchConfig`) and ``probe_lengths``.
* :func:`build_aggregator` / :func:`build_step4_model`: the seq-JEPA of ``parts.build_model``
  with its transformer aggregator replaced by the streaming
  :class:`~jepa_blocks.seq.streaming_aggregator.ToSTAggregator`.
* :func:`run_benchmarks`: compute and memory against the transformer aggregator, through the
  measurement functions of ``benchmarks/bench_streaming_aggregator.py``, with their tables.
* :func:`format_length_table` and :func:`write_plots`: the per-length probe table and figures.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from common import RecipeConfig, markdown_table
from jepa_blocks import SeqJEPA
from jepa_blocks.runtime import num_threads
from jepa_blocks.seq.streaming_aggregator import ToSTAggregator
from parts import ModelConfig, build_model

# The measurements are a benchmark (benchmarks/bench_streaming_aggregator.py, which also runs on
# its own); the recipe runs them on the models it trains.
_BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(_BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(_BENCHMARKS))

from bench_streaming_aggregator import (  # noqa: E402
    bench_aggregators,
    bench_model_steps,
    bench_streaming,
    format_aggregator_table,
    format_model_table,
    format_streaming_table,
    memory_label,
)

__all__ = [
    "KINDS",
    "AggregatorConfig",
    "BenchConfig",
    "Step4Config",
    "build_aggregator",
    "build_step4_model",
    "format_length_table",
    "run_benchmarks",
    "write_plots",
]


# --------------------------------------------------------------------------- config

AggregatorKind = Literal["tost", "transformer"]
#: The aggregators step 4 compares.
KINDS: tuple[AggregatorKind, ...] = ("tost", "transformer")


def _check_lengths(values: Sequence[int], name: str) -> None:
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be a non-empty list of ints >= 1, got {values!r}")


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

    kind: AggregatorKind = "tost"
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

    def __post_init__(self) -> None:
        _check_lengths(self.token_lengths, "bench.token_lengths")
        _check_lengths(self.model_lengths, "bench.model_lengths")
        _check_lengths(self.stream_lengths, "bench.stream_lengths")
        for name in ("token_batch", "model_batch", "stream_batch", "repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"bench.{name} must be an int >= 1, got {value!r}")
        if self.model_batch < 2:
            raise ValueError(
                f"bench.model_batch must be >= 2 (the predictor's BatchNorm needs a batch), got "
                f"{self.model_batch}"
            )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"bench.threads must be >= 1 or None, got {self.threads}")


@dataclasses.dataclass
class Step4Config(RecipeConfig):
    """The recipe config plus the step-4 sections.

    Attributes:
        aggregator: :class:`AggregatorConfig`.
        bench: :class:`BenchConfig`.
        probe_lengths: ``M_val`` values of the per-length linear probes on the streamed
            ``z_agg`` (one streaming pass gives all of them).
    """

    step: str = "step4"
    variant: str = "baseline"
    aggregator: AggregatorConfig = dataclasses.field(default_factory=AggregatorConfig)
    bench: BenchConfig = dataclasses.field(default_factory=BenchConfig)
    probe_lengths: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 4, 8, 16, 32])

    def __post_init__(self) -> None:
        _check_lengths(self.probe_lengths, "probe_lengths")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")


# --------------------------------------------------------------------------- model


def build_aggregator(model: ModelConfig, aggregator: AggregatorConfig) -> nn.Module:
    """The aggregator of ``aggregator.kind`` with the depth, heads and widths of ``model``.

    Args:
        model: The model config (``encoder_dim + action_embed_dim`` tokens, ``depth``,
            ``heads``, ``mlp_ratio``; ``dropout`` for the transformer).
        aggregator: The aggregator config.

    Returns:
        A :class:`~jepa_blocks.seq.streaming_aggregator.ToSTAggregator` or the paper's
        :class:`~jepa_blocks.seq.Aggregator`, ``(B, M, D+E) → (B, D+E)``.
    """
    from jepa_blocks.seq import Aggregator, transformer_blocks

    if not isinstance(model, ModelConfig):
        raise TypeError(f"model must be a ModelConfig, got {type(model).__name__}")
    if not isinstance(aggregator, AggregatorConfig):
        raise TypeError(f"aggregator must be an AggregatorConfig, got {type(aggregator).__name__}")
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
    if aggregator.kind != "tost":
        raise ValueError(
            f"aggregator.kind must be 'tost' or 'transformer', got {aggregator.kind!r}"
        )
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
    model: ModelConfig,
    aggregator: AggregatorConfig,
    *,
    in_channels: int,
    action_dim: int,
    total_steps: int,
    steps_per_epoch: int,
) -> SeqJEPA:
    """``parts.build_model`` with the aggregator of ``aggregator``.

    The shared builder assembles the seq-JEPA of ``model`` (encoder, target, action encoder,
    predictor, regularizer); its transformer aggregator is then replaced by
    :func:`build_aggregator`, so the random initialisation of the other parts is the same as in
    steps 1–2.

    Args:
        model: The model config.
        aggregator: The aggregator config.
        in_channels: Image channels.
        action_dim: ``A``.
        total_steps: Optimizer steps of the run (EMA schedule).
        steps_per_epoch: Optimizer steps per epoch.

    Returns:
        The :class:`~jepa_blocks.SeqJEPA`.
    """
    net = build_model(
        model,
        in_channels=in_channels,
        action_dim=action_dim,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
    )
    if aggregator.kind != "transformer":
        net.aggregator = build_aggregator(model, aggregator)
    return net


# --------------------------------------------------------------------------- measurements


def run_benchmarks(
    config: Step4Config,
    *,
    in_channels: int,
    image_size: tuple[int, int],
    action_dim: int,
    device: torch.device,
) -> tuple[dict[str, list[dict[str, Any]]], list[tuple[str, str]]]:
    """ToST against the transformer aggregator at the sizes of ``config``.

    The aggregator alone over ``bench.token_lengths`` tokens, the whole seq-JEPA step (fresh
    models, seed ``train.seed``) over ``bench.model_lengths`` views, and streaming inference at
    ``bench.stream_lengths`` (see ``benchmarks/bench_streaming_aggregator.py``), on
    ``bench.threads`` threads.

    Args:
        config: The step-4 config (model widths and ToST settings, ``bench``).
        in_channels: Image channels.
        image_size: ``(H, W)``.
        action_dim: ``A``.
        device: Where to run.

    Returns:
        ``({"aggregator", "model", "streaming"}: rows, [(title, table), ...])``.
    """
    b, model_cfg = config.bench, config.model
    width = model_cfg.encoder_dim + model_cfg.action_embed_dim

    def pair(seed: int) -> dict[str, nn.Module]:
        torch.manual_seed(seed)  # the ToST weights first, then the transformer's
        configs = {kind: dataclasses.replace(config.aggregator, kind=kind) for kind in KINDS}
        return {kind: build_aggregator(model_cfg, c).to(device) for kind, c in configs.items()}

    def model(kind: AggregatorKind) -> nn.Module:
        torch.manual_seed(config.train.seed)
        agg = dataclasses.replace(config.aggregator, kind=kind)
        return build_step4_model(
            model_cfg, agg, in_channels=in_channels, action_dim=action_dim, total_steps=100,
            steps_per_epoch=10,
        ).to(device)  # fmt: skip

    with num_threads(b.threads):
        rows: dict[str, list[dict[str, Any]]] = {}
        rows["aggregator"] = bench_aggregators(
            pair(0), width=width, lengths=b.token_lengths, batch=b.token_batch,
            repeats=b.repeats, device=device,
        )  # fmt: skip
        rows["model"] = bench_model_steps(
            {kind: model(kind) for kind in KINDS}, in_channels=in_channels,
            image_size=image_size, action_dim=action_dim, lengths=b.model_lengths,
            batch=b.model_batch, repeats=b.repeats, device=device,
        )  # fmt: skip
        aggs = pair(0)
        tost = aggs["tost"]
        assert isinstance(tost, ToSTAggregator)
        rows["streaming"] = bench_streaming(
            tost, aggs["transformer"], lengths=b.stream_lengths, batch=b.stream_batch,
            repeats=b.repeats, device=device,
        )  # fmt: skip
    tables = [
        (
            f"Aggregator alone, training step (fwd+bwd), B={b.token_batch}, memory: "
            f"{memory_label(rows['aggregator'])}",
            format_aggregator_table(rows["aggregator"]),
        ),
        (
            f"Whole seq-JEPA training step, B={b.model_batch} sequences of M views + 1 target, "
            f"memory: {memory_label(rows['model'])}",
            format_model_table(rows["model"]),
        ),
        (
            f"Streaming inference, per new view, B={b.stream_batch}, memory per stream",
            format_streaming_table(rows["streaming"]),
        ),
    ]
    return rows, tables


# --------------------------------------------------------------------------- report


def format_length_table(
    trained: Mapping[int, float], random_init: Mapping[int, float] | None, m_train: int
) -> str:
    """Markdown table of the linear accuracy of the streamed ``z_agg`` per ``M_val``."""
    rows = []
    for m, acc in trained.items():
        base = (
            "—" if random_init is None or m not in random_init else f"{100 * random_init[m]:.1f} %"
        )
        label = f"{m} (= M_tr)" if m == m_train else str(m)
        rows.append((label, f"{100 * acc:.1f} %", base))
    return markdown_table(("M_val", "linacc(z_agg) trained", "random-init"), rows)


def write_plots(
    out_dir: Path,
    agg_rows: Sequence[Mapping[str, Any]],
    lengths: Mapping[int, float],
    m_train: int,
) -> list[str]:
    """``scaling.png`` (the aggregator measurements) and ``linacc_vs_length.png``; their names."""
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
        ax.set(
            xlabel="M_val (views aggregated, streamed)",
            ylabel="linacc(z_agg) %",
            title="Probe accuracy vs sequence length",
        )
        fig.tight_layout()
        fig.savefig(out_dir / "linacc_vs_length.png", dpi=120)
        written.append("linacc_vs_length.png")
    return written
