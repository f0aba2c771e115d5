"""Probes on frozen features: invariance (class), equivariance (relative action, R²) and leakage.

Protocols of seq-JEPA (Ghaemi et al., arXiv 2505.03176, §3.3 and A.2), SIE (Garrido et al., 2023)
and the follow-up ``kaikun213/seq-jepa`` (``docs/reference/metrics-and-gates.md``: leakage).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepa_blocks._validation import (
    check_bool,
    check_choice,
    check_floating_tensor,
    check_int,
    check_positive,
    check_type,
)
from jepa_blocks.metrics.rank import check_matrix

#: Solver of :func:`fit_linear_classifier`.
Classifier = Literal["lbfgs", "ridge", "adam"]
Regressor = Literal["mlp", "linear"]
RegressorSolver = Literal["lstsq", "adam"]

__all__ = [
    "LeakageReport",
    "ProbeFeatures",
    "ProbeResult",
    "accuracy",
    "equivariance_r2",
    "fit_linear_classifier",
    "fit_regressor",
    "leakage",
    "linear_probe_accuracy",
    "probes_per_num_views",
    "r2_score",
    "regression_r2",
]


class ProbeResult(NamedTuple):
    """Score of a probe on its training and test features."""

    train: float
    test: float


def _check_labels(y: Tensor, name: str, n: int, num_classes: int | None = None) -> Tensor:
    check_type(y, name, Tensor, "a torch.Tensor of class indices")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) like the features, got {tuple(y.shape)}")
    if n and int(y.min()) < 0:
        raise ValueError(f"{name} must hold class indices >= 0, got min {int(y.min())}")
    if n and num_classes is not None and int(y.max()) >= num_classes:
        raise ValueError(f"{name} must hold class indices < {num_classes}, got max {int(y.max())}")
    return y


def _check_targets(y: Tensor, name: str, n: int) -> Tensor:
    check_floating_tensor(y, name, min_ndim=1, shape_doc="(N,) or (N, K)")
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) or ({n}, K), got {tuple(y.shape)}")
    return check_floating_tensor(y, name, finite=True)  # after the shape check


def _check_fit_options(wd: float, std: bool, epochs: int, bs: int, lr: float, gen: Any) -> None:
    check_positive(wd, "weight_decay", allow_zero=True)
    check_bool(std, "standardize")
    check_int(epochs, "epochs")
    check_int(bs, "batch_size")
    check_positive(lr, "lr")
    if gen is not None and not isinstance(gen, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(gen).__name__}")


class _Standardize(nn.Module):
    """``(x − mean) / std`` with the statistics of the training features ``x`` (std 0 → 1)."""

    mean: Tensor
    std: Tensor

    def __init__(self, x: Tensor) -> None:
        super().__init__()
        std = x.std(dim=0, unbiased=False)
        self.register_buffer("mean", x.mean(dim=0))
        self.register_buffer("std", torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def accuracy(predictions: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy ``(1/N) Σ 1[argmax ŷ_n = y_n]``, a fraction in ``[0, 1]``.

    Args:
        predictions: Logits / scores ``(N, C)`` or predicted class indices ``(N,)``.
        labels: True class indices.

    Shape:
        - predictions: ``(N, C)`` or ``(N,)``; labels: ``(N,)``

    Raises:
        NonFiniteError: NaN or inf scores (their argmax would be meaningless).
        ValueError: Labels outside ``[0, C)``, or shapes that do not match.
    """
    if not isinstance(predictions, Tensor) or predictions.ndim not in (1, 2):
        raise ValueError(
            "predictions must be a tensor of shape (N, C) (scores) or (N,) (classes), got "
            f"{getattr(predictions, 'shape', type(predictions).__name__)}"
        )
    n = predictions.shape[0]
    if n < 1:
        raise ValueError("predictions must hold at least one sample, got N = 0")
    if predictions.ndim == 1:
        pred = _check_labels(predictions, "predictions", n)
    else:
        check_matrix(predictions, "predictions")
        pred = predictions.argmax(dim=1)
    _check_labels(labels, "labels", n, predictions.shape[1] if predictions.ndim == 2 else None)
    return float((pred.to(labels.device) == labels).double().mean())


