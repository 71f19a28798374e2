"""The error policy and cancellation semantics of CoroutineExecutor (DESIGN: error policy)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import re
import signal
import sys
from collections.abc import Awaitable
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor, ExecutorTimeoutError
from tests.conftest import new_loop

TaskGroup = getattr(asyncio, "TaskGroup", None)  # Python 3.11+

pytestmark = pytest.mark.timeout(10)
SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"


async def park(
    started: asyncio.Event | None = None, cancelled: asyncio.Event | None = None
) -> None:
    """A job that runs until cancelled, signalling when it starts and when it is cancelled."""
    if started is not None:
        started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if cancelled is not None:
            cancelled.set()
        raise


async def fail_after(event: asyncio.Event, exc: BaseException) -> None:
    await event.wait()
    raise exc


async def cancel_when(task: asyncio.Future[Any], *reached: asyncio.Event) -> None:
    """Cancel ``task`` once every event in ``reached`` is set; it must end cancelled."""
    for event in reached:
        await event.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


#
# 1. Fail-fast (default)
#


async def test_first_error_cancels_running_jobs_and_is_raised_unchanged(loop_kind: str) -> None:
    started, saw_cancel = asyncio.Event(), asyncio.Event()
    error = ValueError("boom")
    with pytest.raises(ValueError) as info:
        async with CoroutineExecutor(max_workers=2) as exe:
            await exe.submit(park, started, saw_cancel)
            await exe.submit(fail_after, started, error)
    assert info.value is error  # the same object, not a copy or a group
    tb_names = []
    tb = info.value.__traceback__
    while tb is not None:
        tb_names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "fail_after" in tb_names  # the job's own frame is still in the traceback
    assert saw_cancel.is_set()


class ChainedFailure:
    """A job that fails with an error chained to a KeyError (``how``: implicitly, ``from``
    it, or ``from None``) and records the chain and traceback it leaves the job with."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.error: BaseException | None = None
        self.left: tuple[Any, ...] = ()

    async def __call__(self, go: asyncio.Event) -> None:
        await go.wait()
        try:
            try:
                {}["missing"]
            except KeyError as exc:
                if self.how == "context":
                    raise RuntimeError("lookup failed")  # noqa: B904 - the implicit chain
                if self.how == "cause":
                    raise RuntimeError("lookup failed") from exc
                raise RuntimeError("lookup failed") from None
        except RuntimeError as exc:
            self.error = exc
            self.left = (
                exc.__context__, exc.__cause__, exc.__suppress_context__, exc.__traceback__
            )
            raise

    def assert_unchanged(self, raised: BaseException) -> list[str]:
        """``raised`` is the job's own error, chained as the job left it; returns the
        names of the frames in its traceback."""
        assert raised is self.error
        context, cause, suppress, job_tb = self.left
        assert isinstance(context, KeyError)
        assert raised.__context__ is context
        assert raised.__cause__ is cause
        assert raised.__suppress_context__ is suppress
        tbs = []
        tb = raised.__traceback__
        while tb is not None:
            tbs.append(tb)
            tb = tb.tb_next
        assert job_tb in tbs  # the job's own traceback, intact, at the end of the chain
        return [tb.tb_frame.f_code.co_name for tb in tbs]


CHAINS = ["context", "cause", "from None"]


@pytest.mark.parametrize("how", CHAINS)
async def test_the_block_reraises_the_job_error_chained_as_the_job_left_it(
    loop_kind: str, how: str
) -> None:
    """The block raises while the body's interrupting CancelledError is being handled:
    that must not become the error's __context__ (the job's KeyError is)."""
    job = ChainedFailure(how)
    go = asyncio.Event()
    with pytest.raises(RuntimeError) as info:
        async with CoroutineExecutor() as exe:
            await exe.submit(job, go)
            go.set()
            await asyncio.Event().wait()  # interrupted by fail-fast
    job.assert_unchanged(info.value)


@pytest.mark.parametrize("how", CHAINS)
async def test_shutdown_reraises_the_job_error_chained_as_the_job_left_it(how: str) -> None:
    job = ChainedFailure(how)
    go = asyncio.Event()
    exe = CoroutineExecutor()
    await exe.submit(job, go)
    go.set()
    with pytest.raises(RuntimeError) as info:
        try:
            raise LookupError("being handled by the caller")
        except LookupError:
            await exe.shutdown()
    job.assert_unchanged(info.value)


@pytest.mark.parametrize("block", [True, False])
@pytest.mark.parametrize("how", CHAINS)
async def test_a_map_consumer_elsewhere_and_the_owner_raise_the_job_error_unchanged(
    how: str, block: bool
) -> None:
    """Fail-fast cancels a map whose consumer is not the block's task: the consumer raises
    the first error (not its CancelledError), and so does the block (or shutdown())
    afterwards, each time the job's own object with its chain as the job left it."""
    job = ChainedFailure(how)
    go = asyncio.Event()
    consuming = asyncio.Event()
    exe = CoroutineExecutor(max_workers=4)

    async def parked(_: int) -> None:
        consuming.set()
        await asyncio.Event().wait()

    async def consume() -> None:
        async for _ in exe.map(parked, range(2)):
            pass

    async def owner() -> None:
        if block:
            async with exe:
                consumer = asyncio.ensure_future(consume())
                await consuming.wait()
                await exe.submit(job, go)
                go.set()
                with pytest.raises(RuntimeError) as info:
                    await consumer
                job.assert_unchanged(info.value)
                await asyncio.Event().wait()  # interrupted by fail-fast
        else:
            consumer = asyncio.ensure_future(consume())
            await consuming.wait()
            await exe.submit(job, go)
            go.set()
            with pytest.raises(RuntimeError) as info:
                await consumer
            job.assert_unchanged(info.value)
            await exe.shutdown()

    with pytest.raises(RuntimeError) as info:
        await owner()
    frames = job.assert_unchanged(info.value)
    assert "consume" not in frames  # the consumer's raise left no frames behind


