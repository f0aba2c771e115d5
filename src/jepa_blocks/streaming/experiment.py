r"""The step-5 experiment: protocols A and B, replay ablation, forgetting report.

``examples/step5_streaming_continual.py`` is a command line over :func:`main`. One experiment:

1. **Data and model** from :mod:`jepa_blocks.train.experiment` (``build_data``,
   ``build_model``): MNIST-5k view sequences (similarity transforms, rotations within ±30° by
   default) and a small seq-JEPA with its EMA target, the same initial network for every run.
2. **Streams** over the 4,000 training images (:mod:`~jepa_blocks.streaming.protocols`):

   * **A**, stationary: one i.i.d. pass;
   * **B**, class-incremental: ``num_splits`` class splits one after the other (Split-MNIST,
     new objects), optionally with blurred boundaries.

3. **Runs** (:func:`~jepa_blocks.streaming.train_stream`, ``K = stream.repeats`` steps per
   incoming batch): the protocols in ``ablate`` (default B) get every buffer of the ablation
   (no buffer, FIFO, reservoir, MinRed, each at every size of ``buffer_sizes``) and the optional
   EWC / SI rows; the others run without a buffer.
4. **Evaluation** (:class:`~jepa_blocks.streaming.StreamEvaluator`) at 25 / 50 / 75 / 100 % of
   the stream and, for B, at every split end: joint linear probes on the encoder output
   :math:`z_1` and on :math:`z_\text{AGG}`, the linear equivariance R² and the per-split
   accuracies. For B the split-end rows give the accuracy matrices, forgetting, BWT and FWT
   against the random-init network (one set per probed representation).
5. **Report**: the ablation table (printed), ``metrics.json`` and the forgetting plots.

Nothing heavy is imported at module import time.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from jepa_blocks.streaming.driver import StreamConfig
from jepa_blocks.streaming.regularizers import WeightRegularizer
from jepa_blocks.train.experiment import DataConfig, ModelConfig, _versions

__all__ = [
    "ABLATION_COLUMNS",
    "StreamExperimentConfig",
    "cpu_demo_config",
    "format_ablation_table",
    "main",
    "run_stream_experiment",
]

#: Columns of :func:`format_ablation_table`.
ABLATION_COLUMNS = (
    "protocol",
    "method",
    "size",
    "linacc z",
    "linacc z_agg",
    "R²",
    "forgetting z",
    "forgetting z_agg",
    "BWT z",
    "FWT z",
    "train s",
)


def _default_data() -> DataConfig:
    return DataConfig(
        dataset="mnist", views="affine", angle_deg=30.0, num_observed=2, batch_size=64
    )


def _default_model() -> ModelConfig:
    return ModelConfig(
        encoder="small-cnn",
        encoder_dim=64,
        cnn_width=16,
        action_embed_dim=16,
        predictor_hidden=256,
        depth=2,
        heads=2,
        ema_base=0.99,
        ema_final=1.0,
    )


def _default_stream() -> StreamConfig:
    return StreamConfig(
        repeats=4, replay_ratio=1.0, store="indices", lr=2e-3, warmup_steps=10, device="auto"
    )


@dataclasses.dataclass
class StreamExperimentConfig:
    """The whole step-5 experiment.

    Attributes:
        name: Preset name.
        data: Images and views (``batch_size`` = fresh items per stream batch; ``train_subset``
            / ``test_subset`` shrink the stream and the test set).
        model: The seq-JEPA model.
        stream: Driver settings (checkpoints, repeats ``K``, replay ratio, storage, lr).
        protocols: ``"A"`` (stationary) and/or ``"B"`` (class-incremental).
        num_splits: Class splits of protocol B.
        blur: Blurred-boundary width of protocol B (0: sharp).
        buffers: Rows of the ablation: ``"none"``, ``"fifo"``, ``"reservoir"``, ``"minred"``.
        ablate: Protocols that get the whole ablation; the others run without a buffer only.
        buffer_sizes: Memory budgets (items) of every buffer.
        minred_max_uses: Retire MinRed items after this many replays (``None``: never).
        mitigations: Extra no-buffer rows with a regulariser: ``"ewc"``, ``"si"``.
        ewc_weight: λ of EWC (the empirical SSL Fisher is small, about 1e-6 per weight on the
            cpu-demo encoder, so λ is large; set so that the penalty is of the order of the
            prediction loss after a split, not tuned).
        si_weight: c of SI (set the same way, not tuned).
        probe_train_per_class: Training images per class for the probes (``None``: all).
        probe_on: Representations of the class probes, ``"z"`` (encoder output of the first
            view) and/or ``"z_agg"``; the first one gives the split accuracies, forgetting and
            transfer.
        per_task: Split accuracies from the joint probe (``"joint"``) or per split.
        classifier: Solver of the linear probes (``"lbfgs"``: logistic regression; ``"ridge"``:
            closed-form least squares, for quick runs).
        seed: Seed of the model initialisation, streams and buffers.
        threads: torch threads (1 is fastest on a shared machine).
        plots: Write the figures.
        smoke: Overrides applied by ``--smoke``.
    """

    name: str = "cpu-demo"
    data: DataConfig = dataclasses.field(default_factory=_default_data)
    model: ModelConfig = dataclasses.field(default_factory=_default_model)
    stream: StreamConfig = dataclasses.field(default_factory=_default_stream)
    protocols: list[str] = dataclasses.field(default_factory=lambda: ["A", "B"])
    num_splits: int = 5
    blur: float = 0.0
    buffers: list[str] = dataclasses.field(
        default_factory=lambda: ["none", "fifo", "reservoir", "minred"]
    )
    ablate: list[str] = dataclasses.field(default_factory=lambda: ["B"])
    buffer_sizes: list[int] = dataclasses.field(default_factory=lambda: [256, 1024])
    minred_max_uses: int | None = None
    mitigations: list[str] = dataclasses.field(default_factory=list)
    ewc_weight: float = 1.0e4
    si_weight: float = 5.0
    probe_train_per_class: int | None = 100
    probe_on: list[str] = dataclasses.field(default_factory=lambda: ["z", "z_agg"])
    per_task: Literal["joint", "separate"] = "joint"
    classifier: Literal["lbfgs", "ridge"] = "lbfgs"
    seed: int = 0
    threads: int | None = 1
    plots: bool = True
    smoke: list[str] = dataclasses.field(
        default_factory=lambda: [
            "name=smoke",
            "data.train_subset=400",
            "data.test_subset=200",
            "data.batch_size=32",
            "model.encoder_dim=32",
            "model.cnn_width=8",
            "model.action_embed_dim=8",
            "model.predictor_hidden=64",
            "model.depth=1",
            "buffer_sizes=[32, 96]",
            "probe_train_per_class=20",
            "num_splits=2",
            "stream.checkpoints=[0.5, 1.0]",
            "classifier=ridge",
            "stream.repeats=1",
        ]
    )

    def __post_init__(self) -> None:
        for p in self.protocols:
            if p not in ("A", "B"):
                raise ValueError(f"protocols must hold 'A' and/or 'B', got {self.protocols}")
        for b in self.buffers:
            if b not in ("none", "fifo", "reservoir", "minred"):
                raise ValueError(
                    f"buffers must hold 'none', 'fifo', 'reservoir' or 'minred', got {b!r}"
                )
        for p in self.ablate:
            if p not in ("A", "B"):
                raise ValueError(f"ablate must hold 'A' and/or 'B', got {self.ablate}")
        for r in self.probe_on:
            if r not in ("z", "z_agg"):
                raise ValueError(f"probe_on must hold 'z' and/or 'z_agg', got {self.probe_on}")
        if not self.probe_on:
            raise ValueError("probe_on must not be empty")
        for m in self.mitigations:
            if m not in ("ewc", "si"):
                raise ValueError(f"mitigations must hold 'ewc' or 'si', got {m!r}")
        if any(isinstance(s, bool) or s < 1 for s in self.buffer_sizes):
            raise ValueError(f"buffer_sizes must be ints >= 1, got {self.buffer_sizes}")
        if self.num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {self.num_splits}")


def cpu_demo_config(
    *, smoke: bool = False, overrides: Sequence[str] = ()
) -> StreamExperimentConfig:
    """The default (``cpu-demo``) config, with the smoke overrides and ``key=value`` overrides.

    Raises:
        ValueError: Unknown key or malformed override.
        TypeError: Wrong value type.
    """
    from jepa_blocks.train.config import apply_overrides

    config = StreamExperimentConfig()
    if smoke:
        config = apply_overrides(config, config.smoke)
    return apply_overrides(config, list(overrides))


# --------------------------------------------------------------------------- helpers


def _per_class_subset(labels: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    if per_class is None:
        return torch.arange(labels.numel())
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c, as_tuple=False).flatten()
        keep.append(members[torch.randperm(members.numel(), generator=gen)[:per_class]])
    return torch.cat(keep).sort().values


def _probe_tasks(
    data: Any, splits: Sequence[Sequence[int]], config: StreamExperimentConfig
) -> list:
    from jepa_blocks.data import SequenceLoader
    from jepa_blocks.streaming.evaluation import ProbeTask

    train_idx = _per_class_subset(data.train.labels, config.probe_train_per_class, config.seed + 11)
    probe_train = data.train.subset(train_idx)
    tasks = []
    for j, group in enumerate(splits):
        g = torch.tensor(list(group))
        tr = probe_train.subset(torch.nonzero(torch.isin(probe_train.labels, g)).flatten())
        te = data.test.subset(torch.nonzero(torch.isin(data.test.labels, g)).flatten())

        def loader(source: Any, seed: int) -> Any:
            return SequenceLoader(
                source,
                data.views,
                num_observed=config.data.num_observed,
                batch_size=500,
                shuffle=False,
                seed=seed,
            )

        tasks.append(
            ProbeTask("-".join(str(c) for c in group), loader(tr, 1000 + j), loader(te, 2000 + j))
        )
    return tasks


def _fmt(v: Any, kind: str = "num") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    if kind == "pct":
        return f"{100 * float(v):.1f}"
    if kind == "pp":
        return f"{100 * float(v):+.1f}"
    if kind == "int":
        return str(int(v))
    if kind == "s":
        return f"{float(v):.0f}"
    return f"{float(v):.3f}"


def format_ablation_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of the runs (accuracies in %, forgetting / transfer in points).

    Args:
        rows: Run summaries with ``protocol``, ``method``, ``size``, ``linacc_z``,
            ``linacc_z_agg``, ``r2`` and, for split protocols, ``forgetting_z``,
            ``forgetting_z_agg``, ``bwt_z``, ``fwt_z``, plus ``train_seconds`` (missing: —).
    """
    body = [
        (
            str(r["protocol"]),
            str(r["method"]),
            _fmt(r.get("size"), "int") if r.get("size") else "—",
            _fmt(r.get("linacc_z"), "pct"),
            _fmt(r.get("linacc_z_agg"), "pct"),
            _fmt(r.get("r2")),
            _fmt(r.get("forgetting_z"), "pp"),
            _fmt(r.get("forgetting_z_agg"), "pp"),
            _fmt(r.get("bwt_z"), "pp"),
            _fmt(r.get("fwt_z"), "pp"),
            _fmt(r.get("train_seconds"), "s"),
        )
        for r in rows
    ]
    table = [ABLATION_COLUMNS, *body]
    widths = [max(len(row[i]) for row in table) for i in range(len(ABLATION_COLUMNS))]
    lines = []
    for k, row in enumerate(table):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("| " + " | ".join(cells) + " |")
        if k == 0:
            lines.append(
                "| "
                + " | ".join(
                    "-" * w if i < 2 else "-" * (w - 1) + ":" for i, w in enumerate(widths)
                )
                + " |"
            )
    return "\n".join(lines)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------- the experiment


