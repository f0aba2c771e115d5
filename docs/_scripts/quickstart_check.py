"""Run the quickstart against the *installed* jepa-blocks: what a new user types first.

Executes the ``>>>`` examples of ``docs/quickstart.rst`` (with their expected output) and the
Python blocks of ``README.md``. ``nox -s release`` runs it in a fresh virtual environment that
holds only the built wheel and its core dependencies::

    python docs/_scripts/quickstart_check.py --core-only --installed

Exit status 0 when everything ran and matched.
"""

from __future__ import annotations

import argparse
import doctest
import importlib.util
import re
import sys
from pathlib import Path

__all__ = ["OPTIONAL_MODULES", "main", "readme_blocks", "run_quickstart"]

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "docs" / "quickstart.rst"
README = ROOT / "README.md"
#: Import names of the optional dependencies (extras ``vision``, ``examples``, ``docs``).
OPTIONAL_MODULES = ("torchvision", "matplotlib", "sklearn", "mlxtend", "yaml", "tqdm", "sphinx")


def readme_blocks(text: str) -> list[str]:
    """The fenced ```` ```python ```` blocks of a Markdown text."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def run_quickstart() -> int:
    """Run the quickstart doctests and README's Python blocks; return the number of failures."""
    result = doctest.testfile(
        str(QUICKSTART),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    print(f"docs/quickstart.rst: {result.attempted} examples, {result.failed} failed")
    failures = result.failed
    for i, block in enumerate(readme_blocks(README.read_text(encoding="utf-8")), start=1):
        try:
            exec(compile(block, f"README.md block {i}", "exec"), {"__name__": "__readme__"})
        except Exception as exc:  # report every block, then fail
            print(f"README.md block {i}: FAILED: {type(exc).__name__}: {exc}")
            failures += 1
        else:
            print(f"README.md block {i}: ok")
    return failures


def main(argv: list[str] | None = None) -> int:
    """Check the environment as asked, run the quickstart, return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--core-only",
        action="store_true",
        help="fail if an optional dependency is importable (core install: torch, einops, numpy)",
    )
    parser.add_argument(
        "--installed",
        action="store_true",
        help="fail if jepa_blocks is imported from the source tree instead of site-packages",
    )
    args = parser.parse_args(argv)

    import torch

    import jepa_blocks

    location = Path(jepa_blocks.__file__).resolve()
    print(f"jepa_blocks {jepa_blocks.__version__} from {location}; torch {torch.__version__}")
    problems = []
    if args.installed and ROOT / "src" in location.parents:
        problems.append(f"jepa_blocks was imported from the source tree ({location})")
    if args.core_only:
        present = [m for m in OPTIONAL_MODULES if importlib.util.find_spec(m) is not None]
        if present:
            problems.append(f"optional dependencies are installed: {present}")
    for problem in problems:
        print(f"ERROR: {problem}")
    failures = run_quickstart()
    if problems or failures:
        return 1
    print("quickstart OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
