"""SIGReg, the sketched isotropic Gaussian regulariser of LeJEPA (Balestriero & LeCun 2025,
arXiv 2511.08544), with slices seeded by the training step.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor

from jepa_blocks._module_form import FunctionModule
from jepa_blocks._validation import check_choice, check_int, check_positive, check_samples
from jepa_blocks.distributed import all_reduce_sum, global_sum, is_distributed
from jepa_blocks.linalg import GLOBAL_BATCH_MODES, GlobalBatch, compute_dtype

__all__ = ["SIGReg", "sigreg", "sigreg_slices"]

Grid = Literal["symmetric", "half"]
_GRIDS: tuple[Grid, ...] = get_args(Grid)


def sigreg_slices(
    d: int, *, step: int, num_slices: int = 256, device: torch.device | str | None = None
) -> Tensor:
    """Unit directions of step ``step`` from ``Generator(device).manual_seed(step)`` (float32):
    the same on every rank of a device type, new at every step.

    Shape:
        - output: ``(d, num_slices)``
    """
    for name, value, minimum in (("d", d, 1), ("step", step, 0), ("num_slices", num_slices, 1)):
        check_int(value, name, minimum=minimum)
    g = torch.Generator(device=device).manual_seed(step)
    a = torch.randn(d, num_slices, generator=g, device=device, dtype=torch.float32)
    return a / a.norm(dim=0)


def _grid(knots: int, t_max: float, grid: Grid) -> tuple[Tensor, Tensor]:
    """Knots ``t_k = t_0 + kΔ > 0`` and weights ``2·trapezoid·e^{−t²/2}`` (float64): the
    integrand is even and 0 at ``t = 0``."""
    lo = -t_max if grid == "symmetric" else 0.0
    dt = (t_max - lo) / (knots - 1)
    t = torch.linspace(lo, t_max, knots, dtype=torch.float64)
    w = torch.full_like(t, 2 * dt)
    w[-1] = dt
    keep = t > 0.25 * dt
    return t[keep], w[keep] * torch.exp(-t[keep].square() / 2)


def _rotations(x: Tensor, t0: float, dt: float, num: int) -> Any:
    """``(cos t_k x, sin t_k x)``, ``t_k = t_0 + kΔ``, by angle addition (memory ``O(x)``)."""
    c, s = torch.cos(t0 * x), torch.sin(t0 * x)
    cd, sd = (c, s) if t0 == dt else (torch.cos(dt * x), torch.sin(dt * x))
    for _ in range(num):
        yield c, s
        c, s = c * cd - s * sd, s * cd + c * sd


class _CharSums(torch.autograd.Function):
    """``Σ_i cos(t_k x_i)``, ``Σ_i sin(t_k x_i)`` over dim ``-2``; saves only ``x``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, t0: float, dt: float, num: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.grid = (t0, dt, num)
        sums = [torch.stack([c.sum(-2), s.sum(-2)]) for c, s in _rotations(x, t0, dt, num)]
        return torch.stack(sums, -1)  # (2, ..., M, T)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (x,), (t0, dt, num) = ctx.saved_tensors, ctx.grid
        grad = torch.zeros_like(x)
        for k, (c, s) in enumerate(_rotations(x, t0, dt, num)):
            t = t0 + k * dt
            grad += (t * g[1, ..., k]).unsqueeze(-2) * c - (t * g[0, ..., k]).unsqueeze(-2) * s
        return grad, None, None, None


