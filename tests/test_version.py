"""The package version: installable by name means sorting above the original's releases."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import coroexecutor

ROOT = Path(__file__).resolve().parents[1]

# The last release of the original project on the package index.
ORIGINAL_LAST_RELEASE = "2022.8.1"


def test_version_is_calendar_versioning_above_the_original_project() -> None:
    version = pytest.importorskip("packaging.version")
    ours = version.Version(coroexecutor.__version__)  # raises InvalidVersion if malformed
    assert str(ours) == coroexecutor.__version__  # already in normal form
    assert ours > version.Version(ORIGINAL_LAST_RELEASE)
    assert not ours.is_prerelease and not ours.is_devrelease
    year, month, _ = ours.release
    assert year >= 2026 and 1 <= month <= 12


def test_hatch_reads_the_same_version() -> None:
    # [tool.hatch.version] path: hatchling's regex source reads the version with its
    # default pattern (hatchling/version/source/regex.py, reproduced here).
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '[tool.hatch.version]\npath = "coroexecutor/__init__.py"' in pyproject
    source = (ROOT / "coroexecutor" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r"""(?im)^(__version__|VERSION) *= *(['"])v?(?P<version>.+?)\2""", source)
    assert found is not None
    assert found["version"] == coroexecutor.__version__
