"""The public API surface of ``jepa_blocks``: which modules are public, what they export, how.

Used by ``tools/update_api_snapshot.py`` (writes ``tests/api_snapshot.json``), by the API audit
``tests/test_api_audit.py`` and by the docs check ``tests/test_docs_api.py``.

Rules:

* A module is **public** when no component of its dotted name starts with ``_`` and it is either
  ``jepa_blocks`` itself, a module or package directly below it (``jepa_blocks.rate``,
  ``jepa_blocks.blocks``, ...), or a deeper module whose ``__all__`` holds a name that its
  package does not re-export (``jepa_blocks.train.loop``, ...). A deeper module whose names are
  all re-exported (``jepa_blocks.blocks.crate``) is an implementation detail of its package.
* Its public names are its ``__all__``.
* A module is **experimental** when it, or a package above it, sets
  ``__experimental__ = True`` (``jepa_blocks.streaming``, ``jepa_blocks.local``).
* The recorded signature of a function is ``str(inspect.signature(f))``; of a class, the signature
  of its constructor (``inspect.signature(cls)``, i.e. ``__init__`` without ``self``); other
  type aliases (``Literal[...]``, ``Callable[...]``) record their ``repr``; other objects
  (constants) record only their type.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType
from typing import Any

__all__ = [
    "PACKAGE",
    "describe",
    "is_experimental",
    "iter_module_names",
    "public_modules",
    "public_names",
    "snapshot",
]

PACKAGE = "jepa_blocks"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def iter_module_names() -> list[str]:
    """Every importable module of the package whose dotted name has no ``_``-prefixed part."""
    root = importlib.import_module(PACKAGE)
    names = [PACKAGE]
    for info in pkgutil.walk_packages(root.__path__, PACKAGE + "."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return sorted(names)


def _all(module: ModuleType) -> list[str]:
    return list(getattr(module, "__all__", []))


def public_modules() -> list[str]:
    """Names of the public modules (see the module docstring for the rule), sorted."""
    out = []
    for name in iter_module_names():
        depth = name.count(".")
        if depth <= 1:
            out.append(name)
            continue
        module = importlib.import_module(name)
        parent = importlib.import_module(name.rsplit(".", 1)[0])
        if set(_all(module)) - set(_all(parent)):
            out.append(name)
    return out


def is_experimental(module_name: str) -> bool:
    """Whether the module or a package above it sets ``__experimental__ = True``."""
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        module = importlib.import_module(".".join(parts[:i]))
        if getattr(module, "__experimental__", False) is True:
            return True
    return False


def public_names(module_name: str) -> list[str]:
    """The module's ``__all__``."""
    return _all(importlib.import_module(module_name))


def _signature(obj: Any) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(?)"
    return _ADDRESS.sub("", sig)


def describe(obj: Any) -> dict[str, str]:
    """How ``obj`` is recorded: its kind and its signature, alias value or type."""
    if inspect.isclass(obj):
        return {"kind": "class", "signature": _signature(obj)}
    if callable(obj) and (inspect.isroutine(obj) or hasattr(obj, "__wrapped__")):
        return {"kind": "function", "signature": _signature(obj)}
    if type(obj).__module__ == "typing":  # a type alias such as Literal["a", "b"]: its value
        return {"kind": "alias", "value": _ADDRESS.sub("", repr(obj))}
    return {"kind": "data", "type": type(obj).__name__}


def snapshot() -> dict[str, Any]:
    """The API snapshot: every public module's names, descriptions and experimental flag."""
    modules: dict[str, Any] = {}
    for name in public_modules():
        module = importlib.import_module(name)
        modules[name] = {
            "experimental": is_experimental(name),
            "names": {n: describe(getattr(module, n)) for n in sorted(_all(module))},
        }
    return {
        "about": (
            "Public API of jepa_blocks, checked by tests/test_api_audit.py. "
            "Regenerate with: python tools/update_api_snapshot.py"
        ),
        "modules": modules,
    }
