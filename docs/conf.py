"""Sphinx configuration for the coroexecutor documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``. The build
needs no network (no intersphinx), and every warning is an error.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # document the checkout, not an installed copy

import coroexecutor  # noqa: E402

project = "coroexecutor"
author = "coroexecutor developers"
copyright = "coroexecutor developers"
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
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Inline ``code`` without a role reads as Python.
default_role = "code"
highlight_language = "text"  # plain ``::`` blocks hold the timeline diagrams
pygments_style = "sphinx"

html_theme = "furo"
html_title = f"coroexecutor {release}"
# The benchmark page adds docs/_static/throughput.png; do not warn while it is absent.
html_static_path = ["_static"] if (DOCS / "_static").is_dir() else []


#
# Signature and docstring clean-ups
#

# Sphinx spells ParamSpec parameters and module-level TypeVars verbosely
# ("*args: ~typing.~P", "~coroexecutor._executor.T"); print them as the source does.
_SIGNATURE_FIXES = [
    (re.compile(r"\*args: ~typing\.~P"), "*args: P.args"),
    (re.compile(r"\*\*kwargs: ~typing\.~P"), "**kwargs: P.kwargs"),
    (re.compile(r"~typing\.Callable\[\[~P\], "), "Callable[P, "),
    (re.compile(r"~collections\.abc\.Awaitable\["), "Awaitable["),
    (re.compile(r"~coroexecutor(?:\.\w+)*\._\w+\.([PT])\b"), r"\1"),
    (re.compile(r"Callable\[\[\.\.\.\], "), "Callable[..., "),
]


def _fix_signature(text: str | None) -> str | None:
    if text is None:
        return None
    for pattern, replacement in _SIGNATURE_FIXES:
        text = pattern.sub(replacement, text)
    return text


def _process_signature(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: Any, return_annotation: Any
) -> tuple[str | None, str | None]:
    return _fix_signature(signature), _fix_signature(return_annotation)


def _process_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    # napoleon reads a property docstring's first line as "type: description"; a first
    # line that merely contains a colon ("... (cheap: no job is visited)") would lose
    # its start. Give such lines the type explicitly so the sentence stays whole.
    if what == "property" and lines and ": " in lines[0]:
        annotation = getattr(getattr(obj, "fget", None), "__annotations__", {}).get("return")
        if isinstance(annotation, str) and annotation.isidentifier():
            lines[0] = f"{annotation}: {lines[0]}"


# Overloaded methods (the map()s, the bridge's submit) reach autodoc-process-signature
# with their first overload only. Sphinx 9 formats every signature in one private
# function: wrap it so the overloads get the same clean-up. (Older Sphinx: the event
# above still covers every method that is not overloaded.)
try:
    from sphinx.ext.autodoc._dynamic import _loader as _autodoc_loader
except ImportError:  # pragma: no cover - Sphinx < 9
    _autodoc_loader = None


def _wrap_format_signatures() -> None:
    if _autodoc_loader is None or not hasattr(_autodoc_loader, "_format_signatures"):
        return
    original = _autodoc_loader._format_signatures

    def format_signatures(**kwargs: Any) -> list[tuple[str, str]]:
        return [
            (_fix_signature(args) or "", _fix_signature(retann) or "")
            for args, retann in original(**kwargs)
        ]

    _autodoc_loader._format_signatures = format_signatures


def setup(app: Any) -> None:
    _wrap_format_signatures()
    app.connect("autodoc-process-signature", _process_signature)
    app.connect("autodoc-process-docstring", _process_docstring, priority=400)  # before napoleon
