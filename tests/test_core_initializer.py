"""CoroutineExecutor's initializer: once per executor, before any job starts.

The same meaning as on the bridge and in ``concurrent.futures``: it runs once, when the
executor is first used (entering ``async with`` waits for it), and if it raises the
executor is broken: no job runs and the error is a BrokenCoroutineExecutor chained from
the initializer's exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from coroexecutor import BrokenCoroutineExecutor, CoroutineExecutor, ExecutorTimeoutError

pytestmark = pytest.mark.timeout(15)


async def park() -> None:
    await asyncio.Event().wait()


class Log:
    """What ran, in order: ("init", args) once, then ("job", n) for each job."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Any]] = []

    async def job(self, n: int) -> int:
        self.entries.append(("job", n))
        await asyncio.sleep(0)
        return n

    def jobs(self) -> list[Any]:
        return [value for kind, value in self.entries if kind == "job"]


def make_init(kind: str, log: Log, release: asyncio.Event | None = None) -> Any:
    """A sync or async initializer that logs its arguments (the async one after awaits,
    and after ``release`` is set when given)."""

    def sync_init(*args: Any) -> None:
        log.entries.append(("init", args))

    async def async_init(*args: Any) -> None:
        await asyncio.sleep(0)
        if release is not None:
            await release.wait()
        await asyncio.sleep(0)
        log.entries.append(("init", args))

    return sync_init if kind == "sync" else async_init


def assert_broken(exc: BaseException, cause: BaseException) -> None:
    assert isinstance(exc, BrokenCoroutineExecutor)
    assert isinstance(exc, concurrent.futures.BrokenExecutor)
    assert exc.__cause__ is cause
    assert f"is broken: its initializer raised {cause!r}" in str(exc)


