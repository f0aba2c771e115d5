"""Argument checks shared by the public functions: clear errors naming the argument and shape."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

__all__ = [
    "NonFiniteError",
    "check_choice",
    "check_floating_tensor",
    "check_positive",
    "check_samples",
]


class NonFiniteError(ValueError):
    """An input that must be finite holds NaN or inf (raised before any state changes)."""


def check_floating_tensor(x: Any, name: str, *, min_ndim: int = 0, shape_doc: str = "") -> Tensor:
    """Raise ``TypeError`` unless ``x`` is a floating-point tensor with ``ndim ≥ min_ndim``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(
            f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), "
            f"got {x.dtype}"
        )
    if x.is_complex():
        raise TypeError(f"{name} must be real, got complex dtype {x.dtype}")
    if x.ndim < min_ndim:
        doc = f" {shape_doc}" if shape_doc else ""
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions{doc}, got shape {tuple(x.shape)}"
        )
    return x


def check_samples(z: Any, name: str = "z") -> Tensor:
    """Check a sample matrix of shape ``(..., n, d)`` with ``n ≥ 1`` and ``d ≥ 1``."""
    check_floating_tensor(z, name, min_ndim=2, shape_doc="(..., n, d)")
    n, d = z.shape[-2], z.shape[-1]
    if n < 1 or d < 1 or z.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty batch of shape (..., n, d) with n >= 1 and d >= 1, "
            f"got shape {tuple(z.shape)}"
        )
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
