"""How map() closes its async inputs: every one it opened, in the task that read them,
however the reading ends; and where an error raised by an input's clean-up goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor
from tests.conftest import new_loop

pytestmark = pytest.mark.timeout(15)


async def pair(*values: Any) -> tuple[Any, ...]:
    return values


class Recorder:
    """Async generator inputs that record the task each one ran and was closed in, and
    the order they were closed in."""

    def __init__(self) -> None:
        self.ran_in: set[asyncio.Task[Any] | None] = set()
        self.closed: list[str] = []
        self.closed_in: set[asyncio.Task[Any] | None] = set()
        self.pulled: dict[str, int] = {}

    async def gen(
        self, name: str, n: int | None = None, fail_at: int | None = None
    ) -> AsyncIterator[int]:
        self.pulled[name] = 0
        try:
            i = 0
            while n is None or i < n:
                self.ran_in.add(asyncio.current_task())
                if i == fail_at:
                    raise ValueError(f"{name} failed")
                self.pulled[name] += 1
                yield i
                i += 1
        finally:
            self.closed.append(name)
            self.closed_in.add(asyncio.current_task())


@contextlib.contextmanager
def reports_to(reports: list[dict[str, Any]]) -> Iterator[asyncio.Event]:
    """Collect what reaches the loop's exception handler (the test harness's own handler
    turns it into a failure); the event is set at the first report."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    reported = asyncio.Event()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        reports.append(context)
        reported.set()

    loop.set_exception_handler(handler)
    try:
        yield reported
    finally:
        loop.set_exception_handler(previous)


#
# Every async input is closed, in the reading task
#


@pytest.mark.parametrize("shortest", [0, 1, 2])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_the_longer_async_inputs_are_closed_in_the_reading_task_when_the_shortest_ends(
    loop_kind: str, ordered: bool, shortest: int
) -> None:
    """Regression: when the shortest input ended, the map stopped but never closed the
    longer async inputs: their ``finally`` ran later, in asyncio's finaliser task. Now
    each is closed before the iteration ends, in the task that read it, the last input
    first (as nested ``async with aclosing(...)`` blocks); as zip() does, an input after
    the one that ended is not advanced for that item."""
    rec = Recorder()
    names = ["a", "b", "c"]
    inputs = [rec.gen(name, 2 if i == shortest else None) for i, name in enumerate(names)]
    async with CoroutineExecutor(max_workers=4) as exe:
        mapper = exe.map if ordered else exe.map_unordered
        results = [r async for r in mapper(pair, *inputs, buffersize=2)]
        assert sorted(results) == [(0, 0, 0), (1, 1, 1)]
        # Closed before the iteration ended: the shortest by its own end, then the others.
        others = [n for n in reversed(names) if n != names[shortest]]
        assert rec.closed == [names[shortest], *others]
    assert len(rec.ran_in) == 1 and rec.closed_in == rec.ran_in
    assert asyncio.current_task() not in rec.ran_in
    # zip(): the inputs before the shortest gave a third item (dropped), those after did not.
    assert rec.pulled == {n: 3 if i < shortest else 2 for i, n in enumerate(names)}


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout() is new in 3.11")
async def test_a_longer_async_input_holding_a_timeout_is_closed_where_it_ran(
    loop_kind: str,
) -> None:
    """An input holding ``asyncio.timeout()`` across its yields, zipped with a shorter
    sync input, leaves the timeout in its own task when the map ends (it was left to
    asyncio's finaliser task)."""
    tasks: list[asyncio.Task[Any] | None] = []
    exited: list[asyncio.Task[Any] | None] = []

    async def ticks() -> AsyncIterator[int]:
        async with asyncio.timeout(10):
            try:
                for i in range(100):
                    tasks.append(asyncio.current_task())
                    yield i
            finally:
                exited.append(asyncio.current_task())

    async with CoroutineExecutor(max_workers=2) as exe:
        assert [r async for r in exe.map(pair, "xy", ticks())] == [("x", 0), ("y", 1)]
        assert exited == tasks[:1]


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_an_input_that_raises_has_the_other_inputs_closed_before_its_error_is_raised(
    loop_kind: str, ordered: bool
) -> None:
    """Regression: an input's error ended the map, but the other async inputs stayed open
    (until the error and its traceback were dropped, at worst the end of asyncio.run())."""
    rec = Recorder()
    async with CoroutineExecutor(max_workers=4) as exe:
        mapper = exe.map if ordered else exe.map_unordered
        with pytest.raises(ValueError, match="b failed"):
            async for _ in mapper(pair, rec.gen("a"), rec.gen("b", fail_at=2), rec.gen("c")):
                pass
        assert sorted(rec.closed) == ["a", "b", "c"]
        assert rec.closed[1:] == ["c", "a"]  # b ended by its own error first
    assert len(rec.ran_in) == 1 and rec.closed_in == rec.ran_in


