"""How a job's end is settled: jobs complete in-line, in their own last step.

A job's slot, counters and error-policy decision are settled by the coroutine its task
runs, not by a done callback. These tests pin what that must not change: a task
cancelled before its first step still gives its slot back, the caller's done callbacks
have run once the block is left, a task factory is honoured, and a job's error is never
logged as unretrieved.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import inspect
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Callable

import pytest

from coroexecutor import CoroutineExecutor

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


async def yield_many(times: int = 20) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


async def noop() -> None:
    pass


def recording(ran: list[int]) -> Callable[[int], Coroutine[Any, Any, int]]:
    """A job function that records each job's number as its body runs."""

    async def job(i: int) -> int:
        ran.append(i)
        return i

    return job


#
# Cancelled before the first step
#


async def test_task_cancelled_before_its_first_step_gives_its_slot_back(loop_kind: str) -> None:
    if loop_kind == "eager":
        pytest.skip("an eager task takes its first step inside submit()")
    ran: list[int] = []
    job = recording(ran)
    # suppress_task_errors: under fail-fast a job cancelled from outside is an error.
    async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
        doomed = await exe.submit(job, 0)
        doomed.cancel()  # before the task has taken a single step
        # With the slot lost, this submit would wait forever (the test's timeout).
        second = await exe.submit(job, 1)
        assert await second == 1
    assert doomed.cancelled()
    assert ran == [1]  # the cancelled job's body never ran
    stats = exe.stats
    assert (stats.submitted, stats.succeeded, stats.cancelled, stats.running) == (2, 1, 1, 0)
    gc.collect()  # its coroutine was closed: no "never awaited" warning (warnings are errors)


async def test_task_from_a_task_factory_cancelled_before_its_first_step_gives_its_slot_back(
    loop_kind: str,
) -> None:
    # A factory's task is not a JobTask: its runner is primed before create_task instead.
    if loop_kind == "eager":
        pytest.skip("an eager task takes its first step inside submit()")
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    made: list[asyncio.Future[Any]] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        made.append(task)
        return task

    async def job(i: int) -> int:
        return i

    loop.set_task_factory(factory)
    try:
        async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
            doomed = await exe.submit(job, 0)
            doomed.cancel()
            second = await exe.submit(job, 1)  # waits forever if the slot was lost
            assert await second == 1
    finally:
        loop.set_task_factory(previous)
    assert made == [doomed, second]
    assert doomed.cancelled()
    assert (exe.stats.succeeded, exe.stats.cancelled, exe.stats.running) == (1, 1, 0)
    gc.collect()  # the job's coroutine was closed: no "never awaited" warning


@pytest.mark.parametrize("product", ["None", "a Future", "an error, coroutine closed"])
@pytest.mark.parametrize("hooked", [False, True], ids=["in-line", "hooked"])
async def test_task_factory_making_no_task_fails_the_start_and_gives_the_slot_back(
    product: str, hooked: bool
) -> None:
    # Regression (3.11, 3.12, whose create_task returns what the factory made): a job
    # given a Future never ran and kept its slot, so the block never ended; None gave an
    # AttributeError about ``done``, and with an on_job_done hook lost the slot too. An
    # in-line job whose runner the factory closed before raising lost its slot (taken
    # for one an eager factory had run to its end), on every version.
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    refusing = True
    error = RuntimeError("no task for this job")

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        if not refusing:
            return asyncio.Task(coro, loop=loop, **kwargs)
        if product == "an error, coroutine closed":
            coro.close()
            raise error
        # The coroutine is kept, not closed: the executor closes it (no "never awaited").
        return None if product == "None" else loop.create_future()

    async def job(i: int) -> int:
        return i

    hook: Callable[[asyncio.Future[Any]], None] | None = (lambda task: None) if hooked else None
    loop.set_task_factory(factory)
    try:
        async with CoroutineExecutor(max_workers=1, on_job_done=hook) as exe:
            with pytest.raises((TypeError, AttributeError, RuntimeError)) as info:
                await exe.submit(job, 0)
            refusing = False
            assert await (await exe.submit(job, 1)) == 1  # the slot came back
    finally:
        loop.set_task_factory(previous)
    if product == "an error, coroutine closed":
        assert info.value is error
    elif sys.version_info < (3, 13):  # 3.13's create_task raises first (no ``set_name``)
        assert isinstance(info.value, TypeError)
        assert "task factory must return an asyncio.Task (got " in str(info.value)
    assert (exe.stats.succeeded, exe.stats.running) == (1, 0)
    gc.collect()


