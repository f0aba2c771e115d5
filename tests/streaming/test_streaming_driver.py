"""The single-pass driver: each batch once, K repeats, checkpoints, determinism, exact resume.

:func:`train_stream` is :func:`jepa_blocks.train.fit` over a :class:`RepeatedStream` with the
stream's ``step_fn`` and callbacks; these tests drive it through both entry points.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from streaming_testutils import tiny_model, tiny_source
from torch import nn

from jepa_blocks.data import mnist_affine_views
from jepa_blocks.streaming import (
    EWC,
    SI,
    ImageSequenceMaker,
    RegularizerCallback,
    RepeatedStream,
    ReplayCallback,
    SequenceStream,
    StreamCheckpoints,
    StreamConfig,
    StreamStep,
    build_buffer,
    class_incremental_stream,
    stationary_stream,
    stream_step_fn,
    train_stream,
)
from jepa_blocks.train import TrainConfig, fit, seed_everything
from jepa_blocks.train.loop import NonFiniteLossError


class CountingStream(SequenceStream):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fetched: list[int] = []

    def batch(self, number):
        self.fetched.append(number)
        return super().batch(number)


def _stream(n=36, batch=8, *, split=False, cls=SequenceStream):
    src = tiny_source(n)
    if split:
        plan = class_incremental_stream(src.labels, splits=[[0], [1], [2]], seed=0)
    else:
        plan = stationary_stream(n, seed=0)
    maker = ImageSequenceMaker(src, mnist_affine_views(), num_observed=2)
    return cls(plan, maker, batch_size=batch, seed=0, align_to_boundaries=split)


def _params(model: nn.Module) -> torch.Tensor:
    return torch.cat(
        [p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()]
    )


def _train(**kw) -> TrainConfig:
    """The loop's config of a stream: AdamW, constant lr after the warm-up, on the CPU."""
    base = {
        "device": "cpu",
        "log_every": 1,
        "lr": 1e-3,
        "schedule": "constant",
        "warmup_steps": 0,
        "progress": False,
    }
    return TrainConfig(**{**base, **kw})


def test_each_batch_is_fetched_once_and_repeated_k_times():
    stream = _stream(cls=CountingStream)
    result = train_stream(
        tiny_model(total_steps=3 * len(stream)),
        stream,
        train=_train(),
        stream_config=StreamConfig(repeats=3, checkpoints=(1.0,)),
    )
    assert stream.fetched == list(range(len(stream)))
    assert result.step == 3 * len(stream)
    assert [h["step"] for h in result.history] == list(range(1, result.step + 1))
    assert [h["batch"] for h in result.history] == [b for b in range(len(stream)) for _ in "KKK"]


def test_repeated_stream_yields_each_batch_k_times():
    stream = _stream(n=20, batch=8, cls=CountingStream)  # batches end 8, 16, 20
    steps = list(RepeatedStream(stream, repeats=2))
    assert len(RepeatedStream(stream, repeats=2)) == len(steps) == 6
    assert [(s.number, s.repeat) for s in steps] == [(b, r) for b in range(3) for r in range(2)]
    assert steps[0].batch is steps[1].batch and steps[-1].batch.stop == 20
    assert stream.fetched == [0, 1, 2]
    with pytest.raises(ValueError, match="repeats"):
        RepeatedStream(stream, repeats=0)
    with pytest.raises(TypeError, match="stream"):
        RepeatedStream([1, 2], repeats=1)  # type: ignore[arg-type]


def test_checkpoints_fire_after_the_batch_reaching_each_fraction():
    stream = _stream(n=36, batch=8)  # batch ends 8, 16, 24, 32, 36
    seen = []

    def eval_fn(model, info):
        assert not model.training
        seen.append(dict(info))
        return {"score": 1.0}

    res = train_stream(
        tiny_model(),
        stream,
        train=_train(),
        stream_config=StreamConfig(checkpoints=(0.0, 0.25, 0.5, 1.0)),
        eval_fn=eval_fn,
    )
    assert [e["position"] for e in res.evaluations] == [0, 16, 24, 36]
    assert [e["fraction"] for e in res.evaluations] == [0.0, 0.25, 0.5, 1.0]
    assert [e["step"] for e in res.evaluations] == [0, 2, 3, 5]
    assert all(e["score"] == 1.0 for e in res.evaluations) and len(seen) == 4
    assert res.model.training
    assert set(res.seconds) == {"train", "eval", "total"}