class NoAclose:
    """An async iterator object without aclose(): nothing to close."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.served = 0

    def __aiter__(self) -> NoAclose:
        return self

    async def __anext__(self) -> int:
        if self.served == self.n:
            raise StopAsyncIteration
        self.served += 1
        return self.served - 1


class WithAclose(NoAclose):
    def __init__(self, n: int | None) -> None:
        super().__init__(n)
        self.closed_in: list[asyncio.Task[Any] | None] = []

    async def aclose(self) -> None:
        self.closed_in.append(asyncio.current_task())


async def test_async_iterator_objects_are_closed_if_they_have_aclose(loop_kind: str) -> None:
    async with CoroutineExecutor(max_workers=2) as exe:
        short, endless = NoAclose(2), WithAclose(None)
        assert [r async for r in exe.map(pair, short, endless)] == [(0, 0), (1, 1)]
        assert len(endless.closed_in) == 1 and endless.closed_in[0] is not asyncio.current_task()

        short2, endless2 = WithAclose(1), NoAclose(None)
        assert [r async for r in exe.map(pair, short2, endless2)] == [(0, 0)]
        assert len(short2.closed_in) == 1


#
# An error raised by an input's clean-up
#


async def closing_fails(name: str = "input") -> AsyncIterator[int]:
    """Yields for ever; its clean-up raises."""
    try:
        i = 0
        while True:
            yield i
            i += 1
    finally:
        raise OSError(f"{name}: cleanup failed")


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_clean_up_error_as_the_map_ends_is_raised_from_the_async_for(
    loop_kind: str, ordered: bool
) -> None:
    """Regression: the error closing an input raised was dropped (``except Exception:
    pass``), or logged as "Task exception was never retrieved" by the finaliser task.
    Now it ends the map as the input's own error would: raised from ``async for``."""
    got: list[Any] = []
    async with CoroutineExecutor(max_workers=4) as exe:
        mapper = exe.map if ordered else exe.map_unordered
        with pytest.raises(OSError, match="input: cleanup failed"):
            async for r in mapper(pair, range(3), closing_fails(), buffersize=1):
                got.append(r)
    assert got == [(i, i) for i in range(len(got))]  # the results before it were yielded


async def test_clean_up_errors_chain_as_nested_aclosing_blocks_chain_them(
    loop_kind: str,
) -> None:
    """An input's error, then two inputs whose clean-up fails (closed the last first):
    the last clean-up error is raised, its ``__context__`` the previous one, whose
    ``__context__`` is the input's error, as ``async with aclosing(a), aclosing(b)``
    raises them."""

    async def failing() -> AsyncIterator[int]:
        yield 0
        raise KeyError("input error")

    async with CoroutineExecutor(max_workers=4) as exe:
        with pytest.raises(OSError, match="a: cleanup failed") as info:
            async for _ in exe.map(pair, closing_fails("a"), failing(), closing_fails("c")):
                pass
    first = info.value.__context__
    assert isinstance(first, OSError) and str(first) == "c: cleanup failed"
    assert isinstance(first.__context__, KeyError)


@pytest.mark.parametrize("how", ["break", "aclose", "block_exit", "shutdown"])
@pytest.mark.parametrize("where", ["at_a_yield", "in_a_read"])
async def test_a_clean_up_error_of_an_abandoned_map_goes_to_the_exception_handler(
    loop_kind: str, how: str, where: str
) -> None:
    """Regression: a map closed early (its reader cancelled while the input waited at a
    yield, or in a read) dropped the error the input's clean-up raised. Nobody can
    receive it: it is reported, once, to the loop's exception handler, as asyncio's
    shutdown_asyncgens() reports an async generator whose aclose() failed."""
    parked = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        try:
            yield 0
            if where == "in_a_read":
                parked.set()
                await asyncio.Event().wait()
            yield 1
        finally:
            raise OSError("cleanup failed")

    buffersize = 1 if where == "at_a_yield" else 2  # 1: the reader waits for room
    reports: list[dict[str, Any]] = []
    with reports_to(reports) as reported:
        exe = CoroutineExecutor(max_workers=2)
        async with exe:
            if how == "break":
                async for r in exe.map(pair, source(), buffersize=buffersize):
                    assert r == (0,)
                    if where == "in_a_read":
                        await parked.wait()
                    break
            else:
                results = exe.map(pair, source(), buffersize=buffersize)
                assert await results.__anext__() == (0,)
                if where == "in_a_read":
                    await parked.wait()
                if how == "aclose":
                    await results.aclose()
                elif how == "shutdown":
                    await exe.shutdown()
                # block_exit: the exit closes it
        await asyncio.wait_for(reported.wait(), 5)
    assert len(reports) == 1
    assert re.match("an error occurred during closing of .*map", reports[0]["message"])
    error = reports[0]["exception"]
    assert isinstance(error, OSError) and str(error) == "cleanup failed"


async def test_a_clean_up_error_the_map_has_not_taken_yet_is_reported_when_it_closes(
    loop_kind: str,
) -> None:
    """The reader ended with the clean-up error while the consumer held a result; the
    consumer then closes the map: the error is reported, not dropped."""
    gate, closing = asyncio.Event(), asyncio.Event()

    async def short() -> AsyncIterator[int]:
        yield 0
        await gate.wait()

    async def longer() -> AsyncIterator[int]:
        try:
            for i in range(10):
                yield i
        finally:
            closing.set()
            raise OSError("cleanup failed")

    reports: list[dict[str, Any]] = []
    with reports_to(reports):
        async with CoroutineExecutor(max_workers=2) as exe:
            results = exe.map(pair, short(), longer())
            assert await results.__anext__() == (0, 0)  # the read of item 1 waits on gate
            gate.set()
            await closing.wait()  # the reader ends in that same step
            await results.aclose()
    assert len(reports) == 1
    assert reports[0]["message"] == "an error occurred during closing of a map's input"
    assert isinstance(reports[0]["exception"], OSError)


async def test_a_map_closed_while_it_closes_its_inputs_still_closes_every_one(
    loop_kind: str,
) -> None:
    """The shortest input ran out and the reader closes the others (the last first); the
    consumer closes the map while one's clean-up waits: that clean-up is cancelled, and
    the reader still closes the remaining input, in its own task, before aclose() of the
    map returns."""
    gate, closing = asyncio.Event(), asyncio.Event()
    closed_in: list[asyncio.Task[Any] | None] = []

    async def short() -> AsyncIterator[int]:
        yield 0
        await gate.wait()

    async def endless() -> AsyncIterator[int]:
        try:
            while True:
                yield 0
        finally:
            closed_in.append(asyncio.current_task())

    async def slow_to_close() -> AsyncIterator[int]:
        try:
            while True:
                yield 0
        finally:
            closing.set()
            await asyncio.Event().wait()  # until the map's close cancels it

    async with CoroutineExecutor(max_workers=2) as exe:
        results = exe.map(pair, short(), endless(), slow_to_close())
        assert await results.__anext__() == (0, 0, 0)
        gate.set()
        await asyncio.wait_for(closing.wait(), 5)
        await results.aclose()
        assert len(closed_in) == 1 and closed_in[0] is not asyncio.current_task()