@dataclasses.dataclass(frozen=True)
class FrozenError(Exception):
    """An error whose class refuses every attribute assignment, its chain's included."""

    user: str


async def frozen_failure(user: str) -> None:
    await asyncio.sleep(0)
    raise FrozenError(user)


@pytest.mark.parametrize("where", ["block", "shutdown", "map"])
async def test_an_error_that_refuses_assignments_is_reraised_itself(
    loop_kind: str, where: str
) -> None:
    # A frozen dataclass exception: putting its chain back through its own __setattr__
    # raised FrozenInstanceError in place of it (found by a docs-only tester).
    with pytest.raises(FrozenError) as info:
        if where == "shutdown":
            exe = CoroutineExecutor()
            task = await exe.submit(frozen_failure, "alice")
            await asyncio.wait([task])
            await exe.shutdown()
        else:
            async with CoroutineExecutor() as exe:
                if where == "map":
                    async for _ in exe.map(frozen_failure, ["alice"]):
                        pass
                else:
                    task = await exe.submit(frozen_failure, "alice")
                    await asyncio.Event().wait()  # interrupted by fail-fast
    assert info.value.user == "alice"
    assert info.value.__context__ is None and info.value.__cause__ is None


async def test_fail_fast_interrupts_the_producer_at_once(loop_kind: str) -> None:
    """A producer still submitting stops at the first error, not at the end of the block."""
    submitted = 0
    release = asyncio.Event()

    async def failing() -> None:
        await release.wait()
        raise KeyError("first")

    async def quick() -> None:
        release.set()
        # Hold the slot across a turn of the loop, as real work does: under an eager task
        # factory a job that ends in its first step would free its slot inside submit(),
        # and a producer that never waits never lets the failing job run.
        await asyncio.sleep(0)

    with pytest.raises(KeyError):
        async with CoroutineExecutor(max_workers=2) as exe:
            await exe.submit(failing)
            for _ in range(1000):
                await exe.submit(quick)  # waits for a slot: the failure interrupts the wait
                submitted += 1
    assert submitted < 5


async def test_fail_fast_cancels_queued_jobs_which_never_start() -> None:
    started: list[int] = []
    go = asyncio.Event()

    async def job(i: int) -> None:
        started.append(i)
        await asyncio.Event().wait()

    with pytest.raises(RuntimeError, match="bad"):
        async with CoroutineExecutor(max_workers=1) as exe:
            exe.submit_nowait(fail_after, go, RuntimeError("bad"))
            queued = [exe.submit_nowait(job, i) for i in range(5)]
            go.set()
            await asyncio.Event().wait()  # interrupted by the failure
    assert started == []
    assert all(f.cancelled() for f in queued)
    assert exe.stats.cancelled == 5


async def test_error_is_not_lost_when_nobody_keeps_the_handle() -> None:
    async def failing() -> None:
        raise LookupError("dropped handle")

    with pytest.raises(LookupError, match="dropped handle"):
        async with CoroutineExecutor() as exe:
            exe.submit_nowait(failing)  # handle dropped at once
            gc.collect()
            await asyncio.Event().wait()


async def test_outside_cancel_of_a_job_counts_as_its_error() -> None:
    started = asyncio.Event()
    other_cancelled = asyncio.Event()
    with pytest.raises(asyncio.CancelledError):
        async with CoroutineExecutor() as exe:
            victim = await exe.submit(park, started)
            await exe.submit(park, None, other_cancelled)
            await started.wait()
            victim.cancel()
            await asyncio.Event().wait()
    assert other_cancelled.is_set()


