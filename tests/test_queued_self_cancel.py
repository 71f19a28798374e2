"""A queued job's future cancelled while its job is being started follows the job.

Under an eager task factory (Python 3.12+) a queued job's first step runs inside
create_task, before start_queued has the task its future follows. A job that cancelled
its own future there (selfc, /tmp/qstat/selfcancel.py) got a future cancelled at once
while the job ran on: counted succeeded, with on_job_done given the cancelled future.
docs/semantics.rst promises that once a job has started, ``cancel()`` is its task's and
the future ends as the job does. So a cancel that comes while the job is being started
is recorded and handed to the task as soon as start_queued has it: the step's next await
raises CancelledError, and the future, the counts and the hook agree on how the job
ended. A map's job, started from the line, that fails in its first step cancels its own
future there too (the map cancels its unfinished jobs): the future has its error.
Without a task factory the same window is open while the job's function runs.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor

EAGER = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12"
)
KEYED = pytest.mark.parametrize("keyed", [False, True], ids=["plain", "key="])
# With a hook, jobs settle from their task's done callback; without one, in-line, in
# their own last step (two paths through start_job).
HOOKED = pytest.mark.parametrize("hooked", [False, True], ids=["in-line", "on_job_done"])


def _key_of(key: Hashable, *args: Any) -> Hashable:
    return key


def _executor(
    *, keyed: bool, hooked: list[asyncio.Future[Any]] | None
) -> CoroutineExecutor:
    """One slot (keyed: one job of a key at a time, every job of key "k"), so the second
    job waits in line; errors stay in their jobs."""
    options: dict[str, Any] = {"suppress_task_errors": True}
    if hooked is not None:
        options["on_job_done"] = hooked.append
    if keyed:
        return CoroutineExecutor(max_workers=1, key=_key_of, max_per_key=1, **options)
    return CoroutineExecutor(max_workers=1, **options)


async def _queued_behind_holder(
    exe: CoroutineExecutor, job: Callable[..., Awaitable[Any]]
) -> tuple[asyncio.Future[Any], asyncio.Future[Any]]:
    """Queue ``job("k")`` behind a job holding the slot (and key "k"), then let the holder
    end: its end starts the queued job. Returns (holder, queued job's future)."""
    release = asyncio.Event()

    async def holder(key: Hashable) -> None:
        await release.wait()

    first = exe.submit_nowait(holder, "k")
    fut = exe.submit_nowait(job, "k")
    assert exe.stats.queued == 1
    release.set()
    return first, fut


@EAGER
@KEYED
@HOOKED
async def test_a_queued_job_cancelling_its_own_future_in_its_eager_first_step_is_cancelled(
    keyed: bool, hooked: bool
) -> None:
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]  # 3.12+
    futs: list[asyncio.Future[Any]] = []
    answers: list[bool] = []
    seen: list[tuple[Any, ...]] = []
    hook: list[asyncio.Future[Any]] | None = [] if hooked else None

    async def job(key: Hashable) -> str:
        answers.append(futs[0].cancel("mine"))  # inside create_task: no task known yet
        assert not futs[0].done()  # it ends as the job does, as a Task's would
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError as exc:
            seen.append(exc.args)
            raise
        return "ran on"

    async with _executor(keyed=keyed, hooked=hook) as exe:
        holder, fut = await _queued_behind_holder(exe, job)
        futs.append(fut)
        await asyncio.wait([fut])
    assert answers == [True]
    assert seen == [("mine",)]  # the task got the cancel, with its message
    assert fut.cancelled()
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (1, 0, 1), stats
    if hook is not None:
        assert sorted(map(id, hook)) == sorted(map(id, [holder, fut]))  # once each
        assert hook[hook.index(fut)].cancelled()


@EAGER
@KEYED
@HOOKED
async def test_a_queued_job_that_catches_the_cancel_of_its_own_future_ends_with_its_answer(
    keyed: bool, hooked: bool
) -> None:
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]  # 3.12+
    futs: list[asyncio.Future[Any]] = []
    hook: list[asyncio.Future[Any]] | None = [] if hooked else None

    async def job(key: Hashable) -> str:
        futs[0].cancel()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "caught"
        raise AssertionError("never woken but by the cancel")

    async with _executor(keyed=keyed, hooked=hook) as exe:
        _, fut = await _queued_behind_holder(exe, job)
        futs.append(fut)
        assert await fut == "caught"
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (2, 0, 0), stats
    if hook is not None:
        assert [f.result() for f in hook if f is fut] == ["caught"]


