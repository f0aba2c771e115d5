r"""Prediction losses for joint-embedding predictive models, and the composed objective.

Each loss compares a prediction :math:`\hat z` with a detached target :math:`\bar z` vector by
vector along the last dimension and reduces over the leading ones, in at least float32 outside
autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal, get_args, overload

import torch
import torch.nn.functional as F
from torch import Tensor

from jepa_blocks._module_form import FunctionModule
from jepa_blocks._validation import check_choice, check_floating_tensor, check_int, check_positive

#: How a loss reduces its leading dimensions.
Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS: tuple[Reduction, ...] = get_args(Reduction)

__all__ = [
    "CosineLoss",
    "MSELoss",
    "SmoothL1Loss",
    "SoftCrossEntropy",
    "cosine_loss",
    "linear_warmup",
    "mse_loss",
    "regularized_objective",
    "smooth_l1_loss",
    "soft_cross_entropy",
]


def _check(pred: Tensor, target: Tensor, reduction: Reduction) -> None:
    for name, x in (("pred", pred), ("target", target)):
        check_floating_tensor(x, name, min_ndim=1, shape_doc="(..., d)")
    if pred.shape != target.shape or pred.shape[-1] < 1:
        raise ValueError(
            f"pred and target must have the same shape (..., d) with d >= 1, got pred "
            f"{tuple(pred.shape)} and target {tuple(target.shape)}"
        )
    check_choice(reduction, "reduction", _REDUCTIONS)
    if reduction == "mean" and pred.numel() == 0:
        raise ValueError(f"reduction='mean' needs at least one vector, got {tuple(pred.shape)}")


def upcast_float(x: Tensor) -> Tensor:
    """float16/bfloat16 → float32, so losses are computed and returned in at least float32."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _loss(
    pred: Tensor,
    target: Tensor,
    reduction: Reduction,
    per_vector: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """``per_vector`` of the upcast pair, outside autocast, reduced over the leading dims."""
    with torch.autocast(pred.device.type, enabled=False):
        out = per_vector(upcast_float(pred), upcast_float(target))
        return out.mean() if reduction == "mean" else out.sum() if reduction == "sum" else out


def cosine_loss(
    pred: Tensor, target: Tensor, *, eps: float = 1e-8, reduction: Reduction = "mean"
) -> Tensor:
    r"""Cosine prediction loss :math:`1 - \cos(\hat z, \bar z) \in [0, 2]`, seq-JEPA's objective.

    Ghaemi et al., 2025, arXiv:2505.03176, §2; ``reduction="mean"`` is the official code's
    ``1 - CosineSimilarity(dim=1)(pred, target).mean()`` (``hafezgh/seq-jepa``, ``src/models.py``,
    ``SeqJEPA_Transforms.forward``).

    Args:
        pred, target: Predictions :math:`\hat z` and (detached) targets :math:`\bar z`.
        eps: Lower bound on each vector norm, as in :func:`torch.nn.functional.cosine_similarity`.
        reduction: Reduction over the leading dimensions.

    Shape:
        - pred, target: ``(..., d)``; output: ``()``, or ``(...)`` with ``reduction="none"``
    """
    _check(pred, target, reduction)
    check_positive(eps, "eps")
    return _loss(pred, target, reduction, lambda p, t: 1.0 - _cosine(p, t, eps))


def _cosine(p: Tensor, t: Tensor, eps: float) -> Tensor:
    """``F.cosine_similarity`` along the last dim; a vector whose squared norm would over- or
    underflow is divided by its largest entry ``s`` first: ``x/max(‖x‖, ε) = x'/max(‖x'‖, ε/s)``."""
    fi = torch.finfo(p.dtype)
    lo, hi = (fi.tiny / fi.eps) ** 0.5, (fi.max / p.shape[-1]) ** 0.5
    sp, st = (x.detach().abs().amax(-1, keepdim=True) for x in (p, t))
    ok = (sp > lo) & (sp < hi) & (st > lo) & (st < hi)
    one = torch.ones((), dtype=p.dtype, device=p.device)
    plain = F.cosine_similarity(torch.where(ok, p, one), torch.where(ok, t, one), -1, eps)

    def unit(x: Tensor, s: Tensor) -> Tensor:
        s = torch.where(s > 0, s, one)
        x = x / s
        floor = s.new_tensor(eps) / s  # not eps / s: a scalar numerator divides by reciprocal
        return x / torch.maximum(torch.linalg.vector_norm(x, dim=-1, keepdim=True), floor)

    return torch.where(ok[..., 0], plain, (unit(p, sp) * unit(t, st)).sum(-1))


