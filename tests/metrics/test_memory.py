"""The saved-tensor memory meter: counts, sharing, exclusions, scopes, CUDA-free peaks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jepa_blocks.metrics import SavedTensorMeter, measure_peak_memory


def test_meter_counts_saved_tensors_until_backward():
    x = torch.randn(64, 32, requires_grad=True)
    with SavedTensorMeter() as meter:
        y = torch.tanh(x)  # saves its output: 64·32·4 bytes
        z = (y * 2).relu().sum()  # relu saves its output: another 8192 bytes
        assert meter.current_bytes == 2 * 8192
        z.backward()
    assert meter.peak_bytes == 2 * 8192
    assert meter.current_bytes == 0  # the graph was freed by backward


def test_meter_counts_shared_storage_once_and_excludes_parameters():
    lin = nn.Linear(32, 16)
    x = torch.randn(8, 32, requires_grad=True)
    with SavedTensorMeter(exclude=lin.parameters()) as meter:
        y = torch.relu(x)  # saves y
        out = lin(y)  # saves y again (same storage) and the weight (excluded)
        out.sum().backward()
    assert meter.peak_bytes == 8 * 32 * 4
    assert meter.saved_count >= 2


def test_measure_peak_memory_returns_result():
    x = torch.randn(16, 16, requires_grad=True)
    peak = measure_peak_memory(lambda: torch.sigmoid(x).sum().backward() or 7)
    assert peak.saved_bytes == 16 * 16 * 4 and peak.cuda_bytes is None and peak.result == 7
    with pytest.raises(TypeError, match="fn must be callable"):
        measure_peak_memory(3)  # type: ignore[arg-type]


def test_meter_scope_counts_the_submodule_apart():
    inner = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
    outer = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), inner)
    x = torch.randn(4, 8, requires_grad=True)
    exclude = list(outer.parameters())
    with SavedTensorMeter(exclude=exclude, scope=inner) as meter:
        loss = outer(x).sum()
        total, scoped = meter.current_bytes, meter.scoped_current_bytes
    # outside: x (saved by the first linear) and the ReLU output; inside: the ReLU output again
    # (same storage, counted once, outside) and the Tanh output (4·8·4 bytes, inside).
    assert scoped == 4 * 8 * 4 and total == 3 * 4 * 8 * 4
    assert meter.scoped_peak_bytes == scoped
    loss.backward()
    assert meter.scoped_current_bytes == 0 and meter.current_bytes == 0
    peak = measure_peak_memory(lambda: outer(x).sum(), exclude=exclude, scope=inner)
    assert peak.scoped_bytes == scoped and peak.saved_bytes == total
    with pytest.raises(TypeError, match="scope"):
        SavedTensorMeter(scope=3)  # type: ignore[arg-type]