def r2_score(y_true: Tensor, y_pred: Tensor) -> float:
    """Coefficient of determination, averaged uniformly over outputs (scikit-learn's ``r2_score``).

    ``R² = (1/K) Σ_k [1 − Σ_n (y_nk − ŷ_nk)² / Σ_n (y_nk − ȳ_k)²]``, in float64; a constant output
    scores 1 if predicted exactly, else 0 (scikit-learn's ``force_finite=True``).

    Shape:
        - y_true: ``(N,)`` or ``(N, K)``; y_pred: same as ``y_true``
    """
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        check_floating_tensor(y, name, min_ndim=1, shape_doc="(N,) or (N, K)", finite=True)
    if y_true.shape != y_pred.shape or y_true.ndim > 2:
        raise ValueError(
            "y_true and y_pred must have the same shape (N,) or (N, K), got "
            f"{tuple(y_true.shape)} and {tuple(y_pred.shape)}"
        )
    if y_true.shape[0] < 2:
        raise ValueError(f"r2_score needs at least 2 samples, got {y_true.shape[0]}")
    yt = y_true.double().reshape(y_true.shape[0], -1)
    yp = y_pred.double().to(yt.device).reshape(yt.shape)
    num = ((yt - yp) ** 2).sum(dim=0)
    den = ((yt - yt.mean(dim=0)) ** 2).sum(dim=0)
    # A constant column is detected exactly (its rounded mean could leave den ≈ 1e-33 > 0).
    ok = (den != 0) & (yt.amax(dim=0) != yt.amin(dim=0))
    score = torch.where(
        ok, 1 - num / torch.where(ok, den, torch.ones_like(den)), (num == 0).double()
    )
    return float(score.mean())


def _ridge(x: Tensor, y: Tensor, weight_decay: float) -> nn.Linear:
    """Least squares ``min ‖[X 1] W − Y‖²/N + λ‖W‖²`` (bias unpenalised), solved in float64."""
    n, d = x.shape
    xd = x.double()
    x1 = torch.cat((xd, torch.ones(n, 1, dtype=xd.dtype, device=xd.device)), dim=1)
    reg = torch.full((d + 1,), weight_decay, dtype=xd.dtype, device=xd.device)
    reg[-1] = 0.0
    gram = x1.T @ x1 / n + torch.diag(reg)
    sol = torch.linalg.lstsq(gram, x1.T @ y.double().reshape(n, -1) / n).solution
    lin = nn.Linear(d, sol.shape[1], device=x.device, dtype=x.dtype)
    with torch.no_grad():
        lin.weight.copy_(sol[:d].T.to(x.dtype))
        lin.bias.copy_(sol[d].to(x.dtype))
    return lin


def _train_adam(
    net: nn.Module, x: Tensor, y: Tensor, loss: nn.Module, epochs: int, bs: int, lr: float, gen: Any
) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=gen).split(bs):
            idx = idx.to(x.device)
            opt.zero_grad(set_to_none=True)
            loss(net(x[idx]), y[idx]).backward()
            opt.step()


