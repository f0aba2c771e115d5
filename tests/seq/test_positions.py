"""Tests for jepa_blocks.seq positional embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from jepa_blocks.seq import PositionalEmbedding, sinusoidal_positions


def test_sinusoidal_formula():
    table = sinusoidal_positions(5, 6)
    assert table.shape == (5, 6) and table.dtype == torch.float32
    for p in range(5):
        for i in range(3):
            angle = p / 10000 ** (2 * i / 6)
            assert float(table[p, 2 * i]) == pytest.approx(math.sin(angle), abs=1e-6)
            assert float(table[p, 2 * i + 1]) == pytest.approx(math.cos(angle), abs=1e-6)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(3, 5)


@pytest.mark.parametrize("learnable", [True, False])
def test_positional_embedding_adds_the_table(learnable):
    pe = PositionalEmbedding(max_len=6, dim=4, learnable=learnable)
    x = torch.randn(2, 4, 4)
    torch.testing.assert_close(pe(x), x + pe.table[:4])
    assert ("table" in dict(pe.named_parameters())) == learnable
    assert "table" not in pe.state_dict() or learnable
    with pytest.raises(ValueError, match=r"N <= max_len=6, got \(2, 7, 4\)"):
        pe(torch.randn(2, 7, 4))
