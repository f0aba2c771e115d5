r"""Weight-consolidation regularisers on the online encoder: EWC and SI.

Both pull the weights towards anchors :math:`\theta^*` saved at each consolidation:

.. math::

    \text{EWC:}\quad P(\theta) = \frac{\lambda}{2} \sum_k F_k\,(\theta_k - \theta^*_k)^2,
    \qquad
    \text{SI:}\quad P(\theta) = c \sum_k \Omega_k\,(\theta_k - \theta^*_k)^2 .

* **EWC** (Kirkpatrick et al., 2017, "Overcoming catastrophic forgetting in neural networks",
  PNAS): :math:`F` is the *empirical* Fisher of the self-supervised loss (mean squared mini-batch
  gradient since the last consolidation), :math:`F \leftarrow \gamma F + F_\text{new}`
  (:math:`\gamma < 1`: "online EWC", Schwarz et al., 2018).
* **SI** (Zenke, Poole & Ganguli, 2017, "Continual Learning Through Synaptic Intelligence",
  ICML): :math:`\omega_k \mathrel{+}= -g_k\,\Delta\theta_k` with the *unregularised* loss
  gradient; at a consolidation :math:`\Omega_k \mathrel{+}= \max(0, \omega_k) / (\Delta_k^2 +
  \xi)`, :math:`\Delta_k` the change since the previous one, then :math:`\omega = 0` (the clamp
  at zero keeps the penalty convex; our choice, not the paper's).

Per step: ``loss.backward()``, ``observe()``, ``penalty().backward()``, ``optimizer.step()``,
``after_step()``; ``consolidate()`` at a boundary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from jepa_blocks._validation import NonFiniteError, check_positive

__all__ = ["EWC", "SI", "WeightRegularizer"]


def _copy(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {n: t.clone() for n, t in tensors.items()}


class WeightRegularizer:
    """Base class: a quadratic pull of ``module``'s parameters towards anchors.

    Args:
        module: The regularised module; its parameters with ``requires_grad``, by name.
        weight: Overall strength (``λ`` of EWC, ``c`` of SI), ``≥ 0``.

    Attributes:
        consolidations: How many times :meth:`consolidate` has been called.
    """

    kind = "base"
    # State attributes (``state_dict`` keys drop the leading underscore).
    _tensor_state: tuple[str, ...] = ("anchor", "importance")
    _number_state: tuple[tuple[str, type], ...] = (("weight", float), ("consolidations", int))

    def __init__(self, module: nn.Module, *, weight: float) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        self.module = module
        self.weight = check_positive(weight, "weight", allow_zero=True)
        self.params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        if not self.params:
            raise ValueError("module has no parameters that require gradients")
        self.anchor: dict[str, Tensor] = {}
        self.importance: dict[str, Tensor] = {}
        self.consolidations = 0

    def _zeros(self) -> dict[str, Tensor]:
        return {n: torch.zeros_like(p) for n, p in self.params.items()}

    def _snapshot(self) -> dict[str, Tensor]:
        return {n: p.detach().clone() for n, p in self.params.items()}

    def _finite(self, tensors: dict[str, Tensor], what: str) -> dict[str, Tensor]:
        """``tensors``; raise (before any state changes) if one holds NaN or inf."""
        dev = next(iter(self.params.values())).device
        if not bool(torch.stack([t.isfinite().all().to(dev) for t in tensors.values()]).all()):
            bad = [n for n, t in tensors.items() if not bool(t.isfinite().all())]
            raise NonFiniteError(f"the {what} of {bad} must be finite; nothing was recorded")
        return tensors

    def _grads(self) -> dict[str, Tensor]:
        grads = {n: p.grad.detach() for n, p in self.params.items() if p.grad is not None}
        if grads:
            self._finite(grads, "gradients")
        return {n: grads.get(n, torch.zeros_like(p)) for n, p in self.params.items()}

    def _state_dicts(self) -> list[dict[str, Tensor]]:
        return [getattr(self, attr) for attr in self._tensor_state]

    def to(self, device: torch.device | str) -> WeightRegularizer:
        """Move the anchors, importances and accumulators to ``device`` (in place); returns self."""
        for d in self._state_dicts():
            for n in list(d):
                d[n] = d[n].to(device)
        return self

    def observe(self) -> None:
        """Read the gradients of the unregularised loss (call right after its ``backward``)."""

    def after_step(self) -> None:
        """Called after ``optimizer.step()``."""

    def consolidate(self) -> None:
        """Update the importances and set the anchors to the current parameters."""
        raise NotImplementedError

    def _coefficient(self) -> float:
        return self.weight

    def penalty(self) -> Tensor:
        """The penalty :math:`\\text{coef}\\sum_k I_k(\\theta_k - \\theta^*_k)^2`, differentiable.

        Returns:
            A scalar; exactly zero (and constant) before the first consolidation.

        Shape:
            - output: ``()``
        """
        first = next(iter(self.params.values()))
        if not self.anchor or self.weight == 0.0:
            return torch.zeros((), device=first.device, dtype=first.dtype)
        total = torch.zeros((), device=first.device, dtype=torch.float32)
        for n, p in self.params.items():
            diff = p - self.anchor[n]
            total = total + (self.importance[n] * diff.square()).sum().float()
        return self._coefficient() * total

    def state_dict(self) -> dict[str, Any]:
        """Anchors, importances, accumulators and counters (tensors keyed by parameter name)."""
        state: dict[str, Any] = {"kind": self.kind}
        state.update({a.lstrip("_"): getattr(self, a) for a, _ in self._number_state})
        state.update({a.lstrip("_"): _copy(getattr(self, a)) for a in self._tensor_state})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict` of the same kind and parameters.

        Raises:
            ValueError: ``state`` is of another kind, incomplete, or of other shapes (no change).
        """
        if not isinstance(state, Mapping) or state.get("kind") != self.kind:
            kind = state.get("kind") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"cannot load a {kind!r} state into {self.kind!r}")
        for attr in self._tensor_state:
            key, d = attr.lstrip("_"), state.get(attr.lstrip("_"))
            shapes = (
                {n: getattr(t, "shape", None) for n, t in d.items()}
                if isinstance(d, Mapping)
                else 0
            )
            if shapes != {} and shapes != {n: p.shape for n, p in self.params.items()}:
                raise ValueError(
                    f"state[{key!r}] must map the parameters {sorted(self.params)} to tensors of "
                    f"their shapes, got {shapes}"
                )
        numbers = {a: state.get(a.lstrip("_")) for a, _ in self._number_state}
        for attr, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"state[{attr.lstrip('_')!r}] must be a number, got {value!r}")
        for attr, kind in self._number_state:
            setattr(self, attr, kind(numbers[attr]))
        for attr in self._tensor_state:
            setattr(self, attr, _copy(state[attr.lstrip("_")]))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(weight={self.weight}, params={len(self.params)}, "
            f"consolidations={self.consolidations})"
        )


