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
