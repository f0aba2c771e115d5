"""Bad-input table: the loop, its config, schedules, checkpoints, run-time helpers."""

from __future__ import annotations

import pytest
import torch
from test_loop import ToyLoader, tiny_seq_jepa
from torch import nn

from bad_inputs import Case, run_case
from jepa_blocks.runtime import num_threads, write_json
from jepa_blocks.train import TrainConfig, build_optimizer, fit, lr_at, warmup_cosine_lr
from jepa_blocks.train.checkpoint import load_checkpoint, save_checkpoint
from jepa_blocks.train.config import apply_overrides, config_from_dict, load_config

CFG = TrainConfig(epochs=1, progress=False, device="cpu")
LR = dict(total_steps=10, warmup_steps=2, base_lr=1e-3)


def _with_threads(n):
    with num_threads(n):
        return torch.get_num_threads()


CASES: list[Case] = [
    Case(
        "fit-model-not-module",
        lambda: fit(lambda x: x, ToyLoader(), CFG),
        match="model must be an nn.Module",
    ),
    Case(
        "fit-config-dict",
        lambda: fit(nn.Linear(2, 2), ToyLoader(), {"epochs": 1}),
        match="config must be a TrainConfig",
    ),
    Case(
        "fit-loader-no-len",
        lambda: fit(nn.Linear(2, 2), iter([1]), CFG),
        match="loader must be an iterable with a length",
    ),
    Case("fit-loader-empty", lambda: fit(nn.Linear(2, 2), [], CFG), match="at least one batch"),
    Case(
        "fit-optimizer-type",
        lambda: fit(nn.Linear(2, 2), ToyLoader(), CFG, optimizer="adam"),
        match="optimizer must be",
    ),
    Case(
        "fit-step_fn-type",
        lambda: fit(nn.Linear(2, 2), ToyLoader(), CFG, step_fn=3),
        match="step_fn must be callable",
    ),
    Case(
        "fit-eval_fn-type",
        lambda: fit(nn.Linear(2, 2), ToyLoader(), CFG, eval_fn="x"),
        match="eval_fn must be callable",
    ),
    Case(
        "fit-callbacks-type",
        lambda: fit(nn.Linear(2, 2), ToyLoader(), CFG, callbacks=[print]),
        match="Callback instances",
    ),
    Case(
        "fit-vector-loss",
        lambda: fit(nn.Linear(2, 2), ToyLoader(), CFG, batch_fn=lambda m, b, d: torch.ones(3)),
        match="scalar tensor or have a scalar 'loss'.*shape \\(3,\\)",
    ),
    Case(
        "TrainConfig-grad_clip-neg",
        lambda: TrainConfig(grad_clip=-1.0),
        match="TrainConfig.grad_clip",
    ),
    Case("TrainConfig-epochs-0", lambda: TrainConfig(epochs=0), match="TrainConfig.epochs"),
    Case("TrainConfig-epochs-float", lambda: TrainConfig(epochs=2.5), match="TrainConfig.epochs"),
    Case("TrainConfig-lr-nan", lambda: TrainConfig(lr=float("nan")), match="TrainConfig.lr"),
    Case(
        "TrainConfig-final_lr-neg",
        lambda: TrainConfig(final_lr=-1e-5),
        match="TrainConfig.final_lr",
    ),
    Case(
        "TrainConfig-log_every-0", lambda: TrainConfig(log_every=0), match="TrainConfig.log_every"
    ),
    Case("TrainConfig-amp", lambda: TrainConfig(amp="fp16"), match="TrainConfig.amp"),
    Case("TrainConfig-resume-str", lambda: TrainConfig(resume="no"), match="TrainConfig.resume"),
    Case(
        "TrainConfig-warmup-longer-than-training",
        lambda: TrainConfig(epochs=10, warmup_epochs=20),
        match=r"warmup_epochs \(20\) must not exceed TrainConfig.epochs \(10\)",
    ),
    Case(
        "TrainConfig-warmup_steps-over-max_steps",
        lambda: TrainConfig(max_steps=5, warmup_steps=9),
        match="warmup_steps",
    ),
    Case(
        "TrainConfig-defaults-consistent",
        lambda: TrainConfig().warmup_epochs,
        raises=None,
        check=lambda v: v <= TrainConfig().epochs,
    ),
    Case("TrainConfig-device-empty", lambda: TrainConfig(device=""), match="TrainConfig.device"),
    Case(
        "config_from_dict-unknown",
        lambda: config_from_dict(TrainConfig, {"lrr": 1}),
        match="unknown config key.*lrr",
    ),
    Case(
        "config_from_dict-type",
        lambda: config_from_dict(TrainConfig, {"epochs": "two"}),
        match="epochs must be an int",
    ),
    Case(
        "config_from_dict-not-dataclass",
        lambda: config_from_dict(dict, {}),
        match="cls must be a dataclass",
    ),
    Case("apply_overrides-no-eq", lambda: apply_overrides(CFG, ["lr"]), match="key=value"),
    Case(
        "apply_overrides-unknown", lambda: apply_overrides(CFG, ["x.y=1"]), match="unknown config"
    ),
    Case(
        "load_config-missing-file",
        lambda: load_config(TrainConfig, "/nonexistent.yaml"),
        raises=FileNotFoundError,
    ),
    Case("lr_at-recipe", lambda: lr_at(0, recipe="cosine", **LR), match="recipe"),
    Case(
        "lr_at-value",
        lambda: lr_at(1, recipe="paper", **LR),
        raises=None,
        check=lambda v: 1e-5 < v < 1e-3,
    ),
    Case(
        "warmup_cosine_lr-end",
        lambda: warmup_cosine_lr(10, final_lr=0.0, **LR),
        raises=None,
        check=lambda v: abs(v) < 1e-12,
    ),
    Case("build_optimizer-lr", lambda: build_optimizer(nn.Linear(2, 2), lr=-1.0), match="lr"),
    Case(
        "build_optimizer-recipe",
        lambda: build_optimizer(nn.Linear(2, 2), recipe="sgd"),
        match="recipe",
    ),
    Case(
        "save_checkpoint-object",
        lambda: save_checkpoint("/tmp/jb_bad.pt", {"m": nn.Linear(2, 2)}),
        raises=TypeError,
        match="tensors and primitives",
    ),
    Case(
        "load_checkpoint-missing",
        lambda: load_checkpoint("/nonexistent/ck.pt"),
        raises=FileNotFoundError,
        match="no checkpoint",
    ),
    Case("num_threads-0", lambda: _with_threads(0), match="n must be an int >= 1"),
    Case("num_threads-float", lambda: _with_threads(1.5), match="n must be an int"),
    Case("num_threads-1", lambda: _with_threads(1), raises=None, check=lambda v: v == 1),
    Case(
        "write_json-object",
        lambda: write_json("/tmp/jb_bad.json", {"m": object()}),
        raises=TypeError,
        match="not JSON-serialisable",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case) -> None:
    run_case(case)


def test_a_rejected_non_finite_batch_leaves_the_model_unchanged(tmp_path) -> None:
    """A NaN batch stops the loop before any state (parameters, BatchNorm statistics) changes."""
    model = tiny_seq_jepa()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    class NaNLoader(ToyLoader):
        def __iter__(self):
            for batch in super().__iter__():
                yield batch._replace(views=batch.views * float("nan"))

    with pytest.raises(Exception, match=r"non-finite|NaN"):
        fit(model, NaNLoader(), TrainConfig(epochs=1, progress=False, device="cpu"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
