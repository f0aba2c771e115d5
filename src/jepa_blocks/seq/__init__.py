"""Sequence parts of seq-JEPA: action encoder, [AGG] aggregator, predictor, and the model.

Ghaemi, Muller, Bakhtiari (2025), "seq-JEPA: Autoregressive Predictive Learning of
Invariant-Equivariant World Models", arXiv:2505.03176; official code ``hafezgh/seq-jepa``.
"""

from jepa_blocks.seq.actions import ActionEncoder
from jepa_blocks.seq.aggregator import Aggregator, transformer_blocks
from jepa_blocks.seq.crate_predictor import CRATEPredictor
from jepa_blocks.seq.model import SeqJEPA, SeqJEPAOutput
from jepa_blocks.seq.pooling import TokenPool
from jepa_blocks.seq.positions import PositionalEmbedding, sinusoidal_positions
from jepa_blocks.seq.predictor import Predictor
from jepa_blocks.seq.symmetric import negate_actions, reverse_sequence

__all__ = [
    "ActionEncoder",
    "Aggregator",
    "CRATEPredictor",
    "PositionalEmbedding",
    "Predictor",
    "SeqJEPA",
    "SeqJEPAOutput",
    "TokenPool",
    "negate_actions",
    "reverse_sequence",
    "sinusoidal_positions",
    "transformer_blocks",
]
