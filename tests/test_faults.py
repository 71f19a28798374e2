"""Fault injection: what each kind of misbehaving job, initializer, loop factory or
callback does to CoroutineExecutor and ThreadedLoopExecutor.

Every outcome tested here is documented in docs/reliability.rst ("Faults"). The rule of
thumb: a fault fails the one thing it belongs to (a job's future, the block under
fail-fast, the executor for its initializer), is never dropped silently, never hangs,
and leaves no task, thread or file descriptor behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import logging
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from coroexecutor import BrokenLoopExecutor, CoroutineExecutor, ThreadedLoopExecutor
from tests.conftest import LOOP_KINDS, new_loop, uvloop

pytestmark = pytest.mark.timeout(20)

WAIT = 5  # seconds: the bound on every blocking wait in a thread; reaching it fails


class Gate:
    """A one-shot event that threads and coroutines on any loop can wait for, bounded:
    ``set()`` from any thread; ``wait(timeout)`` in a thread; ``await wait_async()``
    on a loop (through ``asyncio.wrap_future``, so no polling and no sleep)."""

    def __init__(self) -> None:
        self._future: concurrent.futures.Future[None] = concurrent.futures.Future()

    def set(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    def is_set(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float) -> bool:
        try:
            self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True

    async def wait_async(self) -> None:
        # shield: a cancelled waiter must not cancel the shared future for everyone else
        await asyncio.shield(asyncio.wrap_future(self._future))


class CustomBaseError(BaseException):
    """A BaseException subclass that is neither KeyboardInterrupt nor SystemExit."""


async def park(started: asyncio.Event | None = None, cancelled: list[str] | None = None) -> None:
    if started is not None:
        started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if cancelled is not None:
            cancelled.append("parked")
        raise


#
# Core: KeyboardInterrupt and SystemExit leave the event loop
#


@pytest.mark.parametrize("suppress", [False, True])
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_core_keyboard_interrupt_in_a_job_leaves_asyncio_run_and_stops_every_job(
    exc_type: type[BaseException], suppress: bool
) -> None:
    """asyncio re-raises KeyboardInterrupt/SystemExit from a task out of the loop itself
    (Task.__step), whatever our policy says. asyncio.run() then cancels the task running
    the block, so the block cancels and awaits every other job: asyncio.run() raises the
    job's exception, nothing hangs and nothing is left running.

    Under fail-fast the block re-raises that first error while asyncio.run() is cleaning
    up, exactly as asyncio.TaskGroup does, so asyncio logs "Task exception was never
    retrieved" for the main task once it is collected (checked here, in this test)."""
    error = exc_type("from the job")
    cancelled: list[str] = []
    tasks: list[asyncio.Future[Any]] = []
    block: list[BaseException] = []
    reports: list[dict[str, Any]] = []

    async def raiser(started: asyncio.Event) -> None:
        await started.wait()
        raise error

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reports.append(ctx))
        started = asyncio.Event()
        try:
            async with CoroutineExecutor(max_workers=4, suppress_task_errors=suppress) as exe:
                tasks.append(await exe.submit(park, started, cancelled))
                tasks.append(await exe.submit(raiser, started))
                tasks.append(exe.submit_nowait(park, None, cancelled))  # 3 of 4 slots
                await asyncio.Event().wait()
        except BaseException as exc:
            block.append(exc)
            raise

    with pytest.raises(exc_type) as info:
        asyncio.run(main(), debug=True)
    assert info.value is error
    del info
    assert cancelled == ["parked"]  # the parked job that had started was cancelled
    assert all(task.done() for task in tasks)
    assert tasks[0].cancelled()
    assert tasks[1].exception() is error
    assert tasks[2].cancelled()  # cancelled before its first step, and awaited
    # The block itself ended: under fail-fast it raises the job's exception (the first
    # error); with suppress_task_errors it raises the cancellation asyncio.run() sent it.
    assert len(block) == 1
    if suppress:
        assert isinstance(block[0], asyncio.CancelledError)
    else:
        assert block[0] is error
    # The error's traceback runs through asyncio.run()'s frames, whose locals hold the
    # main task: drop it, so the main task is collected (and reports) now.
    block.clear()
    tasks.clear()
    error.__traceback__ = error.__context__ = None
    gc.collect()
    messages = [(ctx["message"], ctx.get("exception")) for ctx in reports]
    if suppress:
        assert messages == []
    else:
        assert messages == [("Task exception was never retrieved", error)]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is 3.12+")
