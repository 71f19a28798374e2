"""ThreadedLoopExecutor: cancel() of a blocking job whose call returned an awaitable (the
``lambda: fetch(url)`` form). Once the call has returned, the awaitable the loop awaits
is the rest of the job, and cancel() cancels it as it cancels a coroutine job: returns
True, the future ends cancelled, ``stats`` counts it so, its slot comes back. While the
call itself runs in its thread, cancel() returns False, as for any blocking call.

Found by a docs-only tester: cancel() returned False for the awaitable's whole run, and
a plain ``with`` exit then waited for ever for an awaitable that sleeps."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import inspect
import os
import sys
import threading
from collections.abc import Coroutine
from types import FrameType
from typing import Any, Optional

import pytest

from coroexecutor import Retry, ThreadedLoopExecutor
from tests.conftest import new_loop

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure

# The options that route a blocking job differently: straight to a worker thread (its
# awaitable then awaited in a task of its own, see _tails), or through the core
# (job_timeout, max_per_second: awaited in the core's task of the job), with retry= and
# key= on the direct path. key() gives the job with an argument a key of its own.
OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "job_timeout": {"job_timeout": 60},
    "max_per_second": {"max_per_second": 1000},
    "retry": {"retry": Retry(attempts=3, backoff=0, max_backoff=0, jitter=False)},
    "key": {"key": lambda *args: len(args), "max_per_key": 1},
}


def _executor(loop_kind: str, option: str, max_workers: Optional[int]) -> ThreadedLoopExecutor:
    return ThreadedLoopExecutor(
        max_workers=max_workers, loop_factory=lambda: new_loop(loop_kind), **OPTIONS[option]
    )


@pytest.mark.parametrize("option", OPTIONS)
def test_cancel_stops_the_awaitable_a_blocking_call_returned(loop_kind: str, option: str) -> None:
    started, cleaned_up = threading.Event(), threading.Event()

    async def watch() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    with _executor(loop_kind, option, max_workers=1) as exe:
        future = exe.submit(lambda: watch())
        assert started.wait(WAIT)  # the call has returned; its awaitable runs on the loop
        assert future.running()
        assert future.cancel()
        assert future.cancelled()
        assert exe.stats.cancelled == 1  # at once, as for a coroutine job
        assert cleaned_up.wait(WAIT)  # the awaitable was cancelled on the loop
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=WAIT)
        assert exe.submit(abs, -1).result(timeout=WAIT) == 1  # its one slot came back
    stats = exe.stats
    assert (stats.cancelled, stats.succeeded, stats.failed, stats.running) == (1, 1, 0, 0)


@pytest.mark.parametrize("option", ["plain", "job_timeout"])
def test_cancel_refuses_the_call_still_running_and_its_awaitable_then_runs(
    loop_kind: str, option: str
) -> None:
    calling, may_return = threading.Event(), threading.Event()

    async def double(x: int) -> int:
        return 2 * x

    def call() -> Coroutine[Any, Any, int]:
        calling.set()
        assert may_return.wait(WAIT)
        return double(21)

    with _executor(loop_kind, option, max_workers=1) as exe:
        future = exe.submit(call)
        assert calling.wait(WAIT)
        assert not future.cancel()  # a blocking call a worker runs: not interruptible
        may_return.set()
        assert future.result(timeout=WAIT) == 42  # the job goes on, awaitable and all
    assert not future.cancelled()
    assert (exe.stats.succeeded, exe.stats.cancelled) == (1, 0)


class _HandedOff:
    """A profile function for a worker thread: sets ``event`` once the worker has handed a
    finished call's outcome to the loop (HandOff._release_from_worker for a direct job,
    HandOff._post_done for one the core runs), then removes itself."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, frame: FrameType, what: str, arg: Any) -> None:
        if what == "return" and frame.f_code.co_name in ("_release_from_worker", "_post_done"):
            sys.setprofile(None)
            self.event.set()


