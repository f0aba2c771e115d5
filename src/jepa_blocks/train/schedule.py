"""Learning-rate schedules (pure functions of the step: resumed exactly) and optimizer recipes."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from jepa_blocks._validation import check_choice, check_positive

__all__ = ["Recipe", "build_optimizer", "lr_at", "param_groups", "warmup_cosine_lr"]

Recipe = Literal["paper", "official"]
_RECIPES = ("paper", "official")


def warmup_cosine_lr(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int,
    base_lr: float,
    warmup_start_lr: float = 1e-5,
    final_lr: float = 1e-5,
) -> float:
    r"""Linear warm-up from ``warmup_start_lr`` to ``base_lr``, then cosine decay to ``final_lr``.

    seq-JEPA (Ghaemi et al. 2025, §3.2/A.2): :math:`\eta_s = \eta_0 + (\eta - \eta_0)\, s/W` for
    :math:`s < W`, then :math:`\eta_\text{min} + \tfrac12(\eta - \eta_\text{min})(1 + \cos\pi t)`,
    :math:`t = (s - W)/(T - W)` clipped to ``[0, 1]``.

    Args:
        step: Optimizer steps done so far (0-based).
        total_steps, warmup_steps: ``T`` (the whole run) and ``W ≤ T``.
        base_lr: Peak learning rate.
        warmup_start_lr, final_lr: Learning rates at steps 0 and ``T``.
    """
    if step < warmup_steps:
        return warmup_start_lr + (base_lr - warmup_start_lr) * step / max(1, warmup_steps)
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * t))


def lr_at(
    step: int,
    *,
    recipe: Recipe,
    base_lr: float,
    total_steps: int,
    warmup_steps: int,
    warmup_start_lr: float = 1e-5,
    final_lr: float = 1e-5,
) -> float:
    """Learning rate of ``recipe`` at ``step``: ``"paper"``: :func:`warmup_cosine_lr`;
    ``"official"`` (``hafezgh/seq-jepa``'s ``main_transformed_views.py``): the same warm-up, then
    constant (its per-epoch warm-up block resets the rate to ``base_lr`` every epoch).
    """
    check_choice(recipe, "recipe", _RECIPES)
    if recipe == "official" and step >= warmup_steps:
        return base_lr
    return warmup_cosine_lr(
        step,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        base_lr=base_lr,
        warmup_start_lr=warmup_start_lr,
        final_lr=final_lr,
    )


def _no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names of the parameters listed by ``no_weight_decay()`` (timm: relative names)."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if callable(listed):
            names |= {f"{prefix}.{n}" if prefix else n for n in listed()}
    return names


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """Two groups, as the official ``main_pls.py``: weight decay on ≥ 2-D parameters, none on the
    1-D ones (biases, norms) and those a module lists in ``no_weight_decay()`` (timm's
    convention); frozen parameters are left out."""
    skip = _no_weight_decay_names(model)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and name not in skip else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, *, recipe: str = "paper", lr: float = 4e-4, weight_decay: float = 1e-3
) -> torch.optim.Optimizer:
    """The optimizer of a recipe: ``"paper"``: AdamW on :func:`param_groups`; ``"official"``:
    ``Adam(lr=1e-3, weight_decay=0)``, hard-coded by ``main_transformed_views.py`` (``lr`` and
    ``weight_decay`` are ignored).
    """
    check_choice(recipe, "recipe", _RECIPES)
    check_positive(lr, "lr")
    check_positive(weight_decay, "weight_decay", allow_zero=True)
    if recipe == "official":
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=1e-3, weight_decay=0.0)
    return torch.optim.AdamW(param_groups(model, weight_decay=weight_decay), lr=lr)
