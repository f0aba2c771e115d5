"""Every Python example in ``docs/`` is executed by the docs build.

``nox -s docs`` runs Sphinx's doctest builder, which executes ``>>>`` blocks, ``.. doctest::``
and ``.. testcode::`` (with their ``.. testoutput::``). A ``.. code-block:: python`` or a bare
``::`` literal block (which Sphinx highlights as Python) is only displayed, so it could go stale
unnoticed: this test rejects them. Shell, YAML and text blocks are fine
(``.. code-block:: bash``); README's Python blocks are run by ``tests/test_readme.py``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_PYTHON_DIRECTIVE = re.compile(
    r"^\s*\.\. (?:code-block|code|sourcecode|highlight)::\s*(?:python|python3|py|pycon|ipython)\s*$",
    re.IGNORECASE,
)
_DIRECTIVE = re.compile(r"^\s*\.\. [\w:-]+::")


def _rst_files() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)


def unexecuted_python_blocks(text: str) -> list[int]:
    """1-based line numbers of Python blocks that the doctest builder would not run."""
    found = []
    for i, line in enumerate(text.splitlines(), start=1):
        stripped = line.rstrip()
        if _PYTHON_DIRECTIVE.match(stripped):
            found.append(i)
        elif stripped.endswith("::") and not _DIRECTIVE.match(stripped) and stripped.strip():
            found.append(i)  # a literal block: highlighted as Python, never executed
    return found


def test_detector() -> None:
    text = (
        "Intro::\n\n    x = 1\n\n.. code-block:: python\n\n   y = 2\n\n"
        ".. code-block:: bash\n\n   ls\n\n.. testcode::\n\n   z = 3\n\n.. math::\n\n   a\n"
    )
    assert unexecuted_python_blocks(text) == [1, 5]


@pytest.mark.parametrize("path", _rst_files(), ids=lambda p: str(p.relative_to(DOCS)))
def test_no_unexecuted_python_blocks(path: Path) -> None:
    lines = unexecuted_python_blocks(path.read_text(encoding="utf-8"))
    assert not lines, (
        f"{path.relative_to(DOCS.parent)}: Python blocks at lines {lines} are not executed by "
        "the docs build; write them as `.. testcode::` (with `.. testoutput::` and a hidden "
        "`.. testsetup::` if needed) or `>>>` doctests, or mark non-Python blocks with "
        "`.. code-block:: text`"
    )


def test_benchmarks_page_shows_every_result() -> None:
    """Every committed benchmark table (``benchmarks/results/*.md``) is on the benchmarks page."""
    page = (DOCS / "benchmarks.rst").read_text(encoding="utf-8")
    results = sorted((DOCS.parent / "benchmarks" / "results").glob("*.md"))
    try:  # in a git checkout, only committed results (work in progress may be untracked)
        tracked = subprocess.run(
            ["git", "ls-files", "benchmarks/results"],
            cwd=DOCS.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        tracked = None
    if tracked:
        results = [p for p in results if f"benchmarks/results/{p.name}" in tracked]
    missing = [p.name for p in results if f"../benchmarks/results/{p.name}" not in page]
    missing = [m for m in missing if f"../benchmarks/results/{m[:-3]}.rst" not in page]
    assert not missing, f"docs/benchmarks.rst does not include {missing}"
