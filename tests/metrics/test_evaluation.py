"""The evaluation suite: feature extraction, the probe metrics, the rank monitor."""

from __future__ import annotations

import pytest
import torch

from jepa_blocks import SeqJEPA, SmallCNN, StopGradTarget
from jepa_blocks.metrics import EvalConfig, FeatureSet, evaluate, extract_features, rank_monitor


def _tiny_seq_jepa() -> SeqJEPA:
    encoder = SmallCNN(in_channels=1, out_dim=16, width=4)
    return SeqJEPA.from_encoder(
        encoder, StopGradTarget(), encoder_dim=16, action_dim=5, action_embed_dim=4,
        predictor_hidden=16, depth=1, heads=2, mlp_ratio=2,
    )  # fmt: skip


def _features(n: int, seed: int, *, informative: bool) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    actions = torch.randn(n, 2, 3, generator=g)
    z = torch.randn(n, 3, 8, generator=g)
    z_agg = torch.randn(n, 12, generator=g)
    if informative:
        z[:, 1, :3] = z[:, 0, :3] + actions[:, 0]  # the action is linear in [z_1; z_2]
        z_agg[:, :4] += 6.0 * torch.nn.functional.one_hot(labels, 4)
    return FeatureSet(z, z_agg, labels, actions)


def test_evaluate_probes_on_synthetic_features():
    config = EvalConfig(regressor="linear")
    good = evaluate(
        _features(400, 0, informative=True), _features(200, 1, informative=True), config
    )
    noise = evaluate(
        _features(400, 0, informative=False), _features(200, 1, informative=False), config
    )
    assert good["linacc"] > 0.95 and noise["linacc"] < 0.5
    assert good["r2"] > 0.95 and noise["r2"] < 0.1
    assert len(good["r2_per_dim"]) == 3
    assert good["linacc_gap"] == pytest.approx(good["linacc"] - good["leakage_linacc"])
    assert good["r2_gap"] == pytest.approx(good["r2"] - good["leakage_r2"])
    assert 1.0 <= good["rank_z_agg"] <= 12.0 and good["dim_z_agg"] == 12
    assert good["rank_frac_z"] == pytest.approx(good["rank_z"] / 8)
    assert torch.get_num_threads() >= 1  # the thread setting is restored
    with pytest.raises(TypeError, match="FeatureSet"):
        evaluate((1, 2), _features(10, 1, informative=False), config)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="EvalConfig"):
        evaluate(_features(10, 0, informative=False), _features(10, 1, informative=False), {})  # type: ignore[arg-type]


def test_extract_features_shapes_and_determinism():
    from jepa_blocks.data import SequenceLoader, load_digits, mnist_affine_views

    torch.manual_seed(0)
    model = _tiny_seq_jepa()
    source = load_digits("train").subset(torch.arange(30))
    loader = SequenceLoader(
        source, mnist_affine_views(), num_observed=2, batch_size=16, seed=3,
        device=torch.device("cpu"), shuffle=False, drop_last=False,
    )  # fmt: skip
    a = extract_features(model, loader, passes=2, pixels=True)
    b = extract_features(model, loader, passes=2, pixels=True)
    assert a.z.shape == (60, 3, 16) and a.z_agg.shape == (60, 20)
    assert a.actions.shape == (60, 2, 5) and a.pixels.shape == (60, 64)
    torch.testing.assert_close(a.z_agg, b.z_agg)  # fixed seeds, eval mode
    assert model.training  # the mode is restored


def test_rank_monitor_on_a_fixed_batch():
    from types import SimpleNamespace

    torch.manual_seed(0)
    model = _tiny_seq_jepa().eval()
    batch = SimpleNamespace(views=torch.randn(12, 3, 1, 8, 8), actions=torch.randn(12, 2, 5))
    monitor = rank_monitor(batch)
    with torch.no_grad():
        ranks = monitor(model, 0)
    assert set(ranks) == {"rank_z_agg", "rank_z"}
    assert 1.0 <= ranks["rank_z_agg"] <= 12.0 and 1.0 <= ranks["rank_z"] <= 12.0
    with pytest.raises(ValueError, match="at least 2 views"):
        rank_monitor(SimpleNamespace(views=torch.randn(2, 1, 1, 8, 8), actions=None))
