"""Probes: R² equals scikit-learn's, linear probes separate / stay at chance, leakage signs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from jepa_blocks.metrics import (
    LeakageReport,
    ProbeFeatures,
    accuracy,
    equivariance_r2,
    fit_linear_classifier,
    fit_regressor,
    leakage,
    linear_probe_accuracy,
    probes_per_num_views,
    r2_score,
    regression_r2,
)

sk_metrics = pytest.importorskip("sklearn.metrics")

# Multiples of 1/8: exact in float64, so scikit-learn and ours see the same data without
# catastrophic cancellation in nearly-constant columns.
grid = st.integers(-8000, 8000).map(lambda v: v / 8)


@given(
    st.integers(2, 30).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, (n, 3), elements=grid), arrays(np.float64, (n, 3), elements=grid)
        )
    )
)
def test_r2_score_equals_sklearn_multioutput(pair: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = pair
    ours = r2_score(torch.from_numpy(y), torch.from_numpy(p))
    per_output = sk_metrics.r2_score(y, p, multioutput="raw_values")
    # scikit-learn's documented rule for constant targets (force_finite=True), applied exactly:
    # its own rounded mean can leave a ~1e-33 "variance" for a constant column.
    constant = y.max(axis=0) == y.min(axis=0)
    exact = (y == p).all(axis=0)
    per_output = np.where(constant, np.where(exact, 1.0, 0.0), per_output)
    assert math.isclose(ours, float(per_output.mean()), rel_tol=1e-9, abs_tol=1e-9)
    if not constant.any():
        ref = sk_metrics.r2_score(y, p, multioutput="uniform_average")
        assert math.isclose(ours, ref, rel_tol=1e-9, abs_tol=1e-9)


def test_r2_score_random_and_special_cases() -> None:
    rs = np.random.default_rng(0)
    for shape in [(50,), (40, 1), (30, 7)]:
        y = rs.normal(size=shape)
        p = y + rs.normal(scale=0.5, size=shape)
        assert math.isclose(
            r2_score(torch.from_numpy(y), torch.from_numpy(p)),
            sk_metrics.r2_score(y, p),
            rel_tol=1e-12,
        )
        # float32 inputs are accumulated in float64.
        assert math.isclose(
            r2_score(torch.from_numpy(y).float(), torch.from_numpy(p).float()),
            sk_metrics.r2_score(y.astype(np.float32), p.astype(np.float32)),
            rel_tol=1e-5,
        )
    # Constant target column: 1 if predicted exactly, 0 otherwise (sklearn force_finite=True).
    y = np.stack((np.ones(10), np.arange(10.0)), axis=1)
    for p in (y.copy(), y + 0.1):
        assert math.isclose(
            r2_score(torch.from_numpy(y), torch.from_numpy(p)),
            sk_metrics.r2_score(y, p),
            abs_tol=1e-12,
        )
    with pytest.raises(ValueError, match="same shape"):
        r2_score(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        r2_score(torch.zeros(1), torch.zeros(1))


def test_accuracy() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert accuracy(torch.tensor([1, 1, 0]), torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)
    with pytest.raises(TypeError, match="integer"):
        accuracy(logits, torch.tensor([0.0, 1.0, 1.0]))


def _blobs(
    n: int, d: int, classes: int, sep: float, seed: int, noise_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian classes around centres fixed by ``seed``; ``noise_seed`` draws fresh samples."""
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(seed)) * sep
    y = torch.arange(n) % classes
    noise = torch.randn(n, d, generator=torch.Generator().manual_seed(10_000 + noise_seed))
    return centres[y] + noise, y


@pytest.mark.parametrize("solver", ["lbfgs", "ridge", "adam"])
def test_linear_probe_separates_separable_data(solver: str) -> None:
    xtr, ytr = _blobs(600, 16, 5, sep=3.0, seed=0, noise_seed=1)
    xte, yte = _blobs(300, 16, 5, sep=3.0, seed=0, noise_seed=2)
    kw = {"epochs": 30} if solver == "adam" else {}
    res = linear_probe_accuracy(
        xtr, ytr, xte, yte, solver=solver, generator=torch.Generator().manual_seed(0), **kw
    )
    assert res.train >= 0.95 and res.test >= 0.95


