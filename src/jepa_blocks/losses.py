r"""Prediction losses for joint-embedding predictive models, and the composed objective.

Each loss compares a prediction :math:`\hat z` with a target :math:`\bar z` (already detached by
the target wrapper, see :mod:`jepa_blocks.targets`) vector by vector along the last dimension,
then reduces over all leading dimensions. float16/bfloat16 inputs are upcast and the loss is
computed in float32 outside autocast (a low-precision mean over a batch loses digits):

* :func:`cosine_loss` — :math:`1 - \cos(\hat z, \bar z)`, the seq-JEPA loss (Ghaemi et al., 2025,
  "seq-JEPA", arXiv:2505.03176, §2; official code ``hafezgh/seq-jepa``, ``src/models.py``,
  ``SeqJEPA_Transforms.forward``: ``1 - CosineSimilarity(dim=1)(pred, target).mean()``).
* :func:`mse_loss` — mean squared error per vector.
* :func:`smooth_l1_loss` — Huber / smooth-L1 per vector (as in I-JEPA / V-JEPA style objectives).
* :func:`soft_cross_entropy` — DINO-style cross-entropy against a probability target, for use
  with :class:`jepa_blocks.targets.CenterSharpen` (Caron et al., 2021, "Emerging Properties in
  Self-Supervised Vision Transformers").

The composed objective subtracts a weighted, non-negative rate (see :mod:`jepa_blocks.rate`):
:math:`\mathcal L = \mathcal L_\text{pred} - \lambda\, R` (:func:`regularized_objective`), with
an optional linear warm-up of :math:`\lambda` (:func:`linear_warmup`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from jepa_blocks._module_form import FunctionModule
from jepa_blocks._validation import check_choice, check_positive

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

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


def _check_pair(pred: Tensor, target: Tensor) -> None:
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 1:
            raise ValueError(f"{name} must have shape (..., d) with at least 1 dimension, got ()")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape (..., d), got pred {tuple(pred.shape)} "
            f"and target {tuple(target.shape)}"
        )


def _check_reduction(reduction: str) -> None:
    check_choice(reduction, "reduction", _REDUCTIONS)


def upcast_float(x: Tensor) -> Tensor:
    """float16/bfloat16 → float32, so losses are computed and returned in at least float32."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _reduce(per_vector: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_vector.mean()
    if reduction == "sum":
        return per_vector.sum()
    return per_vector


def cosine_loss(
    pred: Tensor, target: Tensor, *, eps: float = 1e-8, reduction: Reduction = "mean"
) -> Tensor:
    r"""Cosine prediction loss :math:`1 - \cos(\hat z, \bar z)`, the seq-JEPA objective.

    With ``reduction="mean"`` this is :math:`1 - \frac1N\sum_i \cos(\hat z_i, \bar z_i)` over all
    leading indices, exactly the official code's ``1 - CosineSimilarity(dim=1)(...).mean()``.

    Args:
        pred: Predictions :math:`\hat z`.
        target: Targets :math:`\bar z` (detach them first; this function does not).
        eps: Lower bound on each vector norm, as in :func:`torch.nn.functional.cosine_similarity`.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over the leading dimensions.

    Returns:
        The loss, in :math:`[0, 2]` per vector.

    Shape:
        - pred, target: ``(..., d)``
        - output: ``()``, or ``(...)`` with ``reduction="none"``
    """
    _check_pair(pred, target)
    _check_reduction(reduction)
    check_positive(eps, "eps")
    with torch.autocast(pred.device.type, enabled=False):
        cos = F.cosine_similarity(upcast_float(pred), upcast_float(target), dim=-1, eps=eps)
        return _reduce(1.0 - cos, reduction)


