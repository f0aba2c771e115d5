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


def test_meter_counts_views_once_and_removes_its_scope_hooks():
    w = nn.Parameter(torch.randn(1000))
    x = torch.randn(1000, requires_grad=True)
    with SavedTensorMeter(exclude=[w]) as meter:
        y = (x * w).sum()  # saves x and w; w is excluded
        v = x.view(10, 100)
        y2 = (v * v).sum()  # saves the view of x twice: the same storage
    assert meter.peak_bytes == 1000 * 4
    del y, y2
    inner = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
    with SavedTensorMeter(exclude=inner.parameters(), scope=inner) as m2:
        out = inner(torch.randn(4, 8)).sum()
    # inside: the Linear's input (saved for its weight's gradient) and the Tanh output
    assert m2.scoped_peak_bytes == m2.peak_bytes == 2 * 4 * 8 * 4
    del out
    count = m2.saved_count
    inner(torch.randn(2, 8, requires_grad=True)).sum()  # after exit: the hooks are gone
    assert m2.scoped_peak_bytes == 2 * 4 * 8 * 4 and m2.saved_count == count


def _distinct_saved_bytes(fn, exclude):
    """Reference: the bytes of every distinct storage saved while ``fn()`` runs (graph alive)."""
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in excluded:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


@pytest.mark.parametrize("kind", ["tost", "transformer"])
def test_peak_of_a_model_step_is_every_saved_activation_and_scoped_to_the_aggregator(kind):
    """A whole seq-JEPA step, no CUDA: with the graph alive the peak is the sum of the distinct
    saved storages, and the aggregator's share is what its forward saved."""
    from jepa_blocks import SeqJEPA, StopGradTarget
    from jepa_blocks.seq import ActionEncoder, Aggregator, Predictor, transformer_blocks
    from jepa_blocks.seq.streaming_aggregator import ToSTAggregator

    torch.manual_seed(0)
    agg = (
        ToSTAggregator(dim=24, depth=2, heads=2)
        if kind == "tost"
        else Aggregator(dim=24, blocks=transformer_blocks(dim=24, depth=2, heads=2))
    )
    model = SeqJEPA(
        encoder=nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU()),
        target=StopGradTarget(),
        action_encoder=ActionEncoder(action_dim=5, embed_dim=8),
        aggregator=agg,
        predictor=Predictor(in_dim=32, out_dim=16, hidden=16),
    ).train()
    views, actions = torch.randn(4, 6, 1, 8, 8), torch.randn(4, 5, 5)
    exclude = [*model.parameters(), *model.buffers()]
    peak = measure_peak_memory(lambda: model(views, actions).loss, exclude=exclude, scope=agg)
    ref, _ = _distinct_saved_bytes(lambda: model(views, actions).loss, exclude)
    agg_ref, _ = _distinct_saved_bytes(lambda: agg(torch.randn(4, 5, 24)).sum(), exclude)
    assert peak.saved_bytes == ref and peak.cuda_bytes is None
    assert peak.scoped_bytes is not None and 0 < peak.scoped_bytes < peak.saved_bytes
    assert peak.scoped_bytes == agg_ref  # the aggregator alone on tokens of the same shape


def test_peak_leaves_out_a_branch_freed_during_the_forward():
    """What the peak does not count: tensors saved by a graph branch dropped before the end (the
    old step-4 meter summed every storage ever saved; with the graph alive the two agree)."""
    x = torch.randn(64, 32, requires_grad=True)
    kept = []  # h outlives its graph, so tanh(x) cannot reuse its address (the reference keys on it)

    def forward():
        h = x * 3  # a scalar multiplication saves nothing
        unused = (h * h).sum()  # saves h (8192 bytes); the branch is dropped
        kept.append(h.detach())
        del unused, h
        return torch.tanh(x).sum()  # saves tanh(x), 8192 bytes

    assert measure_peak_memory(forward).saved_bytes == 8192
    assert _distinct_saved_bytes(forward, [])[0] == 2 * 8192


def test_a_dropped_graph_is_freed():
    import weakref

    x = torch.randn(64, 32, requires_grad=True)
    with SavedTensorMeter() as meter:
        e = torch.exp(x)  # saves its own output
        ref = weakref.ref(e)
        loss = e.sum()
        del e, loss
    assert meter.current_bytes == 0 and ref() is None