@pytest.mark.parametrize("how", ["submit", "submit_nowait", "queued"])
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_core_eager_job_raising_keyboard_interrupt_before_its_first_await(
    exc_type: type[BaseException], how: str
) -> None:
    """With an eager task factory the job's first step runs inside create_task, which
    re-raises KeyboardInterrupt/SystemExit: the executor gave the job's slot back twice
    and the block waited for ever (an outer timeout did not help)."""
    error = exc_type("from the job")
    cancelled: list[str] = []
    queued: list[asyncio.Future[Any]] = []
    release = asyncio.Event()

    async def raiser() -> None:
        raise error

    async def ends() -> None:
        await release.wait()

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        async with asyncio.timeout(WAIT):
            async with CoroutineExecutor(max_workers=2) as exe:
                await exe.submit(park, None, cancelled)
                if how == "submit":
                    await exe.submit(raiser)
                elif how == "submit_nowait":
                    exe.submit_nowait(raiser)
                else:  # started as the job before it ends, in that job's last step
                    await exe.submit(ends)
                    queued.append(exe.submit_nowait(raiser))
                    release.set()
                    await asyncio.Event().wait()

    with pytest.raises(exc_type) as info:
        asyncio.run(main())
    assert info.value is error
    assert cancelled == ["parked"]
    if queued:
        assert queued[0].exception() is error
    del info
    queued.clear()
    error.__traceback__ = error.__context__ = None


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is 3.12+")
@pytest.mark.parametrize("settles", ["on_job_done", "job_timeout"])
def test_core_eager_job_raising_keyboard_interrupt_that_settles_from_a_callback_is_not_counted(
    settles: str,
) -> None:
    """reliability.rst: such a job, settling from a done callback, was never accepted: it
    is not counted (an in-line job settles itself inside create_task and counts as failed,
    see test_core_policy); its task's exception is logged as never retrieved."""
    error = KeyboardInterrupt("from the job")
    options: dict[str, Any] = (
        {"on_job_done": lambda future: None} if settles == "on_job_done" else {"job_timeout": WAIT}
    )
    exe = CoroutineExecutor(max_workers=2, **options)

    async def raiser() -> None:
        raise error

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        loop.set_exception_handler(lambda loop, context: None)  # the log is not tested here
        async with asyncio.timeout(WAIT), exe:
            await exe.submit(raiser)

    with pytest.raises(KeyboardInterrupt) as info:
        asyncio.run(main())
    assert info.value is error
    stats = exe.stats
    assert (stats.submitted, stats.running, stats.failed) == (0, 0, 0), stats
    del info
    error.__traceback__ = error.__context__ = None
    gc.collect()


_RUNNERS = ["default"]
if sys.version_info >= (3, 12):
    _RUNNERS.append("eager")
if uvloop is not None:
    _RUNNERS.append("uvloop")


def _run_on(
    runner: str, main: Callable[[], Coroutine[Any, Any, None]], reports: list[str]
) -> None:
    async def on_loop() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, ctx: reports.append(ctx["message"]))
        if runner == "eager":
            loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        await main()

    if runner == "uvloop":
        uvloop.run(on_loop())  # as asyncio.run(): cancels what is left, then closes
    else:
        asyncio.run(on_loop())