#
# Once, before any job
#


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_initializer_runs_once_before_any_job(loop_kind: str, kind: str) -> None:
    log = Log()
    init = make_init(kind, log)
    async with CoroutineExecutor(max_workers=2, initializer=init, initargs=("x", 7)) as exe:
        assert log.entries == [("init", ("x", 7))]  # entering the block waited for it
        await exe.submit(log.job, 0)
        exe.submit_nowait(log.job, 1)
        async for _ in exe.map(log.job, [2, 3]):
            pass
        async for _ in exe.map_unordered(log.job, [4]):
            pass
    assert log.entries[0] == ("init", ("x", 7))
    assert [kind for kind, _ in log.entries].count("init") == 1
    assert sorted(log.jobs()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("entry", ["submit", "submit_nowait", "map"])
async def test_first_use_without_async_with_runs_it_and_jobs_wait_for_it(
    loop_kind: str, entry: str
) -> None:
    """Used without ``async with``, the first submit, submit_nowait or map starts the
    initializer; every job waits in the backlog until it has returned."""
    log = Log()
    release = asyncio.Event()
    exe = CoroutineExecutor(max_workers=4, initializer=make_init("async", log, release))
    if entry == "submit":
        first: Any = asyncio.ensure_future(exe.submit(log.job, 0))
    elif entry == "submit_nowait":
        first = exe.submit_nowait(log.job, 0)
    else:
        first = asyncio.ensure_future(_collect(exe.map(log.job, [0])))
    await asyncio.sleep(0)
    later = exe.submit_nowait(log.job, 1)  # queued behind the initializer, never started
    for _ in range(5):
        await asyncio.sleep(0)
    assert log.entries == []
    assert not later.done() and not first.done()
    assert exe.stats.running == 0
    assert "starting" in repr(exe)
    release.set()
    await first
    await later
    await exe.shutdown()
    assert log.entries[0] == ("init", ())
    # (A slot goes to the waiting submit first, but it resumes a turn later than a
    # queued job starts: the order of the job bodies is not FIFO.)
    assert sorted(log.jobs()) == [0, 1]


async def _collect(results: Any) -> list[Any]:
    return [value async for value in results]


async def test_shutdown_while_the_initializer_runs_waits_for_it_then_the_queued_jobs() -> None:
    log = Log()
    release = asyncio.Event()
    exe = CoroutineExecutor(initializer=make_init("async", log, release))
    queued = exe.submit_nowait(log.job, 0)
    closing = asyncio.ensure_future(exe.shutdown())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not closing.done()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        exe.submit_nowait(log.job, 1)
    release.set()
    await closing
    assert queued.result() == 0
    assert log.entries == [("init", ()), ("job", 0)]


async def test_jobs_handed_in_while_the_initializer_runs_are_queued_and_cancelled_by_a_stop(
    loop_kind: str,
) -> None:
    # The bridge's shutdown(cancel_futures=True) cancels them (they would have waited for
    # the initializer, as on a ThreadPoolExecutor); here they are queued, not running,
    # though slots are free, and shutdown(wait=False) cancels them with the initializer.
    log = Log()
    release = asyncio.Event()
    exe = CoroutineExecutor(5, initializer=make_init("async", log, release))
    queued = [exe.submit_nowait(log.job, x) for x in range(3)]
    await asyncio.sleep(0)  # the initializer runs, parked on release
    assert (exe.stats.queued, exe.stats.running) == (3, 0)
    await exe.shutdown(wait=False)
    await exe.shutdown()
    assert all(f.cancelled() for f in queued)
    assert log.entries == []  # neither the initializer nor any job got to its end
    assert exe.stats.cancelled == 3


async def test_initializer_may_queue_jobs_but_not_wait_for_one(loop_kind: str) -> None:
    """A job queued by the initializer starts after it; waiting for a slot (or calling
    shutdown()) in it would wait for itself, so that is refused at once."""
    log = Log()
    queued: list[asyncio.Future[int]] = []
    refused: list[str] = []

    async def init() -> None:
        queued.append(exe.submit_nowait(log.job, 0))
        for attempt in (exe.submit(log.job, 1), exe.shutdown()):
            try:
                await attempt
            except RuntimeError as exc:
                refused.append(str(exc))
        try:
            await exe.map(log.job, [2]).__anext__()
        except RuntimeError as exc:
            refused.append(str(exc))
        log.entries.append(("init", ()))

    exe = CoroutineExecutor(max_workers=1, initializer=init)
    async with exe:
        pass
    assert log.entries == [("init", ()), ("job", 0)]
    assert queued[0].result() == 0
    calls = [message.split(" cannot")[0] for message in refused]
    assert calls == ["submit()", "shutdown()", "map()"]
    assert all("no job starts before the initializer returns" in m for m in refused)


@pytest.mark.parametrize("buffersize", [None, 4], ids=["default window", "wide window"])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_keyed_map_in_the_initializer_raises_at_once(
    loop_kind: str, ordered: bool, buffersize: int | None
) -> None:
    # On an executor with key=, a map in the initializer queued its input in its key's
    # line and waited for its result, which could start only after the initializer:
    # it hung (found by a session's fixer; plain maps were refused).
    log = Log()
    refused: list[str] = []

    async def init() -> None:
        mapping = exe.map if ordered else exe.map_unordered
        try:
            await asyncio.wait_for(mapping(log.job, [2], buffersize=buffersize).__anext__(), 5)
        except RuntimeError as exc:
            refused.append(str(exc))
        log.entries.append(("init", ()))

    exe = CoroutineExecutor(max_workers=1, initializer=init, key=lambda n: n % 2, max_per_key=1)
    async with exe:
        pass
    assert log.entries == [("init", ())]
    assert len(refused) == 1 and refused[0].startswith("map() cannot wait in the initializer")


async def test_growing_max_workers_while_the_initializer_runs_starts_nothing(
    loop_kind: str,
) -> None:
    log = Log()
    release = asyncio.Event()
    exe = CoroutineExecutor(max_workers=1, initializer=make_init("async", log, release))
    queued = [exe.submit_nowait(log.job, n) for n in range(3)]
    await asyncio.sleep(0)
    exe.max_workers = 3
    for _ in range(5):
        await asyncio.sleep(0)
    assert log.entries == [] and exe.stats.queued == 3
    release.set()
    assert [await future for future in queued] == [0, 1, 2]
    await exe.shutdown()
    assert log.entries[0] == ("init", ())


#
# A failing initializer breaks the executor
#


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("suppress", [False, True])
async def test_failing_initializer_breaks_the_block_and_no_job_runs(
    loop_kind: str, kind: str, suppress: bool
) -> None:
    error = OSError("init failed")
    body_ran = False

    def sync_init() -> None:
        raise error

    async def async_init() -> None:
        await asyncio.sleep(0)  # half-way: after an await
        raise error

    exe = CoroutineExecutor(
        initializer=sync_init if kind == "sync" else async_init, suppress_task_errors=suppress
    )
    with pytest.raises(BrokenCoroutineExecutor) as info:
        async with exe:
            body_ran = True
    assert not body_ran
    assert_broken(info.value, error)
    # Afterwards every entry point refuses, with the same error (a new one each time).
    refusals: list[BaseException] = []
    for call in (
        lambda: exe.submit_nowait(park),
        lambda: exe.map(park, []),
        lambda: exe.map_unordered(park, []),
    ):
        with pytest.raises(BrokenCoroutineExecutor) as refused:
            call()
        refusals.append(refused.value)
    with pytest.raises(BrokenCoroutineExecutor) as refused:
        await exe.submit(park)
    refusals.append(refused.value)
    for refusal in refusals:
        assert_broken(refusal, error)
    assert len({id(refusal) for refusal in refusals}) == len(refusals)
    await exe.shutdown()  # nothing to wait for, and the block already raised
    assert exe.stats.submitted == 0


@pytest.mark.parametrize("suppress", [False, True])
async def test_failing_initializer_fails_the_jobs_waiting_for_it(
    loop_kind: str, suppress: bool
) -> None:
    """Without ``async with``: the jobs queued or waiting while it ran fail with the broken
    error; under fail-fast, shutdown() raises it too (the first job error), once."""
    error = ValueError("bad config")
    release = asyncio.Event()

    async def init() -> None:
        await release.wait()
        raise error

    seen: list[asyncio.Future[Any]] = []
    exe = CoroutineExecutor(
        max_workers=2, initializer=init, suppress_task_errors=suppress, on_job_done=seen.append
    )
    queued = exe.submit_nowait(park)
    waiting = asyncio.ensure_future(exe.submit(park))
    mapped = asyncio.ensure_future(_collect(exe.map(park, [()])))
    await asyncio.sleep(0)
    release.set()
    for outcome in (queued, waiting, mapped):
        with pytest.raises(BrokenCoroutineExecutor) as info:
            await outcome
        assert_broken(info.value, error)
    assert exe.stats.failed == 1 and exe.stats.running == 0  # the one accepted job
    assert seen == [queued]  # the hook sees the job that never started, as it ends
    if suppress:
        await exe.shutdown()
    else:
        with pytest.raises(BrokenCoroutineExecutor):
            await exe.shutdown()
        await exe.shutdown()  # delivered once
    with pytest.raises(BrokenCoroutineExecutor):
        exe.submit_nowait(park)


async def test_jobs_broken_by_the_initializer_are_not_reported_once_the_block_raised() -> None:
    """A job handed in while the initializer ran fails with the broken error, the first
    job error; the block raises the broken error too: nothing is left "never retrieved"
    (found by a docs-only tester)."""
    reports: list[str] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, ctx: reports.append(ctx["message"]))
    release = asyncio.Event()

    async def init() -> None:
        await release.wait()
        raise OSError("init failed")

    exe = CoroutineExecutor(initializer=init)

    async def hand_in(exe: CoroutineExecutor) -> None:
        future = exe.submit_nowait(park)  # queued while the initializer runs
        release.set()
        with pytest.raises(BrokenCoroutineExecutor):
            await future

    try:
        handing = asyncio.create_task(hand_in(exe))
        with pytest.raises(BrokenCoroutineExecutor):
            async with exe:
                pass
        await handing
        del exe, handing
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert reports == []


