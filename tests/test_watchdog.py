"""The session's hang watchdog (conftest.py) ends a run whose test outlives its timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

HUNG_TEST = '''
import time

import pytest


@pytest.mark.timeout(1)
def test_swallows_its_timeout() -> None:
    while True:  # pytest-timeout interrupts once; this ignores it and hangs on
        try:
            time.sleep(60)
        except BaseException:
            pass


def test_never_reached() -> None:
    pass
'''


@pytest.mark.timeout(60)
def test_a_test_hung_past_its_timeout_ends_the_run_with_tracebacks(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (tmp_path / "test_hung.py").write_text(textwrap.dedent(HUNG_TEST))
    env = {**os.environ, "COROEXECUTOR_HANG_GRACE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         "-p", "no:asyncio", "-p", "no:anyio", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=50,
    )
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "test_swallows_its_timeout is still running 1 s after its timeout" in out
    assert "in test_swallows_its_timeout" in out  # the hung thread's traceback
    assert "test_never_reached" not in out  # the run stopped there


SWALLOWED_CANCEL_TEST = '''
import asyncio

import pytest


@pytest.mark.timeout(3)
async def test_hangs_inside_raises_cancelled() -> None:
    with pytest.raises(asyncio.CancelledError):  # also catches the in-loop watchdog's cancel
        await asyncio.Event().wait()
'''


@pytest.mark.timeout(60)
def test_an_async_test_that_swallows_the_in_loop_watchdog_still_fails(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (tmp_path / "test_swallowed.py").write_text(textwrap.dedent(SWALLOWED_CANCEL_TEST))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         "-p", "no:asyncio", "-p", "no:anyio", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=50,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "test still running after 2.0 s: cancelled" in out
    assert "1 failed" in out