@pytest.mark.parametrize("runner", _RUNNERS)
@pytest.mark.parametrize("suppress", [False, True], ids=["fail-fast", "suppress"])
@pytest.mark.parametrize("raiser", ["queued fn", "running job"])
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_core_keyboard_interrupt_from_a_job_starts_no_queued_job_after_it(
    exc_type: type[BaseException], raiser: str, suppress: bool, runner: str
) -> None:
    """A queued job whose plain fn raises KeyboardInterrupt/SystemExit as it starts was
    counted nowhere; under an eager task factory or uvloop, jobs queued behind it (or
    behind a running job raising it, with suppress_task_errors) ran before the error left
    the loop (found by docs-only testers). It ends the loop whatever the policy says:
    nothing queued starts after it."""
    error = exc_type("from the job")
    ran: list[int] = []
    seen: list[Any] = []

    def plain() -> None:
        raise error

    async def running(gate: asyncio.Event) -> None:
        await gate.wait()
        raise error

    async def behind(n: int) -> None:
        ran.append(n)

    async def main() -> None:
        gate = asyncio.Event()
        exe = CoroutineExecutor(max_workers=1, suppress_task_errors=suppress)
        seen.append(exe)
        async with exe:
            if raiser == "queued fn":
                await exe.submit(gate.wait)
                seen.append(exe.submit_nowait(plain))  # type: ignore[arg-type]
            else:
                seen.append(await exe.submit(running, gate))
            seen.extend(exe.submit_nowait(behind, n) for n in range(3))
            gate.set()
            await asyncio.Event().wait()

    reports: list[str] = []
    with pytest.raises(exc_type) as info:
        _run_on(runner, main, reports)
    assert info.value is error
    del info
    exe, future, *queued = seen
    assert future.exception() is error
    assert ran == [] and all(f.cancelled() for f in queued)
    stats = exe.stats
    succeeded = 1 if raiser == "queued fn" else 0
    assert (stats.succeeded, stats.failed, stats.cancelled) == (succeeded, 1, 3), stats
    del exe, future, queued, stats
    seen.clear()
    error.__traceback__ = error.__context__ = None
    gc.collect()
    # Under fail-fast the block re-raises it while the loop is cleaned up, as a TaskGroup
    # would: the main task's error is reported as never retrieved (see the first test).
    assert set(reports) <= {"Task exception was never retrieved"}


@pytest.mark.parametrize("suppress", [False, True])
async def test_core_custom_base_exception_follows_the_policy(suppress: bool) -> None:
    """Any other BaseException subclass is an ordinary job error for asyncio, and so for
    the policy: fail-fast raises it unchanged; suppress_task_errors keeps it in the task."""
    error = CustomBaseError("custom")
    cancelled: list[str] = []
    started = asyncio.Event()

    async def raiser() -> None:
        await started.wait()
        raise error

    if suppress:
        started.set()
        async with CoroutineExecutor(max_workers=2, suppress_task_errors=True) as exe:
            bad = await exe.submit(raiser)
            good = await exe.submit(asyncio.sleep, 0, "fine")
        assert bad.exception() is error
        assert good.result() == "fine"
        return

    async def block() -> None:
        async with CoroutineExecutor(max_workers=2) as exe:
            await exe.submit(park, started, cancelled)
            await exe.submit(raiser)

    with pytest.raises(CustomBaseError) as info:
        await block()
    assert info.value is error
    assert cancelled == ["parked"]


@pytest.mark.parametrize("suppress", [False, True])
async def test_core_queued_fn_raising_a_custom_base_exception_is_an_ordinary_job_error(
    loop_kind: str, suppress: bool
) -> None:
    """Raised by a queued job's plain fn as it starts: it follows the policy like any job
    error, and is not also re-raised into the loop (which logged "Exception in callback";
    found by a docs-only tester)."""
    error = CustomBaseError("from fn")
    reports: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, ctx: reports.append(ctx["message"]))
    gate = asyncio.Event()

    def plain() -> None:
        raise error

    try:
        with pytest.raises(CustomBaseError) if not suppress else contextlib.nullcontext():
            async with CoroutineExecutor(max_workers=1, suppress_task_errors=suppress) as exe:
                await exe.submit(gate.wait)
                future = exe.submit_nowait(plain)  # type: ignore[arg-type]
                after = exe.submit_nowait(asyncio.sleep, 0, "after")
                gate.set()
                if not suppress:
                    await asyncio.Event().wait()  # fail-fast interrupts the body
        for _ in range(3):
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert future.exception() is error
    assert reports == []
    if suppress:
        assert after.result() == "after"
        assert (exe.stats.succeeded, exe.stats.failed) == (2, 1)
    else:
        assert after.cancelled()


#
# Core: jobs that swallow CancelledError and keep going
#


class Stubborn:
    """A job that catches the CancelledError, keeps running until released, then returns
    a value (or raises ``then_raise``)."""

    def __init__(self, then_raise: BaseException | None = None) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = False
        self.then_raise = then_raise

    async def __call__(self) -> str:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            if sys.version_info >= (3, 11):
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
        await self.release.wait()
        self.finished = True
        if self.then_raise is not None:
            raise self.then_raise
        return "kept going"


