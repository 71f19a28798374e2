"""An ordinary cancel that looks like the loop's end must not stop the executor.

The executor takes a job's cancel for the end of ``asyncio.run()`` when every unfinished
task on the loop has a cancellation pending (see docs/semantics.rst, "A job cancelled from
outside counts as an error"). A docs-only tester (brk8) found the same picture in a plain
program: the body, the only task left, waits in ``submit()`` under ``asyncio.timeout``,
and the timeout fires in the turn the slot it was granted comes free. The executor then
stopped itself: the queued jobs were cancelled, later submits refused, and the block
raised nothing (3.13 with the eager task factory: 26 runs in 100). A second one (brk9):
a body awaiting a job's task under a timeout, which passes the cancel on to the job.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from coroexecutor import CoroutineExecutor
from tests.conftest import new_loop

T = TypeVar("T")

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(
        sys.version_info < (3, 11), reason="a task's pending cancels are counted from 3.11"
    ),
]


async def _noop(n: int) -> int:
    await asyncio.sleep(0)
    return n


async def _scenario(kind: str) -> tuple[list[Any], str, Any]:
    """The body waits in submit() for the only slot; the job holding it queues three jobs
    behind the body, has the body cancelled in the turn after its own end (as a timeout
    firing then would: the slot is granted to the body by then, not yet taken) and ends.
    The body takes the cancel back, as asyncio.timeout does, and goes on."""
    body = asyncio.current_task()
    assert body is not None
    loop = asyncio.get_running_loop()
    async with CoroutineExecutor(max_workers=1) as exe:
        go = asyncio.Event()
        queued: list[asyncio.Future[int]] = []

        async def holder() -> None:
            await go.wait()
            queued.extend(exe.submit_nowait(_noop, n) for n in range(3))
            loop.call_soon(body.cancel)  # runs after the slot is granted to the body

        await exe.submit(holder)
        go.set()
        try:
            await exe.submit(_noop, 99)
            raise AssertionError("the body's submit was not cancelled")
        except asyncio.CancelledError:
            body.uncancel()  # what asyncio.timeout does with its own cancel
        results = list(await asyncio.gather(*queued, return_exceptions=True))
        try:
            later = str(await (await exe.submit(_noop, 7)))
        except RuntimeError as exc:
            later = f"refused: {exc}"
    return results, later, exe.stats


def _run_on(kind: str, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on a new debug loop of ``kind`` (its own loop, not the
    suite's: the suite's runner adds a task on 3.11, and these cases need the body to be
    the only task)."""
    if kind == "eager" and sys.version_info < (3, 12):
        main.close()
        pytest.skip("asyncio.eager_task_factory is new in 3.12")
    if kind == "uvloop" and importlib.util.find_spec("uvloop") is None:
        main.close()
        pytest.skip("uvloop is not installed")
    loop = new_loop(kind)
    loop.set_debug(True)
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.mark.parametrize("kind", ["default", "eager", "uvloop"])
def test_a_cancelled_submit_of_the_only_task_does_not_stop_the_executor(kind: str) -> None:
    results, later, stats = _run_on(kind, _scenario(kind))
    assert results == [0, 1, 2]  # the queued jobs ran (they were cancelled)
    assert later == "7"  # a later submit is accepted (it was refused: shut down)
    assert (stats.succeeded, stats.cancelled, stats.failed) == (5, 0, 0)


async def _await_under_a_timeout(via: str) -> tuple[Any, Any]:
    """A body awaits a job's task under a timeout (brk9): the timeout cancels the body,
    which passes the cancel on to the job it awaits, so for a moment every task has a
    cancel pending; the job queued behind must still run once the timeout is over."""
    loop = asyncio.get_running_loop()
    async with CoroutineExecutor(max_workers=1, suppress_task_errors=True) as exe:
        started = asyncio.Event()

        async def slow() -> None:
            started.set()
            await asyncio.Event().wait()

        task = await exe.submit(slow)
        queued = exe.submit_nowait(_noop, 5)
        await started.wait()
        body = asyncio.current_task()
        assert body is not None
        if via == "timeout":
            try:
                async with asyncio.timeout(None) as deadline:
                    deadline.reschedule(loop.time())  # due now: it fires at the next turn
                    await task
            except TimeoutError:
                pass
        else:  # a TaskGroup: a sibling fails while a child awaits the job

            async def child() -> None:
                await task

            async def failer() -> None:
                await asyncio.sleep(0)
                raise ValueError("one request failed")

            # (No except*: this file must parse on 3.9 too.)
            with pytest.raises(Exception, match="unhandled errors in a TaskGroup") as info:
                async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]  # 3.11+
                    group.create_task(child())
                    group.create_task(failer())
            assert [type(e) for e in info.value.exceptions] == [ValueError]  # type: ignore[attr-defined]  # an ExceptionGroup
        result = await queued
    return result, exe.stats


