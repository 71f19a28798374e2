"""Fail-fast for jobs that settle from a done callback, under an eager task factory.

Jobs with an ``on_job_done`` hook, a ``job_timeout`` or an ``Adaptive`` limit settle from
their task's done callback, a turn of the loop after the task ends. Under
``asyncio.eager_task_factory`` such a job that fails in its first step has failed inside
its start, and a producer that went on submitting without yielding to the loop (every
``submit()`` finding a free slot) was accepted until its first wait: a docs-only tester
saw 1,999 submits accepted after the first job had failed, under fail-fast (brk14
finding 1). The next submit() must be refused at once, as after an in-line job (none of
those options: it settles in its own last step, the eager first step included), which
each test runs alongside as the reference.
"""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

import pytest

from coroexecutor import Adaptive, CoroutineExecutor

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12"
)

N = 2000  # the tester's count
VARIANTS = ["in-line", "hook", "job_timeout", "adaptive"]
REFUSED = re.escape("is cancelling its jobs")


def use_eager_task_factory() -> None:
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]  # 3.12+, skipped before


def options(variant: str, hooked: list[asyncio.Future[Any]]) -> dict[str, Any]:
    return {
        "in-line": {},
        "hook": {"on_job_done": hooked.append},
        "job_timeout": {"job_timeout": 30},
        "adaptive": {"max_workers": Adaptive()},  # 32 slots at first
    }[variant]


class Jobs:
    """A job that fails in its first step (inside create_task, with the eager factory)
    and a quick one that records that it ran."""

    def __init__(self) -> None:
        self.error = ValueError("the first job failed")
        self.ran: list[int] = []

    async def fails(self) -> None:
        raise self.error

    async def quick(self, i: int) -> int:
        self.ran.append(i)
        return i


def assert_counts(exe: CoroutineExecutor, *, failed: int = 1, cancelled: int = 0) -> None:
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (0, failed, cancelled), stats
    assert (stats.running, stats.queued, stats.submitted) == (0, 0, failed + cancelled), stats


@pytest.mark.parametrize("how", ["submit", "submit_nowait"])
@pytest.mark.parametrize("variant", VARIANTS)
async def test_the_next_submit_after_a_job_failed_in_its_start_is_refused(
    variant: str, how: str
) -> None:
    use_eager_task_factory()
    jobs, hooked = Jobs(), []
    accepted = 0
    with pytest.raises(ValueError) as info:
        async with CoroutineExecutor(**options(variant, hooked)) as exe:
            if how == "submit":
                first = await exe.submit(jobs.fails)
            else:
                first = exe.submit_nowait(jobs.fails)
            assert first.done()  # it ran to its end inside its start
            with pytest.raises(RuntimeError, match=REFUSED):
                for i in range(N):  # never yields to the loop while every slot is free
                    if how == "submit":
                        await exe.submit(jobs.quick, i)
                    else:
                        exe.submit_nowait(jobs.quick, i)
                    accepted += 1
    assert info.value is jobs.error  # the block raises the job's error, unchanged
    assert accepted == 0 and jobs.ran == []
    assert first.exception() is jobs.error
    assert_counts(exe)
    assert hooked == ([first] if variant == "hook" else [])


@pytest.mark.parametrize("variant", VARIANTS)
async def test_a_map_started_after_a_job_failed_in_its_start_starts_nothing(
    variant: str,
) -> None:
    use_eager_task_factory()
    jobs, hooked = Jobs(), []
    with pytest.raises(ValueError) as info:
        async with CoroutineExecutor(**options(variant, hooked)) as exe:
            first = await exe.submit(jobs.fails)
            with pytest.raises(RuntimeError, match=REFUSED):
                async for _ in exe.map(jobs.quick, range(N)):
                    pass
    assert info.value is jobs.error
    assert jobs.ran == []
    assert_counts(exe)
    assert hooked == ([first] if variant == "hook" else [])


