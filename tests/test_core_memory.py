"""No per-job bookkeeping survives a finished job: peak memory does not grow with the
number of jobs pushed through the executor (a small-scale version of the benchmark).
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable
from typing import Any, Callable

from coroexecutor import CoroutineExecutor

SMALL, LARGE = 2_000, 20_000
WORKERS = 100


async def noop(*_: object) -> None:
    await asyncio.sleep(0)


async def push_with_submit(n: int, keep: list[Any] | None = None) -> None:
    async with CoroutineExecutor(max_workers=WORKERS) as exe:
        for _ in range(n):
            task = await exe.submit(noop)
            if keep is not None:
                keep.append(task)


async def push_with_map(n: int) -> None:
    async with CoroutineExecutor(max_workers=WORKERS) as exe:
        async for _ in exe.map(noop, (i for i in range(n))):
            pass


async def push_with_map_unordered(n: int) -> None:
    async with CoroutineExecutor(max_workers=WORKERS) as exe:
        async for _ in exe.map_unordered(noop, (i for i in range(n))):
            pass


async def peak_of(run: Callable[[], Awaitable[None]]) -> int:
    """Peak traced memory of ``run()`` above what was allocated before it."""
    gc.collect()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    await run()
    peak = tracemalloc.get_traced_memory()[1]
    return peak - before


async def peaks(push: Callable[[int], Awaitable[None]]) -> tuple[int, int]:
    # Debug mode records a stack for every task: correct, but far too slow under tracemalloc
    # for tens of thousands of jobs, and it is not what is measured here.
    loop = asyncio.get_running_loop()
    debug = loop.get_debug()
    loop.set_debug(False)
    tracemalloc.start()
    try:
        await peak_of(lambda: push(SMALL))  # warm-up: caches, code objects, free lists
        small = await peak_of(lambda: push(SMALL))
        large = await peak_of(lambda: push(LARGE))
    finally:
        tracemalloc.stop()
        loop.set_debug(debug)
    return small, large


async def test_submit_memory_does_not_grow_with_job_count() -> None:
    small, large = await peaks(push_with_submit)
    assert large <= 1.5 * small, f"{SMALL} jobs: {small} B peak; {LARGE} jobs: {large} B peak"


async def test_the_measurement_sees_kept_handles() -> None:
    # Control: keeping every task handle must show up, or the test above proves nothing.
    async def push_and_keep(n: int) -> None:
        await push_with_submit(n, keep=[])

    small, large = await peaks(push_and_keep)
    assert large > 3 * small


async def test_map_memory_does_not_grow_with_input_size() -> None:
    small, large = await peaks(push_with_map)
    assert large <= 1.5 * small, f"{SMALL} jobs: {small} B peak; {LARGE} jobs: {large} B peak"


async def test_map_unordered_memory_does_not_grow_with_input_size() -> None:
    small, large = await peaks(push_with_map_unordered)
    assert large <= 1.5 * small, f"{SMALL} jobs: {small} B peak; {LARGE} jobs: {large} B peak"
