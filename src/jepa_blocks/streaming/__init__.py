"""Streaming continual self-supervised learning: protocols, replay, consolidation, evaluation.

* :mod:`~jepa_blocks.streaming.protocols`: stream plans (stationary single pass,
  class-incremental splits, transformation-regime shifts, blurred boundaries) and the batched
  :class:`SequenceStream` over any sequence source;
* :mod:`~jepa_blocks.streaming.buffers`: FIFO, reservoir and MinRed replay buffers with a fixed
  memory budget (Purushwalkam, Morgado & Gupta, 2022);
* :mod:`~jepa_blocks.streaming.regularizers`: EWC (Kirkpatrick et al., 2017) and SI (Zenke et al.,
  2017) on the online encoder;
* :mod:`~jepa_blocks.streaming.driver`: the single-pass training driver :func:`train_stream`;
* :mod:`~jepa_blocks.streaming.evaluation`: probes at checkpoints, accuracy matrix, forgetting
  and transfer (Lopez-Paz & Ranzato, 2017), forgetting-curve plots;
* :mod:`~jepa_blocks.streaming.experiment`: the step-5 experiment behind
  ``examples/step5_streaming_continual.py`` (not imported here).

Importing this package imports neither matplotlib nor scikit-learn.

**Experimental** (``__experimental__ = True``): this package and its modules may change or
be removed in any release without a deprecation period; the API audit
(``tests/test_api_audit.py``) records them as experimental.
"""

from jepa_blocks.streaming.buffers import (
    BUFFER_KINDS,
    FIFOBuffer,
    MinRedBuffer,
    ReplayBuffer,
    ReservoirBuffer,
    build_buffer,
    replay_count,
)
from jepa_blocks.streaming.driver import EvalFn, StreamConfig, StreamResult, train_stream
from jepa_blocks.streaming.evaluation import (
    ContinualMetrics,
    ProbeTask,
    StreamEvaluator,
    accuracy_matrix,
    average_accuracy,
    backward_transfer,
    continual_metrics,
    forgetting,
    forward_transfer,
    plot_accuracy_curves,
    plot_forgetting_curves,
)
from jepa_blocks.streaming.protocols import (
    ImageSequenceMaker,
    SequenceMaker,
    SequenceStream,
    StreamBatch,
    StreamPlan,
    blur_boundaries,
    class_incremental_stream,
    even_class_splits,
    regime_shift_stream,
    stationary_stream,
)
from jepa_blocks.streaming.regularizers import EWC, SI, WeightRegularizer

__experimental__ = True

__all__ = [
    "BUFFER_KINDS",
    "EWC",
    "SI",
    "ContinualMetrics",
    "EvalFn",
    "FIFOBuffer",
    "ImageSequenceMaker",
    "MinRedBuffer",
    "ProbeTask",
    "ReplayBuffer",
    "ReservoirBuffer",
    "SequenceMaker",
    "SequenceStream",
    "StreamBatch",
    "StreamConfig",
    "StreamEvaluator",
    "StreamPlan",
    "StreamResult",
    "WeightRegularizer",
    "accuracy_matrix",
    "average_accuracy",
    "backward_transfer",
    "blur_boundaries",
    "build_buffer",
    "class_incremental_stream",
    "continual_metrics",
    "even_class_splits",
    "forgetting",
    "forward_transfer",
    "plot_accuracy_curves",
    "plot_forgetting_curves",
    "regime_shift_stream",
    "replay_count",
    "stationary_stream",
    "train_stream",
]
