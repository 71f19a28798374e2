"""ThreadedLoopExecutor.map(): an error raised while map() itself submits (an input that
raises, key() raising, a Ctrl-C) cancels the jobs it had submitted before it propagates.

Found by brk35 (F3): every input is submitted in the call without ``buffersize`` (the
first window with it); when the input failed at its fourth item, the three jobs
submitted before ran on with nobody holding their futures, and the error of one of them
was reported nowhere. ``next()`` raising already cancelled the map's jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any, Optional

import pytest

from coroexecutor import ThreadedLoopExecutor
from tests.conftest import new_loop

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure


def _inputs_failing_at(n: int) -> Iterator[int]:
    yield from range(n)
    raise ValueError(f"input {n} unreadable")


class _KeyFailingAt:
    """key=: one key for every input, and ``error`` for input ``n``."""

    def __init__(self, n: int, error: type[BaseException]) -> None:
        self.n, self.error = n, error

    def __call__(self, x: int) -> str:
        if x == self.n:
            raise self.error(f"no key for input {x}")
        return "one"


@pytest.mark.parametrize("buffersize", [None, 8])
@pytest.mark.parametrize(
    ("how", "error"),
    [("input", ValueError), ("key", ValueError), ("key", KeyboardInterrupt)],
)
def test_map_raising_as_it_submits_cancels_the_jobs_it_submitted(
    loop_kind: str,
    how: str,
    error: type[BaseException],
    buffersize: Optional[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    started: list[int] = []  # appended on the loop thread, read once it has ended
    cancelled: list[int] = []
    finished: list[int] = []

    async def job(x: int) -> int:
        started.append(x)
        try:
            await asyncio.sleep(2 * WAIT)  # only a cancel ends it in time
        except asyncio.CancelledError:
            cancelled.append(x)
            raise
        finished.append(x)
        if x == 1:
            raise RuntimeError("job 1 failed: nobody would see it")
        return x

    # With key=, max_per_key=1: input 0 runs, inputs 1 and 2 wait in the key's line.
    options: dict[str, Any] = {"key": _KeyFailingAt(3, error), "max_per_key": 1}
    inputs: Any = range(6)
    if how == "input":
        options, inputs = {}, _inputs_failing_at(3)
    caplog.set_level(logging.DEBUG)
    with ThreadedLoopExecutor(
        max_workers=3, loop_factory=lambda: new_loop(loop_kind), **options
    ) as exe:
        with pytest.raises(error, match="3"):
            exe.map(job, inputs, buffersize=buffersize)
        # It needs a slot (and the key's room) that a job of the map holds: before, they
        # were held for 10 s, by jobs nobody could reach.
        assert exe.submit(str.upper, "next").result(timeout=WAIT) == "NEXT"
    stats = exe.stats
    assert (stats.submitted, stats.cancelled, stats.succeeded, stats.failed) == (4, 3, 1, 0)
    # Each job was cancelled before it began, or as it ran.
    assert finished == []
    assert started == cancelled
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
