"""Step 6: local learning. End-to-end training vs the three local stages on the same data.

    end-to-end   the seq-JEPA objective backpropagated through everything (the reference)
    stage1       LPL-style local losses on each of the four encoder blocks beside the
                 end-to-end objective
    stage2       stage 1's encoder frozen, aggregator and predictor trained by local updates
    stage3       fully local: each encoder block trained by its own loss on its detached input,
                 with backward-and-free per block, so at most one block's activations are alive

Every stage starts from the same seed and sees the same batches (jepa_blocks.local.fit_local,
i.e. jepa_blocks.train.fit). The model is the one of step 2 (--variant, default stopgrad-rate)
with the preset's small CNN as four conv-ReLU blocks and a BatchNorm on the pooled output
(local.norm; a ResNet-18 splits into its four stages).
Prints, for each stage, the probes of steps 1-2 (linear accuracy on z_agg and z_1, R² of the
action from [z_1; z_2], effective ranks), how far each is from end-to-end, and the peak
activation memory of one training step (tensors saved for backward; also the CUDA peak on a
GPU), then the gate on the headline stage (the most local stage run: stage 3 by default).
The local: section (local.key=value) picks the stages, the objective and the heads
(examples/step6_parts.py, LocalConfig).

examples:
    python examples/step6_local.py                          # cpu-demo, all stages (~10 min)
    python examples/step6_local.py --smoke                  # a complete run in seconds
    python examples/step6_local.py local.objective=rate local.head_dim=64   # per-block rate
    python examples/step6_local.py local.norm=block         # BatchNorm in the blocks (pre-2026-12)
    python examples/step6_local.py train.epochs=4 local.stages=[end-to-end,stage3]
    python examples/step6_local.py --print-config           # the resolved config, as YAML

outputs (in --out, default runs/step6-<variant>-<preset>):
    metrics.json   per-stage metrics (stages), the headline stage's (metrics, headline_stage),
                   random-init metrics, peak memory (memory), gate verdict, resolved config
    table.md       the printed table and its notes
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common import cell as probe_cell
from common import (
    check_gate,
    gate_line,
    gate_metrics,
    markdown_table,
    parse_cli,
    variant_names,
    write_outputs,
)
from jepa_blocks.local import STAGES, LocalSeqJEPA, fit_local, peak_step_memory
from jepa_blocks.metrics import evaluate, extract_features
from jepa_blocks.runtime import num_threads
from jepa_blocks.train import seed_everything
from jepa_blocks.train.loop import resolve_device, schedule_steps
from parts import build_data, make_loader
from step6_parts import Step6Config, build_learner

__all__ = ["DETACH_ONLY", "format_stage_table", "main", "run"]

#: Key of stage 3's "detach only" peak (the same losses without per-block freeing) in ``memory``.
DETACH_ONLY = "stage3 (detach only)"


def _mib(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def run(config: Step6Config, *, verbose: bool = True) -> dict[str, Any]:
    """Train and probe every stage of ``config.local.stages``; write the outputs.

    Returns:
        The metrics.json record plus ``gate``, ``table`` and ``seconds``.
    """
    if not isinstance(config, Step6Config):
        raise TypeError(f"config must be a Step6Config, got {type(config).__name__}")
    with num_threads(config.threads):
        return _run(config, say=print if verbose else (lambda *a, **k: None))


def _run(config: Step6Config, *, say: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    local = config.local
    device = resolve_device(config.train.device)
    out_dir = Path(config.train.out_dir) if config.train.out_dir is not None else None

    # Data: one training loader for every stage, the probe sequences, and the batch on which
    # each stage's activation memory is measured (its own seed).
    data = build_data(config.data)
    m = config.data.num_observed
    m_val = config.eval.num_observed or m

    def loader(source: Any, *, batch: int, seed: int, shuffle: bool, num: int) -> Any:
        return make_loader(
            source, data.views, num_observed=num, batch_size=batch, seed=seed, device=device,
            shuffle=shuffle, drop_last=shuffle and len(source) > batch,
        )  # fmt: skip

    train_loader = loader(
        data.train, batch=config.data.batch_size, seed=config.train.seed, shuffle=True, num=m
    )
    probe_train = loader(
        data.train, batch=config.eval.batch_size, seed=config.eval.seed, shuffle=False, num=m_val
    )
    probe_test = loader(
        data.test, batch=config.eval.batch_size, seed=config.eval.seed + 1, shuffle=False, num=m_val
    )
    mem_batch = local.memory_batch_size or config.data.batch_size
    mem = next(
        iter(loader(data.train, batch=mem_batch, seed=config.train.seed + 99, shuffle=True, num=m))
    )
    total_steps, _ = schedule_steps(train_loader, config.train)
    # Each stage trains in memory (no checkpoints: fit would resume one stage from another's).
    train_config = dataclasses.replace(config.train, out_dir=None, resume=False)

    def new_learner() -> LocalSeqJEPA:
        """The same network for every stage: reseed, then build model, objective and heads."""
        seed_everything(config.train.seed)
        return build_learner(
            config, in_channels=int(data.train.images.shape[1]),
            action_dim=int(data.views.action_dim), total_steps=max(1, total_steps),
            steps_per_epoch=len(train_loader), device=device,
        )  # fmt: skip

    def probe(learner: LocalSeqJEPA) -> dict[str, Any]:
        """The probes of steps 1-2 on the wrapped seq-JEPA model."""
        test = extract_features(learner.model, probe_test)
        train = extract_features(learner.model, probe_train)
        return evaluate(train, test, config.eval)

    blocks = "four conv blocks" if config.model.encoder == "small-cnn" else "four ResNet stages"
    say(
        f"[{config.step}/{config.variant}] preset {config.name}: {config.data.dataset} "
        f"{len(data.train)}/{len(data.test)} images, M={m}, {config.model.encoder} ({blocks}), "
        f"objective={local.objective}, {total_steps} steps per stage on {device}"
    )

    # The same network at initialisation.
    random_init: dict[str, Any] | None = None
    t_eval = 0.0
    if config.eval.baseline:
        say("probing the network at initialisation ...")
        t1 = time.perf_counter()
        random_init = probe(new_learner())
        t_eval += time.perf_counter() - t1

    # Each stage: a fresh network (stage 2 takes its frozen encoder from another stage), the
    # peak memory of one step on the memory batch, training with the one loop, the probes.
    stages: dict[str, dict[str, Any]] = {}
    saved_mib: dict[str, float] = {}
    cuda_mib: dict[str, float | None] = {}
    final_loss: dict[str, float] = {}
    trained: dict[str, LocalSeqJEPA] = {}
    t_train = 0.0
    for stage in local.stages:
        learner = new_learner()
        if stage == "stage2":
            source = trained.get(local.stage2_encoder)
            if source is not None:
                learner.model.encoder.load_state_dict(source.model.encoder.state_dict())
        learner.set_stage(stage)
        peak = peak_step_memory(learner, mem.views, mem.actions)
        saved_mib[stage] = float(_mib(peak.saved_bytes) or 0.0)
        cuda_mib[stage] = _mib(peak.cuda_bytes)
        if stage == "stage3":
            detached = peak_step_memory(learner, mem.views, mem.actions, free_blocks=False)
            saved_mib[DETACH_ONLY] = float(_mib(detached.saved_bytes) or 0.0)
            cuda_mib[DETACH_ONLY] = _mib(detached.cuda_bytes)
        say(f"{stage}: peak saved activations {saved_mib[stage]:.1f} MiB; training ...")
        t1 = time.perf_counter()
        result = fit_local(learner, train_loader, train_config)
        seconds = time.perf_counter() - t1
        t_train += seconds
        t1 = time.perf_counter()
        metrics = probe(learner)
        t_eval += time.perf_counter() - t1
        metrics.update(
            peak_saved_mib=saved_mib[stage], peak_cuda_mib=cuda_mib[stage], train_seconds=seconds
        )
        stages[stage] = metrics
        trained[stage] = learner
        last: dict[str, Any] = next((r for r in reversed(result.history) if "loss" in r), {})
        final_loss[stage] = float(last.get("loss", float("nan")))
        say(
            f"{stage}: linacc {100 * metrics['linacc']:.1f} %, R² {metrics['r2']:.3f}, "
            f"{seconds:.0f} s"
        )

    # How far each stage is from end-to-end: memory ratio, accuracy and R² differences.
    reference = stages.get("end-to-end")
    for row in stages.values():
        add_deltas(row, reference)
    if random_init is not None:
        add_deltas(random_init, reference, memory=False)

    # Report: the headline is the most local stage that ran.
    headline = max(stages, key=STAGES.index)
    metrics = stages[headline]
    gate = check_gate(config, gate_metrics(metrics, random_init))
    notes = []
    base = saved_mib.get("end-to-end")
    if DETACH_ONLY in saved_mib:
        ratio = f" ({saved_mib[DETACH_ONLY] / base:.2f}× end-to-end)" if base else ""
        notes.append(
            f"stage 3 without per-block freeing (detach only): {saved_mib[DETACH_ONLY]:.1f} MiB"
            f"{ratio}"
        )
    notes.append(
        f"peak activation memory: tensors saved for backward, one training step at batch "
        f"{mem_batch} × {m + 1} views; Δ: difference to end-to-end"
    )
    notes.append(f"headline (metrics.json `metrics`, gate): {headline}")
    table = format_stage_table(stages, random_init) + "\n\n" + "\n".join(notes)
    seconds_all = {"train": t_train, "eval": t_eval, "total": time.perf_counter() - t0}
    record: dict[str, Any] = {
        "metrics": metrics,
        "headline_stage": headline,
        "random_init": random_init,
        "stages": stages,
        "memory": {
            "saved_mib": saved_mib,
            "cuda_mib": cuda_mib,
            "batch_size": mem_batch,
            "views": m + 1,
        },
        "train": {"steps_per_stage": total_steps, "final_loss": final_loss},
    }
    write_outputs(
        out_dir, config=config, device=device, table=table, gate=gate, seconds=seconds_all,
        **record,
    )  # fmt: skip
    say("")
    say(table)
    if gate is not None:
        say("")
        say(gate_line(gate))
    say(
        f"\ntotal {seconds_all['total']:.0f} s"
        + (f"; results in {out_dir}" if out_dir is not None else "")
    )
    return {**record, "gate": gate, "table": table, "seconds": seconds_all}


def add_deltas(
    row: dict[str, Any], reference: Mapping[str, Any] | None, *, memory: bool = True
) -> None:
    """Add ``linacc_vs_e2e``, ``r2_vs_e2e`` and ``memory_ratio`` (vs end-to-end) to ``row``."""
    if reference is None:
        return
    for key in ("linacc", "r2"):
        if key in row and key in reference:
            row[f"{key}_vs_e2e"] = float(row[key]) - float(reference[key])
    base = reference.get("peak_saved_mib")
    if memory and base and "peak_saved_mib" in row:
        row["memory_ratio"] = row["peak_saved_mib"] / base


def _fmt(row: Mapping[str, Any], key: str, kind: str) -> str:
    v = row.get(key)
    if v is None:
        return "—"
    if kind == "pt":
        return f"{100 * float(v):+.1f} pt"
    if kind == "delta":
        return f"{float(v):+.3f}"
    if kind == "mib":
        return f"{float(v):.1f}"
    if kind == "ratio":
        return f"{float(v):.2f}×"
    if kind == "s":
        return f"{float(v):.0f}"
    return probe_cell(row, key, kind)


_COLUMNS = (
    ("linacc", "linacc(z_agg)", "pct"),
    ("linacc_vs_e2e", "Δ linacc", "pt"),
    ("leakage_linacc", "linacc(z_1)", "pct"),
    ("r2", "R² (a_1 from [z_1;z_2])", "num"),
    ("r2_vs_e2e", "Δ R²", "delta"),
    ("rank_z_agg", "eff. rank z_agg", "rank"),
    ("rank_z", "eff. rank z", "rank"),
    ("peak_saved_mib", "peak act. MiB", "mib"),
    ("memory_ratio", "memory vs e2e", "ratio"),
    ("train_seconds", "train s", "s"),
)


def format_stage_table(
    stages: Mapping[str, Mapping[str, Any]], random_init: Mapping[str, Any] | None
) -> str:
    """A Markdown table: one row per stage (and the random-init network), probes and memory.

    Columns: the linear class probe on z_agg and its difference to end-to-end (points), the
    probe on the encoder output of the first view z_1, the R² of the action and its difference
    to end-to-end, the effective ranks, the peak saved activations of one training step, its
    ratio to end-to-end training, and the training time.
    """
    rows = [("random-init", random_init)] if random_init is not None else []
    rows += list(stages.items())
    body = [[name, *(_fmt(r, k, kind) for k, _, kind in _COLUMNS)] for name, r in rows]
    return markdown_table(["stage", *(c[1] for c in _COLUMNS)], body)


def main(argv: Sequence[str] | None = None) -> int:
    config, _ = parse_cli(
        Step6Config,
        argv,
        step="step6",
        description=__doc__,
        variants=variant_names(),
        default_variant="stopgrad-rate",
    )
    run(config)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
