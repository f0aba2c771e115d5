"""Step 5: streaming continual self-supervised learning — protocols, replay, forgetting.

Trains seq-JEPA in a single pass over MNIST-5k view sequences under two protocols — A, a
stationary i.i.d. stream, and B, class-incremental splits (Split-MNIST) — with no buffer and with
FIFO, reservoir and MinRed replay buffers at two memory budgets (Purushwalkam, Morgado & Gupta,
2022), optionally with EWC / SI instead of a buffer. Every run is jepa_blocks.streaming's
train_stream, i.e. jepa_blocks.train.fit over the stream with the replay, regulariser and
checkpoint callbacks. Probes the network at 25/50/75/100 % of the stream and at every split end,
and prints the replay ablation table: final linear-probe accuracy on z_1 and z_agg, equivariance
R², and for B the forgetting, backward and forward transfer (Lopez-Paz & Ranzato, 2017) from the
accuracy matrix over splits.

The preset is configs/step5/cpu-demo.yaml (--preset takes another YAML path); the experiment's
keys (protocols, buffers, buffer_sizes, mitigations, num_splits, blur, stream.*) are overridden
like any other.

examples:
    python examples/step5_streaming_continual.py                  # cpu-demo (~10 min, 2 cores)
    python examples/step5_streaming_continual.py --smoke          # a complete run in ~10 s
    python examples/step5_streaming_continual.py protocols=[B] stream.repeats=2
    python examples/step5_streaming_continual.py "mitigations=[ewc, si]" buffers=[none]
    python examples/step5_streaming_continual.py --print-config   # the resolved config, as YAML

outputs (in --out, default runs/step5-<preset>):
    metrics.json   metrics (the first run's final probes: protocol A without a buffer by
                   default), runs (every protocol × method: probes at each checkpoint, accuracy
                   matrices, forgetting, BWT, FWT), random_init, plans, splits, gate, config
    table.md       the ablation table
    *.png          linear probe over the stream, accuracy on the first split, per-split curves
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from common import CONFIG_DIR, check_gate, gate_line, gate_metrics, parse_cli, write_outputs
from jepa_blocks.runtime import num_threads
from jepa_blocks.streaming import (
    EWC,
    SI,
    ImageSequenceMaker,
    SequenceStream,
    WeightRegularizer,
    build_buffer,
    even_class_splits,
    train_stream,
)
from jepa_blocks.train import seed_everything
from jepa_blocks.train.loop import resolve_device
from parts import build_data, build_model
from step5_protocols import (
    Step5Config,
    ablation_methods,
    build_evaluator,
    build_plans,
    format_ablation_table,
    summarize_run,
    write_plots,
)

__all__ = ["PRESET", "main", "run"]

#: The default preset of step 5 (its data, model and stream differ from the other steps').
PRESET = CONFIG_DIR / "step5" / "cpu-demo.yaml"


def run(config: Step5Config, *, verbose: bool = True) -> dict[str, Any]:
    """Run every protocol × method of ``config``; write the outputs; return the record."""
    with num_threads(config.threads):
        return _run(config, say=print if verbose else (lambda *a, **k: None))


def _run(config: Step5Config, *, say: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    device = resolve_device(config.train.device)
    out_dir = Path(config.train.out_dir) if config.train.out_dir is not None else None
    seed = config.train.seed

    # Data: the training images are the stream; the probes use fixed sequences of their own.
    data = build_data(config.data)
    n_classes = int(data.train.labels.max()) + 1
    splits = even_class_splits(n_classes, config.num_splits)
    evaluator = build_evaluator(data, splits, config, device=device)
    maker = ImageSequenceMaker(
        data.train, data.views, num_observed=config.data.num_observed, device=device
    )
    plans = build_plans(data.train.labels, splits, config)

    def new_model(total_steps: int) -> torch.nn.Module:
        """The same initial network for every run (seeded), its EMA over ``total_steps``."""
        seed_everything(seed)
        return build_model(
            config.model,
            in_channels=int(data.train.images.shape[1]),
            action_dim=int(data.views.action_dim),
            total_steps=max(1, total_steps),
            steps_per_epoch=max(1, total_steps),
        ).to(device)

    s = config.stream
    say(
        f"[{config.step}] preset {config.name}: {config.data.dataset} {len(data.train)} stream "
        f"images, {len(data.test)} test images, {config.data.views} views, "
        f"M={config.data.num_observed}, fresh batch {config.data.batch_size}, K={s.repeats}, "
        f"replay ratio {s.replay_ratio}, store={s.store}, threads {torch.get_num_threads()}, "
        f"device {device}"
    )

    # The random-init network: the baseline of forward transfer and of every curve.
    t1 = time.perf_counter()
    random_init = evaluator(new_model(1))
    random_init["seconds"] = time.perf_counter() - t1
    say(
        f"random-init network: linacc {100 * random_init['linacc']:.1f} %, R² "
        f"{random_init['r2']:.3f} ({random_init['seconds']:.0f} s)"
    )

    # The runs: every method of the ablation on the ablated protocols, no buffer on the others.
    methods = ablation_methods(config)
    train = dataclasses.replace(config.train, out_dir=None, device=str(device))
    runs: list[dict[str, Any]] = []
    for protocol, plan in plans.items():
        is_split = protocol == "B" and plan.num_splits > 1
        stream = SequenceStream(
            plan, maker, batch_size=config.data.batch_size, seed=seed,
            align_to_boundaries=is_split,
        )  # fmt: skip
        fractions = tuple(s.checkpoints)
        if is_split:  # the split ends give the accuracy matrix
            fractions = tuple(sorted({*fractions, *plan.boundary_fractions}))
        stream_config = dataclasses.replace(s, checkpoints=fractions)
        for method in methods if protocol in config.ablate else [("none", None, None)]:
            kind, size, mitigation = method
            label = kind if size is None else f"{kind}-{size}"
            model = new_model(len(stream) * s.repeats)
            buffer = (
                None
                if size is None
                else build_buffer(kind, size, seed=seed, max_uses=config.minred_max_uses)
            )
            regularizer: WeightRegularizer | None = None
            if mitigation == "ewc":
                regularizer = EWC(model.encoder, weight=config.ewc_weight)  # type: ignore[arg-type]
            elif mitigation == "si":
                regularizer = SI(model.encoder, weight=config.si_weight)  # type: ignore[arg-type]
            say(f"\n[{protocol} / {label}] {len(stream)} batches, {len(fractions)} checkpoints")
            result = train_stream(
                model,
                stream,
                train=train,
                stream_config=stream_config,
                buffer=buffer,
                regularizer=regularizer,
                eval_fn=evaluator,
                log=lambda line: say("  " + line),
            )
            row = summarize_run(
                result,
                protocol=protocol,
                method=method,
                plan=plan,
                random_init=random_init,
                representations=config.probe_on,
            )
            runs.append(row)
            say(format_ablation_table([row]))

    # Report: the ablation table, the gate on the first run's probes, metrics.json, plots.
    table = format_ablation_table(runs)
    first = runs[0]
    metrics = {k: v for k, v in first.items() if isinstance(v, float) and "seconds" not in k}
    headline = f"{first['protocol']}/{first['label']}"
    gate = check_gate(config, gate_metrics(metrics, random_init))
    plots: list[str] = []
    if out_dir is not None and config.eval.plots:
        out_dir.mkdir(parents=True, exist_ok=True)
        plots = write_plots(
            out_dir, runs, plans, evaluator.task_names, random_init, config.probe_on
        )
    t_train = sum(r["train_seconds"] for r in runs)
    t_eval = sum(r["eval_seconds"] for r in runs) + random_init["seconds"]
    seconds = {"train": t_train, "eval": t_eval, "total": time.perf_counter() - t0}
    record: dict[str, Any] = {
        "metrics": metrics,
        "headline": headline,
        "random_init": random_init,
        "runs": runs,
        "plans": {k: repr(p) for k, p in plans.items()},
        "splits": [list(g) for g in splits],
    }
    write_outputs(
        out_dir, config=config, device=device, table=table, gate=gate, seconds=seconds,
        plots=plots, **record,
    )  # fmt: skip
    say(
        "\nReplay ablation (linacc: % on the test set, joint linear probe; forgetting, BWT, "
        "FWT: points, from the split-end accuracy matrix; R²: equivariance, linear)\n"
    )
    say(table)
    if gate is not None:
        say("")
        say(gate_line(gate) + f"  [on {headline}]")
    say(
        f"\ntotal {seconds['total']:.0f} s"
        + (f"; results in {out_dir}" if out_dir is not None else "")
    )
    return {**record, "gate": gate, "table": table, "seconds": seconds}


def main(argv: Sequence[str] | None = None) -> int:
    config, _ = parse_cli(
        Step5Config,
        argv,
        step="step5",
        description=__doc__,
        default_preset=PRESET.stem,
        preset_dir=PRESET.parent,
    )
    run(config)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