@pytest.mark.parametrize("ordered", [True, False], ids=["map", "map_unordered"])
@pytest.mark.parametrize("variant", VARIANTS)
async def test_a_map_whose_first_job_fails_in_its_start_starts_no_other(
    variant: str, ordered: bool
) -> None:
    use_eager_task_factory()
    jobs, hooked = Jobs(), []

    async def step(i: int) -> int:
        if i == 0:
            await jobs.fails()
        return await jobs.quick(i)

    with pytest.raises(ValueError) as info:
        async with CoroutineExecutor(**options(variant, hooked)) as exe:
            results = exe.map(step, range(N)) if ordered else exe.map_unordered(step, range(N))
            with pytest.raises(asyncio.CancelledError):  # fail-fast interrupts the body
                async for _ in results:
                    pass
    assert info.value is jobs.error
    assert jobs.ran == []
    assert_counts(exe)
    assert len(hooked) == (1 if variant == "hook" else 0)


@pytest.mark.parametrize("step", ["first", "later"])
@pytest.mark.parametrize("then", ["submits on", "waits"])
@pytest.mark.parametrize("variant", VARIANTS)
async def test_a_job_whose_submitted_job_fails_in_its_start_is_cancelled(
    variant: str, then: str, step: str
) -> None:
    """The failure is seen in the step of the job that submitted the failing one: that
    job neither failed nor asked for the stop, so it is cancelled with the others, not
    spared as the task the stop runs in. Without a block (no body for fail-fast to
    interrupt, whose exit cancels every job again), a spared job that waits would keep
    shutdown() waiting for ever."""
    use_eager_task_factory()
    jobs, hooked = Jobs(), []
    refused: list[BaseException] = []
    go, submitted, parked_cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def producer() -> None:
        if step == "later":
            await go.wait()  # submits from a step of its own task, not inside its start
        await exe.submit(jobs.fails)
        submitted.set()
        if then == "submits on":
            try:
                for i in range(N):
                    exe.submit_nowait(jobs.quick, i)
            except RuntimeError as exc:
                refused.append(exc)
                raise
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            parked_cancelled.set()
            raise

    exe = CoroutineExecutor(**options(variant, hooked))
    task = await exe.submit(producer)
    go.set()
    await submitted.wait()  # before shutdown() refuses the failing job
    with pytest.raises(ValueError) as info:
        await exe.shutdown()
    assert info.value is jobs.error
    assert jobs.ran == []
    if then == "submits on":
        assert [type(e) for e in refused] == [RuntimeError]
        assert isinstance(task.exception(), RuntimeError)  # counted, not the first error
        assert_counts(exe, failed=2)
    else:
        assert task.cancelled() and parked_cancelled.is_set()
        assert_counts(exe, failed=1, cancelled=1)
    assert len(hooked) == (2 if variant == "hook" else 0)


@pytest.mark.parametrize("variant", VARIANTS)
async def test_no_queued_job_starts_after_one_that_failed_in_its_start(variant: str) -> None:
    """Slots that come free together start the backlog in one go: a queued job that
    fails in its first step stops it there."""
    use_eager_task_factory()
    jobs, hooked = Jobs(), []
    release = asyncio.Event()

    async def parked() -> None:
        await release.wait()

    with pytest.raises(ValueError) as info:
        async with CoroutineExecutor(**options(variant, hooked)) as exe:
            exe.max_workers = 1  # (an Adaptive limit is given up)
            holder = await exe.submit(parked)
            failing = exe.submit_nowait(jobs.fails)
            queued = [exe.submit_nowait(jobs.quick, i) for i in range(5)]
            exe.max_workers = 10  # admits the backlog now: a slot for each
            await asyncio.Event().wait()  # interrupted by fail-fast
    assert info.value is jobs.error
    assert jobs.ran == []
    assert failing.exception() is jobs.error
    assert holder.cancelled() and all(future.cancelled() for future in queued)
    assert_counts(exe, failed=1, cancelled=6)
    if variant == "hook":  # once per job, with the future its submitter holds
        assert sorted(map(id, hooked)) == sorted(map(id, [holder, failing, *queued]))
