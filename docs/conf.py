"""Sphinx configuration for the coroexecutor documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``. The build
needs no network (no intersphinx), and every warning is an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # document the checkout, not an installed copy

import coroexecutor  # noqa: E402

project = "coroexecutor"
author = "coroexecutor developers"
copyright = "coroexecutor developers"  # noqa: A001 - the name Sphinx reads
release = coroexecutor.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings use Google-style sections
]
exclude_patterns = ["_build"]
root_doc = "index"
language = "en"

# autodoc: the public names only, in source order, signatures with their annotations.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_class_signature = "separated"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Inline ``code`` without a role reads as Python.
default_role = "code"
highlight_language = "python3"
pygments_style = "sphinx"

html_theme = "furo"
html_title = f"coroexecutor {release}"
# The benchmark page adds docs/_static/throughput.png; do not warn while it is absent.
html_static_path = ["_static"] if (DOCS / "_static").is_dir() else []
