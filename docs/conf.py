"""Sphinx configuration for jepa-blocks (offline: no intersphinx)."""

from __future__ import annotations

import datetime
import inspect
from pathlib import Path
from typing import Any

from docutils.parsers.rst import Directive

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
copybutton_only_copy_prompt_lines = True


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


def _markdown_result_to_rst(text: str) -> list[str]:
    """A benchmark result file (Markdown: a title, paragraphs, pipe tables) as reST lines."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(set(c) <= set("-: ") for c in cells):
                    rows.append(cells)
                i += 1
            out += ["", ".. list-table::", "   :header-rows: 1", ""]
            for row in rows:
                out += [f"   * - {row[0] or ' '}"] + [f"     - {c or ' '}" for c in row[1:]]
            out.append("")
            continue
        if line.startswith("#"):
            out += [f"**{line.lstrip('#').strip()}**", ""]
        else:
            out.append(line)
        i += 1
    return out


class ResultTable(Directive):
    """``.. result-table:: ../benchmarks/results/<name>.md``: a benchmark result as real tables."""

    required_arguments = 1

    def run(self) -> list[Any]:
        env = self.state.document.settings.env
        rel, path = env.relfn2path(self.arguments[0])
        env.note_dependency(rel)
        lines = _markdown_result_to_rst(Path(path).read_text(encoding="utf-8"))
        self.state_machine.insert_input(lines, path)
        return []


def setup(app: Any) -> None:
    """Sphinx extension hook: connect the handlers above."""
    app.add_directive("result-table", ResultTable)
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("autodoc-process-docstring", _drop_type_docstrings)
