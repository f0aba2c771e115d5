r"""Benchmark of the streaming ToST aggregator against seq-JEPA's transformer aggregator.

Three measurements, each reported for ToST (:class:`jepa_blocks.seq.streaming_aggregator.
ToSTAggregator`, causal token-statistics attention) next to the paper's transformer
(:class:`jepa_blocks.seq.Aggregator`):

``bench_aggregators``  a training step (forward + backward) of the aggregator alone over ``N``
                       tokens: median time and activation memory;
``bench_model_steps``  a training step of whole seq-JEPA models over ``M`` views + 1 target, with
                       the aggregator's share of the memory (the models are built by the caller:
                       ``examples/step4_tost_streaming.py`` runs it on the models it trains);
``bench_streaming``    per new view of a stream at position ``t``: ToST commits the previous
                       token and reads :math:`z_\text{AGG}` with the new one pending, against
                       re-running the transformer over all ``t`` tokens; memory per stream: the
                       ToST state against the ``t`` tokens the transformer must keep; and the
                       largest difference between the streamed and the full-sequence read.

**Memory** (:func:`jepa_blocks.metrics.measure_peak_memory`): on CUDA the peak allocated memory
above the allocation before the call (``"cuda-peak"``); on the CPU the peak bytes of the tensors
autograd saves for the backward pass, parameters and buffers excluded (``"saved-tensors"``): the
activations a training step holds at its peak, transient buffers not counted. The aggregator's
share of a whole step is counted on the CPU only.

Usage (the aggregator and streaming measurements at the ``cpu-demo`` sizes of step 4: tokens of
width 160 = 128 + 32, 2 layers × 4 heads)::

    python benchmarks/bench_streaming_aggregator.py                     # ~1 min on 2 CPU cores
    python benchmarks/bench_streaming_aggregator.py --quick             # seconds
    python benchmarks/bench_streaming_aggregator.py --device cuda --tokens 1024 4096 16384
    python benchmarks/bench_streaming_aggregator.py --json out.json --markdown out.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from jepa_blocks.metrics import measure_peak_memory
from jepa_blocks.seq.streaming_aggregator import ToSTAggregator

__all__ = [
    "MIB",
    "bench_aggregators",
    "bench_model_steps",
    "bench_streaming",
    "format_aggregator_table",
    "format_model_table",
    "format_streaming_table",
    "main",
    "memory_label",
    "step_memory",
    "time_call",
]

MIB = 2.0**20


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


def step_memory(
    forward: Callable[[], Any],
    *,
    module: nn.Module,
    device: Any = "cpu",
    scope: nn.Module | None = None,
) -> tuple[int, int | None, str]:
    """Activation memory of a training forward pass (it returns the loss, keeping the graph).

    The backward pass runs after the reading: it frees the graph (a graph saved under the
    meter's hooks and dropped without backward would keep the outputs its operations saved).

    Args:
        forward: Runs the forward pass and returns the loss.
        module: Its parameters and buffers are not activations.
        device: Where ``forward`` runs.
        scope: A submodule whose share is counted apart (CPU only).

    Returns:
        ``(bytes, scoped_bytes, method)``: the CUDA peak above the pre-call allocation
        (``"cuda-peak"``, ``scoped_bytes`` ``None``) or the peak saved-tensor bytes
        (``"saved-tensors"``; ``scoped_bytes`` ``None`` without ``scope``).
    """
    peak = measure_peak_memory(
        forward, exclude=[*module.parameters(), *module.buffers()], device=device, scope=scope
    )
    if isinstance(peak.result, Tensor) and peak.result.requires_grad:
        peak.result.backward()
    if peak.cuda_bytes is not None:
        return peak.cuda_bytes, None, "cuda-peak"
    return peak.saved_bytes, peak.scoped_bytes, "saved-tensors"


def bench_aggregators(
    aggregators: Mapping[str, nn.Module],
    *,
    width: int,
    lengths: Sequence[int],
    batch: int,
    repeats: int = 3,
    device: Any = "cpu",
) -> list[dict[str, Any]]:
    """Training step (forward + backward) of each aggregator alone over ``N`` tokens.

    Tokens are drawn from the global torch RNG, the same tokens for every aggregator.

    Args:
        aggregators: ``{kind: aggregator}`` (e.g. ``{"tost": ..., "transformer": ...}``), each
            ``(B, N, width) → (B, width)``; put in train mode here.
        width: Token width.
        lengths: Token counts ``N``.
        batch: Sequences per step.
        repeats: Timed repetitions (median) after one warm-up call.
        device: Where the aggregators are.

    Returns:
        One row per ``(N, kind)``: ``{"n", "kind", "ms", "mib", "memory"}``.
    """
    dev = torch.device(device)
    rows = []
    for n in lengths:
        tokens = torch.randn(batch, n, width, device=dev, requires_grad=True)
        for kind, agg in aggregators.items():
            agg.train()

            def forward(agg: nn.Module = agg, tokens: Tensor = tokens) -> Tensor:
                return agg(tokens).square().mean()

            def step(forward: Callable[[], Tensor] = forward) -> None:
                forward().backward()

            seconds = time_call(step, repeats=repeats, device=dev)
            nbytes, _, method = step_memory(forward, module=agg, device=dev)
            rows.append(
                {"n": n, "kind": kind, "ms": 1e3 * seconds, "mib": nbytes / MIB, "memory": method}
            )
    return rows


def bench_model_steps(
    models: Mapping[str, nn.Module],
    *,
    in_channels: int,
    image_size: tuple[int, int],
    action_dim: int,
    lengths: Sequence[int],
    batch: int,
    repeats: int = 3,
    device: Any = "cpu",
) -> list[dict[str, Any]]:
    """Whole seq-JEPA training step (forward + backward) over ``M`` views, per model.

    Random views and actions from the global torch RNG (the cost does not depend on the content).

    Args:
        models: ``{kind: SeqJEPA}`` (each with an ``aggregator``); put in train mode here.
        in_channels: Image channels.
        image_size: ``(H, W)``.
        action_dim: ``A``.
        lengths: Observed views ``M``.
        batch: Sequences per step (``≥ 2`` with a BatchNorm predictor).
        repeats: Timed repetitions (median) after one warm-up call.
        device: Where the models are.

    Returns:
        One row per ``(kind, M)``: ``{"m", "kind", "ms", "mib", "agg_mib", "memory"}``
        (``agg_mib`` is the aggregator's share, CPU only, else ``None``).
    """
    dev = torch.device(device)
    rows = []
    h, w = image_size
    for kind, model in models.items():
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
            nbytes, agg_bytes, method = step_memory(forward, module=model, device=dev, scope=agg)
            rows.append(
                {
                    "m": m,
                    "kind": kind,
                    "ms": 1e3 * seconds,
                    "mib": nbytes / MIB,
                    "agg_mib": None if agg_bytes is None else agg_bytes / MIB,
                    "memory": method,
                }
            )
    return rows


def bench_streaming(
    tost: ToSTAggregator,
    transformer: nn.Module,
    *,
    lengths: Sequence[int],
    batch: int = 1,
    repeats: int = 3,
    device: Any = "cpu",
) -> list[dict[str, Any]]:
    """Per-view cost of streaming inference at stream position ``t``: ToST vs transformer.

    ToST: commit the previous view's token and read :math:`z_\\text{AGG}` with the new view's
    token pending (what :class:`~jepa_blocks.seq.streaming_aggregator.AggregateStream` does per
    view), from the state after ``t − 2`` tokens; memory: the state (plus the pending token), per
    stream. Transformer (bidirectional; a new view changes every token): re-run the aggregator
    over all ``t`` tokens; memory: the ``t`` tokens it must keep (its minimum), per stream.
    Also checks that the streamed read equals the ToST full-sequence forward. Tokens are drawn
    from the global torch RNG.

    Args:
        tost: The ToST aggregator (put in eval mode).
        transformer: The aggregator it replaces, same width (put in eval mode).
        lengths: Stream positions ``t ≥ 2``.
        batch: Parallel streams.
        repeats: Timed repetitions (median) after one warm-up call.
        device: Where the aggregators are.

    Returns:
        One row per ``t``: ``{"t", "tost_ms", "transformer_ms", "tost_state_kib",
        "transformer_context_kib", "max_abs_diff"}``.
    """
    dev = torch.device(device)
    tost.eval()
    transformer.eval()
    width = tost.dim
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
                return transformer(tokens)

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


def memory_label(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the ``mib`` of measurement rows mean, for a table title."""
    methods = {r["memory"] for r in rows}
    if methods == {"cuda-peak"}:
        return "CUDA peak allocated"
    if methods == {"saved-tensors"}:
        return "activations saved for backward"
    return "/".join(sorted(methods)) or "—"


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


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure the aggregators alone and streaming inference; print (and write) the tables."""
    from jepa_blocks.runtime import environment, num_threads, write_json
    from jepa_blocks.seq import Aggregator, transformer_blocks
    from jepa_blocks.seq.streaming_aggregator import READOUTS

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    p.add_argument("--width", type=int, default=160, help="token width D+E (cpu-demo: 160)")
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp-ratio", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.1, help="the transformer's dropout")
    p.add_argument("--readout", default="mean", choices=READOUTS, help="ToST read-out")
    p.add_argument("--tokens", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--token-batch", type=int, default=1)
    p.add_argument("--stream", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    p.add_argument("--stream-batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="N 32, 128; t 16, 128; one repeat")
    p.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    args = p.parse_args(argv)
    if args.quick:
        args.tokens, args.stream, args.repeats = [32, 128], [16, 128], 1
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    with num_threads(args.threads):
        torch.manual_seed(args.seed)
        tost = ToSTAggregator(
            dim=args.width, depth=args.depth, heads=args.heads, mlp_ratio=float(args.mlp_ratio),
            readout=args.readout,
        ).to(device)  # fmt: skip
        blocks = transformer_blocks(
            dim=args.width, depth=args.depth, heads=args.heads, mlp_ratio=args.mlp_ratio,
            dropout=args.dropout,
        )  # fmt: skip
        transformer = Aggregator(dim=args.width, blocks=blocks).to(device)
        aggregators: dict[str, nn.Module] = {"tost": tost, "transformer": transformer}
        agg_rows = bench_aggregators(
            aggregators, width=args.width, lengths=args.tokens, batch=args.token_batch,
            repeats=args.repeats, device=device,
        )  # fmt: skip
        stream_rows = bench_streaming(
            tost, transformer, lengths=args.stream,
            batch=args.stream_batch, repeats=args.repeats, device=device,
        )  # fmt: skip
    text = (
        f"Aggregator alone, training step (fwd+bwd), B={args.token_batch}, memory: "
        f"{memory_label(agg_rows)}\n{format_aggregator_table(agg_rows)}\n\n"
        f"Streaming inference, per new view, B={args.stream_batch}, memory per stream\n"
        f"{format_streaming_table(stream_rows)}\n"
    )
    print(text, end="")
    result = {
        "benchmark": "bench_streaming_aggregator",
        "device": str(device),
        "versions": environment(),
        "threads": args.threads,
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "markdown")},
        "aggregator": agg_rows,
        "streaming": stream_rows,
    }
    if args.json is not None:
        write_json(args.json, result)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text, encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
