"""Step 5's parts: the config, the protocols and ablation rows, the probes, the report.

``step5_streaming_continual.py`` reads a :class:`Step5Config`: the recipe config of steps 1-2
(:class:`common.RecipeConfig`: ``data``, ``model``, ``train``, ``eval``, ``gates``) plus a
``stream:`` section (:class:`~jepa_blocks.streaming.StreamConfig`: repeats ``K``, replay ratio,
storage, checkpoint fractions) and the experiment's own keys (``protocols``, ``buffers``,
``buffer_sizes``, ``mitigations`` …), so overrides such as ``protocols=[B]``,
``stream.repeats=2`` or ``"mitigations=[ewc, si]"`` go through the one parser.

* :func:`build_plans` — the stream plans of the protocols: **A**, one stationary i.i.d. pass;
  **B**, class-incremental splits (Split-MNIST), optionally with blurred boundaries;
* :func:`ablation_methods` — the rows of the ablation: no buffer, every buffer at every size,
  the EWC / SI rows;
* :func:`build_evaluator` — the :class:`~jepa_blocks.streaming.StreamEvaluator` over one probe
  task per split (fixed probe sequences, ``probe_train_per_class`` training images per class);
* :func:`summarize_run` — a run's row: final probes and, for split protocols, the accuracy
  matrices, forgetting, BWT and FWT against the random-init network;
* :func:`format_ablation_table`, :func:`write_plots` — the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from common import RecipeConfig, markdown_table
from jepa_blocks.streaming import (
    BUFFER_KINDS,
    ProbeTask,
    StreamConfig,
    StreamEvaluator,
    StreamPlan,
    StreamResult,
    accuracy_matrix,
    blur_boundaries,
    class_incremental_stream,
    continual_metrics,
    plot_accuracy_curves,
    plot_forgetting_curves,
    stationary_stream,
)
from parts import RecipeData, make_loader

__all__ = [
    "ABLATION_COLUMNS",
    "Method",
    "Step5Config",
    "ablation_methods",
    "build_evaluator",
    "build_plans",
    "format_ablation_table",
    "summarize_run",
    "write_plots",
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


@dataclasses.dataclass
class Step5Config(RecipeConfig):
    """The step-5 experiment: the recipe config plus the stream and the ablation.

    The loop's settings (lr, warm-up steps, ``schedule: constant``, seed, device …) are in
    ``train``; ``train.seed`` is the experiment's one seed: it also seeds the model
    initialisation, the plans, the streams, the buffers, the probe subset and the probes.
    ``data.batch_size`` is the number of fresh items per stream batch; ``data.train_subset`` /
    ``data.test_subset`` shrink the stream and the test set. The probes use
    ``eval.classifier``, ``eval.classifier_weight_decay``, ``eval.batch_size``,
    ``eval.probe_threads`` and ``eval.plots``.

    Attributes:
        stream: Stream settings (:class:`~jepa_blocks.streaming.StreamConfig`: repeats ``K``,
            replay ratio, storage, checkpoint fractions, consolidation).
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
    """

    step: str = "step5"
    variant: str = ""
    stream: StreamConfig = dataclasses.field(default_factory=StreamConfig)
    protocols: list[Literal["A", "B"]] = dataclasses.field(default_factory=lambda: ["A", "B"])
    num_splits: int = 5
    blur: float = 0.0
    buffers: list[Literal["none", "fifo", "reservoir", "minred"]] = dataclasses.field(
        default_factory=lambda: ["none", "fifo", "reservoir", "minred"]
    )
    ablate: list[Literal["A", "B"]] = dataclasses.field(default_factory=lambda: ["B"])
    buffer_sizes: list[int] = dataclasses.field(default_factory=lambda: [256, 1024])
    minred_max_uses: int | None = None
    mitigations: list[Literal["ewc", "si"]] = dataclasses.field(default_factory=list)
    ewc_weight: float = 1.0e4
    si_weight: float = 5.0
    probe_train_per_class: int | None = 100
    probe_on: list[Literal["z", "z_agg"]] = dataclasses.field(
        default_factory=lambda: ["z", "z_agg"]
    )
    per_task: Literal["joint", "separate"] = "joint"

    def __post_init__(self) -> None:
        for key, allowed in (
            ("protocols", ("A", "B")),
            ("ablate", ("A", "B")),
            ("buffers", ("none", *BUFFER_KINDS)),
            ("mitigations", ("ewc", "si")),
            ("probe_on", ("z", "z_agg")),
        ):
            bad = [v for v in getattr(self, key) if v not in allowed]
            if bad:
                raise ValueError(f"{key} must hold items of {allowed}, got {bad}")
        if not self.probe_on or len(set(self.probe_on)) != len(self.probe_on):
            raise ValueError(f"probe_on must be distinct and non-empty, got {self.probe_on}")
        if any(isinstance(s, bool) or s < 1 for s in self.buffer_sizes):
            raise ValueError(f"buffer_sizes must be ints >= 1, got {self.buffer_sizes}")
        if self.num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {self.num_splits}")


#: One row of the ablation: ``(buffer kind or "none" / "ewc" / "si", size, regulariser)``.
Method = tuple[str, int | None, str | None]


def ablation_methods(config: Step5Config) -> list[Method]:
    """The rows of an ablated protocol: each buffer at each size, then the mitigations."""
    methods: list[Method] = []
    for kind in config.buffers:
        if kind == "none":
            methods.append(("none", None, None))
        else:
            methods += [(kind, size, None) for size in config.buffer_sizes]
    methods += [(m, None, m) for m in config.mitigations]
    return methods


def build_plans(
    labels: torch.Tensor, splits: Sequence[Sequence[int]], config: Step5Config
) -> dict[str, StreamPlan]:
    """The stream plan of each protocol of ``config`` over the training images (``labels``)."""
    seed = config.train.seed
    plans: dict[str, StreamPlan] = {}
    if "A" in config.protocols:
        plans["A"] = stationary_stream(int(labels.numel()), seed=seed)
    if "B" in config.protocols:
        plan = class_incremental_stream(labels, splits=splits, seed=seed)
        if config.blur > 0:
            plan = blur_boundaries(plan, width=config.blur, seed=seed)
        plans["B"] = plan
    return plans


def _per_class_subset(labels: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` random items of every class (all items for ``None``)."""
    if per_class is None:
        return torch.arange(labels.numel())
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c, as_tuple=False).flatten()
        keep.append(members[torch.randperm(members.numel(), generator=gen)[:per_class]])
    return torch.cat(keep).sort().values