async def test_cancel_past_jobtask_cancel_before_the_first_step_is_a_job_error_too(
    loop_kind: str,
) -> None:
    # asyncio.Task.cancel(task) skips JobTask.cancel(): the job's runner never runs, and the
    # executor settles the job when it waits for idle (tests/test_core_completion.py).
    if loop_kind == "eager":
        pytest.skip("an eager task takes its first step inside submit()")
    started, other_cancelled = asyncio.Event(), asyncio.Event()
    with pytest.raises(asyncio.CancelledError):
        async with CoroutineExecutor(max_workers=2) as exe:
            await exe.submit(park, started, other_cancelled)
            await started.wait()
            asyncio.Task.cancel(await exe.submit(asyncio.sleep, 0))
    assert other_cancelled.is_set()
    assert (exe.stats.cancelled, exe.stats.running) == (2, 0)
    gc.collect()  # the job's coroutine was closed: no "never awaited" warning


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="a task's pending cancels are counted from 3.11"
)
@pytest.mark.parametrize("ending", ["main returns", "Ctrl-C"])
@pytest.mark.parametrize("settled", ["in-line", "hook"])
@pytest.mark.parametrize("waiting", ["queued job", "submitter", "map"])
def test_the_end_of_asyncio_run_cancels_no_running_job_a_second_time(
    loop_kind: str, waiting: str, settled: str, ending: str
) -> None:
    """Regression (found by a docs-only tester): with no block and no shutdown(), the end
    of asyncio.run() cancels the running jobs once and waits for their clean-up. With a
    job queued, a task waiting in submit(), or a map's jobs queued behind the slots, the
    first job to end found the loop going down and dropped what waited, but by cancelling
    every running job again: the other job's clean-up (a ``finally: await ...``) was
    interrupted. Only what waits is dropped now."""
    log: list[str] = []
    ended: list[asyncio.Future[Any]] = []  # the jobs, in the order they took their cancel
    kept: list[Any] = []  # the executor, then what waits for a slot
    parked = asyncio.Event()

    async def job(n: int) -> None:
        if n == 1:
            parked.set()  # jobs 0 and 1 run; the rest wait
        try:
            await asyncio.Event().wait()
        finally:
            me = asyncio.current_task()
            assert me is not None
            ended.append(me)
            try:  # a clean-up that awaits, step by step: the first job to take its
                # cancel ends once the other has taken its own, the other once the
                # first has ended and settled
                if ended[0] is me:
                    while len(ended) < 2:
                        await asyncio.sleep(0)
                else:
                    while not ended[0].done():
                        await asyncio.sleep(0)
                    await asyncio.sleep(0)  # (the first's done callbacks ran before this)
                log.append(f"job {n}: clean-up ends")
            except asyncio.CancelledError:
                log.append(f"job {n}: clean-up cancelled a second time")
                raise

    async def main() -> None:
        hook = {"on_job_done": lambda future: None} if settled == "hook" else {}
        exe = CoroutineExecutor(max_workers=2, **hook)  # type: ignore[arg-type]
        kept.append(exe)
        if waiting == "map":  # a window wider than the slots: jobs queue behind them
            kept.append(asyncio.ensure_future(_consume(exe.map(job, range(5), buffersize=4))))
        else:
            exe.submit_nowait(job, 0)
            exe.submit_nowait(job, 1)
            if waiting == "queued job":
                kept.append(exe.submit_nowait(job, 2))
            else:
                kept.append(asyncio.ensure_future(exe.submit(job, 2)))
        await parked.wait()
        await asyncio.wait(kept[1:], timeout=0)  # (one turn: a submitter waits for a slot)
        assert not kept[1].done()
        if ending == "Ctrl-C":  # asyncio.Runner cancels main(), then every other task
            signal.raise_signal(signal.SIGINT)
            await asyncio.Event().wait()

    # A process started in the background (CI's tox) may inherit SIGINT ignored; the
    # Runner turns a Ctrl-C into main()'s cancel only over the default handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        runner = asyncio.Runner(loop_factory=lambda: new_loop(loop_kind), debug=True)
        with runner, contextlib.suppress(KeyboardInterrupt):
            runner.run(main())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sorted(log) == ["job 0: clean-up ends", "job 1: clean-up ends"]
    assert len(ended) == 2 and kept[1].cancelled()  # job 2 never started
    assert kept[0].stats.failed == 0


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="a task's pending cancels are counted from 3.11"
)
@pytest.mark.parametrize("waiting", ["in the body", "in the exit"])
def test_a_block_in_a_task_asyncio_run_ends_cancels_no_job_a_second_time(
    loop_kind: str, waiting: str
) -> None:
    """Regression (found by a docs-only tester): a block running in a task that main()
    started and did not wait for. The end of asyncio.run() cancels that task and the jobs
    at once; the block's exit (or its wait for the jobs) took the cancel for the body's
    own and cancelled every job again, interrupting a job's clean-up that awaits, when
    the job took its cancel before the block's task did (the order is asyncio's: on
    3.11 it usually did). The body waiting in its own clean-up forces that order."""
    log: list[str] = []
    kept: list[Any] = []
    started, body_left = asyncio.Event(), asyncio.Event()

    async def job() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            try:
                if waiting == "in the body":
                    await body_left.wait()  # the body leaves in this step: its exit runs
                for _ in range(3):  # (every other task has taken its cancel by now)
                    await asyncio.sleep(0)
                log.append("clean-up ends")
            except asyncio.CancelledError:
                log.append("clean-up cancelled a second time")
                raise

    async def worker() -> None:
        try:
            async with CoroutineExecutor() as exe:
                await exe.submit(job)
                if waiting == "in the body":
                    try:
                        await asyncio.Event().wait()
                    except asyncio.CancelledError:
                        await asyncio.sleep(0)  # the body's own clean-up
                        body_left.set()
                        raise
        except asyncio.CancelledError:
            log.append("block: cancelled")
            raise

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: log.append(context["message"])
        )
        kept.append(asyncio.create_task(worker()))
        await started.wait()  # the block's body (or its exit) waits; main() returns

    runner = asyncio.Runner(loop_factory=lambda: new_loop(loop_kind), debug=True)
    with runner:
        runner.run(main())
    assert sorted(log) == ["block: cancelled", "clean-up ends"]
    assert kept[0].cancelled()


async def _consume(results: Any) -> None:
    async for _ in results:
        pass


async def test_later_errors_during_cancellation_do_not_replace_the_first() -> None:
    first = ValueError("first")
    go = asyncio.Event()

    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise TypeError("second") from None

    with pytest.raises(ValueError) as info:
        async with CoroutineExecutor() as exe:
            await exe.submit(fails_on_cancel)
            await exe.submit(fail_after, go, first)
            go.set()
    assert info.value is first


async def test_body_that_swallows_the_interruption_still_gets_the_error() -> None:
    go = asyncio.Event()
    with pytest.raises(ValueError, match="swallowed"):
        async with CoroutineExecutor() as exe:
            await exe.submit(fail_after, go, ValueError("swallowed"))
            go.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass  # a misbehaving body
    task = asyncio.current_task()
    assert task is not None
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 0  # our interruption was withdrawn exactly once


async def test_without_async_with_shutdown_raises_the_first_error() -> None:
    exe = CoroutineExecutor()
    go = asyncio.Event()
    error = OSError("from a job")
    await exe.submit(fail_after, go, error)
    go.set()
    with pytest.raises(OSError) as info:
        await exe.shutdown()
    assert info.value is error
    await exe.shutdown()  # raised once; a second shutdown is a no-op
    with pytest.raises(RuntimeError, match=re.escape("cannot schedule new futures after shutdown")):
        await exe.submit(park)


#
# 2. suppress_task_errors=True
#


