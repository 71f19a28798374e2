"""Scheduler: the loop-thread side of the bridge, from a handed-off job to its outcome.

Everything here runs on the loop thread only (see the threading model in
``_loop_thread``). No lock is taken: the hand-off already moved the jobs to this thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from typing import Any, Callable, NamedTuple, Optional

from .._executor import CoroutineExecutor
from ._future import BridgeFuture
from ._workers import WorkerPool, WorkItem

__all__ = ["Job", "Scheduler", "ShutdownRequest"]

# A job as it crosses the hand-off: (future, fn, args, kwargs, context, is_coroutine_job).
Job = tuple[
    BridgeFuture[Any],
    Callable[..., Any],
    tuple[Any, ...],
    dict[str, Any],
    contextvars.Context,
    bool,
]

_Task = asyncio.Task


class ShutdownRequest(NamedTuple):
    cancel_queued: bool  # cancel the jobs that have not started (stdlib cancel_futures)
    cancel_running: bool  # cancel running coroutine jobs too (exceptional exit)
    grace: Optional[float]  # shutdown(timeout=): then cancel what still runs


class _CoroutineJobError(Exception):
    """Carries a coroutine job's KeyboardInterrupt/SystemExit out of its task.

    An asyncio task re-raises those out of the event loop, which would kill the loop
    thread and strand every other future; the job's own future gets the original.
    """


class Scheduler:
    """Feeds handed-off jobs to a CoroutineExecutor and copies their outcomes back.

    Jobs wait in ``_backlog`` (FIFO) until the core has a free slot, so the core starts
    every job it is given at once, as a task, and its ``on_job_done`` hook tells us when
    the slot frees up: one task and no extra callback per job. Only with
    ``max_per_second`` may the core queue a job itself (see ``_start``).

    Invariant: ``_jobs`` maps every job handed to the core and not yet finished, by the
    task (or queued future) ``submit_nowait`` returned, to its bridged future; so
    ``len(_jobs)`` is the number of core slots we hold.
    """

    def __init__(
        self,
        name: str,
        *,
        max_workers: int,
        max_threads: int,
        max_per_second: Optional[float],
        burst: Optional[int],
        job_timeout: Optional[float],
        post_done: Callable[[WorkItem], None],
    ) -> None:
        # Constructed in the caller's thread, so bad options raise from our constructor.
        self.core = CoroutineExecutor(
            max_workers,
            suppress_task_errors=True,  # one job's error fails only its own future (stdlib)
            max_per_second=max_per_second,
            burst=burst,
            job_timeout=job_timeout,
            on_job_done=self._on_core_job_done,
        )
        self.pool = WorkerPool(name, max_threads, post_done)
        self._backlog: collections.deque[Job] = collections.deque()
        self._jobs: dict[asyncio.Future[Any], BridgeFuture[Any]] = {}
        self._backlog_empty: Optional[asyncio.Future[None]] = None  # awaited by shutdown
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    #
    # Admission
    #

    def add(self, jobs: collections.deque[Job]) -> None:
        """Jobs from one hand-off batch, in submission order."""
        if self._backlog:
            self._backlog.extend(jobs)
        else:
            self._backlog = jobs
        self._feed()

    def waiting(self) -> int:
        return len(self._backlog)

    def _feed(self) -> None:
        backlog = self._backlog
        room = self.core.max_workers - len(self._jobs)
        start = self._start
        while room > 0 and backlog:
            job = backlog.popleft()
            if job[0]._state == PENDING:  # else cancelled meanwhile; cancel() notified
                start(job)
                room -= 1
        empty = self._backlog_empty
        if not backlog and empty is not None and not empty.done():
            empty.set_result(None)

    def _start(self, job: Job) -> None:
        future, fn, args, kwargs, ctx, is_coroutine = job
        if is_coroutine:
            task = ctx.run(self.core.submit_nowait, self._run_coroutine, future, fn, args, kwargs)
        else:
            task = ctx.run(
                self.core.submit_nowait, self._run_blocking, future, fn, args, kwargs, ctx
            )
        future._job = task
        self._jobs[task] = future
        if type(task) is not _Task and not isinstance(task, _Task):
            # Queued by the core's rate limiter. The hook will see the task it starts
            # later, not this future: follow the future instead.
            task.add_done_callback(self._on_core_job_done)

    def cancel_job(self, future: BridgeFuture[Any]) -> None:
        """The future was cancelled: cancel its job (a no-op once that has finished)."""
        task = future._job
        if task is not None:
            task.cancel()

    #
    # Completion
    #

    def _on_core_job_done(self, task: asyncio.Future[Any]) -> None:
        """The core's hook: a job's task finished and its slot is free."""
        # None for the task behind a rate-limited queued future: that future follows it.
        future = self._jobs.pop(task, None)
        if future is not None:
            state = future._state
            if state != FINISHED and state != CANCELLED_AND_NOTIFIED:
                _resolve(future, task)  # what the job could not set itself
        if self._backlog:
            self._feed()

    def on_work_done(self, item: WorkItem) -> None:
        """A worker thread has finished (or skipped) a blocking job."""
        item.finished = True
        if not item.waiter.done():
            item.waiter.set_result(None)

    #
    # The job wrappers: the coroutines the core runs as tasks
    #

    async def _run_coroutine(
        self,
        future: BridgeFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        future._started = True
        try:
            result = await fn(*args, **kwargs)
        except asyncio.CancelledError:
            raise  # _on_core_job_done cancels the future once the task is done
        except (KeyboardInterrupt, SystemExit) as exc:
            future._try_set_exception(exc)
            raise _CoroutineJobError(repr(exc)) from exc
        except BaseException as exc:
            future._try_set_exception(exc)
            raise
        # Set here, not in a done callback: the caller gets it one loop turn sooner.
        future._try_set_result(result)
        return result

    async def _run_blocking(
        self,
        future: BridgeFuture[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ctx: contextvars.Context,
    ) -> Any:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        item = WorkItem(future, fn, args, kwargs, ctx, loop.create_future())
        self.pool.submit(item)
        try:
            await item.waiter
        except asyncio.CancelledError:
            if not future._withdraw():
                # A worker is running the call and cannot interrupt it: keep the slot
                # until it returns, so max_workers and shutdown(wait=True) stay truthful.
                while not item.finished:
                    item.waiter = loop.create_future()
                    try:
                        await item.waiter
                    except asyncio.CancelledError:
                        continue  # cancelled again: still the same call to wait for
                if inspect.iscoroutine(item.outcome):
                    item.outcome.close()  # never awaited, as the job was cancelled
            raise
        outcome, item.outcome = item.outcome, None
        if outcome is None:
            return None  # the worker has set the future already
        # fn returned an awaitable (``lambda: fetch(url)``): await it here, on the loop.
        return await self._run_coroutine(future, _identity, (outcome,), {})

    #
    # Shutting down
    #

    def apply(self, request: ShutdownRequest) -> None:
        """Cancel what a shutdown request says to cancel. Idempotent."""
        if not (request.cancel_queued or request.cancel_running):
            return
        backlog, self._backlog = self._backlog, collections.deque()
        for job in backlog:
            job[0].cancel()  # never handed to the core: nothing else to cancel
        for future in list(self._jobs.values()):
            # For a job not yet running (rate-limited, or waiting for a worker) this is
            # exactly cancel_futures. A blocking call already running refuses cancel().
            if (
                (request.cancel_running or not future._started)
                and not future.cancel()
                and request.cancel_running
            ):
                self.cancel_job(future)
        self._feed()

    async def shutdown(self, request: ShutdownRequest) -> None:
        """Finish (or cancel) every job; return once none is left."""
        loop = asyncio.get_running_loop()
        self.apply(request)
        deadline = None if request.grace is None else loop.time() + request.grace
        if self._backlog:
            # Every job accepted before shutdown() still runs: the core must get them all
            # before it stops accepting.
            self._backlog_empty = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._backlog_empty), request.grace)
            except asyncio.TimeoutError:
                self.apply(ShutdownRequest(True, True, None))  # the grace period is over
        if deadline is None:
            await self.core.shutdown(wait=True)
        elif deadline - loop.time() > 0:
            await self.core.shutdown(wait=True, timeout=deadline - loop.time())
        else:
            await self.core.shutdown(wait=False)
        for future in list(self._jobs.values()):  # not expected: every hook call has run
            future._set_cancelled()
        self._jobs.clear()

    def orphans(self) -> list[BridgeFuture[Any]]:
        """Every future not yet resolved: the jobs this scheduler still holds."""
        futures = [job[0] for job in self._backlog] + list(self._jobs.values())
        self._backlog.clear()
        self._jobs.clear()
        return futures


def _resolve(future: BridgeFuture[Any], task: asyncio.Future[Any]) -> None:
    """Copy a finished task's outcome into a future the job did not resolve itself."""
    if task.cancelled():
        future._set_cancelled()  # cancelled before it could start, or by the core
        return
    exc = task.exception()
    if exc is None:
        future._try_set_result(task.result())
    elif type(exc) is _CoroutineJobError:
        future._try_set_exception(exc.__cause__)  # type: ignore[arg-type]
    else:
        future._try_set_exception(exc)  # job_timeout's TimeoutError, for one


async def _identity(awaitable: Any) -> Any:
    return await awaitable