@pytest.mark.parametrize("option", OPTIONS)
def test_cancel_after_the_call_returned_before_its_awaitable_began_closes_it(
    loop_kind: str, option: str
) -> None:
    # The window between the worker's return and the loop's first step of the awaitable:
    # the loop thread is held by another job while the worker hands the awaitable over.
    # cancel() then returns True, and the loop closes the awaitable unawaited (no
    # "coroutine ... was never awaited"): it never runs.
    calling, may_return, holding, release_loop = (threading.Event() for _ in range(4))
    handed_off = _HandedOff()
    ran: list[str] = []
    returned: list[Coroutine[Any, Any, None]] = []

    async def tail() -> None:
        ran.append("tail")

    def call() -> Coroutine[Any, Any, None]:
        calling.set()
        assert may_return.wait(WAIT)
        sys.setprofile(handed_off)  # this worker thread only
        returned.append(tail())
        return returned[0]

    async def hold(_: object) -> None:
        holding.set()
        assert release_loop.wait(WAIT)  # holds the loop thread: it drains nothing meanwhile

    with _executor(loop_kind, option, max_workers=2) as exe:
        # The call first: under job_timeout or max_per_second, the loop starts it.
        future = exe.submit(call)
        assert calling.wait(WAIT)
        held = exe.submit(hold, None)
        assert holding.wait(WAIT)
        may_return.set()
        assert handed_off.event.wait(WAIT)
        try:
            assert future.cancel()
        finally:
            release_loop.set()
        assert held.result(timeout=WAIT) is None
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=WAIT)
    assert ran == []
    assert inspect.getcoroutinestate(returned[0]) == inspect.CORO_CLOSED
    stats = exe.stats
    assert (stats.cancelled, stats.succeeded, stats.failed, stats.running) == (1, 1, 0, 0)


def test_cancel_futures_leaves_running_an_awaitable_whose_call_waited_for_a_thread() -> None:
    # cancel_futures cancels the jobs that wait for a worker thread. A job that waited for
    # one, then ran and returned an awaitable, has started: it is not cancelled, though
    # its future is pending again while the loop awaits its awaitable.
    threads = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
    running, release = threading.Semaphore(0), threading.Event()
    awaiting = threading.Event()
    finish: concurrent.futures.Future[int] = concurrent.futures.Future()

    def hold() -> None:
        running.release()
        assert release.wait(WAIT)

    async def tail() -> int:
        awaiting.set()
        return await asyncio.wrap_future(finish)

    exe = ThreadedLoopExecutor()  # max_workers=None: more slots than threads
    try:
        holders = [exe.submit(hold) for _ in range(threads)]
        for _ in range(threads):
            assert running.acquire(timeout=WAIT)
        future = exe.submit(lambda: tail())  # every thread is busy: it waits for one
        release.set()
        assert awaiting.wait(WAIT)  # it got a thread, its call returned: it has started
        exe.shutdown(wait=False, cancel_futures=True)
        assert not future.cancelled()
    finally:
        release.set()
        finish.set_result(7)
        exe.shutdown(wait=True)
    assert future.result(timeout=WAIT) == 7
    assert all(holder.result(timeout=WAIT) is None for holder in holders)


class _CancelOnLoop:
    """A profile function for the loop thread: on entering ``where`` for the job of
    ``future``, cancels that future there (once, then removes itself)."""

    def __init__(self, where: str, future: concurrent.futures.Future[Any], awaitable: Any) -> None:
        self.where, self.future, self.awaitable = where, future, awaitable
        self.cancelled: list[bool] = []

    def __call__(self, frame: FrameType, what: str, arg: Any) -> None:
        if what != "call" or frame.f_code.co_name != self.where:
            return
        ours = frame.f_locals.get("future") is self.future  # _run_coroutine(self, future, ...)
        if ours or frame.f_locals.get("awaitable") is self.awaitable:  # await_returned
            sys.setprofile(None)
            self.cancelled.append(self.future.cancel())


