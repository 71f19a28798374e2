"""CoroutineExecutor.map() and map_unordered(): order, laziness, inputs, the window,
leaving early, and return_exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, ExecutorTimeoutError, MapIterator, Retry

SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"

async def yield_many(times: int = 20) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


class PullCounter:
    """A lazy input that records how far it has been pulled."""

    def __init__(self, limit: int | None = None) -> None:
        self.pulled = 0
        self.limit = limit

    def __iter__(self) -> Iterator[int]:
        while self.limit is None or self.pulled < self.limit:
            self.pulled += 1
            yield self.pulled - 1

    async def agen(self) -> AsyncIterator[int]:
        while self.limit is None or self.pulled < self.limit:
            await asyncio.sleep(0)
            self.pulled += 1
            yield self.pulled - 1


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


#
# Order
#


async def test_map_yields_results_in_input_order(loop_kind: str) -> None:
    n = 6
    gates = [asyncio.Event() for _ in range(n)]
    gates[-1].set()
    completed: list[int] = []

    async def job(i: int) -> int:
        await gates[i].wait()
        completed.append(i)
        if i > 0:
            gates[i - 1].set()  # the jobs finish last-to-first
        return i * 10

    async with CoroutineExecutor(max_workers=n) as exe:
        results = [r async for r in exe.map(job, range(n))]
    assert completed == list(reversed(range(n)))
    assert results == [i * 10 for i in range(n)]


async def test_map_unordered_yields_results_in_completion_order(loop_kind: str) -> None:
    gates = [asyncio.Event() for _ in range(5)]
    release_order = [3, 0, 4, 1, 2]

    async def job(i: int) -> int:
        await gates[i].wait()
        return i

    async with CoroutineExecutor(max_workers=5) as exe:
        results: list[int] = []
        it = exe.map_unordered(job, range(5))
        gates[release_order[0]].set()
        async for r in it:
            results.append(r)
            if len(results) < 5:
                gates[release_order[len(results)]].set()
    assert results == release_order


async def test_map_of_empty_input_yields_nothing_and_starts_nothing(loop_kind: str) -> None:
    async with CoroutineExecutor() as exe:
        assert [r async for r in exe.map(double, [])] == []
        assert [r async for r in exe.map_unordered(double, iter(()))] == []
        assert exe.stats.submitted == 0


async def test_map_returns_a_map_iterator_that_ends_once(loop_kind: str) -> None:
    async with CoroutineExecutor() as exe:
        it = exe.map(double, [1, 2])
        assert isinstance(it, MapIterator)
        assert it.__aiter__() is it
        assert [r async for r in it] == [2, 4]
        with pytest.raises(StopAsyncIteration):
            await it.__anext__()


#
# Lazy input and the window
#


@pytest.mark.parametrize("buffersize", [1, 3, 8])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_map_pulls_input_lazily_within_buffersize(
    loop_kind: str, buffersize: int, ordered: bool
) -> None:
    source = PullCounter()  # endless: only a lazy map can work through it
    received = 0

    async def job(i: int) -> int:
        for _ in range(i % 3):
            await asyncio.sleep(0)
        return i

    async with CoroutineExecutor(max_workers=4) as exe:
        mapper = exe.map if ordered else exe.map_unordered
        async for _ in mapper(job, source, buffersize=buffersize):
            received += 1
            assert source.pulled - received <= buffersize
            if received == 40:
                break
    assert source.pulled <= 40 + buffersize


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_rate_limited_map_keeps_starting_jobs_while_its_head_runs(
    loop_kind: str, ordered: bool
) -> None:
    """max_per_second bounds starts per second, not concurrency: with burst=1 the map
    started one job, found no token for the next and waited for that job's result, so
    only one job ran at a time (and fail-fast waited for a parked job for ever). The rate
    is low enough that no token arrives between two starts in one step, and high enough
    that the tokens for every job come well within the bound."""
    release = asyncio.Event()
    all_started = asyncio.Event()
    started: list[int] = []
    inputs = 5

    async def job(n: int) -> int:
        started.append(n)
        if len(started) == inputs:
            all_started.set()
        if n == 0:
            await release.wait()  # the head of the map, parked
        return n

    async with CoroutineExecutor(max_per_second=200) as exe:
        results = (exe.map if ordered else exe.map_unordered)(job, range(inputs))
        consumer = asyncio.ensure_future(_collect(results))
        await asyncio.wait_for(all_started.wait(), 5)  # every job starts while job 0 runs
        assert exe.stats.running == 1  # only the parked head is left
        release.set()
        values = await asyncio.wait_for(consumer, 5)
    assert sorted(values) == list(range(inputs))
    if ordered:
        assert values == list(range(inputs))


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_rate_limited_map_job_error_is_not_held_up_by_a_parked_job(
    loop_kind: str, ordered: bool
) -> None:
    failed = asyncio.Event()

    async def job(n: int) -> None:
        if n == 0:
            await asyncio.Event().wait()  # parked until fail-fast cancels it
        if n == 1:
            failed.set()
            raise ValueError("job 1 failed")

    consumer: asyncio.Future[list[Any]] | None = None
    with pytest.raises(ValueError, match="job 1 failed"):
        async with CoroutineExecutor(max_per_second=200) as exe:
            consumer = asyncio.ensure_future(
                _collect((exe.map if ordered else exe.map_unordered)(job, range(3)))
            )
            await asyncio.wait_for(failed.wait(), 5)
            await asyncio.wait_for(consumer, 5)
    # Fail-fast may interrupt the body before it awaits the consumer (3.12+: wait_for
    # adds no task, so that depends on the order of two ready callbacks). The consumer
    # then ends with the job's error, or with the error of a map the block's exit closed.
    assert consumer is not None
    (outcome,) = await asyncio.gather(consumer, return_exceptions=True)
    assert isinstance(outcome, (ValueError, RuntimeError, asyncio.CancelledError)), outcome


async def _collect(results: Any) -> list[Any]:
    return [value async for value in results]


@pytest.mark.parametrize("buffersize", [2, 5])
async def test_map_reads_no_further_while_the_head_job_is_slow(
    loop_kind: str, buffersize: int
) -> None:
    source = PullCounter()
    release_head = asyncio.Event()
    pulled_while_head_waits = -1

    async def job(i: int) -> int:
        if i == 0:
            await release_head.wait()
        return i

    async def observer() -> None:
        nonlocal pulled_while_head_waits
        await yield_many(50)
        pulled_while_head_waits = source.pulled
        release_head.set()

    async with CoroutineExecutor(max_workers=10) as exe:
        watching = asyncio.create_task(observer())
        results = []
        async for r in exe.map(job, source, buffersize=buffersize):
            results.append(r)
            if len(results) == 10:
                break
        await watching
    assert results == list(range(10))
    # The window keeps the other workers busy behind a slow head, but never more.
    assert pulled_while_head_waits == buffersize


async def test_map_window_defaults_to_max_workers(loop_kind: str) -> None:
    source = PullCounter(limit=100)
    live = peak = 0

    async def job(i: int) -> int:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await yield_many(3)
        live -= 1
        return i

    async with CoroutineExecutor(max_workers=6) as exe:
        async for r in exe.map(job, source):
            assert source.pulled - (r + 1) <= 6
    assert peak == 6


@pytest.mark.parametrize(
    ("buffersize", "error", "message"),
    [
        (0, ValueError, "buffersize must be greater than 0 (got 0)"),
        (-3, ValueError, "buffersize must be greater than 0 (got -3)"),
        (1.5, TypeError, "buffersize must be an int or None (got 1.5)"),
        ("2", TypeError, "buffersize must be an int or None (got '2')"),
        (True, TypeError, "buffersize must be an int or None (got True)"),
    ],
)
async def test_map_rejects_a_bad_buffersize(buffersize: Any, error: type, message: str) -> None:
    async with CoroutineExecutor() as exe:
        for mapper in (exe.map, exe.map_unordered):
            with pytest.raises(error, match="^" + re.escape(message) + "$"):
                mapper(double, [1], buffersize=buffersize)
        assert exe.stats.submitted == 0


async def test_map_without_an_iterable_is_a_type_error() -> None:
    async with CoroutineExecutor() as exe:
        with pytest.raises(TypeError, match=re.escape("map() must have at least one iterable")):
            exe.map(double)
        with pytest.raises(
            TypeError, match=re.escape("map_unordered() must have at least one iterable")
        ):
            exe.map_unordered(double)


#
# Inputs
#


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_map_accepts_an_async_iterable(loop_kind: str, ordered: bool) -> None:
    source = PullCounter(limit=30)
    received = 0
    async with CoroutineExecutor(max_workers=4) as exe:
        mapper = exe.map if ordered else exe.map_unordered
        results = []
        async for r in mapper(double, source.agen(), buffersize=3):
            received += 1
            assert source.pulled - received <= 3
            results.append(r)
    expected = [2 * i for i in range(30)]
    assert (results if ordered else sorted(results)) == expected


async def test_map_accepts_a_plain_async_iterable_object(loop_kind: str) -> None:
    class Countdown:
        def __init__(self, start: int) -> None:
            self.n = start

        def __aiter__(self) -> Countdown:
            return self

        async def __anext__(self) -> int:
            if self.n == 0:
                raise StopAsyncIteration
            self.n -= 1
            return self.n + 1

    async with CoroutineExecutor(max_workers=2) as exe:
        assert [r async for r in exe.map(double, Countdown(4))] == [8, 6, 4, 2]


async def test_map_zips_several_iterables_up_to_the_shortest(loop_kind: str) -> None:
    async def join(*parts: object) -> str:
        await asyncio.sleep(0)
        return "".join(map(str, parts))

    endless = PullCounter()
    async with CoroutineExecutor(max_workers=3) as exe:
        sync_only = [r async for r in exe.map(join, [1, 2, 3, 4], "abc", endless)]
        assert sync_only == ["1a0", "2b1", "3c2"]

        short = PullCounter(limit=2)
        mixed = [r async for r in exe.map(join, "xyz", short.agen(), [True] * 5)]
        assert mixed == ["x0True", "y1True"]

        unordered = [r async for r in exe.map_unordered(join, "pq", PullCounter(3).agen())]
        assert sorted(unordered) == ["p0", "q1"]


#
# A slow async input does not hold back ready results
#


async def instant(i: int) -> int:
    return i


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_ready_result_is_yielded_while_the_async_input_waits(
    loop_kind: str, ordered: bool
) -> None:
    """Regression: the map awaited its async input's next item before yielding a result
    that was ready, so a slow input held every result back until it produced its next
    item. Job 0 finishes only once the input waits for item 1, and item 1 comes only
    after result 0 was received."""
    parked, more = asyncio.Event(), asyncio.Event()

    async def source() -> AsyncIterator[int]:
        yield 0
        parked.set()
        await more.wait()
        yield 1

    async def job(i: int) -> int:
        if i == 0:
            await parked.wait()
        return i

    async def main() -> None:
        async with CoroutineExecutor(max_workers=4) as exe:
            mapper = exe.map if ordered else exe.map_unordered
            results = mapper(job, source())
            assert await results.__anext__() == 0
            assert parked.is_set() and not more.is_set()
            more.set()
            assert [r async for r in results] == [1]

    await asyncio.wait_for(main(), 5)


@pytest.mark.parametrize("buffersize", [None, 1, 2])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_an_async_input_fed_from_the_results_completes(
    loop_kind: str, buffersize: int | None, ordered: bool
) -> None:
    """Regression: an input that waits for the consumer, which waits for a result,
    deadlocked: the map waited for the input's next item before yielding result 1."""
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    queue.put_nowait(1)

    async def inputs() -> AsyncIterator[int]:
        while (n := await queue.get()) is not None:
            yield n

    async def main() -> list[int]:
        got = []
        async with CoroutineExecutor(max_workers=4) as exe:
            mapper = exe.map if ordered else exe.map_unordered
            async for r in mapper(instant, inputs(), buffersize=buffersize):
                got.append(r)
                queue.put_nowait(r + 1 if r < 5 else None)
        return got

    assert await asyncio.wait_for(main(), 5) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("buffersize", [1, 2, 3])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_an_async_input_is_read_no_further_ahead_than_the_window(
    loop_kind: str, buffersize: int, ordered: bool
) -> None:
    """The pending read runs while results are yielded, but a read begins only while the
    window has room: items asked for never exceed the results received + buffersize."""
    received = 0
    ahead: list[int] = []

    async def source() -> AsyncIterator[int]:
        for i in range(40):
            ahead.append(i + 1 - received)  # items asked for, minus results received
            await asyncio.sleep(0)  # a suspension, so results are ready while it reads
            yield i

    async with CoroutineExecutor(max_workers=8) as exe:
        mapper = exe.map if ordered else exe.map_unordered
        results = []
        async for r in mapper(double, source(), buffersize=buffersize):
            received += 1
            results.append(r)
    assert (results if ordered else sorted(results)) == [2 * i for i in range(40)]
    assert max(ahead) <= buffersize


