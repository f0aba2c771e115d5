"""Peak activation memory: tensors saved for the backward pass (any device) and CUDA peaks.

What per-block backward-and-free reduces (:mod:`jepa_blocks.local.stages`; detaching alone saves
nothing when every block runs forward before any backward, ``loeweX/Greedy_InfoMax#22``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["PeakMemory", "SavedTensorMeter", "measure_peak_memory"]


class _Packed:
    """What the pack hook hands to autograd: the tensor (a finaliser uncounts it)."""

    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor


def _storage_key(t: Tensor) -> tuple[int, int] | None:
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse, nested or meta tensors
        return None
    return (storage.data_ptr(), storage.nbytes())


class SavedTensorMeter:
    """Context manager counting the bytes of tensors saved for backward; tracks the peak.

    Each storage autograd saves counts once until its graph is freed (transient buffers do not).

    Args:
        exclude: Tensors (typically ``model.parameters()``) whose storages are not counted.
        scope: Optional module: storages first saved in its forward also count in ``scoped_*``.

    Attributes:
        current_bytes: Bytes of the distinct storages saved by graphs still alive.
        peak_bytes: The largest ``current_bytes`` seen since entering (or :meth:`reset`).
        scoped_current_bytes, scoped_peak_bytes: The same for storages first saved in ``scope``.
        saved_count: How many tensors the pack hook saw (counted or not).

    Example:
        >>> from jepa_blocks.metrics import SavedTensorMeter
        >>> x = torch.randn(64, 32, requires_grad=True)
        >>> with SavedTensorMeter() as meter:
        ...     y = torch.tanh(x).sum()
        >>> meter.peak_bytes  # tanh saves its 64×32 float32 output
        8192
    """

    def __init__(self, *, exclude: Iterable[Tensor] = (), scope: nn.Module | None = None) -> None:
        if scope is not None and not isinstance(scope, nn.Module):
            raise TypeError(f"scope must be an nn.Module or None, got {type(scope).__name__}")
        if isinstance(exclude, Tensor) or not isinstance(exclude, Iterable):
            raise TypeError(f"exclude must be an iterable of tensors, got {type(exclude).__name__}")
        self._excluded: set[int] = set()
        for t in exclude:
            if not isinstance(t, Tensor):
                raise TypeError(f"exclude must hold tensors, got {type(t).__name__}")
            if (key := _storage_key(t)) is not None:
                self._excluded.add(key[0])
        self._refs: dict[int, int] = {}
        self._scoped_ptrs: set[int] = set()
        self._hooks: Any = None
        self._in_scope = False
        self._scope = scope
        self._scope_handles: list[Any] = []
        self.current_bytes = self.peak_bytes = self.saved_count = 0
        self.scoped_current_bytes = self.scoped_peak_bytes = 0

    def reset(self) -> None:
        """Restart the peaks from the current levels."""
        self.peak_bytes = self.current_bytes
        self.scoped_peak_bytes = self.scoped_current_bytes

    def _release(self, ptr: int, nbytes: int) -> None:
        count = self._refs.get(ptr, 0) - 1
        if count > 0:
            self._refs[ptr] = count
            return
        self._refs.pop(ptr, None)
        self.current_bytes -= nbytes
        if ptr in self._scoped_ptrs:
            self._scoped_ptrs.discard(ptr)
            self.scoped_current_bytes -= nbytes

    def _pack(self, t: Tensor) -> Any:
        self.saved_count += 1
        key = _storage_key(t)
        if key is None or key[0] in self._excluded or key[1] == 0:
            return t
        ptr, nbytes = key
        # Detached: an op that saves its own output would otherwise hold its own grad_fn (a
        # reference cycle through the C++ node that keeps a dropped graph alive).
        packed = _Packed(t.detach())
        count = self._refs.get(ptr, 0)
        self._refs[ptr] = count + 1
        if count == 0:
            self.current_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
            if self._in_scope:
                self._scoped_ptrs.add(ptr)
                self.scoped_current_bytes += nbytes
                self.scoped_peak_bytes = max(self.scoped_peak_bytes, self.scoped_current_bytes)
        weakref.finalize(packed, self._release, ptr, nbytes)
        return packed

    @staticmethod
    def _unpack(packed: Any) -> Tensor:
        return packed.tensor if isinstance(packed, _Packed) else packed

    def __enter__(self) -> SavedTensorMeter:
        if self._scope is not None:
            self._scope_handles = [
                self._scope.register_forward_pre_hook(lambda *_: setattr(self, "_in_scope", True)),
                self._scope.register_forward_hook(lambda *_: setattr(self, "_in_scope", False)),
            ]
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None
        for h in self._scope_handles:
            h.remove()
        self._scope_handles = []
        self._in_scope = False


class PeakMemory(NamedTuple):
    """What :func:`measure_peak_memory` returns.

    Attributes:
        saved_bytes: Peak bytes of tensors saved for backward (:class:`SavedTensorMeter`).
        cuda_bytes: CUDA peak allocation during the call minus that before it (``None`` off CUDA).
        result: What the measured function returned.
        scoped_bytes: Peak saved bytes inside ``scope`` (``None`` without a scope).
    """

    saved_bytes: int
    cuda_bytes: int | None
    result: Any = None
    scoped_bytes: int | None = None


def measure_peak_memory(
    fn: Callable[[], Any],
    *,
    exclude: Iterable[Tensor] = (),
    device: torch.device | str | None = None,
    scope: nn.Module | None = None,
) -> PeakMemory:
    """Call ``fn()`` and report its peak saved-activation memory (and its CUDA peak on CUDA).

    Args:
        fn: The work to measure, e.g. one training step, or a forward pass returning the loss.
        exclude: Tensors not to count (the parameters).
        device: The device ``fn`` runs on; CUDA devices also get the allocator's peak.
        scope: A submodule whose saved tensors are also counted apart.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    try:
        dev = torch.device(device) if device is not None else None
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be a torch.device, a string or None, got {device!r}") from e
    on_cuda = dev is not None and dev.type == "cuda"
    base = 0
    if on_cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    with SavedTensorMeter(exclude=exclude, scope=scope) as meter:
        result = fn()
    cuda: int | None = None
    if on_cuda:
        torch.cuda.synchronize(dev)
        cuda = int(torch.cuda.max_memory_allocated(dev) - base)
    scoped = int(meter.scoped_peak_bytes) if scope is not None else None
    return PeakMemory(int(meter.peak_bytes), cuda, result, scoped)
