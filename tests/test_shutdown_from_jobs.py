"""shutdown() called from inside a job (docs/semantics.rst, "Whom it spares", "Who waits").

shutdown() closes the executor's maps as it begins, and a closed map cancels its jobs in
flight; shutdown(wait=False) cancels every job. One rule says which task that spares: the
one that called shutdown(), and only it. A job that calls it goes on; a job in which a
task it started calls it (a TaskGroup's, gather()'s) is cancelled like any other,
whatever the loop's task factory. Under asyncio.eager_task_factory a map's job ran its
first step inside the map's start, before the map had it: a TaskGroup task calling the
graceful shutdown() there left that job running (found by a docs-only tester, brk32
F3), while the default factory cancelled it.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from coroexecutor import CoroutineExecutor

REFUSED = "cannot schedule new futures after shutdown"


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("wait", [True, False], ids=["wait", "no-wait"])
@pytest.mark.parametrize("caller", ["the job", "a task it awaits", "a gather's task"])
async def test_shutdown_from_a_map_job_spares_only_the_task_that_called_it(
    loop_kind: str, caller: str, wait: bool, ordered: bool
) -> None:
    log: list[str] = []

    async def search(exe: CoroutineExecutor, n: int) -> None:
        try:
            if caller == "the job":
                await exe.shutdown(wait=wait)
            elif caller == "a task it awaits":
                await asyncio.ensure_future(exe.shutdown(wait=wait))
            else:  # as a TaskGroup's task (gather: on every Python)
                await asyncio.gather(exe.shutdown(wait=wait))
            # A cancel sent meanwhile meets the job here, whoever sent it when.
            await asyncio.sleep(0)
            log.append("job finished")
        except asyncio.CancelledError:
            log.append("job cancelled")
            raise

    async with CoroutineExecutor() as exe:
        mapper = exe.map if ordered else exe.map_unordered
        with pytest.raises(RuntimeError, match=REFUSED):
            async for _ in mapper(search, [exe], [1]):
                pass
    stats = exe.stats
    if caller == "the job":
        assert log == ["job finished"]
        assert (stats.succeeded, stats.cancelled) == (1, 0)
    else:
        assert log == ["job cancelled"]
        assert (stats.succeeded, stats.cancelled) == (0, 1)
    assert stats.failed == 0


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout() is new in 3.11")
async def test_a_task_a_plain_job_function_starts_is_outside_the_job(loop_kind: str) -> None:
    """A plain function's own call runs at submit(), in the caller's context, so a Task it
    starts there is no task of the job's: its shutdown() waits, for the job that awaits
    that Task (brk32 F1, as documented). Only an outer timeout ends that circle."""
    log: list[str] = []

    async def work(exe: CoroutineExecutor) -> None:
        try:
            await exe.shutdown()
        except asyncio.CancelledError:
            log.append("shutdown() waited until cancelled")
            raise
        log.append("shutdown() returned")

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):  # the circle's only end
            async with CoroutineExecutor() as exe:
                await exe.submit(lambda: asyncio.ensure_future(work(exe)))
    assert log == ["shutdown() waited until cancelled"]
    assert exe.stats.cancelled == 1
