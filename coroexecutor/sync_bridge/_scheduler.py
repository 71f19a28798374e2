"""Scheduler: the loop-thread side of the bridge, from a started job to its outcome.

Everything here runs on the loop thread only (see the threading model in
``_handoff``). No lock is taken here: a job reaches this module holding a slot
already, granted by HandOff under its lock.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from asyncio import Task, TimerHandle
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, FINISHED, PENDING, RUNNING
from typing import Any, Callable, Optional

from .._errors import job_wrapper
from .._executor import CoroutineExecutor
from .._queued import submit_again_nowait
from ._future import BridgeFuture
from ._job import Job
from ._options import CoreOptions, ShutdownRequest
from ._outcome import CoroutineJobError, resolve
from ._retries import RETRIED, Retries, cancels
from ._tuning import BridgeTuner
from ._work_item import await_returned, cancel_if_stopped, close_unawaited, job_call
from ._workers import Failed, FailedInWorker, Finished, WorkerPool, WorkItem

__all__ = ["Scheduler"]

_LIVE_STATES = (PENDING, RUNNING)


class Scheduler:
    """Runs the jobs that need the loop on a CoroutineExecutor; copies outcomes back.

    HandOff grants slots, so the core starts every job it is given at once, as a task,
    and its ``on_job_done`` hook reports the end of each: one task and no extra callback
    per job. Only with ``max_per_second`` may the core queue a job itself (see ``start``).

    Invariant: ``_jobs`` maps every job handed to the core and not yet finished, by the
    task (or queued future) ``submit_nowait`` returned, to its bridged future. Each
    entry holds one slot, given back through ``_release`` when the entry is removed, or
    through ``retries.pause`` when the attempt it ran is retried.
    """

    retries: Retries  # set by the HandOff, which owns the lock it needs

    def __init__(
        self,
        pool: WorkerPool,
        *,
        release_nowait: Callable[[BridgeFuture[Any]], bool],
        release_all: Callable[[list[BridgeFuture[Any]]], tuple[list[Job], list[WorkItem]]],
        options: CoreOptions,
    ) -> None:
        self.pool = pool
        self._release_nowait = release_nowait
        # max_workers=Adaptive: shared with the HandOff's Slots (see BridgeTuner).
        self.tuner = None if options.adaptive is None else BridgeTuner(options.adaptive)
        self._release_all = release_all
        self._released: list[BridgeFuture[Any]] = []  # slots to give back in _settle
        # The core only ever gets jobs that hold a slot, so it starts each at once (its
        # own max_workers is kept equal, and is never the limit). Bad options raise here.
        self.core = CoroutineExecutor(
            options.max_workers,
            suppress_task_errors=True,  # one job's error fails only its own future (stdlib)
            max_per_second=options.max_per_second,
            burst=options.burst,
            job_timeout=options.job_timeout,
            on_job_done=self.on_core_job_done,
            annotate_errors=False,  # the core would name our wrappers: we note jobs ourselves
        )
        self._jobs: dict[asyncio.Future[Any], BridgeFuture[Any]] = {}
        # Jobs given back by start() without reaching the core, which counts the others:
        # cancelled first, or failed as the loop could not make their task. Loop thread
        # only: HandOff.counts reads them there, or once the loop has stopped.
        self.unstarted = 0
        self.failed_to_start = 0
        # The tasks awaiting what direct blocking calls returned, and whether a shutdown
        # request cancelled the running jobs (see _tails).
        self._tails: set[asyncio.Future[Any]] = set()
        self._running_cancelled = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def start(self, job: Job) -> None:
        """Start a job that holds a slot."""
        future, fn, args, kwargs, ctx, coroutine_fn = job
        if future._state != PENDING:
            self.unstarted += 1
            self._release(future)  # cancelled before it started; cancel() notified
            return
        wrapper = self._run_coroutine if coroutine_fn else self._run_blocking
        try:
            if future._attempts is None:
                task = ctx.run(self.core.submit_nowait, wrapper, future, fn, args, kwargs)
            else:
                # A job's next attempt (retry=) that the core must queue, under
                # max_per_second, waits for a start token ahead of every job never started.
                task = ctx.run(self._submit_again, wrapper, future, fn, args, kwargs)
        except BaseException as exc:
            # The core accepts while we hold slots, so the loop could not make the job's
            # task: its task factory raised, or made no task (see not_a_task). The job
            # fails with that error; the executor goes on (the factory may fail once).
            if future._finish(None, exc):
                self.failed_to_start += 1
            else:  # cancel() from another thread won the race
                self.unstarted += 1
            self._release(future)
            return
        future._job = task
        self._jobs[task] = future
        if type(task) is not Task and not isinstance(task, Task):
            # Queued by the core's rate limiter: the hook will be called with this
            # future once it is done. Until it starts, the job waits:
            # shutdown(cancel_futures=True) cancels it.
            future._queued = True
        if future._state == CANCELLED_AND_NOTIFIED:
            # cancel() ran meanwhile in another thread, before _job was set, so it left
            # the task (or the rate-queued future) to us: see
            # HandOff.cancel_job_threadsafe. The job itself never starts: _run_coroutine
            # and the worker check the state before calling fn.
            task.cancel()

    def _submit_again(self, wrapper: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return submit_again_nowait(self.core, wrapper, args)

    def _release(self, future: BridgeFuture[Any]) -> None:
        if future._attempts is not None:  # a retried job is over: see _retries
            future._attempts.drop()
        tuner = self.tuner  # read once: set_max_workers (any thread) may drop it meanwhile
        if tuner is not None:  # before the release, outside the hand-off's lock
            tuner.finished_threadsafe(future)
        self._release_queued(future)

    def _release_queued(self, future: BridgeFuture[Any]) -> None:
        """A job the loop ran is done: free its slot now, or pass it on in _settle.

        A slot nobody waits for is freed at once when the hand-off's lock is free: one
        loop turn less between a job's end and the loop's next sleep, which is what a
        caller waiting on one job at a time sees. Otherwise the release is batched, one
        _settle per loop turn: blocking on the lock (held by a submitting thread) or
        starting the next jobs from here, once per finished job, would cost every job of
        a busy executor that (under the GIL, blocking is a lock convoy).
        """
        released = self._released
        released.append(future)
        if len(released) > 1:
            return  # a _settle is scheduled already
        if self._release_nowait(future):
            released.clear()
            return
        asyncio.get_running_loop().call_soon(self._settle)

    def settle_released(self) -> None:
        """Free now the slots whose release waits for a _settle (see _release_queued):
        before stats are read for a caller that a finished job's future woke."""
        if self._released:
            self._settle()

    def _settle(self) -> None:
        released, self._released = self._released, []
        to_start, items = self._release_all(released)
        # Hold no finished job's future (nor its result) while the next ones start: under
        # an eager task factory their first steps run inside start(), and one of them
        # may block the loop thread for long.
        del released
        for job in to_start:
            self.start(job)
        for item in items:
            self.pool.submit(item)

    def cancel_job(self, future: BridgeFuture[Any]) -> None:
        """The future was cancelled: cancel its job (a no-op once that has finished).

        A cancel of the bridge's own (its map closed, or a shutdown that cancels the
        running jobs: ``_last_attempt``) goes through the core's canceller, as a
        CoroutineExecutor's map closed early cancels its jobs: a job_timeout that passes
        then leaves the job's clean-up be (see _jobs._with_deadline). The caller's own
        cancel() stays an outside cancel, as a task.cancel() of a core job's."""
        task = future._job
        if task is None:
            return
        if future._last_attempt and not isinstance(task, TimerHandle) and task in self._jobs:
            self.core._outcomes.cancel(task)  # (the core's task, not a tail's or a pause's)
        else:
            task.cancel()

    def jobs(self) -> list[BridgeFuture[Any]]:
        return list(self._jobs.values())

    #
    # Completion
    #

    def on_core_job_done(self, task: asyncio.Future[Any]) -> None:
        """The core's hook: a job's task finished and its slot is free."""
        future = self._jobs.pop(task, None)
        if future is not None:
            state = future._state
            if state != FINISHED:
                if state != CANCELLED_AND_NOTIFIED:
                    if future._attempts is not None and self.retries.after_attempt(
                        future, task, core=True
                    ):
                        return  # paused for its next attempt, its slot given back
                    resolve(future, task)  # what the job could not set itself
                if future._state == CANCELLED_AND_NOTIFIED and not task.cancelled():
                    self.retries.count_cancelled(task)  # as its future says, not the core
            # The caller may keep the future long after: let the task, its coroutine and
            # its context go now (cancel() of a finished future never needs them).
            future._job = None
            self._release(future)

    def on_work_done(self, item: WorkItem) -> None:
        """A worker thread has finished (or skipped) a blocking job the loop runs."""
        item.finished = True
        waiter = item.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    #
    # The job wrappers: the coroutines the core runs as tasks
    #

    @job_wrapper  # a job_timeout error names fn(*args, **kwargs), not this wrapper
    async def _run_coroutine(
        self,
        future: BridgeFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if future._state == CANCELLED_AND_NOTIFIED:
            # cancel() returned True before the job began: it must never begin, even when
            # the cancel of this task is still on its way to the loop. Otherwise:
            #   caller thread                        loop thread
            #                                        start(): the task is created
            #   cancel() -> True; posts task.cancel
            #                                        runs the task's first step: fn() runs
            #                                        runs task.cancel(): too late
            # (With max_per_second, the core may start a rate-queued job that way too.)
            # Or cancel() won as a blocking call returned an awaitable (the call was
            # the job's first part): that awaitable is never awaited.
            if fn is await_returned:
                close_unawaited(args[0])
            raise asyncio.CancelledError
        future._started = True
        try:
            result = await fn(*args, **kwargs)
        except asyncio.CancelledError:
            # A job_timeout's error is retried as the policy says, or noted.
            self.retries.attempt_cancelled(
                future, *job_call(fn, args, kwargs), timed=self.core._job_timeout is not None
            )
            del fn, args, kwargs  # as below: a JobTimeoutError's cause keeps this frame
            raise  # on_core_job_done cancels the future once the task is done
        except BaseException as exc:
            fn, args, kwargs, coroutine_fn = job_call(fn, args, kwargs)
            error = self.retries.job_error(future, fn, args, kwargs, exc, coroutine_fn)
            # The job's error keeps this frame (its traceback), and the caller may keep the
            # error (its future) for long: the frame lets go of the job's call.
            del fn, args, kwargs
            if error is None:
                return RETRIED  # the task's end pauses the job: see on_core_job_done
            # Cancelled by a policy raising CancelledError (give_up), or cancel() won.
            told_cancelled = cancels(error) or not future._finish(None, error)
            del future  # break the cycle: exc -> traceback -> this frame -> future -> exc
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise CoroutineJobError(repr(error)) from error
            if told_cancelled:
                del error  # as future above
                raise asyncio.CancelledError from None  # see below
            if error is exc:
                del error  # as future above
                raise
            try:
                raise error  # the policy's own error: its __context__ is exc
            finally:
                error = None  # as future above
        # Set here, not in a done callback: the caller gets it one loop turn sooner.
        if not future._finish(result, None):
            # cancel() returned True in another thread while the job ran its last step,
            # and its task.cancel() is still on its way: the job ends cancelled, as the
            # caller was told (in stats and for fail-fast too), not succeeded or failed.
            raise asyncio.CancelledError
        # Not the result: the task lives on until a later turn of the loop frees the
        # job's slot, and a map's consumer, woken above, may drop the result before.
        return None

    @job_wrapper
    async def _run_blocking(
        self,
        future: BridgeFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """A blocking job governed by the core (job_timeout, max_per_second)."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        future._queued = False  # past the rate limiter; the pool marks it if no thread is free
        # A copy of the task's context: the worker must not enter the one this task runs in.
        ctx = contextvars.copy_context()
        waiter = loop.create_future()
        item = WorkItem(future, fn, args, kwargs, ctx, waiter)
        self.pool.submit(item)
        try:
            await waiter
        except asyncio.CancelledError:
            # See _run_coroutine. The attempt's context is the worker's copy: the worker may
            # still run there (see below), and no next attempt starts before it is done.
            self.retries.attempt_cancelled(
                future, fn, args, kwargs, False, ctx, timed=self.core._job_timeout is not None
            )
            if future._withdraw():
                raise  # the call never started
            # A worker is running the call and cannot interrupt it (job_timeout, or the
            # running jobs cancelled): keep the slot until it returns, so max_workers and
            # shutdown(wait=True) stay truthful; then its outcome is the job's.
            while not item.finished:
                item.waiter = waiter = loop.create_future()
                try:
                    await waiter
                except asyncio.CancelledError:
                    continue  # cancelled again: still the same call to wait for
            if inspect.iscoroutine(item.outcome):
                item.outcome.close()  # an awaitable to await: never awaited, as cancelled
                raise
        outcome, item.outcome = item.outcome, None
        if outcome is None or type(outcome) is Finished:  # (None: the call never ran)
            if outcome is not None:
                outcome.resolve(future)  # as the job's last step: see Finished
            if future._exception is not None:
                raise FailedInWorker  # so the core counts a failure, not a success
            return None
        if type(outcome) is Failed:  # the call raised; a retry policy applies
            error = self.retries.job_error(future, fn, args, kwargs, outcome.error, False, ctx)
            del fn, args, kwargs, ctx, item  # see decide
            if error is None:
                return RETRIED
            if cancels(error) or not future._finish(None, error):
                raise asyncio.CancelledError  # as in _run_coroutine
            raise FailedInWorker
        # fn returned an awaitable (``lambda: fetch(url)``): await it here, on the loop,
        # in what the call left of its context, as a direct job's is (see await_outcome).
        for var, value in ctx.items():
            var.set(value)
        self.retries.attempts_of(future, fn, args, kwargs, False)  # see await_outcome
        cancel_if_stopped(future)  # its map was left as the call ran: never awaited then
        awaiting = self._run_coroutine(future, await_returned, (outcome, fn, args, kwargs), {})
        del outcome, fn, args, kwargs, ctx, item  # the awaitable's error keeps this frame
        return await awaiting

    #
    # Shutting down
    #

    def cancel_started(self, request: ShutdownRequest) -> tuple[int, int]:
        """Cancel the core's jobs a shutdown request says to cancel (the tails: see
        _tails.cancel_tails). Idempotent.

        Returns how many running coroutine jobs and how many queued jobs this call
        cancelled (for the line printed when Ctrl-C interrupts the wait at exit).
        """
        running = queued = 0
        if request.cancel_running:
            for future in list(self._jobs.values()):
                if future._started and future._state in _LIVE_STATES:
                    running += 1  # a coroutine running now (or a blocking job's awaitable)
                elif future._state == PENDING:
                    queued += 1
                # A blocking call already running refuses cancel(): its wrapper task is
                # cancelled and waits for it (see _run_blocking). Either way the cancel is
                # the bridge's own (see cancel_job), and the running attempt the last.
                future._last_attempt = True
                if not future.cancel():
                    self.cancel_job(future)
        elif request.cancel_queued:
            for future in list(self._jobs.values()):
                # Only a job that waits for the rate limiter or for a worker thread: one
                # that got its slot when submitted counts as started, as on a
                # ThreadPoolExecutor whose idle worker has taken it (issue 16, item 8).
                # cancel() refuses a blocking call that a worker has started meanwhile.
                if future._queued and not future._started and future.cancel():
                    queued += 1
        return running, queued

    def orphans(self) -> list[BridgeFuture[Any]]:
        """Every future this scheduler still holds (only after a crash, or a fork)."""
        futures = list(self._jobs.values())
        self._jobs.clear()
        return futures