def mse_loss(pred: Tensor, target: Tensor, *, reduction: Reduction = "mean") -> Tensor:
    r"""Mean squared error per vector, :math:`\frac1d\lVert \hat z - \bar z\rVert^2`.

    With ``reduction="mean"`` it equals :func:`torch.nn.functional.mse_loss` (mean over all
    elements).

    Args:
        pred: Predictions :math:`\hat z`.
        target: Targets :math:`\bar z`.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over the leading dimensions.

    Returns:
        The loss (non-negative).

    Shape:
        - pred, target: ``(..., d)``
        - output: ``()``, or ``(...)`` with ``reduction="none"``
    """
    _check_pair(pred, target)
    _check_reduction(reduction)
    with torch.autocast(pred.device.type, enabled=False):
        return _reduce((upcast_float(pred) - upcast_float(target)).square().mean(dim=-1), reduction)


def smooth_l1_loss(
    pred: Tensor, target: Tensor, *, beta: float = 1.0, reduction: Reduction = "mean"
) -> Tensor:
    r"""Smooth-L1 (Huber with threshold :math:`\beta`, divided by :math:`\beta`) per vector.

    Element-wise :math:`\ell(x) = x^2 / (2\beta)` for :math:`|x| < \beta` and
    :math:`|x| - \beta/2` otherwise, averaged over the last dimension; ``beta=0`` is the L1 loss.
    With ``reduction="mean"`` it equals :func:`torch.nn.functional.smooth_l1_loss`.

    Args:
        pred: Predictions :math:`\hat z`.
        target: Targets :math:`\bar z`.
        beta: Threshold :math:`\beta \ge 0` between the quadratic and linear parts.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over the leading dimensions.

    Returns:
        The loss (non-negative).

    Shape:
        - pred, target: ``(..., d)``
        - output: ``()``, or ``(...)`` with ``reduction="none"``
    """
    _check_pair(pred, target)
    _check_reduction(reduction)
    beta = check_positive(beta, "beta", allow_zero=True)
    with torch.autocast(pred.device.type, enabled=False):
        per_elem = F.smooth_l1_loss(upcast_float(pred), upcast_float(target), beta=beta, reduction="none")
        return _reduce(per_elem.mean(dim=-1), reduction)


def soft_cross_entropy(
    pred: Tensor, target: Tensor, *, temperature: float = 0.1, reduction: Reduction = "mean"
) -> Tensor:
    r"""Cross-entropy :math:`-\sum_k p_k \log \operatorname{softmax}(\hat z / T)_k` to a soft target.

    The DINO student loss (Caron et al., 2021): ``target`` holds probabilities along the last
    dimension (e.g. the output of :class:`jepa_blocks.targets.CenterSharpen`), ``pred`` holds
    logits divided by the student temperature :math:`T`.

    Args:
        pred: Prediction logits :math:`\hat z`.
        target: Target probabilities :math:`p` (non-negative, summing to 1 along ``d``).
        temperature: Student temperature :math:`T > 0` (DINO: 0.1).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over the leading dimensions.

    Returns:
        The loss (non-negative).

    Shape:
        - pred, target: ``(..., d)``
        - output: ``()``, or ``(...)`` with ``reduction="none"``
    """
    _check_pair(pred, target)
    _check_reduction(reduction)
    t = check_positive(temperature, "temperature")
    with torch.autocast(pred.device.type, enabled=False):
        log_p = F.log_softmax(upcast_float(pred) / t, dim=-1)
        return _reduce(-(upcast_float(target) * log_p).sum(dim=-1), reduction)


