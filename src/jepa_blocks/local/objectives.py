r"""Block-local objectives: a latent-predictive (LPL) loss and a coding-rate loss per block.

Both read the embeddings ``z`` ``(B, T, d)`` of ``T`` consecutive views of each sample, as a
block's local head produces them, and optionally predictions and targets ``(B, P, d)`` of those
views' successors; without ``pred``/``target``, :math:`\hat z_t = z_t` predicts
:math:`\bar z_t = z_{t+1}` (LPL's slowness term). Targets are detached (stop-gradient).

* :func:`lpl_loss` — Latent Predictive Learning, Halvagal & Zenke (2023), "The combination of
  Hebbian and predictive plasticity learns invariant object representations in deep sensory
  networks", Nature Neuroscience 26; official code ``fmi-basel/latent-predictive-learning``
  (``models/module.py``). Three terms per block, published weights ``pull = 1``, ``push = 1``,
  ``decorrelation = 10`` and :math:`\epsilon = 10^{-4}`:

  .. math::

      \mathcal L_\text{pred} &= \operatorname{mean}_{b,t,i}
          \big(\hat z_{bti} - \operatorname{sg}(\bar z_{bti})\big)^2 \\
      \mathcal L_\text{var} &= -\operatorname{mean}_{t,i}
          \log\big(\sigma^2_{ti} + \epsilon\big), \qquad
          \sigma^2_{ti} = \tfrac{1}{B-1}\textstyle\sum_b \big(z_{bti} - \operatorname{sg}(\mu_{ti})\big)^2 \\
      \mathcal L_\text{decorr} &= \operatorname{mean}_t \tfrac{1}{d(d-1)}
          \textstyle\sum_{i \ne j} C_{tij}^2, \qquad
          C_{tij} = \tfrac{1}{B-1}\textstyle\sum_b (z_{bti} - \operatorname{sg}(\mu_{ti}))
          (z_{btj} - \operatorname{sg}(\mu_{tj}))

  with the batch mean :math:`\mu` a constant, as in the official code. ``pull_weight=0.5`` gives
  the paper's :math:`\tfrac{1}{2MB}` normalisation (the gradient is its learning rule, Eq. 7 with
  the erratum's decorrelation term); ``stop_gradient=False`` the official code's
  ``mse_loss(z1, z2)``, whose gradient reaches both views (:doc:`/local`, "Faithfulness").
* :func:`local_rate_loss` — the cosine prediction loss minus :math:`\lambda` times the coding rate
  of each view's L2-normalised embeddings (Yu et al., 2020, "Learning Diverse and Discriminative
  Representations via the Principle of Maximal Coding Rate Reduction"), the rate playing the
  anti-collapse role of LPL's variance and decorrelation terms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from jepa_blocks._module_form import FunctionModule
from jepa_blocks._validation import check_bool, check_floating_tensor, check_positive
from jepa_blocks.losses import cosine_loss, mse_loss, upcast_float
from jepa_blocks.rate import coding_rate

__all__ = [
    "LPLLoss",
    "LocalLossParts",
    "LocalRateLoss",
    "decorrelation_loss",
    "local_rate_loss",
    "lpl_loss",
    "variance_loss",
]


class LocalLossParts(NamedTuple):
    """Terms of a block-local objective (what ``return_parts=True`` returns).

    Attributes:
        loss: The weighted total, ``()``.
        prediction: The prediction ("pull") term, ``()``; zero when there is no pair of views.
        variance: LPL's variance ("push", Hebbian) term, ``()`` (``None`` for the rate loss).
        decorrelation: LPL's decorrelation term, ``()`` (``None`` for the rate loss).
        rate: The coding rate (positive) of the rate loss, ``()`` (``None`` for LPL).
    """

    loss: Tensor
    prediction: Tensor
    variance: Tensor | None = None
    decorrelation: Tensor | None = None
    rate: Tensor | None = None


def _check_views(z: Any, name: str = "z") -> Tensor:
    check_floating_tensor(z, name, min_ndim=3, shape_doc="(B, T, d)")
    if z.ndim != 3:
        raise ValueError(f"{name} must have shape (B, T, d), got {tuple(z.shape)}")
    if z.shape[0] < 2 or z.shape[1] < 1 or z.shape[2] < 1:
        raise ValueError(
            f"{name} must have shape (B, T, d) with B >= 2 samples (batch statistics), T >= 1 "
            f"views and d >= 1, got {tuple(z.shape)}"
        )
    return z


def _prediction_term(
    z: Tensor, pred: Any, target: Any, loss: Callable[..., Tensor], stop_gradient: bool = True
) -> Tensor:
    """``loss(pred, target)`` ``(B, P, d)`` (default: consecutive views of ``z``); 0 if ``P = 0``."""
    if (pred is None) != (target is None):
        raise ValueError("pass both pred and target, or neither (then consecutive views of z)")
    if pred is None:
        pred, target = z[:, :-1], z[:, 1:]
    for name, x in (("pred", pred), ("target", target)):
        check_floating_tensor(x, name, min_ndim=3, shape_doc="(B, P, d)")
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(
            f"pred and target must have the same shape (B, P, d), got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.shape[0] != z.shape[0] or pred.shape[2] != z.shape[2]:
        raise ValueError(
            f"pred must have shape (B, P, d) = ({z.shape[0]}, P, {z.shape[2]}) like z, got "
            f"{tuple(pred.shape)}"
        )
    target = target.detach() if stop_gradient else target
    return loss(pred, target) if pred.shape[1] > 0 else upcast_float(z).new_zeros(())


def _check_option(name: str, value: Any) -> Any:
    """A term weight ``>= 0``, ``eps > 0`` or a flag (``normalize``, ``stop_gradient``)."""
    if name in ("normalize", "stop_gradient"):
        return check_bool(value, name)
    return check_positive(value, name, allow_zero=name != "eps")


def _centered(z: Tensor) -> Tensor:
    """Checked ``(B, T, d)`` views as ``(T, B, d)``, minus their detached batch mean per view."""
    x = rearrange(upcast_float(_check_views(z)), "b t d -> t b d")
    return x - x.mean(dim=1, keepdim=True).detach()


def variance_loss(z: Tensor, *, eps: float = 1e-4) -> Tensor:
    r"""LPL's variance ("push", Hebbian) term :math:`-\operatorname{mean}\log(\sigma^2 + \epsilon)`.

    Per view and unit, the unbiased batch variance around the **detached** batch mean
    (Halvagal & Zenke, 2023; official ``hebbian_loss``), then the mean over views and units.

    Args:
        z: Embeddings of ``T`` views, one row per sample.
        eps: :math:`\epsilon > 0` inside the logarithm (published 1e-4).

    Returns:
        The term (float32 for half-precision input).

    Shape:
        - z: ``(B, T, d)`` with ``B ≥ 2``; output: ``()``
    """
    x = _centered(z)
    eps = check_positive(eps, "eps")
    var = x.pow(2).sum(dim=1) / (x.shape[1] - 1)  # (T, d)
    return -torch.log(var + eps).mean()


def decorrelation_loss(z: Tensor) -> Tensor:
    r"""LPL's decorrelation term: mean squared off-diagonal batch covariance.

    :math:`\frac{1}{d(d-1)}\sum_{i\ne j} C_{ij}^2` per view, with the unbiased covariance around
    the detached batch mean (Halvagal & Zenke, 2023; official ``decorr_loss``, with the
    normalisation of its pull request #9), averaged over views. Zero when ``d = 1``.

    Args:
        z: Embeddings of ``T`` views.

    Shape:
        - z: ``(B, T, d)`` with ``B ≥ 2``; output: ``()``
    """
    x = _centered(z)
    n, d = x.shape[1], x.shape[2]
    cov = torch.einsum("tbi,tbj->tij", x, x) / (n - 1)  # (T, d, d)
    off = cov - torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
    return off.pow(2).sum(dim=(-2, -1)).mean() / max(1, d * (d - 1))


def lpl_loss(
    z: Tensor,
    *,
    pred: Tensor | None = None,
    target: Tensor | None = None,
    pull_weight: float = 1.0,
    push_weight: float = 1.0,
    decorrelation_weight: float = 10.0,
    eps: float = 1e-4,
    stop_gradient: bool = True,
    return_parts: bool = False,
) -> Tensor | LocalLossParts:
    r"""LPL objective of one block: prediction + variance + decorrelation (published weights).

    :math:`\mathcal L = w_\text{pull}\mathcal L_\text{pred} + w_\text{push}\mathcal L_\text{var}
    + w_\text{decorr}\mathcal L_\text{decorr}` (module docstring); ``L_pred`` is zero when
    ``T = 1`` and no pairs are given; the other terms are computed on ``z``.

    Args:
        z: Embeddings of consecutive views (the ones that carry gradient).
        pred: Optional predictions of the successors, e.g. from an action-conditioned head.
        target: Their targets (detached here); required with ``pred``.
        pull_weight: :math:`w_\text{pull} \ge 0` (published 1).
        push_weight: :math:`w_\text{push} \ge 0` (published 1).
        decorrelation_weight: :math:`w_\text{decorr} \ge 0` (published 10).
        eps: :math:`\epsilon > 0` of the variance term (published 1e-4).
        stop_gradient: Detach the targets (the paper's :math:`\operatorname{sg}`); ``False``:
            the official code's ``mse_loss(z1, z2)``, whose gradient reaches both views.
        return_parts: Return :class:`LocalLossParts` instead of the total.

    Returns:
        The loss ``()`` or its parts.

    Shape:
        - z: ``(B, T, d)`` with ``B ≥ 2``; pred, target: ``(B, P, d)``; output: ``()``

    Example:
        >>> from jepa_blocks.local import lpl_loss
        >>> z = torch.randn(32, 3, 16)
        >>> parts = lpl_loss(z, return_parts=True)
        >>> bool(parts.decorrelation >= 0)
        True
    """
    _check_views(z)
    w_pull = _check_option("pull_weight", pull_weight)
    w_push = _check_option("push_weight", push_weight)
    w_dec = _check_option("decorrelation_weight", decorrelation_weight)
    _check_option("eps", eps)
    sg = _check_option("stop_gradient", stop_gradient)
    pull = _prediction_term(z, pred, target, mse_loss, sg)
    push = variance_loss(z, eps=eps)
    dec = decorrelation_loss(z)
    loss = w_pull * pull + w_push * push + w_dec * dec
    if return_parts:
        return LocalLossParts(loss, pull, variance=push, decorrelation=dec)
    return loss


def local_rate_loss(
    z: Tensor,
    *,
    pred: Tensor | None = None,
    target: Tensor | None = None,
    pull_weight: float = 1.0,
    rate_weight: float = 0.03,
    eps: float = 0.5,
    normalize: bool = True,
    return_parts: bool = False,
) -> Tensor | LocalLossParts:
    r"""Coding-rate objective of one block: :math:`w\,\mathcal L_\text{cos} - \lambda\,\bar R`.

    ``L_cos`` is :math:`1-\cos(\hat z, \operatorname{sg}(\bar z))` (:func:`jepa_blocks.cosine_loss`;
    zero when ``T = 1``), :math:`\bar R` the mean over views of the coding rate
    :math:`R(Z_t) = \tfrac12\log\det(I + \tfrac{d}{B\varepsilon^2} Z_t^\top Z_t)` of the batch
    :math:`Z_t` ``(B, d)`` (:func:`jepa_blocks.coding_rate`), on L2-normalised rows by default
    (as MCR² and EMP-SSL) so that the rate cannot grow by scaling.

    Args:
        z: Embeddings of consecutive views.
        pred: Optional predictions of the successors.
        target: Their targets (detached here); required with ``pred``.
        pull_weight: Weight ``w ≥ 0`` of the prediction term.
        rate_weight: :math:`\lambda \ge 0` (default 0.03, the weight of the step-2 cpu-demo).
        eps: The papers' :math:`\varepsilon > 0` of the rate.
        normalize: L2-normalise each embedding before the rate.
        return_parts: Return :class:`LocalLossParts` instead of the total.

    Returns:
        The loss ``()`` or its parts (``rate`` is positive).

    Shape:
        - z: ``(B, T, d)`` with ``B ≥ 2``; pred, target: ``(B, P, d)``; output: ``()``
    """
    _check_views(z)
    w_pull = _check_option("pull_weight", pull_weight)
    lam = _check_option("rate_weight", rate_weight)
    _check_option("eps", eps)
    _check_option("normalize", normalize)
    pull = _prediction_term(z, pred, target, cosine_loss)
    zt = rearrange(z, "b t d -> t b d")
    if normalize:
        zt = F.normalize(upcast_float(zt), dim=-1)
    rate = coding_rate(zt, eps=eps).mean()
    loss = w_pull * pull - lam * rate
    if return_parts:
        return LocalLossParts(loss, pull, rate=rate)
    return loss


class _LocalObjective(FunctionModule):
    """Module form of a block-local objective: checks and stores the options of ``_objective``."""

    #: The objective function, called as ``_objective(z, pred=..., target=..., **options)``.
    _objective: Callable[..., Tensor | LocalLossParts]

    def __init__(self, **options: Any) -> None:
        super().__init__()
        for name, value in options.items():
            setattr(self, name, _check_option(name, value))

    def forward(
        self,
        z: Tensor,
        *,
        pred: Tensor | None = None,
        target: Tensor | None = None,
        return_parts: bool = False,
    ) -> Tensor | LocalLossParts:
        """Return the objective of ``z`` (and ``pred``/``target``) with the stored options."""
        return type(self)._objective(
            z, pred=pred, target=target, return_parts=return_parts, **self._kwargs()
        )


class LPLLoss(_LocalObjective):
    """Module form of :func:`lpl_loss` (Halvagal & Zenke, 2023; defaults as published).

    Args:
        pull_weight, push_weight, decorrelation_weight, eps, stop_gradient: As in
            :func:`lpl_loss` (defaults 1, 1, 10, 1e-4, ``True``).

    Shape:
        - z: ``(B, T, d)``; pred, target: ``(B, P, d)``
        - output: ``()`` (or :class:`LocalLossParts` with ``return_parts=True``)
    """

    _objective = lpl_loss
    _options = ("pull_weight", "push_weight", "decorrelation_weight", "eps", "stop_gradient")

    def __init__(
        self,
        *,
        pull_weight: float = 1.0,
        push_weight: float = 1.0,
        decorrelation_weight: float = 10.0,
        eps: float = 1e-4,
        stop_gradient: bool = True,
    ) -> None:
        super().__init__(
            pull_weight=pull_weight,
            push_weight=push_weight,
            decorrelation_weight=decorrelation_weight,
            eps=eps,
            stop_gradient=stop_gradient,
        )


class LocalRateLoss(_LocalObjective):
    """Module form of :func:`local_rate_loss` (cosine prediction − λ · coding rate).

    Args:
        pull_weight, rate_weight, eps, normalize: As in :func:`local_rate_loss`.

    Shape:
        - z: ``(B, T, d)``; pred, target: ``(B, P, d)``
        - output: ``()`` (or :class:`LocalLossParts` with ``return_parts=True``)
    """

    _objective = local_rate_loss
    _options = ("pull_weight", "rate_weight", "eps", "normalize")

    def __init__(
        self,
        *,
        pull_weight: float = 1.0,
        rate_weight: float = 0.03,
        eps: float = 0.5,
        normalize: bool = True,
    ) -> None:
        super().__init__(
            pull_weight=pull_weight, rate_weight=rate_weight, eps=eps, normalize=normalize
        )
