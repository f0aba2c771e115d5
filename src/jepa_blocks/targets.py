r"""Target encoders for joint-embedding predictive learning: EMA teacher, stop-gradient, DINO-style
centering and sharpening.

A :class:`Target` encodes the target view without gradient, ``target(x, online)``, and is
updated after every optimizer step, ``target.update(online)``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from jepa_blocks._validation import check_choice, check_floating_tensor, check_int, check_positive
from jepa_blocks.distributed import all_reduce_sum

__all__ = [
    "CenterSharpen",
    "EMATarget",
    "OnlineTarget",
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

    BYOL's schedule (Grill et al., 2020, §3.2), used by seq-JEPA (§3.2); steps past :math:`K` stay
    at :math:`\tau_1`; ``base == final`` is constant (the kaikun213/seq-jepa follow-up: 0.996).

    Args:
        step: Updates done so far, :math:`k \ge 0`.
        total_steps: :math:`K \ge 1`, the optimizer steps of the run.
        base, final: :math:`\tau_0, \tau_1 \in [0, 1]`.
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
    r"""The official seq-JEPA code's momentum for update ``step``: cosine over epochs, one late.

    ``hafezgh/seq-jepa``, ``src/engine.py`` (``train_one_epoch_*``) applies the EMA update, *then*
    sets ``model.ema_decay`` by :func:`cosine_momentum` over epochs: update :math:`k` (0-based)
    uses epoch :math:`e = \lfloor \max(k-1, 0) / S\rfloor`, so :math:`\tau_1` is never reached.

    Args:
        step: Updates done so far, :math:`k \ge 0`.
        steps_per_epoch: :math:`S \ge 1`.
        total_epochs: Number of epochs :math:`E \ge 1`.
        base, final: :math:`\tau_0, \tau_1 \in [0, 1]`.
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

    One fused ``torch._foreach_lerp_`` call. Run it under :func:`torch.no_grad`.

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

    Shape:
        - x: the online encoder's input, e.g. ``(B, C, H, W)``; output: its output, e.g. ``(B, D)``
    """

    def forward(self, x: Tensor, online: nn.Module) -> Tensor:
        """Encode ``x`` into a detached target; ``online`` is the online encoder."""
        raise NotImplementedError

    def update(self, online: nn.Module) -> float | None:
        """Advance the target after a step of ``online``; return the momentum applied (``None``)."""
        del online
        return None


class StopGradTarget(Target):
    r"""The online encoder itself, without gradient: :math:`\bar z = \operatorname{sg}(f_\theta(x))`.

    The "teacherless" target (kaikun213/seq-jepa, ``experiments/models_teacherless.py``,
    ``_encode_target``), run in the encoder's current mode (as there). Shapes as in :class:`Target`.
    """

    def forward(self, x: Tensor, online: nn.Module) -> Tensor:
        """Return ``online(x)`` computed without gradient."""
        if not callable(online):
            raise TypeError(f"online must be the online encoder, got {type(online).__name__}")
        with torch.no_grad():
            return online(x).detach()


class OnlineTarget(Target):
    r"""The online encoder itself, *with* gradient: :math:`\bar z = f_\theta(x)`, no stop-gradient.

    LeJEPA (Balestriero & LeCun 2025, arXiv:2511.08544) trains JEPAs without a teacher or a
    stop-gradient and prevents collapse with SIGReg alone; pair it with an anti-collapse term
    (:class:`jepa_blocks.SIGReg`, :class:`jepa_blocks.CodingRate`). Shapes as in :class:`Target`.
    """

    def forward(self, x: Tensor, online: nn.Module) -> Tensor:
        """Return ``online(x)``, differentiable."""
        if not callable(online):
            raise TypeError(f"online must be the online encoder, got {type(online).__name__}")
        return online(x)


class EMATarget(Target):
    r"""Exponential-moving-average copy of an encoder: :math:`\xi \leftarrow \tau_k\xi + (1-\tau_k)\theta`.

    The target :math:`f_\xi` is a frozen deep copy of ``encoder``. Call :meth:`update` exactly
    once after every optimizer step: a ``UserWarning`` says so (once) after
    ``WARN_AFTER_FORWARDS`` (50) training-mode forward passes without any update, and (once)
    when updates go past ``total_steps`` (the momentum then stays at ``final_momentum``).
    Shapes as in :class:`Target`.

    Args:
        encoder: The online encoder to copy (not stored; pass it to :meth:`update`).
        total_steps: :math:`K \ge 1`, the optimizer steps of the whole run.
        base_momentum, final_momentum: :math:`\tau_0, \tau_1 \in [0, 1]` (paper: 0.996, 1.0).
        steps_per_epoch: ``None``: :func:`cosine_momentum` per step (paper); an int ``S`` dividing
            ``total_steps``: :func:`epoch_cosine_momentum` (official code).
        buffers: Non-parameter state (BatchNorm statistics): ``"own"`` (official code), left to
            the target's forward passes; ``"copy"``: copied at each update; ``"ema"``: floating
            buffers averaged like the parameters, the others copied.

    Attributes:
        step (Tensor): Updates done so far, an int64 buffer (a state dict resumes the schedule;
            do not write to it), mirrored on the host.
        total_steps (Tensor): :math:`K`, an int64 buffer.
    """

    WARN_AFTER_FORWARDS = 50
    step: Tensor

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
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        # Typed by the assignment, not a class annotation (autodoc would retype the argument).
        self.register_buffer("total_steps", None)
        self.total_steps = torch.tensor(total_steps, dtype=torch.long)
        self._host: tuple[int, int] | None = (0, total_steps)
        self._forwards_without_update = 0  # training forwards before the first update; -1: done
        self._warned_past_total = False

    def _count_forward(self) -> None:
        self._forwards_without_update += 1
        if self._forwards_without_update >= self.WARN_AFTER_FORWARDS:
            warnings.warn(
                f"EMATarget ran {self._forwards_without_update} training forward passes without "
                "update(): the target is still the initial copy. Call target.update(online) after "
                "every optimizer step (SeqJEPA: model.update() or model.attach(optimizer); fit "
                "does it)",
                UserWarning,
                stacklevel=5,  # the caller of the module
            )
            self._forwards_without_update = -1

    def _counters(self) -> tuple[int, int]:
        if self._host is None:
            self._host = (int(self.step), int(self.total_steps))
        return self._host

    def momentum_at(self, step: int) -> float:
        """The momentum :math:`\\tau` used by update number ``step`` (0-based)."""
        total, s = self._counters()[1], self.steps_per_epoch
        kw = {"base": self.base_momentum, "final": self.final_momentum}
        if s is None:
            return cosine_momentum(step, total, **kw)
        return epoch_cosine_momentum(step, steps_per_epoch=s, total_epochs=total // s, **kw)

    @property
    def momentum(self) -> float:
        """The momentum the next :meth:`update` will use."""
        return self.momentum_at(self._counters()[0])

    def forward(self, x: Tensor, online: nn.Module | None = None) -> Tensor:
        """Return :math:`f_\\xi(x)` without gradient (``online`` is ignored)."""
        del online
        counting = self.training and self._forwards_without_update >= 0
        if counting and not torch.compiler.is_compiling():
            self._count_forward()
        with torch.no_grad():
            return self.encoder(x).detach()

    @torch.no_grad()
    def update(self, online: nn.Module, *, step: int | None = None) -> float:
        """Move the target towards ``online`` by one EMA step; return the momentum applied.

        Args:
            online: The online encoder (same architecture as the copy).
            step: Optional check: the 0-based index of the optimizer step just taken.

        Raises:
            ValueError: ``online``'s parameters (or copied buffers) differ; nothing is updated.
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
        if k >= total and not self._warned_past_total:
            self._warned_past_total = True
            warnings.warn(
                f"EMATarget.update() past total_steps={total} (update {k + 1}): the schedule is "
                f"over, the momentum stays at final_momentum={self.final_momentum}; pass the "
                "run's number of optimizer steps as total_steps",
                UserWarning,
                stacklevel=3,  # the caller (through torch.no_grad)
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
        self._forwards_without_update = -1  # updated: stop counting
        return tau

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host = None  # re-read the loaded counters
        if self._counters()[0] > 0:  # a target that was updated: no misuse to warn about
            self._forwards_without_update = -1

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

    Shape:
        - z: ``(..., d)``; center: ``(d,)`` or broadcastable; output: ``(..., d)``
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
    r"""EMA of the batch mean: :math:`c \leftarrow m\,c + (1 - m)\,\frac1N\sum_i z_i`, a new tensor.

    Args:
        center: Current centre :math:`c`.
        z: A batch of target vectors (mean over every leading dimension).
        momentum: :math:`m \in [0, 1]` (DINO and the follow-up: 0.9).

    Returns:
        The new centre, in ``center``'s dtype (no gradient flows to ``z``).

    Shape:
        - center: ``(d,)``; z: ``(..., d)``; output: ``(d,)``
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
    it then sets the centre to :func:`updated_center` of the batch mean over ``torch.distributed``
    ranks, as DINO does (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision
    Transformers"; ``facebookresearch/dino``, ``main_dino.py``, ``DINOLoss``).

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
            check_floating_tensor(z, "z", finite=True)  # before the centre moves
            with torch.no_grad():
                flat = z.detach().reshape(-1, self.dim)
                stats = torch.cat([flat.sum(dim=0), flat.new_full((1,), flat.shape[0])])
                stats = all_reduce_sum(stats.to(self.center.dtype))  # identity if not distributed
                self.center.lerp_(stats[:-1] / stats[-1], 1.0 - self.momentum)
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, temperature={self.temperature}, momentum={self.momentum}"