async def test_an_async_input_that_raises_while_results_are_ready(loop_kind: str) -> None:
    """An input's error is raised from the iterator, as before; the map's in-flight jobs
    are cancelled (results ready before the input raised are yielded first)."""
    jobs = ParkedJobs()
    raised = asyncio.Event()

    async def source() -> AsyncIterator[int]:
        yield 0
        yield 1
        await raised.wait()
        raise ValueError("bad input")

    async def main() -> None:
        async with CoroutineExecutor(max_workers=4) as exe:
            results = exe.map(jobs.job, source())
            assert await results.__anext__() == 0
            raised.set()
            with pytest.raises(ValueError, match="bad input"):
                await results.__anext__()
            with pytest.raises(StopAsyncIteration):
                await results.__anext__()

    await asyncio.wait_for(main(), 5)
    assert jobs.started == jobs.cancelled == 1


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout() is new in 3.11")
@pytest.mark.parametrize("buffersize", [1, 3])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_an_async_generator_input_runs_in_one_task(
    loop_kind: str, buffersize: int, ordered: bool
) -> None:
    """Regression: each item of an async input was read by a task of its own, so an
    async generator that holds a context manager open across its yields entered it in
    one task and went on (and exited it) in others. Here every item is read in the same
    task, and an ``asyncio.timeout()`` held across the yields cancels that task: the
    deadline, moved to now after item 5, ends the wait below with TimeoutError (it
    cancelled a finished task before, and the input hung)."""
    tasks: set[asyncio.Task[Any] | None] = set()

    async def source() -> AsyncIterator[int]:
        try:
            async with asyncio.timeout(5) as deadline:
                for i in range(6):
                    tasks.add(asyncio.current_task())
                    await asyncio.sleep(0)  # a suspension: results are ready meanwhile
                    yield i
                tasks.add(asyncio.current_task())
                deadline.reschedule(asyncio.get_running_loop().time())
                await asyncio.Event().wait()  # <- CancelledError, by the deadline
        except TimeoutError:
            yield -1

    async def main() -> list[int]:
        async with CoroutineExecutor(max_workers=4) as exe:
            mapper = exe.map if ordered else exe.map_unordered
            return [r async for r in mapper(instant, source(), buffersize=buffersize)]

    results = await asyncio.wait_for(main(), 5)
    expected = [0, 1, 2, 3, 4, 5, -1]
    assert (results if ordered else sorted(results)) == (expected if ordered else sorted(expected))
    assert len(tasks) == 1 and asyncio.current_task() not in tasks


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout() is new in 3.11")
@pytest.mark.parametrize("how", ["break", "aclose", "exhausted"])
async def test_an_async_generator_input_is_closed_in_the_task_it_ran_in(
    loop_kind: str, how: str
) -> None:
    """Closing the map closes its async generator input (its ``finally`` runs, the
    timeout it holds exits) in the reader task where the generator ran, not in the
    consumer or in a finaliser task a turn later."""
    ran_in: list[asyncio.Task[Any] | None] = []
    closed_in: list[asyncio.Task[Any] | None] = []

    async def source() -> AsyncIterator[int]:
        async with asyncio.timeout(5):
            try:
                for i in range(3):
                    ran_in.append(asyncio.current_task())
                    yield i
            finally:
                closed_in.append(asyncio.current_task())

    async def main() -> None:
        async with CoroutineExecutor(max_workers=4) as exe:
            results = exe.map(instant, source(), buffersize=1)
            if how == "break":
                async for _ in results:
                    break
            elif how == "aclose":
                assert await results.__anext__() == 0
                await results.aclose()
            else:
                assert [r async for r in results] == [0, 1, 2]

    await asyncio.wait_for(main(), 5)
    assert len(set(ran_in)) == 1 and closed_in == ran_in[:1]

