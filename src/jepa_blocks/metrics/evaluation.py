"""The evaluation suite of a sequence model: frozen features → probes → a metrics dict.

Probes of the seq-JEPA paper and the follow-up repository (invariance, equivariance by the SIE
protocol of Garrido et al., 2023, leakage), and RankMe effective ranks (Garrido et al., 2023).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, get_args

import torch
from torch import Tensor, nn

from jepa_blocks._validation import (
    check_bool,
    check_choice,
    check_floating_tensor,
    check_int,
    check_positive,
)
from jepa_blocks.metrics.probes import (
    Classifier,
    Regressor,
    fit_regressor,
    linear_probe_accuracy,
    r2_score,
    regression_r2,
)
from jepa_blocks.metrics.rank import effective_rank
from jepa_blocks.runtime import num_threads

__all__ = ["EvalConfig", "FeatureSet", "evaluate", "extract_features", "rank_monitor"]


@dataclasses.dataclass
class EvalConfig:
    """Probes on frozen features (one fixed sequence per image, its own seed).

    Attributes:
        num_observed: ``M_val``, views aggregated into ``z_agg`` (``None``: ``data.num_observed``).
        seed: Seed of the probe sequences and probe training.
        batch_size: Sequences per forward pass while extracting features.
        train_sequences_per_image: Sequences per training image for the probes' training set.
        classifier: Class-probe solver: ``"lbfgs"``, ``"ridge"`` or ``"adam"`` (paper protocol).
        classifier_weight_decay, classifier_epochs: L2 of ``"lbfgs"``/``"ridge"``, epochs of Adam.
        regressor: Regressor on ``[z_1; z_2]``: ``"mlp"`` (SIE protocol) or ``"linear"``.
        regressor_hidden, regressor_depth, regressor_epochs, regressor_lr: The MLP's options.
        baseline, pixel_baseline: Also evaluate the network at initialisation; the raw pixels.
        monitor_size: Test sequences whose effective ranks are logged during training.
        plots: Write the diagnostic figures.
        probe_threads: torch threads while fitting the probes (fastest: 1); ``None``: leave it.
    """

    num_observed: int | None = None
    seed: int = 1234
    batch_size: int = 500
    train_sequences_per_image: int = 1
    classifier: Classifier = "lbfgs"
    classifier_weight_decay: float = 1e-4
    classifier_epochs: int = 300
    regressor: Regressor = "mlp"
    regressor_hidden: int = 1024
    regressor_depth: int = 2
    regressor_epochs: int = 300
    regressor_lr: float = 1e-3
    baseline: bool = True
    pixel_baseline: bool = False
    monitor_size: int = 512
    plots: bool = True
    probe_threads: int | None = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # the annotations are strings here
            value = getattr(self, f.name)
            if f.type == "bool":
                check_bool(value, f.name)
            elif f.type == "int" or (f.type == "int | None" and value is not None):
                check_int(value, f.name, minimum=0 if f.name in ("seed", "regressor_depth") else 1)
        check_choice(self.classifier, "classifier", get_args(Classifier))
        check_choice(self.regressor, "regressor", get_args(Regressor))
        check_positive(self.classifier_weight_decay, "classifier_weight_decay", allow_zero=True)
        check_positive(self.regressor_lr, "regressor_lr")


class FeatureSet(NamedTuple):
    """Frozen features of one split, one sequence per row.

    Attributes:
        z: Encoder outputs of all ``M+1`` views, ``(N, M+1, D)``.
        z_agg: Aggregate of the ``M`` observed views, ``(N, D+E)``.
        labels: Class indices, ``(N,)``.
        actions: Relative actions, ``(N, M, A)``.
        pixels: Flattened first views, ``(N, C·H·W)`` (``None`` unless asked for).
    """

    z: Tensor
    z_agg: Tensor
    labels: Tensor
    actions: Tensor
    pixels: Tensor | None = None


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode, then restore its training flag."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def extract_features(
    model: nn.Module, loader: Any, *, passes: int = 1, pixels: bool = False
) -> FeatureSet:
    """Encode ``loader``'s sequences with ``model`` in eval mode: a float32 CPU :class:`FeatureSet`.

    Args:
        model: A :class:`~jepa_blocks.SeqJEPA` (its ``encode`` and ``aggregate`` are used).
        loader: A :class:`~jepa_blocks.data.SequenceLoader`; pass ``k`` uses its epoch ``k``.
        passes: Passes over the loader (sequences per image).
        pixels: Also keep the flattened first view.

    Raises:
        NonFiniteError: The model returned NaN or inf features.

    Shape:
        - output.z: ``(N, M+1, D)``; output.z_agg: ``(N, D+E)``; output.actions: ``(N, M, A)``
    """
    check_model(model)
    check_int(passes, "passes")
    check_bool(pixels, "pixels")
    zs, aggs, labels, actions, pix = [], [], [], [], []
    with eval_mode(model):
        for k in range(passes):
            loader.set_epoch(k)
            for batch in loader:
                m = batch.views.shape[1] - 1
                z = model.encode(batch.views)  # type: ignore[operator]
                z_agg = model.aggregate(z[:, :m], batch.actions)  # type: ignore[operator]
                zs.append(z.float().cpu())
                aggs.append(z_agg.float().cpu())
                labels.append(batch.labels.cpu())
                actions.append(batch.actions.float().cpu())
                if pixels:
                    pix.append(batch.views[:, 0].flatten(1).float().cpu())
    if not zs:
        raise ValueError("loader must yield at least one batch, got none")
    z, z_agg, lab, act = map(torch.cat, (zs, aggs, labels, actions))
    check_floating_tensor(z, "the encoder's features z", finite=True)
    check_floating_tensor(z_agg, "the aggregate z_agg", finite=True)
    return FeatureSet(z, z_agg, lab, act, torch.cat(pix) if pixels else None)


def check_model(model: Any) -> None:
    """Raise ``TypeError`` unless ``model`` has ``encode`` and ``aggregate`` (a SeqJEPA)."""
    if not all(callable(getattr(model, f, None)) for f in ("encode", "aggregate", "eval")):
        raise TypeError(f"model must be a SeqJEPA-like module, got {type(model).__name__}")


def _check_features(f: Any, name: str) -> None:
    if not isinstance(f, FeatureSet):
        raise TypeError(f"{name} must be a FeatureSet, got {type(f).__name__}")
    for field, ndim in (("z", 3), ("z_agg", 2), ("actions", 3), ("pixels", 2)):
        x, key = getattr(f, field), f"{name}.{field}"
        if x is None and field == "pixels":
            continue
        check_floating_tensor(x, key, min_ndim=ndim)
        if x.ndim != ndim or x.shape[0] != f.z.shape[0] or (field == "z" and x.shape[1] < 2):
            raise ValueError(
                f"{key} must have {ndim} dimensions and N = {f.z.shape[0]} rows (z: M + 1 >= 2 "
                f"views), got {tuple(x.shape)}"
            )
        check_floating_tensor(x, key, finite=True)  # after the shape check


def evaluate(train: FeatureSet, test: FeatureSet, config: EvalConfig) -> dict[str, Any]:
    """Probe metrics of frozen features (test-set scores; accuracies as fractions).

    Args:
        train, test: Features of the probes' training and test splits.
        config: Probe settings.

    Returns:
        ``linacc`` (class from ``z_agg``), ``r2`` (action ``a_1`` from ``[z_1; z_2]``; per dim:
        ``r2_per_dim``), ``leakage_linacc`` (class from ``z_1``), ``leakage_r2`` (``a_1`` from
        ``z_agg``, linear), the gaps ``*_gap``, RankMe ``rank_z_agg``, ``rank_z`` (test ``z_1``),
        ``rank_frac_*`` (over ``dim_*``) and ``pixel_linacc`` (class from raw first views).
    """
    if not isinstance(config, EvalConfig):
        raise TypeError(f"config must be an EvalConfig, got {type(config).__name__}")
    for name, f in (("train", train), ("test", test)):
        _check_features(f, name)
    with num_threads(config.probe_threads):
        return _evaluate(train, test, config)


def classifier_kwargs(config: EvalConfig) -> dict[str, Any]:
    """``config``'s :func:`linear_probe_accuracy` options, with a generator seeded by ``seed``."""
    kw: dict[str, Any] = {"solver": config.classifier}
    if config.classifier == "adam":
        kw.update(epochs=config.classifier_epochs, standardize=False)
    else:
        kw["weight_decay"] = config.classifier_weight_decay
    kw["generator"] = torch.Generator().manual_seed(config.seed)
    return kw