class EWC(WeightRegularizer):
    r"""Elastic weight consolidation (Kirkpatrick et al., 2017) with an empirical SSL Fisher.

    Args:
        module: The regularised module (e.g. the online encoder).
        weight: :math:`\lambda \ge 0`.
        decay: :math:`\gamma \in [0, 1]`; ``< 1`` is online EWC.
    """

    kind = "ewc"
    _tensor_state = (*WeightRegularizer._tensor_state, "_fisher_sum")
    _number_state = (*WeightRegularizer._number_state, ("decay", float), ("_count", int))

    def __init__(self, module: nn.Module, *, weight: float, decay: float = 1.0) -> None:
        super().__init__(module, weight=weight)
        self.decay = check_positive(decay, "decay", allow_zero=True)
        if self.decay > 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        self._fisher_sum = self._zeros()
        self._count = 0

    def observe(self) -> None:
        """Accumulate the squared gradients of the unregularised loss."""
        for n, g in self._grads().items():
            self._fisher_sum[n] += g.square()
        self._count += 1

    def consolidate(self) -> None:
        """``F ← γF + mean(g²)``, anchors ← current parameters; resets the accumulator."""
        if self._count:
            new = {n: s / self._count for n, s in self._fisher_sum.items()}
        else:
            new = self._zeros()
        self.importance = {
            n: (self.decay * self.importance[n] + new[n]) if n in self.importance else new[n]
            for n in self.params
        }
        self.anchor = self._snapshot()
        self._fisher_sum = self._zeros()
        self._count = 0
        self.consolidations += 1

    def _coefficient(self) -> float:
        return 0.5 * self.weight


class SI(WeightRegularizer):
    r"""Synaptic intelligence (Zenke, Poole & Ganguli, 2017).

    Args:
        module: The regularised module (e.g. the online encoder).
        weight: :math:`c \ge 0`.
        damping: :math:`\xi > 0`, keeps :math:`\Omega` finite for parameters that barely moved.
    """

    kind = "si"
    _tensor_state = (*WeightRegularizer._tensor_state, "_omega", "_start")
    _number_state = (*WeightRegularizer._number_state, ("damping", float))

    def __init__(self, module: nn.Module, *, weight: float, damping: float = 1e-3) -> None:
        super().__init__(module, weight=weight)
        self.damping = check_positive(damping, "damping")
        self._omega = self._zeros()
        self._start = self._snapshot()
        self._grad_now: dict[str, Tensor] = {}
        self._before: dict[str, Tensor] = {}

    def _state_dicts(self) -> list[dict[str, Tensor]]:
        return [*super()._state_dicts(), self._grad_now, self._before]

    def observe(self) -> None:
        """Keep the unregularised gradient and the parameters before the step."""
        self._grad_now = {n: g.clone() for n, g in self._grads().items()}
        self._before = self._snapshot()

    def after_step(self) -> None:
        """``ω += −g · (θ_after − θ_before)`` for the step just taken."""
        if not self._grad_now:
            return
        for n, p in self._finite(dict(self.params), "parameters").items():
            self._omega[n] -= self._grad_now[n] * (p.detach() - self._before[n])
        self._grad_now, self._before = {}, {}

    def consolidate(self) -> None:
        """``Ω += max(0, ω)/(Δ² + ξ)``, ``ω ← 0``, anchors and start ← current parameters."""
        current = self._snapshot()
        for n in self.params:
            delta = current[n] - self._start[n]
            contrib = self._omega[n].clamp(min=0) / (delta.square() + self.damping)
            self.importance[n] = self.importance[n] + contrib if n in self.importance else contrib
        self._omega = self._zeros()
        self._start = current
        self.anchor = _copy(current)
        self.consolidations += 1

    @property
    def omega(self) -> dict[str, Tensor]:
        """The running path integrals :math:`\\omega` (copies)."""
        return _copy(self._omega)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """See :meth:`WeightRegularizer.load_state_dict`."""
        super().load_state_dict(state)
        self._grad_now, self._before = {}, {}
