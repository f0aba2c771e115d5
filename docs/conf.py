"""Sphinx configuration for jepa-blocks (offline: no intersphinx)."""

from __future__ import annotations

import datetime
import inspect
from typing import Any

import jepa_blocks

project = "jepa-blocks"
author = "jepa-blocks developers"
copyright = f"{datetime.date.today().year}, {author}"
release = jepa_blocks.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
]

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": False}
# Type hints name torch/einops types that have no local inventory: keep the build offline.
nitpicky = False

doctest_global_setup = """
import torch
from jepa_blocks import *  # noqa: F403
torch.manual_seed(0)
"""

templates_path: list[str] = []
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"jepa-blocks {release}"
html_static_path = ["_static"]
# MathJax is vendored (docs/_static/mathjax, v3.2.2): maths renders offline, no CDN.
mathjax_path = "mathjax/tex-mml-chtml.js"
# The copy button copies code without prompts ('>>> ', '... ') or outputs.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = False


def _skip_namedtuple_fields(
    app: Any, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool:
    """NamedTuple fields are described by the class docstring's ``Attributes:`` section.

    Documenting the field accessors as members too would describe each field twice (a duplicate
    object warning, an error under ``-W``) when a module is documented with ``:members:``.
    """
    del app, what, name, options
    if type(obj).__name__ == "_tuplegetter":
        return True
    return skip


def _drop_type_docstrings(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Data without a doc comment would show its type's docstring ("Built-in immutable ...")."""
    del app, name, options
    type_doc = inspect.getdoc(type(obj)) or ""
    if what in ("data", "attribute") and type_doc and "\n".join(lines).strip() == type_doc.strip():
        lines[:] = []


def setup(app: Any) -> None:
    """Sphinx extension hook: connect the handlers above."""
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("autodoc-process-docstring", _drop_type_docstrings)
