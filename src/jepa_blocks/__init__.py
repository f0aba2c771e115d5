"""jepa-blocks: composable PyTorch blocks for self-supervised world models in the seq-JEPA family.

The top-level namespace re-exports the stable API. Sub-packages (``jepa_blocks.data``,
``jepa_blocks.metrics``, ...) hold the rest.
"""

from jepa_blocks._version import __version__
from jepa_blocks.linalg import half_logdet_i_plus_gram
from jepa_blocks.rate import (
    CodingRate,
    RateReduction,
    RateReductionParts,
    SimDINOExpansion,
    TotalCodingRate,
    coding_rate,
    eps_from_code,
    rate_reduction,
    simdino_expansion,
    total_coding_rate,
)

__all__ = [
    "CodingRate",
    "RateReduction",
    "RateReductionParts",
    "SimDINOExpansion",
    "TotalCodingRate",
    "__version__",
    "coding_rate",
    "eps_from_code",
    "half_logdet_i_plus_gram",
    "rate_reduction",
    "simdino_expansion",
    "total_coding_rate",
]
