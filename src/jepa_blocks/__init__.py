"""jepa-blocks: composable PyTorch blocks for self-supervised world models in the seq-JEPA family.

The top-level namespace re-exports the stable API. Sub-packages (``jepa_blocks.data``,
``jepa_blocks.metrics``, ...) hold the rest.
"""

from jepa_blocks._validation import NonFiniteError
from jepa_blocks._version import __version__
from jepa_blocks.blocks import (
    CRATE,
    ISTA,
    MSSA,
    TSSA,
    CausalTSSA,
    CRATEAlpha,
    CRATEAlphaLayer,
    CRATEDecoderLayer,
    CRATELayer,
    ToSTBlock,
    TSSAState,
    crate_blocks,
    tost_blocks,
)
from jepa_blocks.data import (
    SequenceDataset,
    SequenceLoader,
    ViewSequence,
    cifar_augmentation_views,
    load_mnist,
    mnist_affine_views,
)
from jepa_blocks.encoders import SmallCNN, resnet18_encoder
from jepa_blocks.linalg import half_logdet_i_plus_gram
from jepa_blocks.losses import CosineLoss, cosine_loss
from jepa_blocks.metrics import (
    effective_rank,
    equivariance_r2,
    leakage,
    linear_probe_accuracy,
    r2_score,
)
from jepa_blocks.rate import (
    CodingRate,
    RateReduction,
    RateReductionParts,
    SimDINOExpansion,
    TotalCodingRate,
    UnitNormRate,
    VariationalRate,
    coding_rate,
    eps_from_code,
    rate_reduction,
    simdino_expansion,
    total_coding_rate,
    variational_rate,
)
from jepa_blocks.seq import (
    ActionEncoder,
    Aggregator,
    CRATEPredictor,
    Predictor,
    SeqJEPA,
    SeqJEPAOutput,
    transformer_blocks,
)
from jepa_blocks.sigreg import SIGReg, sigreg
from jepa_blocks.subspace import SubspaceProjection, subspace_compression
from jepa_blocks.targets import CenterSharpen, EMATarget, StopGradTarget, Target, cosine_momentum
from jepa_blocks.vicreg import VICRegRegularizer, vicreg_covariance, vicreg_variance
from jepa_blocks.window_rate import LocalCodingRate

__all__ = [
    "CRATE",
    "ISTA",
    "MSSA",
    "TSSA",
    "ActionEncoder",
    "Aggregator",
    "CRATEAlpha",
    "CRATEAlphaLayer",
    "CRATEDecoderLayer",
    "CRATELayer",
    "CRATEPredictor",
    "CausalTSSA",
    "CenterSharpen",
    "CodingRate",
    "CosineLoss",
    "EMATarget",
    "LocalCodingRate",
    "NonFiniteError",
    "Predictor",
    "RateReduction",
    "RateReductionParts",
    "SIGReg",
    "SeqJEPA",
    "SeqJEPAOutput",
    "SequenceDataset",
    "SequenceLoader",
    "SimDINOExpansion",
    "SmallCNN",
    "StopGradTarget",
    "SubspaceProjection",
    "TSSAState",
    "Target",
    "ToSTBlock",
    "TotalCodingRate",
    "UnitNormRate",
    "VICRegRegularizer",
    "VariationalRate",
    "ViewSequence",
    "__version__",
    "cifar_augmentation_views",
    "coding_rate",
    "cosine_loss",
    "cosine_momentum",
    "crate_blocks",
    "effective_rank",
    "eps_from_code",
    "equivariance_r2",
    "half_logdet_i_plus_gram",
    "leakage",
    "linear_probe_accuracy",
    "load_mnist",
    "mnist_affine_views",
    "r2_score",
    "rate_reduction",
    "resnet18_encoder",
    "sigreg",
    "simdino_expansion",
    "subspace_compression",
    "tost_blocks",
    "total_coding_rate",
    "transformer_blocks",
    "variational_rate",
    "vicreg_covariance",
    "vicreg_variance",
]
