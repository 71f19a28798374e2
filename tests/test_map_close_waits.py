"""Every aclose() of a map waits for its clean-up: the jobs it cancelled finish
cancelling and its reader finishes closing the async input, however many aclose() calls
there are, from which tasks, and however the map was closed first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, MapIterator

pytestmark = pytest.mark.timeout(15)


class Cleanups:
    """Jobs that park until cancelled and an async generator input, each with a clean-up
    (``finally``) that waits for ``release``. ``done``: the clean-ups that finished;
    ``interrupted``: those cancelled while they waited. A job past the ``parked`` first
    ones fails (ValueError) once those have started."""

    def __init__(self, parked: int = 2) -> None:
        self.parked = parked
        self.release = asyncio.Event()
        self.started = 0
        self.all_started = asyncio.Event()
        self.cleaning = 0
        self.all_cleaning = asyncio.Event()  # every parked job and the input clean up
        self.done: list[str] = []
        self.interrupted: list[str] = []

    async def job(self, n: int) -> int:
        if n >= self.parked:
            await self.all_started.wait()
            raise ValueError("boom")
        self.started += 1
        if self.started == self.parked:
            self.all_started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await self._clean_up(f"job {n}")
        return n

    async def lines(self) -> AsyncIterator[int]:
        try:
            for n in range(100):
                yield n
        finally:
            await self._clean_up("input")

    async def _clean_up(self, name: str) -> None:
        self.cleaning += 1
        if self.cleaning == self.parked + 1:
            self.all_cleaning.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.interrupted.append(name)
            raise
        self.done.append(name)

    def finished(self) -> list[str]:
        return sorted(self.done)


EVERYTHING = ["input", "job 0", "job 1"]


def open_map(exe: CoroutineExecutor, cleanups: Cleanups, *, ordered: bool) -> MapIterator[int]:
    return (exe.map if ordered else exe.map_unordered)(cleanups.job, cleanups.lines())


async def settle(*tasks: asyncio.Future[Any]) -> None:
    """Await tasks whose outcome the test does not look at (StopAsyncIteration, say)."""
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("second", ["another_task", "async_with_exit"])
@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_second_aclose_waits_for_the_first_ones_clean_up(
    loop_kind: str, second: str, ordered: bool
) -> None:
    """Regression (brk13 F3): while one task's aclose() waited for the jobs it cancelled
    and the input's clean-up, a second aclose() (another task's, or the ``async with``
    exit's) returned at once, before any of that had finished."""
    cleanups = Cleanups()
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Future[Any]] = []
    async with CoroutineExecutor(max_workers=2) as exe:
        try:
            async with open_map(exe, cleanups, ordered=ordered) as results:
                tasks.append(consumer := asyncio.ensure_future(results.__anext__()))
                await asyncio.wait_for(cleanups.all_started.wait(), 5)
                tasks.append(first := asyncio.ensure_future(results.aclose()))
                await asyncio.wait_for(cleanups.all_cleaning.wait(), 5)
                if second == "another_task":
                    closer = asyncio.ensure_future(results.aclose())
                    loop.call_soon(cleanups.release.set)  # after the closer's first step
                    await closer
                    assert cleanups.finished() == EVERYTHING
                else:
                    loop.call_soon(cleanups.release.set)  # after the exit's first step
            assert cleanups.finished() == EVERYTHING
            await first
            with pytest.raises(StopAsyncIteration):
                await consumer
        finally:
            cleanups.release.set()  # (failing: let the block's exit end)
            await settle(*tasks)


@pytest.mark.parametrize("how", ["consumer_cancelled", "shutdown_nowait", "its_job_failed"])
async def test_aclose_after_the_map_was_closed_otherwise_waits_for_its_clean_up(
    loop_kind: str, how: str
) -> None:
    """Regression: a map closed by its consumer's cancellation, by the executor
    (shutdown(wait=False)) or by its own job's error was still cancelling its jobs and
    closing its input when aclose() (say, its ``async with`` exit) returned at once. And
    the jobs of a map that its own job's error ended were cancelled a second time as the
    consumer took that error and the map closed, cutting their clean-up short."""
    cleanups = Cleanups()
    loop = asyncio.get_running_loop()
    failing = how == "its_job_failed"
    # Two workers: jobs 0 and 1 park. Three: job 2 fails as well, ending the map; then
    # unordered, so that its consumer takes that error while 0 and 1 are cancelling.
    async with CoroutineExecutor(max_workers=3 if failing else 2, suppress_task_errors=True) as exe:
        results = open_map(exe, cleanups, ordered=not failing)
        consumer = asyncio.ensure_future(results.__anext__())
        try:
            await asyncio.wait_for(cleanups.all_started.wait(), 5)
            if how == "consumer_cancelled":
                consumer.cancel()
            elif how == "shutdown_nowait":
                await exe.shutdown(wait=False)
            else:
                with pytest.raises(ValueError, match="boom"):
                    await consumer
            await asyncio.wait_for(cleanups.all_cleaning.wait(), 5)
            loop.call_soon(cleanups.release.set)  # after aclose()'s first step
            await results.aclose()
            # Every clean-up has ended, none interrupted. (The jobs of a map that its job's
            # error ended were cancelled as it failed, and not again as the consumer took
            # the error and closed the map.)
            assert cleanups.finished() == EVERYTHING
            assert cleanups.interrupted == []
        finally:
            cleanups.release.set()
            await settle(consumer)


