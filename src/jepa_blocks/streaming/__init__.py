"""Streaming continual self-supervised learning: protocols, replay, consolidation, evaluation.

Stream plans and the batched :class:`SequenceStream` (:mod:`~jepa_blocks.streaming.protocols`),
FIFO, reservoir and MinRed replay (:mod:`~jepa_blocks.streaming.buffers`), EWC and SI
(:mod:`~jepa_blocks.streaming.regularizers`), single-pass training with the library's one loop
(:mod:`~jepa_blocks.streaming.driver`), probes, forgetting and transfer
(:mod:`~jepa_blocks.streaming.evaluation`). The step-5 recipe is
``examples/step5_streaming_continual.py``. Importing this package imports neither matplotlib nor
scikit-learn. **Experimental**: it may change in any release without a deprecation period.
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
from jepa_blocks.streaming.driver import (
    EvalFn,
    RegularizerCallback,
    RepeatedStream,
    ReplayCallback,
    StreamCheckpoints,
    StreamConfig,
    StreamResult,
    StreamStep,
    stream_step_fn,
    train_stream,
)
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
    "RegularizerCallback",
    "RepeatedStream",
    "ReplayBuffer",
    "ReplayCallback",
    "ReservoirBuffer",
    "SequenceMaker",
    "SequenceStream",
    "StreamBatch",
    "StreamCheckpoints",
    "StreamConfig",
    "StreamEvaluator",
    "StreamPlan",
    "StreamResult",
    "StreamStep",
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
    "stream_step_fn",
    "train_stream",
]
