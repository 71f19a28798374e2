"""The virtual-time loop the retry tests run on (tests/virtual_clock.py)."""

from __future__ import annotations

import asyncio

import pytest

from coroexecutor import CoroutineExecutor, JobTimeoutError
from tests.virtual_clock import VirtualClockLoop

pytestmark = [pytest.mark.timeout(15), pytest.mark.virtual_time]


async def test_a_sleep_returns_at_once_with_the_clock_exactly_that_much_later() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualClockLoop)
    start = loop.time()
    await asyncio.sleep(3600)  # an hour: the suite's 15 s timeout would stop a real one
    assert loop.time() - start == 3600


async def test_timers_fire_in_order_and_ready_work_runs_before_time_moves() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    seen: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        seen.append((name, loop.time() - start))

    loop.call_soon(lambda: seen.append(("soon", loop.time() - start)))
    await asyncio.gather(sleeper("two", 2), sleeper("one", 1), sleeper("zero", 0))
    assert seen == [("soon", 0), ("zero", 0), ("one", 1), ("two", 2)]


async def test_the_executors_deadlines_follow_the_loop_clock() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def parked() -> None:
        await asyncio.Event().wait()

    async with CoroutineExecutor(job_timeout=5, suppress_task_errors=True) as exe:
        task = await exe.submit(parked)
    assert isinstance(task.exception(), JobTimeoutError)
    assert loop.time() - start == 5
