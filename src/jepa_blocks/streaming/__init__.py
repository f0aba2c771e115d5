"""Streaming continual self-supervised learning: protocols, replay, consolidation, evaluation.

The step-5 recipe is ``examples/step5_streaming_continual.py``. Importing this package imports
neither matplotlib nor scikit-learn. **Experimental**: it may change in any release without a
deprecation period.
"""

from jepa_blocks.streaming import buffers, driver, evaluation, protocols, regularizers
from jepa_blocks.streaming.buffers import *
from jepa_blocks.streaming.driver import *
from jepa_blocks.streaming.evaluation import *
from jepa_blocks.streaming.protocols import *
from jepa_blocks.streaming.regularizers import *

__experimental__ = True

__all__ = [
    *buffers.__all__,
    *driver.__all__,
    *evaluation.__all__,
    *protocols.__all__,
    *regularizers.__all__,
]
