"""Bad-input table of jepa_blocks.streaming (see tests/bad_inputs.py): buffers, EWC / SI, stream
protocols, the driver's parts and the continual metrics; rejected inputs change no state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bad_inputs import Case, run_case
from jepa_blocks._validation import NonFiniteError
from jepa_blocks.data import ViewSequence, mnist_affine_views
from jepa_blocks.streaming import (
    EWC,
    SI,
    FIFOBuffer,
    ImageSequenceMaker,
    MinRedBuffer,
    ProbeTask,
    RegularizerCallback,
    RepeatedStream,
    ReplayCallback,
    ReservoirBuffer,
    SequenceStream,
    StreamCheckpoints,
    StreamConfig,
    StreamEvaluator,
    StreamPlan,
    accuracy_matrix,
    backward_transfer,
    blur_boundaries,
    build_buffer,
    class_incremental_stream,
    continual_metrics,
    even_class_splits,
    forgetting,
    forward_transfer,
    plot_accuracy_curves,
    plot_forgetting_curves,
    regime_shift_stream,
    replay_count,
    stationary_stream,
    stream_step_fn,
    train_stream,
)
from jepa_blocks.train import TrainConfig
from streaming.streaming_testutils import tiny_model, tiny_source

ITEMS = {"index": torch.arange(4), "regime": torch.zeros(4, dtype=torch.long)}
FEATS = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
PLAN = class_incremental_stream(torch.arange(12) % 3, splits=[(0,), (1, 2)], seed=0)
R = torch.tensor([[0.9, 0.1], [0.7, 0.8]])


def filled(kind: str = "minred", capacity: int = 6) -> FIFOBuffer | MinRedBuffer:
    buf = build_buffer(kind, capacity, seed=1)
    for k in range(3):
        items = {"index": torch.arange(4) + 4 * k, "regime": torch.zeros(4, dtype=torch.long)}
        buf.add(items, features=torch.randn(4, 3, generator=torch.Generator().manual_seed(k)))
    return buf


def ids(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.long)


def index_maker(indices, regimes, generator):
    n = indices.numel()
    z = torch.zeros(n, 2, 1, 1, 1)
    return ViewSequence(z, torch.zeros(n, 2, 1), torch.zeros(n, 1, 1), regimes.clone(), indices)


def stream(**kw) -> SequenceStream:
    return SequenceStream(kw.pop("plan", PLAN), kw.pop("maker", index_maker), batch_size=4, **kw)


def maker(**kw) -> ImageSequenceMaker:
    return ImageSequenceMaker(tiny_source(12), mnist_affine_views(), num_observed=2, **kw)


def lin() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(2, 1)


def nan_grads(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.grad = torch.full_like(p, math.nan)
    return module


def ewc_state(**change) -> dict:
    return EWC(lin(), weight=1.0).state_dict() | change


def minred_state(**change) -> dict:
    return filled().state_dict() | change


class _Loader:
    def set_epoch(self, k: int) -> None:
        del k

    def __iter__(self):
        return iter(())


TASK = ProbeTask("t", _Loader(), _Loader())

CASES: list[Case] = [
    # replay buffers
    Case("replay_count-ratio-negative", lambda: replay_count(4, ratio=-1.0, available=8), ValueError, "ratio must be a finite number >= 0"),
    Case("replay_count-fresh-negative", lambda: replay_count(-1, ratio=1.0, available=8), ValueError, "num_fresh must be an int >= 0"),
    Case("replay_count-available-float", lambda: replay_count(4, ratio=1.0, available=2.5), TypeError, "available must be an int"),
    Case("replay_count-fresh-bool", lambda: replay_count(True, ratio=1.0, available=8), TypeError, "num_fresh must be an int"),
    Case("replay_count-capped", lambda: replay_count(8, ratio=1.0, available=3), None, check=lambda v: v == 3),
    Case("FIFOBuffer-capacity-zero", lambda: FIFOBuffer(0), ValueError, "capacity must be an int >= 1"),
    Case("ReservoirBuffer-capacity-float", lambda: ReservoirBuffer(4.0), TypeError, "capacity must be an int"),
    Case("MinRedBuffer-seed-float", lambda: MinRedBuffer(4, seed=0.5), TypeError, "seed must be an int"),
    Case("MinRedBuffer-max-uses-zero", lambda: MinRedBuffer(4, max_uses=0), ValueError, "max_uses must be an int >= 1"),
    Case("build_buffer-kind-typo", lambda: build_buffer("lru", 4), ValueError, "kind must be one of"),
    Case("add-not-mapping", lambda: FIFOBuffer(4).add(torch.arange(4)), TypeError, "items must be a non-empty mapping"),
    Case("add-empty-mapping", lambda: FIFOBuffer(4).add({}), TypeError, "items must be a non-empty mapping"),
    Case("add-scalar-field", lambda: FIFOBuffer(4).add({"index": torch.tensor(1)}), TypeError, r"items\['index'\] must be a tensor with a batch dimension"),
    Case("add-batch-sizes", lambda: FIFOBuffer(4).add({"a": torch.zeros(2), "b": torch.zeros(3)}), ValueError, "same batch size"),
    Case("add-new-field", lambda: filled("fifo").add({"other": torch.zeros(4)}), ValueError, "items must have the fields"),
    Case("add-dtype-changes", lambda: filled("fifo").add({k: v.float() for k, v in ITEMS.items()}), ValueError, "rows of shape .* and dtype"),
    Case("add-empty-batch", lambda: FIFOBuffer(4).add({"index": torch.zeros(0, dtype=torch.long)}), None, check=lambda v: v.shape == (0,)),
    Case("MinRed-add-no-features", lambda: MinRedBuffer(4).add(ITEMS), ValueError, "MinRedBuffer needs features"),
    Case("MinRed-add-features-nan", lambda: MinRedBuffer(4).add(ITEMS, features=torch.full((4, 3), math.nan)), NonFiniteError, "features must be finite"),
    Case("MinRed-add-features-rows", lambda: MinRedBuffer(4).add(ITEMS, features=torch.randn(3, 3)), ValueError, r"features must have shape \(4, D\)"),
    Case("MinRed-add-features-columns", lambda: filled().add(ITEMS, features=torch.randn(4, 5)), ValueError, r"features must have shape \(4, 3\)"),
    Case("MinRed-add-features-int", lambda: MinRedBuffer(4).add(ITEMS, features=torch.ones(4, 3, dtype=torch.long)), TypeError, "features must have a floating dtype"),
    Case("sample-n-negative", lambda: filled().sample(-1), ValueError, "n must be an int >= 0"),
    Case("sample-n-float", lambda: filled().sample(1.5), TypeError, "n must be an int"),
    Case("items-slot-out-of-range", lambda: filled().items(torch.tensor([9])), ValueError, r"slots must be occupied slots in \[0, 6\)"),
    Case("items-slot-empty", lambda: FIFOBuffer(4).items(torch.tensor([0])), ValueError, "slots must be occupied slots"),
    Case("items-slot-float", lambda: filled().items(torch.tensor([0.0])), TypeError, "slots must hold integer slot indices"),
    Case("update-slot-negative", lambda: filled("fifo").update(torch.tensor([-1])), ValueError, "slots must be occupied slots"),
    Case("MinRed-update-features-shape", lambda: filled().update(torch.tensor([0, 1]), features=torch.randn(3, 3)), ValueError, r"features must have shape \(2, 3\)"),
    Case("MinRed-update-features-nan", lambda: filled().update(torch.tensor([0]), features=torch.full((1, 3), math.inf)), NonFiniteError, "features must be finite"),
    Case("load-kind", lambda: FIFOBuffer(6).load_state_dict(filled().state_dict()), ValueError, "cannot load a 'minred' buffer"),
    Case("load-capacity", lambda: MinRedBuffer(5).load_state_dict(filled().state_dict()), ValueError, "of capacity 6"),
    Case("load-not-mapping", lambda: MinRedBuffer(6).load_state_dict([1, 2]), TypeError, "state must be a mapping"),
    Case("load-missing-key", lambda: MinRedBuffer(6).load_state_dict({k: v for k, v in minred_state().items() if k != "uses"}), ValueError, r"missing: \['uses'\]"),
    Case("load-valid-shape", lambda: MinRedBuffer(6).load_state_dict(minred_state(valid=torch.ones(5, dtype=torch.bool))), ValueError, "complete 'minred' buffer state"),
    Case("load-generator", lambda: MinRedBuffer(6).load_state_dict(minred_state(generator=torch.zeros(3))), ValueError, r"state\['generator'\] is not a generator state"),
    Case("load-features-shape", lambda: MinRedBuffer(6).load_state_dict(minred_state(features=torch.zeros(5, 3))), ValueError, r"state\['features'\] must be None or \(6, D\)"),
    Case("load-fifo-head", lambda: FIFOBuffer(6).load_state_dict(filled("fifo").state_dict() | {"head": 6}), ValueError, r"state\['head'\] must be < capacity 6"),
    # EWC / SI
    Case("EWC-module-function", lambda: EWC(lambda x: x, weight=1.0), TypeError, r"module must be an nn\.Module"),
    Case("EWC-weight-negative", lambda: EWC(lin(), weight=-1.0), ValueError, "weight must be a finite number >= 0"),
    Case("EWC-decay-above-1", lambda: EWC(lin(), weight=1.0, decay=1.5), ValueError, r"decay must be in \[0, 1\]"),
    Case("EWC-frozen-module", lambda: EWC(lin().requires_grad_(False), weight=1.0), ValueError, "no parameters that require gradients"),
    Case("SI-damping-zero", lambda: SI(lin(), weight=1.0, damping=0.0), ValueError, "damping must be a finite number > 0"),
    Case("SI-weight-string", lambda: SI(lin(), weight="1"), TypeError, "weight must be a real number"),
    Case("EWC-observe-nan-grads", lambda: EWC(nan_grads(lin()), weight=1.0).observe(), NonFiniteError, r"gradients of \['weight', 'bias'\] must be finite"),
    Case("SI-observe-nan-grads", lambda: SI(nan_grads(lin()), weight=1.0).observe(), NonFiniteError, "gradients of .* must be finite"),
    Case("EWC-load-kind", lambda: EWC(lin(), weight=1.0).load_state_dict(SI(lin(), weight=1.0).state_dict()), ValueError, "cannot load a 'si' state into 'ewc'"),
    Case("EWC-load-missing", lambda: EWC(lin(), weight=1.0).load_state_dict({"kind": "ewc"}), ValueError, r"state\['anchor'\] must map the parameters"),
    Case("EWC-load-shape", lambda: EWC(lin(), weight=1.0).load_state_dict(ewc_state(fisher_sum={"weight": torch.zeros(3), "bias": torch.zeros(1)})), ValueError, r"state\['fisher_sum'\] must map the parameters"),
    Case("EWC-load-number", lambda: EWC(lin(), weight=1.0).load_state_dict(ewc_state(decay="0.5")), ValueError, r"state\['decay'\] must be a number"),
    Case("EWC-load-not-mapping", lambda: EWC(lin(), weight=1.0).load_state_dict(None), ValueError, "cannot load a 'NoneType' state"),
    # stream plans and streams
    Case("StreamPlan-repeats", lambda: StreamPlan(torch.tensor([0, 0]), ids(2), ids(2), (2,)), ValueError, "order must visit each item once"),
    Case("StreamPlan-empty", lambda: StreamPlan(ids(0), ids(0), ids(0), ()), ValueError, "at least one item"),
    Case("StreamPlan-splits-length", lambda: StreamPlan(torch.arange(3), ids(2), ids(3), (3,)), ValueError, r"splits must have one entry per position \(3\)"),
    Case("StreamPlan-order-float", lambda: StreamPlan(torch.arange(3.0), ids(3), ids(3), (3,)), TypeError, "order must hold integers"),
    Case("StreamPlan-boundaries-float", lambda: StreamPlan(torch.arange(3), ids(3), ids(3), (1.5, 3)), TypeError, "boundaries must be a sequence of ints"),
    Case("StreamPlan-boundaries-end", lambda: StreamPlan(torch.arange(3), ids(3), ids(3), (2,)), ValueError, "boundaries must increase strictly and end at N = 3"),
    Case("StreamPlan-split-float", lambda: PLAN.items_of_split(1.0), TypeError, "split must be an int"),
    Case("StreamPlan-batch-size-zero", lambda: PLAN.batch_slices(0), ValueError, "batch_size must be an int >= 1"),
    Case("stationary-num-items-zero", lambda: stationary_stream(0), ValueError, "num_items must be an int >= 1"),
    Case("stationary-both", lambda: stationary_stream(4, indices=[0, 1]), ValueError, "pass num_items or indices, not both"),
    Case("stationary-neither", lambda: stationary_stream(), ValueError, "pass num_items or indices"),
    Case("stationary-indices-repeat", lambda: stationary_stream(indices=[1, 1]), ValueError, "indices must be distinct"),
    Case("stationary-seed-float", lambda: stationary_stream(4, seed=1.5), TypeError, "seed must be an int"),
    Case("even_class_splits-too-many", lambda: even_class_splits(3, 4), ValueError, r"num_splits must be <= num_classes \(3\)"),
    Case("class_incremental-overlap", lambda: class_incremental_stream(torch.arange(6) % 3, splits=[(0, 1), (1, 2)]), ValueError, "splits must be disjoint"),
    Case("class_incremental-flat-splits", lambda: class_incremental_stream(torch.arange(6) % 3, splits=[0, 1]), TypeError, r"splits\[k\] must be a sequence of ints"),
    Case("class_incremental-splits-int", lambda: class_incremental_stream(torch.arange(6) % 3, splits=3), TypeError, "splits must be a sequence of class-id groups"),
    Case("class_incremental-float-ids", lambda: class_incremental_stream(torch.arange(6) % 3, splits=[(0.5,)]), TypeError, r"splits\[k\] must be a sequence of ints"),
    Case("class_incremental-shuffle-string", lambda: class_incremental_stream(torch.arange(6) % 3, splits=[(0,)], shuffle="no"), TypeError, "shuffle must be a bool"),
    Case("class_incremental-regimes-length", lambda: class_incremental_stream(torch.arange(6) % 3, splits=[(0,), (1,)], regimes=[0]), ValueError, "regimes must give one id >= 0 per split"),
    Case("class_incremental-regimes-float", lambda: class_incremental_stream(torch.arange(6) % 3, splits=[(0,)], regimes=[0.5]), TypeError, "regimes must be a sequence of ints"),
    Case("class_incremental-no-items", lambda: class_incremental_stream(torch.arange(6) % 3, splits=[(7,)]), ValueError, r"split 0 \(classes \(7,\)\) has no items"),
    Case("class_incremental-labels-float", lambda: class_incremental_stream(torch.zeros(6), splits=[(0,)]), TypeError, "labels must hold integers"),
    Case("regime_shift-too-many", lambda: regime_shift_stream(3, num_regimes=4), ValueError, r"num_regimes must be <= the number of items \(3\)"),
    Case("blur-width", lambda: blur_boundaries(PLAN, width=0.6), ValueError, r"width must be in \[0, 0.5\]"),
    Case("blur-plan-tensor", lambda: blur_boundaries(torch.arange(3), width=0.1), TypeError, "plan must be a StreamPlan"),
    Case("ImageSequenceMaker-source", lambda: ImageSequenceMaker(torch.zeros(2, 1, 8, 8), mnist_affine_views(), num_observed=2), TypeError, "source must be a LabelledImages"),
    Case("ImageSequenceMaker-views", lambda: ImageSequenceMaker(tiny_source(12), [], num_observed=2), TypeError, "views must be a SequenceViews"),
    Case("ImageSequenceMaker-normalize-string", lambda: maker(normalize="yes"), TypeError, "normalize must be a bool"),
    Case("ImageSequenceMaker-num-observed-zero", lambda: ImageSequenceMaker(tiny_source(12), mnist_affine_views(), num_observed=0), ValueError, "num_observed must be an int >= 1"),
    Case("ImageSequenceMaker-index-range", lambda: maker()(torch.tensor([12]), None, torch.Generator()), ValueError, r"indices must be in \[0, 12\)"),
    Case("ImageSequenceMaker-index-empty", lambda: maker()(torch.zeros(0, dtype=torch.long), None, torch.Generator()), ValueError, "indices must not be empty"),
    Case("ImageSequenceMaker-generator-int", lambda: maker()(torch.tensor([1]), None, 0), TypeError, r"generator must be a torch\.Generator"),
    Case("ImageSequenceMaker-regime-range", lambda: maker()(torch.tensor([1]), torch.tensor([1]), torch.Generator()), ValueError, r"regime ids must be in \[0, 1\)"),
    Case("SequenceStream-plan", lambda: SequenceStream(None, index_maker, batch_size=4), TypeError, "plan must be a StreamPlan"),
    Case("SequenceStream-maker", lambda: SequenceStream(PLAN, 3, batch_size=4), TypeError, "maker must be callable"),
    Case("SequenceStream-batch-size", lambda: SequenceStream(PLAN, index_maker, batch_size=0), ValueError, "batch_size must be an int >= 1"),
    Case("SequenceStream-seed-float", lambda: stream(seed=1.5), TypeError, "seed must be an int"),
    Case("SequenceStream-align-string", lambda: stream(align_to_boundaries="yes"), TypeError, "align_to_boundaries must be a bool"),
    Case("SequenceStream-maker-regimes", lambda: SequenceStream(regime_shift_stream(12, num_regimes=2), maker(), batch_size=4), ValueError, "the plan uses 2 regimes but the maker has 1"),
    Case("SequenceStream-batch-past-end", lambda: stream().batch(3), ValueError, r"number must be a batch number in \[0, 3\)"),
    Case("SequenceStream-batch-float", lambda: stream().batch(1.0), TypeError, "number must be an int"),
    # the driver's parts
    Case("StreamConfig-repeats-zero", lambda: StreamConfig(repeats=0), ValueError, "repeats must be an int >= 1"),
    Case("StreamConfig-ratio-negative", lambda: StreamConfig(replay_ratio=-0.5), ValueError, "replay_ratio must be a finite number >= 0"),
    Case("StreamConfig-store-typo", lambda: StreamConfig(store="views"), ValueError, "store must be one of"),
    Case("StreamConfig-checkpoint-above-1", lambda: StreamConfig(checkpoints=(0.5, 1.5)), ValueError, r"checkpoints must be fractions in \[0, 1\]"),
    Case("StreamConfig-checkpoints-string", lambda: StreamConfig(checkpoints="0.5"), TypeError, "checkpoints must be a sequence of fractions"),
    Case("StreamConfig-checkpoints-nan", lambda: StreamConfig(checkpoints=(math.nan,)), ValueError, r"checkpoints must be fractions in \[0, 1\]"),
    Case("StreamConfig-every-zero", lambda: StreamConfig(consolidate="every"), ValueError, "consolidate='every' needs consolidate_every >= 1"),
    Case("StreamConfig-save-string", lambda: StreamConfig(save_checkpoints="yes"), TypeError, "save_checkpoints must be a bool"),
    Case("RepeatedStream-stream", lambda: RepeatedStream(PLAN), TypeError, "stream must be a SequenceStream"),
    Case("RepeatedStream-repeats", lambda: RepeatedStream(stream(), repeats=0), ValueError, "repeats must be an int >= 1"),
    Case("ReplayCallback-buffer", lambda: ReplayCallback({}, stream()), TypeError, "buffer must be a ReplayBuffer"),
    Case("ReplayCallback-stream", lambda: ReplayCallback(FIFOBuffer(4), PLAN), TypeError, "stream must be a SequenceStream"),
    Case("ReplayCallback-repeats", lambda: ReplayCallback(FIFOBuffer(4), stream(), repeats=1.0), TypeError, "repeats must be an int"),
    Case("ReplayCallback-store", lambda: ReplayCallback(FIFOBuffer(4), stream(), store="views"), ValueError, "store must be one of"),
    Case("RegularizerCallback-regularizer", lambda: RegularizerCallback(lin(), stream()), TypeError, "regularizer must be a WeightRegularizer"),
    Case("RegularizerCallback-consolidate", lambda: RegularizerCallback(EWC(lin(), weight=1.0), stream(), consolidate="end"), ValueError, "consolidate must be one of"),
    Case("RegularizerCallback-repeats", lambda: RegularizerCallback(EWC(lin(), weight=1.0), stream(), repeats=0), ValueError, "repeats must be an int >= 1"),
    Case("StreamCheckpoints-fractions", lambda: StreamCheckpoints(stream(), fractions=(2.0,)), ValueError, r"fractions must be fractions in \[0, 1\]"),
    Case("StreamCheckpoints-eval-fn", lambda: StreamCheckpoints(stream(), eval_fn="probe"), TypeError, "eval_fn must be callable or None"),
    Case("StreamCheckpoints-log", lambda: StreamCheckpoints(stream(), log=1), TypeError, "log must be callable or None"),
    Case("StreamCheckpoints-save", lambda: StreamCheckpoints(stream(), save="no"), TypeError, "save must be a bool"),
    Case("StreamCheckpoints-stream", lambda: StreamCheckpoints(PLAN), TypeError, "stream must be a SequenceStream"),
    Case("stream_step_fn-replay", lambda: stream_step_fn(FIFOBuffer(4)), TypeError, "replay must be a ReplayCallback or NoneType"),
    Case("train_stream-model", lambda: train_stream(lambda v, a: None, stream()), TypeError, r"model must be a Module"),
    Case("train_stream-train", lambda: train_stream(tiny_model(), stream(), train={}), TypeError, "train must be a TrainConfig"),
    Case("train_stream-stream-config", lambda: train_stream(tiny_model(), stream(), train=TrainConfig(), stream_config={}), TypeError, "stream_config must be a StreamConfig"),
    # continual evaluation
    Case("StreamEvaluator-no-tasks", lambda: StreamEvaluator([]), TypeError, "tasks must be a non-empty sequence of ProbeTask"),
    Case("StreamEvaluator-representation", lambda: StreamEvaluator([TASK], representations=("zagg",)), ValueError, "representations must be one of"),
    Case("StreamEvaluator-representation-twice", lambda: StreamEvaluator([TASK], representations=("z", "z")), ValueError, "representations must be distinct"),
    Case("StreamEvaluator-per-task", lambda: StreamEvaluator([TASK], per_task="each"), ValueError, "per_task must be one of"),
    Case("StreamEvaluator-classifier", lambda: StreamEvaluator([TASK], classifier="sgd"), ValueError, "classifier must be one of"),
    Case("StreamEvaluator-r2-string", lambda: StreamEvaluator([TASK], r2="yes"), TypeError, "r2 must be a bool"),
    Case("StreamEvaluator-threads-zero", lambda: StreamEvaluator([TASK], threads=0), ValueError, "threads must be an int >= 1"),
    Case("StreamEvaluator-seed-float", lambda: StreamEvaluator([TASK], seed=0.5), TypeError, "seed must be an int"),
    Case("StreamEvaluator-empty-loader", lambda: StreamEvaluator([TASK])(tiny_model()), ValueError, "loader must yield at least one batch"),
    Case("accuracy_matrix-empty", lambda: accuracy_matrix([]), ValueError, "evaluations must not be empty"),
    Case("accuracy_matrix-missing-key", lambda: accuracy_matrix([{"fraction": 0.5}]), ValueError, "has no 'task_acc'"),
    Case("accuracy_matrix-missing-fraction", lambda: accuracy_matrix([{"fraction": 0.5, "task_acc": [1.0]}], fractions=[1.0]), ValueError, "no checkpoint at fraction 1.0"),
    Case("accuracy_matrix-widths", lambda: accuracy_matrix([{"task_acc": [1.0]}, {"task_acc": [1.0, 0.5]}]), ValueError, "same number of tasks"),
    Case("forgetting-not-square", lambda: forgetting(torch.ones(2, 3)), ValueError, r"matrix must be a square \(T, T\)"),
    Case("forgetting-nan", lambda: forgetting(torch.tensor([[math.nan, 0.1], [0.5, 0.5]])), NonFiniteError, "matrix must be finite"),
    Case("backward_transfer-one-task", lambda: backward_transfer(torch.ones(1, 1)), ValueError, "backward transfer needs at least 2 tasks"),
    Case("forward_transfer-baseline-length", lambda: forward_transfer(R, [0.1]), ValueError, r"baseline must have one value per task \(2\)"),
    Case("forward_transfer-baseline-nan", lambda: forward_transfer(R, [0.1, math.nan]), NonFiniteError, "baseline must be finite"),
    Case("continual_metrics-values", lambda: continual_metrics(R, baseline=[0.1, 0.2]), None, check=lambda v: abs(v.backward_transfer - (0.7 - 0.9)) < 1e-6),
    Case("plot_accuracy_curves-shape", lambda: plot_accuracy_curves([0.5, 1.0], torch.ones(3, 2)), ValueError, r"accuracies must have shape \(len\(progress\)=2, T\)"),
    Case("plot_accuracy_curves-names", lambda: plot_accuracy_curves([0.5, 1.0], torch.ones(2, 2), task_names=["a"]), ValueError, "task_names must have 2 entries"),
    Case("plot_forgetting_curves-empty", lambda: plot_forgetting_curves({}), ValueError, "curves must hold at least one run"),
    Case("plot_forgetting_curves-lengths", lambda: plot_forgetting_curves({"a": ([0.5, 1.0], [0.3])}), ValueError, r"curves\['a'\]: 2 progress values but 1 values"),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def _snapshot(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        if isinstance(v, dict):
            out[k] = _snapshot(v)
        else:
            out[k] = v.clone() if isinstance(v, torch.Tensor) else v
    return out


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    return a == b


@pytest.mark.parametrize("kind", ["fifo", "reservoir", "minred"])
def test_rejected_buffer_calls_change_nothing(kind):
    buf = filled(kind)
    before = _snapshot(buf.state_dict())
    bad_calls = [
        lambda: buf.add({k: v.float() for k, v in ITEMS.items()}, features=FEATS),
        lambda: buf.add({"index": ITEMS["index"]}, features=FEATS),
        lambda: buf.update(torch.tensor([0, 99])),
        lambda: buf.update(torch.tensor([-1])),
        lambda: buf.items(torch.tensor([0.5])),
        lambda: buf.load_state_dict({**buf.state_dict(), "generator": torch.zeros(2)}),
        lambda: buf.load_state_dict({k: v for k, v in buf.state_dict().items() if k != "store"}),
    ]
    if kind == "minred":
        bad_calls += [
            lambda: buf.add(ITEMS, features=torch.full((4, 3), math.nan)),
            lambda: buf.add(ITEMS, features=torch.randn(4, 7)),
            lambda: buf.update(buf.slots[:2], features=torch.full((2, 3), math.nan)),
            lambda: buf.load_state_dict({**buf.state_dict(), "features": torch.zeros(2, 3)}),
        ]
    for call in bad_calls:
        with pytest.raises((ValueError, TypeError)):
            call()
    assert _same(before, buf.state_dict())


def test_a_rejected_first_add_allocates_nothing():
    buf = MinRedBuffer(4)
    with pytest.raises(NonFiniteError):
        buf.add(ITEMS, features=torch.full((4, 3), math.nan))
    assert buf.keys == () and buf.features is None and buf.num_seen == 0
    buf.add({"other": torch.zeros(4)}, features=FEATS)  # the fields are still free
    assert buf.keys == ("other",)


@pytest.mark.parametrize("cls", [EWC, SI])
def test_rejected_regularizer_calls_change_nothing(cls):
    module = lin()
    reg = cls(module, weight=1.0)
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    reg.observe()
    reg.after_step()
    reg.consolidate()
    reg.observe()
    before = _snapshot(reg.state_dict())
    nan_grads(module)
    with pytest.raises(NonFiniteError):
        reg.observe()
    good = reg.state_dict()
    for bad in (
        {**good, "kind": "other"},
        {**good, "anchor": {"weight": torch.zeros(1, 2)}},
        {**good, "weight": "1.0"},
    ):
        with pytest.raises(ValueError):
            reg.load_state_dict(bad)
    assert _same(before, reg.state_dict())


def test_rejected_stream_batches_consume_no_randomness():
    """A rejected maker call raises before drawing from the generator; streams are stateless."""
    m, gen = maker(), torch.Generator().manual_seed(5)
    state = gen.get_state()
    with pytest.raises(ValueError):
        m(torch.tensor([0, 99]), None, gen)
    assert torch.equal(gen.get_state(), state)
    s = SequenceStream(PLAN, m, batch_size=4, seed=2)
    first = s.batch(1).sequences.views
    with pytest.raises(ValueError):
        s.batch(7)
    assert torch.equal(s.batch(1).sequences.views, first)