async def test_a_second_aclose_cancelled_cancels_the_clean_up_again(loop_kind: str) -> None:
    """Regression: a second aclose() under an outer timeout returned at once, so the
    timeout never fired and nothing interrupted a clean-up that waits for ever; now it
    is cancelled as it waits and, as the first aclose() would, cancels the jobs and the
    reader again (and the first aclose() then returns)."""
    cleanups = Cleanups()  # `release` is never set: the clean-ups wait until cancelled
    async with CoroutineExecutor(max_workers=2) as exe:
        results = open_map(exe, cleanups, ordered=True)
        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(results.__anext__())]
        try:
            await asyncio.wait_for(cleanups.all_started.wait(), 5)
            tasks.append(first := asyncio.ensure_future(results.aclose()))
            await asyncio.wait_for(cleanups.all_cleaning.wait(), 5)
            second = asyncio.ensure_future(results.aclose())
            asyncio.get_running_loop().call_soon(second.cancel)  # its outer timeout
            with pytest.raises(asyncio.CancelledError):
                await second
            await asyncio.wait_for(first, 5)
            assert sorted(cleanups.interrupted) == EVERYTHING
        finally:
            cleanups.release.set()
            await settle(*tasks)


async def test_jobs_of_the_map_closing_it_in_their_clean_up_do_not_wait_for_each_other(
    loop_kind: str,
) -> None:
    """Another task closed the map; each of its jobs closes it again in its own clean-up.
    A job's aclose() does not wait for the map's other jobs (each would wait for the
    other), nor for itself; the first aclose() waits for them all."""
    closed_in_jobs = []
    started = asyncio.Event()
    holder: list[MapIterator[None]] = []

    async def job(n: int) -> None:
        if n == 1:
            started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await holder[0].aclose()
            closed_in_jobs.append(n)

    async with CoroutineExecutor(max_workers=2) as exe:
        results = exe.map(job, range(2))
        holder.append(results)
        consumer = asyncio.ensure_future(results.__anext__())
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.wait_for(results.aclose(), 5)
        assert sorted(closed_in_jobs) == [0, 1]
        with pytest.raises(StopAsyncIteration):
            await consumer


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_map_its_job_ended_cancels_its_other_jobs_once(
    loop_kind: str, ordered: bool
) -> None:
    """Regression: with suppress_task_errors=True, a map job's error cancels the map's
    other jobs; leaving the map with that error (the ``async for`` raising it) cancelled
    them again, interrupting the clean-up the first cancel started. Each job is
    cancelled once, as a TaskGroup's, and the block's exit waits for its clean-up."""
    release = asyncio.Event()
    cleaning = 0
    all_cleaning = asyncio.Event()
    cancels: dict[int, int] = {}
    done: list[int] = []

    async def job(n: int) -> int:
        nonlocal cleaning
        if n == 0:
            await all_started.wait()
            raise ValueError("boom")
        started.append(n)
        if len(started) == 2:
            all_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancels[n] = cancels.get(n, 0) + 1
            cleaning += 1
            if cleaning == 2:
                all_cleaning.set()
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancels[n] += 1
                raise
            done.append(n)
            raise
        return n

    started: list[int] = []
    all_started = asyncio.Event()
    async with CoroutineExecutor(max_workers=3, suppress_task_errors=True) as exe:
        with pytest.raises(ValueError, match="boom"):
            async for _ in (exe.map if ordered else exe.map_unordered)(job, range(3)):
                pass
        await asyncio.wait_for(all_cleaning.wait(), 5)
        # Let anything that would cancel them again run before the clean-ups may end.
        await asyncio.sleep(0)
        release.set()
    assert sorted(done) == [1, 2]
    assert cancels == {1: 1, 2: 1}