async def test_initializer_keyboard_interrupt_propagates_and_breaks_the_executor() -> None:
    def init() -> None:
        raise KeyboardInterrupt

    exe = CoroutineExecutor(initializer=init)

    def run() -> None:
        async def main() -> None:
            async with exe:
                pass

        asyncio.run(main())

    # asyncio lets KeyboardInterrupt out of the loop: run it in a loop of its own.
    with pytest.raises(KeyboardInterrupt):
        await asyncio.get_running_loop().run_in_executor(None, run)  # not a Broken... error


#
# Cancellation and the deadline while it runs
#


async def test_cancelling_the_block_entry_cancels_the_initializer_and_waits_for_it(
    loop_kind: str,
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def init() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # cleanup that awaits: entering waits for it
            cancelled.set()
            raise

    exe = CoroutineExecutor(initializer=init)

    async def enter() -> None:
        async with exe:
            pytest.fail("the body must not run")

    task = asyncio.ensure_future(enter())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        exe.submit_nowait(park)


async def test_outer_timeout_around_the_block_entry_bounds_the_initializer(
    loop_kind: str,
) -> None:
    exe = CoroutineExecutor(initializer=park)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(exe.__aenter__(), 0.05)
    assert "closed" in repr(exe)


async def test_executor_timeout_covers_the_initializer(loop_kind: str) -> None:
    exe = CoroutineExecutor(initializer=park, timeout=0.05)
    with pytest.raises(ExecutorTimeoutError, match=re.escape("timed out after 0.05 seconds")):
        async with exe:
            pytest.fail("the body must not run")


#
# Inside the initializer: every task it starts (issue 17, attack round)
#


async def _in_a_task(call: Callable[[], Awaitable[Any]]) -> Any:
    return await asyncio.ensure_future(call())


async def _in_wait_for(call: Callable[[], Awaitable[Any]]) -> Any:
    return await asyncio.wait_for(call(), 5)  # a task of its own on Python < 3.12


async def _in_gather(call: Callable[[], Awaitable[Any]]) -> Any:
    (result,) = await asyncio.gather(call())  # gather wraps the coroutine in a task
    return result


async def _in_an_inner_executors_job(call: Callable[[], Awaitable[Any]]) -> Any:
    async with CoroutineExecutor() as inner:
        return await (await inner.submit(call))


HELPERS = [_in_a_task, _in_wait_for, _in_gather, _in_an_inner_executors_job]


def _helper_id(helper: Any) -> str:
    return str(helper.__name__.lstrip("_"))


async def _refused_in_the_initializer(
    helper: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]],
    call: Callable[[CoroutineExecutor], Awaitable[Any]],
    block: bool,
) -> tuple[list[str], Log, CoroutineExecutor]:
    """Run ``call(exe)`` through ``helper`` inside the initializer of a fresh executor;
    return what it raised, the log, and the executor (used up)."""
    log = Log()
    refused: list[str] = []

    async def init() -> None:
        try:
            await helper(lambda: call(exe))
        except RuntimeError as exc:
            refused.append(str(exc))
        log.entries.append(("init", ()))

    exe = CoroutineExecutor(max_workers=2, initializer=init)
    if block:

        async def enter() -> None:
            async with exe:
                log.entries.append(("body", None))
                await (await exe.submit(log.job, 1))

        await asyncio.wait_for(enter(), 5)
    else:
        queued = exe.submit_nowait(log.job, 0)
        assert await asyncio.wait_for(queued, 5) == 0
        await asyncio.wait_for(exe.shutdown(), 5)
    return refused, log, exe


