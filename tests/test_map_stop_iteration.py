"""A map job whose error is StopAsyncIteration (StopIteration, on the sync maps).

An iterator cannot raise it to its consumer: out of ``__anext__()`` it ends the
consumer's ``async for`` as if every result had come, and out of the map's generator
PEP 479 turned it into RuntimeError('async generator raised StopAsyncIteration'), with no
note naming the job, while the fail-fast block raised the StopAsyncIteration itself. Now
the consumer gets a RuntimeError whose ``__cause__`` is the job's StopAsyncIteration (the
object the block, the job's task and shutdown() raise, as its job left it), noted with
the job's note (semantics.rst, "Errors name their job").
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any, Optional

import pytest

from coroexecutor import CoroutineExecutor, LoopExecutor

pytestmark = pytest.mark.timeout(15)

WAIT = 5  # seconds: the bound on every blocking wait
STOPPED = r"^job raised {}, which an iterator of results cannot raise without ending"
SETTLED: dict[str, dict[str, Any]] = {
    "in-line": {},
    "hook": {"on_job_done": lambda job: None},  # settled from a done callback
}


def check_stopped(
    error: Optional[BaseException], note: str, stop: Optional[BaseException] = None,
    *, cls: type[BaseException] = StopAsyncIteration, context: Optional[type] = None,
) -> None:
    """``error`` is the RuntimeError for a job's ``cls`` (``stop``, if given), with the
    job's ``note``; the job's error is left as its job left it (its ``__context__`` of
    type ``context``, or none, and no ``__cause__``)."""
    assert type(error) is RuntimeError, repr(error)
    assert re.match(STOPPED.format(cls.__name__), str(error)), error
    assert type(error.__cause__) is cls
    assert stop is None or error.__cause__ is stop
    assert error.__notes__ == [note]
    assert error.__cause__.__notes__ == [note]
    left = error.__cause__.__context__
    assert (left is None) if context is None else (type(left) is context)
    assert error.__cause__.__cause__ is None


async def stops(x: int) -> int:
    await asyncio.sleep(0)
    if x == 1:
        raise StopAsyncIteration(f"no more ({x})")
    return x


def results(exe: CoroutineExecutor, ordered: bool, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
    return exe.map(*args, **kwargs) if ordered else exe.map_unordered(*args, **kwargs)


#
# CoroutineExecutor
#


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("settled", list(SETTLED))
@pytest.mark.parametrize("where", ["body", "another task"])
async def test_the_consumer_gets_a_runtime_error_caused_by_it_noted(
    loop_kind: str, where: str, settled: str, ordered: bool
) -> None:
    # suppress_task_errors: the map still ends with its job's error (fail-fast is tested
    # below). Before: RuntimeError('async generator raised StopAsyncIteration'), unnoted.
    got: list[int] = []

    async def consume(exe: CoroutineExecutor) -> None:
        async for result in results(exe, ordered, stops, [0, 1], buffersize=1):
            got.append(result)

    async with CoroutineExecutor(suppress_task_errors=True, **SETTLED[settled]) as exe:
        with pytest.raises(RuntimeError) as raised:
            if where == "body":
                await consume(exe)
            else:
                await asyncio.create_task(consume(exe))
    assert got == [0]
    check_stopped(raised.value, "coroexecutor: job stops(1) failed (map input #1)")
    assert str(raised.value.__cause__) == "no more (1)"


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("settled", list(SETTLED))
async def test_fail_fast_raises_the_job_s_error_and_a_consumer_in_a_task_its_runtime_error(
    loop_kind: str, settled: str, ordered: bool
) -> None:
    # The consumer waits in the map, in a task of its own (not the block's body, which
    # fail-fast interrupts): it gets the RuntimeError, caused by the very object the
    # block raises. Before: PEP 479's RuntimeError, no note.
    waiting = asyncio.Event()
    go = asyncio.Event()

    async def job(x: int) -> int:
        waiting.set()
        await go.wait()
        raise StopAsyncIteration(f"no more ({x})")

    async def consume(exe: CoroutineExecutor) -> list[int]:
        return [result async for result in results(exe, ordered, job, [0])]

    consumers: list[asyncio.Task[list[int]]] = []
    with pytest.raises(StopAsyncIteration) as raised:
        async with CoroutineExecutor(**SETTLED[settled]) as exe:
            consumers.append(asyncio.create_task(consume(exe)))
            await waiting.wait()
            go.set()
            await asyncio.Event().wait()  # fail-fast interrupts the body here
    [consumer] = consumers
    await asyncio.wait([consumer])
    note = "coroexecutor: job job(0) failed (map input #0)"
    assert raised.value.__notes__ == [note]
    check_stopped(consumer.exception(), note, raised.value)


@pytest.mark.parametrize("return_exceptions", [False, True])
async def test_a_map_the_failure_closed_raises_it_at_the_next_call_not_the_end(
    loop_kind: str, return_exceptions: bool
) -> None:
    # Fail-fast by a submit() job closed the map while its consumer (in another task) was
    # not in it; its next __anext__() raises the executor's first error. Before: that
    # StopAsyncIteration itself, which ended the consumer's `async for` quietly, with one
    # of two results: the error was lost to it.
    first, go = asyncio.Event(), asyncio.Event()

    async def job(x: int) -> int:
        if x:
            await asyncio.Event().wait()  # parked until the executor cancels it
        return x

    async def consume(exe: CoroutineExecutor) -> list[int]:
        got = []
        async for result in exe.map(job, [0, 1], return_exceptions=return_exceptions):
            got.append(result)
            first.set()
            await go.wait()
        return got

    async def stop() -> None:
        raise StopAsyncIteration("no more")

    consumers: list[asyncio.Task[list[int]]] = []
    with pytest.raises(StopAsyncIteration) as raised:
        async with CoroutineExecutor() as exe:
            consumers.append(asyncio.create_task(consume(exe)))
            await first.wait()
            exe.submit_nowait(stop)
            await asyncio.Event().wait()  # fail-fast interrupts the body here
    [consumer] = consumers
    go.set()
    await asyncio.wait([consumer])
    check_stopped(consumer.exception(), "coroexecutor: job stop() failed", raised.value)


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_retry_policy_raising_it_fails_the_job_with_it_and_the_consumer_so(
    loop_kind: str, ordered: bool
) -> None:
    def policy(attempt: int, exc: BaseException) -> Optional[float]:
        raise StopAsyncIteration("no schedule")  # a coroutine lets it through, unchanged

    async def fails(x: int) -> None:
        raise ConnectionResetError(f"server went away ({x})")

    async with CoroutineExecutor(suppress_task_errors=True) as exe:
        with pytest.raises(RuntimeError) as raised:
            async for _ in results(exe, ordered, fails, [0], retry=policy):
                pass
    error = raised.value
    assert re.match(STOPPED.format("StopAsyncIteration"), str(error)), error
    assert type(error.__cause__) is StopAsyncIteration
    assert error.__notes__ == ["coroexecutor: job fails(0) failed (map input #0)"]
    assert type(error.__cause__.__context__) is ConnectionResetError


async def test_a_job_raising_it_as_the_map_s_cancel_reaches_it_is_noted_too(
    loop_kind: str,
) -> None:
    # Input 1's error ends the map and cancels input 0, which raises StopAsyncIteration
    # from its cancel: its error is neither the map's nor the executor's, and is raised
    # as it is where its result would be. Before: PEP 479's RuntimeError, no note.
    started = asyncio.Event()

    async def job(x: int) -> int:
        if x == 0:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise StopAsyncIteration("cleaned up")  # noqa: B904 - its context: the cancel
        await started.wait()
        raise ValueError("boom")

    async with CoroutineExecutor(suppress_task_errors=True) as exe:
        with pytest.raises(RuntimeError) as raised:
            async for _ in exe.map(job, [0, 1]):
                pass
    note = "coroexecutor: job job(0) failed (map input #0)"
    check_stopped(raised.value, note, context=asyncio.CancelledError)


#
# LoopExecutor: a blocking job's StopIteration, out of a sync iterator's __next__()
#


def stops_blocking(x: int) -> int:
    if x == 2:
        raise StopIteration(f"no more ({x})")
    return x


def no_retries(attempt: int, exc: BaseException) -> Optional[float]:
    return None


@pytest.mark.parametrize(
    "options",
    [{}, {"buffersize": 1}, {"buffersize": 2, "retry": no_retries}, {"timeout": 60}],
    ids=["all at once", "buffersize", "buffersize and retry", "timeout"],
)
def test_the_bridge_s_map_raises_a_runtime_error_for_a_blocking_job_s_stop_iteration(
    options: dict[str, Any],
) -> None:
    # Before: next() raised the StopIteration itself, so the for loop (and list()) took it
    # for the end of the results: [0, 1], and no error at all.
    got: list[int] = []
    with LoopExecutor(max_workers=2) as exe:
        with pytest.raises(RuntimeError) as raised:
            for result in exe.map(stops_blocking, range(4), **options):
                got.append(result)
        future = exe.submit(stops_blocking, 2)
        assert type(future.exception(timeout=WAIT)) is StopIteration  # as ThreadPoolExecutor's
    assert got == [0, 1]
    check_stopped(
        raised.value, "coroexecutor: job stops_blocking(2) failed (map input #2)",
        cls=StopIteration,
    )
    assert str(raised.value.__cause__) == "no more (2)"


def test_list_of_the_bridge_s_map_does_not_return_the_results_cut_short() -> None:
    with LoopExecutor(max_workers=2) as exe, pytest.raises(
        RuntimeError, match=STOPPED.format("StopIteration")
    ):
        list(exe.map(stops_blocking, range(4)))


#
# Notes that are not a list of notes (PEP 678 wants a list)
#


class StrNotes:
    """What a job raises: a stop whose ``__notes__`` is one str, not a list of them."""

    @staticmethod
    def stop(cls: type[BaseException]) -> BaseException:
        stop = cls("no more")
        stop.__notes__ = "a str, not a list"  # type: ignore[assignment]  # the mistake under test
        return stop


async def stops_with_str_notes(x: int) -> int:
    await asyncio.sleep(0)
    raise StrNotes.stop(StopAsyncIteration)


def stops_blocking_with_str_notes(x: int) -> int:
    raise StrNotes.stop(StopIteration)


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_notes_that_are_a_str_are_not_copied_as_its_characters(
    loop_kind: str, ordered: bool
) -> None:
    # Before: the RuntimeError got ['a', ' ', 's', 't', 'r', ',', ...].
    async with CoroutineExecutor(suppress_task_errors=True) as exe:
        with pytest.raises(RuntimeError, match=STOPPED.format("StopAsyncIteration")) as raised:
            async for _ in results(exe, ordered, stops_with_str_notes, range(1)):
                pass
    assert getattr(raised.value, "__notes__", []) == []
    cause = raised.value.__cause__
    assert cause is not None and cause.__notes__ == "a str, not a list"  # as the job left it


def test_the_bridge_s_map_does_not_copy_a_str_of_notes_either() -> None:
    with LoopExecutor(max_workers=1) as exe, pytest.raises(
        RuntimeError, match=STOPPED.format("StopIteration")
    ) as raised:
        list(exe.map(stops_blocking_with_str_notes, range(1)))
    assert getattr(raised.value, "__notes__", []) == []


#
# An input's stop of the wrong kind is its error, not its end
#


class SyncStopsWrongly:
    """A sync input whose ``__next__()`` raises StopAsyncIteration after two items."""

    def __init__(self) -> None:
        self.read = 0

    def __iter__(self) -> SyncStopsWrongly:
        return self

    def __next__(self) -> int:
        self.read += 1
        if self.read > 2:
            raise StopAsyncIteration("the wrong kind of stop")
        return self.read


class AsyncStopsWrongly:
    """An async input whose ``__anext__()`` call raises StopIteration after two items."""

    def __init__(self) -> None:
        self.read = 0

    def __aiter__(self) -> AsyncStopsWrongly:
        return self

    def __anext__(self) -> asyncio.Future[int]:
        self.read += 1
        if self.read > 2:
            raise StopIteration("the wrong kind of stop")
        item: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        item.set_result(self.read)
        return item


async def counting() -> AsyncIterator[int]:
    for i in range(10):
        yield i


async def both(a: int, b: int) -> tuple[int, int]:
    return a, b


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("wrong", ["sync input", "async input"])
async def test_an_input_s_stop_of_the_wrong_kind_is_raised_not_taken_for_its_end(
    loop_kind: str, ordered: bool, wrong: str
) -> None:
    # Before: the map with an async input ended quietly after two results, cut short.
    inputs: tuple[Any, Any] = (
        (SyncStopsWrongly(), counting()) if wrong == "sync input"
        else (AsyncStopsWrongly(), range(10))
    )
    got: list[tuple[int, int]] = []
    async with CoroutineExecutor(suppress_task_errors=True) as exe:
        with pytest.raises(RuntimeError) as raised:
            async for pair in results(exe, ordered, both, *inputs):
                got.append(pair)
    cause = raised.value.__cause__
    assert type(cause) is (StopAsyncIteration if wrong == "sync input" else StopIteration)
    assert str(cause) == "the wrong kind of stop"
    assert set(got) <= {(1, 0), (2, 1)}  # results ready before the read failed may come first
