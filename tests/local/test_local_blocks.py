"""Encoder blocks and local heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jepa_blocks import SmallCNN
from jepa_blocks.local import (
    BlockEncoder,
    LocalHead,
    conv_block_encoder,
    local_heads,
    split_encoder,
)


def test_conv_block_encoder_has_four_blocks_and_pools():
    torch.manual_seed(0)
    enc = conv_block_encoder(in_channels=1)
    assert enc.num_blocks == 4 and enc.out_channels == (16, 32, 64, 128) and enc.out_dim == 128
    x = torch.randn(3, 1, 28, 28)
    enc.eval()
    feats = list(enc.features(x))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (16, 28, 28),
        (32, 14, 14),
        (64, 7, 7),
        (128, 7, 7),
    ]
    torch.testing.assert_close(enc(x), enc.readout(feats[-1]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="equal length"):
        conv_block_encoder(widths=(8, 16), strides=(1,))
    with pytest.raises(TypeError, match="in_channels"):
        conv_block_encoder(in_channels=1.0)  # type: ignore[arg-type]


def test_conv_block_encoder_norm_placement():
    torch.manual_seed(0)
    x = torch.randn(6, 1, 12, 12)
    kinds = {}
    for norm in ("readout", "block", "none"):
        enc = conv_block_encoder(widths=(4, 8), strides=(1, 2), norm=norm)
        kinds[norm] = {type(m).__name__ for m in enc.blocks.modules()}
        assert not list(enc.readout.parameters())  # the blocks hold every weight
        pooled = next(reversed(list(enc.features(x)))).mean(dim=(2, 3))
        if norm == "readout":  # BatchNorm1d without affine on the pooled output
            bn = torch.nn.functional.batch_norm(pooled, None, None, training=True, eps=1e-5)
            torch.testing.assert_close(enc(x), bn)
        else:
            torch.testing.assert_close(enc(x), pooled)
    assert "BatchNorm2d" in kinds["block"] and "BatchNorm2d" not in kinds["readout"]
    assert kinds["readout"] == kinds["none"]
    with pytest.raises(ValueError, match="norm"):
        conv_block_encoder(norm="layer")  # type: ignore[arg-type]


def test_split_small_cnn_shares_modules_and_matches_output():
    torch.manual_seed(0)
    cnn = SmallCNN(in_channels=1, out_dim=32, width=8).eval()
    blocks = split_encoder(cnn)
    assert blocks.num_blocks == 3 and blocks.out_channels == (8, 16, 32)
    assert {id(p) for p in blocks.parameters()} == {id(p) for p in cnn.parameters()}
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(blocks(x), cnn(x))
    assert split_encoder(blocks) is blocks


@pytest.mark.parametrize(("grid", "out_norm"), [(4, "batch"), (3, "none"), (1, "batch")])
def test_split_small_cnn_with_grid_head_keeps_head_in_last_block(grid, out_norm):
    torch.manual_seed(0)
    cnn = SmallCNN(in_channels=1, out_dim=24, width=8, grid=grid, out_norm=out_norm)
    blocks = split_encoder(cnn)
    assert blocks.num_blocks == 3 and blocks.out_channels[-1] == 24
    assert {id(p) for p in blocks.parameters()} == {id(p) for p in cnn.parameters()}
    x = torch.randn(6, 1, 16, 16)
    cnn.train()
    torch.testing.assert_close(blocks(x), cnn(x))  # batch statistics in both
    cnn.eval()
    torch.testing.assert_close(blocks(x), cnn(x))


def test_split_resnet_and_sequential():
    torchvision = pytest.importorskip("torchvision")
    del torchvision
    from jepa_blocks import resnet18_encoder

    torch.manual_seed(0)
    net = resnet18_encoder(cifar_stem=True).eval()
    blocks = split_encoder(net)
    assert blocks.num_blocks == 4 and blocks.out_channels == (64, 128, 256, 512)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(blocks(x), net(x))
    seq = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4), nn.Identity())
    sblocks = split_encoder(seq)
    assert sblocks.num_blocks == 2 and sblocks.out_channels == (5, 4)
    y = torch.randn(2, 6)
    torch.testing.assert_close(sblocks(y), seq(y))
    with pytest.raises(TypeError, match="cannot split"):
        split_encoder(nn.Linear(3, 3))


def test_block_encoder_validates():
    with pytest.raises(ValueError, match="at least one"):
        BlockEncoder([], out_channels=[])
    with pytest.raises(ValueError, match="one entry per block"):
        BlockEncoder([nn.Linear(2, 2)], out_channels=[2, 2])
    with pytest.raises(TypeError, match=r"blocks\[0\]"):
        BlockEncoder(["conv"], out_channels=[2])  # type: ignore[list-item]


def test_local_head_embeds_and_starts_as_slowness():
    torch.manual_seed(0)
    head = LocalHead(8, action_dim=5, hidden=16)
    h = torch.randn(6, 8, 4, 4)
    e = head.embed(h)
    torch.testing.assert_close(e, h.mean(dim=(2, 3)))
    seq = head.sequence(h, 2)
    assert seq.shape == (2, 3, 8)
    a = torch.randn(2, 3, 5)
    torch.testing.assert_close(head.predict(seq, a), seq)  # zero-initialised residual
    proj = LocalHead(8, dim=4)
    assert proj.embed(h).shape == (6, 4) and proj.predict(proj.embed(h)).shape == (6, 4)
    with pytest.raises(ValueError, match="pass actions"):
        head.predict(seq)
    with pytest.raises(ValueError, match="actions must have shape"):
        head.predict(seq, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="channels"):
        head.embed(torch.randn(6, 7, 4, 4))
    with pytest.raises(ValueError, match="hidden"):
        LocalHead(8, hidden=0)
    heads = local_heads(conv_block_encoder(), dim=None, action_dim=5)
    assert [hd.dim for hd in heads] == [16, 32, 64, 128]
