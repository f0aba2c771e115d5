r"""The step-6 experiment: end-to-end training and the three local stages on the same data.

``examples/step6_local.py`` is a thin command line over :func:`main`. One run:

1. Loads the preset of the step-1/2 examples (``examples/configs/<preset>.yaml``, e.g. the
   cpu-demo's MNIST-5k affine sequences) through
   :func:`jepa_blocks.train.experiment.load_experiment_config`, with a variant of
   :data:`~jepa_blocks.train.experiment.VARIANTS` (default ``stopgrad-rate``: stop-gradient
   target + coding rate on :math:`z_\text{AGG}`), and a :class:`LocalConfig`
   (``local.key=value`` overrides).
2. Builds the data with :func:`~jepa_blocks.train.experiment.build_data` and, for every stage, a
   fresh model from the same seed with :func:`~jepa_blocks.train.experiment.build_model` whose
   small CNN is replaced by the four-block :func:`~jepa_blocks.local.conv_block_encoder`
   (a ResNet-18 is split into its four stages instead), wrapped in
   :class:`~jepa_blocks.local.LocalSeqJEPA`.
3. Measures the peak activation memory of one training step of each stage on the same batch
   (:func:`~jepa_blocks.local.peak_step_memory`; saved tensors, plus the CUDA peak on GPU), and
   also stage 3 without per-block freeing ("detach only").
4. Trains each stage with :func:`~jepa_blocks.local.fit_local` (same loader, epochs, schedule).
   Stage 2 starts from the encoder that stage 1 trained (frozen) with a fresh aggregator and
   predictor (``local.stage2_encoder``).
5. Probes each trained model, and the network at initialisation, with
   :func:`~jepa_blocks.train.experiment.evaluate` (linear probe on :math:`z_\text{AGG}`, R² of the
   action from :math:`[z_1; z_2]`, RankMe effective ranks), prints a table and writes
   ``metrics.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from jepa_blocks.local.blocks import conv_block_encoder
from jepa_blocks.local.objectives import LocalRateLoss, LPLLoss
from jepa_blocks.local.stages import STAGES, LocalSeqJEPA, fit_local, peak_step_memory
from jepa_blocks.seq.model import SeqJEPA

__all__ = [
    "SMOKE_EXTRA",
    "LocalConfig",
    "LocalExperimentResult",
    "build_local_model",
    "format_local_table",
    "main",
    "run_local_experiment",
]


#: Overrides that ``--smoke`` adds to the preset's own ``smoke`` list: four steps per stage, no
#: random-init probe, one thread (small problems run fastest on one thread of a busy machine).
SMOKE_EXTRA: tuple[str, ...] = ("train.max_steps=4", "eval.baseline=false", "threads=1")


@dataclasses.dataclass
class LocalConfig:
    """Settings of the local stages (``local.key=value`` on the command line).

    Attributes:
        stages: Which of ``end-to-end``, ``stage1``, ``stage2``, ``stage3`` to run, in order.
        objective: Block-local objective: ``"lpl"`` (:class:`~jepa_blocks.local.LPLLoss`, the
            published weights 1 / 1 / 10) or ``"rate"``
            (:class:`~jepa_blocks.local.LocalRateLoss`).
        rate_weight: λ of the ``"rate"`` objective.
        widths: Channels of the encoder blocks (small-cnn only; ``None``: ``cnn_width`` × 1, 2,
            4, then ``encoder_dim``).
        strides: Strides of the encoder blocks (small-cnn only).
        head_dim: Embedding dimension of the local heads (``None``: no projection).
        action_conditioned: Action-conditioned predictors in the encoder blocks' heads.
        head_hidden: Hidden width of the heads' predictors.
        aux_weight: Weight of the local losses in stage 1.
        local_aggregator: Train the aggregator blocks locally in stages 2 and 3.
        stage2_encoder: Where stage 2's frozen encoder comes from: ``"stage1"``,
            ``"end-to-end"`` (the encoder that stage trained; falls back to ``"init"`` when it
            did not run) or ``"init"`` (random initialisation).
        memory_batch_size: Batch of the memory measurement (``None``: ``data.batch_size``).
    """

    stages: list[str] = dataclasses.field(default_factory=lambda: list(STAGES))
    objective: Literal["lpl", "rate"] = "lpl"
    rate_weight: float = 0.03
    widths: list[int] | None = None
    strides: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 2, 1])
    head_dim: int | None = None
    action_conditioned: bool = True
    head_hidden: int = 128
    aux_weight: float = 1.0
    local_aggregator: bool = True
    stage2_encoder: Literal["stage1", "end-to-end", "init"] = "stage1"
    memory_batch_size: int | None = None


def build_local_model(
    model_config: Any,
    local: LocalConfig,
    *,
    in_channels: int,
    action_dim: int,
    total_steps: int,
    steps_per_epoch: int,
) -> SeqJEPA:
    """:func:`~jepa_blocks.train.experiment.build_model` with a block encoder.

    For ``encoder="small-cnn"`` the :class:`~jepa_blocks.SmallCNN` is replaced by
    :func:`~jepa_blocks.local.conv_block_encoder` (``local.widths``, ``local.strides``; the EMA
    target, if any, is rebuilt around it); a ResNet-18 is kept (it splits into four stages).
    The block encoder ends in global average pooling: the small CNN's ``cnn_grid`` and
    ``encoder_norm`` do not apply, and the discarded small CNN is built with ``cnn_grid=1`` and
    no output norm, so the other parts' initialisation does not depend on them.

    Args:
        model_config: A :class:`~jepa_blocks.train.experiment.ModelConfig`.
        local: The local settings.
        in_channels: Image channels.
        action_dim: ``A``.
        total_steps: Optimizer steps of the run (EMA schedule).
        steps_per_epoch: Optimizer steps per epoch.

    Returns:
        The model.
    """
    from jepa_blocks.targets import EMATarget
    from jepa_blocks.train.experiment import build_model

    if model_config.encoder == "small-cnn":
        model_config = dataclasses.replace(model_config, cnn_grid=1, encoder_norm="none")
    model = build_model(
        model_config,
        in_channels=in_channels,
        action_dim=action_dim,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
    )
    if not isinstance(model, SeqJEPA):
        raise TypeError(f"build_model returned a {type(model).__name__}, not a SeqJEPA")
    if model_config.encoder != "small-cnn":
        return model
    w, d = model_config.cnn_width, model_config.encoder_dim
    widths = list(local.widths) if local.widths is not None else [w, 2 * w, 4 * w, d]
    if widths[-1] != d:
        raise ValueError(
            f"local.widths must end with model.encoder_dim = {d}, got {widths} (the predictor "
            f"and aggregator are sized for encoder_dim)"
        )
    encoder = conv_block_encoder(in_channels=in_channels, widths=widths, strides=local.strides)
    model.encoder = encoder
    if model_config.target == "ema":
        epoch_wise = model_config.ema_schedule == "epoch"
        model.target = EMATarget(
            encoder,
            total_steps=total_steps,
            base_momentum=model_config.ema_base,
            final_momentum=model_config.ema_final,
            steps_per_epoch=steps_per_epoch if epoch_wise else None,
        )
    return model


@dataclasses.dataclass
class LocalExperimentResult:
    """What :func:`run_local_experiment` returns.

    Attributes:
        rows: ``{stage: metrics}``; each has the probe metrics of
            :func:`~jepa_blocks.train.experiment.evaluate` plus ``peak_saved_mib``,
            ``memory_ratio`` (vs end-to-end), ``peak_cuda_mib`` and ``train_seconds``
            (``"random-init"`` holds the untrained network's probes).
        memory: Peak memory in MiB: ``{stage: saved}``, plus ``"stage3 (detach only)"``.
        table: The printed table.
        out_dir: Where ``metrics.json`` went (``None``: nowhere).
        seconds: Total wall time.
    """

    rows: dict[str, dict[str, Any]]
    memory: dict[str, float]
    table: str
    out_dir: Path | None
    seconds: float


def _mib(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def _fmt(v: Any, kind: str) -> str:
    if v is None:
        return "—"
    if kind == "pct":
        return f"{100 * float(v):.1f} %"
    if kind == "mib":
        return f"{float(v):.1f}"
    if kind == "ratio":
        return f"{float(v):.2f}×"
    if kind == "s":
        return f"{float(v):.0f}"
    return f"{float(v):.3f}" if kind == "num" else f"{float(v):.1f}"


def format_local_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table: one row per stage, probe metrics and peak activation memory.

    Columns: the linear class probe on :math:`z_\\text{AGG}` and on the encoder output of the
    first view :math:`z_1`, the R² of the action, the RankMe effective ranks, the peak saved
    activations of one training step, its ratio to end-to-end training and the training time.

    Args:
        rows: ``{stage: metrics}`` as in :class:`LocalExperimentResult`.

    Returns:
        The table.
    """
    cols = (
        ("linacc", "linacc(z_agg)", "pct"),
        ("leakage_linacc", "linacc(z_1)", "pct"),
        ("r2", "R² (a_1 from [z_1;z_2])", "num"),
        ("rank_z_agg", "eff. rank z_agg", "rank"),
        ("rank_z", "eff. rank z", "rank"),
        ("peak_saved_mib", "peak act. MiB", "mib"),
        ("memory_ratio", "vs end-to-end", "ratio"),
        ("train_seconds", "train s", "s"),
    )
    head = ["stage", *(c[1] for c in cols)]
    body = [[name, *(_fmt(r.get(k), kind) for k, _, kind in cols)] for name, r in rows.items()]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |"]
    lines.append(
        "| "
        + " | ".join(("-" * w if i == 0 else "-" * (w - 1) + ":") for i, w in enumerate(widths))
        + " |"
    )
    for row in body:
        cells = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _metrics_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("linacc", "r2", "rank_z_agg", "rank_z", "dim_z_agg", "dim_z", "leakage_linacc")
    return {k: metrics[k] for k in keys if k in metrics}


def run_local_experiment(
    config: Any, local: LocalConfig, *, verbose: bool = True
) -> LocalExperimentResult:
    """Train and probe every stage of ``local.stages`` (see the module docstring).

    Args:
        config: An :class:`~jepa_blocks.train.experiment.ExperimentConfig`; ``train.out_dir``
            receives ``metrics.json``.
        local: The local settings.
        verbose: Print progress and the table.

    Returns:
        :class:`LocalExperimentResult`.
    """
    from jepa_blocks.data import SequenceLoader
    from jepa_blocks.train.experiment import (
        ExperimentConfig,
        build_data,
        evaluate,
        extract_features,
    )
    from jepa_blocks.train.loop import _schedule_steps, resolve_device, seed_everything

    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    if not isinstance(local, LocalConfig):
        raise TypeError(f"local must be a LocalConfig, got {type(local).__name__}")
    for s in local.stages:
        if s not in STAGES:
            raise ValueError(f"local.stages must hold stages of {STAGES}, got {s!r}")
    t0 = time.perf_counter()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    say = print if verbose else (lambda *a, **k: None)
    device = resolve_device(config.train.device)
    data = build_data(config.data)
    m = config.data.num_observed
    m_val = config.eval.num_observed or m

    def loader(source: Any, *, batch: int, seed: int, shuffle: bool, num: int) -> Any:
        return SequenceLoader(
            source, data.views, num_observed=num, batch_size=batch, device=device,
            shuffle=shuffle, drop_last=shuffle and len(source) > batch, seed=seed,
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
    mem_views, mem_actions = _first_batch(
        loader(data.train, batch=mem_batch, seed=config.train.seed + 99, shuffle=True, num=m)
    )
    steps_per_epoch = len(train_loader)
    total_steps, _ = _schedule_steps(train_loader, config.train)
    train_cfg = dataclasses.replace(config.train, out_dir=None, resume=False)
    in_channels = int(data.train.images.shape[1])
    action_dim = int(data.views.action_dim)

    def new_learner(stage: str) -> LocalSeqJEPA:
        seed_everything(config.train.seed)
        model = build_local_model(
            config.model, local, in_channels=in_channels, action_dim=action_dim,
            total_steps=max(1, total_steps), steps_per_epoch=steps_per_epoch,
        )  # fmt: skip
        objective = (
            LPLLoss() if local.objective == "lpl" else LocalRateLoss(rate_weight=local.rate_weight)
        )
        return LocalSeqJEPA(
            model, stage="end-to-end", objective=objective, head_dim=local.head_dim,
            action_conditioned=local.action_conditioned, head_hidden=local.head_hidden,
            aux_weight=local.aux_weight, local_aggregator=local.local_aggregator,
        ).to(device)  # fmt: skip

    def probe(learner: LocalSeqJEPA) -> dict[str, Any]:
        test = extract_features(learner.model, probe_test)
        train = extract_features(learner.model, probe_train)
        return evaluate(train, test, config.eval)

    say(
        f"[step6/{config.variant}] preset {config.name}: {config.data.dataset} "
        f"{len(data.train)}/{len(data.test)} images, M={m}, {config.model.encoder} "
        f"({'four conv blocks' if config.model.encoder == 'small-cnn' else 'four ResNet stages'})"
        f", objective={local.objective}, {total_steps} steps per stage on {device}"
    )
    rows: dict[str, dict[str, Any]] = {}
    memory: dict[str, float] = {}
    if config.eval.baseline:
        say("probing the network at initialisation ...")
        rows["random-init"] = _metrics_row(probe(new_learner("end-to-end")))
    trained: dict[str, LocalSeqJEPA] = {}
    for stage in local.stages:
        learner = new_learner(stage)
        if stage == "stage2":
            source = trained.get(local.stage2_encoder)
            if source is not None:
                learner.model.encoder.load_state_dict(source.model.encoder.state_dict())
        learner.set_stage(stage)  # type: ignore[arg-type]
        peak = peak_step_memory(learner, mem_views, mem_actions)
        memory[stage] = float(_mib(peak.saved_bytes) or 0.0)
        if stage == "stage3":
            detached = peak_step_memory(learner, mem_views, mem_actions, free_blocks=False)
            memory["stage3 (detach only)"] = float(_mib(detached.saved_bytes) or 0.0)
        say(f"{stage}: peak saved activations {memory[stage]:.1f} MiB; training ...")
        t1 = time.perf_counter()
        fit_local(learner, train_loader, train_cfg)
        seconds = time.perf_counter() - t1
        row = _metrics_row(probe(learner))
        row.update(
            peak_saved_mib=memory[stage],
            peak_cuda_mib=_mib(peak.cuda_bytes),
            train_seconds=seconds,
        )
        rows[stage] = row
        trained[stage] = learner
        say(f"{stage}: linacc {100 * row['linacc']:.1f} %, R² {row['r2']:.3f}, {seconds:.0f} s")
    base = memory.get("end-to-end")
    for row in rows.values():
        if base and "peak_saved_mib" in row:
            row["memory_ratio"] = row["peak_saved_mib"] / base
    table = format_local_table(rows)
    notes = []
    if "stage3 (detach only)" in memory:
        ratio = f" ({memory['stage3 (detach only)'] / base:.2f}× end-to-end)" if base else ""
        notes.append(
            f"stage 3 without per-block freeing (detach only): "
            f"{memory['stage3 (detach only)']:.1f} MiB{ratio}"
        )
    notes.append(
        f"peak activation memory: tensors saved for backward, one training step at batch "
        f"{mem_batch} × {m + 1} views"
    )
    out_dir = Path(config.train.out_dir) if config.train.out_dir is not None else None
    total = time.perf_counter() - t0
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_json(
            out_dir / "metrics.json",
            {
                "step": "step6",
                "variant": config.variant,
                "preset": config.name,
                "date": _dt.date.today().isoformat(),
                "device": str(device),
                "versions": {
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "rows": rows,
                "memory_mib": memory,
                "memory_batch_size": mem_batch,
                "steps_per_stage": total_steps,
                "seconds": total,
                "local": dataclasses.asdict(local),
                "config": dataclasses.asdict(config),
            },
        )
    say("")
    say(table)
    for n in notes:
        say(n)
    say(f"\ntotal {total:.0f} s" + (f"; results in {out_dir}" if out_dir is not None else ""))
    return LocalExperimentResult(rows, memory, table + "\n" + "\n".join(notes), out_dir, total)


def _first_batch(loader: Any) -> tuple[Tensor, Tensor]:
    batch = next(iter(loader))
    return batch.views, batch.actions


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None, *, config_dir: str | os.PathLike[str]) -> int:
    """Command line of ``examples/step6_local.py``.

    ``--preset NAME`` (default ``cpu-demo``), ``--variant`` (default ``stopgrad-rate``),
    ``--smoke``, ``--out DIR``, ``--config FILE``, and ``key=value`` overrides: ``local.*`` keys
    go to :class:`LocalConfig`, the others to the experiment config (e.g. ``train.epochs=4``).

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
        config_dir: Directory of the preset YAML files.

    Returns:
        The exit status (0).
    """
    from jepa_blocks.train.config import apply_overrides
    from jepa_blocks.train.experiment import VARIANTS, load_experiment_config

    presets = sorted(p.stem for p in Path(config_dir).glob("*.yaml"))
    parser = argparse.ArgumentParser(
        description="Step 6: end-to-end vs the three local-learning stages on the same data."
    )
    parser.add_argument("--preset", default="cpu-demo", help=f"one of {presets}")
    parser.add_argument(
        "--variant",
        default="stopgrad-rate",
        choices=list(VARIANTS),
        help="target and regularizer of the model (default stopgrad-rate)",
    )
    parser.add_argument("--smoke", action="store_true", help="a complete run in seconds (CI)")
    parser.add_argument("--out", default=None, help="output directory (default runs/<name>)")
    parser.add_argument("--config", default=None, help="YAML file merged on top of the preset")
    parser.add_argument(
        "overrides", nargs="*", help="key=value, e.g. train.epochs=4 local.objective=rate"
    )
    args = parser.parse_intermixed_args(argv)
    local_over = [o[len("local.") :] for o in args.overrides if o.startswith("local.")]
    other = [o for o in args.overrides if not o.startswith("local.")]
    try:
        config = load_experiment_config(
            preset=args.preset,
            config_dir=config_dir,
            config_file=args.config,
            variant=args.variant,
            smoke=args.smoke,
            overrides=["step=step6", *(SMOKE_EXTRA if args.smoke else ()), *other],
        )
        local = apply_overrides(LocalConfig(), local_over)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    out = args.out or os.path.join(
        "runs", f"step6-{args.variant}-{config.name}" + ("-smoke" if args.smoke else "")
    )
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, out_dir=out))
    run_local_experiment(config, local)
    sys.stdout.flush()
    return 0