@pytest.mark.parametrize("option", ["plain", "job_timeout"])
@pytest.mark.parametrize("where", ["_run_coroutine", "await_returned"])
def test_cancel_as_the_loop_begins_the_awaitable(loop_kind: str, option: str, where: str) -> None:
    # cancel() on the loop thread, as the loop's wrapper of the awaitable begins (its
    # first step: the state check that closes the awaitable unawaited) or as it calls
    # the awaitable (past that check). Under an eager task factory, a direct job's first
    # step runs inside create_task, before the future knows its task: cancel() finds no
    # task to cancel, and the loop must see the state once it has set the task.
    calling, may_return, cleaned_up = (threading.Event() for _ in range(3))
    began: list[str] = []

    async def tail() -> None:
        began.append("tail")
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    returned = tail()

    def call() -> Coroutine[Any, Any, None]:
        calling.set()
        assert may_return.wait(WAIT)
        return returned

    async def arm(hook: _CancelOnLoop) -> None:
        sys.setprofile(hook)  # the loop thread's

    with _executor(loop_kind, option, max_workers=2) as exe:
        future = exe.submit(call)
        assert calling.wait(WAIT)
        hook = _CancelOnLoop(where, future, returned)
        exe.submit(arm, hook).result(timeout=WAIT)
        may_return.set()
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=WAIT)
        assert hook.cancelled == [True]
        if where == "await_returned":
            assert cleaned_up.wait(WAIT)  # it began, and was cancelled
    assert began == ([] if where == "_run_coroutine" else ["tail"])
    assert inspect.getcoroutinestate(returned) == inspect.CORO_CLOSED
    stats = exe.stats
    assert (stats.cancelled, stats.succeeded, stats.failed, stats.running) == (1, 1, 0, 0)


@pytest.mark.parametrize("trigger_kind", ["coroutine", "blocking"])
def test_cancel_from_a_done_callback_on_the_loop_or_a_worker_thread(
    loop_kind: str, trigger_kind: str
) -> None:
    # A done-callback of another job's future runs on the loop thread (a coroutine job's)
    # or on a worker thread (a direct blocking job's), and may cancel the job whose
    # awaitable runs.
    started, cleaned_up = threading.Event(), threading.Event()
    go: concurrent.futures.Future[int] = concurrent.futures.Future()
    cancelled: list[tuple[bool, threading.Thread]] = []

    async def watch() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    async def coroutine_trigger() -> int:
        return await asyncio.wrap_future(go)

    def blocking_trigger() -> int:
        return go.result(timeout=WAIT)

    def cancel(_: object) -> None:
        cancelled.append((future.cancel(), threading.current_thread()))

    trigger = coroutine_trigger if trigger_kind == "coroutine" else blocking_trigger
    with _executor(loop_kind, "plain", max_workers=3) as exe:
        future = exe.submit(lambda: watch())
        assert started.wait(WAIT)
        other = exe.submit(trigger)
        other.add_done_callback(cancel)  # before it can finish: run by the job's thread
        go.set_result(1)
        assert other.result(timeout=WAIT) == 1
        assert cleaned_up.wait(WAIT)
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=WAIT)
    [(returned, thread)] = cancelled
    assert returned
    assert thread is not threading.current_thread()
    assert (exe.stats.cancelled, exe.stats.succeeded) == (1, 1)


@pytest.mark.parametrize("how", ["close", "drop"])
@pytest.mark.parametrize("option", OPTIONS)
def test_a_map_left_while_its_call_runs_cancels_the_awaitable_the_call_returns(
    loop_kind: str, option: str, how: str
) -> None:
    """Regression (brk21 finding 2): a map's iterator closed or dropped while its job's
    blocking call runs cannot cancel the call (cancel() returns False), but the map's
    cancel is remembered: the awaitable the call then returns is cancelled, as an
    exception leaving ``with`` or a grace period's end cancels it. It was awaited to its
    end, and the block waited for it."""
    calling, may_return = threading.Event(), threading.Event()
    begun: list[bool] = []

    async def watch() -> str:
        begun.append(True)
        await asyncio.sleep(WAIT)  # parked: a cancelled job never gets past this
        return "finished"

    def call(_: int) -> Coroutine[Any, Any, str]:
        calling.set()
        assert may_return.wait(WAIT)
        return watch()

    with _executor(loop_kind, option, max_workers=1) as exe:
        results = exe.map(call, [0])
        assert calling.wait(WAIT)
        if how == "close":
            results.close()
        else:
            del results
            gc.collect()
        may_return.set()  # the call returns its awaitable after the map was left
    stats = exe.stats
    assert (stats.cancelled, stats.succeeded, stats.failed) == (1, 0, 0), stats
    assert len(begun) <= 1  # closed unawaited (or, eager, cancelled in its first await)
