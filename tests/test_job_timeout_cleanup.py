"""job_timeout never cancels a job a second time while it cleans up after another cancel.

docs/semantics.rst: the executor's cancels and the loop's end's are "not job errors:
nothing is cancelled a second time, so a job's ... clean-up that awaits (a
``finally: await conn.close()``) runs to its end". A docs-only tester (brk10) found the
per-job deadline still armed through such a clean-up: it fired inside it and cut it
short, under fail-fast and at the end of asyncio.run() (every run, 3.11 and 3.13).
On virtual time: the deadline (1 s) always comes inside the clean-up (from 0.5 s to 5.5 s).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, JobTimeoutError
from tests.virtual_clock import VirtualClockLoop

pytestmark = pytest.mark.timeout(30)

# Only for what 3.9 and 3.10 lack: the executor's own cancels are told there too (brk16 F2).
needs_runner_and_timeout = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="asyncio.Runner and asyncio.timeout are 3.11+"
)


def _cleaning_job(log: list[str]) -> Callable[[], Coroutine[Any, Any, None]]:
    async def job() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            log.append("cancelled")
            try:
                await asyncio.sleep(5)  # a clean-up that awaits, past the 1 s deadline
                log.append("clean-up finished")
            except asyncio.CancelledError:
                log.append("clean-up cancelled a second time")
                raise
            raise

    return job


@pytest.mark.virtual_time
async def test_fail_fast_lets_a_job_clean_up_past_its_job_timeout() -> None:
    log: list[str] = []

    async def fails() -> None:
        await asyncio.sleep(0.5)
        raise KeyError(1)

    with pytest.raises(KeyError):
        async with CoroutineExecutor(job_timeout=1.0) as exe:
            await exe.submit(_cleaning_job(log))
            await exe.submit(fails)
    assert log == ["cancelled", "clean-up finished"]
    assert (exe.stats.failed, exe.stats.cancelled) == (1, 1)


@needs_runner_and_timeout
def test_the_end_of_asyncio_run_lets_a_job_clean_up_past_its_job_timeout() -> None:
    log: list[str] = []
    kept: list[CoroutineExecutor] = []

    async def main() -> None:
        exe = CoroutineExecutor(job_timeout=1.0)  # no block: the loop's end cancels the job
        kept.append(exe)
        await exe.submit(_cleaning_job(log))
        await asyncio.sleep(0.5)

    with asyncio.Runner(loop_factory=VirtualClockLoop, debug=True) as runner:  # type: ignore[attr-defined]  # 3.11+
        runner.run(main())
    assert log == ["cancelled", "clean-up finished"]
    assert kept[0].stats.failed == 0


@needs_runner_and_timeout
@pytest.mark.virtual_time
async def test_the_deadline_still_ends_a_job_that_took_its_other_cancel_back() -> None:
    # The other side: a job that answered another cancel and took it back (uncancel, as
    # asyncio.timeout does inside it) is not being cancelled any more: its deadline holds.
    async def job() -> None:
        try:
            async with asyncio.timeout(0.5):  # type: ignore[attr-defined]  # 3.11+
                await asyncio.sleep(3600)
        except TimeoutError:
            pass
        await asyncio.sleep(3600)

    async with CoroutineExecutor(job_timeout=1.0, suppress_task_errors=True) as exe:
        task = await exe.submit(job)
        with pytest.raises(JobTimeoutError):
            await task
        assert asyncio.get_running_loop().time() == pytest.approx(1.0, abs=1e-6)


@needs_runner_and_timeout
@pytest.mark.virtual_time
@pytest.mark.parametrize("other", ["own timeout", "caught cancel"])
async def test_a_cancel_of_the_jobs_own_does_not_stop_its_deadline(other: str) -> None:
    # brk11: the deadline came while a cancel not of the executor's was pending (the job's
    # own asyncio.timeout cleaning up; a task.cancel() the job caught and went on from),
    # did nothing, and the job ran on unbounded. As with asyncio.timeout, it is sent.
    async def job() -> str:
        if other == "own timeout":
            try:
                async with asyncio.timeout(0.5):  # type: ignore[attr-defined]  # 3.11+
                    try:
                        await asyncio.sleep(3600)
                    except asyncio.CancelledError:
                        await asyncio.sleep(1)  # its clean-up spans the deadline (1 s)
                        raise
            except TimeoutError:
                pass
        else:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass  # caught, not taken back: a cancel stays pending
        await asyncio.sleep(3600)
        return "ran on"

    async with CoroutineExecutor(job_timeout=1.0, suppress_task_errors=True) as exe:
        task = await exe.submit(job)
        if other == "caught cancel":
            await asyncio.sleep(0.5)
            task.cancel()
        # Ended by the deadline, as JobTimeoutError even after a cancel caught (brk16
        # F1: see test_job_timeout_cancels.py), not after 3,600 s.
        with pytest.raises(JobTimeoutError):
            await task
    assert asyncio.get_running_loop().time() == pytest.approx(1.0, abs=1e-6)