class _NamedFuture(asyncio.Future[Any]):
    """A Future with the one Task method Python 3.13's create_task calls on what the task
    factory made: there, it is returned, as every made thing is on 3.11 and 3.12."""

    def set_name(self, name: object) -> None:
        pass


@pytest.mark.parametrize(
    "product", ["None", "an object", "a Future", "a named Future", "an error"]
)
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_task_factory_making_no_task_for_a_maps_reader_fails_the_map(
    product: str, ordered: bool
) -> None:
    # Regression (brk10; 3.11 and 3.13): the task that reads a map's async inputs was
    # made without start_job's check. A Future (on 3.13 one with set_name) was taken for
    # it, so ``async for`` waited for ever; None or an object gave a raw AttributeError
    # ('add_done_callback', 'done'), and "coroutine 'read_inputs' was never awaited".
    # A factory that raised (as 3.13's create_task does for the others) was asked again,
    # as the map closed, and its second error replaced the first.
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    given: list[Any] = []
    error = RuntimeError("no task for this reader")

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        # The coroutine is kept, not closed: the executor closes it (no "never awaited").
        given.append(coro)
        if product == "an error":
            raise error
        if product == "None":
            return None
        if product == "an object":
            return object()
        return loop.create_future() if product == "a Future" else _NamedFuture(loop=loop)

    async def job(i: int) -> int:
        return i

    async def inputs() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    async with CoroutineExecutor(max_workers=2) as exe:
        results = exe.map(job, inputs()) if ordered else exe.map_unordered(job, inputs())
        loop.set_task_factory(factory)
        try:
            with pytest.raises((TypeError, AttributeError, RuntimeError)) as info:
                async with _hang_guard():  # before the fix: a hang, not a failure
                    async for _ in results:
                        pass
        finally:
            loop.set_task_factory(previous)
        # The slots and counts are right: nothing started, the executor still maps.
        assert (exe.stats.submitted, exe.stats.running) == (0, 0)
        assert sorted([r async for r in exe.map_unordered(job, inputs())]) == [0, 1, 2]
    if product == "an error":
        assert info.value is error
    elif product == "a named Future" or sys.version_info < (3, 13):
        # (3.13's create_task raises first for the others: no ``set_name``)
        assert isinstance(info.value, TypeError)
        assert "task factory must return an asyncio.Task (got " in str(info.value)
    assert len(given) == 1 and inspect.getcoroutinestate(given[0]) == inspect.CORO_CLOSED
    gc.collect()  # the reader's coroutine was closed: no "never awaited" warning


def _hang_guard() -> contextlib.AbstractAsyncContextManager[object]:
    """A bound on a wait that used to hang, so the test fails rather than hangs (before
    3.11, which has no asyncio.timeout, pytest-timeout's bound is left)."""
    if sys.version_info >= (3, 11):
        return asyncio.timeout(5)  # type: ignore[attr-defined, no-any-return]  # 3.11+
    return _no_bound()


@contextlib.asynccontextmanager
async def _no_bound() -> AsyncIterator[None]:
    # (contextlib.nullcontext is an async context manager from 3.10 only.)
    yield


async def test_job_cancelled_then_uncancelled_before_its_first_step_is_settled(
    loop_kind: str,
) -> None:
    # Python 3.13 lets uncancel() take back a cancel the task has not acted on yet: the job
    # then runs from its primed runner. Earlier versions cancel it anyway. Either way the
    # job is settled exactly once and the block ends.
    if not hasattr(asyncio.Task, "uncancel"):
        pytest.skip("Task.uncancel() is new in Python 3.11")
    if loop_kind == "eager":
        pytest.skip("an eager task takes its first step inside submit()")
    ran: list[int] = []

    async def job(i: int) -> int:
        await asyncio.sleep(0)
        ran.append(i)
        return i

    async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
        task = await exe.submit(job, 7)
        task.cancel()
        task.uncancel()
        follow = await exe.submit(job, 8)  # needs the first job's slot back
        await asyncio.wait([task, follow])
    assert follow.result() == 8
    stats = exe.stats
    if task.cancelled():
        assert ran == [8]
        assert (stats.succeeded, stats.cancelled) == (1, 1)
    else:
        assert task.result() == 7 and ran == [7, 8]
        assert (stats.succeeded, stats.cancelled) == (2, 0)
    assert stats.running == 0 and stats.submitted == 2
    gc.collect()