async def test_suppress_keeps_errors_in_their_tasks_and_cancels_nothing(loop_kind: str) -> None:
    finished = asyncio.Event()

    async def failing(i: int) -> None:
        raise ValueError(i)

    async def slow_ok() -> str:
        await finished.wait()
        return "ok"

    async with CoroutineExecutor(max_workers=4, suppress_task_errors=True) as exe:
        ok = await exe.submit(slow_ok)
        failed = [await exe.submit(failing, i) for i in range(3)]
        for _ in range(3):
            await asyncio.sleep(0)
        finished.set()
    assert ok.result() == "ok"
    assert [f.exception().args for f in failed] == [(0,), (1,), (2,)]  # type: ignore[union-attr]
    assert exe.stats.failed == 3 and exe.stats.succeeded == 1


@pytest.mark.parametrize("hook", [False, True], ids=["in-line", "on_job_done"])
async def test_suppress_a_job_cancelled_from_outside_frees_its_slot_for_the_next(
    loop_kind: str, hook: bool
) -> None:
    """Starting no queued job while asyncio.run() tears down must not stop the backlog
    when one job is cancelled from outside in ordinary use."""
    started = asyncio.Event()
    options: dict[str, Any] = {"on_job_done": lambda task: None} if hook else {}
    async with CoroutineExecutor(max_workers=1, suppress_task_errors=True, **options) as exe:
        victim = await exe.submit(park, started)
        queued = exe.submit_nowait(asyncio.sleep, 0, "next")
        await started.wait()
        victim.cancel()
        assert await asyncio.wait_for(queued, 5) == "next"
    assert victim.cancelled()


async def test_suppress_logs_no_never_retrieved_for_dropped_handles() -> None:
    """The harness fails the test on any loop exception-handler call."""

    async def failing() -> None:
        raise ValueError("absorbed")

    async with CoroutineExecutor(max_workers=2, suppress_task_errors=True) as exe:
        for _ in range(10):
            exe.submit_nowait(failing)  # some run at once, some queue
    gc.collect()
    assert exe.stats.failed == 10


#
# 3. Body errors and outer cancellation
#


async def test_body_error_cancels_jobs_and_propagates(loop_kind: str) -> None:
    started, saw_cancel = asyncio.Event(), asyncio.Event()
    with pytest.raises(ZeroDivisionError):
        async with CoroutineExecutor() as exe:
            await exe.submit(park, started, saw_cancel)
            await started.wait()
            1 / 0  # noqa: B018
    assert saw_cancel.is_set()
    assert exe.stats.cancelled == 1


async def test_outer_cancel_cancels_jobs_and_propagates(loop_kind: str) -> None:
    started, saw_cancel = asyncio.Event(), asyncio.Event()
    body_entered = asyncio.Event()

    async def runner() -> None:
        async with CoroutineExecutor() as exe:
            await exe.submit(park, started, saw_cancel)
            body_entered.set()
            await asyncio.Event().wait()

    await cancel_when(asyncio.ensure_future(runner()), body_entered, started)
    assert saw_cancel.is_set()


async def test_outer_cancel_while_exiting_still_cancels_and_waits() -> None:
    started, saw_cancel = asyncio.Event(), asyncio.Event()
    exiting = asyncio.Event()

    async def runner() -> None:
        async with CoroutineExecutor() as exe:
            await exe.submit(park, started, saw_cancel)
            await started.wait()
            exiting.set()  # __aexit__ now waits for the parked job

    # exiting is set in the body's last step: __aexit__ is already waiting by now.
    await cancel_when(asyncio.ensure_future(runner()), exiting)
    assert saw_cancel.is_set()


#
# Interplay with asyncio's own cancellation scopes
#


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout() is 3.11+")
async def test_inside_asyncio_timeout_the_timeout_is_not_swallowed() -> None:
    saw_cancel = asyncio.Event()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):  # type: ignore[attr-defined]
            async with CoroutineExecutor() as exe:
                await exe.submit(park, None, saw_cancel)
                await asyncio.Event().wait()
    assert saw_cancel.is_set()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_inside_wait_for() -> None:
    saw_cancel = asyncio.Event()

    async def block() -> None:
        async with CoroutineExecutor() as exe:
            await exe.submit(park, None, saw_cancel)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(block(), 0.05)
    assert saw_cancel.is_set()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is 3.11+")
async def test_in_a_taskgroup_whose_sibling_fails() -> None:
    saw_cancel = asyncio.Event()
    started = asyncio.Event()

    async def with_executor() -> None:
        async with CoroutineExecutor() as exe:
            await exe.submit(park, started, saw_cancel)
            await asyncio.Event().wait()

    async def sibling() -> None:
        await started.wait()
        raise ValueError("sibling")

    with pytest.raises(BaseExceptionGroup) as info:  # type: ignore[name-defined]  # noqa: F821
        async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
            tg.create_task(with_executor())
            tg.create_task(sibling())
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert saw_cancel.is_set()


#
# The executor's own deadline (timeout=)
#


async def test_block_deadline_cancels_everything_and_raises_timeout(loop_kind: str) -> None:
    saw_cancel = asyncio.Event()
    with pytest.raises(TimeoutError) as info:
        async with CoroutineExecutor(timeout=0.05) as exe:
            await exe.submit(park, None, saw_cancel)
            await asyncio.Event().wait()  # interrupted by the deadline
    assert isinstance(info.value, asyncio.TimeoutError)  # both spellings catch it
    assert saw_cancel.is_set()


async def test_block_deadline_while_exiting() -> None:
    saw_cancel = asyncio.Event()
    with pytest.raises(TimeoutError):
        async with CoroutineExecutor(timeout=0.05) as exe:
            await exe.submit(park, None, saw_cancel)
    assert saw_cancel.is_set()


async def test_block_that_finishes_in_time_does_not_raise() -> None:
    async def quick() -> int:
        return 1

    async with CoroutineExecutor(timeout=30) as exe:
        task = await exe.submit(quick)
    assert task.result() == 1