@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_an_async_input_that_shuts_the_executor_down_is_read_no_further(
    loop_kind: str, ordered: bool
) -> None:
    """The input itself calls shutdown() while the map reads it: the reading task, which
    cannot be cancelled from within, stops after that item and closes the input (no task
    is left waiting for room to read more: conftest checks)."""
    closed = asyncio.Event()
    exe = CoroutineExecutor(max_workers=4)

    async def source() -> AsyncIterator[int]:
        try:
            yield 0
            await exe.shutdown(wait=False)
            for i in range(1, 100):
                yield i
        finally:
            closed.set()

    async def main() -> None:
        mapper = exe.map if ordered else exe.map_unordered
        results = mapper(instant, source(), buffersize=2)
        with pytest.raises(RuntimeError, match=re.escape(SHUTDOWN_MESSAGE)):
            async for _ in results:
                pass
        await closed.wait()

    await asyncio.wait_for(main(), 5)

class ParkedSource:
    """An async iterator: item 0 at once, then a read that waits until it is cancelled.
    Records the cancellation and aclose()."""

    def __init__(self) -> None:
        self.served = 0
        self.parked = asyncio.Event()
        self.read_cancelled = False
        self.closed = asyncio.Event()

    def __aiter__(self) -> ParkedSource:
        return self

    async def __anext__(self) -> int:
        if self.served == 0:
            self.served = 1
            return 0
        self.parked.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.read_cancelled = True
            raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self.closed.set()


@pytest.mark.parametrize(
    "how", ["break", "aclose", "block_exit", "shutdown", "consumer_cancelled"]
)
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_closing_a_map_cancels_its_pending_read_and_closes_the_input(
    loop_kind: str, how: str, ordered: bool
) -> None:
    """A map closed while it reads its async input's next item (the consumer holding a
    result, or waiting in the map) cancels that read and closes the input with aclose();
    no task is left behind (conftest checks)."""
    source = ParkedSource()

    async def job(i: int) -> int:
        await source.parked.wait()  # result 0 is ready only once the read waits
        return i

    async def main() -> None:
        exe = CoroutineExecutor(max_workers=4)
        async with exe:
            mapper = exe.map if ordered else exe.map_unordered
            if how == "break":
                async for r in mapper(job, source):
                    assert r == 0
                    break
            elif how == "consumer_cancelled":
                results = mapper(job, source)

                async def consume() -> None:
                    async for _ in results:
                        pass

                consumer = asyncio.ensure_future(consume())
                await source.parked.wait()  # the consumer waits in the map from here
                consumer.cancel()
                await asyncio.wait({consumer}, timeout=5)
                assert consumer.cancelled()
            else:
                results = mapper(job, source)
                assert await results.__anext__() == 0
                if how == "aclose":
                    await results.aclose()
                    assert source.read_cancelled  # aclose() waited for the read
                elif how == "shutdown":
                    await exe.shutdown(wait=True)
            # block_exit: the exit closes it
        await asyncio.wait_for(source.closed.wait(), 5)
        assert source.read_cancelled

    await asyncio.wait_for(main(), 5)


#
# Leaving a map early
#


