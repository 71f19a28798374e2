"""Scheduler: the loop-thread side of the bridge, from a started job to its outcome.

Everything here runs on the loop thread only (see the threading model in
``_handoff``). No lock is taken here: a job reaches this module holding a slot
already, granted by HandOff under its lock. The coroutines the core runs for the jobs
are in ``_job_wrappers`` (JobWrappers, the Scheduler's base).
"""

from __future__ import annotations

import asyncio
from asyncio import Task, TimerHandle
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, FINISHED, PENDING, RUNNING
from typing import Any, Callable, Optional

from .._executor import CoroutineExecutor
from .._queued import submit_again_nowait
from ._future import BridgeFuture
from ._job import Job
from ._job_wrappers import JobWrappers
from ._options import CoreOptions, ShutdownRequest
from ._outcome import resolve
from ._tuning import BridgeTuner
from ._workers import WorkerPool, WorkItem

__all__ = ["Scheduler"]

_LIVE_STATES = (PENDING, RUNNING)


class Scheduler(JobWrappers):
    """Runs the jobs that need the loop on a CoroutineExecutor; copies outcomes back.

    HandOff grants slots, so the core starts every job it is given at once, as a task,
    and its ``on_job_done`` hook reports the end of each: one task and no extra callback
    per job. Only with ``max_per_second`` may the core queue a job itself (see ``start``).

    Invariant: ``_jobs`` maps every job handed to the core and not yet finished, by the
    task (or queued future) ``submit_nowait`` returned, to its bridged future. Each
    entry holds one slot, given back through ``_release`` when the entry is removed, or
    through ``retries.pause`` when the attempt it ran is retried.

    The wrappers the core runs for the jobs (``_run_coroutine``, ``_run_blocking``) are
    those of its base, JobWrappers (``_job_wrappers``).
    """

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
