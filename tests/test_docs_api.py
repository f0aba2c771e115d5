"""The docs document every public name, and the API reference (``docs/api.rst``) lists them all.

Public modules and names are those of ``tools/api_surface.py`` (the ``__all__`` of
``jepa_blocks`` and of its public sub-packages and modules). A name is *documented* when an
autodoc directive (``autofunction``, ``autoclass``, ``autodata``, ``automodule`` with
``:members:``, ...) in ``docs/**/*.rst`` renders it; it is *listed* when ``docs/api.rst`` names it
in an ``autosummary`` table or an autodoc directive. Objects are compared by identity, so a name
re-exported by several modules needs one entry.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "tools"))

import api_surface  # noqa: E402

_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?:py:)?(?P<name>[\w]+)::\s*(?P<arg>\S*)\s*$")
_OPTION = re.compile(r"^\s+:(?P<key>[\w-]+):\s*(?P<value>.*)$")


@dataclass
class DocIndex:
    """What an .rst file documents (full entries) and lists (autosummary rows)."""

    entries: set[str] = field(default_factory=set)  # qualified names with a full entry
    listed: set[str] = field(default_factory=set)  # qualified names in autosummary tables


def resolve(qualified: str) -> Any:
    """Import ``a.b.c.Name`` (longest importable module prefix, then attributes)."""
    parts = qualified.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(qualified)


def _attribute_docs(module: ModuleType) -> set[str]:
    """Module-level names with a ``#:`` doc comment or a docstring after their assignment."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    body = ast.parse(source).body
    out = set()
    for k, node in enumerate(body):
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        else:
            continue
        comment = node.lineno >= 2 and lines[node.lineno - 2].lstrip().startswith("#:")
        after = k + 1 < len(body) and isinstance(body[k + 1], ast.Expr)
        after = after and isinstance(getattr(body[k + 1], "value", None), ast.Constant)
        if comment or after:
            out.update(targets)
    return out


def _members_with_docs(module_name: str, *, undoc: bool) -> list[str]:
    """The ``__all__`` names that ``automodule`` with ``:members:`` renders.

    Without ``:undoc-members:`` autodoc skips members without documentation: classes and
    functions without a docstring, and data without a ``#:`` comment or a docstring after it.
    """
    module = importlib.import_module(module_name)
    names = list(getattr(module, "__all__", []))
    if undoc:
        return names
    attr_docs = _attribute_docs(module)
    out = []
    for n in names:
        obj = getattr(module, n)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            if inspect.getdoc(obj):
                out.append(n)
        elif n in attr_docs:
            out.append(n)
    return out


def parse_rst(text: str) -> DocIndex:
    """Collect the autodoc and autosummary targets of one reST document."""
    index = DocIndex()
    lines = text.splitlines()
    current = ""
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        i += 1
        if not m:
            continue
        name, arg, indent = m["name"], m["arg"], len(m["indent"])
        options: dict[str, str] = {}
        body: list[str] = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            opt = _OPTION.match(lines[i])
            if opt and not body:
                options[opt["key"]] = opt["value"].strip()
            elif lines[i].strip():
                body.append(lines[i].strip())
            i += 1
        if name in ("currentmodule", "module"):
            current = "" if arg == "None" else arg
        elif name == "automodule":
            current = arg
            if "members" in options:
                members = [s.strip() for s in options["members"].split(",") if s.strip()]
                if not members:
                    members = _members_with_docs(arg, undoc="undoc-members" in options)
                index.entries.update(f"{arg}.{n}" for n in members)
        elif name == "autosummary":
            for row in body:
                target = row.lstrip("~")
                if not target.startswith("jepa_blocks") and current:
                    target = f"{current}.{target}"
                index.listed.add(target)
        elif name.startswith("auto") and arg:
            target = arg if arg.startswith("jepa_blocks") or not current else f"{current}.{arg}"
            index.entries.add(target)
    return index


def _rst_files() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)


@pytest.fixture(scope="module")
def all_docs() -> DocIndex:
    merged = DocIndex()
    for path in _rst_files():
        index = parse_rst(path.read_text(encoding="utf-8"))
        merged.entries |= index.entries
        merged.listed |= index.listed
    return merged


@pytest.fixture(scope="module")
def api_page() -> DocIndex:
    return parse_rst((DOCS / "api.rst").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def public() -> list[tuple[str, str, Any]]:
    out = []
    for module_name in api_surface.public_modules():
        module = importlib.import_module(module_name)
        out.extend(
            (module_name, n, getattr(module, n)) for n in api_surface.public_names(module_name)
        )
    return out


def _ids(names: set[str]) -> set[int]:
    return {id(resolve(n)) for n in names}


def test_parser() -> None:
    text = """
.. currentmodule:: jepa_blocks.rate

.. autosummary::
   :nosignatures:

   coding_rate
   ~jepa_blocks.blocks.MSSA

.. autofunction:: jepa_blocks.linalg.gram
.. automodule:: jepa_blocks.train.schedule
   :members: lr_at
"""
    index = parse_rst(text)
    assert index.listed == {"jepa_blocks.rate.coding_rate", "jepa_blocks.blocks.MSSA"}
    assert index.entries == {"jepa_blocks.linalg.gram", "jepa_blocks.train.schedule.lr_at"}


def test_every_documented_target_imports(all_docs: DocIndex) -> None:
    broken = []
    for name in sorted(all_docs.entries | all_docs.listed):
        try:
            resolve(name)
        except (ImportError, AttributeError):
            broken.append(name)
    assert not broken, f"docs name objects that do not exist: {broken}"


def test_every_public_name_has_a_docs_entry(
    all_docs: DocIndex, public: list[tuple[str, str, Any]]
) -> None:
    documented = _ids(all_docs.entries)
    missing = [f"{m}.{n}" for m, n, obj in public if id(obj) not in documented]
    assert not missing, (
        "public names without an autodoc entry in docs/ (add an autofunction/autoclass/autodata "
        f"line on the page about them, or in docs/api.rst): {missing}"
    )


def test_api_reference_lists_every_public_name(
    api_page: DocIndex, public: list[tuple[str, str, Any]]
) -> None:
    listed = _ids(api_page.listed | api_page.entries)
    missing = [f"{m}.{n}" for m, n, obj in public if id(obj) not in listed]
    assert not missing, f"public names missing from docs/api.rst: {missing}"


def test_api_reference_has_a_section_per_public_module() -> None:
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    missing = [m for m in api_surface.public_modules() if f"``{m}``\n~~~" not in text]
    assert not missing, f"docs/api.rst has no section titled ``module`` for {missing}"


def test_api_reference_rows_link_to_entries(all_docs: DocIndex, api_page: DocIndex) -> None:
    """An autosummary row links to its exact name: it must have a full entry under that name."""
    dangling = sorted(api_page.listed - all_docs.entries)
    assert not dangling, (
        "docs/api.rst lists names that have no autodoc entry under that exact name (write the "
        f"row as ~<documented.name>): {dangling}"
    )


def test_api_reference_marks_experimental_modules() -> None:
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    for module_name in api_surface.public_modules():
        if not api_surface.is_experimental(module_name):
            continue
        heading = f"``{module_name}``\n"
        assert heading in text, f"docs/api.rst needs a section titled ``{module_name}``"
        intro = text.split(heading, 1)[1].split(".. autosummary::", 1)[0]
        assert "**Experimental.**" in intro, (
            f"docs/api.rst must mark {module_name} as **Experimental.** above its table"
        )
