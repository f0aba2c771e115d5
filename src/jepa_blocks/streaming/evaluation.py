r"""Continual evaluation: probes at checkpoints, accuracy matrix, forgetting and transfer, plots.

:math:`R_{i,j}` is the accuracy on task :math:`j` after training through task :math:`i` (Lopez-Paz
& Ranzato, 2017, "Gradient Episodic Memory for Continual Learning", NeurIPS, §4; Chaudhry et al.,
2018, "Riemannian Walk for Incremental Learning", ECCV, for the forgetting).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

from jepa_blocks._validation import (
    check_bool,
    check_choice,
    check_finite,
    check_int,
    check_positive,
)
from jepa_blocks.metrics import extract_features, fit_linear_classifier, fit_regressor, r2_score
from jepa_blocks.metrics.probes import Classifier
from jepa_blocks.runtime import num_threads

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ContinualMetrics",
    "ProbeTask",
    "StreamEvaluator",
    "accuracy_matrix",
    "average_accuracy",
    "backward_transfer",
    "continual_metrics",
    "forgetting",
    "forward_transfer",
    "plot_accuracy_curves",
    "plot_forgetting_curves",
]

PathLike = str | os.PathLike[str]
Representation = Literal["z_agg", "z"]
PerTask = Literal["joint", "separate"]


def _accuracy(pred: Tensor, labels: Tensor) -> float:
    return float((pred == labels).double().mean())


class ProbeTask(NamedTuple):
    """Probe data of one task (split): its ``name`` and ``train`` and ``test`` loaders.

    ``train`` is re-read at every checkpoint with ``set_epoch(0)`` (e.g. a
    :class:`~jepa_blocks.data.SequenceLoader` with ``shuffle=False``).
    """

    name: str
    train: Any
    test: Any


class StreamEvaluator:
    r"""Linear probe and equivariance R² at a checkpoint, overall and per task.

    ``linacc``: one linear classifier over all classes and tasks (CaSSLe's offline linear
    evaluation, Fini et al. 2022); ``r2``: the R² of :math:`a_1` from :math:`[z_1; z_2]`;
    ``task_*[j]``: on task ``j``'s test items; ``*_<rep>``: per representation (the first: ``*``).

    Args:
        tasks: One :class:`ProbeTask` per split (at least one).
        representations: Features of the class probes, ``"z_agg"`` and/or ``"z"`` (first view).
        per_task: ``"joint"`` (task accuracies from the joint classifier) or ``"separate"``.
        classifier: Solver of :func:`~jepa_blocks.metrics.fit_linear_classifier`.
        weight_decay: L2 strength of the classifier.
        r2: Also fit the linear equivariance regressors.
        threads: torch threads while probing (``None``: leave as is).
        seed: Seed of the probe generators.

    Shape:
        - model input: the loaders' ``views (B, M+1, C, H, W)`` and ``actions (B, M, A)``
        - output: ``{"linacc", "r2", "seconds", …}``, ``task_*``: ``[T]``
    """

    def __init__(
        self,
        tasks: Sequence[ProbeTask],
        *,
        representations: Sequence[Representation] = ("z_agg",),
        per_task: PerTask = "joint",
        classifier: Classifier = "lbfgs",
        weight_decay: float = 1e-4,
        r2: bool = True,
        threads: int | None = 1,
        seed: int = 0,
    ) -> None:
        self.tasks = tasks = list(tasks)
        if not tasks or not all(isinstance(t, ProbeTask) for t in tasks):
            raise TypeError("tasks must be a non-empty sequence of ProbeTask")
        self.representations = reps = tuple(representations)
        if not reps or len(set(reps)) != len(reps):
            raise ValueError(f"representations must be distinct and non-empty, got {reps}")
        for r in reps:
            check_choice(r, "representations", get_args(Representation))
        self.per_task = check_choice(per_task, "per_task", get_args(PerTask))
        self.classifier = check_choice(classifier, "classifier", get_args(Classifier))
        self.weight_decay = check_positive(weight_decay, "weight_decay", allow_zero=True)
        self.r2 = check_bool(r2, "r2")
        self.threads = None if threads is None else check_int(threads, "threads")
        self.seed = check_int(seed, "seed", minimum=0)

    @property
    def task_names(self) -> list[str]:
        """Names of the tasks, in order."""
        return [t.name for t in self.tasks]

    def features(self, model: nn.Module) -> list[tuple[Any, Any]]:
        """Features ``(train, test)`` per task: :func:`~jepa_blocks.metrics.extract_features`."""
        return [
            (extract_features(model, t.train), extract_features(model, t.test)) for t in self.tasks
        ]

    def __call__(self, model: nn.Module, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Probe ``model``; ``info`` is ignored."""
        del info
        t0 = time.perf_counter()
        with num_threads(self.threads):
            out = self._probe(self.features(model))
        out["seconds"] = time.perf_counter() - t0
        return out

    def _probe(self, feats: list[tuple[Any, Any]]) -> dict[str, Any]:
        def cat(part: int, field: str) -> Tensor:
            return torch.cat([getattr(f[part], field) for f in feats])

        def pair(part: int) -> Tensor:  # [z_1; z_2]
            return cat(part, "z")[:, :2].flatten(1)

        kw: dict[str, Any] = {"solver": self.classifier, "weight_decay": self.weight_decay}
        kw["generator"] = torch.Generator().manual_seed(self.seed)
        y_tr, y_te = cat(0, "labels"), cat(1, "labels")
        num_classes = int(max(int(y_tr.max()), int(y_te.max()))) + 1
        sizes = [int(f[1].labels.numel()) for f in feats]
        parts = torch.split(torch.arange(y_te.numel()), sizes)
        out: dict[str, Any] = {}
        for rep in self.representations:

            def x(f: Any, rep: str = rep) -> Tensor:
                return f.z_agg if rep == "z_agg" else f.z[:, 0]

            joint = fit_linear_classifier(
                torch.cat([x(f[0]) for f in feats]), y_tr, num_classes=num_classes, **kw
            )
            with torch.no_grad():
                pred = joint(torch.cat([x(f[1]) for f in feats])).argmax(dim=1)
            task_acc = [_accuracy(pred[part], y_te[part]) for part in parts]
            if self.per_task == "separate" and len(feats) > 1:
                task_acc = []
                for tr, te in feats:
                    probe = fit_linear_classifier(x(tr), tr.labels, num_classes=num_classes, **kw)
                    with torch.no_grad():
                        task_acc.append(_accuracy(probe(x(te)).argmax(dim=1), te.labels))
            out[f"linacc_{rep}"] = _accuracy(pred, y_te)
            out[f"task_acc_{rep}"] = task_acc
        first = self.representations[0]
        out["linacc"], out["task_acc"] = out[f"linacc_{first}"], out[f"task_acc_{first}"]
        if self.r2:
            a_tr, a_te = cat(0, "actions")[:, 0], cat(1, "actions")[:, 0]
            reg = fit_regressor(pair(0), a_tr, kind="linear", weight_decay=1e-6)
            with torch.no_grad():
                a_hat = reg(pair(1))
            out["r2"] = r2_score(a_te, a_hat)
            out["task_r2"] = [r2_score(a_te[part], a_hat[part]) for part in parts]
        return out