def mse_loss(pred: Tensor, target: Tensor, *, reduction: Reduction = "mean") -> Tensor:
    r"""Mean squared error :math:`\frac1d\lVert\hat z - \bar z\rVert^2` per vector (``F.mse_loss``).

    Args:
        pred, target: Predictions :math:`\hat z` and targets :math:`\bar z`.
        reduction: Reduction over the leading dimensions.

    Shape:
        - pred, target: ``(..., d)``; output: ``()``, or ``(...)`` with ``reduction="none"``
    """
    _check(pred, target, reduction)
    return _loss(pred, target, reduction, lambda p, t: (p - t).square().mean(dim=-1))


def smooth_l1_loss(
    pred: Tensor, target: Tensor, *, beta: float = 1.0, reduction: Reduction = "mean"
) -> Tensor:
    r"""Smooth-L1 (Huber with threshold :math:`\beta`, divided by :math:`\beta`) per vector.

    Element-wise :math:`\ell(x) = x^2 / (2\beta)` for :math:`|x| < \beta` and
    :math:`|x| - \beta/2` otherwise, averaged over the last dimension (``beta=0``: L1), as
    :func:`torch.nn.functional.smooth_l1_loss`.

    Args:
        pred, target: Predictions :math:`\hat z` and targets :math:`\bar z`.
        beta: Threshold :math:`\beta \ge 0` between the quadratic and linear parts.
        reduction: Reduction over the leading dimensions.

    Shape:
        - pred, target: ``(..., d)``; output: ``()``, or ``(...)`` with ``reduction="none"``
    """
    _check(pred, target, reduction)
    beta = check_positive(beta, "beta", allow_zero=True)
    return _loss(
        pred,
        target,
        reduction,
        lambda p, t: F.smooth_l1_loss(p, t, beta=beta, reduction="none").mean(dim=-1),
    )


def soft_cross_entropy(
    pred: Tensor, target: Tensor, *, temperature: float = 0.1, reduction: Reduction = "mean"
) -> Tensor:
    r"""Cross-entropy :math:`-\sum_k p_k \log \operatorname{softmax}(\hat z / T)_k` to a soft target.

    The DINO student loss (Caron et al., 2021).

    Args:
        pred: Prediction logits :math:`\hat z`.
        target: Target probabilities :math:`p` (e.g. of :class:`jepa_blocks.targets.CenterSharpen`).
        temperature: Student temperature :math:`T > 0` (DINO: 0.1).
        reduction: Reduction over the leading dimensions.

    Raises:
        ValueError: ``target`` is not a probability vector (checked in eager mode).

    Shape:
        - pred, target: ``(..., d)``; output: ``()``, or ``(...)`` with ``reduction="none"``
    """
    _check(pred, target, reduction)
    t = check_positive(temperature, "temperature")
    if not torch.compiler.is_compiling() and target.numel():  # eager only: a host sync
        q = upcast_float(target.detach())
        if bool((q < 0).any() | ((q.sum(-1) - 1).abs() > 1e-2).any()):
            raise ValueError("target must hold probabilities along d (>= 0, summing to 1)")
    return _loss(
        pred, target, reduction, lambda p, q: -(q * F.log_softmax(p / t, dim=-1)).sum(dim=-1)
    )