async def _assert_still_waiting(task: asyncio.Task[Any], stubborn: Stubborn) -> None:
    await stubborn.cancelled.wait()
    for _ in range(20):  # a bounded number of loop turns, not time
        await asyncio.sleep(0)
    assert not task.done(), "the block returned while a job was still running"
    assert not stubborn.finished


@pytest.mark.parametrize("then_raise", [None, KeyError("late")])
async def test_core_fail_fast_waits_for_a_job_that_swallows_cancellation(
    then_raise: BaseException | None,
) -> None:
    """Defined outcome: the block waits for the stubborn job to end (no job outlives the
    block) and then raises the first error unchanged. What the stubborn job ends with is
    kept in its task: a value, or an error that came after the first one (not raised, as
    the executor was already cancelling, and not logged as "never retrieved")."""
    stubborn = Stubborn(then_raise)
    first = ValueError("first")
    handles: list[asyncio.Task[Any]] = []

    async def failing() -> None:
        await stubborn.started.wait()
        raise first

    async def block() -> None:
        async with CoroutineExecutor(max_workers=2) as exe:
            handles.append(await exe.submit(stubborn))
            await exe.submit(failing)
            await asyncio.Event().wait()

    task = asyncio.create_task(block())
    await _assert_still_waiting(task, stubborn)
    stubborn.release.set()
    with pytest.raises(ValueError, match="first") as info:
        await task
    assert info.value is first
    if then_raise is None:
        assert handles[0].result() == "kept going"
    else:
        assert handles[0].exception() is then_raise


async def test_core_shutdown_nowait_returns_at_once_the_block_waits_for_a_stubborn_job() -> None:
    """shutdown(wait=False) requests the cancellation and returns (issue 16: it used to
    wait for the stubborn job); the block's exit is what waits for it."""
    stubborn = Stubborn()

    async def block() -> None:
        async with CoroutineExecutor(max_workers=2) as exe:
            handle = await exe.submit(stubborn)
            await stubborn.started.wait()
            await exe.shutdown(wait=False)
            assert not handle.done()
        assert handle.result() == "kept going"
        assert exe.stats.succeeded == 1

    task = asyncio.create_task(block())
    await _assert_still_waiting(task, stubborn)
    stubborn.release.set()
    await task


async def test_core_body_error_waits_for_a_stubborn_job_then_propagates() -> None:
    stubborn = Stubborn()
    body_error = RuntimeError("body")

    async def block() -> None:
        async with CoroutineExecutor(max_workers=2) as exe:
            await exe.submit(stubborn)
            await stubborn.started.wait()
            raise body_error

    task = asyncio.create_task(block())
    await _assert_still_waiting(task, stubborn)
    stubborn.release.set()
    with pytest.raises(RuntimeError) as info:
        await task
    assert info.value is body_error


#
# Core: callbacks that raise
#


# A BaseException that does not end the loop is the hook's error like any other: it was
# caught as Exception only, and went to asyncio's "Exception in callback" report without
# the job's future (brk20).
@pytest.mark.parametrize("exc_type", [ZeroDivisionError, CustomBaseError, GeneratorExit])
async def test_core_on_job_done_hook_error_is_reported_and_changes_nothing(
    exc_type: type[BaseException],
) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    reports: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reports.append(context))
    seen: list[asyncio.Future[Any]] = []
    hook_error = exc_type("hook")

    def hook(job: asyncio.Future[Any]) -> None:
        seen.append(job)
        raise hook_error

    try:
        async with CoroutineExecutor(max_workers=2, on_job_done=hook) as exe:
            jobs = [await exe.submit(asyncio.sleep, 0, n) for n in range(5)]
            late = exe.submit_nowait(asyncio.sleep, 0, "late")
        # Not a job error: every job ran, and the block raised nothing.
        assert [job.result() for job in jobs] == list(range(5))
        assert late.result() == "late"
    finally:
        loop.set_exception_handler(previous)
    assert len(seen) == 6
    assert len(reports) == 6
    for context in reports:
        assert context["message"] == "on_job_done hook raised"
        assert context["exception"] is hook_error
        assert context["future"] in seen
    assert exe.stats.succeeded == 6


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_core_on_job_done_hook_keyboard_interrupt_leaves_asyncio_run(
    exc_type: type[BaseException],
) -> None:
    """KeyboardInterrupt and SystemExit from the hook are not reported: they come out of
    the event loop, as from any callback (docs/semantics.rst, on_job_done)."""
    error = exc_type("from the hook")
    reports: list[dict[str, Any]] = []
    seen: list[asyncio.Future[Any]] = []

    def hook(job: asyncio.Future[Any]) -> None:
        seen.append(job)
        raise error

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reports.append(ctx))
        async with CoroutineExecutor(max_workers=2, on_job_done=hook) as exe:
            await exe.submit(asyncio.sleep, 0, "done")
            await asyncio.Event().wait()  # the loop ends with the hook's error

    with pytest.raises(exc_type) as info:
        asyncio.run(main(), debug=True)
    assert info.value is error
    assert [job.result() for job in seen] == ["done"]
    assert [ctx for ctx in reports if ctx.get("exception") is error] == []


