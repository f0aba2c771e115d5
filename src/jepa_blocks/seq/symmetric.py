r"""Time reversal of a view sequence, for the symmetric (bidirectional) seq-JEPA objective.

The reverse task predicts :math:`x_1` from :math:`x_{M+1}, \dots, x_2` with the inverse actions
in reverse order, :math:`a'_i = a_{M+1-i}^{-1}` (:math:`a_i` maps view :math:`i` to :math:`i+1`);
the symmetric objective averages it with the forward task (experiment C, "symmetric prediction",
of the kaikun213/seq-jepa follow-up, left as a TODO in ``experiments/models_teacherless.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from jepa_blocks._validation import check_floating_tensor

__all__ = ["negate_actions", "reverse_sequence"]


def negate_actions(actions: Tensor) -> Tensor:
    r"""The inverse of additive actions, :math:`a^{-1} = -a`.

    Exact when an action is a difference of transformation parameters,
    :math:`a_i = t_{i+1} - t_i` (the paper's actions for augmentations and saccades). For other
    parameterisations pass the group inverse instead (e.g. the conjugate of a unit quaternion, or
    :math:`(\sin(-\theta), \cos\theta)` for a rotation encoded as :math:`(\sin\theta, \cos\theta)`).

    Shape:
        - actions: ``(..., A)``; output: ``(..., A)``
    """
    return -check_floating_tensor(actions, "actions", min_ndim=1)


def reverse_sequence(
    views: Tensor, actions: Tensor, *, invert: Callable[[Tensor], Tensor] = negate_actions
) -> tuple[Tensor, Tensor]:
    r"""Reverse a sequence in time: views :math:`x_{M+1}, \dots, x_1`, actions :math:`a^{-1}_M, \dots, a^{-1}_1`.

    Applying it twice with an involutive ``invert`` gives back the input.

    Args:
        views: Views :math:`x_1, \dots, x_{M+1}` along dimension 1.
        actions: Actions :math:`a_1, \dots, a_M`, :math:`a_i` mapping view :math:`i` to :math:`i+1`.
        invert: Inverse of one action, along the last dimension (default :func:`negate_actions`).

    Returns:
        ``(reversed_views, reversed_actions)``.

    Shape:
        - views: ``(B, M+1, ...)``; actions: ``(B, M, A)``
        - output: ``(B, M+1, ...)`` and ``(B, M, A)``
    """
    check_floating_tensor(views, "views", min_ndim=2)
    check_floating_tensor(actions, "actions", min_ndim=3)
    if not callable(invert):
        raise TypeError(f"invert must be callable, got {type(invert).__name__}")
    if actions.ndim != 3:
        raise ValueError(
            f"views must have shape (B, M+1, ...) and actions (B, M, A), got views "
            f"{tuple(views.shape)} and actions {tuple(actions.shape)}"
        )
    if actions.shape[0] != views.shape[0] or actions.shape[1] != views.shape[1] - 1:
        raise ValueError(
            f"actions must have shape (B, M, A) = ({views.shape[0]}, {views.shape[1] - 1}, A) "
            f"for views {tuple(views.shape)}, got {tuple(actions.shape)}"
        )
    inv = invert(actions)
    if inv.shape != actions.shape:
        raise ValueError(
            f"invert must keep the action shape {tuple(actions.shape)}, got {tuple(inv.shape)}"
        )
    return views.flip(1), inv.flip(1)