#
# asyncio.run() ending is not a job failure
#


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="a task's pending cancels are counted from 3.11"
)
@pytest.mark.parametrize("consumer", ["none", "waiting"])
@pytest.mark.parametrize("settled", ["in-line", "hook"])
def test_the_end_of_asyncio_run_lets_an_input_finish_its_clean_up(
    settled: str, consumer: str
) -> None:
    """Regression: with no block and no shutdown(), the end of asyncio.run() cancels the
    map's jobs and its reader; fail-fast took a job's cancel for a job error and cancelled
    the reader again, interrupting the input's awaiting clean-up (its ``finally: await
    ...``) (found by a docs-only tester). That cancel is the loop's teardown, not a job
    failure: nothing is cancelled twice."""
    ending = _EndingMap(settled)
    _results, exe, _ = asyncio.run(ending.main(consumer == "waiting"))
    assert ending.log == ["clean-up begins", "clean-up ends"]
    stats = exe.stats
    assert stats.failed == 0 and stats.cancelled == stats.submitted - 1  # all but job 0


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="a task's pending cancels are counted from 3.11"
)
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
def test_an_input_error_as_asyncio_run_ends_is_reported_once(
    loop_kind: str, ordered: bool
) -> None:
    """Regression (found by a docs-only tester): a map still open as asyncio.run() ends,
    its consumer waiting in another task. The end cancels the consumer, whose cancel
    closes the map, and the reader, whose input's clean-up then raises. The reader
    reported that error as a closed map's ("an error occurred during closing of") and
    ended with it, which asyncio reported a second time: now asyncio's report only, as
    for an error a job answers that cancel with."""
    error = OSError("could not release the file")
    reports: list[tuple[str, BaseException | None]] = []
    kept: list[Any] = []  # the executor, the map and its consumer: open as main() returns
    reading = asyncio.Event()

    async def lines() -> AsyncIterator[int]:
        try:
            reading.set()
            await asyncio.Event().wait()
            yield 1
        finally:
            await asyncio.sleep(0)  # (the consumer's cancel closes the map meanwhile)
            raise error

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: reports.append((context["message"], context.get("exception")))
        )
        exe = CoroutineExecutor()
        results = (exe.map if ordered else exe.map_unordered)(pair, lines())
        kept.extend([exe, results, asyncio.ensure_future(results.__anext__())])
        await reading.wait()

    runner = asyncio.Runner(loop_factory=lambda: new_loop(loop_kind), debug=True)
    with runner:
        runner.run(main())
    assert reports == [("unhandled exception during asyncio.run() shutdown", error)]
    error.__traceback__ = error.__context__ = None  # (they hold the map)


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="a task's pending cancels are counted from 3.11"
)
@pytest.mark.parametrize("settled", ["in-line", "hook"])
def test_a_consumer_the_end_of_the_loop_cancels_does_not_cancel_the_reader_again(
    settled: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task waiting in the map as asyncio.run() ends is cancelled with the rest, and the
    map, closed by that cancel, cancelled its jobs and its reader again (interrupting the
    input's clean-up if the reader took its cancel first). asyncio.run() cancels every
    task once, in the order of a set: here the reader first, then the rest. The end is
    asyncio's own (asyncio.runners._cancel_all_tasks, its set put in that order): the
    executor takes cancels for the loop's end only then (a loop that other code ends by
    cancelling every task goes on, see loop_going_down)."""
    ending = _EndingMap(settled)
    loop = asyncio.new_event_loop()
    try:
        _results, exe, waiting = loop.run_until_complete(ending.main(True))
        reader = ending.reader
        assert reader is not None and waiting is not None
        ordered = [reader, *(t for t in asyncio.all_tasks(loop) if t is not reader)]
        monkeypatch.setattr(asyncio.tasks, "all_tasks", lambda loop=None: ordered)
        asyncio.runners._cancel_all_tasks(loop)  # type: ignore[attr-defined]  # asyncio.run()'s end
        monkeypatch.undo()
        assert ending.cleaning.is_set()
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    assert ending.log == ["clean-up begins", "clean-up ends"]
    assert exe.stats.failed == 0


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="a task's pending cancels are counted from 3.11"
)
@pytest.mark.parametrize("settled", ["in-line", "hook"])
def test_a_map_the_collector_drops_as_the_loop_ends_cancels_nothing_again(
    loop_kind: str, settled: str
) -> None:
    """A map left open in a reference cycle as main() returns is dropped when the
    collector reclaims it: here in a callback of the loop's end, outside any task, after
    asyncio.run() has cancelled its jobs and its reader. Its close cancelled them again,
    interrupting the clean-ups the loop waits for (their ``finally: await ...``): it
    took those cancels for the loop's end only when closed in a task the end had
    cancelled. Outside any task it asks its own jobs, and cancels nothing twice."""
    log: list[str] = []
    kept: list[asyncio.Future[None]] = []
    released, parked = asyncio.Event(), asyncio.Event()

    async def source() -> AsyncIterator[int]:
        try:
            for i in range(10):
                yield i
        finally:
            log.append("input: clean-up begins")
            await released.wait()
            log.append("input: clean-up ends")

    async def step(i: int) -> int:
        if i == 0:
            return i
        parked.set()
        try:
            await asyncio.Event().wait()
        finally:
            log.append(f"job {i}: clean-up begins")
            await released.wait()
            log.append(f"job {i}: clean-up ends")
        return i

    def collect() -> None:  # a callback: no task is current
        gc.collect()  # drops the map
        released.set()

    async def collect_as_the_loop_ends() -> None:
        try:
            await asyncio.Event().wait()
        finally:  # cancelled by the loop's end, with the jobs and the reader
            asyncio.get_running_loop().call_soon(collect)

    async def main() -> CoroutineExecutor:
        hook = {"on_job_done": lambda job: None} if settled == "hook" else {}
        exe = CoroutineExecutor(max_workers=2, **hook)  # type: ignore[arg-type]
        results = exe.map(step, source(), buffersize=2)
        cycle: list[Any] = [results]
        cycle.append(cycle)  # only the collector reclaims the map
        assert await results.__anext__() == 0
        await parked.wait()
        kept.append(asyncio.ensure_future(collect_as_the_loop_ends()))
        await asyncio.sleep(0)  # (it waits: the loop's end cancels it)
        return exe

    gc.disable()  # the collector runs when collect() says so, not before
    try:
        with asyncio.Runner(loop_factory=lambda: new_loop(loop_kind), debug=True) as runner:
            exe = runner.run(main())
    finally:
        gc.enable()
    begun = sorted(entry.split(":")[0] for entry in log if entry.endswith("begins"))
    ended = sorted(entry.split(":")[0] for entry in log if entry.endswith("ends"))
    assert "input" in begun and "job 1" in begun
    assert ended == begun
    assert exe.stats.failed == 0


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="a task's pending cancels are counted from 3.11"
)
@pytest.mark.parametrize("settled", ["in-line", "hook"])
def test_jobs_queued_as_the_loop_ends_do_not_get_the_input_cancelled_again(
    loop_kind: str, settled: str
) -> None:
    """Regression (found by a docs-only tester): a map whose window is wider than the
    slots has jobs queued as asyncio.run() ends. Its consumer, cancelled by the end,
    closes it and leaves the reader to the cancel it already has; then the first job to
    end found the loop going down and dropped the queued jobs, but by cancelling the
    reader again (and every running job): the input's clean-up was interrupted."""
    log: list[str] = []
    jobs: list[asyncio.Task[Any]] = []
    kept: list[asyncio.Task[Any]] = []  # the consumer
    parked, cleaning = asyncio.Event(), asyncio.Event()

    async def source() -> AsyncIterator[int]:
        try:
            for i in range(10):
                yield i
        finally:
            cleaning.set()
            try:  # a clean-up that awaits, step by step, until the jobs have ended
                while not all(job.done() for job in jobs):
                    await asyncio.sleep(0)
                await asyncio.sleep(0)  # (their done callbacks ran before this)
                log.append("input: clean-up ends")
            except asyncio.CancelledError:
                log.append("input: clean-up cancelled a second time")
                raise

    async def step(i: int) -> int:
        task = asyncio.current_task()
        assert task is not None
        jobs.append(task)
        if len(jobs) == 2:
            parked.set()  # jobs 0 and 1 run; 2 and 3 are queued
        try:
            await asyncio.Event().wait()
        finally:  # until the consumer has closed the map and the input's clean-up began
            while not (kept[0].done() and cleaning.is_set()):
                await asyncio.sleep(0)
        return i

    async def main() -> CoroutineExecutor:
        hook = {"on_job_done": lambda job: None} if settled == "hook" else {}
        exe = CoroutineExecutor(max_workers=2, **hook)  # type: ignore[arg-type]
        results = exe.map(step, source(), buffersize=4)
        kept.append(asyncio.ensure_future(_consume_all(results)))
        await parked.wait()
        await asyncio.wait(kept, timeout=0)  # (one turn: the consumer waits in the map)
        assert exe.stats.queued == 2
        return exe

    with asyncio.Runner(loop_factory=lambda: new_loop(loop_kind), debug=True) as runner:
        exe = runner.run(main())
    assert log == ["input: clean-up ends"]
    assert exe.stats.failed == 0 and kept[0].cancelled()


class _EndingMap:
    """A map left open as its loop ends: job 0 done, job 1 parked, the input's clean-up
    (its ``finally``) waiting for job 1 to end."""

    def __init__(self, settled: str) -> None:
        self.settled = settled
        self.log: list[str] = []
        self.job: asyncio.Task[Any] | None = None  # job 1's
        self.reader: asyncio.Task[Any] | None = None  # the map's reading task
        self.parked, self.cleaning = asyncio.Event(), asyncio.Event()

    async def source(self) -> AsyncIterator[int]:
        self.reader = asyncio.current_task()
        try:
            for i in range(10):
                yield i
        finally:
            self.log.append("clean-up begins")
            self.cleaning.set()
            assert self.job is not None
            await asyncio.wait([self.job])  # job 1 settles meanwhile
            self.log.append("clean-up ends")

    async def step(self, i: int) -> int:
        if i == 0:
            return i
        if i == 1:
            self.job = asyncio.current_task()
            self.parked.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await self.cleaning.wait()  # ends cancelled once the input's clean-up has begun
            raise
        return i

    async def main(self, waiting: bool) -> Any:
        hook = {"on_job_done": lambda job: None} if self.settled == "hook" else {}
        exe = CoroutineExecutor(max_workers=2, **hook)  # type: ignore[arg-type]
        results = exe.map(self.step, self.source(), buffersize=2)
        assert await results.__anext__() == 0
        await self.parked.wait()
        consumer = None
        if waiting:  # a task waits in the map for job 1 as the loop ends
            consumer = asyncio.ensure_future(_consume(results))
            await asyncio.wait([consumer], timeout=0)  # (one turn: it is in the map)
        return results, exe, consumer  # kept open: the loop ends with job 1 parked


async def _consume(results: Any) -> Any:
    return await results.__anext__()


async def _consume_all(results: Any) -> None:
    async for _ in results:
        pass