async def test_core_user_done_callback_error_is_reported_by_asyncio_not_the_executor() -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    reports: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reports.append(context))

    def bad_callback(_: asyncio.Future[Any]) -> None:
        raise LookupError("callback")

    try:
        async with CoroutineExecutor(max_workers=1) as exe:
            first = await exe.submit(asyncio.sleep, 0, 1)
            first.add_done_callback(bad_callback)
            queued = exe.submit_nowait(asyncio.sleep, 0, 2)  # waits for first's slot
            queued.add_done_callback(bad_callback)
            second = await exe.submit(asyncio.sleep, 0, 3)
    finally:
        loop.set_exception_handler(previous)
    assert (first.result(), queued.result(), second.result()) == (1, 2, 3)
    assert len(reports) == 2
    assert all(isinstance(context["exception"], LookupError) for context in reports)


#
# Bridge: BaseException in jobs
#


@pytest.fixture
def bridge() -> Iterator[ThreadedLoopExecutor]:
    exe = ThreadedLoopExecutor(max_workers=4)
    yield exe
    exe.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, CustomBaseError])
@pytest.mark.parametrize("kind", ["coroutine", "blocking"])
def test_bridge_base_exception_fails_only_its_own_future(
    bridge: ThreadedLoopExecutor, exc_type: type[BaseException], kind: str
) -> None:
    error = exc_type("from the job")
    parked_started = threading.Event()
    release = Gate()

    async def parked_coroutine() -> str:
        parked_started.set()
        await release.wait_async()
        return "coroutine survived"

    def parked_blocking() -> str:
        assert release.wait(WAIT)
        return "thread survived"

    async def raise_async() -> None:
        raise error

    def raise_blocking() -> None:
        raise error

    survivor_coroutine = bridge.submit(parked_coroutine)
    survivor_thread = bridge.submit(parked_blocking)
    assert parked_started.wait(WAIT)
    bad = bridge.submit(raise_async if kind == "coroutine" else raise_blocking)
    assert bad.exception(timeout=WAIT) is error
    # The loop thread is alive and accepts and runs more jobs of both kinds.
    assert bridge.submit(asyncio.sleep, 0, "after").result(timeout=WAIT) == "after"
    assert bridge.submit(len, "four").result(timeout=WAIT) == 4
    assert not survivor_coroutine.done()
    release.set()
    assert survivor_coroutine.result(timeout=WAIT) == "coroutine survived"
    assert survivor_thread.result(timeout=WAIT) == "thread survived"
    bridge.shutdown(wait=True)  # the counts are final once every job's end is processed
    stats = bridge.stats
    assert stats.failed == 1
    assert stats.succeeded == 4


#
# Bridge: a job that raises CancelledError; waits the deadlock guard cannot see
#


def test_bridge_coroutine_job_raising_cancelled_error_itself_ends_cancelled(
    bridge: ThreadedLoopExecutor,
) -> None:
    """Defined outcome, as asyncio.run_coroutine_threadsafe's: a task that ends with
    CancelledError is cancelled, whoever raised it, so its future is cancelled() though
    nobody called cancel(); not a failure, and the executor runs on."""

    async def gives_up() -> None:
        raise asyncio.CancelledError

    future = bridge.submit(gives_up)
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(timeout=WAIT)
    assert future.cancelled()
    assert bridge.submit(len, "ok").result(timeout=WAIT) == 2
    bridge.shutdown(wait=True)  # the counts are final once every job's end is processed
    stats = bridge.stats
    assert (stats.cancelled, stats.failed, stats.succeeded) == (1, 0, 1)


