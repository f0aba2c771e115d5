"""The sliding-window coding rate: the current batch plus a window of recent representations.

A regulariser for streams whose mini-batches are too small for a meaningful rate on their own.
Conventions as in :mod:`jepa_blocks.rate`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from jepa_blocks._validation import (
    NonFiniteError,
    check_choice,
    check_int,
    check_positive,
    check_samples,
)
from jepa_blocks.distributed import all_gather_rows, is_distributed
from jepa_blocks.linalg import (
    GLOBAL_BATCH_MODES,
    PRECISIONS,
    GlobalBatch,
    Precision,
    compute_dtype,
    half_logdet_i_plus_gram,
)

__all__ = ["LocalCodingRate"]


class LocalCodingRate(nn.Module):
    r"""Coding rate over the current batch plus a sliding window of recent detached samples.

    :math:`R_\mathrm{local} = \tfrac12 \log\det\big(I + \frac{d}{(b + w)\varepsilon^2}
    (Z_t^\top Z_t + \bar Z^\top \bar Z)\big)` for the current batch :math:`Z_t` (``b`` rows,
    differentiable) and the :math:`w \le W` most recent earlier rows :math:`\bar Z` (detached,
    uncentred). ``memory``, ``filled`` and ``pointer`` are (checkpointed) buffers; unfilled rows
    are zero and not counted. ``distributed="auto"`` gathers the batch, so all ranks hold the same
    window. A call pushes the batch (its last ``window`` rows) in training mode, or per ``update``.

    Args:
        dim: Feature dimension :math:`d`.
        window: Ring-buffer length :math:`W` (rows).
        eps, precision: As in :func:`~jepa_blocks.coding_rate`.
        distributed: ``"auto"`` (global batch under ``torch.distributed``) or ``"none"``.

    Shape:
        - z: ``(b, dim)``; output: ``()``

    Example:
        >>> from jepa_blocks.window_rate import LocalCodingRate
        >>> reg = LocalCodingRate(16, window=64)
        >>> r1 = reg(torch.randn(8, 16))
        >>> int(reg.filled)
        8
    """

    memory: Tensor
    filled: Tensor
    pointer: Tensor

    def __init__(
        self,
        dim: int,
        *,
        window: int = 512,
        eps: float = 0.5,
        precision: Precision = "float32",
        distributed: GlobalBatch = "auto",
    ) -> None:
        super().__init__()
        self.dim, self.window = check_int(dim, "dim"), check_int(window, "window")
        self.eps = check_positive(eps, "eps")
        check_choice(precision, "precision", PRECISIONS)
        check_choice(distributed, "distributed", GLOBAL_BATCH_MODES)
        self.precision, self.distributed = precision, distributed
        self.register_buffer("memory", torch.zeros(window, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def reset(self) -> None:
        """Empty the window."""
        for buffer in (self.memory, self.filled, self.pointer):
            buffer.zero_()

    @torch.no_grad()
    def push(self, z: Tensor) -> None:
        """Append the (detached) rows of ``z`` to the window, overwriting the oldest rows.

        Raises:
            NonFiniteError: If ``z`` holds NaN or inf (the window is left unchanged).

        Shape:
            - z: ``(b, dim)``
        """
        self._check(z)
        if not bool(torch.isfinite(z).all()):
            raise NonFiniteError(
                f"z contains NaN or inf entries (shape {tuple(z.shape)}); the window is unchanged"
            )
        self._push(z)

    @torch.no_grad()
    def _push(self, z: Tensor) -> None:
        rows = z.detach()[-self.window :]
        m = rows.shape[0]
        idx = (self.pointer + torch.arange(m, device=self.pointer.device)) % self.window
        self.memory.index_copy_(0, idx, rows.to(self.memory.dtype))
        self.pointer.copy_((self.pointer + m) % self.window)
        self.filled.copy_((self.filled + m).clamp_max(self.window))

    def _check(self, z: Any) -> Tensor:
        check_samples(z)
        if z.ndim != 2 or z.shape[-1] != self.dim:
            raise ValueError(f"z must have shape (b, {self.dim}), got {tuple(z.shape)}")
        return z

    def forward(self, z: Tensor, *, update: bool | None = None) -> Tensor:
        """Return the rate of ``z`` with the window, then push ``z`` (``None``: when training)."""
        self._check(z)
        if self.distributed == "auto" and is_distributed():
            z = all_gather_rows(z)
        dtype = compute_dtype(z.dtype, self.precision)
        context = self.memory.detach().to(device=z.device, dtype=dtype)
        rows = torch.cat([z.to(dtype), context], dim=0)
        n_eff = (self.filled + z.shape[0]).to(dtype)
        rate = half_logdet_i_plus_gram(
            rows, self.dim / (n_eff * self.eps**2), precision=self.precision
        )
        if self.training if update is None else update:
            self._push(z)  # finite: the rate above refuses non-finite z (eager mode)
        return rate

    def extra_repr(self) -> str:
        names = ("dim", "window", "eps", "precision", "distributed")
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
