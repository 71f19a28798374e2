"""The README's console commands: each names things that exist, and the docs build runs."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_CONSOLE = re.compile(r"^\.\. code-block:: console\n\n((?:    .*\n?)+)", re.M)


def readme_commands() -> list[str]:
    text = (ROOT / "README.rst").read_text(encoding="utf-8")
    return [block.strip() for block in _CONSOLE.findall(text)]


def test_readme_says_how_to_install_test_and_build_the_docs() -> None:
    commands = readme_commands()
    assert any(c.endswith("-m coroexecutor") for c in commands)  # the demo
    assert any(c.endswith("-X dev -m pytest") for c in commands)  # the test suite
    docs = [c for c in commands if "-m sphinx" in c]
    assert len(docs) == 1
    assert 'pip install -e ".[docs]"' in docs[0]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r"^docs = \[.*\bsphinx\b", pyproject, re.M)  # the extra it installs


@pytest.mark.timeout(180)
def test_readme_docs_command_builds_the_docs(tmp_path: Path) -> None:
    for module in ("sphinx", "furo"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the docs extra is not installed ({module})")
    (docs,) = [c for c in readme_commands() if "-m sphinx" in c]
    build = shlex.split(docs.split("&&")[-1])
    assert build[0] == ".venv/bin/python" and build[-2:] == ["docs", "docs/_build/html"]
    # This interpreter stands in for the fresh venv; the output goes to a temporary dir.
    argv = [sys.executable, *build[1:-1], str(tmp_path / "html")]
    result = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False
    )
    assert result.returncode == 0, result.stderr  # -W: a warning fails the build
    assert (tmp_path / "html" / "index.html").is_file()