class ParkedJobs:
    """Job 0 returns at once; every other job parks until it is cancelled."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.completed: list[int] = []

    async def job(self, i: int) -> int:
        if i == 0:
            self.completed.append(i)
            return i
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.completed.append(i)
        return i


async def ok_job() -> str:
    await asyncio.sleep(0)
    return "still accepting"


@pytest.mark.parametrize("how", ["break", "consumer_error", "aclose", "async_with"])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_leaving_a_map_early_cancels_its_jobs_and_not_the_block(
    loop_kind: str, how: str, ordered: bool
) -> None:
    jobs = ParkedJobs()
    source = PullCounter()

    async with CoroutineExecutor(max_workers=10) as exe:
        mapper = exe.map if ordered else exe.map_unordered
        if how == "break":
            async for first in mapper(jobs.job, source, buffersize=4):
                assert first == 0
                break
        elif how == "consumer_error":

            async def consume() -> None:
                async for first in mapper(jobs.job, source, buffersize=4):
                    assert first == 0
                    raise LookupError("consumer gave up")

            with pytest.raises(LookupError, match="consumer gave up"):
                await consume()
        elif how == "aclose":
            it = mapper(jobs.job, source, buffersize=4)
            assert await it.__anext__() == 0
            await it.aclose()
            # aclose() returns once the in-flight jobs have finished cancelling.
            assert jobs.cancelled == jobs.started
            with pytest.raises(StopAsyncIteration):
                await it.__anext__()
        else:
            async with mapper(jobs.job, source, buffersize=4) as it:
                async for first in it:
                    assert first == 0
                    break
            assert jobs.cancelled == jobs.started

        # The executor is still running normally: leaving a map is not an error.
        task = await exe.submit(ok_job)
        assert await task == "still accepting"

    assert jobs.started == 3, "the window should have started jobs 1-3"
    assert jobs.cancelled == jobs.started
    assert jobs.completed == [0]
    assert source.pulled <= 5
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (2, 0, 3)


async def test_a_map_left_early_does_not_cancel_other_jobs(loop_kind: str) -> None:
    jobs = ParkedJobs()
    release = asyncio.Event()
    bystander_done = False

    async def bystander() -> None:
        nonlocal bystander_done
        await release.wait()
        bystander_done = True

    async with CoroutineExecutor(max_workers=10) as exe:
        await exe.submit(bystander)
        async for _ in exe.map(jobs.job, range(5)):
            break
        await yield_many()
        assert jobs.cancelled == jobs.started == 4
        release.set()
    assert bystander_done


#
# return_exceptions
#


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_map_return_exceptions_yields_errors_in_place(loop_kind: str, ordered: bool) -> None:
    errors = {i: KeyError(i) for i in (1, 4, 5)}
    release = asyncio.Event()
    bystander_done = False

    async def job(i: int) -> int:
        await asyncio.sleep(0)
        if i in errors:
            raise errors[i]
        return i

    async def bystander() -> None:
        nonlocal bystander_done
        await release.wait()
        bystander_done = True

    async with CoroutineExecutor(max_workers=3) as exe:
        await exe.submit(bystander)
        mapper = exe.map if ordered else exe.map_unordered
        results = [r async for r in mapper(job, range(8), return_exceptions=True)]
        release.set()  # the errors cancelled nothing: the bystander is still there to finish
    assert bystander_done
    if ordered:
        assert results == [0, errors[1], 2, 3, errors[4], errors[5], 6, 7]
        for i, error in errors.items():
            assert results[i] is error
    else:
        assert len(results) == 8
        assert sorted(r for r in results if isinstance(r, int)) == [0, 2, 3, 6, 7]
        assert {id(r) for r in results if isinstance(r, KeyError)} == {
            id(e) for e in errors.values()
        }
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (6, 3, 0)


async def test_map_error_is_raised_from_the_iterator(loop_kind: str) -> None:
    # Without return_exceptions a job error ends the map (and, under fail-fast, the block).
    error = ValueError("job 2 failed")
    received: list[int] = []

    async def job(i: int) -> int:
        await asyncio.sleep(0)
        if i == 2:
            raise error
        return i

    async def main() -> None:
        async with CoroutineExecutor(max_workers=1) as exe:
            async for r in exe.map(job, range(5)):
                received.append(r)

    with pytest.raises(ValueError, match="job 2 failed") as excinfo:
        await main()
    assert excinfo.value is error
    assert received == [0, 1]


ORDERED_MAP_VARIANTS: dict[str, dict[str, Any]] = {
    "in-line": {},
    "hook": {"on_job_done": lambda job: None},
    "job_timeout": {"job_timeout": 60},
    "key": {"key": lambda n: n % 2, "max_per_key": 4},
    "key, queued": {"key": lambda n: n % 2, "max_per_key": 1},  # job 3 waits behind job 1
    "retry": {"retry": Retry(attempts=2, on=(KeyError,))},
}


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("variant", list(ORDERED_MAP_VARIANTS))
async def test_a_map_cancels_its_other_jobs_as_soon_as_one_fails(
    loop_kind: str, variant: str, ordered: bool
) -> None:
    """semantics.rst, "Errors in map()": when a map job raises, the map's other in-flight
    jobs are cancelled. An ordered map did that only once its consumer reached the failed
    input: the jobs before it ran on (to the end, counted as succeeded) and a consumer
    waiting on one of them waited as long (found by a docs-only tester). The results
    ready before the failed input are still yielded; no input is started after it."""
    error = ValueError("job 2 failed")
    fail_now = asyncio.Event()
    never = asyncio.Event()
    started: list[int] = []
    cancelled: list[int] = []
    got: list[int] = []

    async def step(n: int) -> int:
        started.append(n)
        if n == 0:
            return n
        try:
            if n == 2:
                await fail_now.wait()
                raise error
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(n)
            raise
        return n

    options = ORDERED_MAP_VARIANTS[variant]
    async with CoroutineExecutor(max_workers=4, suppress_task_errors=True, **options) as exe:
        with pytest.raises(ValueError) as excinfo:
            results = exe.map(step, range(8)) if ordered else exe.map_unordered(step, range(8))
            async for value in results:
                got.append(value)
                fail_now.set()  # job 2 fails while the consumer waits on job 1
        assert excinfo.value is error
        # The consumer was woken by the failure, not by the end of job 1: job 1 and job 3
        # were cancelled, and job 4 (started as job 0 was yielded; in-line, cancelled
        # before its first step, it never ran; with key=, job 3 queued behind job 1 never
        # ran either); nothing after job 4 was started.
        assert got == [0]
        assert {0, 1, 2} <= set(started) <= {0, 1, 2, 3, 4}
        assert sorted(cancelled) == sorted(n for n in started if n not in (0, 2))
    stats = exe.stats  # (jobs settled from a done callback count a turn later)
    assert stats.submitted in (4, 5)  # job 4 started or not, by the time job 2 failed
    assert (stats.succeeded, stats.failed, stats.cancelled) == (1, 1, stats.submitted - 2)


@pytest.mark.parametrize("variant", ["in-line", "hook"])
async def test_an_ordered_map_error_after_its_head_finished_yields_the_ready_results_first(
    loop_kind: str, variant: str
) -> None:
    """Results that are ready before the failed input are still yielded, in order, before
    its error; the unfinished job ahead of it is cancelled at the failure."""
    error = ValueError("job 3 failed")
    never = asyncio.Event()
    started: list[int] = []
    cancelled: list[int] = []

    async def step(n: int) -> int:
        started.append(n)
        if n == 3:
            raise error
        if n == 2:
            try:
                await never.wait()
            except asyncio.CancelledError:
                cancelled.append(n)
                raise
        return n

    got: list[int] = []
    options = ORDERED_MAP_VARIANTS[variant]
    # More slots than the window, so a slot is free for job 4 as soon as job 0 is yielded.
    async with CoroutineExecutor(max_workers=8, suppress_task_errors=True, **options) as exe:
        with pytest.raises(ValueError) as excinfo:
            async for value in exe.map(step, range(6), buffersize=4):
                got.append(value)
        assert excinfo.value is error
    assert got == [0, 1]
    assert cancelled == [2]
    # Nothing started once job 3 had failed: under an eager task factory job 3 fails
    # inside the map's start of it, and a job settled from a done callback (the hook)
    # is looked at as the map gets it back, not a turn later.
    assert started == [0, 1, 2, 3]
    assert (exe.stats.succeeded, exe.stats.failed, exe.stats.cancelled) == (2, 1, 1)


async def test_map_after_shutdown_is_refused_when_iterated(loop_kind: str) -> None:
    async with CoroutineExecutor() as exe:
        it = exe.map(double, [1, 2, 3])
        await exe.shutdown()
        with pytest.raises(
            RuntimeError, match="^" + re.escape(SHUTDOWN_MESSAGE) + "$"
        ):
            await it.__anext__()


async def test_leaving_a_map_over_an_async_generator_early_leaks_nothing(loop_kind: str) -> None:
    source = PullCounter()
    jobs = ParkedJobs()
    async with CoroutineExecutor(max_workers=4) as exe:
        async for first in exe.map(jobs.job, source.agen(), buffersize=3):
            assert first == 0
            break
    # conftest fails the test if a task (such as an async generator finaliser) is left over.
    assert jobs.cancelled == jobs.started
    assert source.pulled <= 4


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_map_left_by_break_cancels_its_jobs_before_anything_else_runs(
    loop_kind: str, ordered: bool
) -> None:
    # No finaliser task closes the map a turn later: the jobs are cancelled at the break,
    # so the step each of them takes next is its cancellation.
    jobs = ParkedJobs()
    async with CoroutineExecutor(max_workers=10) as exe:
        mapper = exe.map if ordered else exe.map_unordered
        async for first in mapper(jobs.job, range(5)):
            assert first == 0
            break
        assert jobs.started == 4
        await asyncio.sleep(0)
        assert jobs.cancelled == 4


async def test_a_map_never_iterated_and_dropped_leaves_nothing_behind(loop_kind: str) -> None:
    async with CoroutineExecutor(max_workers=2) as exe:
        exe.map(double, range(3))  # dropped at once
        assert not exe._maps
        assert [r async for r in exe.map(double, range(3))] == [0, 2, 4]
    assert exe.stats.submitted == 3


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_aclose_from_another_task_ends_a_consumer_waiting_in_the_map(
    loop_kind: str, ordered: bool
) -> None:
    jobs = ParkedJobs()
    async with CoroutineExecutor(max_workers=4) as exe:
        it = (exe.map if ordered else exe.map_unordered)(jobs.job, [1, 2])
        consumer = asyncio.ensure_future(it.__anext__())
        await yield_many(3)
        assert not consumer.done() and jobs.started == 2
        await it.aclose()
        with pytest.raises(StopAsyncIteration):
            await consumer
        assert jobs.cancelled == 2
        with pytest.raises(StopAsyncIteration):
            await it.__anext__()
    assert (exe.stats.cancelled, exe.stats.running) == (2, 0)


async def test_a_second_consumer_at_once_is_refused_and_the_first_carries_on(
    loop_kind: str,
) -> None:
    gate = asyncio.Event()

    async def job(i: int) -> int:
        await gate.wait()
        return i

    async with CoroutineExecutor(max_workers=4) as exe:
        it = exe.map(job, range(3))
        first = asyncio.ensure_future(it.__anext__())
        await yield_many(3)
        with pytest.raises(RuntimeError, match="already running"):
            await it.__anext__()
        gate.set()
        assert await first == 0
        assert [r async for r in it] == [1, 2]


async def test_a_map_dropped_on_another_thread_has_its_jobs_cancelled_on_the_loop(
    loop_kind: str,
) -> None:
    jobs = ParkedJobs()
    async with CoroutineExecutor(max_workers=4) as exe:
        holder = [exe.map(jobs.job, range(4))]
        assert await holder[0].__anext__() == 0
        dropper = threading.Thread(target=holder.clear)
        dropper.start()
        dropper.join()
        await yield_many()
        assert jobs.cancelled == jobs.started == 3


#
# The executor closes the maps still open (issue 16)
#


@pytest.mark.parametrize("how", ["break", "never_iterated", "async_input"])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_the_block_exit_closes_a_map_left_open(
    loop_kind: str, how: str, ordered: bool
) -> None:
    """Regression: a map held in a variable and left with `break` kept its jobs running,
    and the block waited for them (here: for ever). The exit closes it: its jobs are
    cancelled as the executor's own (no error, nothing else cancelled), no more input is
    read, and iterating it afterwards raises RuntimeError."""
    jobs = ParkedJobs()
    source = PullCounter()
    release = asyncio.Event()
    bystander_done = False

    async def bystander() -> None:
        nonlocal bystander_done
        await release.wait()
        bystander_done = True

    async def main() -> MapIterator[int]:
        async with CoroutineExecutor(max_workers=10) as exe:
            await exe.submit(bystander)  # fail-fast would cancel it
            mapper = exe.map if ordered else exe.map_unordered
            inputs = source.agen() if how == "async_input" else source
            results = mapper(jobs.job, inputs, buffersize=4)
            if how != "never_iterated":
                async for first in results:
                    assert first == 0
                    break
                await yield_many()
                assert jobs.cancelled == 0  # still open
                # An async input's next item is read in a task of its own: result 0 is
                # yielded as soon as it is ready, maybe before the window is filled.
                assert jobs.started == 3 or (how == "async_input" and jobs.started <= 3)
            asyncio.get_running_loop().call_soon(release.set)  # runs once the exit began
        return results

    results = await asyncio.wait_for(main(), 5)
    assert bystander_done
    assert jobs.cancelled == jobs.started
    pulled = source.pulled
    if how == "async_input":
        assert pulled <= 4 and jobs.started <= 3
    else:
        assert jobs.started == (0 if how == "never_iterated" else 3)
        assert pulled == (0 if how == "never_iterated" else 4)
    with pytest.raises(RuntimeError, match=re.escape(SHUTDOWN_MESSAGE)):
        await results.__anext__()
    assert source.pulled == pulled
    await results.aclose()  # still allowed: nothing left to do
    stats = exe_stats = results._exe.stats
    assert (stats.failed, stats.cancelled, stats.running) == (0, jobs.cancelled, 0), exe_stats


@pytest.mark.parametrize("wait", [True, False])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_shutdown_without_a_block_closes_open_maps(
    loop_kind: str, wait: bool, ordered: bool
) -> None:
    jobs = ParkedJobs()
    exe = CoroutineExecutor(max_workers=4)
    results = (exe.map if ordered else exe.map_unordered)(jobs.job, range(10))
    async for _ in results:
        break
    assert jobs.started == 3
    await asyncio.wait_for(exe.shutdown(wait=wait), 5)  # raises no error
    if not wait:
        # shutdown(wait=False) returns before the cancelled jobs have finished cancelling
        # (on 3.9-3.11 wait_for's own task hid that by adding turns): wait for them now.
        await asyncio.wait_for(exe.shutdown(), 5)
    assert jobs.cancelled == 3
    with pytest.raises(RuntimeError, match=re.escape(SHUTDOWN_MESSAGE)):
        await results.__anext__()
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled, stats.running) == (1, 0, 3, 0)


@pytest.mark.parametrize("waits_for", ["a result", "a slot", "input", "a result, dropped"])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_the_block_exit_ends_a_consumer_waiting_inside_the_map(
    loop_kind: str, waits_for: str, ordered: bool
) -> None:
    """Another task waits inside the map's __anext__() when the block exits: it gets the
    RuntimeError at once (or, waiting for a slot, as soon as the slot arrives), never a
    hang, and the map reads no further input: a read that waits for an item is
    cancelled."""
    jobs = ParkedJobs()
    gate = asyncio.Event()
    feed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    pulled = 0

    async def slow_source() -> AsyncIterator[int]:
        nonlocal pulled
        for i in (1, 2, 3):
            pulled += 1
            if i == 2:
                await feed
            yield i

    async def holder() -> None:
        await gate.wait()

    async with CoroutineExecutor(max_workers=1 if waits_for == "a slot" else 4) as exe:
        mapper = exe.map if ordered else exe.map_unordered
        if waits_for == "a slot":
            await exe.submit(holder)  # takes the only slot
        results = mapper(jobs.job, slow_source() if waits_for == "input" else [1, 2])
        consumer = asyncio.ensure_future(results.__anext__())
        await yield_many(5)
        assert not consumer.done()
        assert jobs.started == (0 if waits_for == "a slot" else 1 if waits_for == "input" else 2)
        if waits_for == "a result, dropped":
            del results  # only the consumer's call holds the map now
        loop = asyncio.get_running_loop()
        loop.call_soon(gate.set)  # these run once the exit began
        loop.call_soon(lambda: feed.done() or feed.set_result(None))
    with pytest.raises(RuntimeError, match=re.escape(SHUTDOWN_MESSAGE)):
        await asyncio.wait_for(consumer, 5)
    assert jobs.cancelled == jobs.started
    assert pulled <= 2
    assert (exe.stats.failed, exe.stats.running) == (0, 0)
    await yield_many(3)  # the dropped input's asyncgen finaliser (asyncio's) runs a turn later


@pytest.mark.parametrize("body", ["handles the error", "raises"])
async def test_a_map_job_that_shuts_the_executor_down_is_not_cancelled_by_it(
    loop_kind: str, body: str
) -> None:
    """shutdown() from one of a map's own jobs closes the map, but cancels (and waits for)
    only the others: the caller goes on. It is still the executor's job: if the body then
    raises, the block cancels it like any other (it is not lost with its map)."""
    outcome: list[str] = []
    parked = ParkedJobs()

    async def job(exe: CoroutineExecutor, i: int) -> int:
        if i != 2:
            return await parked.job(i + 1)  # parks
        try:
            await asyncio.sleep(0)  # let the others start
            await exe.shutdown()
            outcome.append("shutdown returned")
            if body == "raises":
                await asyncio.Event().wait()  # parks: only a cancel ends it
            return i
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    async def main() -> None:
        async with CoroutineExecutor(max_workers=4) as exe:
            consume = exe.map(job, [exe] * 3, range(3))
            if body == "raises":
                async for _ in consume:
                    pass
            with pytest.raises(RuntimeError, match=re.escape(SHUTDOWN_MESSAGE)):
                async for _ in consume:
                    pass

    if body == "raises":
        with pytest.raises(RuntimeError, match=re.escape(SHUTDOWN_MESSAGE)):
            await asyncio.wait_for(main(), 5)
        assert outcome[-1] == "cancelled"  # in shutdown() or after: the block reached it
    else:
        await asyncio.wait_for(main(), 5)
        assert outcome == ["shutdown returned"]
    assert parked.cancelled == parked.started == 2


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_consumer_in_another_task_gets_the_job_error_when_the_block_exits_first(
    loop_kind: str, ordered: bool
) -> None:
    """Fail-fast interrupts the body, whose exit closes the map before the consumer, woken
    by the failed job, resumes: it must still get the job's error, not RuntimeError."""
    error = ValueError("job 2 failed")
    waiting = asyncio.Event()

    async def step(n: int) -> int:
        if n == 2:
            await waiting.wait()  # the consumer waits on this job's result by now
            raise error
        return n

    got: list[int] = []

    async def consume(exe: CoroutineExecutor) -> None:
        results = exe.map(step, [0, 1, 2]) if ordered else exe.map_unordered(step, [0, 1, 2])
        async for value in results:
            got.append(value)
            if len(got) == 2:
                waiting.set()

    with pytest.raises(ValueError) as block_error:
        async with CoroutineExecutor() as exe:
            consumer = asyncio.create_task(consume(exe))
            await asyncio.Event().wait()  # interrupted by fail-fast
    assert block_error.value is error
    with pytest.raises(ValueError) as consumer_error:
        await consumer
    assert consumer_error.value is error
    assert sorted(got) == [0, 1]


