"""JobWrappers: the coroutines the core runs as tasks for the bridge's jobs that need the
loop, and the base of Scheduler (``_scheduler``, which starts the jobs and copies their
outcomes back).

``_run_coroutine`` runs a coroutine job, and the awaitable a blocking call returned;
``_run_blocking`` hands a blocking job the core governs (``job_timeout``,
``max_per_second``) to a worker thread and waits for it. Both resolve the job's future
themselves, as its last step, and ask the retry policy about a failed attempt. Loop
thread only, as the Scheduler. The class holds nothing: it reads the Scheduler's
components, declared below, and calls nothing of the Scheduler's.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from concurrent.futures._base import CANCELLED_AND_NOTIFIED
from typing import Any, Callable, Optional

from .._errors import job_wrapper
from .._executor import CoroutineExecutor
from ._future import BridgeFuture
from ._outcome import CoroutineJobError
from ._retries import RETRIED, Retries, cancels
from ._work_item import await_returned, cancel_if_stopped, close_unawaited, job_call
from ._workers import Failed, FailedInWorker, Finished, WorkerPool, WorkItem

__all__ = ["JobWrappers"]


class JobWrappers:
    """The job wrappers of Scheduler, its base (see the module)."""

    retries: Retries  # set by the HandOff, which owns the lock it needs
    # Set by Scheduler.__init__: the core that runs the wrappers, the worker threads of
    # _run_blocking, and the loop (None until _run_blocking first runs).
    core: CoroutineExecutor
    pool: WorkerPool
    _loop: Optional[asyncio.AbstractEventLoop]

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
