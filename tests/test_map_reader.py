"""The reading task of a map's async inputs: closed however early the map is, cancelled
again when a wait for its clean-up is, and never driven from another loop.
"""

from __future__ import annotations

import asyncio
import gc
import re
import sys
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, ExecutorTimeoutError

pytestmark = pytest.mark.timeout(15)

LOOP_MESSAGE = "belongs to the event loop it was first used on"


async def pair(*values: Any) -> tuple[Any, ...]:
    return values


class Cursor:
    """An async iterator object holding a resource that its aclose() releases."""

    def __init__(self) -> None:
        self.released = False

    def __aiter__(self) -> Cursor:
        return self

    async def __anext__(self) -> int:
        return 1

    async def aclose(self) -> None:
        self.released = True


async def endless() -> AsyncIterator[int]:
    while True:
        yield 0


#
# A map closed before its reader ran closes its inputs all the same
#


@pytest.mark.parametrize("turns", [0, 1], ids=["no_reader_yet", "reader_not_started"])
@pytest.mark.parametrize("how", ["aclose", "block_exit", "shutdown", "shutdown_nowait"])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_map_closed_before_its_reader_ran_still_closes_its_inputs(
    loop_kind: str, turns: int, how: str, ordered: bool
) -> None:
    """Regression: closed before its reading task existed, or before that task took its
    first step (a task cancelled then never runs a line), the map closed none of its
    async inputs: a cursor stayed held, a generator could still be iterated."""
    cursor, gen = Cursor(), endless()
    async with CoroutineExecutor() as exe:
        results = (exe.map if ordered else exe.map_unordered)(pair, cursor, gen)
        consumer = asyncio.create_task(results.__anext__())
        # One loop turn at most: the consumer's first step, which creates the reader
        # (under an eager task factory both have run already).
        for _ in range(turns):
            await asyncio.sleep(0)
        if how == "aclose":
            await results.aclose()
            assert cursor.released  # aclose() waits for the inputs to be closed
        elif how == "shutdown":
            await exe.shutdown()
        elif how == "shutdown_nowait":
            await exe.shutdown(wait=False)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    assert cursor.released
    with pytest.raises(StopAsyncIteration):
        await gen.__anext__()


#
# A wait for the reader's clean-up, cancelled, cancels the reader again
#


class SlowClose:
    """An async generator input whose clean-up waits until it is cancelled."""

    def __init__(self) -> None:
        self.closing = asyncio.Event()
        self.interrupted = asyncio.Event()

    async def gen(self) -> AsyncIterator[int]:
        try:
            while True:
                yield 0
        finally:
            self.closing.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.interrupted.set()
                raise


async def test_aclose_cancelled_while_the_input_closes_cancels_the_reader_again(
    loop_kind: str,
) -> None:
    """Regression: aclose() cancelled by an outer timeout left the reader's clean-up
    running (pending after aclose() raised; a block's exit then waited for all of it)."""
    source = SlowClose()
    exe = CoroutineExecutor(max_workers=2)
    results = exe.map(pair, source.gen())
    assert await results.__anext__() == (0,)
    closing = asyncio.create_task(results.aclose())
    await asyncio.wait_for(source.closing.wait(), 5)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.wait_for(source.interrupted.wait(), 5)
    await exe.shutdown()


async def _break_then(stop: Any, timeout: float | None = None) -> list[str]:
    """Leave a map by ``break`` (its reader starts closing the input, which takes an
    hour of the loop's virtual clock), then ``stop`` the executor meanwhile."""
    log: list[str] = []
    closing = asyncio.Event()

    async def gen() -> AsyncIterator[int]:
        try:
            while True:
                yield 0
        finally:
            closing.set()
            try:
                await asyncio.sleep(3600)
                log.append("closed")
            except asyncio.CancelledError:
                log.append("interrupted")
                raise

    async with CoroutineExecutor(max_workers=2, timeout=timeout) as exe:
        async for _ in exe.map(pair, gen()):
            break
        await closing.wait()
        stop(exe)
        await asyncio.Event().wait()  # interrupted by fail-fast or the deadline
    return log


async def failing() -> None:
    raise ValueError("boom")


