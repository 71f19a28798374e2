"""ThreadedLoopExecutor: a shutdown that cancels running coroutine jobs cancels an async
initializer still running too (found by a docs-only tester, brk21 finding F3).

The end of a ``shutdown(timeout=)`` grace period, leaving ``with`` or ``async with`` by an
exception (Ctrl-C included), and a Ctrl-C during the wait at interpreter exit used to
wait for the initializer in full, and the grace period began only once it had returned,
so the jobs queued behind it started after the grace period. Now the grace period counts
from the shutdown, and each of these cancels the initializer, as the core's
``shutdown(wait=False)`` cancels its own; the jobs waiting for it are cancelled, never
started. A sync initializer cannot be interrupted: see the last test. (Ctrl-C at exit:
test_bridge_lifecycle.py, with the other Ctrl-C tests in a child process.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest

from coroexecutor import LoopExecutor
from tests._parked import Parked

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure

pytestmark = pytest.mark.timeout(30)


class Job:
    """A coroutine job that records whether it ever ran."""

    def __init__(self) -> None:
        self.ran = threading.Event()

    async def __call__(self) -> str:
        self.ran.set()
        return "ran"


def test_the_end_of_the_grace_period_cancels_an_async_initializer_and_its_waiting_jobs() -> None:
    init, job = Parked(), Job()
    exe = LoopExecutor(initializer=init)
    futures = [exe.submit(job) for _ in range(3)]  # they wait for the initializer
    assert init.started.wait(WAIT)
    exe.shutdown(wait=False, timeout=0.01)  # the grace period counts from here
    assert init.cancelled.wait(WAIT)  # not after the initializer's WAIT seconds
    exe.shutdown()
    assert all(future.cancelled() for future in futures)
    assert not job.ran.is_set()  # never started after the grace period
    assert (exe.stats.cancelled, exe.stats.succeeded) == (3, 0)


def test_an_async_initializer_done_within_the_grace_period_lets_the_jobs_run() -> None:
    release = threading.Event()

    async def init() -> None:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, WAIT)

    exe = LoopExecutor(initializer=init)
    future = exe.submit(Job())
    exe.shutdown(wait=False, timeout=60)
    release.set()
    assert future.result(timeout=WAIT) == "ran"
    exe.shutdown()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, ValueError])
def test_leaving_with_by_an_exception_cancels_an_async_initializer(
    exc_type: type[BaseException],
) -> None:
    init, job = Parked(), Job()
    futures: list[concurrent.futures.Future[Any]] = []
    with pytest.raises(exc_type), LoopExecutor(initializer=init) as exe:
        futures.append(exe.submit(job))
        assert init.started.wait(WAIT)
        raise exc_type  # as Ctrl-C would, for KeyboardInterrupt
    assert init.cancelled.is_set()  # the exit waited for it to finish cancelling
    assert futures[0].cancelled() and not job.ran.is_set()


async def test_leaving_async_with_by_an_exception_cancels_an_async_initializer(
    loop_kind: str,
) -> None:
    init, job = Parked(), Job()
    loop = asyncio.get_running_loop()
    with pytest.raises(LookupError, match="leave"):
        async with LoopExecutor(initializer=init) as exe:
            future = exe.submit(job)
            assert await loop.run_in_executor(None, init.started.wait, WAIT)
            raise LookupError("leave")
    assert init.cancelled.is_set()
    assert future.cancelled() and not job.ran.is_set()


#
# A sync initializer blocks the loop thread: nothing interrupts it
#


def test_leaving_with_by_an_exception_waits_for_a_sync_initializer_then_no_job_starts() -> None:
    started, submitted, release = threading.Event(), threading.Event(), threading.Event()
    job = Job()
    futures: list[concurrent.futures.Future[Any]] = []

    def init() -> None:
        started.set()
        assert release.wait(WAIT)

    def leave_while_it_runs() -> None:
        with LoopExecutor(initializer=init) as exe:
            futures.append(exe.submit(job))
            submitted.set()
            assert started.wait(WAIT)
            raise KeyboardInterrupt

    leaving = concurrent.futures.ThreadPoolExecutor(1)
    try:
        left = leaving.submit(leave_while_it_runs)
        assert submitted.wait(WAIT)
        concurrent.futures.wait(futures, WAIT)
        assert futures[0].cancelled()  # cancelled as the block is left ...
        assert not left.done()  # ... which waits for the initializer to return
        release.set()
        with pytest.raises(KeyboardInterrupt):
            left.result(timeout=WAIT)
    finally:
        release.set()
        leaving.shutdown()
    assert not job.ran.is_set()