def linear_warmup(step: int | Tensor, *, warmup_steps: int) -> float | Tensor:
    r"""Linear warm-up factor :math:`\min(1, \max(0, s) / S)`; 1 when :math:`S = 0`.

    Multiply a loss weight by it: the weight then ramps linearly from 0 at step 0 to its full
    value at step :math:`S` (``warmup_steps``) and stays there.

    Args:
        step: Optimizer steps done so far, an ``int`` or an integer/float tensor (for instance a
            step buffer, which keeps the computation on its device without a host sync).
        warmup_steps: Length :math:`S \ge 0` of the ramp.

    Returns:
        A ``float`` for an ``int`` step, a float32 tensor of the step's shape for a tensor step.

    Shape:
        - step: any (tensor) or scalar
        - output: same as ``step``
    """
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    if isinstance(step, Tensor):
        if warmup_steps == 0:
            return torch.ones(step.shape, dtype=torch.float32, device=step.device)
        return (step.to(torch.float32) / warmup_steps).clamp(0.0, 1.0)
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"step must be an int or a tensor, got {type(step).__name__}")
    if warmup_steps == 0:
        return 1.0
    return min(1.0, max(0, step) / warmup_steps)


def regularized_objective(
    prediction_loss: Tensor, rate: Tensor, *, weight: float | Tensor
) -> Tensor:
    r"""The composed objective :math:`\mathcal L_\text{pred} - \lambda R`.

    Rates are positive (more spread is better), so they are subtracted.

    Args:
        prediction_loss: :math:`\mathcal L_\text{pred}`.
        rate: :math:`R \ge 0` (e.g. :func:`jepa_blocks.rate.coding_rate`).
        weight: :math:`\lambda \ge 0`, a number or a tensor (e.g. after :func:`linear_warmup`).

    Returns:
        :math:`\mathcal L_\text{pred} - \lambda R`.

    Shape:
        - prediction_loss, rate, weight: broadcastable (usually ``()``)
        - output: broadcast shape
    """
    if not isinstance(weight, Tensor):
        check_positive(weight, "weight", allow_zero=True)
    return prediction_loss - weight * rate


class _LossModule(FunctionModule):
    """Module form of a loss of ``(pred, target)``: a checked ``reduction`` and the options."""

    reduction: Reduction

    def __init__(self, reduction: Reduction) -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction


class CosineLoss(_LossModule):
    """Module form of :func:`cosine_loss`.

    Args:
        eps: Lower bound on vector norms.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - pred, target: ``(..., d)``
        - output: ``()``, or ``(...)`` with ``reduction="none"``
    """

    _options = ("eps", "reduction")

    def __init__(self, *, eps: float = 1e-8, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.eps = check_positive(eps, "eps")

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Return :func:`cosine_loss` of ``pred`` and ``target``."""
        return cosine_loss(pred, target, **self._kwargs())


class MSELoss(_LossModule):
    """Module form of :func:`mse_loss`.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - pred, target: ``(..., d)``
        - output: ``()``, or ``(...)`` with ``reduction="none"``
    """

    _options = ("reduction",)

    def __init__(self, *, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Return :func:`mse_loss` of ``pred`` and ``target``."""
        return mse_loss(pred, target, **self._kwargs())


class SmoothL1Loss(_LossModule):
    """Module form of :func:`smooth_l1_loss`.

    Args:
        beta: Threshold between the quadratic and linear parts, ``>= 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - pred, target: ``(..., d)``
        - output: ``()``, or ``(...)`` with ``reduction="none"``
    """

    _options = ("beta", "reduction")

    def __init__(self, *, beta: float = 1.0, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.beta = check_positive(beta, "beta", allow_zero=True)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Return :func:`smooth_l1_loss` of ``pred`` and ``target``."""
        return smooth_l1_loss(pred, target, **self._kwargs())


class SoftCrossEntropy(_LossModule):
    """Module form of :func:`soft_cross_entropy`.

    Args:
        temperature: Student temperature, ``> 0``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        - pred, target: ``(..., d)``
        - output: ``()``, or ``(...)`` with ``reduction="none"``
    """

    _options = ("temperature", "reduction")

    def __init__(self, *, temperature: float = 0.1, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.temperature = check_positive(temperature, "temperature")

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Return :func:`soft_cross_entropy` of logits ``pred`` and probabilities ``target``."""
        return soft_cross_entropy(pred, target, **self._kwargs())