@pytest.mark.parametrize("solver", ["lbfgs", "ridge"])
def test_linear_probe_is_at_chance_on_shuffled_labels(solver: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 8, generator=gen)
    y = torch.randint(0, 4, (3000,), generator=gen)
    res = linear_probe_accuracy(x[:2000], y[:2000], x[2000:], y[2000:], solver=solver)
    assert abs(res.test - 0.25) < 0.05


def test_lbfgs_probe_matches_sklearn_logistic_regression() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, y = _blobs(400, 6, 3, sep=1.0, seed=2)
    lam = 1e-2
    probe = fit_linear_classifier(
        x.double(), y, solver="lbfgs", weight_decay=lam, standardize=False, max_iter=500
    )
    # sklearn minimises ½‖W‖² + C Σ CE; ours mean CE + ½λ‖W‖² ⇒ C = 1/(λ N).
    ref = linear_model.LogisticRegression(C=1 / (lam * 400), max_iter=5000, tol=1e-10).fit(
        x.numpy(), y.numpy()
    )
    ours_p = torch.softmax(probe(x.double()), dim=1).numpy()
    np.testing.assert_allclose(ours_p, ref.predict_proba(x.numpy()), atol=2e-4)


def test_regression_r2_linear_and_mlp() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(800, 6, generator=gen)
    w = torch.randn(6, 3, generator=gen)
    y = x @ w + 0.01 * torch.randn(800, 3, generator=gen)
    lin = regression_r2(x[:600], y[:600], x[600:], y[600:], kind="linear")
    assert lin.test > 0.99
    noise = torch.randn(800, 2, generator=gen)
    assert regression_r2(x[:600], noise[:600], x[600:], noise[600:]).test < 0.05
    # A non-linear target: the MLP fits it, the linear map cannot.
    t = torch.sin(2 * x[:, :1]) * x[:, 1:2]
    kw = {
        "hidden": 64,
        "epochs": 60,
        "batch_size": 64,
        "generator": torch.Generator().manual_seed(0),
    }
    mlp = regression_r2(x[:600], t[:600], x[600:], t[600:], kind="mlp", **kw)
    lin_t = regression_r2(x[:600], t[:600], x[600:], t[600:], kind="linear")
    assert mlp.test > 0.6 > 0.1 > lin_t.test
    # Reproducible: same seed and generator, same regressor.
    m1 = fit_regressor(
        x, t, kind="mlp", hidden=8, epochs=2, generator=torch.Generator().manual_seed(1)
    )
    m2 = fit_regressor(
        x, t, kind="mlp", hidden=8, epochs=2, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(m1(x), m2(x))
    assert fit_regressor(x, t[:, 0])(x).shape == (800,)


def test_equivariance_r2_reads_relative_action_from_the_pair() -> None:
    gen = torch.Generator().manual_seed(4)
    n, d = 1000, 12
    t1 = torch.rand(n, 2, generator=gen)
    t2 = torch.rand(n, 2, generator=gen)
    mix = torch.randn(2, d, generator=gen)
    z1 = t1 @ mix + 0.05 * torch.randn(n, d, generator=gen)
    z2 = t2 @ mix + 0.05 * torch.randn(n, d, generator=gen)
    a = t2 - t1
    res = equivariance_r2(
        z1[:700], z2[:700], a[:700], z1[700:], z2[700:], a[700:], regressor="linear"
    )
    assert res.test > 0.95
    # One view alone cannot tell the relative action.
    alone = regression_r2(z1[:700], a[:700], z1[700:], a[700:])
    assert alone.test < 0.7
    with pytest.raises(ValueError, match="same shape"):
        equivariance_r2(z1, z2[:, :3], a, z1, z2, a)


def _constructed(n: int, seed: int, *, swap: bool = False) -> ProbeFeatures:
    """z carries the action only and z_agg the class only; ``swap`` puts each in the other."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    centres = torch.randn(4, 8, generator=torch.Generator().manual_seed(100)) * 3
    mix = torch.randn(2, 8, generator=torch.Generator().manual_seed(101))
    mix2 = torch.randn(4, 8, generator=torch.Generator().manual_seed(102))
    t1, t2 = torch.rand(n, 2, generator=gen), torch.rand(n, 2, generator=gen)

    def noise() -> torch.Tensor:
        return 0.05 * torch.randn(n, 8, generator=gen)

    cls = centres[labels] + torch.randn(n, 8, generator=gen)
    if not swap:
        z, z_next, z_agg = t1 @ mix + noise(), t2 @ mix + noise(), cls
    else:
        z, z_next = cls + noise(), cls + noise()
        z_agg = torch.cat((t1, t2), 1) @ mix2 + noise()
    return ProbeFeatures(z, z_next, z_agg, labels, t2 - t1)


def test_leakage_gaps_have_the_right_sign() -> None:
    good = leakage(_constructed(800, 0), _constructed(400, 1))
    assert isinstance(good, LeakageReport)
    assert good.linacc > 0.9 and good.leakage_linacc < 0.45
    assert good.r2 > 0.9 and good.leakage_r2 < 0.1
    assert good.linacc_gap > 0.4 and good.r2_gap > 0.8
    assert good.as_dict()["r2_gap"] == good.r2_gap
    bad = leakage(_constructed(800, 0, swap=True), _constructed(400, 1, swap=True))
    assert bad.linacc < 0.45 and bad.leakage_linacc > 0.9
    assert bad.r2 < 0.1 and bad.leakage_r2 > 0.9
    assert bad.linacc_gap < -0.4 and bad.r2_gap < -0.8


def test_probes_per_num_views() -> None:
    ytr, yte = torch.arange(300) % 3, torch.arange(150) % 3
    feats_tr, feats_te = {}, {}
    for m in (1, 3, 5):
        # More views, less noise: accuracy should rise with M_val.
        xtr, _ = _blobs(300, 8, 3, sep=1.0, seed=5, noise_seed=1)
        xte, _ = _blobs(150, 8, 3, sep=1.0, seed=5, noise_seed=2)
        gen = torch.Generator().manual_seed(m)
        feats_tr[m] = xtr + torch.randn(xtr.shape, generator=gen) * 3 / m
        feats_te[m] = xte + torch.randn(xte.shape, generator=gen) * 3 / m
    res = probes_per_num_views(feats_tr, ytr, feats_te, yte, solver="ridge")
    assert list(res) == [1, 3, 5]
    assert res[5].test > res[1].test
    with pytest.raises(ValueError, match="same M_val keys"):
        probes_per_num_views({1: feats_tr[1]}, ytr, {2: feats_te[1]}, yte)


def test_probe_argument_errors() -> None:
    x, y = torch.randn(10, 3), torch.arange(10) % 2
    with pytest.raises(ValueError, match="solver"):
        fit_linear_classifier(x, y, solver="sgd")
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        fit_linear_classifier(x, y[:5])
    with pytest.raises(ValueError, match="x must have"):
        fit_linear_classifier(torch.randn(10), y)
    with pytest.raises(ValueError, match="kind"):
        fit_regressor(x, x, kind="tree")
    with pytest.raises(ValueError, match="features"):
        linear_probe_accuracy(x, y, torch.randn(4, 5), y[:4])


def test_probe_scores_are_the_fitted_models_scores_on_each_split() -> None:
    """Train and test scores: the metric of the fitted model's predictions (r2 is asymmetric)."""
    g = torch.Generator().manual_seed(4)
    x, xt = torch.randn(80, 5, generator=g), torch.randn(30, 5, generator=g)
    w = torch.randn(5, 2, generator=g)
    y, yt = x @ w + 0.5 * torch.randn(80, 2, generator=g), xt @ w + torch.randn(30, 2, generator=g)
    res = regression_r2(x, y, xt, yt, kind="linear", solver="lstsq")
    model = fit_regressor(x, y, kind="linear", solver="lstsq")
    assert res.train == r2_score(y, model(x)) and res.test == r2_score(yt, model(xt))
    assert res.test != r2_score(model(xt), yt)
    labels, labels_t = (x[:, 0] > 0).long(), (xt[:, 0] > 0).long()
    acc = linear_probe_accuracy(x, labels, xt, labels_t, solver="lbfgs", max_iter=50)
    probe = fit_linear_classifier(x, labels, num_classes=2, solver="lbfgs", max_iter=50)
    assert acc.train == accuracy(probe(x), labels) and acc.test == accuracy(probe(xt), labels_t)
    for fn, y_test in ((regression_r2, yt), (linear_probe_accuracy, labels_t)):
        with pytest.raises(ValueError, match="test_x has 4 features but train_x has 5"):
            fn(x, y if fn is regression_r2 else labels, xt[:, :4], y_test)
