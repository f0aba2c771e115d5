"""Bad-input table of jepa_blocks.metrics (see tests/bad_inputs.py): probes, ranks, spectra, the
evaluation suite, the memory meter, the figures and the streamed features."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bad_inputs import Case, run_case
from jepa_blocks import SeqJEPA, StopGradTarget
from jepa_blocks._validation import NonFiniteError
from jepa_blocks.data import SequenceLoader, load_digits, mnist_affine_views
from jepa_blocks.metrics import (
    EvalConfig,
    FeatureSet,
    ProbeFeatures,
    SavedTensorMeter,
    StreamFeatures,
    accuracy,
    covariance_spectrum,
    delta_spectrum,
    effective_rank,
    equivariance_r2,
    evaluate,
    extract_features,
    extract_stream_features,
    fit_linear_classifier,
    fit_regressor,
    leakage,
    linacc_by_length,
    linear_probe_accuracy,
    measure_peak_memory,
    plot_rank_monitor,
    plot_rotation_circle,
    plot_spectrum,
    principal_subspace,
    probes_per_num_views,
    r2_score,
    rank_monitor,
    regression_r2,
    rotation_delta_spectrum,
    spectrum_effective_rank,
    subspace_explained_variance,
    topk_variance_fraction,
)
from jepa_blocks.seq import ActionEncoder, Aggregator, Predictor, transformer_blocks

NAN = math.nan
G = torch.Generator().manual_seed(0)
X = torch.randn(20, 4, generator=G)
Y = torch.arange(20) % 3
SPEC = torch.tensor([3.0, 2.0, 1.0, 0.0])


def nan(shape: tuple[int, ...] = (20, 4), where: float = NAN) -> torch.Tensor:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    x.view(-1)[0] = where
    return x


def model(*, nan_weights: bool = False) -> SeqJEPA:
    torch.manual_seed(0)
    m = SeqJEPA(
        encoder=nn.Sequential(nn.Flatten(), nn.Linear(64, 8)),
        target=StopGradTarget(),
        action_encoder=ActionEncoder(action_dim=5, embed_dim=4),
        aggregator=Aggregator(dim=12, blocks=transformer_blocks(dim=12, depth=1, heads=2)),
        predictor=Predictor(in_dim=16, out_dim=8, hidden=8),
    )
    if nan_weights:
        with torch.no_grad():
            m.encoder[1].weight[0, 0] = NAN
    return m


def loader(n: int = 12, m: int = 2) -> SequenceLoader:
    images = load_digits("train").subset(torch.arange(n))
    views = mnist_affine_views(angle_range=(-1.0, 1.0))
    return SequenceLoader(images, views, num_observed=m, batch_size=6, seed=3, shuffle=False)


def features(n: int = 24, **change: torch.Tensor) -> FeatureSet:
    g = torch.Generator().manual_seed(n)
    f = FeatureSet(
        torch.randn(n, 3, 8, generator=g), torch.randn(n, 6, generator=g), torch.arange(n) % 3,
        torch.randn(n, 2, 2, generator=g),
    )  # fmt: skip
    return f._replace(**change)


def probe_features(n: int = 24) -> ProbeFeatures:
    g = torch.Generator().manual_seed(n)
    return ProbeFeatures(
        torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g),
        torch.randn(n, 6, generator=g), torch.arange(n) % 3, torch.randn(n, 2, generator=g),
    )  # fmt: skip


def stream_features(lengths: tuple[int, ...] = (1, 2)) -> StreamFeatures:
    n, g = 24, torch.Generator().manual_seed(2)
    return StreamFeatures(
        torch.randn(n, 2, 8, generator=g), torch.randn(n, len(lengths), 6, generator=g), lengths,
        torch.arange(n) % 3, torch.randn(n, 1, 2, generator=g), 0.0,
    )  # fmt: skip


class _Empty:
    def set_epoch(self, k: int) -> None:
        del k

    def __iter__(self):
        return iter(())


CFG = EvalConfig(regressor="linear")

CASES: list[Case] = [
    # effective_rank and the spectra
    Case("effective_rank-list", lambda: effective_rank([[1.0, 2.0]]), TypeError, r"z must be a torch\.Tensor"),
    Case("effective_rank-int", lambda: effective_rank(torch.ones(4, 3, dtype=torch.long)), TypeError, "z must have a floating dtype"),
    Case("effective_rank-complex", lambda: effective_rank(torch.ones(4, 3, dtype=torch.complex64)), TypeError, "z must be real"),
    Case("effective_rank-1d", lambda: effective_rank(torch.randn(5)), ValueError, "z must have at least 2 dimensions"),
    Case("effective_rank-3d", lambda: effective_rank(torch.randn(2, 3, 4)), ValueError, r"z must have shape \(N, D\)"),
    Case("effective_rank-empty", lambda: effective_rank(torch.randn(0, 4)), ValueError, "N >= 1"),
    Case("effective_rank-nan", lambda: effective_rank(nan()), NonFiniteError, "z must be finite, got 1 NaN/inf"),
    Case("effective_rank-inf", lambda: effective_rank(nan(where=math.inf)), NonFiniteError, "z must be finite"),
    Case("effective_rank-eps-negative", lambda: effective_rank(X, eps=-1e-7), ValueError, "eps must be a finite number >= 0"),
    Case("effective_rank-center-string", lambda: effective_rank(X, center="no"), TypeError, "center must be a bool"),
    Case("effective_rank-zeros", lambda: effective_rank(torch.zeros(5, 3)), None, check=lambda v: v == 1.0),
    Case("effective_rank-one-row", lambda: effective_rank(torch.ones(1, 3)), None, check=lambda v: abs(v - 1.0) < 1e-5),
    Case("covariance_spectrum-one-row", lambda: covariance_spectrum(torch.randn(1, 3)), ValueError, "N >= 2"),
    Case("covariance_spectrum-nan", lambda: covariance_spectrum(nan()), NonFiniteError, "z must be finite"),
    Case("covariance_spectrum-center-int", lambda: covariance_spectrum(X, center=1), TypeError, "center must be a bool"),
    Case("delta_spectrum-shape-mismatch", lambda: delta_spectrum(X, X[:, :3]), ValueError, "z1 and z2 must have the same shape"),
    Case("delta_spectrum-nan", lambda: delta_spectrum(X, nan()), NonFiniteError, "z2 must be finite"),
    Case("topk_variance_fraction-k-float", lambda: topk_variance_fraction(SPEC, 1.7), TypeError, "k must be an int"),
    Case("topk_variance_fraction-k-zero", lambda: topk_variance_fraction(SPEC, 0), ValueError, "k must be an int >= 1"),
    Case("topk_variance_fraction-negative", lambda: topk_variance_fraction(-SPEC, 1), ValueError, "spectrum must be non-negative"),
    Case("topk_variance_fraction-nan", lambda: topk_variance_fraction(nan((4,)), 1), NonFiniteError, "spectrum must be finite"),
    Case("topk_variance_fraction-2d", lambda: topk_variance_fraction(torch.ones(2, 2), 1), ValueError, r"spectrum must have shape \(D,\)"),
    Case("topk_variance_fraction-k-past-D", lambda: topk_variance_fraction(SPEC, 9), None, check=lambda v: v == 1.0),
    Case("topk_variance_fraction-zeros", lambda: topk_variance_fraction(torch.zeros(3), 1), None, check=lambda v: v == 0.0),
    Case("principal_subspace-k-past-d", lambda: principal_subspace(X, 5), ValueError, r"k must be an int in \[1, 4\]"),
    Case("principal_subspace-k-bool", lambda: principal_subspace(X, True), ValueError, "k must be an int"),
    Case("principal_subspace-nan", lambda: principal_subspace(nan(), 2), NonFiniteError, "x must be finite"),
    Case("subspace_explained_variance-basis-shape", lambda: subspace_explained_variance(X, torch.randn(3, 2)), ValueError, r"basis must have shape \(4, k\)"),
    Case("subspace_explained_variance-basis-nan", lambda: subspace_explained_variance(X, nan((4, 2))), NonFiniteError, "basis must be finite"),
    Case("subspace_explained_variance-basis-int", lambda: subspace_explained_variance(X, torch.ones(4, 2, dtype=torch.long)), TypeError, "basis must have a floating dtype"),
    Case("spectrum_effective_rank-nan", lambda: spectrum_effective_rank(nan((4,))), NonFiniteError, "spectrum must be finite"),
    Case("spectrum_effective_rank-empty", lambda: spectrum_effective_rank(torch.zeros(0)), ValueError, "D >= 1"),
    Case("spectrum_effective_rank-zeros", lambda: spectrum_effective_rank(torch.zeros(3)), None, check=lambda v: v == 0.0),
    Case("rotation_delta_spectrum-no-encode", lambda: rotation_delta_spectrum(nn.Linear(2, 2), load_digits("train")), TypeError, "model must have an encode"),
    Case("rotation_delta_spectrum-angle-negative", lambda: rotation_delta_spectrum(model(), load_digits("train"), angle_deg=-5.0), ValueError, "angle_deg must be a finite number > 0"),
    Case("rotation_delta_spectrum-discrete-string", lambda: rotation_delta_spectrum(model(), load_digits("train"), discrete="no"), TypeError, "discrete must be a bool"),
    # accuracy and r2_score
    Case("accuracy-nan-scores", lambda: accuracy(torch.full((5, 3), NAN), torch.zeros(5, dtype=torch.long)), NonFiniteError, "predictions must be finite"),
    Case("accuracy-label-past-C", lambda: accuracy(torch.randn(5, 3), torch.full((5,), 3)), ValueError, r"labels must hold class indices < 3"),
    Case("accuracy-label-negative", lambda: accuracy(torch.randn(5, 3), torch.full((5,), -1)), ValueError, "labels must hold class indices >= 0"),
    Case("accuracy-labels-float", lambda: accuracy(torch.randn(5, 3), torch.zeros(5)), TypeError, "labels must hold integer class indices"),
    Case("accuracy-labels-shape", lambda: accuracy(torch.randn(5, 3), torch.zeros(4, dtype=torch.long)), ValueError, r"labels must have shape \(5,\)"),
    Case("accuracy-predictions-3d", lambda: accuracy(torch.randn(5, 3, 2), Y[:5]), ValueError, r"predictions must be a tensor of shape \(N, C\)"),
    Case("accuracy-predictions-empty", lambda: accuracy(torch.randn(0, 3), Y[:0]), ValueError, "predictions must hold at least one sample"),
    Case("accuracy-class-predictions-float", lambda: accuracy(torch.zeros(5), Y[:5]), TypeError, "predictions must hold integer class indices"),
    Case("accuracy-predictions-list", lambda: accuracy([0, 1], Y[:2]), ValueError, "predictions must be a tensor"),
    Case("accuracy-class-predictions", lambda: accuracy(Y[:6], Y[:6]), None, check=lambda v: v == 1.0),
    Case("r2_score-nan", lambda: r2_score(nan((20,)), X[:, 0]), NonFiniteError, "y_true must be finite"),
    Case("r2_score-pred-inf", lambda: r2_score(X[:, 0], nan((20,), math.inf)), NonFiniteError, "y_pred must be finite"),
    Case("r2_score-shape-mismatch", lambda: r2_score(X, X[:, :2]), ValueError, "same shape"),
    Case("r2_score-one-sample", lambda: r2_score(X[:1], X[:1]), ValueError, "at least 2 samples"),
    Case("r2_score-int", lambda: r2_score(Y, Y), TypeError, "y_true must have a floating dtype"),
    Case("r2_score-constant-exact", lambda: r2_score(torch.ones(5), torch.ones(5)), None, check=lambda v: v == 1.0),
    # fitting probes
    Case("fit_linear_classifier-nan", lambda: fit_linear_classifier(nan(), Y), NonFiniteError, "x must be finite"),
    Case("fit_linear_classifier-labels-negative", lambda: fit_linear_classifier(X, Y - 1), ValueError, "y must hold class indices >= 0"),
    Case("fit_linear_classifier-labels-float", lambda: fit_linear_classifier(X, Y.float()), TypeError, "y must hold integer class indices"),
    Case("fit_linear_classifier-num-classes-float", lambda: fit_linear_classifier(X, Y, num_classes=2.5), TypeError, "num_classes must be an int"),
    Case("fit_linear_classifier-num-classes-small", lambda: fit_linear_classifier(X, Y, num_classes=2), ValueError, "y must hold class indices < 2"),
    Case("fit_linear_classifier-solver-typo", lambda: fit_linear_classifier(X, Y, solver="sgd"), ValueError, "solver must be one of"),
    Case("fit_linear_classifier-weight-decay-negative", lambda: fit_linear_classifier(X, Y, weight_decay=-1.0), ValueError, "weight_decay must be a finite number >= 0"),
    Case("fit_linear_classifier-standardize-string", lambda: fit_linear_classifier(X, Y, standardize="yes"), TypeError, "standardize must be a bool"),
    Case("fit_linear_classifier-max-iter-zero", lambda: fit_linear_classifier(X, Y, max_iter=0), ValueError, "max_iter must be an int >= 1"),
    Case("fit_linear_classifier-epochs-zero", lambda: fit_linear_classifier(X, Y, solver="adam", epochs=0), ValueError, "epochs must be an int >= 1"),
    Case("fit_linear_classifier-batch-size-float", lambda: fit_linear_classifier(X, Y, batch_size=1.5), TypeError, "batch_size must be an int"),
    Case("fit_linear_classifier-lr-zero", lambda: fit_linear_classifier(X, Y, lr=0.0), ValueError, "lr must be a finite number > 0"),
    Case("fit_linear_classifier-generator-int", lambda: fit_linear_classifier(X, Y, generator=0), TypeError, r"generator must be a torch\.Generator"),
    Case("linear_probe_accuracy-train-nan", lambda: linear_probe_accuracy(nan(), Y, X, Y), NonFiniteError, "train_x must be finite"),
    Case("linear_probe_accuracy-test-nan", lambda: linear_probe_accuracy(X, Y, nan(), Y), NonFiniteError, "test_x must be finite"),
    Case("linear_probe_accuracy-test-label-past-num-classes", lambda: linear_probe_accuracy(X, Y, X, Y + 3, num_classes=3), ValueError, "test_y must hold class indices < 3"),
    Case("linear_probe_accuracy-test-features", lambda: linear_probe_accuracy(X, Y, X[:, :3], Y), ValueError, "test_x has 3 features but train_x has 4"),
    Case("linear_probe_accuracy-test-labels-shape", lambda: linear_probe_accuracy(X, Y, X, Y[:5]), ValueError, r"test_y must have shape \(20,\)"),
    Case("linear_probe_accuracy-train-labels-shape", lambda: linear_probe_accuracy(X, Y[:5], X, Y), ValueError, r"train_y must have shape \(20,\)"),
    Case("fit_regressor-y-nan", lambda: fit_regressor(X, nan((20,))), NonFiniteError, "y must be finite"),
    Case("fit_regressor-y-rows", lambda: fit_regressor(X, X[:5]), ValueError, r"y must have shape \(20,\) or \(20, K\)"),
    Case("fit_regressor-kind-typo", lambda: fit_regressor(X, X[:, 0], kind="ridge"), ValueError, "kind must be one of"),
    Case("fit_regressor-mlp-lstsq", lambda: fit_regressor(X, X[:, 0], kind="mlp", solver="lstsq"), ValueError, "solver must be one of"),
    Case("fit_regressor-hidden-zero", lambda: fit_regressor(X, X[:, 0], kind="mlp", hidden=0), ValueError, "hidden must be an int >= 1"),
    Case("fit_regressor-depth-negative", lambda: fit_regressor(X, X[:, 0], kind="mlp", depth=-1), ValueError, "depth must be an int >= 0"),
    Case("fit_regressor-seed-float", lambda: fit_regressor(X, X[:, 0], kind="mlp", seed=0.5), TypeError, "seed must be an int"),
    Case("regression_r2-test-nan", lambda: regression_r2(X, X[:, 0], X, nan((20,))), NonFiniteError, "test_y must be finite"),
    Case("equivariance_r2-regressor-typo", lambda: equivariance_r2(X, X, X[:, :2], X, X, X[:, :2], regressor="ridge"), ValueError, "regressor must be one of"),
    Case("equivariance_r2-shape-mismatch", lambda: equivariance_r2(X, X[:, :3], X[:, :2], X, X, X[:, :2]), ValueError, "train_z1 and train_z2 must have the same shape"),
    Case("leakage-train-tuple", lambda: leakage(tuple(probe_features()), probe_features()), TypeError, "train must be a ProbeFeatures"),
    Case("probes_per_num_views-keys", lambda: probes_per_num_views({1: X}, Y, {2: X}, Y), ValueError, "same M_val keys"),
    Case("probes_per_num_views-empty", lambda: probes_per_num_views({}, Y, {}, Y), ValueError, "at least one M_val"),
    Case("probes_per_num_views-list", lambda: probes_per_num_views([X], Y, [X], Y), TypeError, "train_features must be a mapping"),
    # the evaluation suite
    Case("EvalConfig-batch-size-zero", lambda: EvalConfig(batch_size=0), ValueError, "batch_size must be an int >= 1"),
    Case("EvalConfig-classifier-typo", lambda: EvalConfig(classifier="sgd"), ValueError, "classifier must be one of"),
    Case("EvalConfig-regressor-typo", lambda: EvalConfig(regressor="ridge"), ValueError, "regressor must be one of"),
    Case("EvalConfig-probe-threads-zero", lambda: EvalConfig(probe_threads=0), ValueError, "probe_threads must be an int >= 1"),
    Case("EvalConfig-num-observed-float", lambda: EvalConfig(num_observed=2.0), TypeError, "num_observed must be an int"),
    Case("EvalConfig-plots-string", lambda: EvalConfig(plots="no"), TypeError, "plots must be a bool"),
    Case("EvalConfig-lr-zero", lambda: EvalConfig(regressor_lr=0.0), ValueError, "regressor_lr must be a finite number > 0"),
    Case("EvalConfig-depth-negative", lambda: EvalConfig(regressor_depth=-1), ValueError, "regressor_depth must be an int >= 0"),
    Case("EvalConfig-weight-decay-nan", lambda: EvalConfig(classifier_weight_decay=NAN), ValueError, "classifier_weight_decay must be a finite number"),
    Case("EvalConfig-monitor-size-bool", lambda: EvalConfig(monitor_size=True), TypeError, "monitor_size must be an int"),
    Case("evaluate-config-dict", lambda: evaluate(features(), features(), {}), TypeError, "config must be an EvalConfig"),
    Case("evaluate-train-tuple", lambda: evaluate(tuple(features()), features(), CFG), TypeError, "train must be a FeatureSet"),
    Case("evaluate-z-agg-nan", lambda: evaluate(features(z_agg=nan((24, 6))), features(), CFG), NonFiniteError, "train.z_agg must be finite"),
    Case("evaluate-test-z-inf", lambda: evaluate(features(), features(z=nan((24, 3, 8), math.inf)), CFG), NonFiniteError, "test.z must be finite"),
    Case("evaluate-z-one-view", lambda: evaluate(features(z=torch.randn(24, 1, 8)), features(), CFG), ValueError, r"train.z must have 3 dimensions .*M \+ 1 >= 2"),
    Case("evaluate-actions-rows", lambda: evaluate(features(actions=torch.randn(5, 2, 2)), features(), CFG), ValueError, "train.actions must have 3 dimensions and N = 24 rows"),
    Case("evaluate-pixels-nan", lambda: evaluate(features(), features(pixels=nan((24, 64))), CFG), NonFiniteError, "test.pixels must be finite"),
    Case("evaluate-labels-float", lambda: evaluate(features(labels=torch.zeros(24)), features(), CFG), TypeError, "train_y must hold integer class indices"),
    Case("extract_features-no-encode", lambda: extract_features(nn.Linear(2, 2), loader()), TypeError, "model must be a SeqJEPA-like module"),
    Case("extract_features-passes-zero", lambda: extract_features(model(), loader(), passes=0), ValueError, "passes must be an int >= 1"),
    Case("extract_features-pixels-string", lambda: extract_features(model(), loader(), pixels="yes"), TypeError, "pixels must be a bool"),
    Case("extract_features-nan-model", lambda: extract_features(model(nan_weights=True), loader()), NonFiniteError, "z must be finite"),
    Case("extract_features-empty-loader", lambda: extract_features(model(), _Empty()), ValueError, "loader must yield at least one batch"),
    Case("rank_monitor-one-view", lambda: rank_monitor(SimpleNamespace(views=torch.randn(2, 1, 1, 8, 8), actions=None)), ValueError, "batch.views must hold at least 2 views"),
    Case("rank_monitor-no-views", lambda: rank_monitor(object()), ValueError, "batch.views must hold at least 2 views"),
    Case("rank_monitor-nan-model", lambda: rank_monitor(next(iter(loader())))(model(nan_weights=True).eval(), 0), NonFiniteError, "must be finite"),
    # the memory meter
    Case("SavedTensorMeter-scope-function", lambda: SavedTensorMeter(scope=lambda x: x), TypeError, r"scope must be an nn\.Module"),
    Case("SavedTensorMeter-exclude-int", lambda: SavedTensorMeter(exclude=3), TypeError, "exclude must be an iterable of tensors"),
    Case("SavedTensorMeter-exclude-tensor", lambda: SavedTensorMeter(exclude=X), TypeError, "exclude must be an iterable of tensors"),
    Case("SavedTensorMeter-exclude-ints", lambda: SavedTensorMeter(exclude=[1, 2]), TypeError, "exclude must hold tensors"),
    Case("measure_peak_memory-fn-not-callable", lambda: measure_peak_memory(3), TypeError, "fn must be callable"),
    Case("measure_peak_memory-device-typo", lambda: measure_peak_memory(lambda: 1, device="gpuu"), ValueError, "device must be a torch.device.*'gpuu'"),
    Case("measure_peak_memory-device-float", lambda: measure_peak_memory(lambda: 1, device=1.5), ValueError, "device must be a torch.device.*1.5"),
    # figures
    Case("plot_rotation_circle-nan", lambda: plot_rotation_circle(nan(), torch.zeros(20)), NonFiniteError, "features must be finite"),
    Case("plot_rotation_circle-one-column", lambda: plot_rotation_circle(X[:, :1], torch.zeros(20)), ValueError, "features must have D >= 2"),
    Case("plot_rotation_circle-angles-nan", lambda: plot_rotation_circle(X, nan((20,))), NonFiniteError, "angles must be finite"),
    Case("plot_rotation_circle-angles-shape", lambda: plot_rotation_circle(X, torch.zeros(19)), ValueError, r"angles must have shape \(20,\)"),
    Case("plot_spectrum-empty", lambda: plot_spectrum({}), ValueError, "spectra must hold at least one spectrum"),
    Case("plot_spectrum-list", lambda: plot_spectrum([SPEC]), TypeError, "spectra must be a tensor or a mapping"),
    Case("plot_spectrum-top-k-float", lambda: plot_spectrum(SPEC, top_k=1.5), TypeError, "top_k must be an int"),
    Case("plot_spectrum-nan", lambda: plot_spectrum({"a": nan((4,))}), NonFiniteError, r"spectra\['a'\] must be finite"),
    Case("plot_rank_monitor-list", lambda: plot_rank_monitor([0, 1], [[1.0, 2.0]]), ValueError, "ranks must be a mapping"),
    Case("plot_rank_monitor-length", lambda: plot_rank_monitor([0, 1, 2], {"z": [1.0]}), ValueError, r"ranks\['z'\] has 1 values but steps has 3"),
    # streamed features
    Case("extract_stream_features-length-zero", lambda: extract_stream_features(model(), loader(), [0, 1]), ValueError, "lengths must be a non-empty list of ints >= 1"),
    Case("extract_stream_features-length-float", lambda: extract_stream_features(model(), loader(), [1.5]), ValueError, "lengths must be a non-empty list of ints"),
    Case("extract_stream_features-too-long", lambda: extract_stream_features(model(), loader(m=2), [3]), ValueError, "the loader has 2 observed views, need 3"),
    Case("extract_stream_features-passes-zero", lambda: extract_stream_features(model(), loader(), [1], passes=0), ValueError, "passes must be an int >= 1"),
    Case("extract_stream_features-no-encode", lambda: extract_stream_features(nn.Linear(2, 2), loader(), [1]), TypeError, "model must be a SeqJEPA-like module"),
    Case("extract_stream_features-nan-model", lambda: extract_stream_features(model(nan_weights=True), loader(), [1, 2]), NonFiniteError, "must be finite"),
    Case("StreamFeatures-at-missing", lambda: stream_features().at(3), ValueError, r"m=3 is not one of the extracted lengths \(1, 2\)"),
    Case("linacc_by_length-config", lambda: linacc_by_length(stream_features(), stream_features(), {}), TypeError, "config must be an EvalConfig"),
    Case("linacc_by_length-lengths", lambda: linacc_by_length(stream_features(), stream_features((1, 3)), CFG), ValueError, "train and test lengths differ"),
    Case("linacc_by_length-tuple", lambda: linacc_by_length(tuple(stream_features()), stream_features(), CFG), TypeError, "train must be a StreamFeatures"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def test_rejected_extraction_leaves_the_model_unchanged():
    """A NaN-producing model raises after extraction; the model's mode and state are restored."""
    m = model(nan_weights=True).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(NonFiniteError):
        extract_features(m, loader())
    assert m.training
    after = m.state_dict()
    assert all(torch.equal(v, after[k]) or v.isnan().any() for k, v in before.items())
