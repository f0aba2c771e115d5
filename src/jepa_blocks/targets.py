r"""Target encoders for joint-embedding predictive learning: EMA teacher, stop-gradient, DINO-style
centering and sharpening.

A :class:`Target` encodes the target view without gradient, ``target(x, online)``, and is
updated after every optimizer step, ``target.update(online)``.

* :class:`EMATarget` — an exponential-moving-average copy of the online encoder (BYOL, Grill et al.,
  2020; seq-JEPA, Ghaemi et al., 2025, arXiv:2505.03176), with :func:`cosine_momentum` (paper),
  :func:`epoch_cosine_momentum` (official code) and fused updates (:func:`ema_update_`).
* :class:`StopGradTarget` — the online encoder itself without gradient (the "teacherless" target
  of the kaikun213/seq-jepa follow-up, ``experiments/models_teacherless.py``).
* :class:`CenterSharpen`, :func:`center_sharpen`, :func:`updated_center` — DINO's teacher
  centering and sharpening (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision
  Transformers"; ``facebookresearch/dino``, ``main_dino.py``, ``DINOLoss``):
  :math:`p = \operatorname{softmax}((\bar z - c)/T)` with an EMA centre :math:`c`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from jepa_blocks._validation import check_choice, check_floating_tensor, check_int, check_positive
from jepa_blocks.distributed import all_reduce_sum
from jepa_blocks.losses import check_finite

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


def _check_momentum(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number in [0, 1], got {type(value).__name__}")
    v = float(value)
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


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
        base, final: :math:`\tau_0, \tau_1 \in [0, 1]`.

    Returns:
        :math:`\tau_k`.
    """
    step = check_int(step, "step", minimum=0)
    total_steps = check_int(total_steps, "total_steps", minimum=1)
    base = _check_momentum(base, "base")
    final = _check_momentum(final, "final")
    k = min(step, total_steps)
    return final - (final - base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


def epoch_cosine_momentum(
    step: int, *, steps_per_epoch: int, total_epochs: int, base: float = 0.996, final: float = 1.0
) -> float:
    r"""The official seq-JEPA code's momentum: cosine over epochs, set one update late.

    ``hafezgh/seq-jepa``, ``src/engine.py`` (``train_one_epoch_*``) applies the EMA update with the
    current ``model.ema_decay`` and *then* sets it from the current epoch by the formula of
    :func:`cosine_momentum` over epochs. Update :math:`k` (0-based) therefore uses :math:`\tau(e)`,
    :math:`e = \lfloor \max(k-1, 0) / S\rfloor`: the first update of an epoch uses the previous
    epoch's value, and :math:`\tau_1` is never reached.

    Args:
        step: Updates done so far, :math:`k \ge 0`.
        steps_per_epoch: :math:`S \ge 1`.
        total_epochs: Number of epochs :math:`E \ge 1`.
        base, final: :math:`\tau_0, \tau_1 \in [0, 1]`.

    Returns:
        The momentum used by update ``step``.
    """
    step = check_int(step, "step", minimum=0)
    steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", minimum=1)
    check_int(total_epochs, "total_epochs", minimum=1)
    epoch = max(step - 1, 0) // steps_per_epoch
    return cosine_momentum(epoch, total_epochs, base=base, final=final)


def check_pairs(target: Sequence[Tensor], online: Sequence[Tensor], what: str = "tensors") -> None:
    """Raise unless ``target`` and ``online`` pair up tensors of one shape and dtype."""
    if len(target) != len(online):
        raise ValueError(
            f"target and online must hold the same number of {what}, got {len(target)} and "
            f"{len(online)}: pass the encoder the target was built from"
        )
    for i, (t, o) in enumerate(zip(target, online)):
        if not (isinstance(t, Tensor) and isinstance(o, Tensor)):
            raise TypeError(f"target and online {what} must be tensors, got {type(o).__name__}")
        if t.shape != o.shape or t.dtype != o.dtype:
            raise ValueError(
                f"target and online {what}[{i}] must have the same shape and dtype, got "
                f"{tuple(t.shape)} {t.dtype} and {tuple(o.shape)} {o.dtype}"
            )


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
    check_pairs(target, online)
    for i, t in enumerate(target):
        if not t.is_floating_point():
            raise TypeError(f"target[{i}] must be floating-point for an EMA, got {t.dtype}")
    if not target or momentum == 1.0:
        return
    torch._foreach_lerp_(target, online, 1.0 - momentum)


class Target(nn.Module):
    """Interface of a target: ``forward(x, online)`` without gradient, ``update(online)`` per step.

    Subclasses implement :meth:`forward`; :meth:`update` is a no-op here.

    Shape:
        - x: the online encoder's input, e.g. ``(B, C, H, W)``
        - output: the online encoder's output, e.g. ``(B, D)``
    """

    def forward(self, x: Tensor, online: nn.Module) -> Tensor:
        """Encode ``x`` into a detached target; ``online`` is the online encoder."""
        raise NotImplementedError

    def update(self, online: nn.Module) -> float | None:
        """Advance the target after one optimizer step of ``online``; return the momentum applied
        (``None`` here)."""
        del online
        return None


class StopGradTarget(Target):
    r"""The online encoder itself, without gradient: :math:`\bar z = \operatorname{sg}(f_\theta(x))`.

    The "teacherless" target (kaikun213/seq-jepa, ``experiments/models_teacherless.py``,
    ``_encode_target``). It holds no reference to the encoder (passed at call time), so a model's
    state dict stores the encoder once. The call runs in the encoder's current mode: in training
    mode BatchNorm uses and updates the target batch's statistics, as in the follow-up code and as
    the official code does without EMA.

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

    The target encoder :math:`f_\xi` is a deep copy of ``encoder`` with ``requires_grad=False``.
    Call :meth:`update` exactly once after every optimizer step; update :math:`k` (0-based) uses
    :math:`\tau_k` of :func:`cosine_momentum` (``steps_per_epoch=None``, the paper's per-step
    schedule) or of :func:`epoch_cosine_momentum` (``steps_per_epoch=S``, the official code's).

    **State.** The update count ``step`` and ``total_steps`` are int64 buffers (a state dict
    resumes the schedule; do not write to them), mirrored on the host to avoid a device sync per
    update; the momenta and ``steps_per_epoch`` are configuration.

    **Buffer policy** (``buffers``, for non-parameter state such as BatchNorm statistics):
    ``"own"`` (default, official code: ``copy.deepcopy(encoder)`` in ``hafezgh/seq-jepa``,
    ``src/models.py``): :meth:`update` leaves them to the target's own forward passes; ``"copy"``:
    each update copies the online ones; ``"ema"``: floating-point buffers are averaged with
    :math:`\tau_k` like the parameters, the others (e.g. ``num_batches_tracked``) copied.

    Args:
        encoder: The online encoder to copy (not stored; pass it to :meth:`update`).
        total_steps: :math:`K \ge 1`, the optimizer steps of the whole run (for the official
            schedule: epochs × ``steps_per_epoch``).
        base_momentum, final_momentum: :math:`\tau_0, \tau_1 \in [0, 1]` (paper: 0.996, 1.0).
        steps_per_epoch: ``None`` for the per-step schedule; an int for the official
            epoch-granular one (``total_steps`` must then be a multiple of it).
        buffers: ``"own"``, ``"copy"`` or ``"ema"`` (see above).

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
        check_choice(buffers, "buffers", get_args(BufferPolicy))
        self.buffer_policy: BufferPolicy = buffers
        self.encoder = copy.deepcopy(encoder)
        self.encoder.requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("total_steps", torch.tensor(total_steps, dtype=torch.long))
        self._host: tuple[int, int] | None = (0, total_steps)

    def _counters(self) -> tuple[int, int]:
        if self._host is None:
            self._host = (int(self.step), int(self.total_steps))
        return self._host

    def momentum_at(self, step: int) -> float:
        """The momentum :math:`\\tau` used by update number ``step`` (0-based)."""
        total, s = self._counters()[1], self.steps_per_epoch
        b, f = self.base_momentum, self.final_momentum
        if s is None:
            return cosine_momentum(step, total, base=b, final=f)
        return epoch_cosine_momentum(
            step, steps_per_epoch=s, total_epochs=total // s, base=b, final=f
        )

    @property
    def momentum(self) -> float:
        """The momentum the next :meth:`update` will use."""
        return self.momentum_at(self._counters()[0])

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
            step: Optional check: the 0-based index of the optimizer step just taken.

        Returns:
            The momentum :math:`\\tau` that was applied.

        Raises:
            ValueError: ``online``'s parameters (or copied buffers) differ from the copy's in
                number, shape or dtype; nothing is updated.
            RuntimeError: ``step`` differs from the internal counter (a skipped or doubled update).
        """
        if not isinstance(online, nn.Module):
            raise TypeError(f"online must be an nn.Module, got {type(online).__name__}")
        k, total = self._counters()
        if step is not None and check_int(step, "step", minimum=0) != k:
            raise RuntimeError(
                f"EMATarget.update(step={step}) but {k} updates were done so far: the target must "
                f"be updated exactly once per optimizer step"
            )
        tau = self.momentum_at(k)
        t_params, o_params = list(self.encoder.parameters()), list(online.parameters())
        t_bufs, o_bufs = list(self.encoder.buffers()), list(online.buffers())
        check_pairs(t_params, o_params, "parameters")  # before any update
        if self.buffer_policy != "own":
            check_pairs(t_bufs, o_bufs, "buffers")
        ema_update_(t_params, o_params, tau)
        if self.buffer_policy != "own":
            ema = self.buffer_policy == "ema"
            floating = [(t, o) for t, o in zip(t_bufs, o_bufs) if ema and t.is_floating_point()]
            ema_update_([t for t, _ in floating], [o for _, o in floating], tau)
            for t, o in zip(t_bufs, o_bufs):
                if not (ema and t.is_floating_point()):
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
    check_positive(temperature, "temperature")
    check_floating_tensor(z, "z", min_ndim=1)
    check_floating_tensor(center, "center", min_ndim=1)
    if center.shape[-1:] != z.shape[-1:]:
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
    check_floating_tensor(z, "z", min_ndim=2)
    check_floating_tensor(center, "center")
    if center.shape != z.shape[-1:] or z.numel() == 0:
        raise ValueError(
            f"z must have shape (..., n, d) with n >= 1 and center (d,), got z {tuple(z.shape)} "
            f"and center {tuple(center.shape)}"
        )
    mean = z.detach().reshape(-1, z.shape[-1]).mean(dim=0).to(center.dtype)
    return momentum * center + (1.0 - momentum) * mean


class CenterSharpen(nn.Module):
    r"""DINO-style centering and sharpening of targets, with the centre in a buffer.

    ``forward(z)`` returns :func:`center_sharpen` of ``z`` with the current centre; in training mode
    it then sets the centre to :func:`updated_center` of the batch (DINO's order), with the batch
    mean averaged over ``torch.distributed`` ranks as in DINO. Apply it to the detached target
    (:class:`jepa_blocks.seq.SeqJEPA`'s ``target_transform``); pair it with
    :func:`jepa_blocks.losses.soft_cross_entropy` (DINO) or the cosine loss (follow-up's exp. D).

    Args:
        dim: Feature dimension ``d``.
        temperature: Teacher temperature :math:`T > 0`.
        momentum: Centre momentum :math:`m \in [0, 1]`.

    Shape:
        - input: ``(..., n, d)``; output: ``(..., n, d)``
    """

    center: Tensor

    def __init__(self, dim: int, *, temperature: float = 0.04, momentum: float = 0.9) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim", minimum=1)
        self.temperature = check_positive(temperature, "temperature")
        self.momentum = _check_momentum(momentum, "momentum")
        self.register_buffer("center", torch.zeros(dim))

    def forward(self, z: Tensor) -> Tensor:
        """Centre and sharpen ``z``; update the centre in training mode."""
        check_floating_tensor(z, "z", min_ndim=2)
        if z.shape[-1] != self.dim or (self.training and z.numel() == 0):
            raise ValueError(
                f"z must have shape (..., n, {self.dim}), n >= 1, got {tuple(z.shape)}"
            )
        out = center_sharpen(z, self.center, temperature=self.temperature)
        if self.training:
            check_finite(z, "z")  # before the centre moves
            with torch.no_grad():
                flat = z.detach().reshape(-1, self.dim)
                stats = torch.cat([flat.sum(dim=0), flat.new_full((1,), flat.shape[0])])
                stats = all_reduce_sum(stats.to(self.center.dtype))  # identity if not distributed
                self.center.lerp_(stats[:-1] / stats[-1], 1.0 - self.momentum)
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, temperature={self.temperature}, momentum={self.momentum}"
