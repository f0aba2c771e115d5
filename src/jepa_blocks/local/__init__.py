"""Local learning: block-local objectives, encoder blocks with local heads, the three stages.

LPL (Halvagal & Zenke, 2023) and coding-rate objectives per block
(:mod:`~jepa_blocks.local.objectives`), an encoder as a chain of blocks with small heads
(:mod:`~jepa_blocks.local.blocks`), and the three stages trained with the one loop, with the
activation memory of one step (:mod:`~jepa_blocks.local.stages`). ``examples/step6_local.py`` runs
every stage against end-to-end training. **Experimental** (``__experimental__ = True``).
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
