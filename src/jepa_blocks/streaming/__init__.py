"""Streaming continual self-supervised learning: protocols, replay, consolidation, evaluation.

* :mod:`~jepa_blocks.streaming.protocols`: stream plans (stationary single pass,
  class-incremental splits, transformation-regime shifts, blurred boundaries) and the batched
  :class:`SequenceStream` over any sequence source;
* :mod:`~jepa_blocks.streaming.buffers`: FIFO, reservoir and MinRed replay buffers with a fixed
  memory budget (Purushwalkam, Morgado & Gupta, 2022);
* :mod:`~jepa_blocks.streaming.regularizers`: EWC (Kirkpatrick et al., 2017) and SI (Zenke et al.,
  2017) on the online encoder;
* :mod:`~jepa_blocks.streaming.driver`: single-pass training with the library's one loop
  (:func:`train_stream` = :func:`jepa_blocks.train.fit` over a :class:`RepeatedStream` with the
  :func:`stream_step_fn` and the replay, regulariser and checkpoint callbacks);
* :mod:`~jepa_blocks.streaming.evaluation`: probes at checkpoints, accuracy matrix, forgetting
  and transfer (Lopez-Paz & Ranzato, 2017), forgetting-curve plots.

The step-5 experiment (protocols, replay ablation, report) is the recipe
``examples/step5_streaming_continual.py``.

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