#
# shutdown()
#


async def test_shutdown_wait_false_cancels_and_returns_without_waiting(loop_kind: str) -> None:
    """As Executor.shutdown(wait=False): the cancellation is requested, not waited for (it
    used to wait for the jobs to finish cancelling, which let a job wait for itself)."""
    started = [asyncio.Event() for _ in range(3)]
    cancelled = asyncio.Event()
    cleaning = asyncio.Event()
    release = asyncio.Event()

    async def slow_to_cancel() -> None:
        started[1].set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await release.wait()
            raise

    exe = CoroutineExecutor(max_workers=2)
    running = [await exe.submit(park, started[0], cancelled), await exe.submit(slow_to_cancel)]
    queued = exe.submit_nowait(park, started[2])
    await started[0].wait()
    await started[1].wait()
    await exe.shutdown(wait=False)  # our cancellations: not raised
    assert not any(t.done() for t in running)  # requested, not waited for
    await cleaning.wait()
    await cancelled.wait()
    release.set()
    await exe.shutdown()  # the owner's wait: returns once every job has finished
    assert all(t.cancelled() for t in running)
    assert queued.cancelled()
    assert not started[2].is_set()  # the queued job never started


async def test_shutdown_wait_false_closes_the_executor_once_its_jobs_are_done() -> None:
    exe = CoroutineExecutor()
    job = await exe.submit(park)
    await exe.shutdown(wait=False)
    assert "cancelling" in repr(exe)
    await asyncio.wait([job])
    for _ in range(2):  # the wake-up for idle comes a turn after the job's own end
        await asyncio.sleep(0)
    assert "closed" in repr(exe)
    with pytest.raises(RuntimeError, match=re.escape(SHUTDOWN_MESSAGE) + "$"):
        exe.submit_nowait(park)


async def test_shutdown_wait_true_lets_running_and_queued_jobs_finish() -> None:
    release = asyncio.Event()

    async def job(i: int) -> int:
        await release.wait()
        return i

    exe = CoroutineExecutor(max_workers=1)
    first = await exe.submit(job, 1)
    second = exe.submit_nowait(job, 2)
    waiter = asyncio.ensure_future(exe.shutdown())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match=re.escape("cannot schedule new futures after shutdown")):
        exe.submit_nowait(job, 3)
    release.set()
    await waiter
    assert first.result() == 1 and second.result() == 2


async def test_shutdown_grace_period_then_cancel() -> None:
    saw_cancel = asyncio.Event()
    exe = CoroutineExecutor()
    await exe.submit(park, None, saw_cancel)
    await exe.shutdown(wait=True, timeout=0.05)
    assert saw_cancel.is_set()


async def test_shutdown_inside_the_block_then_the_block_exits_cleanly() -> None:
    async def quick() -> None:
        await asyncio.sleep(0)

    async with CoroutineExecutor() as exe:
        await exe.submit(quick)
        await exe.shutdown()
        with pytest.raises(RuntimeError):
            await exe.submit(quick)


#
# Slot hand-off races
#


async def test_waiter_cancelled_after_being_granted_passes_the_slot_on() -> None:
    """The asyncio.Semaphore race: a submitter granted a slot, then cancelled."""
    release = asyncio.Event()
    third_ran = asyncio.Event()

    async def blocker() -> None:
        await release.wait()

    async def third() -> None:
        third_ran.set()

    async with CoroutineExecutor(max_workers=1) as exe:
        await exe.submit(blocker)
        second = asyncio.ensure_future(exe.submit(blocker))
        await asyncio.sleep(0)  # second now waits for the slot
        third_submit = asyncio.ensure_future(exe.submit(third))
        await asyncio.sleep(0)
        release.set()
        # Run until the blocker finishes and grants the slot to `second`, then cancel
        # `second` before it can run: the slot must pass on to `third`.
        while exe.stats.succeeded == 0:
            await asyncio.sleep(0)
        second.cancel()
        await third_submit
        await third_ran.wait()
        with pytest.raises(asyncio.CancelledError):
            await second
    assert exe.stats.running == 0


async def test_submitter_waiting_when_fail_fast_hits_gets_a_clear_error() -> None:
    """A producer that is not the block's task is not interrupted, but its wait ends."""
    go = asyncio.Event()
    exe = CoroutineExecutor(max_workers=1)
    await exe.submit(fail_after, go, ValueError("x"))
    waiting: asyncio.Future[Any] = asyncio.ensure_future(exe.submit(park))
    await asyncio.sleep(0)
    go.set()
    with pytest.raises(RuntimeError, match="cancelling its jobs"):
        await waiting
    with pytest.raises(ValueError, match="x"):
        await exe.shutdown()


#
# shutdown() called from inside a job: it never waits there (issue 16)
#


async def test_a_job_calling_shutdown_without_wait_cancels_the_rest_and_carries_on(
    loop_kind: str,
) -> None:
    started = asyncio.Event()
    go = asyncio.Event()
    other_cancelled = asyncio.Event()
    queued_ran: list[int] = []

    async def noted() -> None:
        queued_ran.append(1)

    async def stopper() -> str:
        await go.wait()
        await exe.shutdown(wait=False)
        await asyncio.sleep(0)  # not cancelled itself: it goes on
        return "carried on"

    async with CoroutineExecutor(max_workers=2) as exe:
        other = await exe.submit(park, started, other_cancelled)
        stop = await exe.submit(stopper)
        queued = exe.submit_nowait(noted)
        await started.wait()
        go.set()
    assert stop.result() == "carried on"
    assert other.cancelled() and other_cancelled.is_set()
    assert queued.cancelled() and queued_ran == []
    assert exe.stats.cancelled == 2
    assert exe.stats.succeeded == 1