@pytest.mark.parametrize(
    ("kind", "store"), [("fifo", "indices"), ("reservoir", "sequences"), ("minred", "indices")]
)
def test_replay_mixes_the_requested_ratio_and_respects_the_budget(kind, store):
    stream = _stream(n=36, batch=8)
    buf = build_buffer(kind, 10, seed=0)
    res = train_stream(
        tiny_model(),
        stream,
        train=_train(),
        stream_config=StreamConfig(replay_ratio=0.5, store=store, checkpoints=(1.0,)),
        buffer=buf,
    )
    replayed = [h["replayed"] for h in res.history]
    assert replayed[0] == 0 and replayed[1:4] == [4, 4, 4]  # round(0.5 · 8), once filled
    assert all(h["buffer_size"] <= 10 for h in res.history)
    assert 0 < len(buf) <= 10
    assert set(buf.keys) >= ({"index", "regime", "split"} if store == "indices" else {"views"})


def _run(kind, seed=0, **kw):
    stream = _stream(n=30, batch=6)
    buf = build_buffer(kind, 8, seed=seed) if kind else None
    cfg = StreamConfig(checkpoints=(0.5, 1.0), **kw)
    return train_stream(
        tiny_model(seed=seed), stream, train=_train(seed=seed), stream_config=cfg, buffer=buf
    )


@pytest.mark.parametrize("kind", [None, "reservoir", "minred"])
def test_driver_is_deterministic_under_a_seed(kind):
    a, b = _run(kind), _run(kind)
    assert torch.equal(_params(a.model), _params(b.model))
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    if kind:
        assert torch.equal(a.buffer.items()["index"], b.buffer.items()["index"])
    c = _run(kind, seed=1)
    assert not torch.equal(_params(a.model), _params(c.model))


def test_resume_from_a_checkpoint_is_exact(tmp_path):
    def run(out, resume=None):
        stream = _stream(n=30, batch=6)
        model = tiny_model()
        buf = build_buffer("minred", 8, seed=0)
        reg = SI(model.encoder, weight=0.5)
        cfg = StreamConfig(checkpoints=(0.4, 1.0), consolidate="every", consolidate_every=2)
        return train_stream(
            model,
            stream,
            train=_train(out_dir=str(out), log_every=10),
            stream_config=cfg,
            buffer=buf,
            regularizer=reg,
            resume_from=resume,
        )

    full = run(tmp_path / "a")
    assert [p.name for p in full.checkpoints] == ["stream-040.pt", "stream-100.pt"]
    resumed = run(tmp_path / "b", resume=tmp_path / "a" / "stream-040.pt")
    assert resumed.step == full.step
    assert torch.equal(_params(resumed.model), _params(full.model))
    assert torch.equal(resumed.buffer.items()["index"], full.buffer.items()["index"])
    assert resumed.regularizer.consolidations == full.regularizer.consolidations
    omega, omega_full = resumed.regularizer.omega, full.regularizer.omega
    assert omega.keys() == omega_full.keys()
    assert all(torch.equal(omega[k], omega_full[k]) for k in omega)
    assert [e["fraction"] for e in resumed.evaluations] == [0.4, 1.0]
    assert [e["step"] for e in resumed.evaluations] == [e["step"] for e in full.evaluations]
    assert [p.name for p in resumed.checkpoints] == ["stream-100.pt"]


def test_resumed_history_equals_the_uninterrupted_one(tmp_path):
    def run(out, resume=None):
        return train_stream(
            tiny_model(),
            _stream(n=30, batch=6),
            train=_train(out_dir=str(out)),
            stream_config=StreamConfig(checkpoints=(0.4, 1.0)),
            buffer=build_buffer("fifo", 8),
            resume_from=resume,
        )

    full = run(tmp_path / "a")
    resumed = run(tmp_path / "b", resume=tmp_path / "a" / "stream-040.pt")
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history]


def test_regularizer_consolidates_at_split_boundaries():
    stream = _stream(split=True)
    model = tiny_model()
    ewc = EWC(model.encoder, weight=10.0)
    res = train_stream(
        model,
        stream,
        train=_train(),
        stream_config=StreamConfig(checkpoints=(1.0,)),
        regularizer=ewc,
    )
    assert ewc.consolidations == 3  # one per split end
    penalties = [h["penalty"] for h in res.history]
    assert penalties[0] == 0.0 and max(penalties) > 0.0


def test_regularizer_consolidates_every_n_steps_across_repeats():
    stream = _stream(n=30, batch=6)  # 5 batches, K = 2: steps 2, 4, …, 10 end a batch
    model = tiny_model()
    si = SI(model.encoder, weight=0.1)
    cfg = StreamConfig(repeats=2, checkpoints=(1.0,), consolidate="every", consolidate_every=3)
    train_stream(model, stream, train=_train(), stream_config=cfg, regularizer=si)
    # after the batches ending at steps 4 (crosses 3), 6, 10 (crosses 9); not 2 or 8
    assert si.consolidations == 3