@EAGER
@KEYED
@HOOKED
async def test_a_queued_job_that_cancels_its_own_future_and_ends_in_its_first_step_keeps_it(
    keyed: bool, hooked: bool
) -> None:
    # Its first step ran the job to its end inside create_task: its task had ended before
    # it could be given the cancel, and the future follows the task (an ended job keeps
    # its outcome), as the counts and the hook do.
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]  # 3.12+
    futs: list[asyncio.Future[Any]] = []
    hook: list[asyncio.Future[Any]] | None = [] if hooked else None

    async def job(key: Hashable) -> str:
        assert futs[0].cancel()
        return "done"

    async with _executor(keyed=keyed, hooked=hook) as exe:
        _, fut = await _queued_behind_holder(exe, job)
        futs.append(fut)
        await asyncio.wait([fut])
    assert fut.result() == "done"
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (2, 0, 0), stats
    if hook is not None:
        assert [f.result() for f in hook if f is fut] == ["done"]


@EAGER
async def test_a_maps_queued_input_failing_in_its_eager_first_step_ends_with_its_error() -> None:
    # A window wider than the limit queues the map's inputs. Input 0 starts as the holder
    # ends and fails in its first step, inside create_task: the map cancels its
    # unfinished jobs, input 0's own future among them, whose task is not known yet.
    # (Only on_job_done shows a map's futures: in-line, the map raises the job's error
    # and the counts were right before too.)
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]  # 3.12+
    release = asyncio.Event()
    hook: list[asyncio.Future[Any]] = []
    error = ValueError("first step")

    async def holder() -> None:
        await release.wait()

    async def job(i: int) -> int:
        if i == 0:
            raise error
        await asyncio.Event().wait()  # cancelled with the map
        raise AssertionError("never woken but by the cancel")

    async with _executor(keyed=False, hooked=hook) as exe:
        first = exe.submit_nowait(holder)
        results = exe.map(job, range(2), buffersize=3)
        step = asyncio.ensure_future(results.__anext__())
        assert exe.stats.queued == 2  # both inputs wait in line
        release.set()
        with pytest.raises(ValueError) as excinfo:
            await step
        assert excinfo.value is error
        await results.aclose()
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (1, 1, 1), stats
    assert len(hook) == 3 and first in hook
    failed = [f for f in hook if not f.cancelled() and f.exception() is not None]
    assert [f.exception() for f in failed] == [error]


@KEYED
@HOOKED
async def test_a_queued_job_whose_function_cancels_its_future_ends_cancelled(
    loop_kind: str, keyed: bool, hooked: bool
) -> None:
    # Any loop: the window is open while the job's function runs, before its coroutine
    # and task exist. The task gets the cancel as start_queued gets it: before its first
    # step (the job never runs), or, under an eager task factory, after the first step,
    # which suspended at its first await and meets the CancelledError there.
    futs: list[asyncio.Future[Any]] = []
    ran: list[str] = []
    hook: list[asyncio.Future[Any]] | None = [] if hooked else None

    async def body() -> str:
        await asyncio.sleep(0)
        ran.append("body")
        return "ran"

    def job(key: Hashable) -> Awaitable[str]:
        assert futs[0].cancel()
        return body()

    async with _executor(keyed=keyed, hooked=hook) as exe:
        _, fut = await _queued_behind_holder(exe, job)
        futs.append(fut)
        await asyncio.wait([fut])
    assert fut.cancelled()
    assert ran == []
    stats = exe.stats
    assert (stats.succeeded, stats.failed, stats.cancelled) == (1, 0, 1), stats
    if hook is not None:
        assert [f.cancelled() for f in hook if f is fut] == [True]


@EAGER
@pytest.mark.parametrize("settles", ["on_job_done", "job_timeout"])
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_a_maps_queued_input_interrupted_in_its_eager_first_step_leaves_the_loop(
    exc_type: type[BaseException], settles: str
) -> None:
    """brk32 F4: the same with KeyboardInterrupt or SystemExit, which asyncio's eager start
    raises out of create_task. The map's cancel of its unfinished jobs cancelled input
    1's future, whose job then failed: its done callback logged InvalidStateError and
    asyncio.run() hung. Now the interrupt leaves the loop, as from any job, and nothing
    is logged but the job's own task, which nobody retrieves (as asyncio logs it)."""
    error = exc_type("first step")
    reports: list[str] = []
    options: dict[str, Any] = (
        {"on_job_done": lambda future: None} if settles == "on_job_done" else {"job_timeout": 5}
    )

    async def job(n: int) -> None:
        if n == 1:
            raise error
        await asyncio.sleep(0)  # input 0 holds the one slot: input 1 waits in line

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]  # 3.12+
        loop.set_exception_handler(lambda _, context: reports.append(context["message"]))
        async with asyncio.timeout(5), CoroutineExecutor(max_workers=1, **options) as exe:
            async for _ in exe.map(job, range(2), buffersize=2):
                pass

    with pytest.raises(exc_type) as info:
        asyncio.run(main())
    assert info.value is error
    del info
    error.__traceback__ = error.__context__ = None
    assert not [r for r in reports if "never retrieved" not in r], reports
