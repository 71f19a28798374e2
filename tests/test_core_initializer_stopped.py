"""CoroutineExecutor's initializer answering the executor's cancel with an error of its own
(``except CancelledError: raise OSError``): that error is never lost (found by a docs-only
tester, brk20 finding 1).

Stopped by shutdown() (no error known), the initializer has failed: the executor is
broken, and the block's entry, the shutdown() calls that wait, or the collection of the
executor tell of it. Stopped by a cause with an exception of its own (the deadline, the
entering task's cancellation), that cause wins and the initializer's error goes to the
loop's exception handler.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from coroexecutor import BrokenCoroutineExecutor, CoroutineExecutor, ExecutorTimeoutError

pytestmark = pytest.mark.timeout(15)

UNRETRIEVED = (
    "CoroutineExecutor job exception was never retrieved (no async with block, and no"
    " shutdown() that waits, raised it)"
)


async def park() -> None:
    await asyncio.Event().wait()


class FailsOnCancel:
    """An initializer parked until cancelled, which then raises an OSError of its own."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.error = OSError("flush failed while stopping")
        self.task: asyncio.Task[Any] | None = None  # the task it runs in

    async def __call__(self) -> None:
        self.task = asyncio.current_task()
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise self.error from None


@contextmanager
def reports_collected() -> Iterator[list[dict[str, Any]]]:
    """What the loop's exception handler is given meanwhile."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    reports: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, ctx: reports.append(ctx))
    try:
        yield reports
    finally:
        loop.set_exception_handler(previous)


async def initializer_done(init: FailsOnCancel) -> None:
    """Wait for the initializer's task: the executor's done callback, added first, has
    run when this returns."""
    assert init.task is not None
    await asyncio.wait([init.task])


@pytest.mark.parametrize("suppress", [False, True], ids=["fail_fast", "suppress"])
async def test_shutdown_wait_false_then_the_waiting_shutdown_raises_the_initializers_error(
    loop_kind: str, suppress: bool
) -> None:
    """Under either policy: the initializer's error is no job's."""
    init = FailsOnCancel()
    exe = CoroutineExecutor(initializer=init, suppress_task_errors=suppress)
    queued = exe.submit_nowait(park)  # starts the initializer; the job waits for it
    await init.started.wait()
    assert await exe.shutdown(wait=False) is None  # nothing known yet
    with pytest.raises(BrokenCoroutineExecutor, match="its initializer raised") as info:
        await exe.shutdown()
    assert info.value.__cause__ is init.error
    assert queued.cancelled()
    assert await exe.shutdown() is None  # raised once it returned: a no-op
    with pytest.raises(BrokenCoroutineExecutor):
        exe.submit_nowait(park)


async def test_the_end_of_a_grace_period_then_that_shutdown_raises_the_initializers_error(
    loop_kind: str,
) -> None:
    init = FailsOnCancel()
    exe = CoroutineExecutor(initializer=init)
    exe.submit_nowait(park)
    await init.started.wait()
    with pytest.raises(BrokenCoroutineExecutor) as info:
        await exe.shutdown(timeout=0.01)  # the grace period ends: the initializer cancelled
    assert info.value.__cause__ is init.error


async def _enter(exe: CoroutineExecutor) -> None:
    """Enter the block, whose body must not run: the initializer is stopped first."""
    async with exe:
        pytest.fail("the body must not run")


async def test_shutdown_wait_false_while_entering_the_block_raises_the_initializers_error(
    loop_kind: str,
) -> None:
    init = FailsOnCancel()
    exe = CoroutineExecutor(initializer=init)

    entering = asyncio.create_task(_enter(exe))
    await init.started.wait()
    await exe.shutdown(wait=False)
    with pytest.raises(BrokenCoroutineExecutor) as info:
        await entering
    assert info.value.__cause__ is init.error
    assert await exe.shutdown() is None  # the block raised it


async def test_without_anyone_to_raise_it_the_initializers_error_is_reported_when_collected(
    loop_kind: str,
) -> None:
    with reports_collected() as reports:
        init = FailsOnCancel()
        exe = CoroutineExecutor(initializer=init)
        exe.submit_nowait(park)
        await init.started.wait()
        await exe.shutdown(wait=False)
        await initializer_done(init)
        for _ in range(20):  # a bounded number of loop turns, not time
            if "closed" in repr(exe):  # it closes itself, from a callback that holds it
                break
            await asyncio.sleep(0)
        assert "closed" in repr(exe)
        assert reports == []
        # The error's traceback holds the initializer, whose task's context holds the
        # executor: drop them all.
        del exe, init
        gc.collect()
    assert [(ctx["message"], repr(ctx["exception"].__cause__)) for ctx in reports] == [
        (UNRETRIEVED, "OSError('flush failed while stopping')")
    ]


async def test_the_deadline_wins_and_the_initializers_error_is_reported(loop_kind: str) -> None:
    init = FailsOnCancel()
    exe = CoroutineExecutor(initializer=init, timeout=0.01)
    with reports_collected() as reports, pytest.raises(ExecutorTimeoutError):
        async with exe:
            pytest.fail("the body must not run")
    assert [ctx["exception"] for ctx in reports] == [init.error]
    assert "the deadline passed" in reports[0]["message"]


async def test_an_outer_cancel_of_the_entry_wins_and_the_initializers_error_is_reported(
    loop_kind: str,
) -> None:
    init = FailsOnCancel()
    exe = CoroutineExecutor(initializer=init)

    with reports_collected() as reports:
        entering = asyncio.create_task(_enter(exe))
        await init.started.wait()
        entering.cancel()
        with pytest.raises(asyncio.CancelledError):
            await entering
    assert [ctx["exception"] for ctx in reports] == [init.error]
    assert "cancelled" in reports[0]["message"]
