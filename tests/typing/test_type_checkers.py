"""Run the type checkers over tests/typing/check_api.py (DESIGN, STYLE section 9).

The checks themselves live in check_api.py; these tests only run ``mypy --strict`` and
pyright on it in a subprocess and fail with the checker's output.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK_FILE = Path("tests", "typing", "check_api.py")

pytestmark = pytest.mark.timeout(180)


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_strict_accepts_the_api_checks(tmp_path: Path) -> None:
    # pyproject's [tool.mypy] adds warn_unused_ignores: each "type: ignore[...]" line in
    # check_api.py must still be an error, or the run fails.
    result = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "mypy_cache"),
            str(CHECK_FILE),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _find_pyright() -> str | None:
    beside_python = Path(sys.executable).with_name("pyright")
    return str(beside_python) if beside_python.exists() else shutil.which("pyright")


@pytest.mark.skipif(_find_pyright() is None, reason="pyright is not installed")
def test_pyright_strict_accepts_the_api_checks() -> None:
    # check_api.py opts into pyright's strict mode itself. pyright honours the
    # "type: ignore" lines; mypy is the one that proves they are still needed.
    pyright = _find_pyright()
    assert pyright is not None
    result = _run([pyright, "--pythonpath", sys.executable, str(CHECK_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr
