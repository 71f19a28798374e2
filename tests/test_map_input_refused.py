"""A map's async inputs the map cannot read as given: an ``__aiter__()`` that returns no
async iterator is refused at the call, and inputs that no reading task could be made for
(the loop's task factory refused it) are still closed, in the caller's task."""

from __future__ import annotations

import asyncio
import gc
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor
from tests._factories import task_factory


async def ident(n: int) -> int:
    return n


async def pair(*items: int) -> tuple[int, ...]:
    return items


#
# __aiter__() must return an async iterator
#


class ReturnsAnInt:
    def __aiter__(self) -> Any:
        return 42


class ReturnsASyncIterator:
    def __aiter__(self) -> Any:
        return iter([1, 2, 3])


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("junk", [ReturnsAnInt, ReturnsASyncIterator])
async def test_an_aiter_that_returns_no_async_iterator_is_a_type_error_at_the_call(
    junk: type, ordered: bool
) -> None:
    """Regression (brk13): ``__aiter__()`` returning 42 was taken, and the ``async for``
    raised AttributeError("'int' object has no attribute '__next__'"); one returning a
    sync iterator was read as a sync input. ``async for`` and aiter() refuse both with a
    TypeError: so does the map's call, naming the input and what it got. Nothing has
    started: the good input before it is left as it was, not read or closed."""
    started = asyncio.Event()

    async def good() -> AsyncIterator[int]:
        started.set()
        yield 7

    first = good()
    got = "42" if junk is ReturnsAnInt else "<list_iterator object at"
    async with CoroutineExecutor(max_workers=2) as exe:
        do_map = exe.map if ordered else exe.map_unordered
        where = "map" if ordered else "map_unordered"
        message = (
            f"__aiter__() of {where}() input 1 ({junk.__name__}) must return an async"
            f" iterator (got {got}"
        )
        with pytest.raises(TypeError, match=re.escape(message)):
            do_map(pair, first, junk())
        assert exe.stats.submitted == 0
        assert not started.is_set()
    assert [n async for n in first] == [7]  # not closed by the refused map


class AsyncDefAiter:
    async def __aiter__(self) -> Any:  # the common mistake: a coroutine, no iterator
        return self


async def test_an_async_def_aiter_is_refused_and_its_coroutine_closed() -> None:
    """Regression (brk14): the TypeError was right, but the coroutine ``async def
    __aiter__`` returned was dropped unclosed: "coroutine ... was never awaited", an
    error under -W error (this suite's)."""
    async with CoroutineExecutor() as exe:
        with pytest.raises(TypeError, match=r"must return an async iterator \(got <coroutine"):
            exe.map(ident, AsyncDefAiter())  # type: ignore[call-overload]  # the mistake under test
    gc.collect()  # a coroutine left unclosed would warn here, which the suite makes an error


async def test_an_aiter_that_returns_an_object_with_only_anext_is_read_as_async() -> None:
    """What ``async for`` takes from ``__aiter__()`` needs ``__anext__()`` only, not an
    ``__aiter__()`` of its own (aiter() asks no more): the map reads it as async too.
    Before, only an AsyncIterator was read so, and this one was read as a sync input."""

    class Cursor:
        def __init__(self) -> None:
            self.left = [1, 2, 3]

        async def __anext__(self) -> int:
            if not self.left:
                raise StopAsyncIteration
            return self.left.pop(0)

    class Table:
        def __aiter__(self) -> Cursor:
            return Cursor()

    async with CoroutineExecutor(max_workers=2) as exe:
        assert [r async for r in exe.map(ident, Table())] == [1, 2, 3]


#
# No reading task: the inputs are closed all the same
#


class RefusingFactory:
    """A task factory that refuses (raises, or makes None) every task while ``on``."""

    def __init__(self, product: str) -> None:
        self.product = product
        self.on = False
        self.error = RuntimeError("no task")

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        if not self.on:
            return asyncio.Task(coro, loop=loop, **kwargs)
        coro.close()  # (the executor closes it too: closing twice is fine)
        if self.product == "raises":
            raise self.error
        return None


@pytest.mark.parametrize("read_before", [False, True], ids=["fresh", "begun"])
@pytest.mark.parametrize("how", ["async_for", "aclose"])
@pytest.mark.parametrize("product", ["raises", "None"])
async def test_inputs_no_reader_could_be_made_for_are_closed_before_the_error(
    product: str, how: str, read_before: bool
) -> None:
    """Regression (brk13): when the loop's task factory refused the map's reading task,
    the map raised its error but left the async input open: it could be iterated after
    the map, and its ``finally`` ran only later, in asyncio's finaliser. Now the call
    that raised (the first read, or aclose() before it) closes the input first, in its
    own task, awaiting its clean-up; the factory's error is still what it raises."""
    factory = RefusingFactory(product)
    closed_in: list[object] = []

    async def source() -> AsyncIterator[int]:
        try:
            for i in range(10):
                yield i
        finally:
            await asyncio.sleep(0)  # a clean-up that awaits: aclose() is awaited
            closed_in.append(asyncio.current_task())

    inputs = source()
    if read_before:
        assert await inputs.__anext__() == 0
    with task_factory(factory):
        async with CoroutineExecutor(max_workers=2) as exe:
            results = exe.map(ident, inputs)
            factory.on = True
            try:
                with pytest.raises((RuntimeError, TypeError, AttributeError)) as info:
                    if how == "async_for":
                        await results.__anext__()
                    else:
                        await results.aclose()
                # Closed before the call returned, in its task (an input never begun
                # has no clean-up to run: it is only closed).
                assert inputs.ag_frame is None
                assert closed_in == ([asyncio.current_task()] if read_before else [])
            finally:
                factory.on = False
    if product == "raises":
        assert info.value is factory.error
    elif sys.version_info < (3, 13):  # (3.13's create_task raises AttributeError first)
        assert "task factory must return an asyncio.Task (got None)" in str(info.value)
    with pytest.raises(StopAsyncIteration):
        await inputs.__anext__()  # closed: no more items


async def started_input_whose_cleanup_fails() -> AsyncIterator[int]:
    """An async generator input, started (at its first yield), whose clean-up raises."""

    async def source() -> AsyncIterator[int]:
        try:
            yield 0
        finally:
            raise OSError("cleanup failed")

    inputs = source()
    await inputs.__anext__()
    return inputs


async def test_a_clean_up_error_as_the_first_read_closes_the_inputs_is_raised() -> None:
    """The map still open (its first read): an error the input's clean-up raises is
    raised in the factory's error's place, with that as its ``__context__``, as after
    any input's error (nested aclosing() blocks)."""
    factory = RefusingFactory("raises")

    inputs = await started_input_whose_cleanup_fails()
    with task_factory(factory):
        async with CoroutineExecutor(max_workers=2) as exe:
            results = exe.map(ident, inputs)
            factory.on = True
            try:
                with pytest.raises(OSError, match="cleanup failed") as info:
                    await results.__anext__()
            finally:
                factory.on = False
    assert info.value.__context__ is factory.error


async def test_a_clean_up_error_as_aclose_closes_the_inputs_is_reported() -> None:
    """aclose() (the map closed): nobody takes the clean-up error, which goes to the
    loop's exception handler, as for any closed map; aclose() raises the factory's."""
    factory = RefusingFactory("raises")
    reports: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: reports.append(context))

    inputs = await started_input_whose_cleanup_fails()
    try:
        with task_factory(factory):
            async with CoroutineExecutor(max_workers=2) as exe:
                results = exe.map(ident, inputs)
                factory.on = True
                try:
                    with pytest.raises(RuntimeError) as info:
                        await results.aclose()
                finally:
                    factory.on = False
    finally:
        loop.set_exception_handler(previous)
    assert info.value is factory.error
    assert len(reports) == 1
    assert reports[0]["message"].startswith("an error occurred during closing of map input")
    assert str(reports[0]["exception"]) == "cleanup failed"


@pytest.mark.parametrize(
    "ending", ["block_exit", "shutdown", "shutdown_nowait", "dropped", "body_error"]
)
async def test_inputs_of_a_map_closed_with_the_reader_refused_are_closed_by_the_exit(
    ending: str,
) -> None:
    """Regression (brk13, found fixing the above): a map closed before its first read by
    someone other than its aclose() (the block's exit, shutdown(), the map dropped), with
    the factory refusing the reader that would close its inputs: the factory's error was
    raised from the close (the block's exit then raised it before waiting for the jobs,
    in place of the body's own error), or printed as "Exception ignored" for a dropped
    map, and the input was left open. Now the block's exit or shutdown() closes it in its
    own task, as it waits; the factory's error, which nobody is left to receive, goes to
    the loop's exception handler once, as a closed map's clean-up error does."""
    factory = RefusingFactory("raises")
    closed_in: list[object] = []
    reports: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: reports.append(context))

    async def source() -> AsyncIterator[int]:
        try:
            for i in range(10):
                yield i
        finally:
            await asyncio.sleep(0)  # a clean-up that awaits
            closed_in.append(asyncio.current_task())

    inputs = source()
    assert await inputs.__anext__() == 0
    body_error = KeyError("body")
    raised: list[BaseException] = []
    try:
        with task_factory(factory):
            try:
                async with CoroutineExecutor(max_workers=2) as exe:
                    results = exe.map(ident, inputs)
                    factory.on = True
                    if ending == "shutdown":
                        await exe.shutdown()
                        assert closed_in == [asyncio.current_task()]  # as shutdown() waited
                    elif ending == "shutdown_nowait":
                        await exe.shutdown(wait=False)
                    elif ending == "dropped":
                        del results
                        gc.collect()
                    elif ending == "body_error":
                        raise body_error
            except KeyError as exc:
                raised.append(exc)
            factory.on = False
    finally:
        loop.set_exception_handler(previous)
    assert raised == ([body_error] if ending == "body_error" else [])  # the body's, unchanged
    assert closed_in == [asyncio.current_task()]  # before the block's exit returned
    assert inputs.ag_frame is None
    assert len(reports) == 1
    assert reports[0]["exception"] is factory.error
    assert reports[0]["message"].startswith("an error occurred during closing of")