# asyncio.Task.cancel(task) called directly skips JobTask.cancel(), so the runner is not
# primed and never runs a line: the executor finds such a job when it waits for idle.


@pytest.mark.parametrize("when", ["ended before the exit", "still pending at the exit"])
async def test_task_cancelled_past_jobtask_cancel_is_settled_when_the_block_ends(
    loop_kind: str, when: str
) -> None:
    if loop_kind == "eager":
        pytest.skip("an eager task takes its first step inside submit()")
    ran: list[int] = []
    job = recording(ran)
    async with CoroutineExecutor(max_workers=2, suppress_task_errors=True) as exe:
        doomed = await exe.submit(job, 0)
        asyncio.Task.cancel(doomed)  # the base method: no priming
        if when == "ended before the exit":
            await asyncio.wait([doomed])
        other = await exe.submit(job, 1)
    assert doomed.cancelled()
    assert other.result() == 1 and ran == [1]
    stats = exe.stats
    assert (stats.submitted, stats.succeeded, stats.cancelled, stats.running) == (2, 1, 1, 0)
    gc.collect()  # the job's coroutine was closed: no "never awaited" warning


async def test_shutdown_settles_a_task_cancelled_past_jobtask_cancel(loop_kind: str) -> None:
    if loop_kind == "eager":
        pytest.skip("an eager task takes its first step inside submit()")

    exe = CoroutineExecutor(max_workers=1, suppress_task_errors=True)
    asyncio.Task.cancel(await exe.submit(noop))
    await exe.shutdown()
    assert (exe.stats.cancelled, exe.stats.running) == (1, 0)
    gc.collect()


async def test_cancelling_the_block_ends_it_when_every_slot_was_lost_that_way(
    loop_kind: str,
) -> None:
    # The lost slot is found only when the executor waits for idle, so a producer waiting
    # for it waits until the block is cancelled; the block must then end.
    if loop_kind == "eager":
        pytest.skip("an eager task takes its first step inside submit()")
    blocked = asyncio.Event()

    async def body() -> None:
        async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
            asyncio.Task.cancel(await exe.submit(noop))
            blocked.set()
            await exe.submit(noop)
        raise AssertionError("the second submit got a slot nobody gave back")  # pragma: no cover

    task = asyncio.ensure_future(body())
    await blocked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_first_step_taken_while_another_runner_is_primed_still_runs_the_job(
    loop_kind: str,
) -> None:
    # The priming flag is one per process: a runner of another loop's thread may take its
    # first step while it is set. It then suspends one extra turn, and carries on.
    if loop_kind == "eager":
        pytest.skip("an eager task takes its first step inside submit()")
    from coroexecutor import _jobs

    async def job(i: int) -> str:
        await asyncio.sleep(0)
        return request_id.get() + str(i)

    async with CoroutineExecutor(max_workers=2) as exe:
        request_id.set("r")
        task = await exe.submit(job, 1)
        _jobs.priming = True
        try:
            await asyncio.sleep(0)  # the job's first step runs in this turn
        finally:
            _jobs.priming = False
        assert not task.done()
        assert await task == "r1"
    assert (exe.stats.succeeded, exe.stats.running) == (1, 0)