@pytest.mark.parametrize("variant", ["in-line", "hook", "job_timeout"])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("failing", [0, 1, 5], ids=["head", "second", "started later"])
async def test_the_bodys_async_for_is_interrupted_when_a_job_fails_in_its_first_step(
    loop_kind: str, ordered: bool, failing: int, variant: str
) -> None:
    """semantics.rst: under fail-fast a map consumed in the block's body is interrupted
    like the rest of the body, its ``async for`` raises CancelledError, not the job's
    error. Under an eager task factory a job that fails in its first step does so inside
    the map's own start of it, before the body awaits: the ordered map raised the job's
    ValueError from the ``async for`` (found by a docs-only tester on 3.12 and 3.13),
    and still did for a failed head settled from a done callback, which had not met
    the policy yet: the map now lets it settle first."""
    error = ValueError("step failed")

    async def step(n: int) -> int:
        if n == failing:
            raise error  # in the first step: inside create_task with an eager factory
        await asyncio.sleep(0)
        return n

    seen: list[object] = []
    with pytest.raises(ValueError) as excinfo:
        async with CoroutineExecutor(max_workers=4, **ORDERED_MAP_VARIANTS[variant]) as exe:
            results = exe.map(step, range(8)) if ordered else exe.map_unordered(step, range(8))
            try:
                async for value in results:
                    seen.append(value)
            except asyncio.CancelledError:
                seen.append("interrupted")
                raise
            except ValueError:
                seen.append("the job's error")
    assert excinfo.value is error
    assert seen[-1] == "interrupted"
    if sys.version_info >= (3, 11):
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0  # the block withdrew it


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("waits", [False, True], ids=["with jobs in flight", "for a slot"])
async def test_a_consumer_gets_the_job_error_when_a_queued_job_took_the_slot_and_failed(
    loop_kind: str, ordered: bool, waits: bool
) -> None:
    """A job queued ahead of the map's next input takes the slot a map job frees and fails:
    the map, refused its next start, must raise that job's error, the block's own object,
    not RuntimeError (found by a docs-only tester)."""
    error = ValueError("queued job failed")
    started = [asyncio.Event() for _ in range(4)]
    gates = [asyncio.Event() for _ in range(4)]
    seen: list[BaseException] = []

    async def item(n: int) -> int:
        started[n].set()
        await gates[n].wait()
        return n

    async def fails() -> None:
        raise error

    async def consume(exe: CoroutineExecutor) -> None:
        results = exe.map(item, range(4)) if ordered else exe.map_unordered(item, range(4))
        try:
            async for _ in results:
                pass
        except BaseException as exc:
            seen.append(exc)

    with pytest.raises(ValueError) as block_error:
        async with CoroutineExecutor(max_workers=2) as exe:
            consumer = asyncio.create_task(consume(exe))
            await started[1].wait()  # map jobs 0 and 1 hold both slots
            exe.submit_nowait(fails)  # queued, ahead of the map's next input
            if waits:
                gates[1].set()  # the map has no job in flight once job 0 ends too
            gates[0].set()
            await asyncio.Event().wait()  # interrupted by fail-fast
    assert block_error.value is error
    await consumer
    assert len(seen) == 1 and seen[0] is error


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("stop", ["fail-fast", "shutdown(wait=False)"])
async def test_a_return_exceptions_map_never_yields_the_executors_own_cancel(
    loop_kind: str, ordered: bool, stop: str
) -> None:
    """return_exceptions=True yields a job's errors as results, but a job the executor's
    own stop cancelled is no result of the map's: the map was cut short and raises
    RuntimeError (an ordered map yielded CancelledError(), then went on; found by a
    docs-only tester), or, if another job's error stopped the executor (fail-fast), that
    error, as any map does (semantics.rst, "Leaving a map() early")."""
    gate = asyncio.Event()
    error = LookupError("boom")

    async def work(i: int) -> int:
        if i:
            await gate.wait()
        return i

    async def boom() -> None:
        raise error

    exe = CoroutineExecutor(max_workers=4)
    results = (exe.map if ordered else exe.map_unordered)(work, range(3), return_exceptions=True)
    assert await results.__anext__() == 0
    if stop == "fail-fast":
        await asyncio.wait([await exe.submit(boom)])
    else:
        await exe.shutdown(wait=False)
    if stop == "fail-fast":
        with pytest.raises(LookupError) as raised:
            await results.__anext__()
        assert raised.value is error
        with pytest.raises(LookupError) as raised:
            await exe.shutdown()
        assert raised.value is error
    else:
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            await results.__anext__()
        await exe.shutdown()


