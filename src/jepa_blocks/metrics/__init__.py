"""Evaluation suite: probes (invariance, equivariance, leakage), rank and spectra, figures.

Importing this package does not import matplotlib or scikit-learn; the plotting functions import
matplotlib when called.
"""

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
    subspace_explained_variance,
    topk_variance_fraction,
)

__all__ = [
    "LeakageReport",
    "ProbeFeatures",
    "ProbeResult",
    "accuracy",
    "covariance_spectrum",
    "delta_spectrum",
    "effective_rank",
    "equivariance_r2",
    "fit_linear_classifier",
    "fit_regressor",
    "leakage",
    "linear_probe_accuracy",
    "plot_rank_monitor",
    "plot_rotation_circle",
    "plot_spectrum",
    "principal_subspace",
    "probes_per_num_views",
    "r2_score",
    "regression_r2",
    "subspace_explained_variance",
    "topk_variance_fraction",
]
