"""The future submit_nowait() returns for a queued job is settled by the executor only.

A docs-only tester (brk20) settled it by hand: ``set_exception()`` on a queued job's
future was accepted, the job never ran, it counted as cancelled with its future not
cancelled, and the error stopped nothing; ``set_result()`` once the job had started left
the future with the caller's value while the block raised the job's own error. An
``asyncio.Task`` (what submit_nowait() returns when a slot is free) refuses both, and so
must the queued job's future (docs/semantics.rst, "Bad input is reported at the call
that made it"; docs/reliability.rst, "Every future ends exactly once, with the outcome
its job produced").
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor


def _refuse_settling(fut: asyncio.Future[Any]) -> None:
    for name, call in (
        ("set_result", lambda: fut.set_result("mine")),
        ("set_exception", lambda: fut.set_exception(KeyError("mine"))),
    ):
        msg = f"QueuedFuture does not support {name} operation"
        with pytest.raises(RuntimeError, match=re.escape(msg)):
            call()


async def test_a_queued_jobs_future_refuses_set_result_and_set_exception(
    loop_kind: str,
) -> None:
    release = asyncio.Event()
    done: list[asyncio.Future[Any]] = []

    async def parked() -> None:
        await release.wait()

    async def job(n: int) -> int:
        await asyncio.sleep(0)
        return n

    async with CoroutineExecutor(max_workers=1, on_job_done=done.append) as exe:
        exe.submit_nowait(parked)
        fut = exe.submit_nowait(job, 7)
        assert not isinstance(fut, asyncio.Task)  # queued: the future that follows it
        _refuse_settling(fut)
        assert not fut.done()
        assert exe.stats.queued == 1
        release.set()
        assert await fut == 7  # the job ran, and its outcome is the future's
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (2, 0, 0), stats
    assert fut in done


async def test_a_started_queued_jobs_future_keeps_the_jobs_own_outcome(
    loop_kind: str,
) -> None:
    release, started, finish = asyncio.Event(), asyncio.Event(), asyncio.Event()
    error = LookupError("the job's own")

    async def parked() -> None:
        await release.wait()

    async def failing() -> None:
        started.set()
        await finish.wait()
        raise error

    with pytest.raises(LookupError) as excinfo:
        async with CoroutineExecutor(max_workers=1) as exe:
            exe.submit_nowait(parked)
            fut = exe.submit_nowait(failing)
            release.set()
            await started.wait()  # the job runs; its future follows its task
            _refuse_settling(fut)
            finish.set()
            await asyncio.Event().wait()  # interrupted by the job's error (fail-fast)
    assert excinfo.value is error
    assert fut.exception() is error


# brk22: cancel() on a started queued job's future ended the future cancelled at once,
# whatever its job did next. The job caught the cancel and returned a value (or raised
# an error): stats counted it succeeded (failed), on_job_done got a cancelled future, and
# under suppress_task_errors its error was in no object its submitter held. As for an
# asyncio.Task, the cancel is a request; the future ends as its job does.
_CAUGHT = "the value returned after the cancel"


@pytest.mark.parametrize("answer", ["value", "error"])
@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "key="])
async def test_a_started_queued_job_that_catches_its_cancel_ends_its_future_with_its_answer(
    loop_kind: str, answer: str, keyed: bool
) -> None:
    release, started = asyncio.Event(), asyncio.Event()
    error = ConnectionError("flush failed after the cancel")
    hooked: list[asyncio.Future[Any]] = []

    async def parked() -> None:
        await release.wait()

    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if answer == "error":
                raise error from None
            return _CAUGHT
        raise AssertionError("never woken but by the cancel")

    per_key: dict[str, Any] = {"key": lambda *a: "k", "max_per_key": 1} if keyed else {}
    async with CoroutineExecutor(
        max_workers=1, suppress_task_errors=True, on_job_done=hooked.append, **per_key
    ) as exe:
        exe.submit_nowait(parked)
        fut = exe.submit_nowait(stubborn)
        assert not isinstance(fut, asyncio.Task)  # queued: the future that follows it
        release.set()
        await started.wait()  # the job runs
        assert fut.cancel()  # the request reached the running job
        assert not fut.cancelled()  # ... which has not answered yet
        if answer == "value":
            assert await fut == _CAUGHT
        else:
            with pytest.raises(ConnectionError) as excinfo:
                await fut
            assert excinfo.value is error  # the job's own error, the same object
    assert hooked[-1] is fut and not fut.cancelled()
    stats = exe.stats
    expected = (2, 0, 0) if answer == "value" else (1, 1, 0)
    assert (stats.succeeded, stats.failed, stats.cancelled) == expected, stats


async def test_a_started_queued_jobs_error_in_answer_to_its_cancel_is_the_blocks(
    loop_kind: str,
) -> None:
    # Fail-fast: the job's answer is a job error (the holder's cancel is not the
    # executor's), the block raises it, and its future holds that same error.
    release, started = asyncio.Event(), asyncio.Event()
    error = ConnectionError("flush failed after the cancel")

    async def parked() -> None:
        await release.wait()

    async def stubborn() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise error from None

    with pytest.raises(ConnectionError) as excinfo:
        async with CoroutineExecutor(max_workers=1) as exe:
            exe.submit_nowait(parked)
            fut = exe.submit_nowait(stubborn)
            release.set()
            await started.wait()
            assert fut.cancel()
            await asyncio.Event().wait()  # interrupted by the job's error (fail-fast)
    assert excinfo.value is error
    assert fut.exception() is error
    assert (exe.stats.failed, exe.stats.cancelled) == (1, 0), exe.stats


async def test_a_queued_future_cancelled_as_its_slot_is_handed_over_follows_its_job(
    loop_kind: str,
) -> None:
    # The cancel comes from a callback of the job that held the slot, in the turn the
    # queued job's task is made: whether its first step ran before the cancel depends
    # on the loop, but the future, the job and the counts must agree.
    release = asyncio.Event()
    ran: list[str] = []

    async def parked() -> None:
        await release.wait()

    async def stubborn() -> str:
        ran.append("stubborn")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return _CAUGHT
        raise AssertionError("never woken but by the cancel")

    async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
        holder = exe.submit_nowait(parked)
        fut = exe.submit_nowait(stubborn)
        loop = asyncio.get_running_loop()
        holder.add_done_callback(lambda _: loop.call_soon(fut.cancel))
        release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await fut
    stats = exe.stats
    if ran:  # its first step ran before the cancel, which it caught
        assert fut.result() == _CAUGHT
        assert (stats.succeeded, stats.cancelled) == (2, 0), stats
    else:
        assert fut.cancelled()
        assert (stats.succeeded, stats.cancelled) == (1, 1), stats
    if loop_kind in ("default", "eager"):
        assert ran  # the timing brk22 found (t5.py), every time


async def test_a_maps_started_queued_input_that_catches_the_close_ends_with_its_value(
    loop_kind: str,
) -> None:
    # A map's window wider than its slots queues its inputs (QueuedFutures): closing the
    # map cancels the one running, which answers with a value. The hook gets its future
    # with that value, as stats count it, not cancelled.
    started = asyncio.Event()
    hooked: list[asyncio.Future[Any]] = []

    async def job(i: int) -> object:
        if i == 0:
            return 0
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return _CAUGHT
        raise AssertionError("never woken but by the cancel")

    async with CoroutineExecutor(max_workers=1, on_job_done=hooked.append) as exe:
        results = exe.map(job, range(3), buffersize=3)
        assert await results.__anext__() == 0
        await started.wait()  # input 1 runs, started from the line
        await results.aclose()
    answered = [f for f in hooked if not f.cancelled()]
    assert [f.result() for f in answered] == [0, _CAUGHT]
    assert not isinstance(answered[1], asyncio.Task)  # the queued input's own future
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (2, 0, 1), stats