#
# The executor's own stop closes its maps, block or not
#


@pytest.mark.parametrize("waits_for", ["a result", "input"])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_the_deadline_without_a_block_closes_open_maps(
    loop_kind: str, waits_for: str, ordered: bool
) -> None:
    """The deadline passes while the consumer waits in a map, and no block's exit will
    close it: the deadline does. The consumer gets the RuntimeError of a map the executor
    closed, not a CancelledError nobody sent its task (waiting for a result) nor a wait
    for ever (waiting for an async input's next item); the read is cancelled and the
    input closed, and shutdown() raises the timeout."""
    jobs = ParkedJobs()
    source = ParkedSource()
    exe = CoroutineExecutor(timeout=0.05)
    mapper = exe.map if ordered else exe.map_unordered
    results = mapper(jobs.job, source if waits_for == "input" else [1])

    async def consume() -> None:
        async for _ in results:  # input: job 0 returns at once, then the read parks
            pass

    with pytest.raises(RuntimeError, match=re.escape(SHUTDOWN_MESSAGE)):
        await asyncio.wait_for(consume(), 5)
    assert jobs.cancelled == jobs.started
    with pytest.raises(ExecutorTimeoutError):
        await asyncio.wait_for(exe.shutdown(), 5)
    if waits_for == "input":
        await asyncio.wait_for(source.closed.wait(), 5)
        assert source.read_cancelled
    with pytest.raises(RuntimeError, match=re.escape(SHUTDOWN_MESSAGE)):
        await results.__anext__()


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_fail_fast_without_a_block_ends_a_consumer_waiting_for_input(
    loop_kind: str, ordered: bool
) -> None:
    """A job fails while a map's consumer waits for its async input's next item, with no
    block: fail-fast closes the map, and the consumer gets that job's error, the object
    shutdown() raises, instead of waiting for ever."""
    error = ValueError("boom")
    source = ParkedSource()
    got_first = asyncio.Event()

    async def fails() -> None:
        await got_first.wait()
        await source.parked.wait()  # the consumer waits for the next item by now
        raise error

    exe = CoroutineExecutor()
    await exe.submit(fails)
    results = (exe.map if ordered else exe.map_unordered)(double, source)
    got: list[int] = []

    async def consume() -> None:
        async for value in results:
            got.append(value)
            got_first.set()

    with pytest.raises(ValueError) as consumer_error:
        await asyncio.wait_for(consume(), 5)
    assert consumer_error.value is error
    assert got == [0]
    with pytest.raises(ValueError) as shutdown_error:
        await asyncio.wait_for(exe.shutdown(), 5)
    assert shutdown_error.value is error
    await asyncio.wait_for(source.closed.wait(), 5)


