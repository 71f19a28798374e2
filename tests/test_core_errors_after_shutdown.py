"""A job error that comes while shutdown() has the jobs cancelled (semantics.rst: "Errors
while shutdown() cancels the jobs"). Under fail-fast it is the first error: the block or
a waiting shutdown() raises it, or it is reported when the executor is collected, as
asyncio.TaskGroup raises a child's error whoever cancelled the child. It was counted in
``stats.failed`` and went nowhere else. A first cause with something of its own to raise
(a job error, the deadline, the body's error or cancellation) still wins."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, ExecutorTimeoutError, Retry
from tests.conftest import new_loop

pytestmark = pytest.mark.timeout(10)
UNRETRIEVED = (
    "CoroutineExecutor job exception was never retrieved (no async with block, and no"
    " shutdown() that waits, raised it)"
)


class FailsOnCancel:
    """A job that runs until cancelled and answers the cancel with an error of its own
    (a flush that fails as it stops). With ``linger``, it first waits for ``release``,
    counting the further cancels it gets meanwhile (``recancelled`` at the first)."""

    def __init__(self, linger: bool = False) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.recancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.linger = linger
        self.error = ValueError("flush failed while stopping")

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            while self.linger and not self.release.is_set():
                try:
                    await self.release.wait()
                except asyncio.CancelledError:
                    self.recancelled.set()
            raise self.error  # noqa: B904  # chained to the cancel, as a job would be


async def parks(cancelled: asyncio.Event | None = None) -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if cancelled is not None:
            cancelled.set()
        raise


#
# shutdown(wait=False), from anywhere
#


@pytest.mark.parametrize("caller", ["body", "job", "task"])
async def test_a_job_error_answering_shutdown_without_wait_is_raised_by_the_block(
    loop_kind: str, caller: str
) -> None:
    job = FailsOnCancel()

    async def stopper() -> None:
        await exe.shutdown(wait=False)

    with pytest.raises(ValueError) as info:
        async with CoroutineExecutor() as exe:
            handle = await exe.submit(job)
            await job.started.wait()
            if caller == "body":
                await exe.shutdown(wait=False)
            elif caller == "job":
                await (await exe.submit(stopper))
            else:
                await asyncio.create_task(stopper())
    assert info.value is job.error  # the job's own object
    assert handle.exception() is job.error
    assert (exe.stats.failed, exe.stats.cancelled) == (1, 0)


async def test_the_error_interrupts_a_body_that_goes_on_after_shutdown(loop_kind: str) -> None:
    job = FailsOnCancel()
    with pytest.raises(ValueError) as info:
        async with CoroutineExecutor() as exe:
            await exe.submit(job)
            await job.started.wait()
            await exe.shutdown(wait=False)
            await asyncio.Event().wait()  # interrupted, as by any fail-fast error
    assert info.value is job.error
    task = asyncio.current_task()
    assert task is not None
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 0  # the interruption was withdrawn


async def test_the_job_that_called_shutdown_is_cancelled_once_another_job_fails(
    loop_kind: str,
) -> None:
    """shutdown(wait=False) spares the job that calls it; a job error that follows cancels
    every job, that one too, as fail-fast does (the block waited for it for ever)."""
    job = FailsOnCancel()
    stopper_cancelled = asyncio.Event()

    async def stopper() -> None:
        await job.started.wait()
        await exe.shutdown(wait=False)
        await parks(stopper_cancelled)

    with pytest.raises(ValueError) as info:
        async with CoroutineExecutor() as exe:
            await exe.submit(job)
            await exe.submit(stopper)
    assert info.value is job.error
    assert stopper_cancelled.is_set()
    assert (exe.stats.failed, exe.stats.cancelled) == (1, 1)


async def test_the_job_that_called_shutdown_and_then_fails_has_its_error_raised(
    loop_kind: str,
) -> None:
    error = KeyError("after stopping the others")
    other_cancelled = asyncio.Event()

    async def stopper() -> None:
        await exe.shutdown(wait=False)
        await other_cancelled.wait()
        raise error

    with pytest.raises(KeyError) as info:
        async with CoroutineExecutor() as exe:
            await exe.submit(parks, other_cancelled)
            await exe.submit(stopper)
    assert info.value is error
    assert (exe.stats.failed, exe.stats.cancelled) == (1, 1)


async def test_without_a_block_the_next_waiting_shutdown_raises_it(loop_kind: str) -> None:
    job = FailsOnCancel()
    exe = CoroutineExecutor()
    await exe.submit(job)
    await job.started.wait()
    assert await exe.shutdown(wait=False) is None  # nothing known yet
    with pytest.raises(ValueError) as info:
        await exe.shutdown()
    assert info.value is job.error
    assert await exe.shutdown() is None  # raised once it returned: a no-op


async def test_without_anyone_to_raise_it_it_is_reported_when_collected() -> None:
    reports: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reports.append(ctx))
    job = FailsOnCancel()
    exe = CoroutineExecutor()
    handle = await exe.submit(job)
    await job.started.wait()
    await exe.shutdown(wait=False)
    await asyncio.wait([handle])
    for _ in range(20):  # a bounded number of loop turns, not time
        if "closed" in repr(exe):  # it closes itself, from a callback that holds it
            break
        await asyncio.sleep(0)
    assert "closed" in repr(exe)
    assert reports == []
    # The error's traceback holds the job's frames, and so the executor: drop both.
    del exe, handle, job
    gc.collect()
    assert [(ctx["message"], repr(ctx["exception"])) for ctx in reports] == [
        (UNRETRIEVED, "ValueError('flush failed while stopping')")
    ]


#
# The end of a grace period, and a cancelled shutdown()
#


@pytest.mark.parametrize("block", [False, True])
async def test_a_job_error_answering_the_grace_periods_cancel_is_raised(
    loop_kind: str, block: bool
) -> None:
    job = FailsOnCancel()
    if block:
        with pytest.raises(ValueError) as info:
            async with CoroutineExecutor() as exe:
                await exe.submit(job)
                await job.started.wait()
                assert await exe.shutdown(timeout=0.01) is None  # the block owns the error
    else:
        exe = CoroutineExecutor()
        await exe.submit(job)
        await job.started.wait()
        with pytest.raises(ValueError) as info:
            await exe.shutdown(timeout=0.01)
    assert info.value is job.error
    assert exe.stats.failed == 1


async def test_a_job_error_answering_a_cancelled_shutdowns_cancel_is_raised_later(
    loop_kind: str,
) -> None:
    """The cancelled shutdown() raises its cancellation at once; the error the job
    answers with goes to the next shutdown() that waits (it used to go nowhere)."""
    job = FailsOnCancel(linger=True)
    exe = CoroutineExecutor()
    await exe.submit(job)
    await job.started.wait()
    entered = asyncio.Event()

    async def close() -> None:
        entered.set()  # in the step that calls shutdown(): it waits in there by now
        await exe.shutdown()

    closing = asyncio.ensure_future(close())
    await entered.wait()
    closing.cancel()
    await job.cancelled.wait()
    with pytest.raises(asyncio.CancelledError):
        await closing
    job.release.set()
    with pytest.raises(ValueError) as info:
        await exe.shutdown()
    assert info.value is job.error


#
# The first cause wins
#


FIRST_CAUSES = {  # what the block raises
    "deadline": ExecutorTimeoutError,
    "job error": OSError,
    "body error": RuntimeError,
    "body cancelled": asyncio.CancelledError,
    "body error after shutdown(wait=False)": RuntimeError,
    "exit cancelled after shutdown(wait=False)": asyncio.CancelledError,
}


@pytest.mark.parametrize("first", list(FIRST_CAUSES))
async def test_a_first_cause_with_its_own_exception_wins_and_the_error_stays_counted(
    loop_kind: str, first: str
) -> None:
    """The block raises the first cause's exception; the job's error that follows stays
    in its task and in stats.failed, and is neither raised nor reported (the harness
    fails a test on any report)."""
    job = FailsOnCancel(linger=first.startswith("exit cancelled"))
    errors = {"body error": RuntimeError("body"), "job error": OSError("the first job error")}
    errors["body error after shutdown(wait=False)"] = errors["body error"]
    exe = CoroutineExecutor(timeout=0.5 if first == "deadline" else None)
    handles: list[asyncio.Task[Any]] = []

    async def fails() -> None:
        raise errors["job error"]

    async def block() -> None:
        async with exe:
            handles.append(await exe.submit(job))
            await job.started.wait()
            if first == "job error":
                await exe.submit(fails)
            elif first.endswith("after shutdown(wait=False)"):
                await exe.shutdown(wait=False)
                if first.startswith("body error"):
                    raise errors[first]  # before the job answers the cancel
                return  # to the exit, which waits for the job
            elif first == "body error":
                raise errors[first]
            await asyncio.Event().wait()

    task = asyncio.create_task(block())
    await job.started.wait()
    if first == "body cancelled":
        task.cancel()
    elif first.startswith("exit cancelled"):
        await job.cancelled.wait()  # by shutdown()
        task.cancel()
        await job.recancelled.wait()  # the exit's cancel reached the job
        job.release.set()
    with pytest.raises(FIRST_CAUSES[first]) as info:
        await task
    if first in errors:
        assert info.value is errors[first]
    assert handles[0].exception() is job.error
    assert exe.stats.failed == (2 if first == "job error" else 1)


async def test_suppressed_the_error_stays_in_its_task(loop_kind: str) -> None:
    job = FailsOnCancel()
    async with CoroutineExecutor(suppress_task_errors=True) as exe:
        handle = await exe.submit(job)
        await job.started.wait()
        await exe.shutdown(wait=False)
    assert handle.exception() is job.error
    assert exe.stats.failed == 1


@pytest.mark.parametrize("suppress", [False, True])
async def test_a_map_job_answering_the_maps_cancel_with_an_error_has_failed(
    loop_kind: str, suppress: bool
) -> None:
    # A map left early cancels its in-flight jobs, but the executor is not stopping: a job
    # that answers that cancel with an error of its own fails like any other job (found by
    # a docs-only tester, whom the docs had left to expect nothing).
    job = FailsOnCancel()

    async def first_done_then_fails(n: int) -> int:
        if n == 0:
            await job.started.wait()  # the other job runs: it is in flight
            return 0
        await job()
        return n

    body_went_on = False
    expected = contextlib.nullcontext() if suppress else pytest.raises(ValueError)
    with expected as info:
        async with CoroutineExecutor(max_workers=2, suppress_task_errors=suppress) as exe:
            async for _ in exe.map(first_done_then_fails, [0, 1]):
                break
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            body_went_on = True
    assert exe.stats.failed == 1
    if suppress:
        assert body_went_on
    else:
        assert isinstance(info, pytest.ExceptionInfo) and info.value is job.error
        assert "(map input #1)" in getattr(job.error, "__notes__", [""])[-1]
    job.error.__traceback__ = None


@pytest.mark.parametrize(
    "body_error",
    [
        KeyError("body clean-up failed"),
        KeyboardInterrupt("body clean-up failed"),
        # Not this executor's refusal, though its words are (another executor's, a
        # ThreadPoolExecutor's): the body's own error (found by a docs-only tester).
        RuntimeError("cannot schedule new futures after shutdown"),
    ],
    ids=["KeyError", "KeyboardInterrupt", "another refusal"],
)
async def test_an_error_the_body_raises_after_a_job_error_is_not_lost(
    loop_kind: str, body_error: BaseException
) -> None:
    # Fail-fast interrupts the body; a body that then raises an error of its own lost it
    # without a trace, a KeyboardInterrupt too (found by a docs-only tester). The first
    # cause still wins, and the other is reported; but a Ctrl-C or SystemExit goes on, as
    # from asyncio.TaskGroup, and the job's error is what is reported.
    job_error = ValueError("job failed")
    own = type(body_error)(*body_error.args)  # a fresh one per loop kind
    started = asyncio.Event()
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))

    async def failing() -> None:
        await started.wait()
        raise job_error

    try:
        with pytest.raises(BaseException) as info:
            async with CoroutineExecutor() as exe:
                await exe.submit(failing)
                try:
                    started.set()
                    await asyncio.Event().wait()  # interrupted by fail-fast
                finally:
                    raise own
    finally:
        loop.set_exception_handler(handler)
    if isinstance(own, KeyboardInterrupt):
        assert info.value is own
        assert [c["exception"] for c in reported] == [job_error]
        assert "KeyboardInterrupt" in reported[0]["message"]
    else:
        assert info.value is job_error and job_error.__context__ is None
        assert [c["exception"] for c in reported] == [own]
    assert exe.stats.failed == 1
    del info
    own.__traceback__ = own.__context__ = job_error.__traceback__ = None


async def test_the_refusal_a_wait_for_around_submit_turns_the_interruption_into_is_not_reported(
    loop_kind: str,
) -> None:
    # On Python 3.9-3.11 wait_for loses the interruption when the failing job frees the
    # slot its submit() waits for: the body gets the executor's RuntimeError refusal.
    # That is the stop's doing, not an error of the body's own: not reported (it was,
    # found by a docs-only tester). The block raises the job's error.
    job_error = ValueError("job failed")
    go = asyncio.Event()
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))

    async def failing() -> None:
        await go.wait()
        for _ in range(3):  # the body's submit() now waits for the slot
            await asyncio.sleep(0)
        raise job_error

    try:
        with pytest.raises(ValueError) as info:
            async with CoroutineExecutor(max_workers=1) as exe:
                await exe.submit(failing)
                go.set()
                await asyncio.wait_for(exe.submit(asyncio.sleep, 10), 5)
    finally:
        loop.set_exception_handler(handler)
    assert info.value is job_error
    assert reported == []
    del info
    job_error.__traceback__ = None


#
# The end of asyncio.run(), with no block and no shutdown()
#


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="a task's pending cancels are counted from 3.11"
)
@pytest.mark.parametrize("how", ["submit", "hook", "retry", "queued", "map"])
def test_a_job_error_answering_the_end_of_asyncio_run_is_reported_once(
    loop_kind: str, how: str
) -> None:
    """Regression: asyncio.run() reports a task that answers its final cancel with an
    error ("unhandled exception during asyncio.run() shutdown"); the executor, holding the
    same error as its first, reported it a second time when it was collected."""
    job = FailsOnCancel()
    reported: list[tuple[str, BaseException | None]] = []  # (the task and its context
    kept: list[Any] = []  # would keep the executor alive)

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: reported.append((context["message"], context.get("exception")))
        )
        options: dict[str, Any] = {}
        if how == "hook":
            options["on_job_done"] = lambda future: None
        elif how == "retry":
            options["retry"] = Retry(attempts=3, on=(KeyError,))
        exe = CoroutineExecutor(max_workers=1, **options)
        kept.append(exe)
        if how == "queued":
            kept.append(exe.submit_nowait(job))
        elif how == "map":
            kept.append(asyncio.ensure_future(_drain(exe.map(lambda _: job(), [0]))))
        else:
            kept.append(await exe.submit(job))
        await job.started.wait()

    runner = asyncio.Runner(loop_factory=lambda: new_loop(loop_kind), debug=True)
    with runner:
        runner.run(main())
    exe = kept[0]
    del kept[:]
    assert exe.stats.failed == 1
    assert isinstance(job.error.__context__, asyncio.CancelledError)
    job.error.__traceback__ = job.error.__context__.__traceback__ = None  # (they hold it)
    del exe
    gc.collect()  # the executor reports an error nobody was given as it is collected
    assert reported == [("unhandled exception during asyncio.run() shutdown", job.error)]
    reported.clear()
    job.error.__context__ = None


async def _drain(results: Any) -> None:
    async for _ in results:
        pass


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="a task's pending cancels are counted from 3.11"
)
@pytest.mark.parametrize("how", ["submit", "hook"])
def test_a_job_error_answering_the_end_of_asyncio_run_cancels_no_other_job_again(
    loop_kind: str, how: str
) -> None:
    """Regression (found by a docs-only tester): with no block, the end of asyncio.run()
    cancels every job once and waits for their clean-up. A job answering that cancel with
    an error of its own made fail-fast cancel the other jobs a second time, interrupting
    a clean-up that awaits (a ``finally: await conn.close()``). Fail-fast has nothing
    left to stop then; asyncio reports the error, once."""
    error = ConnectionError("flush failed")
    log: list[str] = []
    failing: list[asyncio.Future[Any]] = []
    kept: list[Any] = []  # the executor and the jobs' tasks
    parked, cleaning = asyncio.Event(), asyncio.Event()

    async def job(n: int) -> None:
        if n == 0:  # answers the loop's cancel with an error
            me = asyncio.current_task()
            assert me is not None
            failing.append(me)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await cleaning.wait()  # (else a cancel now might merge with the first)
                raise error  # noqa: B904  # chained to the cancel, as a job would be
        parked.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            try:  # a clean-up that awaits, step by step, past the failing job's end
                while not failing[0].done():
                    await asyncio.sleep(0)
                await asyncio.sleep(0)  # (its done callbacks ran before this)
                log.append("clean-up ends")
            except asyncio.CancelledError:
                log.append("clean-up cancelled a second time")
                raise

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: log.append(context["message"])
        )
        hook = {"on_job_done": lambda future: None} if how == "hook" else {}
        exe = CoroutineExecutor(**hook)  # type: ignore[arg-type]
        kept.append(exe)
        kept.append(await exe.submit(job, 0))
        kept.append(await exe.submit(job, 1))
        await parked.wait()

    runner = asyncio.Runner(loop_factory=lambda: new_loop(loop_kind), debug=True)
    with runner:
        runner.run(main())
    assert sorted(log) == ["clean-up ends", "unhandled exception during asyncio.run() shutdown"]
    assert kept[0].stats.failed == 1
    error.__traceback__ = error.__context__ = None  # (they hold the executor)