def test_bridge_futures_wait_on_the_loop_thread_is_not_guarded(
    bridge: ThreadedLoopExecutor,
) -> None:
    """Documented limit: concurrent.futures.wait() and as_completed() never ask the
    executor, so on the loop thread they block the loop that must run the job: they
    return (or raise) at their timeout with the coroutine job not done."""

    async def child() -> str:
        return "child"

    async def waits_on_the_loop() -> tuple[int, int, str]:
        future = bridge.submit(child)
        done, not_done = concurrent.futures.wait([future], timeout=0.05)
        with pytest.raises(concurrent.futures.TimeoutError):
            for _ in concurrent.futures.as_completed([future], timeout=0.05):
                pass
        return len(done), len(not_done), await asyncio.wrap_future(future)

    assert bridge.submit(waits_on_the_loop).result(timeout=WAIT) == (0, 1, "child")


#
# Bridge: jobs that swallow CancelledError
#


def test_bridge_cancelled_future_of_a_stubborn_job_is_cancelled_and_shutdown_waits() -> None:
    """Defined outcome: cancel() returns True and the future is cancelled at once (the
    stdlib contract for a future), the job keeps running on the loop, and
    shutdown(wait=True) returns only after it has ended; what it returns is dropped."""
    started, saw_cancel, release = threading.Event(), threading.Event(), Gate()
    finished = threading.Event()

    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            saw_cancel.set()
        await release.wait_async()
        finished.set()
        return "kept going"

    exe = ThreadedLoopExecutor(max_workers=2)
    future = exe.submit(stubborn)
    assert started.wait(WAIT)
    assert future.cancel()
    assert future.cancelled()
    assert saw_cancel.wait(WAIT)
    shut = threading.Thread(target=exe.shutdown, kwargs={"wait": True})
    shut.start()
    shut.join(0.05)  # may only miss a bug, never fail a correct run
    assert shut.is_alive()
    assert not finished.is_set()
    release.set()
    shut.join(WAIT)
    assert not shut.is_alive()
    assert finished.is_set()
    assert future.cancelled()


def test_bridge_exceptional_exit_waits_for_a_stubborn_job() -> None:
    """Leaving a with block by an exception cancels running coroutine jobs, then waits:
    a job that ignores the cancellation is waited for, not abandoned."""
    started, release = threading.Event(), Gate()
    finished = threading.Event()

    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # the fault under test: the job swallows the cancellation
        await release.wait_async()
        finished.set()

    errors: list[BaseException] = []

    def leave_by_error() -> None:
        try:
            with ThreadedLoopExecutor(max_workers=2) as exe:
                exe.submit(stubborn)
                assert started.wait(WAIT)
                raise KeyError("leaving")
        except KeyError as exc:
            errors.append(exc)

    leaver = threading.Thread(target=leave_by_error)
    leaver.start()
    leaver.join(0.05)
    assert leaver.is_alive()
    release.set()
    leaver.join(WAIT)
    assert not leaver.is_alive()
    assert finished.is_set()
    assert len(errors) == 1


@pytest.mark.parametrize("how", ["cancel()", "shutdown(timeout=...)", "with left by an error"])
def test_bridge_a_job_answering_its_cancel_with_an_error_ends_cancelled(how: str) -> None:
    """Defined outcome, the concurrent.futures contract (CoroutineExecutor's fail-fast
    raises such an error instead): a running coroutine job is cancelled through its
    future, which is cancelled then; the error the job answers with is dropped, stats
    count the job as cancelled, and shutdown() raises nothing, as ThreadPoolExecutor's
    never does."""
    started, answered = threading.Event(), threading.Event()

    async def flushes_on_cancel() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            answered.set()
            raise ValueError("flush failed while stopping")  # noqa: B904  # as a job would

    exe = ThreadedLoopExecutor(max_workers=2)
    future = exe.submit(flushes_on_cancel)
    assert started.wait(WAIT)
    if how == "cancel()":
        assert future.cancel()
        assert exe.shutdown(wait=True) is None
    elif how == "shutdown(timeout=...)":
        assert exe.shutdown(wait=True, timeout=0.01) is None
    else:
        with pytest.raises(KeyError), exe:
            raise KeyError("leaving")
    assert answered.is_set()
    assert future.cancelled()
    assert (exe.stats.cancelled, exe.stats.failed) == (1, 0)


#
# Bridge: an initializer that fails half-way
#


