"""Release metadata: the fields a package index shows, from ``pyproject.toml`` and a real build.

The fast tests read ``pyproject.toml``; the slow one runs ``python -m build`` and reads the
wheel's ``METADATA`` (``pytest -m slow tests/test_release.py``). ``nox -s release`` goes further:
it installs the wheel alone in a fresh venv and runs the quickstart.
"""

from __future__ import annotations

import email
import email.message
import importlib.util
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CORE_DEPENDENCIES = {"torch", "einops", "numpy"}
EXTRAS = {"vision", "examples", "docs", "dev"}
URL_LABELS = {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
REQUIRED_CLASSIFIERS = {
    "Development Status :: 3 - Alpha",
    "Intended Audience :: Science/Research",
    "Operating System :: OS Independent",
    "Programming Language :: Python :: 3 :: Only",
    "Topic :: Scientific/Engineering :: Artificial Intelligence",
    "Typing :: Typed",
}


def _name(requirement: str) -> str:
    """The normalised project name of a requirement string (``"torch>=2.2"`` → ``"torch"``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _python_versions(classifiers: list[str]) -> list[tuple[int, int]]:
    found = [re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c) for c in classifiers]
    return sorted((3, int(m.group(1))) for m in found if m)


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]


def test_pyproject_license(project: dict[str, Any]) -> None:
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    # PEP 639: a license expression replaces the license classifiers.
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]


def test_pyproject_classifiers(project: dict[str, Any]) -> None:
    classifiers = project["classifiers"]
    assert set(classifiers) >= REQUIRED_CLASSIFIERS
    assert len(classifiers) == len(set(classifiers))
    minimum = tuple(int(x) for x in re.findall(r"\d+", project["requires-python"])[:2])
    versions = _python_versions(classifiers)
    assert versions and versions[0] == minimum, (versions, project["requires-python"])
    assert versions == [(3, v) for v in range(minimum[1], versions[-1][1] + 1)]


def test_pyproject_urls(project: dict[str, Any]) -> None:
    urls = project["urls"]
    assert set(urls) == URL_LABELS
    assert all(u.startswith("https://") for u in urls.values())


def test_pyproject_dependencies_and_extras(project: dict[str, Any]) -> None:
    assert {_name(r) for r in project["dependencies"]} == CORE_DEPENDENCIES
    extras = project["optional-dependencies"]
    assert set(extras) == EXTRAS
    assert "torchvision" in {_name(r) for r in extras["vision"]}
    assert {_name(r) for r in extras["docs"]} >= {"sphinx", "furo"}
    assert {_name(r) for r in extras["dev"]} >= {"pytest", "build", "nox", "ruff", "mypy"}


def test_pyproject_basics(project: dict[str, Any]) -> None:
    assert project["name"] == "jepa-blocks"
    assert project["readme"] == "README.md"
    assert project["dynamic"] == ["version"]
    assert project["description"] and len(project["description"]) < 200


def test_install_page_lists_every_extra(project: dict[str, Any]) -> None:
    text = (ROOT / "docs" / "install.rst").read_text(encoding="utf-8")
    for extra in project["optional-dependencies"]:
        assert f'"jepa-blocks[{extra}]"' in text, f"docs/install.rst does not show [{extra}]"


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(zf.read(name))


@pytest.mark.slow
def test_build_sdist_and_wheel_metadata(tmp_path: Path) -> None:
    if importlib.util.find_spec("build") is None:
        pytest.skip("needs the 'build' package (dev extra)")
    cmd = [sys.executable, "-m", "build", "--outdir", str(tmp_path)]
    if importlib.util.find_spec("hatchling") is not None:
        cmd.append("--no-isolation")  # the backend is here: no download needed
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    wheels = list(tmp_path.glob("jepa_blocks-*.whl"))
    sdists = list(tmp_path.glob("jepa_blocks-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(tmp_path.iterdir())

    meta = _metadata(wheels[0])
    assert meta["Name"] == "jepa-blocks"
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in meta.get_all("License-File", [])
    assert set(meta.get_all("Classifier", [])) >= REQUIRED_CLASSIFIERS
    urls = {u.split(",", 1)[0].strip() for u in meta.get_all("Project-URL", [])}
    assert urls == URL_LABELS
    assert set(meta.get_all("Provides-Extra", [])) == EXTRAS
    requires = meta.get_all("Requires-Dist", [])
    core = {_name(r) for r in requires if "extra ==" not in r}
    assert core == CORE_DEPENDENCIES
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["Description-Content-Type"] == "text/markdown"

    with zipfile.ZipFile(wheels[0]) as zf:
        names = zf.namelist()
    assert "jepa_blocks/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "docs/"))]
    with tarfile.open(sdists[0]) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    for path in ("LICENSE", "README.md", "pyproject.toml", "src/jepa_blocks/__init__.py"):
        assert path in members, path
    assert "tools/api_surface.py" in members  # the API audit test needs it
