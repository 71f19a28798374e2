"""map() and map_unordered(): what a job's error, or its cancellation, does to its map
(semantics.rst, "Errors in map()").
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor

SETTLED: dict[str, dict[str, Any]] = {
    "in-line": {},
    "hook": {"on_job_done": lambda job: None},  # settled from a done callback
}


def cancel_on_key_error(attempt: int, exc: BaseException) -> float | None:
    """A retry policy that gives up on a KeyError with CancelledError."""
    if isinstance(exc, KeyError):
        raise asyncio.CancelledError
    return None


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("settled", list(SETTLED))
@pytest.mark.parametrize("how", ["cancelled by someone else", "raises", "retry policy raises"])
async def test_a_map_job_that_ends_cancelled_ends_its_map_at_once(
    loop_kind: str, how: str, settled: str, ordered: bool
) -> None:
    """semantics.rst: "a running job was cancelled by someone else: same as a job raising
    CancelledError", and a map job's error cancels the map's other jobs at once. An
    ordered map did not: a job cancelled, or raising CancelledError (itself or from its
    retry policy), was seen only once the consumer reached it, so the jobs ahead of it
    ran on (found by a docs-only tester). map_unordered() reacted at once; both maps now
    do, and their consumer gets CancelledError from the ``async for``."""
    started = {n: asyncio.Event() for n in range(3)}
    cancelled: list[int] = []
    tasks: dict[int, asyncio.Task[Any]] = {}

    async def all_started() -> None:
        for event in started.values():
            await event.wait()

    async def step(n: int) -> int:
        task = asyncio.current_task()
        assert task is not None
        tasks[n] = task
        started[n].set()
        if n == 1 and how == "raises":
            await all_started()
            raise asyncio.CancelledError
        if n == 1 and how == "retry policy raises":
            await all_started()
            raise KeyError(n)
        try:
            await asyncio.Event().wait()  # jobs 0 and 2 park until cancelled
        except asyncio.CancelledError:
            cancelled.append(n)
            raise
        return n

    got: list[int] = []
    options: dict[str, Any] = dict(SETTLED[settled])
    if how == "retry policy raises":
        options["retry"] = cancel_on_key_error
    async with CoroutineExecutor(max_workers=4, suppress_task_errors=True, **options) as exe:

        async def consume() -> None:
            results = exe.map(step, range(3)) if ordered else exe.map_unordered(step, range(3))
            async for value in results:
                got.append(value)

        consumer = asyncio.create_task(consume())
        await all_started()
        if how == "cancelled by someone else":
            tasks[1].cancel()
        # Without the fix the ordered map's consumer waits on job 0, which never ends.
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(consumer, 5)
        assert consumer.cancelled()  # (the CancelledError came out of the async for)
        assert got == []
        # Jobs 0 and 2 were cancelled by the map (job 1 too, from outside, if so).
        assert sorted(cancelled) == ([0, 1, 2] if how == "cancelled by someone else" else [0, 2])
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (0, 0, 3)
