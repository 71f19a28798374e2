"""ThreadedLoopExecutor under ``retry=``: the deadlock guard of a buffered map's wait for
its jobs to pause, and a stop (shutdown, a map's close, cancel()) that comes while the
policy decides about a failed attempt."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import pytest

from coroexecutor import LoopExecutor, Retry

pytestmark = pytest.mark.timeout(15)

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure


#
# The deadlock guard: a buffered map under retry= waits for a job to pause too
#


async def _child(n: int) -> int:
    await asyncio.sleep(0)
    return n


@pytest.mark.parametrize("where", ["constructor", "map"])
def test_a_buffered_retried_map_refuses_to_wait_on_the_loop_thread(where: str) -> None:
    # next() of a buffered map under retry= waits for its head's result or for one of its
    # jobs to pause: on the loop thread, which its jobs need, that wait would never end,
    # and must be refused as result() is.
    policy = Retry(attempts=2, backoff=0, jitter=False)
    exe = LoopExecutor(max_workers=1, retry=policy if where == "constructor" else None)
    map_retry: dict[str, Any] = {} if where == "constructor" else {"retry": policy}

    async def parent() -> list[int]:
        # The only slot is this job's: the map's jobs wait in the backlog.
        return list(exe.map(_child, [1, 2], buffersize=1, **map_retry))

    outer = exe.submit(parent)
    try:
        error = outer.exception(timeout=WAIT)
    except concurrent.futures.TimeoutError:
        # The loop thread is stuck in next(): cancelling the map's queued jobs wakes it
        # (the head's cancel notifies its waiters), so the test fails rather than hangs.
        exe.shutdown(wait=True, cancel_futures=True)
        raise AssertionError("next() waited on the loop thread instead of refusing") from None
    exe.shutdown(wait=True)
    assert isinstance(error, RuntimeError)
    assert str(error).startswith("result() cannot wait on the event loop thread of ")
    # The map's two jobs (the window's, and the one next() submits), cancelled as it closed.
    assert (exe.stats.cancelled, exe.stats.failed) == (2, 1)