def _evaluate(train: FeatureSet, test: FeatureSet, config: EvalConfig) -> dict[str, Any]:
    cls_kw = classifier_kwargs(config)

    def class_probe(x_tr: Tensor, x_te: Tensor) -> Any:  # a ProbeResult
        return linear_probe_accuracy(x_tr, train.labels, x_te, test.labels, **cls_kw)

    lin, leak_lin = class_probe(train.z_agg, test.z_agg), class_probe(train.z[:, 0], test.z[:, 0])
    x_tr, x_te = (torch.cat((f.z[:, 0], f.z[:, 1]), dim=1) for f in (train, test))
    a_tr, a_te = train.actions[:, 0], test.actions[:, 0]
    reg_kw: dict[str, Any] = {"kind": config.regressor}
    if config.regressor == "mlp":
        reg_kw |= {
            k: getattr(config, f"regressor_{k}") for k in ("hidden", "depth", "epochs", "lr")
        }
        reg_kw.update(seed=config.seed, generator=cls_kw["generator"])
    regressor = fit_regressor(x_tr, a_tr, **reg_kw)
    with torch.no_grad():
        pred = regressor(x_te)
    r2_dims = [r2_score(a_te[:, j], pred[:, j]) for j in range(a_te.shape[1])]
    r2 = r2_score(a_te, pred)
    leak_r2 = regression_r2(train.z_agg, a_tr, test.z_agg, a_te, kind="linear").test
    d_agg, d_z = test.z_agg.shape[1], test.z.shape[2]
    rank_agg, rank_z = effective_rank(test.z_agg), effective_rank(test.z[:, 0])
    out: dict[str, Any] = {
        "linacc": lin.test,
        "linacc_train": lin.train,
        "r2": r2,
        "leakage_linacc": leak_lin.test,
        "leakage_r2": leak_r2,
        "linacc_gap": lin.test - leak_lin.test,
        "r2_gap": r2 - leak_r2,
        "rank_z_agg": rank_agg,
        "rank_z": rank_z,
        "rank_frac_z_agg": rank_agg / d_agg,
        "rank_frac_z": rank_z / d_z,
        "dim_z_agg": d_agg,
        "dim_z": d_z,
        "r2_per_dim": r2_dims,
    }
    if train.pixels is not None and test.pixels is not None:
        out["pixel_linacc"] = class_probe(train.pixels, test.pixels).test
    return out


def rank_monitor(batch: Any) -> Callable[[nn.Module, int], dict[str, float]]:
    """An ``eval_fn`` for :func:`jepa_blocks.train.fit`: effective ranks on one fixed batch.

    Args:
        batch: A batch with ``views`` ``(B, M+1, ...)`` and ``actions`` ``(B, M, A)``.

    Returns:
        ``(model, epoch) → {"rank_z_agg", "rank_z"}``: RankMe of ``z_agg`` and of the first ``z``.
    """
    views = getattr(batch, "views", None)
    if not isinstance(views, Tensor) or views.ndim < 2 or views.shape[1] < 2:
        got = tuple(views.shape) if isinstance(views, Tensor) else type(views).__name__
        raise ValueError(f"batch.views must hold at least 2 views (B, M+1, ...), got {got}")
    m = views.shape[1] - 1

    def monitor(model: nn.Module, epoch: int) -> dict[str, float]:
        del epoch
        z = model.encode(batch.views)  # type: ignore[operator]
        z_agg = model.aggregate(z[:, :m], batch.actions)  # type: ignore[operator]
        return {
            "rank_z_agg": effective_rank(z_agg.float()),
            "rank_z": effective_rank(z[:, 0].float()),
        }

    return monitor
