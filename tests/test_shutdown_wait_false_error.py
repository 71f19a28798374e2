"""shutdown(wait=False) raises no policy error (docs/semantics.rst: the rules table, "not
an error"; "Who raises the error": without a block, every shutdown() call that waits gets
it). Without a block, the owner's shutdown(wait=False) raised a first job error already
known (or the deadline's ExecutorTimeoutError), and so counted it as raised: the later
shutdown() that does wait for the jobs returned None. An outer job that called an inner
executor's shutdown(wait=False) failed with the inner job's error the same way (found by a
docs-only tester, brk36 F1).
"""

from __future__ import annotations

import asyncio

import pytest

from coroexecutor import CoroutineExecutor, ExecutorTimeoutError

pytestmark = pytest.mark.timeout(10)

CAUSES = ["job error", "deadline"]


class SlowToStop:
    """A job that runs until cancelled, then holds its clean-up until ``release``: so a
    call that returned before it ended did not wait for it."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cleaning = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cleaning.set()
            await self.release.wait()
            raise


async def fail_after(go: asyncio.Event, error: BaseException) -> None:
    await go.wait()
    raise error


async def stopped(
    cause: str,
) -> tuple[CoroutineExecutor, SlowToStop, asyncio.Task[None], type[BaseException]]:
    """An executor without a block, stopped for ``cause`` (a job's ValueError, or its
    ``timeout=`` passing), its other job cancelled and still cleaning up: the executor,
    that job, its task, and the type of the error the policy names."""
    job = SlowToStop()
    if cause == "deadline":
        exe = CoroutineExecutor(timeout=0.01)  # fires on a parked job: no race decided
        task = await exe.submit(job)
        expected: type[BaseException] = ExecutorTimeoutError
    else:
        go = asyncio.Event()
        exe = CoroutineExecutor()
        task = await exe.submit(job)
        failing = await exe.submit(fail_after, go, ValueError("job failed"))
        go.set()
        await asyncio.wait([failing])
        expected = ValueError
    await job.cleaning.wait()  # the executor has stopped: the error is known
    return exe, job, task, expected


@pytest.mark.parametrize("cause", CAUSES)
async def test_the_owners_shutdown_wait_false_returns_and_the_waiting_calls_raise(
    loop_kind: str, cause: str
) -> None:
    exe, job, task, expected = await stopped(cause)
    for _ in range(3):  # each returns at once, and none takes the error
        assert await exe.shutdown(wait=False) is None
    assert not task.done()  # not waited for
    waiting = [asyncio.ensure_future(exe.shutdown()) for _ in range(2)]
    job.release.set()
    first, second = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(first, expected)
    assert second is first  # the same object to every call that waits
    assert task.cancelled()
    assert await exe.shutdown() is None  # begun after one raised it and returned: a no-op
    assert await exe.shutdown(wait=False) is None


@pytest.mark.parametrize("cause", CAUSES)
async def test_shutdown_wait_false_after_a_waiting_call_raised_it_is_a_no_op(
    loop_kind: str, cause: str
) -> None:
    exe, job, _, expected = await stopped(cause)
    job.release.set()
    with pytest.raises(expected):
        await exe.shutdown()
    assert await exe.shutdown(wait=False) is None
    assert await exe.shutdown() is None


async def test_shutdown_wait_false_with_no_error_raises_nothing(loop_kind: str) -> None:
    job = SlowToStop()
    exe = CoroutineExecutor()
    task = await exe.submit(job)
    await job.started.wait()
    assert await exe.shutdown(wait=False) is None
    await job.cleaning.wait()
    assert await exe.shutdown(wait=False) is None
    job.release.set()
    assert await exe.shutdown() is None
    assert task.cancelled()
    assert (exe.stats.failed, exe.stats.cancelled) == (0, 1)


async def test_with_a_block_shutdown_wait_false_raises_nothing_and_the_block_raises_it(
    loop_kind: str,
) -> None:
    """The block owns the error: the body's shutdown(wait=False), and a helper task's, after
    it is known return None; the block's exit raises it, once."""
    job = SlowToStop()
    go = asyncio.Event()
    error = ValueError("job failed")
    helper_returned: list[object] = []

    async def helper(exe: CoroutineExecutor) -> None:
        await job.cleaning.wait()
        helper_returned.append(await exe.shutdown(wait=False))

    with pytest.raises(ValueError) as info:
        async with CoroutineExecutor() as exe:
            await exe.submit(job)
            helping = asyncio.ensure_future(helper(exe))
            await exe.submit(fail_after, go, error)
            go.set()
            try:
                await asyncio.Event().wait()  # interrupted by fail-fast
            except asyncio.CancelledError:
                await job.cleaning.wait()
                assert await exe.shutdown(wait=False) is None
                await helping
                job.release.set()
                raise
    assert info.value is error
    assert helper_returned == [None]
    assert await exe.shutdown() is None  # the block raised it


async def test_an_outer_job_stopping_an_inner_executor_without_waiting_does_not_fail(
    loop_kind: str,
) -> None:
    """An inner executor the outer job owns, without a block: its shutdown(wait=False)
    returns, the outer job succeeds, and a shutdown() that waits raises the inner error."""
    error = ValueError("inner job failed")

    async def outer_job() -> CoroutineExecutor:
        go = asyncio.Event()
        inner = CoroutineExecutor()
        failing = await inner.submit(fail_after, go, error)
        go.set()
        await asyncio.wait([failing])
        assert await inner.shutdown(wait=False) is None
        return inner

    async with CoroutineExecutor() as exe:
        outer = await exe.submit(outer_job)
    inner = outer.result()
    with pytest.raises(ValueError) as info:
        await inner.shutdown()
    assert info.value is error
