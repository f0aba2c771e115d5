r"""Target encoders for joint-embedding predictive learning: EMA teacher, stop-gradient, DINO-style
centering and sharpening.

A *target* maps the target view to the vector the predictor must match, without gradient. All
targets share one interface (:class:`Target`): ``target(x, online)`` encodes ``x`` given the online
encoder ``online``, and ``target.update(online)`` is called exactly once after every optimizer step
(:meth:`jepa_blocks.seq.SeqJEPA.attach` registers it as an optimizer post-step hook).

* :class:`EMATarget` — an exponential-moving-average copy of the online encoder (BYOL, Grill et al.,
  2020; seq-JEPA, Ghaemi et al., 2025, arXiv:2505.03176). The momentum
  :math:`\tau` is a pure function of the step (:func:`cosine_momentum`: 0.996 → 1, the paper's and
  BYOL's schedule; :func:`epoch_cosine_momentum`: the official seq-JEPA code's epoch-granular
  variant). Updates use ``torch._foreach_lerp_`` (one fused kernel per dtype/device group instead of
  the official per-parameter Python loop).
* :class:`StopGradTarget` — the *same* online encoder, evaluated without gradient (the
  "teacherless" target of the kaikun213/seq-jepa follow-up, ``experiments/models_teacherless.py``).
* :class:`CenterSharpen` with the pure functions :func:`center_sharpen` and :func:`updated_center` —
  DINO's teacher centering and sharpening (Caron et al., 2021, "Emerging Properties in
  Self-Supervised Vision Transformers"; ``facebookresearch/dino``, ``main_dino.py``, ``DINOLoss``):
  :math:`p = \operatorname{softmax}((\bar z - c)/T)` with an EMA centre :math:`c`.

The symmetric (bidirectional) variant reuses these targets for both directions; it lives with the
sequence model (:class:`jepa_blocks.seq.SeqJEPA`, ``symmetric=True``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from jepa_blocks._validation import check_int
from jepa_blocks.distributed import all_reduce_sum

__all__ = [
    "CenterSharpen",
    "EMATarget",
    "StopGradTarget",
    "Target",
    "center_sharpen",
    "cosine_momentum",
    "ema_update_",
    "epoch_cosine_momentum",
    "updated_center",
]

BufferPolicy = Literal["own", "copy", "ema"]
_BUFFER_POLICIES = ("own", "copy", "ema")


def _check_momentum(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number in [0, 1], got {type(value).__name__}")
    v = float(value)
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


# --------------------------------------------------------------------------- momentum schedules


def cosine_momentum(
    step: int, total_steps: int, *, base: float = 0.996, final: float = 1.0
) -> float:
    r"""Cosine momentum schedule :math:`\tau_k = \tau_1 - (\tau_1 - \tau_0)\,(\cos(\pi k/K) + 1)/2`.

    BYOL's schedule (Grill et al., 2020, §3.2) as used by seq-JEPA (paper §3.2: "same as BYOL",
    :math:`\tau_0 = 0.996`, :math:`\tau_1 = 1`): :math:`\tau_0` at :math:`k = 0`, :math:`\tau_1` at
    :math:`k = K`; steps beyond :math:`K` stay at :math:`\tau_1`. ``base == final`` gives a constant
    momentum (the kaikun213/seq-jepa follow-up keeps 0.996 fixed).

    Args:
        step: Updates done so far, :math:`k \ge 0`.
        total_steps: :math:`K \ge 1`, the number of optimizer steps of the run.
        base: :math:`\tau_0 \in [0, 1]`.
        final: :math:`\tau_1 \in [0, 1]`.

    Returns:
        :math:`\tau_k`.

    Shape:
        - scalars in, scalar out
    """
    step = check_int(step, "step", minimum=0)
    total_steps = check_int(total_steps, "total_steps", minimum=1)
    base = _check_momentum(base, "base")
    final = _check_momentum(final, "final")
    k = min(step, total_steps)
    return final - (final - base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


def epoch_cosine_momentum(
    step: int,
    *,
    steps_per_epoch: int,
    total_epochs: int,
    base: float = 0.996,
    final: float = 1.0,
) -> float:
    r"""The official seq-JEPA code's momentum: cosine over epochs, set one update late.

    ``hafezgh/seq-jepa``, ``src/engine.py`` (``train_one_epoch_*``) applies the EMA update with the
    current ``model.ema_decay`` and *then* sets ``ema_decay`` from the current epoch
    :math:`e` with the formula of :func:`cosine_momentum` over epochs. Update :math:`k` (0-based)
    therefore uses :math:`\tau(e)` with :math:`e = \lfloor \max(k-1, 0) / S\rfloor`: the first
    update of every epoch still uses the previous epoch's value, update 0 uses :math:`\tau_0`, and
    :math:`\tau_1` is never reached.

    Args:
        step: Updates done so far, :math:`k \ge 0`.
        steps_per_epoch: :math:`S \ge 1`.
        total_epochs: Number of epochs :math:`E \ge 1`.
        base: :math:`\tau_0 \in [0, 1]`.
        final: :math:`\tau_1 \in [0, 1]`.

    Returns:
        The momentum used by update ``step``.

    Shape:
        - scalars in, scalar out
    """
    step = check_int(step, "step", minimum=0)
    steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", minimum=1)
    epoch = max(step - 1, 0) // steps_per_epoch
    return cosine_momentum(epoch, total_epochs, base=base, final=final)


# --------------------------------------------------------------------------- EMA update


def ema_update_(target: Sequence[Tensor], online: Sequence[Tensor], momentum: float) -> None:
    r"""In place :math:`\xi \leftarrow \tau\,\xi + (1 - \tau)\,\theta` for every pair of tensors.

    One ``torch._foreach_lerp_`` call (:math:`\xi + (1-\tau)(\theta - \xi)`), which groups the
    tensors by device and dtype and runs fused kernels. Run it under :func:`torch.no_grad`.

    Args:
        target: The EMA tensors :math:`\xi`, updated in place.
        online: The online tensors :math:`\theta`, same shapes, same order.
        momentum: :math:`\tau \in [0, 1]`; 1 leaves ``target`` unchanged, 0 copies ``online``.

    Shape:
        - target[i], online[i]: the same shape for every ``i``
    """
    momentum = _check_momentum(momentum, "momentum")
    target, online = list(target), list(online)
    if len(target) != len(online):
        raise ValueError(
            f"target and online must hold the same number of tensors, got {len(target)} and "
            f"{len(online)}"
        )
    for i, (t, o) in enumerate(zip(target, online)):
        if t.shape != o.shape:
            raise ValueError(
                f"target[{i}] and online[{i}] must have the same shape, got {tuple(t.shape)} and "
                f"{tuple(o.shape)}"
            )
    if not target or momentum == 1.0:
        return
    torch._foreach_lerp_(target, online, 1.0 - momentum)


# --------------------------------------------------------------------------- targets


class Target(nn.Module):
    """Interface of a target: ``forward(x, online)`` without gradient, ``update(online)`` per step.

    Subclasses implement :meth:`forward`; :meth:`update` is a no-op unless overridden.

    Shape:
        - x: the online encoder's input, e.g. ``(B, C, H, W)``
        - output: the online encoder's output, e.g. ``(B, D)``
    """

    def forward(self, x: Tensor, online: nn.Module) -> Tensor:
        """Encode ``x`` into a detached target; ``online`` is the online encoder."""
        raise NotImplementedError

    def update(self, online: nn.Module) -> float | None:
        """Advance the target after one optimizer step of ``online`` (no-op here).

        Returns:
            The momentum applied, for targets that have one; ``None`` here.
        """
        del online
        return None


class StopGradTarget(Target):
    r"""The online encoder itself, without gradient: :math:`\bar z = \operatorname{sg}(f_\theta(x))`.

    The "teacherless" target (kaikun213/seq-jepa, ``experiments/models_teacherless.py``,
    ``_encode_target``). It holds no parameters and no reference to the encoder: the encoder is
    passed at call time, so a model's state dict stores it once. The call runs under
    :func:`torch.no_grad` in the encoder's current mode, so in training mode BatchNorm layers use
    the target view's batch statistics and update their running statistics, as in the follow-up
    code and as the official code does without EMA.

    Shape:
        - x: the encoder's input, e.g. ``(B, C, H, W)``
        - output: the encoder's output, e.g. ``(B, D)``, with ``requires_grad=False``
    """

    def forward(self, x: Tensor, online: nn.Module) -> Tensor:
        """Return ``online(x)`` computed without gradient."""
        if not callable(online):
            raise TypeError(
                f"online must be the online encoder (a callable module), got {type(online).__name__}"
            )
        with torch.no_grad():
            return online(x).detach()


class EMATarget(Target):
    r"""Exponential-moving-average copy of an encoder: :math:`\xi \leftarrow \tau_k\xi + (1-\tau_k)\theta`.

    The target encoder :math:`f_\xi` is a deep copy of ``encoder`` taken at construction, with
    ``requires_grad=False``. After every optimizer step call :meth:`update` exactly once with the
    online encoder; update :math:`k` (0-based) uses the momentum :math:`\tau_k` of
    :func:`cosine_momentum` (``steps_per_epoch=None``, the paper/BYOL per-step schedule, default) or
    of :func:`epoch_cosine_momentum` (``steps_per_epoch=S``, the official code's epoch-granular
    schedule).

    **State.** The update count ``step`` and ``total_steps`` are int64 buffers, so a state dict
    (together with the target encoder's weights and buffers) resumes the schedule exactly. The
    hyperparameters ``base_momentum``, ``final_momentum`` and ``steps_per_epoch`` are configuration:
    pass the same values when rebuilding. A host-side copy of the counters avoids a device sync per
    update; it is re-read after :meth:`load_state_dict`. Do not write to the buffers directly.

    **Buffer policy** (``buffers``), i.e. what happens to non-parameter state such as BatchNorm
    running statistics:

    * ``"own"`` (default, the official code): buffers are not touched by :meth:`update`; they evolve
      only through the target's own forward passes (in training mode BatchNorm normalises with the
      target batch's statistics and updates the target's running statistics, as
      ``copy.deepcopy(encoder)`` does in ``hafezgh/seq-jepa``, ``src/models.py``).
    * ``"copy"``: after each parameter update the target's buffers are overwritten with the online
      encoder's.
    * ``"ema"``: floating-point buffers are averaged with the same :math:`\tau_k` as the parameters;
      the others (e.g. ``num_batches_tracked``) are copied.

    Args:
        encoder: The online encoder to copy (not stored; pass it to :meth:`update`).
        total_steps: :math:`K \ge 1`, the optimizer steps of the whole run (for the official
            schedule: epochs × ``steps_per_epoch``).
        base_momentum: :math:`\tau_0 \in [0, 1]` (paper: 0.996).
        final_momentum: :math:`\tau_1 \in [0, 1]` (paper: 1.0).
        steps_per_epoch: ``None`` for the per-step schedule (default); an int to reproduce the
            official epoch-granular schedule (then ``total_steps`` must be a multiple of it).
        buffers: ``"own"`` (default), ``"copy"`` or ``"ema"`` (see above).

    Shape:
        - x: the encoder's input, e.g. ``(B, C, H, W)``
        - output: the encoder's output, e.g. ``(B, D)``, with ``requires_grad=False``
    """

    step: Tensor
    total_steps: Tensor

    def __init__(
        self,
        encoder: nn.Module,
        *,
        total_steps: int,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
        steps_per_epoch: int | None = None,
        buffers: BufferPolicy = "own",
    ) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
        total_steps = check_int(total_steps, "total_steps", minimum=1)
        self.base_momentum = _check_momentum(base_momentum, "base_momentum")
        self.final_momentum = _check_momentum(final_momentum, "final_momentum")
        if steps_per_epoch is not None:
            steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", minimum=1)
            if total_steps % steps_per_epoch:
                raise ValueError(
                    f"total_steps must be a multiple of steps_per_epoch for the epoch-granular "
                    f"schedule, got total_steps={total_steps}, steps_per_epoch={steps_per_epoch}"
                )
        self.steps_per_epoch = steps_per_epoch
        if buffers not in _BUFFER_POLICIES:
            raise ValueError(f"buffers must be one of {_BUFFER_POLICIES}, got {buffers!r}")
        self.buffer_policy: BufferPolicy = buffers
        self.encoder = copy.deepcopy(encoder)
        self.encoder.requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("total_steps", torch.tensor(total_steps, dtype=torch.long))
        self._host: tuple[int, int] | None = (0, total_steps)

    # -- schedule -------------------------------------------------------------------------------

    def _counters(self) -> tuple[int, int]:
        if self._host is None:
            self._host = (int(self.step), int(self.total_steps))
        return self._host

    def momentum_at(self, step: int) -> float:
        """The momentum :math:`\\tau` used by update number ``step`` (0-based)."""
        _, total = self._counters()
        if self.steps_per_epoch is None:
            return cosine_momentum(step, total, base=self.base_momentum, final=self.final_momentum)
        return epoch_cosine_momentum(
            step,
            steps_per_epoch=self.steps_per_epoch,
            total_epochs=total // self.steps_per_epoch,
            base=self.base_momentum,
            final=self.final_momentum,
        )

    @property
    def momentum(self) -> float:
        """The momentum the next :meth:`update` will use."""
        return self.momentum_at(self._counters()[0])

    # -- module API -----------------------------------------------------------------------------

    def forward(self, x: Tensor, online: nn.Module | None = None) -> Tensor:
        """Return :math:`f_\\xi(x)` without gradient (``online`` is accepted and ignored)."""
        del online
        with torch.no_grad():
            return self.encoder(x).detach()

    @torch.no_grad()
    def update(self, online: nn.Module, *, step: int | None = None) -> float:
        """Move the target towards ``online`` by one EMA step and advance the step counter.

        Args:
            online: The online encoder (same architecture as the copied one).
            step: Optional check: the 0-based index of the optimizer step just taken. A mismatch
                with the internal counter (a skipped or doubled update) raises ``RuntimeError``.

        Returns:
            The momentum :math:`\\tau` that was applied.
        """
        if not isinstance(online, nn.Module):
            raise TypeError(f"online must be an nn.Module, got {type(online).__name__}")
        k, total = self._counters()
        if step is not None and step != k:
            raise RuntimeError(
                f"EMATarget.update(step={step}) but {k} updates were done so far: the target must "
                f"be updated exactly once per optimizer step"
            )
        tau = self.momentum_at(k)
        t_params = list(self.encoder.parameters())
        o_params = list(online.parameters())
        if len(t_params) != len(o_params):
            raise ValueError(
                f"online has {len(o_params)} parameters but the target copy has {len(t_params)}: "
                f"pass the encoder this target was built from"
            )
        ema_update_(t_params, o_params, tau)
        if self.buffer_policy != "own":
            t_bufs = list(self.encoder.buffers())
            o_bufs = list(online.buffers())
            if len(t_bufs) != len(o_bufs):
                raise ValueError(
                    f"online has {len(o_bufs)} buffers but the target copy has {len(t_bufs)}"
                )
            if self.buffer_policy == "copy":
                if t_bufs:
                    torch._foreach_copy_(t_bufs, o_bufs)
            else:
                floating = [(t, o) for t, o in zip(t_bufs, o_bufs) if t.is_floating_point()]
                other = [(t, o) for t, o in zip(t_bufs, o_bufs) if not t.is_floating_point()]
                if floating:
                    ema_update_([t for t, _ in floating], [o for _, o in floating], tau)
                for t, o in other:
                    t.copy_(o)
        self.step.add_(1)
        self._host = (k + 1, total)
        return tau

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host = None  # re-read the loaded counters on next use

    def extra_repr(self) -> str:
        return (
            f"base_momentum={self.base_momentum}, final_momentum={self.final_momentum}, "
            f"steps_per_epoch={self.steps_per_epoch}, buffers={self.buffer_policy!r}"
        )


# --------------------------------------------------------------------------- centering / sharpening


def center_sharpen(z: Tensor, center: Tensor, *, temperature: float = 0.04) -> Tensor:
    r"""DINO teacher output :math:`p = \operatorname{softmax}((z - c) / T)` along the last dimension.

    Args:
        z: Target vectors.
        center: Centre :math:`c`, broadcastable to ``z`` (usually ``(d,)``).
        temperature: Teacher temperature :math:`T > 0` (DINO and the follow-up: 0.04).

    Returns:
        Probabilities (non-negative, summing to 1 along ``d``).

    Shape:
        - z: ``(..., d)``; center: ``(d,)`` or broadcastable
        - output: ``(..., d)``
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a real number, got {type(temperature).__name__}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if z.ndim < 1 or center.shape[-1:] != z.shape[-1:]:
        raise ValueError(
            f"center must have shape (d,) matching z (..., d), got center {tuple(center.shape)} "
            f"and z {tuple(z.shape)}"
        )
    return torch.softmax((z - center) / temperature, dim=-1)