def build_evaluator(
    data: RecipeData,
    splits: Sequence[Sequence[int]],
    config: Step5Config,
    *,
    device: torch.device,
) -> StreamEvaluator:
    """The checkpoint evaluator: one :class:`~jepa_blocks.streaming.ProbeTask` per split.

    Each task's probe-training sequences come from ``probe_train_per_class`` training images
    per class of the split, its test sequences from the split's test images; both are fixed
    (their own seeds), so every checkpoint probes the same sequences.
    """
    train_idx = _per_class_subset(
        data.train.labels, config.probe_train_per_class, config.train.seed + 11
    )
    probe_train = data.train.subset(train_idx)

    def loader(source: Any, seed: int) -> Any:
        return make_loader(
            source, data.views, num_observed=config.data.num_observed,
            batch_size=config.eval.batch_size, seed=seed, device=device, shuffle=False,
            drop_last=False,
        )  # fmt: skip

    tasks = []
    for j, group in enumerate(splits):
        g = torch.tensor(list(group))
        tr = probe_train.subset(torch.nonzero(torch.isin(probe_train.labels, g)).flatten())
        te = data.test.subset(torch.nonzero(torch.isin(data.test.labels, g)).flatten())
        name = "-".join(str(c) for c in group)
        tasks.append(ProbeTask(name, loader(tr, 1000 + j), loader(te, 2000 + j)))
    return StreamEvaluator(
        tasks,
        representations=tuple(config.probe_on),
        per_task=config.per_task,
        classifier=config.eval.classifier,
        weight_decay=config.eval.classifier_weight_decay,
        threads=config.eval.probe_threads,
        seed=config.train.seed,
    )


def summarize_run(
    result: StreamResult,
    *,
    protocol: str,
    method: Method,
    plan: StreamPlan,
    random_init: Mapping[str, Any],
    representations: Sequence[str],
) -> dict[str, Any]:
    """A run's row: final probes, timings, buffer size and, for split plans, continual metrics.

    For a plan with several splits the split-end checkpoints give the accuracy matrix of every
    probed representation (``accuracy_matrix_<rep>``; ``accuracy_matrix`` for the first) and
    from it the average accuracy, forgetting, BWT and FWT against ``random_init``'s per-split
    accuracies (:func:`~jepa_blocks.streaming.continual_metrics`).
    """
    kind, size, regularizer = method
    final = result.evaluations[-1]
    history = result.history
    penalties = [h["penalty"] for h in history if "penalty" in h]
    row: dict[str, Any] = {
        "protocol": protocol,
        "method": kind,
        "size": size,
        "label": kind if size is None else f"{kind}-{size}",
        "linacc": final["linacc"],
        "linacc_z": final.get("linacc_z"),
        "linacc_z_agg": final.get("linacc_z_agg"),
        "r2": final["r2"],
        "train_seconds": result.seconds["train"],
        "eval_seconds": result.seconds["eval"],
        "steps": result.step,
        "buffer_final_size": len(result.buffer) if result.buffer is not None else 0,
        "evaluations": result.evaluations,
        "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
        "mean_penalty": (
            sum(penalties) / max(1, len(penalties)) if regularizer is not None else None
        ),
    }
    if plan.num_splits < 2:
        return row
    bounds = plan.boundary_fractions
    for rep in representations:
        m_rep = accuracy_matrix(result.evaluations, key=f"task_acc_{rep}", fractions=bounds)
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
    return row


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
        rows: Run rows of :func:`summarize_run` (``protocol``, ``method``, ``size``,
            ``linacc_z``, ``linacc_z_agg``, ``r2`` and, for split protocols,
            ``forgetting_z``, ``forgetting_z_agg``, ``bwt_z``, ``fwt_z``; missing: —).
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
    return markdown_table(ABLATION_COLUMNS, body)


def write_plots(
    out: Path,
    runs: Sequence[Mapping[str, Any]],
    plans: Mapping[str, StreamPlan],
    task_names: Sequence[str],
    random_init: Mapping[str, Any],
    representations: Sequence[str],
) -> list[str]:
    """The figures of every protocol; returns the file names written into ``out``.

    Per protocol and probed representation: the joint linear probe over the stream
    (``linacc_<rep>_<protocol>.png``, every run against the random-init network) and, for split
    protocols, the accuracy on the first split (``forgetting_…``) and every split's accuracy
    for the first run (``tasks_…``).
    """
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
