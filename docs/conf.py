"""Sphinx configuration of exitgym's documentation site.

Build: ``python -m sphinx -W -b html docs docs/_build/html`` (the test suite builds it with
warnings as errors, ``tests/test_docs.py``). Pages are Markdown (MyST); the environment pages and
every results table are generated (``docs/_ext/exitgym_docs.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "exitgym"
author = "exitgym developers"
copyright = "2026, exitgym developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "exitgym_docs",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext", "README.md"]
root_doc = "index"

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = "exitgym"