def accuracy_matrix(
    evaluations: Sequence[Mapping[str, Any]],
    *,
    key: str = "task_acc",
    fractions: Sequence[float] | None = None,
    tol: float = 1e-9,
) -> Tensor:
    """Stack the per-task values of checkpoint records into an ``(R, T)`` float64 matrix.

    Args:
        evaluations: Records of ``StreamResult.evaluations`` (each with ``fraction`` and ``key``).
        key: The per-task list to stack (``"task_acc"`` or ``"task_r2"``).
        fractions: Nominal checkpoint fractions of the rows (e.g. the plan's
            ``boundary_fractions``, for the square matrix); ``None``: every record, in order.
        tol: Tolerance when matching fractions.
    """
    rows = list(evaluations)
    if fractions is not None:
        have = [float(e["fraction"]) for e in rows]
        near = [[e for e, h in zip(rows, have) if abs(h - float(f)) <= tol] for f in fractions]
        for f, match in zip(fractions, near):
            if not match:
                raise ValueError(f"no checkpoint at fraction {f}; have {have}")
        rows = [match[0] for match in near]
    if not rows:
        raise ValueError("evaluations must not be empty")
    for e in rows:
        if key not in e:
            raise ValueError(f"checkpoint record at fraction {e.get('fraction')} has no {key!r}")
    widths = {len(e[key]) for e in rows}
    if len(widths) != 1:
        raise ValueError(f"every record must have the same number of tasks, got {sorted(widths)}")
    return torch.tensor([[float(v) for v in e[key]] for e in rows], dtype=torch.float64)