@pytest.mark.parametrize("where", ["submit", "map"])
async def test_a_job_task_that_cannot_be_made_gives_back_its_slot_and_closes_the_job(
    loop_kind: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if loop_kind != "default":
        pytest.skip("the directly built JobTask is the default loop's")
    from coroexecutor import _executor, _start

    class Refused(Exception):
        pass

    def no_task(coro: Any, **kwargs: Any) -> Any:
        raise Refused("no task today")

    async def job(i: int) -> int:
        return i

    # (suppress_task_errors: to a map, a job that fails to start is its input's job
    # error, as a queued job's is; the map raises it and the executor goes on)
    async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
        with monkeypatch.context() as patch:
            patch.setattr(_start, "JobTask", no_task)  # the general start path
            patch.setattr(_executor, "JobTask", no_task)  # and submit()'s plain lane
            with pytest.raises(Refused):
                if where == "submit":
                    await exe.submit(job, 0)
                else:
                    [r async for r in exe.map(job, [0])]
        assert await (await exe.submit(job, 1)) == 1  # the slot came back
    failed = 1 if where == "map" else 0
    assert (exe.stats.succeeded, exe.stats.running, exe.stats.failed) == (1, 0, failed)
    gc.collect()  # the job's coroutine was closed: no "never awaited" warning


async def test_fail_fast_cancels_jobs_that_have_not_started_yet(loop_kind: str) -> None:
    if loop_kind == "eager":
        pytest.skip("an eager job fails inside submit(): later submits are refused instead")
    ran: list[int] = []
    error = ValueError("job 0 failed")

    async def fails() -> None:
        raise error

    async def job(i: int) -> None:
        ran.append(i)

    with pytest.raises(ValueError) as info:
        async with CoroutineExecutor(max_workers=10) as exe:
            first = await exe.submit(fails)
            later = [await exe.submit(job, i) for i in range(1, 6)]
    assert info.value is error
    assert first.exception() is error
    # The failing job ran first and cancelled the others before their first step.
    assert all(task.cancelled() for task in later)
    assert ran == []
    assert (exe.stats.failed, exe.stats.cancelled, exe.stats.running) == (1, 5, 0)
    gc.collect()


async def test_map_left_before_its_jobs_start_gives_every_slot_back(loop_kind: str) -> None:
    ran: list[int] = []

    async def job(i: int) -> int:
        ran.append(i)
        return i

    async with CoroutineExecutor(max_workers=4) as exe:
        results = exe.map(job, range(100))
        async for first in results:
            # Jobs 1 to 4 were started after job 0 finished and have not run yet.
            assert first == 0
            break
        await results.aclose()
        assert exe.stats.running == 0
        # Every slot is free again: four jobs that wait for each other all fit.
        barrier = asyncio.Event()
        arrived = 0

        async def meet() -> None:
            nonlocal arrived
            arrived += 1
            if arrived == 4:
                barrier.set()
            await barrier.wait()

        await asyncio.gather(*[await exe.submit(meet) for _ in range(4)])
    assert ran[0] == 0
    gc.collect()


#
# What has happened once the block is left
#


async def test_callers_done_callbacks_have_run_when_the_block_exits(loop_kind: str) -> None:
    seen: list[int] = []

    async def job(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async with CoroutineExecutor(max_workers=3) as exe:
        for i in range(10):
            task = await exe.submit(job, i)
            task.add_done_callback(lambda t: seen.append(t.result()))
    assert sorted(seen) == list(range(10))


async def test_last_job_ending_as_the_body_ends_has_its_callbacks_run(loop_kind: str) -> None:
    seen: list[str] = []
    gate = asyncio.Event()

    async def job() -> str:
        await gate.wait()
        return "done"

    async with CoroutineExecutor(max_workers=1) as exe:
        task = await exe.submit(job)
        task.add_done_callback(lambda t: seen.append(t.result()))
        gate.set()
        # The job's last step runs before the body resumes; the body then leaves the
        # block at once, while the task's done callbacks are still only scheduled.
        await asyncio.sleep(0)
    assert seen == ["done"]


async def test_callbacks_of_cancelled_jobs_have_run_when_fail_fast_raises(
    loop_kind: str,
) -> None:
    seen: list[str] = []
    error = LookupError("job failed")
    started = asyncio.Event()

    async def parked() -> None:
        started.set()
        await asyncio.Event().wait()

    async def fails() -> None:
        await started.wait()
        await asyncio.sleep(0)  # fail in a later step, under an eager task factory too
        raise error

    with pytest.raises(LookupError) as info:
        async with CoroutineExecutor(max_workers=5) as exe:
            for _ in range(3):
                (await exe.submit(parked)).add_done_callback(
                    lambda t: seen.append("cancelled" if t.cancelled() else "other")
                )
            (await exe.submit(fails)).add_done_callback(
                lambda t: seen.append("failed" if t.exception() is error else "other")
            )
            queued = [exe.submit_nowait(parked) for _ in range(3)]  # 1 runs, 2 wait
            await asyncio.Event().wait()
    assert info.value is error
    assert sorted(seen) == ["cancelled"] * 3 + ["failed"]
    assert all(future.cancelled() for future in queued)


async def test_queued_futures_are_settled_when_the_block_exits(loop_kind: str) -> None:
    async def echo(value: str) -> str:
        await asyncio.sleep(0)
        return value

    async with CoroutineExecutor(max_workers=2) as exe:
        futures = [exe.submit_nowait(echo, str(n)) for n in range(8)]
    assert [f.result() for f in futures] == [str(n) for n in range(8)]


async def test_shutdown_returns_after_the_jobs_callbacks_ran(loop_kind: str) -> None:
    seen: list[int] = []

    async def job(i: int) -> int:
        await asyncio.sleep(0)
        return i

    exe = CoroutineExecutor(max_workers=2)
    for i in range(5):
        (await exe.submit(job, i)).add_done_callback(lambda t: seen.append(t.result()))
    await exe.shutdown()
    assert sorted(seen) == list(range(5))


@pytest.mark.parametrize("ending", ["exit", "shutdown", "fail-fast"])
async def test_done_callbacks_of_queued_futures_have_run_when_the_block_exits(
    loop_kind: str, ending: str
) -> None:
    # A queued job's future takes its outcome from a done callback of the job's task,
    # a turn after the task ends: the wait for idle must wait for that future's own
    # callbacks too (found by a docs-only tester).
    calls: list[str] = []
    gate = asyncio.Event()
    error = LookupError("job failed")

    async def hold() -> None:
        await gate.wait()

    async def last() -> str:
        await asyncio.sleep(0)
        if ending == "fail-fast":
            raise error
        return "done"

    exe = CoroutineExecutor(max_workers=1)
    with pytest.raises(LookupError) if ending == "fail-fast" else contextlib.nullcontext():
        async with exe:
            exe.submit_nowait(hold)
            future = exe.submit_nowait(last)  # queued
            future.add_done_callback(lambda f: calls.append("called"))
            gate.set()
            if ending == "shutdown":
                await exe.shutdown()
                assert calls == ["called"]
    assert future.done()
    assert calls == ["called"]


#
# Errors
#


async def test_absorbed_job_errors_are_never_logged_as_unretrieved(loop_kind: str) -> None:
    reports: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reports.append(ctx))

    async def fails(i: int) -> None:
        await asyncio.sleep(0)
        raise KeyError(i)

    async with CoroutineExecutor(max_workers=4, suppress_task_errors=True) as exe:
        for i in range(8):
            await exe.submit(fails, i)  # handles dropped at once
    await yield_many()
    gc.collect()
    await yield_many()
    assert reports == []
    assert exe.stats.failed == 8


#
# A job's outcome stands when its own end stops the executor
#
# A job that fails, or whose end starts a queued job that fails to start, aborts in its
# own last step, before its task is done. A task that fail-fast cancels and that awaits
# this job (the body, another job; directly, through its queued future, or a gather)
# must not pass the cancel on to it: its outcome would become a cancellation.


async def _await_as(how: str, awaitable: asyncio.Future[Any]) -> object:
    if how == "gather":
        return (await asyncio.gather(awaitable))[0]
    return await awaitable


@pytest.mark.parametrize("how", ["await", "gather", "from another job"])
async def test_a_failed_queued_jobs_future_keeps_its_error_when_its_awaiter_is_cancelled(
    loop_kind: str, how: str
) -> None:
    gate, go, awaiting_it = asyncio.Event(), asyncio.Event(), asyncio.Event()
    error = ValueError("job failed")

    async def hold() -> None:
        await gate.wait()

    async def boom() -> None:
        await go.wait()
        raise error

    async def awaiting(future: asyncio.Future[Any]) -> None:
        awaiting_it.set()
        await future

    with pytest.raises(ValueError) as info:
        async with CoroutineExecutor(max_workers=2) as exe:
            exe.submit_nowait(hold)
            exe.submit_nowait(hold)  # both slots taken: the next job queues
            future = exe.submit_nowait(boom)
            gate.set()
            if how == "from another job":
                await exe.submit(awaiting, future)  # the second slot, once free
                await awaiting_it.wait()
                go.set()
                await asyncio.Event().wait()  # fail-fast interrupts the body
            else:
                go.set()
                await _await_as(how, future)
    assert info.value is error
    assert not future.cancelled()
    assert future.exception() is error
    assert exe.stats.failed == 1


@pytest.mark.parametrize("handle", ["task", "queued future"])
@pytest.mark.parametrize("how", ["await", "gather"])
async def test_a_jobs_result_stands_when_the_queued_job_its_end_starts_fails_to_start(
    loop_kind: str, handle: str, how: str
) -> None:
    gate = asyncio.Event()

    async def hold() -> None:
        await gate.wait()

    async def echo(value: str) -> str:
        await gate.wait()
        return value

    with pytest.raises(TypeError, match="awaitable"):
        async with CoroutineExecutor(max_workers=1) as exe:
            if handle == "queued future":
                exe.submit_nowait(hold)
            future = exe.submit_nowait(echo, "kept")
            exe.submit_nowait(len, "abc")  # queued; returns no awaitable when it starts
            gate.set()
            await _await_as(how, future)
    assert not future.cancelled()
    assert future.result() == "kept"
    assert (exe.stats.succeeded, exe.stats.failed) == (1 + (handle == "queued future"), 1)


#
# Task creation: a plain loop, and task factories
#


def test_jobs_run_as_tasks_on_a_loop_without_debug_mode() -> None:
    # The suite runs in debug mode; this checks the same contract with it off.
    async def job(i: int) -> tuple[int, str, bool]:
        await asyncio.sleep(0)
        return i, request_id.get(), asyncio.current_task() is mine[i]

    mine: dict[int, asyncio.Future[Any]] = {}

    async def main() -> list[Any]:
        async with CoroutineExecutor(max_workers=2) as exe:
            for i in range(4):
                request_id.set(f"r{i}")
                mine[i] = await exe.submit(job, i)
            assert all(isinstance(task, asyncio.Task) for task in mine.values())
            results = [await task for task in mine.values()]
            results += [r async for r in exe.map(job, range(2))]
        return results

    results = asyncio.run(main(), debug=False)
    assert results[:4] == [(0, "r0", True), (1, "r1", True), (2, "r2", True), (3, "r3", True)]
    assert [r[0] for r in results[4:]] == [0, 1]


async def test_task_factory_set_while_the_executor_runs_is_used(loop_kind: str) -> None:
    loop = asyncio.get_running_loop()
    made: list[asyncio.Future[Any]] = []
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        task = (
            previous(loop, coro, **kwargs)
            if previous is not None
            else asyncio.Task(coro, loop=loop, **kwargs)
        )
        made.append(task)
        return task

    async def job(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async with CoroutineExecutor(max_workers=2) as exe:
        before = await exe.submit(job, 0)
        loop.set_task_factory(factory)
        try:
            after = await exe.submit(job, 1)
            mapped = [r async for r in exe.map(job, range(3))]
        finally:
            loop.set_task_factory(previous)
    assert before not in made
    assert after in made
    assert await after == 1 and mapped == [0, 1, 2]
    assert len(made) == 4


#
# Waking a map consumer
#


@pytest.mark.parametrize("fails", [False, True])
async def test_map_consumer_resumes_the_turn_after_its_head_job_ends(
    loop_kind: str, fails: bool
) -> None:
    # The executor wakes a consumer waiting for the job it must yield next as it settles
    # that job, in the job's own last step: not from a done callback a turn later.
    turn = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal turn
        while not stop.is_set():
            await asyncio.sleep(0)
            turn += 1

    ended_at: list[int] = []

    async def job(i: int) -> int:
        for _ in range(3):
            await asyncio.sleep(0)
        ended_at.append(turn)
        if fails:
            raise ValueError(i)
        return i

    clock = asyncio.ensure_future(ticker())
    try:
        async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
            await asyncio.sleep(0)  # the ticker is running
            results = exe.map(job, [0], return_exceptions=True)
            value = await results.__anext__()
            got_at = turn
    finally:
        stop.set()
        await clock
    assert isinstance(value, ValueError) if fails else value == 0
    assert got_at - ended_at[0] == 1


#
# The jobs of a map: held by the map, reached by the executor
#


@pytest.mark.parametrize("cause", ["job error", "shutdown(wait=False)", "block cancelled"])
@pytest.mark.parametrize("ordered", [True, False])
async def test_every_abort_cancels_the_jobs_a_map_has_in_flight(
    loop_kind: str, cause: str, ordered: bool
) -> None:
    # A map's jobs are found through the map, not the executor's table of running jobs.
    all_started = asyncio.Event()
    never = asyncio.Event()
    started: list[int] = []
    cancelled: list[int] = []

    async def blocked(i: int) -> int:
        started.append(i)
        if len(started) == 3:
            all_started.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    async def fails() -> None:
        raise LookupError("boom")

    exe = CoroutineExecutor(max_workers=4)

    async def block() -> None:
        async with exe:
            results = (exe.map if ordered else exe.map_unordered)(blocked, range(3))
            async with results:
                async for _ in results:
                    pass

    body = asyncio.ensure_future(block())
    await all_started.wait()
    assert exe.stats.running == 3
    if cause == "job error":
        await exe.submit(fails)
        with pytest.raises(LookupError):
            await body
    elif cause == "shutdown(wait=False)":
        await exe.shutdown(wait=False)
        await asyncio.wait([body])  # not `await body`: a cancel of this test must not pass
        # shutdown() closed the map: its consumer is told so, not handed a CancelledError
        assert isinstance(body.exception(), RuntimeError)
    else:
        body.cancel()
        await asyncio.wait([body])
        assert body.cancelled()
    assert sorted(cancelled) == [0, 1, 2]
    stats = exe.stats
    assert (stats.running, stats.cancelled) == (0, 3)


async def test_stats_count_map_jobs_and_granted_slots_as_running(loop_kind: str) -> None:
    gate = asyncio.Event()

    async def job(i: int) -> int:
        await gate.wait()
        return i

    async with CoroutineExecutor(max_workers=2) as exe:
        results = exe.map(job, range(2))
        head = asyncio.ensure_future(results.__anext__())
        await asyncio.sleep(0)
        assert (exe.stats.running, exe.stats.submitted) == (2, 2)  # the map's own jobs
        producer = asyncio.ensure_future(exe.submit(job, 9))
        await asyncio.sleep(0)  # it waits for a slot
        exe.max_workers = 3  # grants it one; it has not resumed yet
        assert (exe.stats.running, exe.stats.submitted) == (2, 2)
        third = await producer
        assert (exe.stats.running, exe.stats.submitted) == (3, 3)
        gate.set()
        assert await head == 0
        assert await third == 9
        assert [r async for r in results] == [1]
    stats = exe.stats
    assert (stats.running, stats.succeeded, stats.submitted) == (0, 3, 3)


@pytest.mark.parametrize("how", ["submit", "submit_nowait", "queued"])
async def test_a_job_nobody_references_is_not_collected_while_it_waits(
    loop_kind: str, how: str
) -> None:
    """asyncio holds tasks only weakly. A job parked on a future that only it can reach,
    whose handle the caller dropped, is kept alive by the executor alone: without that the
    garbage collector would close its coroutine in the middle of the job."""
    started = asyncio.Event()
    release = asyncio.Event()
    outcome: list[str] = []

    async def parked() -> None:
        started.set()
        try:
            await asyncio.get_running_loop().create_future()  # reachable from this job only
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        except GeneratorExit:
            outcome.append("collected")
            raise

    async def blocker() -> None:
        await release.wait()

    async with CoroutineExecutor(max_workers=1) as exe:
        if how == "submit":
            await exe.submit(parked)
        elif how == "submit_nowait":
            exe.submit_nowait(parked)
        else:
            exe.submit_nowait(blocker)
            exe.submit_nowait(parked)  # queued: started later, by the backlog
            release.set()
        await started.wait()
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)
        assert outcome == []
        assert exe.stats.running == 1
        await exe.shutdown(wait=False)
    assert outcome == ["cancelled"]
    assert exe.stats.cancelled == 1