@pytest.mark.parametrize("where", ["job", "task in the job", "job of an inner executor"])
async def test_shutdown_from_inside_a_job_stops_admission_and_returns_without_waiting(
    loop_kind: str, where: str
) -> None:
    """It used to wait for every job but the calling one: a task inside a job (or an
    inner executor's job) then waited for its own job, for ever. Now it never waits
    there; the block waits for every job, the caller's too."""
    release = asyncio.Event()
    order: list[str] = []

    async def worker() -> None:
        await release.wait()
        order.append("worker")

    async def close() -> None:
        await exe.shutdown()  # wait=True: still no wait from inside a job
        order.append("closer")
        with pytest.raises(RuntimeError, match="after shutdown"):
            await exe.submit(worker)
        release.set()

    async def closer() -> None:
        if where == "job":
            await close()
        elif where == "task in the job":
            await asyncio.gather(asyncio.ensure_future(close()))
        else:
            async with CoroutineExecutor() as inner:
                await inner.submit(close)

    async with CoroutineExecutor(max_workers=4) as exe:
        await exe.submit(worker)
        await exe.submit(worker)
        closing = await exe.submit(closer)
    assert order == ["closer", "worker", "worker"]
    assert closing.result() is None
    assert exe.stats.succeeded == 3


async def test_a_job_waits_in_the_shutdown_of_an_executor_it_owns(loop_kind: str) -> None:
    """Waits go down the nesting: a job may wait for an inner executor first used in it."""
    release = asyncio.Event()
    order: list[str] = []

    async def inner_job() -> None:
        await release.wait()
        order.append("inner job")

    async def owner() -> None:
        inner = CoroutineExecutor()
        await inner.submit(inner_job)
        release.set()
        await inner.shutdown()
        order.append("inner shut down")

    async with CoroutineExecutor() as exe:
        await exe.submit(owner)
    assert order == ["inner job", "inner shut down"]


async def test_shutdown_from_a_job_leaves_closing_to_the_owner() -> None:
    """Without async with: the job's shutdown() returns at once; the owner's own
    shutdown() still works (and waits for the job that called it)."""
    release = asyncio.Event()

    async def worker() -> str:
        await release.wait()
        return "worked"

    async def closer() -> str:
        await exe.shutdown()
        release.set()
        return "returned"

    exe = CoroutineExecutor(max_workers=4)
    working = await exe.submit(worker)
    closing = await exe.submit(closer)
    await exe.shutdown()
    assert closing.result() == "returned"
    assert working.result() == "worked"
    assert exe.stats.succeeded == 2


async def test_a_job_gets_no_policy_error_from_shutdown_the_owner_does() -> None:
    go = asyncio.Event()
    error = KeyError("first")
    results: list[str] = []

    async def closer() -> None:
        go.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:  # fail-fast: the other job failed
            await exe.shutdown()  # returns at once, and raises nothing in a job
            results.append("no error")
            raise

    exe = CoroutineExecutor(max_workers=4)
    await exe.submit(fail_after, go, error)
    await exe.submit(closer)
    with pytest.raises(KeyError) as info:
        await exe.shutdown()
    assert info.value is error
    assert results == ["no error"]


#
# Hangs that nothing broke (issue 16): every wait ends, and an outer timeout ends it
#


async def ends_within_two_seconds(block: Awaitable[Any]) -> str:
    """Run ``block`` under a 1 s outer asyncio.wait_for; it must end within 2 s (issue 16's
    bound). Returns "ended" or "timed out"."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await asyncio.wait_for(block, 1)
        outcome = "ended"
    except asyncio.TimeoutError:
        outcome = "timed out"
    assert loop.time() - started < 2
    return outcome


async def test_a_forgotten_executor_stopped_only_from_another_executors_job_reports_its_error(
) -> None:
    """shutdown() from a job of an unrelated executor neither waits nor raises the policy
    error: with the owner gone, the error was lost silently. It is reported to the loop's
    exception handler when the executor is collected, as a task's would be."""
    reports: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reports.append(ctx))
    go = asyncio.Event()
    x = CoroutineExecutor()
    failing = await x.submit(fail_after, go, ValueError("nobody raised it"))
    go.set()
    await asyncio.wait([failing])

    async def stopper(exe: CoroutineExecutor) -> None:
        await exe.shutdown()  # from a job of y: returns without waiting or raising

    async with CoroutineExecutor() as y:
        await y.submit(stopper, x)
    assert reports == []
    # The error's traceback holds the job's frames, and so the executor: drop both.
    del x, failing
    gc.collect()
    assert [(ctx["message"], repr(ctx["exception"])) for ctx in reports] == [
        (
            "CoroutineExecutor job exception was never retrieved (no async with block,"
            " and no shutdown() that waits, raised it)",
            "ValueError('nobody raised it')",
        )
    ]


async def test_a_task_in_a_job_stops_the_executor_without_waiting(loop_kind: str) -> None:
    """The issue's example: a TaskGroup inside a job, one of whose tasks calls
    shutdown(wait=False). It used to wait for its own job, for ever."""
    cancelled: list[int] = []

    async def block() -> None:
        async with CoroutineExecutor() as exe:

            async def probe(n: int) -> None:
                if n == 7:
                    await exe.shutdown(wait=False)
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    cancelled.append(n)
                    raise

            async def search(chunk: range) -> None:
                async with TaskGroup() as tg:
                    for n in chunk:
                        tg.create_task(probe(n))

            for chunk in (range(5), range(5, 10)):
                await exe.submit(search, chunk)

    if TaskGroup is None:
        pytest.skip("asyncio.TaskGroup is new in Python 3.11")
    assert await ends_within_two_seconds(block()) == "ended"
    assert sorted(cancelled) == list(range(10))


