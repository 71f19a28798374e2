"""The reStructuredText of docs/*.rst and README.rst parses without a warning.

CI builds the docs with ``sphinx -W``, but only there: a table whose columns do not line
up, a bad indent or a broken list failed a CI run once, after the whole suite had passed.
Here docutils alone parses every page, with Sphinx's own directives and roles stood in for
by ones that accept anything (what they refer to is Sphinx's to check), so a markup error
fails the suite, naming the page and the line.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from docutils import nodes
from docutils.core import publish_doctree
from docutils.parsers.rst import Directive, directives, roles

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").glob("*.rst")), ROOT / "README.rst"]

# What the pages use of Sphinx (and of its Python domain) beyond docutils.
SPHINX_DIRECTIVES = ("autoclass", "autoexception", "autofunction", "class", "data",
                     "function", "method", "module", "toctree")
SPHINX_ROLES = ("attr", "class", "data", "doc", "exc", "func", "meth", "mod", "obj", "ref")


class _SphinxDirective(Directive):
    """Stands in for a Sphinx directive: any arguments, options and content, no output."""

    optional_arguments = 10
    final_argument_whitespace = True
    has_content = True
    option_spec = None  # every option accepted

    def run(self) -> list[nodes.Node]:
        return []


def _sphinx_role(
    name: str, rawtext: str, text: str, lineno: int, inliner: Any,
    options: Any = None, content: Sequence[str] = (),
) -> tuple[list[nodes.Node], list[nodes.system_message]]:
    return [nodes.literal(rawtext, text)], []


@pytest.fixture(scope="module", autouse=True)
def _sphinx_stand_ins() -> None:
    # docutils keeps these registries per process: registering here is enough for every
    # page (and harmless to other tests, which do not use docutils).
    for name in SPHINX_DIRECTIVES:
        directives.register_directive(name, _SphinxDirective)
    for name in SPHINX_ROLES:
        roles.register_local_role(name, _sphinx_role)


def _problems(text: str, source: str) -> str:
    """What docutils reports at WARNING level or above while parsing ``text``."""
    report = io.StringIO()
    publish_doctree(
        text,
        source_path=source,
        settings_overrides={
            "report_level": 2,  # warnings and worse
            "halt_level": 5,  # never stop: report every problem
            "warning_stream": report,
            "syntax_highlight": "none",  # no Pygments needed
            "file_insertion_enabled": False,
        },
    )
    return report.getvalue()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_parses_without_warnings(page: Path) -> None:
    assert _problems(page.read_text(encoding="utf-8"), str(page)) == ""


def test_a_table_whose_columns_do_not_line_up_is_reported() -> None:
    # The kind of mistake the check is for (the one that failed CI), so that the check
    # cannot pass by parsing nothing.
    broken = "Title\n=====\n\n=====  =====\nA      B\n=====  =====\nlonger text  x\n=====  =====\n"
    assert "Malformed table" in _problems(broken, "broken.rst")


def test_the_stand_ins_do_not_hide_an_unknown_role() -> None:
    assert "Unknown interpreted text role" in _problems("see :nosuchrole:`x`\n", "role.rst")
