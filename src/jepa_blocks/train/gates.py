"""Gates: threshold checks that decide whether a run is good enough to go on to a costlier one.

The follow-up repository ``kaikun213/seq-jepa`` (``train.py`` ``evaluate_gates``,
``docs/reference/metrics-and-gates.md``) gates its runs on the online probe metrics: a run passes
when every metric clears its threshold, and the reasons for a failure are reported. Here a
:class:`Gates` holds named lower (``minimum``) and upper (``maximum``) bounds on metrics, loaded
from a dataclass, a dict or YAML; :func:`check_gates` returns a :class:`GateResult` with pass/fail and
reasons.

Metric names follow :class:`~jepa_blocks.metrics.LeakageReport`: ``linacc`` (class accuracy from
``z_agg``), ``r2`` (action R² from the encoder pair), ``leakage_linacc``, ``leakage_r2``,
``linacc_gap``, ``r2_gap``, plus anything else a run logs (``loss``...). Accuracies are
**fractions** in ``[0, 1]`` (the follow-up repository uses percentages: its 12.0 is 0.12 here); a
metric named ``*linacc`` outside ``[0, 1]`` fails with a reason saying so.

Presets (the follow-up repository's CIFAR-10-rotation tiers): ``"smoke"`` (forward/backward
sanity), ``"quick"`` (fast learning signal) and ``"baseline-lite"`` (evidence before remote runs).
:func:`register_gates` adds new ones; :meth:`Gates.with_thresholds` derives one from another.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "GATE_PRESETS",
    "GateResult",
    "Gates",
    "check_gates",
    "get_gates",
    "register_gates",
]


def _thresholds(values: Mapping[str, Any] | None, name: str) -> dict[str, float]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise TypeError(
            f"{name} must be a mapping of metric name to number, got {type(values).__name__}"
        )
    out = {}
    for key, v in values.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{name} keys must be non-empty metric names, got {key!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise ValueError(f"{name}[{key!r}] must be a finite number, got {v!r}")
        out[key] = float(v)
    return out


@dataclass(frozen=True)
class Gates:
    """A named set of thresholds.

    Args:
        name: Name of the gate set.
        minimum: ``{metric: lower bound}``; the metric passes if ``value ≥ bound``.
        maximum: ``{metric: upper bound}``; the metric passes if ``value ≤ bound``.
        description: Free text (what the tier is for).
    """

    name: str = "custom"
    minimum: Mapping[str, float] = field(default_factory=dict)
    maximum: Mapping[str, float] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        lo = _thresholds(self.minimum, "minimum")
        hi = _thresholds(self.maximum, "maximum")
        for key in set(lo) & set(hi):
            if lo[key] > hi[key]:
                raise ValueError(
                    f"metric {key!r} has minimum {lo[key]} above its maximum {hi[key]}; no value "
                    "could pass"
                )
        object.__setattr__(self, "minimum", MappingProxyType(lo))
        object.__setattr__(self, "maximum", MappingProxyType(hi))

    def check(self, metrics: Mapping[str, Any], *, missing: str = "fail") -> GateResult:
        """Check ``metrics`` against the thresholds (see :func:`check_gates`)."""
        return check_gates(metrics, self, missing=missing)

    def with_thresholds(
        self,
        *,
        name: str | None = None,
        minimum: Mapping[str, float] | None = None,
        maximum: Mapping[str, float] | None = None,
        description: str | None = None,
    ) -> Gates:
        """A new gate set: these thresholds updated by ``minimum`` / ``maximum``."""
        return Gates(
            name=name or self.name,
            minimum={**self.minimum, **(minimum or {})},
            maximum={**self.maximum, **(maximum or {})},
            description=self.description if description is None else description,
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "description", "min", "max"}``, the YAML layout."""
        return {
            "name": self.name,
            "description": self.description,
            "min": dict(self.minimum),
            "max": dict(self.maximum),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str | None = None) -> Gates:
        """Build from ``{"name", "description", "min": {...}, "max": {...}}``.

        The flat layout of the follow-up repository's configs is accepted too: keys ending in
        ``_min`` / ``_max`` (``{"linacc_min": 0.2, "r2_min": 0.0}``).
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a mapping, got {type(data).__name__}")
        minimum = dict(data.get("min") or {})
        maximum = dict(data.get("max") or {})
        known = {"name", "description", "min", "max"}
        for key, value in data.items():
            if key in known:
                continue
            if key.endswith("_min"):
                minimum[key[: -len("_min")]] = value
            elif key.endswith("_max"):
                maximum[key[: -len("_max")]] = value
            else:
                raise ValueError(
                    f"unknown gate key {key!r}: expected 'name', 'description', 'min', 'max' or "
                    "a metric name ending in '_min' / '_max'"
                )
        return cls(
            name=name or str(data.get("name") or "custom"),
            minimum=minimum,
            maximum=maximum,
            description=str(data.get("description") or ""),
        )

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str], *, name: str | None = None) -> Gates:
        """Load from a YAML file path or a YAML string (needs ``pyyaml``)."""
        import yaml

        text = source
        if isinstance(source, os.PathLike) or (
            isinstance(source, str) and "\n" not in source and os.path.isfile(source)
        ):
            with open(source, encoding="utf-8") as fh:
                text = fh.read()
        data = yaml.safe_load(str(text))
        if not isinstance(data, Mapping):
            raise ValueError(f"YAML gates must be a mapping, got {type(data).__name__}")
        return cls.from_dict(data, name=name)

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        """The YAML text (written to ``path`` when given; needs ``pyyaml``)."""
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return str(text)


@dataclass(frozen=True)
class GateResult:
    """Outcome of a gate check; truthy when it passed.

    Attributes:
        name: Name of the gate set.
        passed: Whether every threshold held.
        reasons: One line per failed or missing metric.
        checked: The metric values that were compared.
    """

    name: str
    passed: bool
    reasons: tuple[str, ...]
    checked: Mapping[str, float]

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        head = f"gates {self.name!r}: {'PASS' if self.passed else 'FAIL'}"
        return head if self.passed else head + "\n  " + "\n  ".join(self.reasons)


def check_gates(
    metrics: Mapping[str, Any], gates: Gates | str, *, missing: str = "fail"
) -> GateResult:
    """Compare ``metrics`` with the thresholds of ``gates`` (a :class:`Gates` or a preset name).

    A metric passes if it is a finite number with ``value ≥ minimum`` and ``value ≤ maximum``.
    NaN or infinite values fail. Metrics that the gates do not mention are ignored.

    Args:
        metrics: ``{name: value}``, e.g. ``LeakageReport.as_dict()`` plus ``{"loss": ...}``.
        gates: The thresholds, or the name of a registered preset.
        missing: ``"fail"`` (a gated metric absent from ``metrics`` fails) or ``"skip"`` (it is
            not checked, as in the follow-up repository).

    Returns:
        A :class:`GateResult` (truthy if passed) with one reason per failure.
    """
    if isinstance(gates, str):
        gates = get_gates(gates)
    if not isinstance(gates, Gates):
        raise TypeError(f"gates must be a Gates or a preset name, got {type(gates).__name__}")
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"metrics must be a mapping of name to number, got {type(metrics).__name__}"
        )
    if missing not in ("fail", "skip"):
        raise ValueError(f"missing must be 'fail' or 'skip', got {missing!r}")
    reasons: list[str] = []
    checked: dict[str, float] = {}
    for key in sorted(set(gates.minimum) | set(gates.maximum)):
        if key not in metrics or metrics[key] is None:
            if missing == "fail":
                reasons.append(f"{key}: missing")
            continue
        raw = metrics[key]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            reasons.append(f"{key}: not a number ({raw!r})")
            continue
        checked[key] = value
        if not math.isfinite(value):
            reasons.append(f"{key} = {value}: not finite")
            continue
        if key.endswith("linacc") and not 0.0 <= value <= 1.0:
            reasons.append(f"{key} = {value:g}: accuracies are fractions in [0, 1] (a percentage?)")
            continue
        lo, hi = gates.minimum.get(key), gates.maximum.get(key)
        if lo is not None and value < lo:
            reasons.append(f"{key} = {value:.4g} < minimum {lo:g}")
        if hi is not None and value > hi:
            reasons.append(f"{key} = {value:.4g} > maximum {hi:g}")
    return GateResult(gates.name, not reasons, tuple(reasons), MappingProxyType(checked))


_PRESETS: dict[str, Gates] = {
    "smoke": Gates(
        name="smoke",
        minimum={"linacc": 0.12, "r2": -0.3},
        description="Minimal: the run trains at all (follow-up repo: 1 epoch, 128 samples).",
    ),
    "quick": Gates(
        name="quick",
        minimum={"linacc": 0.20, "r2": 0.0},
        description="Fast learning signal (follow-up repo: 5 epochs, 5,000 samples).",
    ),
    "baseline-lite": Gates(
        name="baseline-lite",
        minimum={"linacc": 0.30, "r2": 0.1},
        description="Evidence before costlier runs (follow-up repo: 10 epochs, 20,000 samples).",
    ),
}

#: Read-only view of the registered gate sets, by name.
GATE_PRESETS: Mapping[str, Gates] = MappingProxyType(_PRESETS)


def get_gates(name: str) -> Gates:
    """The registered gate set ``name`` (see :data:`GATE_PRESETS`)."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown gate preset {name!r}; registered: {sorted(_PRESETS)}") from None


def register_gates(gates: Gates, *, overwrite: bool = False) -> Gates:
    """Register ``gates`` under ``gates.name`` so that it can be used by name.

    Raises:
        ValueError: If the name is taken and ``overwrite`` is false.
    """
    if not isinstance(gates, Gates):
        raise TypeError(f"gates must be a Gates, got {type(gates).__name__}")
    if gates.name in _PRESETS and not overwrite:
        raise ValueError(
            f"gate preset {gates.name!r} already exists; pass overwrite=True to replace it"
        )
    _PRESETS[gates.name] = gates
    return gates
