"""The futures ThreadedLoopExecutor hands back: what a finished one keeps alive."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Optional

import pytest

from coroexecutor import ThreadedLoopExecutor
from tests.conftest import new_loop

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure


async def noop() -> None:
    return None


@pytest.fixture
def exe(loop_kind: str) -> Iterator[ThreadedLoopExecutor]:
    executor = ThreadedLoopExecutor(loop_factory=lambda: new_loop(loop_kind))
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def test_finished_futures_keep_little_alive(exe: ThreadedLoopExecutor) -> None:
    # A caller that keeps many finished futures (submit them all, then wait for all)
    # must not keep each job's task, coroutine and context alive, nor a Condition nobody
    # waited on: the garbage collector would traverse all of it again and again.
    n = 2000
    exe.submit(noop).result(timeout=WAIT)
    gc.collect()
    before = len(gc.get_objects())
    futures = [exe.submit(noop) for _ in range(n)]
    # Jobs start in FIFO order and these finish in their first step: once a job submitted
    # after them is done, so are they, and nothing has waited on them.
    exe.submit(noop).result(timeout=WAIT)
    exe.submit(noop).result(timeout=WAIT)  # and the loop has let their tasks go
    assert all(f.done() for f in futures)
    gc.collect()
    per_future = (len(gc.get_objects()) - before) / n
    # The future itself, and before Python 3.11 its __dict__ (3.11 keeps it inline).
    limit = 1.5 if sys.version_info >= (3, 11) else 2.5
    assert per_future < limit, f"{per_future:.1f} objects tracked per finished future"
    assert all(f.result() is None for f in futures)


def test_finished_future_lets_its_task_go(exe: ThreadedLoopExecutor) -> None:
    tasks: list[weakref.ref[asyncio.Task[object]]] = []

    async def job() -> int:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(weakref.ref(task))
        return 1

    future = exe.submit(job)
    assert future.result(timeout=WAIT) == 1
    # The job sets its future's result in its own last step; the task is let go a
    # callback later. Under an eager task factory the next job can run (and finish) in a
    # loop turn queued before that callback, when this thread submits it in between: the
    # second round trip is queued behind the callback.
    exe.submit(noop).result(timeout=WAIT)
    exe.submit(noop).result(timeout=WAIT)
    gc.collect()
    assert tasks and tasks[0]() is None
    assert not future.cancel()  # finished: nothing left to cancel
    assert future.result() == 1


class _Big:
    """A result whose life a test follows (a large one, for all the executor knows)."""


@pytest.mark.parametrize("buffersize", [None, 1])
@pytest.mark.parametrize("kind", ["coroutine", "blocking returning a coroutine"])
@pytest.mark.parametrize("options", [{}, {"job_timeout": 60}], ids=["direct", "job_timeout"])
def test_a_map_result_is_freed_as_soon_as_the_consumer_drops_it(
    loop_kind: str, options: dict[str, Any], kind: str, buffersize: Optional[int]
) -> None:
    # bridge.rst: once yielded, a result is referred to by neither the iterator nor the
    # executor. It stayed alive for the loop turn after the one that woke the consumer
    # (found by a docs-only tester: 99 times in 100 on 3.11, for coroutine jobs): the
    # job's task held it (its wrapper returned it), and so did its future, which the loop
    # holds until that turn frees the job's slot. The job parks the loop thread just
    # before that turn, until the consumer has looked. Only the first input's job parks:
    # the second one's, when its worker returns first, would park the loop before the
    # first result reached its future (this test's own deadlock, seen under the eager
    # task factory on 3.13 when the second job parked too).
    parked, looked = threading.Event(), threading.Event()

    def park() -> None:
        parked.set()
        looked.wait(WAIT)  # bounded, as every wait here (the consumer sets it in a finally)

    async def make_big(n: int) -> _Big:
        if n == 0:
            asyncio.get_running_loop().call_soon(park)  # ahead of the task's done callbacks
        return _Big()

    def returning(n: int) -> Awaitable[_Big]:
        return make_big(n)

    fn: Callable[[int], Awaitable[_Big]] = make_big if kind == "coroutine" else returning
    with ThreadedLoopExecutor(loop_factory=lambda: new_loop(loop_kind), **options) as exe:
        results = exe.map(fn, [0, 1], timeout=WAIT, buffersize=buffersize)
        try:
            value = next(results)
            alive = weakref.ref(value)
            del value
            assert parked.wait(WAIT)
            kept = alive() is not None
        finally:
            looked.set()
        results.close()
    assert not kept, "the executor kept a result the consumer had dropped"


def test_a_submitted_jobs_future_keeps_its_result(exe: ThreadedLoopExecutor) -> None:
    # Unlike map()'s, this future is the caller's: the result lives as long as it does.
    async def make_big() -> _Big:
        return _Big()

    future = exe.submit(make_big)
    alive = weakref.ref(future.result(timeout=WAIT))
    exe.submit(noop).result(timeout=WAIT)  # as in test_finished_future_lets_its_task_go
    exe.submit(noop).result(timeout=WAIT)
    gc.collect()
    assert alive() is not None
    assert future.result() is alive()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 1e100, -1.0])
def test_result_in_the_main_thread_takes_the_timeouts_the_stdlib_takes(timeout: float) -> None:
    # The main thread waits in slices (so no Ctrl-C is lost): a timeout the lock refuses,
    # or nan, waited for the result instead of what the stdlib's wait does (found by a
    # docs-only tester).
    assert threading.current_thread() is threading.main_thread()
    release = threading.Event()

    def outcome(future: concurrent.futures.Future[object]) -> str:
        try:
            future.result(timeout=timeout)
        except Exception as exc:  # the outcome under test
            return type(exc).__name__
        return "result"

    with concurrent.futures.ThreadPoolExecutor() as pool, ThreadedLoopExecutor() as exe:
        theirs = outcome(pool.submit(release.wait, WAIT))
        ours = outcome(exe.submit(release.wait, WAIT))
        release.set()
    assert ours == theirs
    assert theirs in ("TimeoutError", "OverflowError")
