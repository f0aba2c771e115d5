"""Evaluation suite: features → probes, rank and spectra, memory meters, figures."""

from jepa_blocks.metrics.evaluation import (
    EvalConfig,
    FeatureSet,
    evaluate,
    extract_features,
    rank_monitor,
)
from jepa_blocks.metrics.memory import PeakMemory, SavedTensorMeter, measure_peak_memory
from jepa_blocks.metrics.plots import plot_rank_monitor, plot_rotation_circle, plot_spectrum
from jepa_blocks.metrics.probes import (
    LeakageReport,
    ProbeFeatures,
    ProbeResult,
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
from jepa_blocks.metrics.rank import (
    covariance_spectrum,
    delta_spectrum,
    effective_rank,
    principal_subspace,
    rotation_delta_spectrum,
    spectrum_effective_rank,
    subspace_explained_variance,
    topk_variance_fraction,
)
from jepa_blocks.metrics.stream_features import (
    StreamFeatures,
    extract_stream_features,
    linacc_by_length,
)
from jepa_blocks.metrics.subspace import subspace_diagnostics, subspace_leakage

__all__ = [
    "EvalConfig",
    "FeatureSet",
    "LeakageReport",
    "PeakMemory",
    "ProbeFeatures",
    "ProbeResult",
    "SavedTensorMeter",
    "StreamFeatures",
    "accuracy",
    "covariance_spectrum",
    "delta_spectrum",
    "effective_rank",
    "equivariance_r2",
    "evaluate",
    "extract_features",
    "extract_stream_features",
    "fit_linear_classifier",
    "fit_regressor",
    "leakage",
    "linacc_by_length",
    "linear_probe_accuracy",
    "measure_peak_memory",
    "plot_rank_monitor",
    "plot_rotation_circle",
    "plot_spectrum",
    "principal_subspace",
    "probes_per_num_views",
    "r2_score",
    "rank_monitor",
    "regression_r2",
    "rotation_delta_spectrum",
    "spectrum_effective_rank",
    "subspace_diagnostics",
    "subspace_explained_variance",
    "subspace_leakage",
    "topk_variance_fraction",
]