@pytest.mark.virtual_time
@pytest.mark.parametrize("trigger", ["job_error", "deadline"])
async def test_fail_fast_and_the_deadline_cancel_a_closing_reader_again(trigger: str) -> None:
    """Regression: a reader still closing the input of a map left by ``break`` kept the
    block's exit waiting for that clean-up after fail-fast or the deadline (``timeout=``)
    had cancelled every job; they cancel it again, as they do the jobs."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    if trigger == "job_error":
        coro = _break_then(lambda exe: exe.submit_nowait(failing))
        expected: type[BaseException] = ValueError
    else:
        coro = _break_then(lambda exe: None, timeout=10)
        expected = ExecutorTimeoutError
    task = asyncio.ensure_future(coro)
    with pytest.raises(expected):
        await task
    assert loop.time() - start < 3600  # not after the whole clean-up


#
# What the loop's exception handler gets
#


class BadRepr:
    def __aiter__(self) -> BadRepr:
        return self

    async def __anext__(self) -> int:
        return 1

    async def aclose(self) -> None:
        raise OSError("close failed")

    def __repr__(self) -> str:
        raise RuntimeError("repr broke")


async def test_a_clean_up_error_of_an_input_whose_repr_raises_is_still_reported(
    loop_kind: str,
) -> None:
    """Regression: the report's message raised (the input's __repr__), and the clean-up
    error was lost."""
    reports: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reports.append(context))
    try:
        async with CoroutineExecutor() as exe:
            async for _ in exe.map(pair, BadRepr()):
                break
    finally:
        loop.set_exception_handler(previous)
    assert len(reports) == 1
    assert re.match(r"an error occurred during closing of map input <", reports[0]["message"])
    assert isinstance(reports[0]["exception"], OSError)


#
# Only the executor's loop drives a map
#


async def _anext_elsewhere(results: Any) -> BaseException | None:
    """One ``__anext__()`` of ``results`` on the calling loop: the RuntimeError it raises."""
    try:
        await results.__anext__()
    except RuntimeError as exc:
        return exc
    return None


async def test_a_map_iterated_from_another_loop_is_refused_and_stays_usable(
    loop_kind: str,
) -> None:
    """Regression: a map made on the executor's loop and iterated from another thread's
    loop started its jobs' tasks on the executor's loop from that thread (no error; a
    JobTask destroyed pending)."""
    async with CoroutineExecutor() as exe:
        results = exe.map(pair, range(3))
        error = await asyncio.to_thread(asyncio.run, _anext_elsewhere(results))
        assert isinstance(error, RuntimeError) and LOOP_MESSAGE in str(error)
        with pytest.raises(RuntimeError, match=re.escape(LOOP_MESSAGE)):
            await asyncio.to_thread(asyncio.run, results.aclose())
        assert [r async for r in results] == [(0,), (1,), (2,)]  # untouched by the refusals
        assert exe.stats.submitted == 3


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_later_anext_from_another_loop_is_refused_and_the_map_stays_usable(
    loop_kind: str, ordered: bool
) -> None:
    """Regression: only a map's first ``__anext__()`` was checked. A later one from another
    thread's loop ran the map there: under -X dev its results were lost and the block's
    exit hung; without it, a job ran on the other loop (found by a docs-only tester)."""

    async with CoroutineExecutor(max_workers=2) as exe:
        made = exe.map if ordered else exe.map_unordered
        results = made(pair, range(4), buffersize=2)
        first = await results.__anext__()
        error = await asyncio.to_thread(asyncio.run, _anext_elsewhere(results))
        assert isinstance(error, RuntimeError) and LOOP_MESSAGE in str(error)
        assert exe.stats.submitted == 2  # nothing more started from there
        rest = [r async for r in results]  # untouched by the refusal
        assert sorted([first, *rest]) == [(0,), (1,), (2,), (3,)]
        assert exe.stats.submitted == 4


def test_a_map_with_an_async_input_iterated_under_a_later_asyncio_run_is_refused() -> None:
    """Regression: the map built its reader's coroutine for the first, closed loop:
    RuntimeError('Event loop is closed') and "coroutine 'read_inputs' was never
    awaited"."""

    async def inputs() -> AsyncIterator[int]:
        yield 1

    async def first() -> Any:
        exe = CoroutineExecutor()
        await exe.submit(pair, 0)  # bound to this loop
        return exe.map(pair, inputs())

    async def second(results: Any) -> list[Any]:
        return [r async for r in results]

    results = asyncio.run(first())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match=re.escape(LOOP_MESSAGE)):
            asyncio.run(second(results))
        del results
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