@pytest.mark.parametrize("via", ["timeout", "taskgroup"])
@pytest.mark.parametrize("kind", ["default", "eager", "uvloop"])
def test_a_cancel_passed_on_to_an_awaited_job_keeps_the_queued_jobs(kind: str, via: str) -> None:
    result, stats = _run_on(kind, _await_under_a_timeout(via))
    assert result == 5  # the queued job ran (it was dropped: CancelledError)
    assert (stats.succeeded, stats.cancelled) == (1, 1)  # the awaited job is cancelled


def test_the_end_of_asyncio_run_still_drops_the_queued_jobs() -> None:
    # The other side: a task left waiting in submit() when asyncio.run()'s main returns is
    # cancelled by the loop's end with the running job; the queued job behind it is
    # dropped, not started as a task nobody waits for.
    seen: dict[str, Any] = {}

    async def main() -> None:
        exe = CoroutineExecutor(max_workers=1)
        started = asyncio.Event()

        async def parked() -> None:
            started.set()
            await asyncio.Event().wait()

        await exe.submit(parked)
        await started.wait()

        async def waiter() -> None:
            await exe.submit(_noop, 1)

        seen["waiter"] = asyncio.ensure_future(waiter())
        seen["queued"] = exe.submit_nowait(_noop, 2)
        seen["exe"] = exe
        await asyncio.sleep(0)  # the waiter waits for the slot

    asyncio.run(main(), debug=True)
    assert seen["queued"].cancelled()
    assert seen["exe"].stats.cancelled >= 2  # the running job and the queued one


async def _cancel_every_task(first: str, suppress: bool) -> tuple[list[int], Any, str, Any]:
    """Other code ends the loop by cancelling every task (the body and the running job,
    ``first`` first), and the program goes on: the body takes its cancel back. No
    asyncio.run() is ending, so the job's cancel is a cancel from outside (brk20)."""
    ran: list[int] = []
    started = asyncio.Event()

    async def job(n: int) -> int:
        ran.append(n)
        if n == 0:
            started.set()
            await asyncio.Event().wait()
        return n

    body = asyncio.current_task()
    assert body is not None
    exe = CoroutineExecutor(max_workers=1, suppress_task_errors=suppress)
    running = await exe.submit(job, 0)
    queued = exe.submit_nowait(job, 1)
    await started.wait()
    assert asyncio.all_tasks() == {body, running}  # every task on the loop
    order = [running, body] if first == "job" else [body, running]
    asyncio.get_running_loop().call_soon(lambda: [task.cancel() for task in order])
    try:
        await asyncio.Event().wait()
        raise AssertionError("the body was not cancelled")
    except asyncio.CancelledError:
        body.uncancel()  # the program goes on
    try:
        await exe.shutdown()
        ended = "shutdown returned"
    except asyncio.CancelledError:
        ended = "shutdown raised CancelledError"
    outcome = "cancelled" if queued.cancelled() else queued.result()
    return ran, outcome, ended, exe.stats


@pytest.mark.parametrize("first", ["job", "body"])
@pytest.mark.parametrize("kind", ["default", "eager", "uvloop"])
def test_a_loop_other_code_ends_fails_fast_on_the_jobs_cancel(kind: str, first: str) -> None:
    # Under fail-fast the running job's cancel is its error: the queued job is dropped
    # and shutdown() raises it (docs/semantics.rst). With the job's cancel taken first,
    # the body's still pending, it was taken for the loop's end: the queued job started
    # and shutdown() raised nothing (3.11, /tmp/brk20/le2.py).
    ran, outcome, ended, stats = _run_on(kind, _cancel_every_task(first, suppress=False))
    assert (ran, outcome, ended) == ([0], "cancelled", "shutdown raised CancelledError")
    assert (stats.succeeded, stats.cancelled, stats.failed) == (0, 2, 0)


@pytest.mark.parametrize("first", ["job", "body"])
@pytest.mark.parametrize("kind", ["default", "eager", "uvloop"])
def test_a_loop_other_code_ends_keeps_its_queued_jobs_when_errors_are_suppressed(
    kind: str, first: str
) -> None:
    ran, outcome, ended, stats = _run_on(kind, _cancel_every_task(first, suppress=True))
    assert (ran, outcome, ended) == ([0, 1], 1, "shutdown returned")
    assert (stats.succeeded, stats.cancelled, stats.failed) == (1, 1, 0)
