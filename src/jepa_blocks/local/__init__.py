"""Local learning: block-local objectives, encoder blocks with local heads, the three stages.

* :mod:`jepa_blocks.local.objectives` — LPL (Halvagal & Zenke, 2023) and coding-rate objectives
  per block.
* :mod:`jepa_blocks.local.blocks` — an encoder as a chain of blocks, small local heads.
* :mod:`jepa_blocks.local.stages` — stage 1 (auxiliary local losses), stage 2 (frozen encoder,
  local aggregator/predictor), stage 3 (fully local with per-block backward-and-free), training
  with the one loop :func:`jepa_blocks.train.fit` (:func:`~jepa_blocks.local.fit_local`,
  :func:`~jepa_blocks.local.local_step_fn`, :class:`~jepa_blocks.local.BlockLossLog`) and the
  activation memory of one step (:func:`~jepa_blocks.local.peak_step_memory`, on
  the meter of :mod:`jepa_blocks.metrics.memory`).

``examples/step6_local.py`` is the recipe that runs every stage against end-to-end training.

**Experimental** (``__experimental__ = True``): this package and its modules may change or
be removed in any release without a deprecation period; the API audit
(``tests/test_api_audit.py``) records them as experimental.
"""

from jepa_blocks.local.blocks import (
    BlockEncoder,
    LocalHead,
    conv_block_encoder,
    local_heads,
    split_encoder,
)
from jepa_blocks.local.objectives import (
    LocalLossParts,
    LocalRateLoss,
    LPLLoss,
    decorrelation_loss,
    local_rate_loss,
    lpl_loss,
    variance_loss,
)
from jepa_blocks.local.stages import (
    STAGES,
    BlockLossLog,
    LocalOutput,
    LocalSeqJEPA,
    Stage,
    fit_local,
    local_step_fn,
    peak_step_memory,
)

__experimental__ = True

__all__ = [
    "STAGES",
    "BlockEncoder",
    "BlockLossLog",
    "LPLLoss",
    "LocalHead",
    "LocalLossParts",
    "LocalOutput",
    "LocalRateLoss",
    "LocalSeqJEPA",
    "Stage",
    "conv_block_encoder",
    "decorrelation_loss",
    "fit_local",
    "local_heads",
    "local_rate_loss",
    "local_step_fn",
    "lpl_loss",
    "peak_step_memory",
    "split_encoder",
    "variance_loss",
]