async def test_an_inner_executors_job_stops_the_outer_one(loop_kind: str) -> None:
    async def block() -> None:
        async with CoroutineExecutor() as outer:

            async def inner_job() -> None:
                await outer.shutdown(wait=False)
                await asyncio.sleep(10)

            async def outer_job() -> None:
                async with CoroutineExecutor() as inner:
                    await inner.submit(inner_job)

            await outer.submit(asyncio.sleep, 10)
            await outer.submit(outer_job)  # under an eager task factory: stops it in here

    assert await ends_within_two_seconds(block()) == "ended"


async def test_shutdown_under_wait_for_inside_a_job(loop_kind: str) -> None:
    """asyncio.wait_for on Python < 3.12 runs the call in a task of its own, which is not
    the job's task; it used to wait for the job, which waited for it."""

    async def block() -> None:
        async with CoroutineExecutor() as exe:

            async def stopper() -> None:
                await asyncio.wait_for(exe.shutdown(wait=False), 2)
                await asyncio.Event().wait()  # goes on: an outer timeout must still end it

            await exe.submit(stopper)
            await exe.submit(asyncio.sleep, 10)

    assert await ends_within_two_seconds(block()) == "timed out"


@pytest.mark.parametrize("option", ["on_job_done", "job_timeout", "initializer"])
async def test_an_eager_job_stopping_its_executor_before_its_first_suspension(
    option: str,
) -> None:
    """With a task factory and jobs that complete through a done callback, the job's first
    step runs inside create_task, before the executor has registered it: it was not
    recognised as the caller and waited for itself."""
    if sys.version_info < (3, 12):
        pytest.skip("asyncio.eager_task_factory is new in Python 3.12")
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
    kwargs: dict[str, Any] = {
        "on_job_done": {"on_job_done": lambda task: None},
        "job_timeout": {"job_timeout": 30},
        "initializer": {"initializer": lambda: None},
    }[option]
    other_cancelled = asyncio.Event()
    stopper_cancelled = asyncio.Event()

    async def stopper() -> None:
        await exe.shutdown(wait=False)  # before its first suspension
        await park(cancelled=stopper_cancelled)  # it goes on until the outer timeout

    async def block() -> None:
        async with exe:
            await exe.submit(park, None, other_cancelled)
            await exe.submit(stopper)

    exe = CoroutineExecutor(**kwargs)
    assert await ends_within_two_seconds(block()) == "timed out"
    assert other_cancelled.is_set() and stopper_cancelled.is_set()


@pytest.mark.parametrize("how", ["submit", "submit_nowait"])
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
async def test_an_eager_job_raising_keyboardinterrupt_in_its_first_step_is_raised(
    loop_kind: str, how: str, exc_type: type[BaseException]
) -> None:
    """An eager task factory re-raises a job's KeyboardInterrupt or SystemExit out of
    create_task: the job had settled its slot already, and the failed start gave it back a
    second time, so the executor never looked idle again and the block hung for good."""
    if loop_kind != "eager":
        pytest.skip("only an eager first step raises out of create_task (elsewhere the"
                    " exception leaves the event loop)")
    other_cancelled = asyncio.Event()

    async def job() -> None:
        raise exc_type

    with pytest.raises(exc_type):
        async with CoroutineExecutor() as exe:
            other = await exe.submit(park, None, other_cancelled)
            if how == "submit":
                await exe.submit(job)
            else:
                exe.submit_nowait(job)
    assert other.cancelled() and other_cancelled.is_set()
    stats = exe.stats
    assert (stats.running, stats.failed, stats.cancelled) == (0, 1, 1), stats


async def test_two_executors_whose_jobs_shut_each_other_down(loop_kind: str) -> None:
    """Each job waited for the other executor, whose job waited for the first: a circle.
    A job never waits for an executor it is not nested in, so there is none."""
    returned: list[str] = []
    both = asyncio.Event()

    async def stop(name: str, other: CoroutineExecutor) -> None:
        await both.wait()
        await other.shutdown()
        returned.append(name)

    async def block() -> None:
        async with CoroutineExecutor() as a, CoroutineExecutor() as b:
            await a.submit(stop, "a", b)
            await b.submit(stop, "b", a)
            both.set()

    assert await ends_within_two_seconds(block()) == "ended"
    assert sorted(returned) == ["a", "b"]


async def test_two_executors_owned_by_separate_tasks_shut_each_other_down(
    loop_kind: str,
) -> None:
    both = asyncio.Event()
    made: list[CoroutineExecutor] = []

    async def stop(i: int) -> None:
        await both.wait()
        await made[1 - i].shutdown()

    async def owner(i: int) -> None:
        async with CoroutineExecutor() as exe:
            made.append(exe)
            if len(made) == 2:
                both.set()
            await exe.submit(stop, i)

    async def block() -> None:
        await asyncio.gather(owner(0), owner(1))

    assert await ends_within_two_seconds(block()) == "ended"


async def test_a_job_that_stopped_its_executor_and_goes_on_is_cancelled_by_an_outer_timeout(
    loop_kind: str,
) -> None:
    """shutdown(wait=False) does not cancel the job that calls it; a block waiting for that
    job must still end when it is cancelled from outside (it used to wait for ever)."""
    cancelled = asyncio.Event()

    async def stopper() -> None:
        await exe.shutdown(wait=False)
        await park(cancelled=cancelled)

    async def block() -> None:
        async with exe:
            await exe.submit(stopper)

    exe = CoroutineExecutor()
    assert await ends_within_two_seconds(block()) == "timed out"
    assert cancelled.is_set()


async def test_a_cancelled_shutdown_cancels_the_jobs_and_raises_at_once(loop_kind: str) -> None:
    """It used to absorb the cancel and wait for the jobs to finish cancelling."""
    started = asyncio.Event()
    cleaning = asyncio.Event()
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow_to_cancel() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await release.wait()
            raise

    async def close() -> None:
        entered.set()  # in the step that calls shutdown(): it waits in there by now
        await exe.shutdown()

    exe = CoroutineExecutor()
    job = await exe.submit(slow_to_cancel)
    await started.wait()
    closing = asyncio.ensure_future(close())
    await entered.wait()
    closing.cancel()
    done, _ = await asyncio.wait([closing], timeout=5)
    try:
        assert closing in done and closing.cancelled()
        assert cleaning.is_set() and not job.done()  # the jobs were cancelled, not awaited
    finally:
        release.set()
        await exe.shutdown()
    assert job.cancelled()


