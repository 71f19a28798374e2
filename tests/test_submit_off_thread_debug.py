"""submit_nowait() from another thread, or submit() on another thread's loop, with a slot
free, in asyncio's debug mode (docs/semantics.rst: the thread check refuses the job, and
the call raises asyncio's RuntimeError). asyncio's check runs in the job's task's own
``__init__``, which the executor had already called: the half-made task was logged as
"Task was destroyed but it is pending!" when collected (under uvloop at once), found by a
docs-only tester, brk36 F2. Now nothing is made: nothing logged, the job's coroutine
closed (or never made), the slot and the counts as if nothing was submitted.

conftest's loops run in debug mode, set before the test (and so the executor) starts.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import re
from collections.abc import Coroutine
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor
from tests.conftest import new_loop

pytestmark = pytest.mark.timeout(10)

REFUSED = "Non-thread-safe operation invoked on an event loop other than the current one"

# The ways a job's task is made: the plain lane (submit(), in-line jobs), start_job's
# in-line start, its start of a job with a done callback (job_timeout=, on_job_done=),
# and a keyed job's.
OPTIONS: dict[str, dict[str, Any]] = {
    "in-line": {},
    "job_timeout": {"job_timeout": 60},
    "on_job_done": {"on_job_done": lambda job: None},
    "key": {"key": lambda: "k", "max_per_key": 1},
}


async def job() -> int:
    return 1


class Calls:
    """The job function: records the coroutine of each call, to check it is closed."""

    def __init__(self) -> None:
        self.made: list[Coroutine[Any, Any, int]] = []

    def __call__(self) -> Coroutine[Any, Any, int]:
        coro = job()
        self.made.append(coro)
        return coro


def submit_nowait_here(exe: CoroutineExecutor, fn: Calls) -> BaseException | None:
    try:
        exe.submit_nowait(fn)
    except RuntimeError as exc:
        return exc
    return None


def submit_on_a_loop_here(exe: CoroutineExecutor, fn: Calls) -> BaseException | None:
    async def on_this_threads_loop() -> None:
        await exe.submit(fn)

    try:
        asyncio.run(on_this_threads_loop())
    except RuntimeError as exc:
        return exc
    return None


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("call", [submit_nowait_here, submit_on_a_loop_here])
async def test_a_job_refused_on_another_thread_leaves_nothing_behind(
    loop_kind: str, call: Any, options: str
) -> None:
    loop = asyncio.get_running_loop()
    assert loop.get_debug()
    reported: list[dict[str, Any]] = []
    before = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        async with CoroutineExecutor(max_workers=1, **OPTIONS[options]) as exe:
            counts = exe.stats  # (entering the block bound it to this loop)
            fn = Calls()
            error = await asyncio.to_thread(call, exe, fn)
            assert isinstance(error, RuntimeError)
            assert re.fullmatch(re.escape(REFUSED), str(error))
            assert exe.stats == counts  # as if nothing was submitted
            for coro in fn.made:  # (a plain lane refuses before fn's call)
                assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
            del error, fn  # the refused task, if any, is dropped with them
            gc.collect()
            # The slot (and the key's room) came back: with max_workers=1, this waits
            # for ever otherwise.
            assert await (await exe.submit(job)) == 1
        gc.collect()
        assert reported == []
    finally:
        loop.set_exception_handler(before)


def test_without_debug_mode_jobs_start_as_before(loop_kind: str) -> None:
    """The check is made only in debug mode: elsewhere the factory reader is the one the
    hot paths were measured with (None on asyncio's loops: ``loop._task_factory`` read in
    place), and the jobs of every start path run. (conftest's loops are in debug mode, so
    this is the suite's run of those paths as most programs run them.)"""

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        async with CoroutineExecutor(max_workers=2) as exe:
            if loop_kind == "uvloop":
                assert exe._task_factory_of is type(loop).get_task_factory
            else:
                assert exe._task_factory_of is None
            results = [await (await exe.submit(job))]  # the plain lane (or a factory's)
            results.append(await exe.submit_nowait(job))  # start_job, in-line
            results += [r async for r in exe.map(lambda _: job(), range(3))]
        async with CoroutineExecutor(job_timeout=60) as exe:  # start_job, done callback
            results.append(await exe.submit_nowait(job))
        return results

    loop = new_loop(loop_kind)
    loop.set_debug(False)  # (-X dev makes every new loop's debug mode on)
    try:
        assert loop.run_until_complete(main()) == [1] * 6
    finally:
        loop.close()
