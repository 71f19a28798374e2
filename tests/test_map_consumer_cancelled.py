"""map() and map_unordered() closed because their consumer was cancelled while it waited in
them (an outer timeout around ``__anext__()``): cut short, so a later ``__anext__()``
raises RuntimeError, not StopAsyncIteration (semantics.rst, "Leaving a map() early").
"""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor

ORDERED = pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
CUT_SHORT = "was closed when its consumer was cancelled: its inputs were not all processed"
HOW = ["task cancelled", "wait_for"]
if sys.version_info >= (3, 11):
    HOW.append("asyncio.timeout")


class Parked:
    """Jobs that park until cancelled; ``started`` is set once ``count`` of them run."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.running = 0
        self.cancelled = 0
        self.started = asyncio.Event()

    async def __call__(self, n: int) -> int:
        self.running += 1
        if self.running == self.count:
            self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return n


async def _cancel_the_consumer(results: Any, jobs: Parked, how: str) -> None:
    """Wait in ``results.__anext__()`` until the window's jobs all run, then cancel that
    wait as ``how`` says; the cancelled call raises what it always did."""
    if how == "task cancelled":
        consumer = asyncio.ensure_future(results.__anext__())
        await jobs.started.wait()
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        return
    # The jobs never end, so the timeout decides nothing but when the wait is cancelled.
    with pytest.raises(asyncio.TimeoutError):
        if how == "wait_for":
            await asyncio.wait_for(results.__anext__(), 0.01)
        else:
            async with asyncio.timeout(0.01):  # type: ignore[attr-defined]  # 3.11+
                await results.__anext__()
    assert jobs.started.is_set()


@ORDERED
@pytest.mark.parametrize("how", HOW)
async def test_a_map_whose_consumer_was_cancelled_raises_runtime_error_from_then_on(
    loop_kind: str, ordered: bool, how: str
) -> None:
    """README: "No error is lost". A later ``__anext__()`` raised StopAsyncIteration, so an
    ``async for`` after a timed-out ``__anext__()`` ended normally, with the map's
    results silently missing (found by a docs-only tester). The map's jobs are cancelled
    as it closes (the executor's own cancels: not errors), and it stays cut short after
    an ``aclose()`` too, as a map the executor closed does."""
    jobs = Parked(count=4)
    async with CoroutineExecutor(max_workers=4) as exe:
        results = (exe.map if ordered else exe.map_unordered)(jobs, range(10))
        await _cancel_the_consumer(results, jobs, how)
        name = "map()" if ordered else "map_unordered()"
        with pytest.raises(RuntimeError, match=f"^{re.escape(name)} {CUT_SHORT}$") as raised:
            await results.__anext__()
        assert raised.value.__cause__ is None
        with pytest.raises(RuntimeError, match=CUT_SHORT):
            async for _ in results:
                pass
        await results.aclose()  # waits for the jobs' cancellation
        assert jobs.cancelled == 4
        with pytest.raises(RuntimeError, match=CUT_SHORT):
            await results.__anext__()
    stats = exe.stats
    assert (stats.submitted, stats.cancelled, stats.failed) == (4, 4, 0)


@ORDERED
async def test_a_fail_fast_error_after_the_consumer_was_cancelled_takes_precedence(
    loop_kind: str, ordered: bool
) -> None:
    """A job's error that stopped the executor (fail-fast) since: a later ``__anext__()``
    of the map cut short raises that error, the object the block raises, as it would for
    a map the executor closed."""
    jobs = Parked(count=2)
    error = LookupError("the job that stopped the executor")

    async def bad() -> None:
        raise error

    with pytest.raises(LookupError) as block_error:
        async with CoroutineExecutor(max_workers=4) as exe:
            results = (exe.map if ordered else exe.map_unordered)(jobs, range(2))
            await _cancel_the_consumer(results, jobs, "wait_for")
            await exe.submit(bad)
            await asyncio.Event().wait()  # interrupted by fail-fast
    assert block_error.value is error
    with pytest.raises(LookupError) as raised:
        await results.__anext__()
    assert raised.value is error
    assert error.__context__ is None  # as its job left it


@ORDERED
async def test_a_map_its_own_job_ended_cancelled_is_not_cut_short(
    loop_kind: str, ordered: bool
) -> None:
    """A map job cancelled by someone else is the map's error: the ``async for`` raises
    that CancelledError, and the map has ended with it, as with any error of its own
    (then StopAsyncIteration), not as a map whose consumer was cancelled."""
    jobs = Parked(count=2)
    tasks: list[asyncio.Task[Any]] = []

    async def step(n: int) -> int:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        return await jobs(n)

    async with CoroutineExecutor(max_workers=4, suppress_task_errors=True) as exe:
        results = (exe.map if ordered else exe.map_unordered)(step, range(2))
        consumer = asyncio.ensure_future(results.__anext__())
        await jobs.started.wait()
        tasks[0].cancel()  # not the executor's cancel: job 0's error
        with pytest.raises(asyncio.CancelledError):
            await consumer
        with pytest.raises(StopAsyncIteration):
            await results.__anext__()
    assert jobs.cancelled == 2


@ORDERED
@pytest.mark.parametrize("waits_for", ["a slot", "an input item"])
async def test_a_consumer_cancelled_waiting_for_a_slot_or_an_input_cuts_the_map_short(
    loop_kind: str, ordered: bool, waits_for: str
) -> None:
    """The same wherever the consumer waits: in line for a slot (another producer's job
    holds the only one), or for the next item of an async input."""
    release = asyncio.Event()

    async def holder() -> None:
        await release.wait()

    async def slow_input() -> Any:
        yield 0
        await asyncio.Event().wait()  # the next item never comes

    async def echo(n: int) -> int:
        return n

    async with CoroutineExecutor(max_workers=1) as exe:
        if waits_for == "a slot":
            await exe.submit(holder)
            results = (exe.map if ordered else exe.map_unordered)(echo, range(3))
        else:
            results = (exe.map if ordered else exe.map_unordered)(echo, slow_input())
            assert await results.__anext__() == 0
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(results.__anext__(), 0.01)
        with pytest.raises(RuntimeError, match=CUT_SHORT):
            await results.__anext__()
        release.set()
    assert (exe.stats.submitted, exe.stats.cancelled) == (1, 0)  # the holder, or input 0


async def test_a_map_its_own_error_ended_names_that_error_when_its_consumer_was_cancelled(
    loop_kind: str,
) -> None:
    """The consumer was cancelled while it waited for a result ready before the map's own
    error (job 0, cancelled by that error, still cleaning up): that error had not been
    raised yet, so the RuntimeError names it as its ``__cause__`` (with
    suppress_task_errors, nothing else would)."""
    error = ValueError("job 1 failed")
    cleaning = asyncio.Event()
    release = asyncio.Event()
    started = asyncio.Event()

    async def step(n: int) -> int:
        if n == 1:
            await started.wait()
            raise error
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            await release.wait()  # a clean-up that awaits: the map waits for it
        return n

    async with CoroutineExecutor(max_workers=4, suppress_task_errors=True) as exe:
        results = exe.map(step, range(2))
        try:
            consumer = asyncio.ensure_future(results.__anext__())
            await cleaning.wait()  # job 1 failed, and the map cancelled job 0
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
            with pytest.raises(RuntimeError, match=CUT_SHORT) as raised:
                await results.__anext__()
            assert raised.value.__cause__ is error
        finally:
            release.set()  # (failing: let the block's exit end)
    assert error.__context__ is None