def test_the_parts_compose_with_fit_directly():
    """train_stream is fit + RepeatedStream + stream_step_fn + the callbacks: same numbers."""

    def parts_run():
        stream = _stream(n=30, batch=6)
        model = tiny_model()
        buf = build_buffer("reservoir", 8, seed=0)
        ewc = EWC(model.encoder, weight=1.0)
        replay = ReplayCallback(buf, stream, replay_ratio=1.0, repeats=2)
        reg = RegularizerCallback(ewc, stream, repeats=2)
        ckpt = StreamCheckpoints(stream, fractions=(0.5, 1.0), repeats=2)
        seed_everything(0)
        res = fit(
            model,
            RepeatedStream(stream, repeats=2),
            dataclasses.replace(_train(), epochs=1),
            step_fn=stream_step_fn(replay, reg),
            callbacks=[replay, reg, ckpt],
        )
        return res, ckpt

    res, ckpt = parts_run()
    stream = _stream(n=30, batch=6)
    model = tiny_model()
    ref = train_stream(
        model,
        stream,
        train=_train(),
        stream_config=StreamConfig(repeats=2, checkpoints=(0.5, 1.0)),
        buffer=build_buffer("reservoir", 8, seed=0),
        regularizer=EWC(model.encoder, weight=1.0),
    )
    assert torch.equal(_params(res.model), _params(ref.model))
    assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history]
    assert ckpt.evaluations == ref.evaluations


def test_replay_callback_needs_the_stream_step_fn():
    stream = _stream(n=12, batch=6)
    replay = ReplayCallback(build_buffer("fifo", 4), stream)
    step = StreamStep(0, 0, stream.batch(0))
    with pytest.raises(RuntimeError, match="stream_step_fn"):
        replay.after_step(None, step, None)  # type: ignore[arg-type]


class NaNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, views, actions):
        return self.w * float("nan")


def test_non_finite_loss_stops_before_backward():
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan .* before its backward"):
        train_stream(NaNModel(), _stream(), train=_train())


def test_config_validation():
    with pytest.raises(ValueError, match="repeats"):
        StreamConfig(repeats=0)
    with pytest.raises(ValueError, match="checkpoints"):
        StreamConfig(checkpoints=(0.5, 1.5))
    with pytest.raises(ValueError, match="store"):
        StreamConfig(store="images")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="consolidate_every"):
        StreamConfig(consolidate="every")
    with pytest.raises(ValueError, match="replay_ratio"):
        StreamConfig(replay_ratio=-0.5)
    assert StreamConfig(checkpoints=(1.0, 0.25, 0.25)).checkpoints == (0.25, 1.0)
    with pytest.raises(TypeError, match="stream"):
        train_stream(tiny_model(), [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train"):
        train_stream(tiny_model(), _stream(), train=StreamConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="stream_config"):
        train_stream(tiny_model(), _stream(), stream_config=_train())  # type: ignore[arg-type]


def test_a_stream_is_one_pass_and_the_default_lr_is_constant():
    res = train_stream(
        tiny_model(),
        _stream(n=24, batch=8),
        train=TrainConfig(device="cpu", lr=2e-3, log_every=1, progress=False, epochs=7),
        stream_config=StreamConfig(checkpoints=()),
    )
    assert res.step == 3  # one pass, whatever train.epochs says
    lrs = [h["lr"] for h in res.history]  # the paper recipe: cosine over the stream, no warm-up
    assert lrs[0] == pytest.approx(2e-3) and lrs[0] > lrs[1] > lrs[2]
    const = train_stream(tiny_model(), _stream(n=24, batch=8), stream_config=StreamConfig())
    assert [h["lr"] for h in const.history] == [TrainConfig().lr]  # logged at the last step only


def test_local_coding_rate_regularises_a_stream_and_resumes_exactly(tmp_path):
    """Issue 6's local rate as the model's regulariser in the single-pass driver.

    The window holds the most recent detached z_agg of the stream, moves with the model's
    state, and a resumed stream continues with the same window.
    """
    from jepa_blocks import LocalCodingRate

    def run(out, resume=None):
        model = tiny_model()
        model.regularizer = LocalCodingRate(12, window=10)  # z_agg: 8 (z) + 4 (action)
        model.regularizer_weight = 0.1
        result = train_stream(
            model,
            _stream(n=30, batch=6),
            train=_train(out_dir=str(out)),
            stream_config=StreamConfig(checkpoints=(0.4, 1.0)),
            resume_from=resume,
        )
        return result, model.regularizer

    full, window = run(tmp_path / "a")
    assert full.step == 5 and int(window.filled) == 10  # 30 items seen, window of 10
    assert all("rate" in h and h["rate"] == h["rate"] for h in full.history)
    resumed, window2 = run(tmp_path / "b", resume=tmp_path / "a" / "stream-040.pt")
    assert torch.equal(_params(resumed.model), _params(full.model))
    assert torch.equal(window2.memory, window.memory)
    assert int(window2.pointer) == int(window.pointer)