def _square(matrix: Tensor, needs: str = "") -> Tensor:
    """The ``(T, T)`` float64 matrix; with ``needs`` (what is computed), ``T >= 2``."""
    m = check_finite(torch.as_tensor(matrix, dtype=torch.float64), "matrix")
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1:
        raise ValueError(
            "matrix must be a square (T, T) accuracy matrix (row i: after task i), got shape "
            f"{tuple(m.shape)}"
        )
    if needs and m.shape[0] < 2:
        raise ValueError(f"{needs} needs at least 2 tasks")
    return m


def forgetting(matrix: Tensor) -> Tensor:
    r"""Per-task forgetting :math:`f_j = \max_{j \le l < T-1} R_{l,j} - R_{T-1,j}`, ``j < T-1``.

    Args:
        matrix: Accuracy matrix :math:`R`, row ``i`` after task ``i``.

    Shape:
        - matrix: ``(T, T)``; output: ``(T-1,)``, float64 (empty for ``T = 1``)
    """
    m = _square(matrix)
    t = m.shape[0]
    if t == 1:
        return m.new_zeros(0)
    return torch.stack([m[j : t - 1, j].max() - m[t - 1, j] for j in range(t - 1)])


def backward_transfer(matrix: Tensor) -> float:
    r"""BWT :math:`= \frac{1}{T-1}\sum_{j<T-1}(R_{T-1,j} - R_{j,j})` (Lopez-Paz & Ranzato, 2017).

    Shape:
        - matrix: ``(T, T)`` with ``T ≥ 2``
    """
    m = _square(matrix, "backward transfer")
    t = m.shape[0]
    return float((m[t - 1, : t - 1] - m.diagonal()[: t - 1]).mean())


def forward_transfer(matrix: Tensor, baseline: Sequence[float] | Tensor) -> float:
    r"""FWT :math:`= \frac{1}{T-1}\sum_{j\ge1}(R_{j-1,j} - b_j)` (Lopez-Paz & Ranzato, 2017).

    Args:
        matrix: Accuracy matrix :math:`R`.
        baseline: :math:`b`, each task's accuracy with the randomly initialised encoder (CaSSLe).

    Shape:
        - matrix: ``(T, T)`` with ``T ≥ 2``; baseline: ``(T,)``
    """
    m = _square(matrix)
    b = check_finite(torch.as_tensor(baseline, dtype=torch.float64).flatten(), "baseline")
    if b.numel() != m.shape[0]:
        raise ValueError(f"baseline must have one value per task ({m.shape[0]}), got {b.numel()}")
    _square(m, "forward transfer")
    return float((m.diagonal(offset=1) - b[1:]).mean())


def average_accuracy(matrix: Tensor) -> float:
    """ACC: mean of the last row (accuracy on every task after the whole stream).

    Shape:
        - matrix: ``(T, T)``
    """
    return float(_square(matrix)[-1].mean())


class ContinualMetrics(NamedTuple):
    """Summary of an accuracy matrix (:func:`continual_metrics`): ACC, BWT, FWT and forgetting.

    With one task: ``forgetting = 0``, BWT and FWT ``nan`` (FWT also without a baseline).
    """

    average_accuracy: float
    forgetting: float
    max_forgetting: float
    forgetting_per_task: list[float]
    backward_transfer: float
    forward_transfer: float