async def _shutdown_waiting(exe: CoroutineExecutor) -> None:
    await exe.shutdown()


async def _shutdown_not_waiting(exe: CoroutineExecutor) -> None:
    await exe.shutdown(wait=False)


@pytest.mark.parametrize("helper", HELPERS, ids=_helper_id)
@pytest.mark.parametrize("call", [_shutdown_waiting, _shutdown_not_waiting], ids=_helper_id)
@pytest.mark.parametrize("block", [True, False], ids=["block", "no_block"])
async def test_shutdown_from_a_task_the_initializer_starts_raises_at_once(
    loop_kind: str, helper: Any, call: Any, block: bool
) -> None:
    """Not a hang that no outer timeout ends, nor a cancelled initializer whose body
    runs anyway: the task is inside the initializer, which cannot wait for itself."""
    refused, log, exe = await _refused_in_the_initializer(helper, call, block)
    assert len(refused) == 1 and refused[0].startswith("shutdown() cannot wait in the init")
    assert "no job starts before the initializer returns" in refused[0]
    expected = [("init", ()), ("body", None), ("job", 1)] if block else [("init", ()), ("job", 0)]
    assert log.entries == expected
    assert "closed" in repr(exe)


async def _submit_one(exe: CoroutineExecutor) -> Any:
    return await (await exe.submit(park))


