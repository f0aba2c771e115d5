"""Argument checks shared by the public functions: clear errors naming the argument and shape."""

from __future__ import annotations

import math
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

__all__ = [
    "NonFiniteError",
    "check_choice",
    "check_finite",
    "check_floating_tensor",
    "check_positive",
    "check_samples",
    "check_type",
    "membership_matrix",
]

_T = TypeVar("_T")


class NonFiniteError(ValueError):
    """An input that must be finite holds NaN or inf (raised before any state changes)."""


def check_finite(x: Tensor, name: str) -> Tensor:
    """Raise :class:`NonFiniteError` if ``x`` holds NaN or inf (eager mode only: a host sync)."""
    if not torch.compiler.is_compiling() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(f"{name} must be finite, got {bad} NaN/inf of {x.numel()} entries")
    return x


def check_type(
    value: Any, name: str, cls: type[_T] | tuple[type, ...], what: str | None = None
) -> _T:
    """Return ``value``; raise ``TypeError`` ("name must be what") unless it is a ``cls``."""
    if not isinstance(value, cls):
        if what is None:
            want = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
            what = f"a {want}"
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    return value  # type: ignore[return-value]


def check_floating_tensor(
    x: Any, name: str, *, min_ndim: int = 0, shape_doc: str = "", finite: bool = False
) -> Tensor:
    """Raise unless ``x`` is a floating-point tensor with ``ndim ≥ min_ndim`` (and ``finite``)."""
    check_type(x, name, Tensor, "a torch.Tensor")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.is_complex():
        raise TypeError(f"{name} must be real, got complex dtype {x.dtype}")
    if x.ndim < min_ndim:
        doc = f" {shape_doc}" if shape_doc else ""
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions{doc}, got shape {tuple(x.shape)}"
        )
    return check_finite(x, name) if finite else x


def check_samples(z: Any, name: str = "z") -> Tensor:
    """Check a sample matrix of shape ``(..., n, d)`` with ``n ≥ 1`` and ``d ≥ 1``."""
    check_floating_tensor(z, name, min_ndim=2, shape_doc="(..., n, d)")
    n, d = z.shape[-2], z.shape[-1]
    if n < 1 or d < 1 or z.numel() == 0:
        raise ValueError(f"{name} must be a non-empty batch (..., n, d), got {tuple(z.shape)}")
    return z


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float; raise unless it is a finite real number ``> 0`` (or ``≥ 0``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    ok = v >= 0 if allow_zero else v > 0
    if not (math.isfinite(v) and ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return str(value)


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value``; raise ``TypeError`` unless it is an int, ``ValueError`` if ``< minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """Return ``value``; raise ``TypeError`` unless it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


def check_probability(value: Any, name: str) -> float:
    """Return ``value`` as a float; raise unless it is a number in ``[0, 1)``."""
    v = check_positive(value, name, allow_zero=True)
    if v >= 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return v


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def membership_matrix(
    membership: Any, n: int, num_classes: int | None, dtype: torch.dtype, *, infer: bool = True
) -> Tensor:
    """Hard labels ``(..., n)`` or soft memberships ``(..., n, K)`` → float ``(..., n, K)``.

    Labels must lie in ``[0, K)``; soft memberships must be finite, non-negative, with rows
    summing to 1 (±1e-3). The value checks need one host sync and run in eager mode only.
    ``K`` is inferred from the largest label when ``num_classes`` is ``None`` and ``infer``.
    """
    check_type(membership, "membership", Tensor, "a torch.Tensor")
    if num_classes is not None:
        check_int(num_classes, "num_classes")
    eager = not torch.compiler.is_compiling()
    if membership.dtype in _INT_DTYPES:
        if membership.ndim < 1 or membership.shape[-1] != n:
            raise ValueError(
                f"membership (hard labels) must have shape (..., n) with n={n} samples, "
                f"got {tuple(membership.shape)}"
            )
        if num_classes is None:
            if not infer:
                raise ValueError("hard-label membership needs num_classes (or projections)")
            num_classes = int(membership.max()) + 1 if membership.numel() else 1
        if eager and membership.numel():
            lo, hi = int(membership.min()), int(membership.max())
            if lo < 0 or hi >= num_classes:
                raise ValueError(
                    f"membership labels must lie in [0, num_classes={num_classes}), got values "
                    f"in [{lo}, {hi}]"
                )
        return nn.functional.one_hot(membership.long(), num_classes).to(dtype)
    check_floating_tensor(membership, "membership", min_ndim=2, shape_doc="(..., n, K)")
    k = membership.shape[-1]
    if membership.shape[-2] != n or (num_classes is not None and k != num_classes):
        expected = f"(..., n={n}, {num_classes if num_classes is not None else 'K'})"
        raise ValueError(
            f"membership (soft) must have shape {expected}, got {tuple(membership.shape)}"
        )
    if eager and membership.numel():
        check_finite(membership, "membership (soft)")
        if bool((membership < 0).any()):
            raise ValueError(f"membership (soft) must be >= 0, got min {float(membership.min())}")
        sums = membership.sum(-1)
        if not bool(((sums - 1).abs() <= 1e-3).all()):
            raise ValueError(
                "membership (soft) rows must sum to 1 (±1e-3), got row sums in "
                f"[{float(sums.min()):.4g}, {float(sums.max()):.4g}]"
            )
    return membership.to(dtype)