@pytest.mark.parametrize("around", ["block", "shutdown"])
async def test_an_outer_timeout_around_the_block_or_shutdown_cancels_the_jobs(
    loop_kind: str, around: str
) -> None:
    cancelled = asyncio.Event()

    async def block() -> None:
        if around == "block":
            async with CoroutineExecutor() as exe:
                await exe.submit(park, None, cancelled)
        else:
            exe = CoroutineExecutor()
            job = await exe.submit(park, None, cancelled)
            try:
                await exe.shutdown()
            finally:
                await asyncio.wait([job])  # a cancelled shutdown() did not wait for it

    assert await ends_within_two_seconds(block()) == "timed out"
    assert cancelled.is_set()


#
# Regressions
#


async def test_two_tasks_waiting_for_shutdown_are_both_released() -> None:
    release = asyncio.Event()

    async def job() -> None:
        await release.wait()

    exe = CoroutineExecutor()
    await exe.submit(job)
    first = asyncio.ensure_future(exe.shutdown())
    second = asyncio.ensure_future(exe.shutdown())
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)


@pytest.mark.parametrize(("first", "second"), [(False, True), (True, False), (True, True)])
async def test_shutdown_twice_on_a_never_used_executor(first: bool, second: bool) -> None:
    """The first shutdown() closed the unbound executor; a second one that waits looked
    for its loop's create_future and raised AttributeError."""
    exe = CoroutineExecutor()
    await exe.shutdown(wait=first)
    await exe.shutdown(wait=second)
    with pytest.raises(RuntimeError, match=SHUTDOWN_MESSAGE):
        exe.submit_nowait(asyncio.sleep, 0)


@pytest.mark.parametrize("when", ["before the error", "while the block exits"])
async def test_a_shutdown_in_another_task_leaves_the_error_to_the_block(
    loop_kind: str, when: str
) -> None:
    """A task (not a job) waiting in shutdown() took the fail-fast error: the block,
    whose body the executor had interrupted, then withdrew the interruption and let the
    bare CancelledError out, and the helper's error was never retrieved. While a block is
    active it owns the error: the helper's shutdown() returns None."""
    go = asyncio.Event()
    body_done = asyncio.Event()
    release = asyncio.Event()
    error = ValueError("job failed")

    async def slow_to_cancel() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()

    async def helper() -> None:
        if when == "while the block exits":
            await body_done.wait()  # the block's exit is waiting for slow_to_cancel
        waiting = asyncio.ensure_future(exe.shutdown())
        await asyncio.sleep(0)
        release.set()
        await waiting

    exe = CoroutineExecutor()
    with pytest.raises(ValueError) as info:
        async with exe:
            await exe.submit(fail_after, go, error)
            await exe.submit(slow_to_cancel)
            helping = asyncio.ensure_future(helper())  # a task, not a job
            await asyncio.sleep(0)
            go.set()
            try:
                await asyncio.Event().wait()  # interrupted by fail-fast
            finally:
                body_done.set()
    assert info.value is error
    task = asyncio.current_task()
    assert task is not None
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 0  # our interruption was withdrawn exactly once
    assert await asyncio.wait_for(helping, 5) is None


@pytest.mark.parametrize("how", CHAINS)
async def test_every_waiting_shutdown_raises_the_same_job_error(how: str) -> None:
    """Without a block only the first of two waiting shutdown() calls raised the error."""
    job = ChainedFailure(how)
    go = asyncio.Event()
    exe = CoroutineExecutor()
    await exe.submit(job, go)
    waiting = [asyncio.ensure_future(exe.shutdown()) for _ in range(3)]
    await asyncio.sleep(0)
    go.set()
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
    for raised in results:
        assert isinstance(raised, RuntimeError)
        job.assert_unchanged(raised)
    assert await exe.shutdown() is None  # raised to every waiting call: a later one is a no-op


async def test_every_waiting_shutdown_raises_the_same_timeout_error() -> None:
    exe = CoroutineExecutor(timeout=0.01)
    await exe.submit(park)
    results = await asyncio.wait_for(
        asyncio.gather(exe.shutdown(), exe.shutdown(), return_exceptions=True), 5
    )
    assert isinstance(results[0], ExecutorTimeoutError)
    assert results[1] is results[0]


async def test_map_consumer_in_another_task_sees_the_first_error_not_a_cancel() -> None:
    """Fail-fast cancels the map's jobs; its consumer (not the block's task) gets the error."""
    go = asyncio.Event()
    error = ValueError("elsewhere")
    exe = CoroutineExecutor(max_workers=4)

    async def parked(_: int) -> None:
        await park()

    async def consume() -> list[Any]:
        return [r async for r in exe.map(parked, range(3))]

    consumer = asyncio.ensure_future(consume())
    await asyncio.sleep(0)
    await exe.submit(fail_after, go, error)
    go.set()
    with pytest.raises(ValueError) as info:
        await consumer
    assert info.value is error
    with pytest.raises(ValueError):
        await exe.shutdown()


async def test_coroutine_object_is_refused_before_waiting_for_a_slot() -> None:
    async def job() -> None:
        await asyncio.Event().wait()

    async with CoroutineExecutor(max_workers=1) as exe:
        await exe.submit(job)
        with pytest.raises(TypeError, match=re.escape("right: submit(fetch, url)")):
            await exe.submit(job())  # type: ignore[arg-type]
        await exe.shutdown(wait=False)