def fit_linear_classifier(
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int | None = None,
    solver: Classifier = "lbfgs",
    weight_decay: float = 1e-4,
    standardize: bool = True,
    max_iter: int = 200,
    epochs: int = 300,
    batch_size: int = 256,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Fit a linear classifier ``x ↦ W x + b`` (after optional standardisation) on frozen features.

    ``"lbfgs"`` minimises ``mean CE + ½·weight_decay·‖W‖²`` on the full batch (strong-Wolfe line
    search); ``"ridge"``: one-hot least squares with ridge ``weight_decay``; ``"adam"``: the paper's
    protocol (no weight decay, ``standardize=False``). Weights start at zero (deterministic).

    Args:
        x, y: Training features and class indices.
        num_classes: Number of classes (default ``max(y) + 1``).
        solver: ``"lbfgs"``, ``"ridge"`` or ``"adam"``.
        weight_decay: L2 strength of ``"lbfgs"`` and ``"ridge"``.
        standardize: Standardise features with the training mean and std first.
        max_iter: L-BFGS iterations.
        epochs, batch_size, lr: Adam's epochs, mini-batch size and learning rate.
        generator: Mini-batch shuffling for ``"adam"``.

    Returns:
        A module mapping features ``(N, D)`` to logits ``(N, num_classes)``.

    Shape:
        - x: ``(N, D)``; y: ``(N,)``
    """
    check_matrix(x, "x")
    nc = None if num_classes is None else check_int(num_classes, "num_classes")
    top = int(_check_labels(y, "y", x.shape[0], nc).max())
    c = top + 1 if nc is None else nc
    check_choice(solver, "solver", get_args(Classifier))
    _check_fit_options(weight_decay, standardize, epochs, batch_size, lr, generator)
    check_int(max_iter, "max_iter")
    x, y = x.detach(), y.to(x.device)
    scaler = _Standardize(x) if standardize else nn.Identity()
    xs = scaler(x)
    if solver == "ridge":
        lin = _ridge(xs, F.one_hot(y, c).to(x.dtype), weight_decay)
        return nn.Sequential(scaler, lin).requires_grad_(False)
    lin = nn.Linear(x.shape[1], c, device=x.device, dtype=x.dtype)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    with torch.enable_grad():
        if solver == "adam":
            _train_adam(lin, xs, y, nn.CrossEntropyLoss(), epochs, batch_size, lr, generator)
        else:
            opt = torch.optim.LBFGS(
                lin.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20,
            )  # fmt: skip

            def closure() -> Tensor:
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(lin(xs), y) + 0.5 * weight_decay * lin.weight.square().sum()
                loss.backward()
                return loss

            opt.step(closure)
    return nn.Sequential(scaler, lin).requires_grad_(False)


def _probe(
    fit: Callable[[], nn.Module],
    score: Callable[[Tensor, Tensor], float],
    check_y: Callable[[Tensor, str, int], Tensor],
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
) -> ProbeResult:
    """Check both sets (targets by ``check_y``), ``fit()`` a probe and ``score`` it on both."""
    (train_x, train_y), (test_x, test_y) = train, test
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        check_y(y, f"{name}_y", check_matrix(x, f"{name}_x").shape[0])
    d_train, d_test = train_x.shape[1], test_x.shape[1]
    if d_test != d_train:
        raise ValueError(f"test_x has {d_test} features but train_x has {d_train}")
    model = fit()
    with torch.no_grad():
        train_score = score(model(train_x.detach()), train_y)
        return ProbeResult(train_score, score(model(test_x.detach().to(train_x.device)), test_y))


def linear_probe_accuracy(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, **kwargs: object
) -> ProbeResult:
    """Top-1 accuracy of a linear probe fitted on ``train`` and evaluated on ``train`` and ``test``.

    Args:
        train_x, train_y, test_x, test_y: Training and test features and class indices.
        **kwargs: Keyword arguments of :func:`fit_linear_classifier` (``solver``, ...).

    Shape:
        - train_x: ``(N, D)``; train_y: ``(N,)``; test_x: ``(N', D)``; test_y: ``(N',)``
    """
    c = kwargs.get("num_classes")
    c = None if c is None else check_int(c, "num_classes")

    def fit() -> nn.Module:
        if c is None:
            kwargs["num_classes"] = int(max(int(train_y.max()), int(test_y.max()))) + 1
        return fit_linear_classifier(train_x, train_y, **kwargs)  # type: ignore[arg-type]

    def check_y(y: Tensor, name: str, n: int) -> Tensor:
        return _check_labels(y, name, n, c)

    return _probe(fit, accuracy, check_y, (train_x, train_y), (test_x, test_y))


def _mlp(d_in: int, d_out: int, hidden: int, depth: int, like: Tensor) -> nn.Sequential:
    widths = [d_in] + [hidden] * depth
    layers = [m for a, b in pairwise(widths) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*layers, nn.Linear(widths[-1], d_out)).to(like.device, like.dtype)


def fit_regressor(
    x: Tensor,
    y: Tensor,
    *,
    kind: Regressor = "linear",
    solver: RegressorSolver | None = None,
    hidden: int = 1024,
    depth: int = 2,
    weight_decay: float = 0.0,
    standardize: bool = True,
    epochs: int = 300,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Fit a regressor from features to continuous targets (MSE).

    Args:
        x, y: Training features and targets.
        kind: ``"linear"`` or ``"mlp"`` (ReLU; SIE: ``in → 1024 → 1024 → out``, 300 epochs).
        solver: Linear only: ``"lstsq"`` (closed form, ridge) or ``"adam"``; the MLP uses Adam.
        hidden, depth: MLP width and number of hidden layers.
        weight_decay: Ridge strength of ``"lstsq"``.
        standardize: Standardise features with the training mean and std first.
        epochs, batch_size, lr: Adam's epochs, mini-batch size and learning rate.
        seed: Seed of the MLP initialisation (the global RNG is left untouched).
        generator: Mini-batch shuffling.

    Returns:
        A module mapping ``(N, D)`` features to predictions shaped like ``y``'s rows.

    Shape:
        - x: ``(N, D)``; y: ``(N,)`` or ``(N, K)``
    """
    check_matrix(x, "x")
    _check_targets(y, "y", x.shape[0])
    check_choice(kind, "kind", get_args(Regressor))
    solver = solver or ("lstsq" if kind == "linear" else "adam")
    check_choice(solver, "solver", get_args(RegressorSolver) if kind == "linear" else ("adam",))
    _check_fit_options(weight_decay, standardize, epochs, batch_size, lr, generator)
    check_int(hidden, "hidden")
    check_int(depth, "depth", minimum=0)
    check_int(seed, "seed", minimum=0)
    x = x.detach()
    y2 = y.detach().to(device=x.device, dtype=x.dtype).reshape(x.shape[0], -1)
    scaler = _Standardize(x) if standardize else nn.Identity()
    xs = scaler(x)
    model: nn.Module
    if kind == "linear" and solver == "lstsq":
        model = _ridge(xs, y2, weight_decay)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if kind == "linear":
                model = nn.Linear(x.shape[1], y2.shape[1], device=x.device, dtype=x.dtype)
            else:
                model = _mlp(x.shape[1], y2.shape[1], hidden, depth, x)
        with torch.enable_grad():
            _train_adam(model, xs, y2, nn.MSELoss(), epochs, batch_size, lr, generator)
    out = nn.Sequential(scaler, model)
    if y.ndim == 1:
        out.append(nn.Flatten(start_dim=0))
    return out.requires_grad_(False)


def regression_r2(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, **kwargs: object
) -> ProbeResult:
    """R² (:func:`r2_score`) of a regressor fitted on ``train``, on ``train`` and ``test``.

    Args:
        train_x, train_y, test_x, test_y: Training and test features and targets.
        **kwargs: Keyword arguments of :func:`fit_regressor` (``kind``, ``solver``, ...).

    Shape:
        - train_x: ``(N, D)``; train_y: ``(N,)`` or ``(N, K)``; test_x, test_y: ``N'`` rows
    """

    def fit() -> nn.Module:
        return fit_regressor(train_x, train_y, **kwargs)  # type: ignore[arg-type]

    return _probe(
        fit, lambda pred, y: r2_score(y, pred), _check_targets, (train_x, train_y), (test_x, test_y)
    )


def equivariance_r2(
    train_z1: Tensor,
    train_z2: Tensor,
    train_actions: Tensor,
    test_z1: Tensor,
    test_z2: Tensor,
    test_actions: Tensor,
    *,
    regressor: Regressor = "mlp",
    **kwargs: object,
) -> ProbeResult:
    """Equivariance: R² of predicting the relative action from ``[f(x₁); f(x₂)]`` (SIE protocol).

    Args:
        train_z1, train_z2, train_actions: Encodings of views 1 and 2, the relative action 1 → 2.
        test_z1, test_z2, test_actions: The same for the test set.
        regressor: ``"mlp"`` (the paper: rotation, crop, jitter) or ``"linear"`` (other actions).
        **kwargs: Keyword arguments of :func:`fit_regressor`.

    Shape:
        - train_z1, train_z2: ``(N, D)``; train_actions: ``(N, A)``; test_*: ``N'`` rows
    """
    check_choice(regressor, "regressor", get_args(Regressor))
    for name, a, b in (("train", train_z1, train_z2), ("test", test_z1, test_z2)):
        check_matrix(a, f"{name}_z1")
        check_matrix(b, f"{name}_z2")
        if a.shape != b.shape:
            raise ValueError(
                f"{name}_z1 and {name}_z2 must have the same shape, got {tuple(a.shape)} "
                f"and {tuple(b.shape)}"
            )
    x_tr, x_te = torch.cat((train_z1, train_z2), dim=1), torch.cat((test_z1, test_z2), dim=1)
    return regression_r2(x_tr, train_actions, x_te, test_actions, kind=regressor, **kwargs)


class ProbeFeatures(NamedTuple):
    """Frozen features of one split for the invariance / equivariance / leakage probes.

    Attributes:
        z: Encoder output of the first view (the equivariant representation), ``(N, D)``.
        z_next: Encoder output of the second view, ``(N, D)``.
        z_agg: Aggregate representation (the invariant one), ``(N, E)``.
        labels: Class indices, ``(N,)``.
        actions: Relative action from the first to the second view, ``(N, A)``.
    """

    z: Tensor
    z_next: Tensor
    z_agg: Tensor
    labels: Tensor
    actions: Tensor


class LeakageReport(NamedTuple):
    """Test-set probe scores and leakage gaps (names as in the follow-up repository's gates).

    Attributes:
        linacc: Class accuracy from ``z_agg`` (invariance).
        r2: Action R² from ``[z; z_next]`` (equivariance).
        leakage_linacc: Class accuracy from ``z`` (class information in the equivariant part).
        leakage_r2: Action R² from ``z_agg`` (action information in the invariant part).
        linacc_gap: ``linacc − leakage_linacc`` (positive: class lives in the aggregate).
        r2_gap: ``r2 − leakage_r2`` (positive: the action lives in the encoder pair).
    """

    linacc: float
    r2: float
    leakage_linacc: float
    leakage_r2: float
    linacc_gap: float
    r2_gap: float

    def as_dict(self) -> dict[str, float]:
        """The fields as a plain dictionary (e.g. for the recipes' gates)."""
        return dict(self._asdict())


def leakage(
    train: ProbeFeatures,
    test: ProbeFeatures,
    *,
    solver: Classifier = "lbfgs",
    regressor: Regressor = "linear",
    **regressor_kwargs: object,
) -> LeakageReport:
    """Invariance, equivariance and the two leakage probes, with their gaps.

    Args:
        train, test: Features of the training and test splits.
        solver: Solver of the (linear) class probes.
        regressor: Regressor of the main equivariance probe (the leakage probe is linear).
        **regressor_kwargs: Passed to :func:`fit_regressor` for the main equivariance probe.
    """
    for name, f in (("train", train), ("test", test)):
        check_type(f, name, ProbeFeatures, "a ProbeFeatures")
    acc = linear_probe_accuracy(train.z_agg, train.labels, test.z_agg, test.labels, solver=solver)
    leak_acc = linear_probe_accuracy(train.z, train.labels, test.z, test.labels, solver=solver)
    r2 = equivariance_r2(
        train.z, train.z_next, train.actions, test.z, test.z_next, test.actions,
        regressor=regressor, **regressor_kwargs,
    )  # fmt: skip
    leak_r2 = regression_r2(train.z_agg, train.actions, test.z_agg, test.actions, kind="linear")
    scores = (acc.test, r2.test, leak_acc.test, leak_r2.test)
    return LeakageReport(*scores, acc.test - leak_acc.test, r2.test - leak_r2.test)


def probes_per_num_views(
    train_features: Mapping[int, Tensor],
    train_labels: Tensor,
    test_features: Mapping[int, Tensor],
    test_labels: Tensor,
    **kwargs: object,
) -> dict[int, ProbeResult]:
    """``{M_val: ProbeResult}`` (sorted): a linear probe on the aggregate of ``M_val`` views each.

    As ``agg_classifier[j]`` in the upstream engine kept in ``kaikun213/seq-jepa``.

    Args:
        train_features, train_labels: ``{M_val: z_agg (N, E)}`` and class indices ``(N,)``.
        test_features, test_labels: The same for the test split (same keys).
        **kwargs: Keyword arguments of :func:`fit_linear_classifier`.
    """
    for name, f in (("train_features", train_features), ("test_features", test_features)):
        if not isinstance(f, Mapping):
            raise TypeError(f"{name} must be a mapping {{M_val: z_agg}}, got {type(f).__name__}")
    if set(train_features) != set(test_features):
        raise ValueError(
            "train_features and test_features must have the same M_val keys, got "
            f"{sorted(train_features)} and {sorted(test_features)}"
        )
    if not train_features:
        raise ValueError("train_features must hold at least one M_val")
    tr, te = train_features, test_features
    return {
        m: linear_probe_accuracy(tr[m], train_labels, te[m], test_labels, **kwargs)
        for m in sorted(tr)
    }
