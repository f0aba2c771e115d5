"""Transformer blocks for world models: CRATE layers (MSSA + ISTA) and their diagnostics; ToST.

Every layer maps ``(B, N, D)`` to ``(B, N, D)`` (``blocks`` of :class:`jepa_blocks.seq.Aggregator`).
"""

from jepa_blocks.blocks.crate import (
    CRATE,
    ISTA,
    MSSA,
    CRATEAlpha,
    CRATEAlphaLayer,
    CRATEDecoderLayer,
    CRATELayer,
    OvercompleteISTA,
    crate_blocks,
    ista_step,
    lasso_objective,
)
from jepa_blocks.blocks.crate_diagnostics import (
    CRATERecorder,
    StackDiagnostics,
    code_sparsity,
    crate_monitor,
    crate_stack_diagnostics,
    head_action_r2,
    project_heads,
    specialization_score,
    subspace_coding_rate,
    weighted_specialization,
)
from jepa_blocks.blocks.tost import TSSA, CausalTSSA, ToSTBlock, ToSTStack, TSSAState, tost_blocks

__all__ = [
    "CRATE",
    "ISTA",
    "MSSA",
    "TSSA",
    "CRATEAlpha",
    "CRATEAlphaLayer",
    "CRATEDecoderLayer",
    "CRATELayer",
    "CRATERecorder",
    "CausalTSSA",
    "OvercompleteISTA",
    "StackDiagnostics",
    "TSSAState",
    "ToSTBlock",
    "ToSTStack",
    "code_sparsity",
    "crate_blocks",
    "crate_monitor",
    "crate_stack_diagnostics",
    "head_action_r2",
    "ista_step",
    "lasso_objective",
    "project_heads",
    "specialization_score",
    "subspace_coding_rate",
    "tost_blocks",
    "weighted_specialization",
]
