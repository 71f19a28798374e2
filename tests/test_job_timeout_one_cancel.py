"""A job's job_timeout cancel is the executor's one cancel of it: a later cancel of the
executor's (fail-fast, the body's error, timeout=, shutdown(wait=False), the map closed,
the bridge's block left by an error) leaves the clean-up it started to run to its end
(semantics.rst, "job_timeout="; brk18 finding 1). The opposite order was fixed before
(fcc82d6): an executor cancel first, then the deadline sends nothing."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, JobTimeoutError, LoopExecutor

pytestmark = pytest.mark.timeout(20)


class Cleanup:
    """A job whose clean-up, after the deadline's cancel, waits for ``release``; the test
    then makes the executor cancel, and sets ``release``. ``interrupted``: cancels that
    reached the clean-up."""

    def __init__(self) -> None:
        self.cleaning = asyncio.Event()
        self.release = asyncio.Event()
        self.interrupted = 0
        self.finished = False

    async def job(self, n: int = 0) -> None:
        if n:  # another job's error: fail-fast, then the clean-up may end
            asyncio.get_running_loop().call_soon(self.release.set)
            raise ValueError("boom")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cleaning.set()
            while not self.release.is_set():
                try:
                    await self.release.wait()
                except asyncio.CancelledError:
                    self.interrupted += 1
            self.finished = True
            raise


@pytest.mark.parametrize("how", ["body_error", "fail_fast", "shutdown_nowait", "map_closed"])
async def test_a_later_executor_cancel_leaves_a_timed_out_jobs_clean_up_be(
    loop_kind: str, how: str
) -> None:
    jobs = Cleanup()
    loop = asyncio.get_running_loop()
    try:
        async with CoroutineExecutor(max_workers=4, job_timeout=0.01) as exe:
            if how == "map_closed":
                results = exe.map(jobs.job, [0])

                async def consume() -> None:
                    async for _ in results:
                        pass

                consumer = asyncio.ensure_future(consume())
                await jobs.cleaning.wait()  # (no wait_for: on 3.11 it can swallow a cancel)
                closing = asyncio.ensure_future(results.aclose())
                await asyncio.sleep(0)  # the close cancels what it cancels now
                loop.call_soon(jobs.release.set)
                await closing
                await consumer  # aclose() from another task ends its iteration
            else:
                task = await exe.submit(jobs.job)
                await jobs.cleaning.wait()  # (no wait_for: on 3.11 it can swallow a cancel)
                if how == "fail_fast":
                    await exe.submit(jobs.job, 1)  # fails at once: before its own deadline
                if how == "shutdown_nowait":
                    await exe.shutdown(wait=False)
                    loop.call_soon(jobs.release.set)
                    # The executor's cancel, which the deadline's stood for, is what the
                    # job ends with: cancelled, not timed out.
                    with pytest.raises(asyncio.CancelledError):
                        await task
                    assert exe.stats.cancelled == 1 and exe.stats.failed == 0
                elif how == "body_error":
                    loop.call_soon(jobs.release.set)  # after the exit's first step
                    raise KeyError("the body fails")
                else:
                    await asyncio.sleep(3600)  # fail-fast interrupts the body
    except (KeyError, ValueError, JobTimeoutError):
        pass  # what the block raises is not the point here
    assert jobs.finished
    assert jobs.interrupted == 0


def test_the_bridges_block_left_by_an_error_leaves_a_timed_out_jobs_clean_up_be() -> None:
    state: dict[str, Any] = {"interrupted": 0, "finished": False}
    cleaning = threading.Event()

    async def job() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            loop = asyncio.get_running_loop()
            until = loop.create_future()
            loop.call_later(0.3, until.set_result, None)  # the clean-up's own work
            while not until.done():
                try:
                    await asyncio.shield(until)
                except asyncio.CancelledError:
                    state["interrupted"] += 1
            state["finished"] = True
            raise

    with pytest.raises(KeyError), LoopExecutor(max_workers=2, job_timeout=0.01) as exe:
        exe.submit(job)
        assert cleaning.wait(10)
        raise KeyError("the block fails")
    assert state == {"interrupted": 0, "finished": True}


def test_the_bridges_counts_agree_with_a_future_it_cancelled_during_a_deadlines_clean_up() -> None:
    """Regression (brk19, from the one-cancel rule above): the bridge's own cancel (here a
    shutdown(timeout=...) grace period ending) of a job cleaning up after its job_timeout
    left the future cancelled but stats counting the job as failed: the job ended with
    JobTimeoutError. The executor's cancel is what it ends with: cancelled in both."""
    release = threading.Event()
    told = threading.Event()

    async def job() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # the deadline's cancel: swallowed, and a clean-up that goes on
        while not release.is_set():
            await asyncio.sleep(0.01)
        return "A"

    exe = LoopExecutor(max_workers=2, job_timeout=0.01)
    future = exe.submit(job)
    future.add_done_callback(lambda _: told.set())
    closer = threading.Thread(target=exe.shutdown, kwargs={"timeout": 0.05})
    closer.start()
    try:
        assert told.wait(10)  # the grace period ended: the bridge cancelled the future
    finally:
        release.set()
        closer.join(10)
    assert not closer.is_alive()
    assert future.cancelled()
    stats = exe.stats
    assert (stats.cancelled, stats.failed, stats.succeeded) == (1, 0, 0), stats