@pytest.mark.parametrize("consumer", ["the body", "another task"])
@pytest.mark.parametrize("waits_for", ["a result", "input"])
async def test_the_deadline_in_a_block_interrupts_the_body_and_closes_the_maps(
    loop_kind: str, consumer: str, waits_for: str
) -> None:
    """With a block, the deadline still interrupts the body: a consumer there gets
    CancelledError, as it does from fail-fast (the block raises the timeout); a consumer
    in another task gets the RuntimeError of a map the executor closed."""
    jobs = ParkedJobs()
    source = ParkedSource()
    seen: list[str] = []

    async def consume(exe: CoroutineExecutor) -> None:
        try:
            async for _ in exe.map(jobs.job, source if waits_for == "input" else [1]):
                pass
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        except RuntimeError:
            seen.append("closed")
            raise

    async def main() -> None:
        async with CoroutineExecutor(timeout=0.05) as exe:
            if consumer == "the body":
                await consume(exe)
            else:
                task = asyncio.create_task(consume(exe))
                try:
                    await asyncio.Event().wait()  # interrupted by the deadline
                finally:
                    with pytest.raises(RuntimeError, match=re.escape(SHUTDOWN_MESSAGE)):
                        await task

    with pytest.raises(ExecutorTimeoutError):
        await asyncio.wait_for(main(), 5)
    assert seen == ["cancelled" if consumer == "the body" else "closed"]
    assert jobs.cancelled == jobs.started