def continual_metrics(
    matrix: Tensor, *, baseline: Sequence[float] | Tensor | None = None
) -> ContinualMetrics:
    """ACC, forgetting, BWT and FWT of a square accuracy matrix.

    Args:
        matrix: Accuracy matrix, row ``i`` after task ``i``.
        baseline: Random-init accuracy per task, for FWT.

    Shape:
        - matrix: ``(T, T)``; baseline: ``(T,)``
    """
    m = _square(matrix)
    t = m.shape[0]
    f = forgetting(m)
    nan = float("nan")
    return ContinualMetrics(
        average_accuracy=average_accuracy(m),
        forgetting=float(f.mean()) if t > 1 else 0.0,
        max_forgetting=float(f.max()) if t > 1 else 0.0,
        forgetting_per_task=[float(v) for v in f],
        backward_transfer=backward_transfer(m) if t > 1 else nan,
        forward_transfer=forward_transfer(m, baseline) if baseline is not None and t > 1 else nan,
    )


def _curves_figure(
    curves: list[tuple[str, list[float], list[float]]],
    boundaries: Sequence[float] | None,
    labels: tuple[str, str],
    figsize: tuple[float, float],
    path: PathLike | None,
    dpi: int,
) -> Figure:
    """Lines ``(label, progress fractions, values)``; ``labels``: title and y label."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    ax = fig.add_subplot()
    for b in boundaries or ():
        ax.axvline(100 * float(b), color="grey", linewidth=0.8, linestyle=":")
    for label, xs, ys in curves:
        ax.plot([100 * x for x in xs], ys, marker="o", markersize=3, label=label)
    ax.set_xlabel("stream seen (%)")
    ax.set_ylabel(labels[1])
    ax.legend(fontsize="small", ncol=2)
    ax.set_title(labels[0])
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi, format="png")
    return fig


def plot_accuracy_curves(
    progress: Sequence[float],
    accuracies: Tensor | Sequence[Sequence[float]],
    *,
    task_names: Sequence[str] | None = None,
    boundaries: Sequence[float] | None = None,
    path: PathLike | None = None,
    title: str = "Probe accuracy per task over the stream",
    ylabel: str = "linear probe accuracy",
    dpi: int = 120,
) -> Figure:
    """One line per task: its accuracy at each checkpoint against stream progress.

    Args:
        progress: Fraction of the stream seen at each checkpoint.
        accuracies: Per-checkpoint, per-task values.
        task_names: Legend labels (default ``task 0`` …).
        boundaries: Split ends (fractions) drawn as vertical lines.
        path: Save the figure there as PNG (at ``dpi``).
        title, ylabel: Axes title and y-axis label.

    Shape:
        - progress: ``(R,)``; accuracies: ``(R, T)``
    """
    acc = torch.as_tensor(accuracies, dtype=torch.float64)
    xs = [float(p) for p in progress]
    if acc.ndim != 2 or acc.shape[0] != len(xs):
        raise ValueError(
            f"accuracies must have shape (len(progress)={len(xs)}, T), got {tuple(acc.shape)}"
        )
    t = acc.shape[1]
    names = list(task_names) if task_names is not None else [f"task {j}" for j in range(t)]
    if len(names) != t:
        raise ValueError(f"task_names must have {t} entries, got {len(names)}")
    curves = [(name, xs, acc[:, j].tolist()) for j, name in enumerate(names)]
    return _curves_figure(curves, boundaries, (title, ylabel), (5.5, 3.6), path, dpi)


def plot_forgetting_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    boundaries: Sequence[float] | None = None,
    path: PathLike | None = None,
    title: str = "Accuracy on the first split over the stream",
    ylabel: str = "linear probe accuracy",
    dpi: int = 120,
) -> Figure:
    """Compare runs: one line per run, e.g. the first split's accuracy as the stream moves on.

    Args:
        curves: ``{label: (progress, values)}``, progress as fractions of the stream.
        boundaries: Split ends (fractions) drawn as vertical lines.
        path: Save the figure there as PNG (at ``dpi``).
        title, ylabel: Axes title and y-axis label.
    """
    if not curves:
        raise ValueError("curves must hold at least one run")
    lines = []
    for label, (xs, ys) in curves.items():
        if len(xs) != len(ys):
            raise ValueError(f"curves[{label!r}]: {len(xs)} progress values but {len(ys)} values")
        lines.append((label, [float(x) for x in xs], [float(y) for y in ys]))
    return _curves_figure(lines, boundaries, (title, ylabel), (6.0, 3.8), path, dpi)