def test_bridge_async_initializer_failing_after_an_await_breaks_the_executor() -> None:
    entered, proceed = threading.Event(), Gate()
    error = OSError("init failed half-way")
    ran: list[int] = []

    async def initializer() -> None:
        entered.set()
        await proceed.wait_async()
        raise error

    async def job(n: int) -> int:
        ran.append(n)
        return n

    exe = ThreadedLoopExecutor(max_workers=2, initializer=initializer)
    assert entered.wait(WAIT)
    pending = [exe.submit(job, n) for n in range(3)] + [exe.submit(len, "x")]
    proceed.set()
    for future in pending:
        exc = future.exception(timeout=WAIT)
        assert isinstance(exc, BrokenLoopExecutor)
        assert isinstance(exc, concurrent.futures.BrokenExecutor)
        assert exc.__cause__ is error
    with pytest.raises(BrokenLoopExecutor) as info:
        exe.submit(job, 9)
    assert info.value.__cause__ is error
    exe.shutdown(wait=True)  # does not raise, returns, and the thread is gone
    assert ran == []


#
# Bridge: loop_factory faults
#


def test_bridge_loop_factory_raising_leaves_no_thread() -> None:
    before = set(threading.enumerate())
    error = MemoryError("no loop")

    def factory() -> asyncio.AbstractEventLoop:
        raise error

    for _ in range(3):
        with pytest.raises(MemoryError) as info:
            ThreadedLoopExecutor(loop_factory=factory, thread_name_prefix="faulty")
        assert info.value is error
    assert set(threading.enumerate()) <= before


_NON_LOOP_FACTORY_SCRIPT = """
import threading
from coroexecutor import ThreadedLoopExecutor
hooked = []
threading.excepthook = lambda args: hooked.append(repr(args.exc_value))
try:
    exe = ThreadedLoopExecutor(loop_factory=lambda: None)
except Exception as exc:
    print("constructor raised", type(exc).__name__)
else:
    print("constructor returned", exe)
    exe.shutdown(wait=True)
print("excepthook", hooked)
print("threads", threading.active_count())
"""


def test_bridge_loop_factory_returning_a_non_loop_raises_from_the_constructor() -> None:
    # Regression (found here, fixed in 3c02f15): the loop thread died with an
    # AttributeError and the constructor returned a dead executor (fde9ed8) or hung for
    # good (9d41e15). In a subprocess, so a regression cannot hang or litter this run.
    try:
        out = subprocess.run(
            [sys.executable, "-X", "dev", "-c", _NON_LOOP_FACTORY_SCRIPT],
            capture_output=True,
            text=True,
            timeout=4,
            check=True,
            cwd=str(Path(__file__).resolve().parent.parent),
        ).stdout
    except subprocess.TimeoutExpired:
        pytest.fail("ThreadedLoopExecutor(loop_factory=lambda: None) hangs")
    assert "constructor raised" in out, out
    assert "excepthook []" in out, out
    assert "threads 1" in out, out


#
# Bridge: done-callbacks that raise
#


