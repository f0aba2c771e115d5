r"""The sliding-window coding rate: the current batch plus a window of recent representations.

:class:`LocalCodingRate` is the exact coding rate of the current batch together with a sliding
window of recent **detached** representations kept in a ring buffer, a regulariser for streams
whose mini-batches are too small for a meaningful rate on their own.

Conventions as in :mod:`jepa_blocks.rate`: samples are rows, ``eps`` is the papers'
:math:`\varepsilon` (the official code's ``eps`` is :math:`\varepsilon^2`), rates are positive.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from jepa_blocks._validation import NonFiniteError, check_choice, check_positive, check_samples
from jepa_blocks.distributed import all_gather_rows, is_distributed
from jepa_blocks.linalg import compute_dtype, half_logdet_i_plus_gram

__all__ = ["LocalCodingRate"]

_PRECISIONS = ("float32", "float64")


class LocalCodingRate(nn.Module):
    r"""Coding rate over the current batch plus a sliding window of recent detached samples.

    With the current samples :math:`Z_t \in \mathbb{R}^{b \times d}` (differentiable) and the
    :math:`w \le W` most recent earlier samples :math:`\bar Z` (detached, from a ring buffer of
    ``window`` rows), the loss term is the exact rate

    .. math::

        R_\mathrm{local} = \tfrac12 \log\det\Big(I + \frac{d}{(b + w)\,\varepsilon^2}
            \big(Z_t^\top Z_t + \bar Z^\top \bar Z\big)\Big),

    computed by :func:`jepa_blocks.linalg.half_logdet_i_plus_gram` (smaller Gram, float64 Cholesky
    island). The gradient flows into :math:`Z_t` only; the window acts as a fixed context that
    the current batch should expand away from, as a memory bank does for contrastive losses.
    The window is uncentred, as the official SSL rates are.

    **State.** The ring buffer (``memory``), the number of filled rows (``filled``) and the
    write pointer (``pointer``) are registered buffers: they move with ``.to()``, are saved in
    ``state_dict`` and restored exactly on resume. Unfilled rows are zero and not counted in
    :math:`b + w`, so the value is exact from the first call and there is no data-dependent
    branch. Under a multi-rank ``torch.distributed`` job (``distributed="auto"``) the current
    batch is gathered from every rank (the DDP convention of :mod:`jepa_blocks.distributed`) and
    the gathered rows are pushed, so every rank holds the same window.

    **Updates.** By default (``update=None``) a call pushes the detached batch into the window
    in training mode only; pass ``update=True``/``False`` to override. If a batch has more rows
    than the window, only its last ``window`` rows are kept.

    Args:
        dim: Feature dimension :math:`d`.
        window: Ring-buffer length :math:`W \ge 1` (rows).
        eps: :math:`\varepsilon > 0` (papers' convention).
        precision: ``"float32"`` or ``"float64"``.
        distributed: ``"auto"`` (global batch under ``torch.distributed``) or ``"none"``.

    Shape:
        - z: ``(b, dim)``
        - output: ``()``

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
        precision: str = "float32",
        distributed: str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("window", window)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
            if value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.dim = dim
        self.window = window
        self.eps = check_positive(eps, "eps")
        self.precision = check_choice(precision, "precision", _PRECISIONS)
        self.distributed = check_choice(distributed, "distributed", ("auto", "none"))
        self.register_buffer("memory", torch.zeros(window, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def reset(self) -> None:
        """Empty the window."""
        self.memory.zero_()
        self.filled.zero_()
        self.pointer.zero_()

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
        """Return the rate of ``z`` together with the window, then (optionally) push ``z``."""
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
        return (
            f"dim={self.dim}, window={self.window}, eps={self.eps}, precision={self.precision!r}, "
            f"distributed={self.distributed!r}"
        )
