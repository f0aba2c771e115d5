"""Sphinx configuration for jepa-blocks (offline: no intersphinx)."""

from __future__ import annotations

import datetime

import jepa_blocks

project = "jepa-blocks"
author = "jepa-blocks developers"
copyright = f"{datetime.date.today().year}, {author}"
release = jepa_blocks.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
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
html_static_path: list[str] = []
