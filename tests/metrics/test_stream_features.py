"""Streamed z_agg at several lengths: features, exactness checks, per-length probes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jepa_blocks import SeqJEPA, StopGradTarget
from jepa_blocks.data import SequenceLoader, load_digits, mnist_affine_views
from jepa_blocks.metrics import (
    EvalConfig,
    FeatureSet,
    StreamFeatures,
    evaluate,
    extract_stream_features,
    linacc_by_length,
)
from jepa_blocks.seq import ActionEncoder, Aggregator, Predictor, transformer_blocks
from jepa_blocks.seq.streaming_aggregator import ToSTAggregator


def _model(kind: str) -> SeqJEPA:
    """A tiny seq-JEPA on flattened 8×8 digits (D = 16, E = 8) with either aggregator."""
    torch.manual_seed(0)
    aggregator: nn.Module
    if kind == "tost":
        aggregator = ToSTAggregator(dim=24, depth=2, heads=2, mlp_ratio=2.0)
    else:
        aggregator = Aggregator(dim=24, blocks=transformer_blocks(dim=24, depth=2, heads=2))
    return SeqJEPA(
        encoder=nn.Sequential(nn.Flatten(), nn.Linear(64, 16)),
        target=StopGradTarget(),
        action_encoder=ActionEncoder(action_dim=5, embed_dim=8),
        aggregator=aggregator,
        predictor=Predictor(in_dim=32, out_dim=16, hidden=16),
    )


def _loader(m: int, n: int = 24, seed: int = 3) -> SequenceLoader:
    images = load_digits("train").subset(torch.arange(n))
    views = mnist_affine_views(angle_range=(-1.0, 1.0))
    return SequenceLoader(images, views, num_observed=m, batch_size=10, seed=seed, shuffle=False)


@pytest.mark.parametrize("kind", ["tost", "transformer"])
def test_extract_stream_features(kind):
    model = _model(kind).train()
    loader = _loader(6)
    f = extract_stream_features(model, loader, [4, 1, 6], passes=2)
    assert model.training  # restored
    assert isinstance(f, StreamFeatures) and f.lengths == (1, 4, 6)
    assert f.z.shape == (48, 2, 16) and f.z_agg.shape == (48, 3, 24)
    assert f.labels.shape == (48,) and f.actions.shape == (48, 1, 5)
    assert f.z_agg.dtype == torch.float32 and f.z_agg.device.type == "cpu"
    assert f.max_abs_diff < 1e-4
    if kind == "tost":
        assert f.max_abs_diff_f64 < 1e-12
    else:
        assert f.max_abs_diff == 0.0 and f.max_abs_diff_f64 == 0.0
    fs = f.at(4)
    assert isinstance(fs, FeatureSet) and fs.z_agg.shape == (48, 24)
    # the streamed aggregate equals the full-sequence aggregate of that prefix
    model.eval()
    loader.set_epoch(0)
    batch = next(iter(loader))
    with torch.no_grad():
        z = model.encode(batch.views[:, :4])
        ref = model.aggregate(z, batch.actions[:, :4])
    torch.testing.assert_close(f.z_agg[:10, 1], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(f.z[:10], z[:, :2], atol=0, rtol=0)
    with pytest.raises(ValueError, match="not one of"):
        f.at(5)
    with pytest.raises(ValueError, match="observed views"):
        extract_stream_features(model, loader, [8])
    with pytest.raises(ValueError, match="lengths"):
        extract_stream_features(model, loader, [0, 2])


def test_stream_features_feed_the_probe_suite():
    model = _model("tost")
    train = extract_stream_features(model, _loader(4, n=60, seed=1), [1, 4])
    test = extract_stream_features(model, _loader(4, n=40, seed=2), [1, 4])
    config = EvalConfig(classifier="ridge", regressor="linear")
    by_length = linacc_by_length(train, test, config)
    assert list(by_length) == [1, 4] and all(0.0 <= v <= 1.0 for v in by_length.values())
    metrics = evaluate(train.at(4), test.at(4), config)
    # the per-length probe at M_val is the suite's linacc (same solver, same seed)
    assert by_length[4] == pytest.approx(metrics["linacc"])
    with pytest.raises(TypeError, match="EvalConfig"):
        linacc_by_length(train, test, {})  # type: ignore[arg-type]
    short = extract_stream_features(model, _loader(4, n=40, seed=2), [1, 2])
    with pytest.raises(ValueError, match="lengths differ"):
        linacc_by_length(train, short, config)
