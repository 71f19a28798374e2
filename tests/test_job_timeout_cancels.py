"""job_timeout among other cancels: the deadline's own is told apart, and the executor's
are left to finish their clean-up.

docs/semantics.rst, ``job_timeout=``: "A job that runs longer is cancelled and fails with
JobTimeoutError"; "Any other cancel the job has pending (..., a ``cancel()`` it caught)
does not stop the deadline"; "A deadline that comes while the job is being cancelled
already (by fail-fast, the block's end, ``shutdown()``, ...) sends nothing: the job is
cleaning up, and that clean-up runs to its end". A docs-only tester (brk16) found:

* F1: a job that had caught a cancel (``task.cancel()``, then ``except CancelledError:
  pass``) and then overran its deadline ended *cancelled*: the deadline's cancel was
  compared with the task's count of cancels on entry, which the caught one had raised.
  Stats counted it cancelled, fail-fast raised a bare CancelledError, the bridge's
  future ended cancelled().
* F2: a map closed early (left by break and dropped, aclose(), the block's exit or
  shutdown() closing a map still held; or ended by a job's error) cancels its jobs on
  the executor's behalf, and the deadline then cancelled their clean-up a second time:
  only the executor cancelling all its jobs was known.

On virtual time (the core's tests): the deadline (1 s) always comes inside the wait that
follows the other cancel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, JobTimeoutError, LoopExecutor, Retry

pytestmark = pytest.mark.timeout(30)

WAIT = 5  # seconds: the bound on every blocking wait of the bridge test; reaching it fails


def now() -> float:
    return asyncio.get_running_loop().time()


async def swallow_a_cancel() -> None:
    """Cancel the current task, catch that cancel and go on (never taken back: the task
    keeps it counted)."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass


async def swallows_a_cancel_then_parks() -> str:
    """A job that swallows a cancel, then waits for ever: only its deadline can end it."""
    await swallow_a_cancel()
    await asyncio.Event().wait()
    return "ran on"


#
# F1: the deadline's own cancel, whatever other cancels the task counted before
#


@pytest.mark.virtual_time
@pytest.mark.parametrize("annotate_errors", [True, False], ids=["attempts", "wrapper"])
async def test_a_job_that_caught_a_cancel_still_fails_with_job_timeout_error(
    annotate_errors: bool,
) -> None:
    # annotate_errors=False takes a job_timeout's job through the bare wrapper, True
    # through the attempts loop (its note): both wrap the job with the same deadline.
    async with CoroutineExecutor(
        job_timeout=1.0, suppress_task_errors=True, annotate_errors=annotate_errors
    ) as exe:
        task = await exe.submit(swallows_a_cancel_then_parks)
        with pytest.raises(JobTimeoutError) as caught:
            await task
    assert now() == pytest.approx(1.0, abs=1e-6)
    assert not task.cancelled()
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)
    assert (exe.stats.failed, exe.stats.cancelled) == (1, 0)


@pytest.mark.virtual_time
async def test_fail_fast_raises_the_job_timeout_error_of_a_job_that_caught_a_cancel() -> None:
    with pytest.raises(JobTimeoutError, match=r"ran longer than job_timeout=1\.0 s"):
        async with CoroutineExecutor(job_timeout=1.0) as exe:
            await exe.submit(swallows_a_cancel_then_parks)
    assert (exe.stats.failed, exe.stats.cancelled) == (1, 0)


@pytest.mark.virtual_time
@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.9 and 3.10 count no cancels")
async def test_the_job_timeout_error_after_a_caught_cancel_is_not_retried() -> None:
    # semantics.rst, Retries: a cancel the attempt caught and went on from still counts
    # (the task keeps it), so the job ends with its JobTimeoutError, as without retry=.
    async with CoroutineExecutor(
        job_timeout=1.0, suppress_task_errors=True, retry=Retry(attempts=3)
    ) as exe:
        task = await exe.submit(swallows_a_cancel_then_parks)
        with pytest.raises(JobTimeoutError):
            await task
    assert now() == pytest.approx(1.0, abs=1e-6)
    assert (exe.stats.failed, exe.stats.cancelled, exe.stats.retried) == (1, 0, 0)


@pytest.mark.virtual_time
@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.9 and 3.10 count no cancels")
async def test_a_cancel_that_comes_after_the_deadline_still_cancels_the_job() -> None:
    # The other side of F1: the deadline is told by the count as it came, so a cancel
    # sent after it (here, into the job's clean-up from the deadline's cancel) is
    # someone else's, and the job ends cancelled, as under asyncio.timeout.
    cleaning = asyncio.Event()

    async def job() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # a cancel caught before the deadline, still counted
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # the deadline's
            cleaning.set()
            await asyncio.Event().wait()  # a clean-up only a further cancel ends
            raise

    async with CoroutineExecutor(job_timeout=1.0, suppress_task_errors=True) as exe:
        task = await exe.submit(job)
        await cleaning.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()
    assert (exe.stats.failed, exe.stats.cancelled) == (0, 1)


def test_the_bridge_fails_the_future_of_a_job_that_caught_a_cancel() -> None:
    # A deadline firing on a job parked for ever cannot flake: only the outcome is checked.
    with LoopExecutor(job_timeout=0.05) as exe:
        future: concurrent.futures.Future[str] = exe.submit(swallows_a_cancel_then_parks)
        with pytest.raises(JobTimeoutError):
            future.result(timeout=WAIT)
        assert not future.cancelled()
    assert (exe.stats.failed, exe.stats.cancelled) == (1, 0)


#
# F2: a job the executor cancelled alone (its map closed) cleans up past its deadline
#