#
# The block's exit and shutdown() wait for a closed map's input to close
#


class SlowClosingInput:
    """An async generator input: item 0, then a read that waits until it is cancelled;
    its ``finally`` then awaits ``release`` (set by the test) before it is done, as a
    connection closed politely would."""

    def __init__(self) -> None:
        self.cleanup_started = asyncio.Event()
        self.release = asyncio.Event()
        self.log: list[str] = []

    async def items(self) -> AsyncIterator[int]:
        try:
            yield 0
            await asyncio.Event().wait()
        finally:
            self.cleanup_started.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.log.append("cleanup interrupted")
                raise
            self.log.append("cleaned up")


@pytest.mark.parametrize("how", ["block_exit", "break", "deadline", "shutdown"])
async def test_the_block_exit_and_shutdown_wait_for_a_closed_inputs_cleanup(
    loop_kind: str, how: str
) -> None:
    """However the map was closed (the block's exit or shutdown() closing it, its consumer
    leaving it with ``break``, the deadline), the block's exit and shutdown() return only
    once its reader task has closed the async input, as aclose() of the map does: an
    input whose ``finally`` awaits is not cut short (by asyncio.run() ending, say), and
    no reader is left pending."""
    source = SlowClosingInput()

    async def main() -> None:
        exe = CoroutineExecutor(timeout=0.05 if how == "deadline" else None)
        if how == "shutdown":  # no block
            results = exe.map(double, source.items())
            assert await results.__anext__() == 0
            await exe.shutdown()
        else:
            with contextlib.suppress(ExecutorTimeoutError):
                async with exe:
                    if how == "break":
                        async for _ in exe.map(double, source.items()):
                            break
                    else:
                        results = exe.map(double, source.items())
                        assert await results.__anext__() == 0
                        if how == "deadline":
                            await asyncio.Event().wait()  # interrupted by the deadline
        source.log.append("returned")

    waiter = asyncio.ensure_future(main())
    await asyncio.wait_for(source.cleanup_started.wait(), 5)
    await yield_many(5)
    assert not waiter.done()  # still waiting for the input's cleanup
    source.release.set()
    await asyncio.wait_for(waiter, 5)
    assert source.log == ["cleaned up", "returned"]


@pytest.mark.parametrize("waits_in", ["block_exit", "shutdown"])
async def test_a_cancel_interrupts_the_wait_for_an_inputs_cleanup(
    loop_kind: str, waits_in: str
) -> None:
    """An input whose cleanup never ends by itself holds the block's exit or shutdown()
    only until their task is cancelled (an outer timeout): the reader is cancelled again,
    as the jobs are, which interrupts the cleanup, and the cancel propagates."""
    source = SlowClosingInput()

    async def main() -> None:
        exe = CoroutineExecutor()
        if waits_in == "shutdown":
            results = exe.map(double, source.items())
            assert await results.__anext__() == 0
            await exe.shutdown()
        else:
            async with exe:
                results = exe.map(double, source.items())
                assert await results.__anext__() == 0

    waiter = asyncio.ensure_future(main())
    await asyncio.wait_for(source.cleanup_started.wait(), 5)
    await yield_many(5)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 5)
    assert source.log == ["cleanup interrupted"]


async def test_shutdown_without_wait_does_not_wait_for_an_inputs_cleanup(
    loop_kind: str,
) -> None:
    """shutdown(wait=False) closes the map and returns at once, as it does for the jobs;
    a later shutdown() that waits waits for the input's cleanup too."""
    source = SlowClosingInput()
    exe = CoroutineExecutor()
    results = exe.map(double, source.items())
    assert await results.__anext__() == 0
    await exe.shutdown(wait=False)
    await asyncio.wait_for(source.cleanup_started.wait(), 5)
    assert source.log == []
    waiter = asyncio.ensure_future(exe.shutdown())
    await yield_many(5)
    assert not waiter.done()
    source.release.set()
    await asyncio.wait_for(waiter, 5)
    assert source.log == ["cleaned up"]


def test_a_loop_closed_by_hand_after_the_block_destroys_no_pending_reader() -> None:
    """Run on a loop closed by hand (no asyncio.run() to cancel leftover tasks): once the
    block has exited, no reader task of a map it closed is still pending, so none is
    destroyed pending ("Task was destroyed but it is pending! ... read_inputs()")."""
    problems: list[str] = []
    log: list[str] = []

    async def items() -> AsyncIterator[int]:
        try:
            yield 0
            await asyncio.Event().wait()
        finally:
            for _ in range(5):  # a cleanup that takes a few turns
                await asyncio.sleep(0)
            log.append("cleaned up")

    async def main() -> None:
        async with CoroutineExecutor() as exe:
            results = exe.map(double, items())
            assert await results.__anext__() == 0
        log.append("exited")

    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    loop.set_exception_handler(lambda _, context: problems.append(str(context["message"])))
    try:
        loop.run_until_complete(main())  # bounded by the test's timeout (pytest-timeout)
    finally:
        loop.close()
    gc.collect()
    assert log == ["cleaned up", "exited"]
    assert problems == []