async def _map_one(exe: CoroutineExecutor) -> Any:
    return [value async for value in exe.map(lambda _: park(), [0])]


async def _map_unordered_one(exe: CoroutineExecutor) -> Any:
    return [value async for value in exe.map_unordered(lambda _: park(), [0])]


async def _wide_map_one(exe: CoroutineExecutor) -> Any:
    # A window wider than the slots queues its inputs rather than wait for a slot: it
    # would wait for its result all the same.
    return [value async for value in exe.map(lambda _: park(), [0], buffersize=4)]


async def _wide_map_unordered_one(exe: CoroutineExecutor) -> Any:
    return [value async for value in exe.map_unordered(lambda _: park(), [0], buffersize=4)]


MAP_CALLS = [_map_one, _map_unordered_one, _wide_map_one, _wide_map_unordered_one]


@pytest.mark.parametrize("helper", HELPERS, ids=_helper_id)
@pytest.mark.parametrize("call", [_submit_one, *MAP_CALLS], ids=_helper_id)
@pytest.mark.parametrize("block", [True, False], ids=["block", "no_block"])
async def test_waiting_for_a_slot_in_a_task_the_initializer_starts_raises_at_once(
    loop_kind: str, helper: Any, call: Any, block: bool
) -> None:
    """Not a wait for a slot that the initializer itself holds back."""
    refused, log, _ = await _refused_in_the_initializer(helper, call, block)
    name = "submit" if call is _submit_one else "map"  # (map_unordered() waits as map())
    assert len(refused) == 1 and refused[0].startswith(f"{name}() cannot wait in the init")
    expected = [("init", ()), ("body", None), ("job", 1)] if block else [("init", ()), ("job", 0)]
    assert log.entries == expected


@pytest.mark.parametrize("wait", [True, False], ids=["wait", "no_wait"])
async def test_shutdown_from_outside_while_the_initializer_runs_keeps_the_body_from_running(
    loop_kind: str, wait: bool
) -> None:
    """The executor was shut down before it started: entering raises, the body never
    runs. wait=True lets the initializer and the job it queued finish; wait=False
    cancels both."""
    log = Log()
    started, release, init_cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()
    queued: list[asyncio.Future[int]] = []

    async def init() -> None:
        queued.append(exe.submit_nowait(log.job, 0))
        started.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            init_cancelled.set()
            raise
        log.entries.append(("init", ()))

    exe = CoroutineExecutor(initializer=init)

    async def enter() -> None:
        async with exe:
            log.entries.append(("body", None))

    entering = asyncio.ensure_future(enter())
    await asyncio.wait_for(started.wait(), 5)
    closing = asyncio.ensure_future(exe.shutdown(wait=wait))
    await asyncio.sleep(0)  # shutdown() has begun: the executor no longer accepts jobs
    assert ("draining" if wait else "cancelling") in repr(exe)
    release.set()
    with pytest.raises(RuntimeError, match=re.escape("cannot schedule new futures after shutdown")):
        await asyncio.wait_for(entering, 5)
    await asyncio.wait_for(closing, 5)
    if not wait:
        # shutdown(wait=False) returned at once; the executor closes itself once idle,
        # a turn or two later: a shutdown() that waits sees it done.
        await asyncio.wait_for(exe.shutdown(), 5)
    assert ("body", None) not in log.entries
    if wait:
        assert log.entries == [("init", ()), ("job", 0)] and queued[0].result() == 0
    else:
        assert init_cancelled.is_set() and queued[0].cancelled() and log.entries == []
    assert "closed" in repr(exe)
    with pytest.raises(RuntimeError, match=re.escape("cannot schedule new futures after shutdown")):
        exe.submit_nowait(log.job, 2)