def _map_job(log: list[str], cleaning: asyncio.Event) -> Any:
    async def job(tag: str) -> str:
        if tag == "fast":
            await asyncio.sleep(0.5)
            return tag
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            log.append(f"cancelled at {now()}")
            cleaning.set()
            try:
                await asyncio.sleep(5)  # a clean-up that awaits, past the 1 s deadline
                log.append(f"clean-up finished at {now()}")
            except asyncio.CancelledError:
                log.append(f"clean-up cancelled a second time at {now()}")
                raise
            raise
        return tag

    return job


@pytest.mark.virtual_time
@pytest.mark.parametrize("how", ["dropped", "aclose()", "the block's exit", "shutdown()"])
async def test_a_map_closed_early_lets_its_jobs_clean_up_past_their_job_timeout(
    how: str,
) -> None:
    log: list[str] = []
    cleaning = asyncio.Event()
    async with CoroutineExecutor(4, job_timeout=1.0) as exe:
        if how == "dropped":
            async for tag in exe.map_unordered(_map_job(log, cleaning), ["slow", "fast"]):
                assert tag == "fast"  # at 0.5 s
                break  # the map, held by nothing else, is dropped
            await cleaning.wait()
        else:
            results = exe.map_unordered(_map_job(log, cleaning), ["slow", "fast"])
            assert await results.__anext__() == "fast"  # at 0.5 s
            if how == "aclose()":
                await results.aclose()  # waits for the job's clean-up
            elif how == "shutdown()":
                await exe.shutdown()  # closes the map still held, waits for the job
        # the block's exit closes a map still held, and waits for its job
    assert log == ["cancelled at 0.5", "clean-up finished at 5.5"]
    assert (exe.stats.succeeded, exe.stats.failed, exe.stats.cancelled) == (1, 0, 1)


@pytest.mark.virtual_time
async def test_a_map_a_job_error_ended_lets_its_other_jobs_clean_up_past_their_job_timeout() -> (
    None
):
    # A map's job error cancels the map's other jobs on the executor's behalf too.
    log: list[str] = []
    cleaning = asyncio.Event()
    park = _map_job(log, cleaning)

    async def job(tag: str) -> str:
        if tag == "fails":
            await asyncio.sleep(0.5)
            raise KeyError(tag)
        return await park(tag)

    async with CoroutineExecutor(4, job_timeout=1.0, suppress_task_errors=True) as exe:
        with pytest.raises(KeyError):
            async for _ in exe.map_unordered(job, ["slow", "fails"]):
                pass
    assert log == ["cancelled at 0.5", "clean-up finished at 5.5"]
    assert (exe.stats.failed, exe.stats.cancelled) == (1, 1)


@pytest.mark.virtual_time
async def test_the_job_that_called_shutdown_nowait_is_still_bounded_by_its_deadline() -> None:
    # The executor spares the job that calls shutdown(wait=False), which goes on: it has
    # not cancelled that job, so a cancel the job caught before does not stop its deadline.
    async def job(exe: CoroutineExecutor) -> str:
        await exe.shutdown(wait=False)
        await swallow_a_cancel()
        await asyncio.sleep(10)
        return "ran on"

    with pytest.raises(JobTimeoutError):
        async with CoroutineExecutor(job_timeout=1.0) as exe:
            await exe.submit(job, exe)
    assert now() == pytest.approx(1.0, abs=1e-6)


#
# F2 on the bridge: its own cancels (a map closed, the block left by an exception) too
#


class _ManualClockLoop(asyncio.SelectorEventLoop):
    """A loop whose time moves only by advance(): the job_timeout passes when a job says."""

    def __init__(self) -> None:
        super().__init__()
        self._manual_now = 0.0

    def time(self) -> float:
        return self._manual_now

    def advance(self, seconds: float) -> None:
        self._manual_now += seconds


async def _parks_then_cleans_up_past_its_deadline(
    log: list[str], started: threading.Event
) -> None:
    """Parks until cancelled; its clean-up then waits 50 s, with the clock moved 100 s:
    at the next turn the deadline (10 s) and the clean-up's end are both due, the
    deadline's first, so a deadline that sends its cancel cuts the clean-up short."""
    started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, _ManualClockLoop)
        over = loop.create_future()
        loop.call_later(50, lambda: over.done() or over.set_result(None))
        loop.advance(100)
        try:
            await over
            log.append("clean-up finished")
        except asyncio.CancelledError:
            log.append("clean-up cancelled a second time")
            raise
        raise


def test_closing_a_bridge_map_lets_its_job_clean_up_past_its_job_timeout() -> None:
    log: list[str] = []
    started = threading.Event()
    with LoopExecutor(2, job_timeout=10, loop_factory=_ManualClockLoop) as exe:
        results = exe.map(_parks_then_cleans_up_past_its_deadline, [log], [started])
        assert started.wait(WAIT)
        results.close()  # type: ignore[attr-defined]  # the bridge's map iterator has it
    assert log == ["clean-up finished"]
    assert exe.stats.cancelled == 1


def test_leaving_the_bridge_block_by_an_error_lets_a_job_clean_up_past_its_job_timeout() -> (
    None
):
    log: list[str] = []
    started = threading.Event()
    exe = LoopExecutor(2, job_timeout=10, loop_factory=_ManualClockLoop)
    with pytest.raises(KeyError), exe:
        exe.submit(_parks_then_cleans_up_past_its_deadline, log, started)
        assert started.wait(WAIT)
        raise KeyError("leaves the block")  # cancels the running coroutine jobs
    assert log == ["clean-up finished"]
    assert exe.stats.cancelled == 1