def updated_center(center: Tensor, z: Tensor, *, momentum: float = 0.9) -> Tensor:
    r"""EMA of the batch mean: :math:`c \leftarrow m\,c + (1 - m)\,\frac1N\sum_i z_i`.

    Args:
        center: Current centre :math:`c`.
        z: A batch of target vectors (mean over every leading dimension).
        momentum: :math:`m \in [0, 1]` (DINO and the follow-up: 0.9).

    Returns:
        The new centre (a new tensor, in ``center``'s dtype; no gradient flows to ``z``).

    Shape:
        - center: ``(d,)``; z: ``(..., d)``
        - output: ``(d,)``
    """
    momentum = _check_momentum(momentum, "momentum")
    if z.ndim < 2 or center.shape != z.shape[-1:]:
        raise ValueError(
            f"z must have shape (..., n, d) and center (d,), got z {tuple(z.shape)} and center "
            f"{tuple(center.shape)}"
        )
    mean = z.detach().reshape(-1, z.shape[-1]).mean(dim=0).to(center.dtype)
    return momentum * center + (1.0 - momentum) * mean


class CenterSharpen(nn.Module):
    r"""DINO-style centering and sharpening of targets, with the centre in a buffer.

    ``forward(z)`` returns :func:`center_sharpen` of ``z`` with the current centre; in training mode
    it then sets the centre to :func:`updated_center` of the batch (DINO's order: centre with the
    old value, update afterwards). Under ``torch.distributed`` the batch mean is averaged over ranks
    (as in DINO), so the centre stays identical everywhere. Apply it to the detached target (see
    :class:`jepa_blocks.seq.SeqJEPA`, ``target_transform``); pair it with
    :func:`jepa_blocks.losses.soft_cross_entropy` as in DINO, or with the cosine loss as in the
    follow-up's experiment D.

    Args:
        dim: Feature dimension ``d``.
        temperature: Teacher temperature :math:`T > 0`.
        momentum: Centre momentum :math:`m \in [0, 1]`.

    Shape:
        - input: ``(..., n, d)``
        - output: ``(..., n, d)``
    """

    center: Tensor

    def __init__(self, dim: int, *, temperature: float = 0.04, momentum: float = 0.9) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim", minimum=1)
        center_sharpen(torch.zeros(1, dim), torch.zeros(dim), temperature=temperature)
        self.temperature = float(temperature)
        self.momentum = _check_momentum(momentum, "momentum")
        self.register_buffer("center", torch.zeros(dim))

    def forward(self, z: Tensor) -> Tensor:
        """Centre and sharpen ``z``; update the centre in training mode."""
        if z.ndim < 2 or z.shape[-1] != self.dim:
            raise ValueError(f"z must have shape (..., n, {self.dim}), got {tuple(z.shape)}")
        out = center_sharpen(z, self.center, temperature=self.temperature)
        if self.training:
            with torch.no_grad():
                flat = z.detach().reshape(-1, self.dim)
                stats = torch.cat([flat.sum(dim=0), flat.new_full((1,), flat.shape[0])])
                stats = all_reduce_sum(stats.to(self.center.dtype))  # identity if not distributed
                self.center.lerp_(stats[:-1] / stats[-1], 1.0 - self.momentum)
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, temperature={self.temperature}, momentum={self.momentum}"
