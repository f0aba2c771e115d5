"""Tests for jepa_blocks.encoders."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from jepa_blocks.encoders import SmallCNN, resnet18_encoder


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (3, 8)])
def test_small_cnn_shapes(channels, size):
    enc = SmallCNN(in_channels=channels, out_dim=24, width=4)
    out = enc(torch.randn(5, channels, size, size))
    assert out.shape == (5, 24)
    assert enc.out_dim == 24


def test_small_cnn_structure_and_gradient():
    enc = SmallCNN(in_channels=1, out_dim=16, width=8)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (2, 2)]
    assert [c.out_channels for c in convs] == [8, 16, 16]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in enc.modules()) == 3
    x = torch.randn(4, 1, 28, 28)
    (enc(x) * torch.randn(4, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_small_cnn_rejects_bad_input():
    enc = SmallCNN(in_channels=1, out_dim=8)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\), got \(2, 3, 28, 28\)"):
        enc(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        enc(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match="out_dim must be an int >= 1, got 0"):
        SmallCNN(out_dim=0)


def test_small_cnn_default_is_global_pooling_without_head():
    torch.manual_seed(0)
    enc = SmallCNN(in_channels=1, out_dim=16, width=8)
    assert isinstance(enc.head, nn.Identity) and isinstance(enc.norm, nn.Identity)
    assert not any(isinstance(m, nn.Linear) for m in enc.modules())
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(enc(x), enc.features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("size", [28, 32, 12])
def test_small_cnn_grid_head_equals_pooled_grid_times_linear(size):
    torch.manual_seed(0)
    enc = SmallCNN(in_channels=1, out_dim=10, width=4, grid=7)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 8]  # last stage keeps 2 * width
    assert enc.head.weight.shape == (10, 8 * 7 * 7) and enc.head.bias is not None
    x = torch.randn(3, 1, size, size)
    fmap = enc.features(x)
    grid = torch.nn.functional.adaptive_avg_pool2d(fmap, 7)
    if size == 28:  # 28x28 -> a 7x7 map: the pooling is the identity
        torch.testing.assert_close(grid, fmap)
    want = grid.flatten(1) @ enc.head.weight.T + enc.head.bias
    torch.testing.assert_close(enc(x), want)
    # the head sees positions: shifting the digit changes the output, unlike global pooling
    shifted = torch.roll(x, shifts=8, dims=3)
    assert not torch.allclose(enc(shifted), enc(x), atol=1e-3)


def test_small_cnn_batch_out_norm_standardises_in_training_and_is_stateless():
    torch.manual_seed(0)
    enc = SmallCNN(in_channels=1, out_dim=12, width=4, grid=2, out_norm="batch")
    assert isinstance(enc.norm, nn.BatchNorm1d) and not enc.norm.affine
    assert enc.head.bias is None  # removed by the norm anyway
    z = enc(torch.randn(64, 1, 28, 28))
    torch.testing.assert_close(z.mean(0), torch.zeros(12), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(12), atol=1e-2, rtol=0)
    names = set(enc.state_dict())
    assert {"norm.running_mean", "norm.running_var"} <= names
    assert not any(n.startswith("norm.") for n, _ in enc.named_parameters())
    enc.eval()
    assert torch.isfinite(enc(torch.randn(1, 1, 28, 28))).all()  # one sample in eval is fine


def test_small_cnn_rejects_bad_options():
    with pytest.raises(ValueError, match="grid must be an int >= 1, got 0"):
        SmallCNN(grid=0)
    with pytest.raises(TypeError, match="grid"):
        SmallCNN(grid=2.0)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"out_norm must be one of \('none', 'batch'\), got 'layer'"
    ):
        SmallCNN(out_norm="layer")  # type: ignore[arg-type]


def test_resnet18_cifar_stem():
    enc = resnet18_encoder()
    assert enc.conv1.kernel_size == (3, 3) and enc.conv1.stride == (1, 1)
    assert enc.conv1.padding == (1, 1) and enc.conv1.bias is None
    assert isinstance(enc.maxpool, nn.Identity) and isinstance(enc.fc, nn.Identity)
    # zero_init_residual: the last BN of every basic block starts at zero
    blocks = [b for layer in (enc.layer1, enc.layer2, enc.layer3, enc.layer4) for b in layer]
    assert len(blocks) == 8 and all(not b.bn2.weight.any() for b in blocks)
    enc.eval()
    with torch.no_grad():
        assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_resnet18_imagenet_stem_and_channels():
    enc = resnet18_encoder(cifar_stem=False, in_channels=1, zero_init_residual=False)
    assert enc.conv1.kernel_size == (7, 7) and enc.conv1.stride == (2, 2)
    assert enc.conv1.in_channels == 1 and isinstance(enc.maxpool, nn.MaxPool2d)
    assert enc.layer1[0].bn2.weight.all()
    enc.eval()
    with torch.no_grad():
        assert enc(torch.randn(1, 1, 64, 64)).shape == (1, 512)
    assert resnet18_encoder(in_channels=1).conv1.in_channels == 1
    with pytest.raises(ValueError, match="in_channels"):
        resnet18_encoder(in_channels=0)


def test_no_heavy_imports_at_import_time():
    code = (
        "import sys, jepa_blocks.encoders, jepa_blocks.targets, jepa_blocks.losses, "
        "jepa_blocks.seq; print('torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
