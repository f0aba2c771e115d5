"""Bad-input tables for the public API, in the spirit of PyTorch's OpInfo error inputs.

Each public module has a ``tests/**/test_bad_inputs*.py`` with a table of :class:`Case` rows:
a call with one bad argument and what must happen, either a clear error (the exception type and
a regex that must match its message, naming the argument and the value or what was expected) or
a handled result (a predicate on the returned value). :func:`run_case` runs one row;
:func:`classify` says what a call does, for the audit counts
(``python tests/bad_inputs.py`` prints them over every table).

Outcomes: ``clear`` (the expected exception, e.g. ``ValueError``/``TypeError``/``NonFiniteError``,
whose message names the argument), ``handled`` (a valid, finite result), ``cryptic`` (any other exception, or a message
that does not name the argument), ``silent-nonfinite`` (NaN/inf returned), ``silent-wrong`` (a
result the row says is wrong).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = ["Case", "classify", "run_case"]


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad call and its expected outcome.

    Attributes:
        id: Short unique id (``"coding_rate-eps-negative"``).
        call: A zero-argument callable making the call (build tensors inside it).
        raises: Expected exception type(s) (``None``: the call must return).
        match: Regex the exception message must match (name the argument!).
        check: For a returned value: a predicate that must hold (e.g. finite, a known value).
    """

    id: str
    call: Callable[[], Any]
    raises: type[BaseException] | tuple[type[BaseException], ...] | None = (ValueError, TypeError)
    match: str = ""
    check: Callable[[Any], bool] | None = None


def _finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all()) if value.is_floating_point() else True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (tuple, list)):
        return all(_finite(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_finite(getattr(value, f.name)) for f in dataclasses.fields(value))
    if hasattr(value, "_asdict"):
        return all(_finite(v) for v in value._asdict().values())
    return True


def run_case(case: Case) -> None:
    """Assert that ``case`` behaves as its row says (raises with a matching message, or returns
    a finite value for which ``check`` holds)."""
    if case.raises is not None:
        try:
            case.call()
        except case.raises as e:
            assert re.search(case.match, str(e)), (
                f"{case.id}: {type(e).__name__} message {str(e)!r} does not match {case.match!r}"
            )
            return
        raise AssertionError(f"{case.id}: no {case.raises} raised")
    value = case.call()
    assert _finite(value), f"{case.id}: non-finite result {value!r}"
    if case.check is not None:
        assert case.check(value), f"{case.id}: check failed on {value!r}"


def classify(case: Case) -> str:
    """``clear``, ``handled``, ``cryptic``, ``silent-nonfinite`` or ``silent-wrong``."""
    try:
        value = case.call()
    except Exception as e:
        expected = case.raises is not None and isinstance(e, case.raises)
        return "clear" if expected and re.search(case.match, str(e)) else "cryptic"
    if not _finite(value):
        return "silent-nonfinite"
    if case.raises is not None or (case.check is not None and not case.check(value)):
        return "silent-wrong"
    return "handled"


def _tables(root: Path) -> Iterable[tuple[str, list[Case]]]:
    sys.path.insert(0, str(root))
    for path in sorted(root.rglob("test_bad_inputs*.py")):
        rel = path.relative_to(root).with_suffix("")
        sys.path.insert(0, str(path.parent))  # tables may import their folder's helpers
        if rel.parts[0] == "examples":
            sys.path.insert(0, str(root.parent / "examples"))
        module = importlib.import_module(".".join(rel.parts))
        yield str(rel), list(module.CASES)


def main() -> int:
    counts: dict[str, int] = {}
    for name, cases in _tables(Path(__file__).resolve().parent):
        for case in cases:
            outcome = classify(case)
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome not in ("clear", "handled"):
                print(f"{name}::{case.id}: {outcome}")
    total = sum(counts.values())
    print(f"tried {total}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
