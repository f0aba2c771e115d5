"""API audit: the public API matches ``tests/api_snapshot.json`` or the changelog says why.

* A **stable** public name (in a module that is not experimental) that disappears, or whose
  signature changes, fails unless ``docs/changelog.rst`` mentions it (``name`` in backticks, or
  a cross-reference to it) in its "Unreleased" section outside the "Added" subsection.
* A name in an **experimental** module (``__experimental__ = True``) may change or disappear
  without a changelog entry, but the snapshot must be regenerated.
* A public name that is not in the snapshot fails: regenerate it.

Regenerate with ``python tools/update_api_snapshot.py`` (see the rules in
``tools/api_surface.py``).
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import api_surface  # noqa: E402

SNAPSHOT = ROOT / "tests" / "api_snapshot.json"
CHANGELOG = ROOT / "docs" / "changelog.rst"
REGENERATE = "run `python tools/update_api_snapshot.py` and commit tests/api_snapshot.json"
EXPECTED_EXPERIMENTAL = {
    "jepa_blocks.local",
    "jepa_blocks.streaming",
}


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))["modules"]


@pytest.fixture(scope="module")
def live() -> dict[str, Any]:
    return api_surface.snapshot()["modules"]


def _sections(text: str) -> list[tuple[str, str, list[str]]]:
    """(title, underline character, body lines) for every reST section title in ``text``."""
    lines = text.splitlines()
    heads = [
        i
        for i in range(len(lines) - 1)
        if lines[i].strip()
        and re.fullmatch(r"([=\-~^\"'`#*+])\1+", lines[i + 1].strip() or "x")
        and len(lines[i + 1].strip()) >= len(lines[i].strip())
    ]
    out = []
    for j, i in enumerate(heads):
        end = heads[j + 1] if j + 1 < len(heads) else len(lines)
        out.append((lines[i].strip(), lines[i + 1].strip()[0], lines[i + 2 : end]))
    return out


def unreleased_notes(text: str) -> str:
    """The text of the changelog's "Unreleased" section without its "Added" subsection."""
    sections = _sections(text)
    start = next((k for k, s in enumerate(sections) if s[0].lower().startswith("unreleased")), None)
    if start is None:
        return ""
    rank = {}  # reST levels: underline characters in order of first appearance
    for _, char, _ in sections:
        rank.setdefault(char, len(rank))
    level = rank[sections[start][1]]
    body = list(sections[start][2])
    for title, char, lines in sections[start + 1 :]:
        if rank[char] <= level:
            break
        if title.lower() != "added":
            body.extend(lines)
    return "\n".join(body)


def mentioned(name: str, notes: str) -> bool:
    """Whether ``notes`` names ``name`` in backticks (``name``, :func:`~mod.name`, ...)."""
    return re.search(rf"`~?(?:[\w.]+\.)?{re.escape(name)}(?:\(\))?`", notes) is not None


def test_changelog_has_unreleased_section() -> None:
    titles = [t.lower() for t, _, _ in _sections(CHANGELOG.read_text(encoding="utf-8"))]
    assert any(t.startswith("unreleased") for t in titles), (
        "docs/changelog.rst needs an 'Unreleased' section (API changes are described there)"
    )


def test_changelog_parsing() -> None:
    text = (
        "Changelog\n=========\n\nUnreleased\n----------\n\nAdded\n~~~~~\n\n- ``added_fn``\n\n"
        "Changed\n~~~~~~~\n\n- :func:`~jepa_blocks.rate.coding_rate`: new keyword.\n"
        "- ``old_fn()`` removed.\n\n0.0.1\n-----\n\n- ``older_fn``\n"
    )
    notes = unreleased_notes(text)
    assert mentioned("coding_rate", notes)
    assert mentioned("old_fn", notes)
    assert not mentioned("added_fn", notes)
    assert not mentioned("older_fn", notes)
    assert not mentioned("rate", notes)


def test_no_public_name_removed_or_changed_without_changelog(
    recorded: dict[str, Any], live: dict[str, Any]
) -> None:
    notes = unreleased_notes(CHANGELOG.read_text(encoding="utf-8"))
    unlogged, experimental = [], []
    for module_name, entry in recorded.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            module = None
        exported = set(getattr(module, "__all__", ())) if module is not None else set()
        for name, recorded_desc in entry["names"].items():
            if name not in exported:
                problem = f"{module_name}.{name}: removed"
            else:
                now = api_surface.describe(getattr(module, name))
                if now == recorded_desc:
                    continue
                problem = f"{module_name}.{name}: {recorded_desc} -> {now}"
            if entry["experimental"]:
                experimental.append(problem)
            elif not mentioned(name, notes):
                unlogged.append(problem)
    assert not unlogged, (
        "Stable public API changed without a changelog entry. Describe each change under "
        "'Unreleased' (Changed/Removed/Deprecated, with the name in double backticks) in "
        f"docs/changelog.rst, then {REGENERATE}:\n  " + "\n  ".join(unlogged)
    )
    assert not experimental, (
        f"Experimental API changed (no changelog entry needed); {REGENERATE}:\n  "
        + "\n  ".join(experimental)
    )


def test_no_public_name_missing_from_snapshot(
    recorded: dict[str, Any], live: dict[str, Any]
) -> None:
    new = [
        f"{module_name}.{name}"
        for module_name, entry in live.items()
        for name in entry["names"]
        if name not in recorded.get(module_name, {}).get("names", {})
    ]
    assert not new, f"New public names not in the API snapshot; {REGENERATE}:\n  " + "\n  ".join(
        new
    )


def test_experimental_flags_recorded(recorded: dict[str, Any], live: dict[str, Any]) -> None:
    flags = {m: e["experimental"] for m, e in live.items()}
    stale = {m for m, e in recorded.items() if m in flags and e["experimental"] != flags[m]}
    assert not stale, f"Experimental flags changed for {sorted(stale)}; {REGENERATE}"
    missing = {m for m in EXPECTED_EXPERIMENTAL if not api_surface.is_experimental(m)}
    assert not missing, f"these modules must set __experimental__ = True: {sorted(missing)}"


@pytest.mark.parametrize("module_name", sorted(EXPECTED_EXPERIMENTAL))
def test_experimental_modules_say_so(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__experimental__ is True
    assert "**Experimental**" in (module.__doc__ or ""), (
        f"{module_name}'s docstring must say it is experimental"
    )


def test_stable_modules_are_not_experimental(live: dict[str, Any]) -> None:
    for name in ("jepa_blocks", "jepa_blocks.rate", "jepa_blocks.blocks", "jepa_blocks.targets"):
        assert live[name]["experimental"] is False