@overload
def linear_warmup(step: int, *, warmup_steps: int) -> float: ...
@overload
def linear_warmup(step: Tensor, *, warmup_steps: int) -> Tensor: ...
def linear_warmup(step: int | Tensor, *, warmup_steps: int) -> float | Tensor:
    r"""Linear warm-up factor :math:`\min(1, \max(0, s) / S)`; 1 when :math:`S = 0`.

    Args:
        step: Optimizer steps done so far; a tensor (e.g. a step buffer) avoids a host sync.
        warmup_steps: Length :math:`S \ge 0` of the ramp.

    Shape:
        - step: an ``int`` (output: a ``float``) or a tensor (output: float32, the same shape)
    """
    check_int(warmup_steps, "warmup_steps", minimum=0)
    if isinstance(step, Tensor):
        if step.dtype == torch.bool or step.is_complex():
            raise TypeError(f"step must be an integer or float tensor, got dtype {step.dtype}")
        if warmup_steps == 0:
            return torch.ones(step.shape, dtype=torch.float32, device=step.device)
        return (step.to(torch.float32) / warmup_steps).clamp(0.0, 1.0)
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"step must be an int or a tensor, got {type(step).__name__}")
    return 1.0 if warmup_steps == 0 else min(1.0, max(0, step) / warmup_steps)


def regularized_objective(
    prediction_loss: Tensor, rate: Tensor, *, weight: float | Tensor
) -> Tensor:
    r"""The composed objective :math:`\mathcal L_\text{pred} - \lambda R` (a rate: more is better).

    Args:
        prediction_loss: :math:`\mathcal L_\text{pred}`.
        rate: :math:`R \ge 0` (e.g. :func:`jepa_blocks.rate.coding_rate`).
        weight: :math:`\lambda \ge 0`, a number or a tensor (e.g. after :func:`linear_warmup`).

    Shape:
        - prediction_loss, rate, weight: broadcastable (usually ``()``); output: broadcast shape
    """
    for name, x in (("prediction_loss", prediction_loss), ("rate", rate)):
        check_floating_tensor(x, name)
    if not isinstance(weight, Tensor):
        check_positive(weight, "weight", allow_zero=True)
    return prediction_loss - weight * rate


class _LossModule(FunctionModule):
    """Module form of ``_function(pred, target, **options)``; options > 0 (>= 0: ``allow_zero``)."""

    _function: ClassVar[Callable[..., Tensor]]
    reduction: Reduction

    def __init__(self, reduction: Reduction, *, allow_zero: bool = False, **options: float) -> None:
        super().__init__()
        check_choice(reduction, "reduction", _REDUCTIONS)
        self.reduction = reduction
        for name, value in options.items():
            setattr(self, name, check_positive(value, name, allow_zero=allow_zero))

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Return the loss of ``pred`` and ``target`` with the stored options."""
        return type(self)._function(pred, target, **self._kwargs())


class CosineLoss(_LossModule):
    """Module form of :func:`cosine_loss`, with its options and shapes."""

    _options = ("eps", "reduction")
    _function = staticmethod(cosine_loss)

    def __init__(self, *, eps: float = 1e-8, reduction: Reduction = "mean") -> None:
        super().__init__(reduction, eps=eps)


class MSELoss(_LossModule):
    """Module form of :func:`mse_loss`, with its options and shapes."""

    _options = ("reduction",)
    _function = staticmethod(mse_loss)

    def __init__(self, *, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)


class SmoothL1Loss(_LossModule):
    """Module form of :func:`smooth_l1_loss`, with its options and shapes."""

    _options = ("beta", "reduction")
    _function = staticmethod(smooth_l1_loss)

    def __init__(self, *, beta: float = 1.0, reduction: Reduction = "mean") -> None:
        super().__init__(reduction, allow_zero=True, beta=beta)


class SoftCrossEntropy(_LossModule):
    """Module form of :func:`soft_cross_entropy`, with its options and shapes."""

    _options = ("temperature", "reduction")
    _function = staticmethod(soft_cross_entropy)

    def __init__(self, *, temperature: float = 0.1, reduction: Reduction = "mean") -> None:
        super().__init__(reduction, temperature=temperature)