#
# A context an input holds open across its yield cancels the reader between items
#


needs_311 = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="asyncio.timeout() and TaskGroup are new in 3.11"
)


@needs_311
@pytest.mark.parametrize("suppress", [False, True], ids=["fail_fast", "suppress"])
async def test_an_input_timeout_that_expires_between_items_is_raised_from_the_map(
    loop_kind: str, suppress: bool
) -> None:
    """Regression: an ``asyncio.timeout()`` held across the input's yield expired while
    the reader waited for room (the input parked at its yield): the consumer got a bare
    CancelledError nobody sent, not the input's TimeoutError."""
    scopes: list[Any] = []
    closed_in: list[asyncio.Task[Any] | None] = []
    ended = asyncio.Event()

    async def inputs() -> AsyncIterator[int]:
        try:
            async with asyncio.timeout(None) as scope:
                scopes.append(scope)
                for i in range(10):
                    yield i
        finally:
            closed_in.append(asyncio.current_task())
            ended.set()

    async def expire(n: int) -> int:
        # The reader took item 0 and waits for room (buffersize=1) before this starts.
        scopes[0].reschedule(asyncio.get_running_loop().time())  # expires now
        await ended.wait()  # the reading has ended: the map needs the next item
        return n

    with pytest.raises(TimeoutError) as caught:
        async with CoroutineExecutor(max_workers=2, suppress_task_errors=suppress) as exe:
            async for _ in exe.map(expire, inputs(), buffersize=1):
                pass
    assert type(caught.value) is TimeoutError  # the input's, not the executor's deadline
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert len(closed_in) == 1 and closed_in[0] is not asyncio.current_task()


@needs_311
async def test_an_input_task_group_whose_child_fails_between_items_raises_its_group(
    loop_kind: str,
) -> None:
    """Regression: a TaskGroup held across the input's yield, whose child failed while the
    reader waited for room: a bare CancelledError from the ``async for``, and the group's
    error only reached the loop's handler as an error closing the input."""
    fail, ended = asyncio.Event(), asyncio.Event()

    async def watchdog() -> None:
        await fail.wait()
        raise ConnectionError("feed lost")

    async def inputs() -> AsyncIterator[int]:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(watchdog())
                for i in range(10):
                    yield i
        finally:
            ended.set()

    async def job(n: int) -> int:
        fail.set()  # the reader waits for room (buffersize=1) by now
        await ended.wait()  # the reading has ended: the map needs the next item
        return n

    with pytest.raises(ExceptionGroup) as caught:  # noqa: F821  # builtin since 3.11
        async with CoroutineExecutor(max_workers=2) as exe:
            async for _ in exe.map(job, inputs(), buffersize=1):
                pass
    assert caught.group_contains(ConnectionError) if hasattr(caught, "group_contains") else (
        [type(e) for e in caught.value.exceptions] == [ConnectionError]
    )
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@needs_311
async def test_an_input_that_catches_its_timeout_and_yields_goes_on_being_read(
    loop_kind: str,
) -> None:
    """The input takes its TimeoutError and yields a fallback item: the map reads on."""
    scopes: list[Any] = []
    took = asyncio.Event()

    async def inputs() -> AsyncIterator[Any]:
        try:
            async with asyncio.timeout(None) as scope:
                scopes.append(scope)
                yield 0
                yield 1
        except TimeoutError:
            took.set()
            yield "late"

    async def job(n: Any) -> Any:
        if n == 0:
            scopes[0].reschedule(asyncio.get_running_loop().time())
            await took.wait()  # so the reader is still waiting for room when it expires
        return n

    async with CoroutineExecutor(max_workers=2) as exe:
        assert [r async for r in exe.map(job, inputs(), buffersize=1)] == [0, "late"]