def run_stream_experiment(
    config: StreamExperimentConfig,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run every protocol × method of ``config``; write ``metrics.json`` and plots to ``out_dir``.

    Args:
        config: The experiment.
        out_dir: Output folder (``None``: nothing is written).
        verbose: Print progress and the table.

    Returns:
        ``{"runs": [...], "random_init": {...}, "table": str, "seconds": float, ...}``.
    """
    from jepa_blocks.streaming import (
        EWC,
        SI,
        ImageSequenceMaker,
        SequenceStream,
        StreamEvaluator,
        accuracy_matrix,
        blur_boundaries,
        build_buffer,
        class_incremental_stream,
        continual_metrics,
        even_class_splits,
        stationary_stream,
        train_stream,
    )
    from jepa_blocks.train.experiment import build_data, build_model
    from jepa_blocks.train.loop import resolve_device, seed_everything

    if not isinstance(config, StreamExperimentConfig):
        raise TypeError(f"config must be a StreamExperimentConfig, got {type(config).__name__}")
    t_start = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    old_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    try:
        data = build_data(config.data)
        device = resolve_device(config.stream.device)
        n_classes = int(data.train.labels.max()) + 1
        splits = even_class_splits(n_classes, config.num_splits)
        tasks = _probe_tasks(data, splits, config)
        evaluator = StreamEvaluator(
            tasks,
            representations=tuple(config.probe_on),
            per_task=config.per_task,
            classifier=config.classifier,
            seed=config.seed,
        )
        maker = ImageSequenceMaker(
            data.train, data.views, num_observed=config.data.num_observed, device=device
        )
        plans = {}
        if "A" in config.protocols:
            plans["A"] = stationary_stream(len(data.train), seed=config.seed)
        if "B" in config.protocols:
            plan_b = class_incremental_stream(data.train.labels, splits=splits, seed=config.seed)
            if config.blur > 0:
                plan_b = blur_boundaries(plan_b, width=config.blur, seed=config.seed)
            plans["B"] = plan_b

        def new_model(total_steps: int) -> torch.nn.Module:
            seed_everything(config.seed)
            return build_model(
                config.model,
                in_channels=int(data.train.images.shape[1]),
                action_dim=int(data.views.action_dim),
                total_steps=max(1, total_steps),
                steps_per_epoch=max(1, total_steps),
            ).to(device)

        say(
            f"[step5] preset {config.name}: {config.data.dataset} {len(data.train)} stream images, "
            f"{len(data.test)} test images, {config.data.views} views, M={config.data.num_observed}, "
            f"fresh batch {config.data.batch_size}, K={config.stream.repeats}, replay ratio "
            f"{config.stream.replay_ratio}, store={config.stream.store}, threads "
            f"{torch.get_num_threads()}, device {device}"
        )
        t1 = time.perf_counter()
        random_init = evaluator(new_model(1))
        random_init["seconds"] = time.perf_counter() - t1
        say(
            f"random-init network: linacc {100 * random_init['linacc']:.1f} %, R² "
            f"{random_init['r2']:.3f} ({random_init['seconds']:.0f} s)"
        )

        methods: list[tuple[str, int | None, str | None]] = []
        for b in config.buffers:
            if b == "none":
                methods.append(("none", None, None))
            else:
                methods += [(b, s, None) for s in config.buffer_sizes]
        methods += [(m, None, m) for m in config.mitigations]

        runs: list[dict[str, Any]] = []
        for protocol, plan in plans.items():
            is_split = protocol == "B" and plan.num_splits > 1
            stream = SequenceStream(
                plan,
                maker,
                batch_size=config.data.batch_size,
                seed=config.seed,
                align_to_boundaries=is_split,
            )
            fractions = tuple(config.stream.checkpoints)
            if is_split:
                fractions = tuple(sorted({*fractions, *plan.boundary_fractions}))
            run_methods = methods if protocol in config.ablate else [("none", None, None)]
            for kind, size, mitigation in run_methods:
                label = kind if size is None else f"{kind}-{size}"
                model = new_model(len(stream) * config.stream.repeats)
                buffer = (
                    None
                    if size is None
                    else build_buffer(kind, size, seed=config.seed, max_uses=config.minred_max_uses)
                )
                reg: WeightRegularizer | None = None
                if mitigation == "ewc":
                    reg = EWC(model.encoder, weight=config.ewc_weight)  # type: ignore[arg-type]
                elif mitigation == "si":
                    reg = SI(model.encoder, weight=config.si_weight)  # type: ignore[arg-type]
                run_cfg = dataclasses.replace(
                    config.stream, checkpoints=fractions, out_dir=None, device=str(device)
                )
                say(f"\n[{protocol} / {label}] {len(stream)} batches, {len(fractions)} checkpoints")
                result = train_stream(
                    model,
                    stream,
                    config=run_cfg,
                    buffer=buffer,
                    regularizer=reg,
                    eval_fn=evaluator,
                    log=lambda s: say("  " + s),
                )
                final = result.evaluations[-1]
                row: dict[str, Any] = {
                    "protocol": protocol,
                    "method": kind,
                    "size": size,
                    "label": label,
                    "linacc": final["linacc"],
                    "linacc_z": final.get("linacc_z"),
                    "linacc_z_agg": final.get("linacc_z_agg"),
                    "r2": final["r2"],
                    "train_seconds": result.seconds["train"],
                    "eval_seconds": result.seconds["eval"],
                    "steps": result.step,
                    "buffer_final_size": len(buffer) if buffer is not None else 0,
                    "evaluations": result.evaluations,
                    "final_loss": next(
                        (h["loss"] for h in reversed(result.history) if "loss" in h), None
                    ),
                    "mean_penalty": (
                        sum(h["penalty"] for h in result.history if "penalty" in h)
                        / max(1, sum("penalty" in h for h in result.history))
                        if reg is not None
                        else None
                    ),
                }
                if is_split:
                    bounds = plan.boundary_fractions
                    for rep in config.probe_on:
                        m_rep = accuracy_matrix(
                            result.evaluations, key=f"task_acc_{rep}", fractions=bounds
                        )
                        c_rep = continual_metrics(m_rep, baseline=random_init[f"task_acc_{rep}"])
                        row.update(
                            {
                                f"acc_{rep}": c_rep.average_accuracy,
                                f"forgetting_{rep}": c_rep.forgetting,
                                f"max_forgetting_{rep}": c_rep.max_forgetting,
                                f"bwt_{rep}": c_rep.backward_transfer,
                                f"fwt_{rep}": c_rep.forward_transfer,
                                f"accuracy_matrix_{rep}": m_rep.tolist(),
                            }
                        )
                    matrix = accuracy_matrix(result.evaluations, fractions=bounds)
                    r2_matrix = accuracy_matrix(result.evaluations, key="task_r2", fractions=bounds)
                    cm = continual_metrics(matrix, baseline=random_init["task_acc"])
                    row.update(
                        acc=cm.average_accuracy,
                        forgetting=cm.forgetting,
                        max_forgetting=cm.max_forgetting,
                        forgetting_per_task=cm.forgetting_per_task,
                        bwt=cm.backward_transfer,
                        fwt=cm.forward_transfer,
                        accuracy_matrix=matrix.tolist(),
                        r2_matrix=r2_matrix.tolist(),
                    )
                runs.append(row)
                say(format_ablation_table([row]).splitlines()[-1])

        table = format_ablation_table(runs)
        plots: list[str] = []
        if out is not None and config.plots:
            plots = _write_plots(
                out, runs, plans, evaluator.task_names, random_init, config.probe_on
            )
        seconds = time.perf_counter() - t_start
        report: dict[str, Any] = {
            "step": "step5",
            "preset": config.name,
            "date": _dt.date.today().isoformat(),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "versions": _versions(),
            "plans": {k: repr(p) for k, p in plans.items()},
            "splits": [list(g) for g in splits],
            "random_init": random_init,
            "runs": runs,
            "table": table,
            "plots": plots,
            "seconds": seconds,
            "config": dataclasses.asdict(config),
        }
        if out is not None:
            tmp = out / "metrics.json.tmp"
            tmp.write_text(json.dumps(report, indent=2, default=_json_default) + "\n", "utf-8")
            os.replace(tmp, out / "metrics.json")
        say(
            "\nReplay ablation (linacc: % on the test set, joint linear probe; forgetting, BWT, "
            "FWT: points, from the split-end accuracy matrix; R²: equivariance, linear)\n"
        )
        say(table)
        say(f"\ntotal {seconds:.0f} s" + (f"; results in {out}" if out is not None else ""))
        return report
    finally:
        torch.set_num_threads(old_threads)


def _write_plots(
    out: Path,
    runs: Sequence[Mapping[str, Any]],
    plans: Mapping[str, Any],
    task_names: Sequence[str],
    random_init: Mapping[str, Any],
    representations: Sequence[str],
) -> list[str]:
    from jepa_blocks.streaming.evaluation import plot_accuracy_curves, plot_forgetting_curves

    written: list[str] = []
    for protocol, plan in plans.items():
        prot_runs = [r for r in runs if r["protocol"] == protocol]
        if not prot_runs:
            continue
        bounds = plan.boundary_fractions[:-1] if plan.num_splits > 1 else None
        for rep in representations:
            base_acc = random_init[f"linacc_{rep}"]
            curves = {
                "random init": ([0.0, 1.0], [base_acc] * 2),
                **{
                    r["label"]: (
                        [0.0] + [e["progress"] for e in r["evaluations"]],
                        [base_acc] + [e[f"linacc_{rep}"] for e in r["evaluations"]],
                    )
                    for r in prot_runs
                },
            }
            name = f"linacc_{rep}_{protocol}.png"
            plot_forgetting_curves(
                curves,
                boundaries=bounds,
                path=out / name,
                title=f"Protocol {protocol}: joint linear probe on {rep} over the stream",
                ylabel=f"linear probe accuracy ({rep})",
            )
            written.append(name)
            if plan.num_splits < 2:
                continue
            key = f"task_acc_{rep}"
            first = {
                r["label"]: (
                    [0.0] + [e["progress"] for e in r["evaluations"]],
                    [random_init[key][0]] + [e[key][0] for e in r["evaluations"]],
                )
                for r in prot_runs
            }
            name = f"forgetting_{rep}_{protocol}.png"
            plot_forgetting_curves(
                first,
                boundaries=bounds,
                path=out / name,
                title=f"Protocol {protocol}: split {task_names[0]} over the stream ({rep})",
                ylabel=f"accuracy on split {task_names[0]} ({rep})",
            )
            written.append(name)
            base = prot_runs[0]
            ev = base["evaluations"]
            name = f"tasks_{rep}_{protocol}_{base['label']}.png"
            plot_accuracy_curves(
                [e["progress"] for e in ev],
                [e[key] for e in ev],
                task_names=list(task_names),
                boundaries=bounds,
                path=out / name,
                title=f"Protocol {protocol}, {base['label']}: accuracy per split ({rep})",
                ylabel=f"linear probe accuracy ({rep})",
            )
            written.append(name)
    return written


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None, *, description: str = "") -> int:
    """Command line: ``--smoke``, ``--out DIR`` and ``key=value`` overrides.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
        description: Help text.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        description=description or None, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a complete run in seconds (CI)")
    parser.add_argument("--out", default=None, help="output directory (default runs/step5-<name>)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. stream.repeats=2 protocols=[B]"
    )
    args = parser.parse_intermixed_args(argv)
    try:
        config = cpu_demo_config(smoke=args.smoke, overrides=args.overrides)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    out = args.out or os.path.join("runs", f"step5-{config.name}")
    run_stream_experiment(config, out_dir=out)
    sys.stdout.flush()
    return 0
