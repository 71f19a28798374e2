"""CoroutineExecutor.stats belongs to its loop's thread while that loop runs (brk35 F1).

Read from a monitoring thread while the loop moved jobs, it was accepted and returned
snapshots that broke ExecutorStats' sum (``submitted=12601`` against counts summing to
12664), and with ``key=`` it sometimes raised an internal "dictionary changed size during
iteration". It now raises a RuntimeError at the call, as the setters do from there, and
says what to do instead. Before first use and once the loop has stopped, any thread (any
loop) reads it. LoopExecutor.stats stays readable from every thread, at every moment.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, ExecutorStats, LoopExecutor
from tests.conftest import new_loop

pytestmark = pytest.mark.timeout(15)

WAIT = 5


def adds_up(stats: ExecutorStats) -> bool:
    return stats.submitted == stats.queued + stats.running + stats.done


def read_in_thread(exe: CoroutineExecutor) -> ExecutorStats | BaseException:
    """exe.stats read by a new thread (not one with a loop): what it returned or raised."""
    got: list[ExecutorStats | BaseException] = []

    def read() -> None:
        try:
            got.append(exe.stats)
        except BaseException as exc:  # handed to the test's asserts
            got.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive() and len(got) == 1
    return got[0]


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "keyed"])
async def test_stats_read_from_another_thread_while_the_loop_runs_raises(
    loop_kind: str, keyed: bool
) -> None:
    release, started = asyncio.Event(), asyncio.Event()

    async def parked(n: int) -> None:
        started.set()
        await release.wait()

    options: dict[str, Any] = {"key": lambda n: n % 2, "max_per_key": 1} if keyed else {}
    async with CoroutineExecutor(max_workers=2, **options) as exe:
        for n in range(4):
            exe.submit_nowait(parked, n)
        await started.wait()
        got = await asyncio.wait_for(asyncio.to_thread(read_in_thread, exe), WAIT)
        assert isinstance(got, RuntimeError), got
        message = str(got)
        assert message.startswith(f"{exe!r}.stats can only be read on the thread of its")
        assert "asyncio.run_coroutine_threadsafe" in message and "LoopExecutor" in message
        stats = exe.stats  # on the loop's thread: fine
        assert (stats.running, stats.queued) == (2, 2)
        release.set()


async def test_stats_read_on_the_loop_for_another_thread_is_whole(loop_kind: str) -> None:
    """What the message says to do: the other thread has the loop read it."""
    loop = asyncio.get_running_loop()
    release, started = asyncio.Event(), asyncio.Event()

    async def parked() -> None:
        started.set()
        await release.wait()

    async def read(exe: CoroutineExecutor) -> ExecutorStats:
        return exe.stats

    def monitor(exe: CoroutineExecutor) -> ExecutorStats:
        return asyncio.run_coroutine_threadsafe(read(exe), loop).result(WAIT)

    async with CoroutineExecutor(max_workers=1) as exe:
        await exe.submit(parked)
        exe.submit_nowait(parked)
        await started.wait()
        stats = await asyncio.wait_for(asyncio.to_thread(monitor, exe), WAIT)
        assert (stats.submitted, stats.running, stats.queued) == (2, 1, 1)
        release.set()


def test_stats_read_from_other_threads_before_first_use_and_after_the_loop_stopped(
    loop_kind: str,
) -> None:
    exe = CoroutineExecutor(max_workers=2, key=lambda n: n % 2, max_per_key=1)
    before = read_in_thread(exe)
    assert isinstance(before, ExecutorStats) and before.submitted == 0

    async def job(n: int) -> int:
        await asyncio.sleep(0)
        return n

    async def main() -> None:
        async with exe:
            for n in range(6):
                exe.submit_nowait(job, n)

    loop = new_loop(loop_kind)
    try:
        loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    after = read_in_thread(exe)
    assert isinstance(after, ExecutorStats) and adds_up(after)
    assert (after.submitted, after.succeeded, after.active_keys) == (6, 6, 0)

    async def on_another_loop() -> ExecutorStats:
        return exe.stats  # a read, unlike a setter, is not refused on another loop

    assert asyncio.run(on_another_loop()) == after


def test_loop_executor_stats_read_while_its_loop_closes() -> None:
    """The bridge reads its core's counts from the caller's thread once its loop drains
    nothing more, though that loop still runs as it closes: the core's own check must
    not refuse it. Here a task a job left behind holds the close up."""
    cleaning, go = threading.Event(), threading.Event()

    async def left_behind() -> None:
        try:
            await asyncio.Event().wait()
        finally:  # cancelled as the loop closes (Runner.close)
            cleaning.set()
            assert go.wait(WAIT)  # holds the loop thread: its loop runs, drains nothing

    async def job() -> int:
        asyncio.get_running_loop().create_task(left_behind())
        return 1

    exe = LoopExecutor(max_workers=2)
    try:
        assert exe.submit(job).result(WAIT) == 1
        exe.shutdown(wait=False)
        assert cleaning.wait(WAIT)
        stats = exe.stats
        assert (stats.submitted, stats.succeeded) == (1, 1)
    finally:
        go.set()
        exe.shutdown(wait=True)
    assert exe.stats == stats
