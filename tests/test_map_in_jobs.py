"""A map read by one of its executor's own jobs, as the block exits (semantics.rst,
"Leaving a map() early": the block's exit closes the maps whose results nobody would
read; "Jobs that submit jobs": the block waits for every job, new ones too)."""

from __future__ import annotations

import asyncio

import pytest

from coroexecutor import CoroutineExecutor


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("settled", ["in-line", "hook"])
async def test_a_job_reading_a_map_of_its_executor_finishes_it_after_the_body_ends(
    loop_kind: str, ordered: bool, settled: str
) -> None:
    """A job that reads a map of its own executor while the block's body ends: the exit
    closed that map, so the job failed with RuntimeError("cannot schedule new futures
    after shutdown") and the block raised it (found by a docs-only tester; under an eager
    task factory even with no await in the body). The exit waits for that job, which
    reads the map to its end."""
    first = asyncio.Event()
    release = asyncio.Event()

    async def fetch(n: int) -> int:
        if n == 0:
            first.set()
        else:
            await release.wait()
        return n

    async def crawl(exe: CoroutineExecutor) -> list[int]:
        mapper = exe.map if ordered else exe.map_unordered
        return [r async for r in mapper(fetch, range(10))]

    hook = {"on_job_done": lambda job: None} if settled == "hook" else {}
    async with CoroutineExecutor(max_workers=4, **hook) as exe:
        task = await exe.submit(crawl, exe)
        await first.wait()  # the job's map runs: the body ends now
        asyncio.get_running_loop().call_soon(release.set)
    assert sorted(task.result()) == list(range(10))
    if ordered:
        assert task.result() == list(range(10))
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (11, 0, 0)


async def test_a_map_a_job_made_is_still_closed_by_fail_fast(loop_kind: str) -> None:
    """The exit leaves a job's map open; fail-fast does not: the job is cancelled and its
    map with it, and the block raises the error."""
    started = asyncio.Event()

    async def fetch(n: int) -> int:
        if n == 0:
            started.set()
            await asyncio.Event().wait()  # never set: ended by the cancel
        return n

    async def crawl(exe: CoroutineExecutor) -> list[int]:
        return [r async for r in exe.map(fetch, range(4))]

    async def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        async with CoroutineExecutor(max_workers=4) as exe:
            task = await exe.submit(crawl, exe)
            await started.wait()
            await exe.submit(boom)
            await asyncio.Event().wait()  # interrupted by fail-fast
    assert task.cancelled()
    assert exe.stats.running == 0 and exe.stats.queued == 0


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
async def test_a_map_a_nested_executors_job_made_is_left_open_by_the_exit(
    loop_kind: str, ordered: bool
) -> None:
    """A job of an inner executor (entered inside a job of the outer one) reads a map of
    the outer executor while the outer body ends: that job is inside one of the outer's
    jobs too, as for shutdown()'s "who waits" rule. The exit closed the map when it was
    opened before the exit began (RuntimeError in the inner job, raised by the block; found
    by a docs-only tester); the exit waits for the job, which reads the map to its end."""
    opened = asyncio.Event()
    release = asyncio.Event()

    async def item(n: int) -> int:
        await release.wait()
        return n

    async def inner_job(outer: CoroutineExecutor) -> list[int]:
        mapper = outer.map if ordered else outer.map_unordered
        results = mapper(item, range(5))
        opened.set()
        return [r async for r in results]

    async def job(outer: CoroutineExecutor) -> list[int]:
        async with CoroutineExecutor(max_workers=2) as inner:
            task = await inner.submit(inner_job, outer)
        return task.result()

    async with CoroutineExecutor(max_workers=4) as exe:
        task = await exe.submit(job, exe)
        await opened.wait()  # the map is open before the exit begins
        asyncio.get_running_loop().call_soon(release.set)
    assert sorted(task.result()) == list(range(5))
    assert exe.stats.failed == 0