def sigreg(
    z: Tensor,
    *,
    step: int | None = None,
    slices: Tensor | None = None,
    num_slices: int = 256,
    knots: int = 17,
    t_max: float = 5.0,
    grid: Grid = "symmetric",
    distributed: GlobalBatch = "auto",
    group: Any = None,
) -> Tensor:
    r"""SIGReg of the ``N`` rows of ``z``: for ``M`` unit directions :math:`a_m` (slices), the
    Epps–Pulley statistics, by the trapezoid rule, averaged over slices (a penalty :math:`\ge 0`):

    .. math::

        \frac1M \sum_m N \int \bigl|\tfrac1N \textstyle\sum_i e^{\mathrm{i} t \langle z_i,
        a_m\rangle} - e^{-t^2/2}\bigr|^2 e^{-t^2/2}\,dt.

    Gaussian rows give :math:`\approx 1.06` in expectation for any ``N``, collapsed rows
    :math:`O(N)`. Defaults: the paper's Algorithm 1. Computed in float32 (float64 input: float64).

    Args:
        z: Features, one sample per row.
        step: The training step, seeding the slices (:func:`sigreg_slices`).
        slices: Explicit unit directions ``(d, M)`` instead of ``step``.
        num_slices: ``M`` drawn from ``step`` (paper 256, lightly 1024).
        knots: Trapezoid points (paper and lightly: 17).
        t_max: Integration range (paper 5, lightly 3).
        grid: ``"symmetric"`` (:math:`[-t_{\max}, t_{\max}]`, paper) or ``"half"``
            (:math:`[0, t_{\max}]`, doubled weights: lightly, ``lejepa``).
        distributed: ``"auto"``: over all ranks' samples (DDP convention of
            :mod:`jepa_blocks.distributed`); ``"none"``: per rank (lightly's default).
        group: Process group.

    Shape:
        - z: ``(..., N, d)``; slices: ``(d, M)``; output: ``(...)``
    """
    check_samples(z)
    check_int(knots, "knots", minimum=2)
    check_positive(t_max, "t_max")
    check_choice(grid, "grid", _GRIDS)
    check_choice(distributed, "distributed", GLOBAL_BATCH_MODES)
    d = z.shape[-1]
    if slices is None:
        if step is None:
            raise ValueError("sigreg needs step= (seeds the slices on every rank) or slices=")
        slices = sigreg_slices(d, step=step, num_slices=num_slices, device=z.device)
    elif slices.ndim != 2 or slices.shape[0] != d:
        raise ValueError(f"slices must have shape ({d}, M), got {tuple(slices.shape)}")
    dtype = compute_dtype(z.dtype, "float32")
    with torch.autocast(device_type=z.device.type, enabled=False):
        t, w = _grid(knots, t_max, grid)
        phi, w = torch.exp(-t.square() / 2).to(z.device, dtype), w.to(z.device, dtype)
        x = z.to(dtype) @ slices.to(dtype)  # (..., N, M)
        dt = (t_max if grid == "half" else 2 * t_max) / (knots - 1)
        sums = _CharSums.apply(x, float(t[0]), dt, len(t))  # (2, ..., M, T)
        n = torch.tensor(float(z.shape[-2]), dtype=dtype, device=z.device)
        if distributed == "auto" and is_distributed(group):
            sums, n = global_sum(sums, group), all_reduce_sum(n, group)
        err = (sums[0] / n - phi).square() + (sums[1] / n).square()
        return (n * (err @ w)).mean(-1)


class SIGReg(FunctionModule):
    """:func:`sigreg` with a step counter: the buffer ``step`` (checkpointed) seeds the slices (a
    host read; ``forward(z, step=k)`` avoids it); :meth:`update` advances it once per step.

    Args:
        num_slices, knots, t_max, grid, distributed: As in :func:`sigreg`.

    Shape:
        - input: ``(..., N, d)``; output: ``(...)``
    """

    _options = ("num_slices", "knots", "t_max", "grid", "distributed")
    step: Tensor

    def __init__(
        self,
        *,
        num_slices: int = 256,
        knots: int = 17,
        t_max: float = 5.0,
        grid: Grid = "symmetric",
        distributed: GlobalBatch = "auto",
    ) -> None:
        super().__init__()
        self.num_slices = check_int(num_slices, "num_slices")
        self.knots = check_int(knots, "knots", minimum=2)
        self.t_max = check_positive(t_max, "t_max")
        self.grid = check_choice(grid, "grid", _GRIDS)
        self.distributed = check_choice(distributed, "distributed", GLOBAL_BATCH_MODES)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, z: Tensor, *, step: int | None = None) -> Tensor:
        """SIGReg of ``z`` with the slices of ``step`` (default: the counter)."""
        return sigreg(z, step=int(self.step) if step is None else step, **self._kwargs())

    @torch.no_grad()
    def update(self) -> None:
        """Advance the step counter (new slices); call once per optimizer step."""
        self.step.add_(1)