def test_bridge_done_callback_error_is_logged_and_changes_nothing(
    bridge: ThreadedLoopExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    """As concurrent.futures does: an Exception from a done-callback is logged by the
    'concurrent.futures' logger; the future keeps its outcome and the executor runs on."""
    gate = Gate()
    calls: list[str] = []

    async def coroutine_job() -> str:
        await gate.wait_async()
        return "coroutine"

    def blocking_job() -> str:
        assert gate.wait(WAIT)
        return "blocking"

    def bad_callback(future: concurrent.futures.Future[Any]) -> None:
        calls.append(threading.current_thread().name)
        raise LookupError("callback")

    caplog.set_level(logging.ERROR, logger="concurrent.futures")
    futures = [bridge.submit(coroutine_job), bridge.submit(blocking_job)]
    for future in futures:
        future.add_done_callback(bad_callback)
    gate.set()
    assert [f.result(timeout=WAIT) for f in futures] == ["coroutine", "blocking"]
    assert bridge.submit(asyncio.sleep, 0, "still works").result(timeout=WAIT) == "still works"
    bridge.shutdown(wait=True)
    assert len(calls) == 2
    logged = [r for r in caplog.records if "exception calling callback" in r.getMessage()]
    assert len(logged) == 2
    assert all(isinstance(r.exc_info[1], LookupError) for r in logged if r.exc_info)


def test_bridge_done_callback_system_exit_on_the_loop_thread_is_not_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression (found here, fixed in 3c02f15): a SystemExit raised by a done-callback
    on the loop thread vanished without a trace. ThreadPoolExecutor logs a BaseException
    escaping a worker ("Exception in worker", CRITICAL); STYLE §11: a failing callback is
    logged, not dropped. Defined outcome: logged, and the executor keeps working."""
    started, go = threading.Event(), Gate()
    hooked: list[threading.ExceptHookArgs] = []

    async def job() -> str:
        started.set()
        await go.wait_async()
        return "done"

    def callback(_: concurrent.futures.Future[Any]) -> None:
        raise SystemExit(7)

    caplog.set_level(logging.DEBUG)
    previous = threading.excepthook
    threading.excepthook = hooked.append
    try:
        with ThreadedLoopExecutor(max_workers=1) as exe:
            future = exe.submit(job)
            assert started.wait(WAIT)
            future.add_done_callback(callback)  # will run on the loop thread
            go.set()
            assert future.result(timeout=WAIT) == "done"
            assert exe.submit(asyncio.sleep, 0, 1).result(timeout=WAIT) == 1
    finally:
        threading.excepthook = previous
    reported = [r for r in caplog.records if r.exc_info and r.exc_info[0] is SystemExit]
    assert reported or hooked, "SystemExit from the callback was dropped without a trace"


@pytest.mark.parametrize("mode", ["suppress", "fail-fast, the job swallows the cancel", "options"])
def test_core_a_queued_job_settles_before_asyncio_run_closes_the_loop(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before Python 3.11 a task's pending cancels cannot be counted, so a queued job may
    start as asyncio.run() cancels every task (see the test below for 3.11+): it was then
    destroyed pending and its future never settled (found by a docs-only tester on 3.9 and
    3.10). Now the executor cancels it and waits for it as the loop closes its async
    generators; on 3.11+ it never starts."""
    queued: list[asyncio.Future[Any]] = []

    async def job() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # a clean-up that awaits a timer
            if mode.startswith("fail-fast"):
                return  # swallowed: the job ends normally
            raise

    async def main() -> None:
        options: dict[str, Any] = {}
        if mode == "options":
            options = {"on_job_done": lambda task: None, "job_timeout": 60, "max_per_second": 1e3}
        exe = CoroutineExecutor(
            max_workers=2, suppress_task_errors=not mode.startswith("fail-fast"), **options
        )
        await exe.submit(job)
        await exe.submit(job)
        queued.append(exe.submit_nowait(job))
        await asyncio.sleep(0)  # the running jobs are waiting

    caplog.set_level(logging.DEBUG, logger="asyncio")
    asyncio.run(main())
    # Settled: cancelled, or (the job swallows its cancel) ended normally.
    assert queued[0].cancelled() or queued[0].result() is None
    queued.clear()  # it holds the job's task
    gc.collect()
    assert "destroyed" not in caplog.text, caplog.text


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="asyncio.Runner and Task.cancelling() are 3.11+"
)
@pytest.mark.parametrize("mode", ["suppress", "fail-fast, the job swallows the cancel", "options"])
@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_core_no_queued_job_starts_while_asyncio_run_cancels_the_tasks(
    kind: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio.run() ends by cancelling every task and waiting for those: the running
    job's slot came free then, and the executor started the queued job as a new task that
    nobody waited for ("Task was destroyed but it is pending!")."""
    started: list[str] = []
    queued: list[asyncio.Future[Any]] = []

    async def running() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if mode.startswith("fail-fast"):
                return  # swallowed: the job ends normally
            raise

    async def late() -> None:
        started.append("late")

    async def main() -> None:
        options: dict[str, Any] = {}
        if mode == "options":
            options = {"on_job_done": lambda task: None, "job_timeout": 60, "max_per_second": 1e3}
        exe = CoroutineExecutor(
            max_workers=1, suppress_task_errors=not mode.startswith("fail-fast"), **options
        )
        await exe.submit(running)
        queued.append(exe.submit_nowait(late))
        await asyncio.sleep(0)  # the running job is waiting

    caplog.set_level(logging.DEBUG, logger="asyncio")
    with asyncio.Runner(loop_factory=functools.partial(new_loop, kind)) as runner:
        runner.run(main())
    gc.collect()
    assert started == []
    assert queued[0].cancelled()
    assert "destroyed" not in caplog.text, caplog.text
