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
