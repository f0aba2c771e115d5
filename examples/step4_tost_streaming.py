"""Step 4: seq-JEPA with a streaming ToST aggregator on long sequences (Wu et al., ICLR 2025).

The transformer aggregator of seq-JEPA (Ghaemi et al., 2025, arXiv:2505.03176) is replaced by
causal token-statistics attention (ToST, arXiv:2412.17810): trained on whole sequences like the
paper's aggregator, it then aggregates a stream of views one view at a time with a state of
constant size. The script trains it on sequences of M_tr views with jepa_blocks.train.fit,
probes z_agg computed by streaming (the table of steps 1-2 at M_val = M_tr, trained vs
random-init, and the linear accuracy per M_val in probe_lengths), and measures compute and
memory against the transformer aggregator (benchmarks/bench_streaming_aggregator.py): the
aggregator alone over N tokens, the whole seq-JEPA training step over M views, and per-view
streaming latency and state size. Sections on top of the preset (configs/steps/step4.yaml):
aggregator.* (kind, readout, decay, max_len, ...), bench.* and probe_lengths.

examples:
    python examples/step4_tost_streaming.py                       # cpu-demo, M_tr 16 (~5 min)
    python examples/step4_tost_streaming.py --smoke               # a complete run in seconds
    python examples/step4_tost_streaming.py data.num_observed=64  # train on 64-view sequences
    python examples/step4_tost_streaming.py aggregator.readout=agg aggregator.decay=0.99
    python examples/step4_tost_streaming.py aggregator.kind=transformer --out runs/step4-tr
    python examples/step4_tost_streaming.py --print-config        # the resolved config, as YAML

outputs (in --out, default runs/step4-<variant>-<preset>):
    metrics.json   metrics (with linacc_by_length and the streamed-vs-full differences),
                   random-init metrics, bench rows, gate verdict, resolved config, versions
    table.md       the printed tables
    *.png          scaling.png (aggregator time and memory), linacc_vs_length.png
    checkpoint.pt  the last checkpoint (a rerun resumes from it; train.resume=false to restart)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common import (
    check_gate,
    format_probe_table,
    gate_line,
    gate_metrics,
    parse_cli,
    variant_names,
    write_outputs,
)
from jepa_blocks.metrics import (
    evaluate,
    extract_stream_features,
    linacc_by_length,
    rank_monitor,
)
from jepa_blocks.runtime import num_threads
from jepa_blocks.train import fit, seed_everything
from jepa_blocks.train.config import config_to_dict
from jepa_blocks.train.loop import resolve_device, schedule_steps
from parts import build_data, make_loader
from step4_parts import (
    Step4Config,
    build_step4_model,
    format_length_table,
    run_benchmarks,
    write_plots,
)

__all__ = ["main", "run"]


def run(config: Step4Config, *, verbose: bool = True) -> dict[str, Any]:
    """Train, probe and measure; write the outputs; return the metrics.json record."""
    if not isinstance(config, Step4Config):
        raise TypeError(f"config must be a Step4Config, got {type(config).__name__}")
    with num_threads(config.threads):
        return _run(config, say=print if verbose else (lambda *a, **k: None))


def _run(config: Step4Config, *, say: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    device = resolve_device(config.train.device)
    out_dir = Path(config.train.out_dir) if config.train.out_dir is not None else None
    kind = config.aggregator.kind

    # Data: training sequences of M_tr views; probe sequences long enough for every M_val.
    data = build_data(config.data)
    m_tr = config.data.num_observed
    m_val = config.eval.num_observed or m_tr
    lengths = tuple(sorted({*config.probe_lengths, m_val}))
    seed_everything(config.train.seed)
    loader = make_loader(
        data.train, data.views, num_observed=m_tr, batch_size=config.data.batch_size,
        seed=config.train.seed, device=device, shuffle=True,
        drop_last=len(data.train) > config.data.batch_size,
    )  # fmt: skip
    total_steps, _ = schedule_steps(loader, config.train)

    # Model: the seq-JEPA of steps 1-2 with the ToST aggregator (or the transformer baseline).
    in_channels = int(data.train.images.shape[1])
    action_dim = int(data.views.action_dim)
    model: nn.Module = build_step4_model(
        config.model, config.aggregator, in_channels=in_channels, action_dim=action_dim,
        total_steps=max(1, total_steps), steps_per_epoch=len(loader),
    ).to(device)  # fmt: skip
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(
        f"[{config.step}/{config.variant}] preset {config.name}: {config.data.dataset} "
        f"{len(data.train)}/{len(data.test)} images, M_tr={m_tr}, probes at M_val={list(lengths)}, "
        f"aggregator={kind}"
        + (f" (readout={config.aggregator.readout})" if kind == "tost" else "")
        + f", {n_params / 1e6:.2f} M parameters, {total_steps} steps on {device}"
    )

    def eval_loader(source: Any, *, num_observed: int, batch_size: int, seed: int) -> Any:
        return make_loader(
            source, data.views, num_observed=num_observed, batch_size=batch_size, seed=seed,
            device=device, shuffle=False, drop_last=False,
        )  # fmt: skip

    probe_train, probe_test = (
        eval_loader(source, num_observed=lengths[-1], batch_size=config.eval.batch_size, seed=s)
        for source, s in ((data.train, config.eval.seed), (data.test, config.eval.seed + 1))
    )
    monitor_images = data.test.subset(torch.arange(min(config.eval.monitor_size, len(data.test))))
    monitor = rank_monitor(
        next(iter(eval_loader(monitor_images, num_observed=m_tr,
                              batch_size=config.eval.monitor_size, seed=7)))
    )  # fmt: skip
    passes = config.eval.train_sequences_per_image

    # The same network at initialisation, probed on streamed z_agg like the trained one.
    t_eval = 0.0
    random_metrics: dict[str, Any] | None = None
    random_lengths: dict[int, float] | None = None
    if config.eval.baseline:
        t1 = time.perf_counter()
        say("evaluating the random-init network ...")
        r_test = extract_stream_features(model, probe_test, lengths)
        r_train = extract_stream_features(model, probe_train, lengths, passes=passes)
        random_metrics = evaluate(r_train.at(m_val), r_test.at(m_val), config.eval)
        random_lengths = linacc_by_length(r_train, r_test, config.eval)
        random_metrics["linacc_by_length"] = {str(k): v for k, v in random_lengths.items()}
        t_eval += time.perf_counter() - t1

    # Train: the library's one loop (its default optimizer honours ToST's no_weight_decay()).
    t1 = time.perf_counter()
    result = fit(model, loader, config.train, eval_fn=monitor, full_config=config_to_dict(config))
    t_train = time.perf_counter() - t1
    model = result.model

    # Probe the trained network on z_agg streamed one view at a time; check it against the
    # full-sequence forward (float32 on every sequence, float64 on a copy of the model).
    t1 = time.perf_counter()
    say("evaluating the trained network (streamed z_agg) ...")
    f_test = extract_stream_features(model, probe_test, lengths)
    f_train = extract_stream_features(model, probe_train, lengths, passes=passes)
    metrics = evaluate(f_train.at(m_val), f_test.at(m_val), config.eval)
    by_length = linacc_by_length(f_train, f_test, config.eval)
    metrics["stream_max_abs_diff"] = max(f_test.max_abs_diff, f_train.max_abs_diff)
    metrics["stream_max_abs_diff_f64"] = max(f_test.max_abs_diff_f64, f_train.max_abs_diff_f64)
    metrics["linacc_by_length"] = {str(k): v for k, v in by_length.items()}
    t_eval += time.perf_counter() - t1

    # Measure: compute and memory against the transformer aggregator.
    bench: dict[str, list[dict[str, Any]]] = {"aggregator": [], "model": [], "streaming": []}
    bench_tables: list[tuple[str, str]] = []
    t_bench = 0.0
    if config.bench.enabled:
        t1 = time.perf_counter()
        say("measuring compute and memory against the transformer aggregator ...")
        bench, bench_tables = run_benchmarks(
            config, in_channels=in_channels, image_size=tuple(data.train.image_size),
            action_dim=action_dim, device=device,
        )  # fmt: skip
        t_bench = time.perf_counter() - t1

    # Report: tables, gate, metrics.json, plots.
    tables = [
        *bench_tables,
        (
            f"Probes at M_val={m_val} (z_agg streamed), trained vs random-init",
            format_probe_table(metrics, random_metrics),
        ),
        (
            "Linear probe on the streamed z_agg per M_val",
            format_length_table(by_length, random_lengths, m_tr),
        ),
    ]
    table = "\n\n".join(f"{title}\n{body}" for title, body in tables)
    gate = check_gate(config, gate_metrics(metrics, random_metrics))
    plots: list[str] = []
    if out_dir is not None and config.eval.plots:
        out_dir.mkdir(parents=True, exist_ok=True)
        plots = write_plots(out_dir, bench["aggregator"], by_length, m_tr)
    seconds = {
        "train": t_train,
        "eval": t_eval,
        "bench": t_bench,
        "total": time.perf_counter() - t0,
    }
    record: dict[str, Any] = {
        "metrics": metrics,
        "random_init": random_metrics,
        "aggregator": kind,
        "bench": bench,
        "train": {"steps": result.step, "epochs": result.epoch, "parameters": n_params},
    }
    write_outputs(
        out_dir, config=config, device=device, table=table, gate=gate, seconds=seconds,
        plots=plots, **record,
    )  # fmt: skip
    say("")
    say(table)
    if kind == "tost":
        say(
            f"\nmax |streamed − full-sequence z_agg|: {metrics['stream_max_abs_diff']:.1e} "
            f"(float32, all probe sequences), {metrics['stream_max_abs_diff_f64']:.1e} (float64 "
            "copy, first batch, every M_val)"
        )
    if gate is not None:
        say("")
        say(gate_line(gate))
    say(
        f"\ntrain {t_train:.0f} s, eval {t_eval:.0f} s, bench {t_bench:.0f} s, total "
        f"{seconds['total']:.0f} s" + (f"; results in {out_dir}" if out_dir is not None else "")
    )
    return {**record, "gate": gate, "table": table, "seconds": seconds, "fit": result}


def main(argv: Sequence[str] | None = None) -> int:
    config, _ = parse_cli(
        Step4Config,
        argv,
        step="step4",
        description=__doc__,
        variants=variant_names(),
        default_variant="baseline",
    )
    run(config)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
