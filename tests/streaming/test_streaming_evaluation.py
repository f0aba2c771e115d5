"""Accuracy matrix, forgetting and transfer from known matrices; probes at checkpoints; plots."""

from __future__ import annotations

import pytest
import torch
from streaming_testutils import tiny_model, tiny_source

from jepa_blocks.data import SequenceLoader, mnist_affine_views
from jepa_blocks.streaming import (
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

R = torch.tensor(
    [
        [0.90, 0.10, 0.10],
        [0.70, 0.80, 0.20],
        [0.60, 0.75, 0.85],
    ]
)
BASE = [0.10, 0.10, 0.15]


def test_forgetting_from_a_known_matrix():
    f = forgetting(R)
    # f_0 = max(0.9, 0.7) − 0.6 = 0.3; f_1 = 0.8 − 0.75 = 0.05
    assert torch.allclose(f, torch.tensor([0.3, 0.05], dtype=torch.float64))
    # BWT = ((0.6 − 0.9) + (0.75 − 0.8)) / 2
    assert backward_transfer(R) == pytest.approx(-0.175)
    # FWT = ((R01 − b1) + (R12 − b2)) / 2 = ((0.1 − 0.1) + (0.2 − 0.15)) / 2
    assert forward_transfer(R, BASE) == pytest.approx(0.025)
    assert average_accuracy(R) == pytest.approx((0.6 + 0.75 + 0.85) / 3)
    cm = continual_metrics(R, baseline=BASE)
    assert cm.forgetting == pytest.approx(0.175) and cm.max_forgetting == pytest.approx(0.3)
    assert cm.forgetting_per_task == pytest.approx([0.3, 0.05])
    assert cm.backward_transfer == pytest.approx(-0.175)
    assert cm.forward_transfer == pytest.approx(0.025)


def test_forgetting_uses_the_best_earlier_accuracy_and_can_be_negative():
    m = torch.tensor([[0.5, 0.0], [0.9, 0.4]])  # the first task improved later
    assert forgetting(m).tolist() == pytest.approx([-0.4])
    one = continual_metrics(torch.tensor([[0.7]]))
    assert one.forgetting == 0.0 and one.forgetting_per_task == []
    assert one.backward_transfer != one.backward_transfer  # nan
    with pytest.raises(ValueError, match="square"):
        forgetting(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="baseline"):
        forward_transfer(R, [0.1, 0.2])


def test_accuracy_matrix_from_checkpoint_records():
    evals = [
        {"fraction": 0.0, "task_acc": [0.1, 0.1, 0.15]},
        {"fraction": 1 / 3, "task_acc": R[0].tolist()},
        {"fraction": 0.5, "task_acc": [0.0, 0.0, 0.0]},
        {"fraction": 2 / 3, "task_acc": R[1].tolist()},
        {"fraction": 1.0, "task_acc": R[2].tolist()},
    ]
    m = accuracy_matrix(evals, fractions=(1 / 3, 2 / 3, 1.0))
    assert torch.allclose(m, R.double())
    assert accuracy_matrix(evals).shape == (5, 3)
    with pytest.raises(ValueError, match="no checkpoint"):
        accuracy_matrix(evals, fractions=(0.25,))
    with pytest.raises(ValueError, match="task_r2"):
        accuracy_matrix(evals, key="task_r2")


def _tasks():
    src, test = tiny_source(30), tiny_source(15, seed=1)
    views = mnist_affine_views()
    tasks = []
    for j, group in enumerate(([0, 1], [2])):
        g = torch.tensor(group)

        def loader(s, seed):
            return SequenceLoader(s, views, num_observed=2, batch_size=64, shuffle=False, seed=seed)

        tr = src.subset(torch.nonzero(torch.isin(src.labels, g)).flatten())
        te = test.subset(torch.nonzero(torch.isin(test.labels, g)).flatten())
        tasks.append(ProbeTask(str(j), loader(tr, j), loader(te, 10 + j)))
    return tasks


@pytest.mark.parametrize("per_task", ["joint", "separate"])
def test_stream_evaluator(per_task):
    ev = StreamEvaluator(_tasks(), per_task=per_task, classifier="ridge")
    model = tiny_model()
    out = ev(model)
    assert set(out) >= {"linacc", "r2", "task_acc", "task_r2", "seconds"}
    assert 0.0 <= out["linacc"] <= 1.0 and len(out["task_acc"]) == 2
    assert all(0.0 <= a <= 1.0 for a in out["task_acc"])
    again = ev(model)  # the probe sequences are fixed: same features, same scores
    assert again["linacc"] == out["linacc"] and again["task_acc"] == out["task_acc"]
    assert ev.task_names == ["0", "1"]
    both = StreamEvaluator(_tasks(), representations=("z", "z_agg"), classifier="ridge")(model)
    assert both["linacc"] == both["linacc_z"] and both["task_acc"] == both["task_acc_z"]
    assert both["linacc_z_agg"] == out["linacc"]  # the joint probe does not depend on per_task
    with pytest.raises(ValueError, match="representations"):
        StreamEvaluator(_tasks(), representations=("pixels",))
    with pytest.raises(TypeError, match="ProbeTask"):
        StreamEvaluator([])
    with pytest.raises(ValueError, match="per_task"):
        StreamEvaluator(_tasks(), per_task="each")


def test_plots_write_png(tmp_path):
    fig = plot_accuracy_curves(
        [1 / 3, 2 / 3, 1.0], R, task_names=["a", "b", "c"], boundaries=[1 / 3, 2 / 3],
        path=tmp_path / "tasks.png",
    )  # fmt: skip
    assert (tmp_path / "tasks.png").stat().st_size > 0 and fig.axes
    plot_forgetting_curves(
        {"none": ([0.5, 1.0], [0.9, 0.6]), "fifo": ([0.5, 1.0], [0.9, 0.8])},
        path=tmp_path / "forgetting.png",
    )
    assert (tmp_path / "forgetting.png").stat().st_size > 0
    with pytest.raises(ValueError, match="accuracies"):
        plot_accuracy_curves([0.5], R)
    with pytest.raises(ValueError, match="at least one"):
        plot_forgetting_curves({})
